"""The job's artifacts are written in the background at most every `artifact_seconds`,
counted from the first update, and before the last update returns
(tasks.report.Report.update)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from regjobs.settings import Settings
from tasks import report as report_module
from tasks.report import Report


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each write happened (the loop's clock)."""
    found: list[float] = []

    async def write(self: Report) -> None:
        found.append(asyncio.get_running_loop().time())

    monkeypatch.setattr(report_module.Report, "_write", write)
    return found


def report(seconds: float) -> Report:
    settings: Any = Settings(artifact_seconds=seconds)
    return Report("job-Ünïcode-<b>", "org", settings)


def test_a_burst_of_updates_is_one_write_per_pace(writes: list[float]) -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        r = report(0.3)
        asked = loop.time()
        await r.update()
        assert writes == []  # in the background: the steps go on meanwhile
        for _ in range(10):
            await r.update()
        await asyncio.sleep(0.1)
        assert writes == []  # the pace counts from the first update
        await asyncio.sleep(0.4)
        assert len(writes) == 1  # the burst, together, once the pace allows
        assert writes[0] - asked >= 0.29
        await r.update()  # 0.2 s after the first write: put off for 0.1 s
        assert len(writes) == 1
        await asyncio.sleep(0.4)
        assert len(writes) == 2
        assert writes[1] - writes[0] >= 0.29

    asyncio.run(scenario())


def test_a_job_that_ends_within_the_pace_writes_once(writes: list[float]) -> None:
    async def scenario() -> None:
        r = report(5)
        await r.update()
        await asyncio.sleep(0.05)  # (the steps go on)
        await r.update()
        await r.update(final=True)
        assert len(writes) == 1
        await asyncio.sleep(0.1)
        assert r._later is None
        assert len(writes) == 1

    asyncio.run(scenario())


def test_the_final_update_is_written_at_once_and_drops_the_later_one(writes: list[float]) -> None:
    async def scenario() -> None:
        r = report(0.2)
        await r.update()
        await asyncio.sleep(0.3)
        assert len(writes) == 1
        await r.update()  # put off until 0.2 s after the first write
        await r.update(final=True)
        assert len(writes) == 2
        await asyncio.sleep(0.3)
        assert r._later is None
        assert len(writes) == 2

    asyncio.run(scenario())


def test_no_pace_writes_every_update(writes: list[float]) -> None:
    async def scenario() -> None:
        r = report(0)
        for _ in range(4):
            await r.update()
            await asyncio.sleep(0.01)
        assert len(writes) == 4

    asyncio.run(scenario())


def test_a_run_that_ends_without_a_final_write_leaves_no_write_behind(
    writes: list[float],
) -> None:
    async def scenario() -> None:
        r = report(0.1)
        await r.update()
        await asyncio.sleep(0.2)
        await r.update()
        r.close()
        await asyncio.sleep(0.3)
        assert len(writes) == 1

    asyncio.run(scenario())


def test_the_final_update_waits_for_a_write_under_way(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A write half-way when the job ends is finished, then the last is made: a write cut
    off could land after the last one."""
    order: list[str] = []

    async def write(self: Report) -> None:
        order.append("start")
        await asyncio.sleep(0.1)
        order.append("end")

    monkeypatch.setattr(report_module.Report, "_write", write)

    async def scenario() -> None:
        r = report(0.05)
        await r.update()
        await asyncio.sleep(0.1)  # the first write is under way
        await r.update(final=True)
        assert order == ["start", "end", "start", "end"]

    asyncio.run(scenario())
