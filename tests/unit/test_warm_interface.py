"""The warm pool is known to the rest of the system by its package's interface alone
(`deployments/warm/__init__.py`): the work pool's command, the pool's command and the
socket's variable are those everywhere they are written down."""

from __future__ import annotations

from pathlib import Path

from deployments import warm

PROJECT = Path(__file__).resolve().parents[2]


def test_the_commands_and_the_socket_are_the_interfaces_everywhere() -> None:
    assert (
        f"command: python {' '.join(warm.LAUNCH_COMMAND)}\n"
        in (PROJECT / "prefect.yaml").read_text()
    )
    units = PROJECT / "deployments" / "systemd"
    pool_unit = (units / "regjobs-warm@.service").read_text()
    assert f"/.venv/bin/python {' '.join(warm.POOL_COMMAND)}\n" in pool_unit
    for unit in ("regjobs-warm@.service", "regjobs-worker@.service"):
        assert f"Environment={warm.SOCKET_ENV}=" in (units / unit).read_text(), unit
