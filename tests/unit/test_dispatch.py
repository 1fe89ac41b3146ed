"""When the dispatcher hands run requests to Prefect (the rule alone; the real dispatch: every
end-to-end test, and benchmarks/creates.py for a burst)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.dispatch import settle_wait


def test_the_dispatcher_sends_a_lone_request_after_a_moment_and_lets_a_burst_settle() -> None:
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    just_now = now - timedelta(seconds=0.05)
    assert settle_wait(0, None, now, 0.25) == 0
    assert settle_wait(1, just_now, now, 0.25) == 0  # 50 ms old: sent
    assert settle_wait(1, now, now, 0.25) == pytest.approx(0.05)  # new: a moment's wait
    assert settle_wait(1, now, now, 0) == 0
    assert settle_wait(2, just_now, now, 0.25) == pytest.approx(0.2)
    assert settle_wait(200, now, now, 0.25) == pytest.approx(0.25)
    assert settle_wait(200, now - timedelta(seconds=1), now, 0.25) == 0
    assert settle_wait(200, now, now, 0) == 0
