"""Clocks ±2 s apart across the test hosts break no lease or stall rule (issue 24).

Every test of the hosts suite runs so (`harness.CLOCKS`): each skewed host's processes run
with libfaketime (`LD_PRELOAD`, `FAKETIME="+2s"` or `"-2s"`), the workers 2 s ahead of and
behind the control host (PostgreSQL, Prefect's server), the API hosts 2 s behind and ahead.
This test checks the clocks are so, and the rules they touch: a flow run's heartbeat is
stamped by its worker host's clock and judged by the leading API host's (up to 4 s apart
here); a run's start time in Prefect is set by the leading API host and enforced by
Prefect's server on the control host; a step's start is stamped by the worker and its
stall judged by the leader.

Held past the lease (a step held 25 s, `REGJOBS_WORKER_LOST_SECONDS` 20 s), the jobs on both
workers complete with no worker judged lost and nothing marked stalled; the reconciler's
role stays where it was; and a job's first step starts within a bound."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.helpers import progress, steps_by_id, wait_for
from tests.hosts.harness import APIS, CLOCKS, WORKERS, HostSystem
from tests.hosts.jobs import jobs_on_both_workers, new_job, wait_ended

pytestmark = [pytest.mark.hosts]


def clock_of(hosts: HostSystem, name: str) -> float:
    """A host's clock against this process's, in seconds (a command run there)."""
    before = time.time()
    there = float(hosts.run(name, ["python", "-c", "import time; print(time.time())"]))
    return there - (before + time.time()) / 2


def roles(apis: dict[str, httpx.Client]) -> dict[str, str]:
    return {name: str(apis[name].get("/healthz").json()["reconciler"]) for name in APIS}


def test_clocks_two_seconds_apart_break_no_lease_or_stall_rule(
    hosts: HostSystem, apis: dict[str, httpx.Client], standin: httpx.Client
) -> None:
    assert {abs(offset) for offset in CLOCKS.values()} == {2.0}
    assert hosts.clocks == CLOCKS
    for name, offset in CLOCKS.items():
        off = clock_of(hosts, name)
        assert abs(off - offset) < 1.0, f"{name}'s clock is {off:+.2f} s off, not {offset:+g}"
        print(f"{name}: clock {off:+.2f} s")

    wait_for(
        lambda: sorted(roles(apis).values()) == ["leader", "standby"],
        timeout=30,
        what="one reconciler among the API hosts",
    )
    leading = roles(apis)
    print(f"the reconciler's roles: {leading}")

    # A job created through each API host: its first step starts soon, whichever clock set
    # its run's start time in Prefect.
    for name in APIS:
        created = time.monotonic()
        job_id = new_job(apis[name])

        def begun(job_id: str = job_id, api: httpx.Client = apis[name]) -> bool:
            statuses = progress(api, job_id)["step_statuses"].values()
            return any(status != "pending" for status in statuses)

        wait_for(begun, timeout=60, interval=0.1, what=f"a first step ({name})")
        took = time.monotonic() - created
        print(f"created through {name}: a first step began within {took:.2f} s")
        assert took < 10, f"a job created through {name} began only after {took:.1f} s"
        assert wait_ended(apis[name], [job_id], 120)[job_id]["status"] == "completed"

    # Jobs on both workers, a step held past the lease: every heartbeat judged across clocks.
    api = apis["api-1"]
    placed = jobs_on_both_workers(hosts, api, standin, "option_sets", 25)
    samples = []
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        samples.append(roles(apis))
        time.sleep(1)
    ended = wait_ended(api, list(placed), 120)
    for job_id, found in ended.items():
        assert found["status"] == "completed", (placed[job_id], found["error_message"])
        stalled = {
            k: s["stalled_since"] for k, s in steps_by_id(found).items() if s.get("stalled_since")
        }
        assert not stalled, (placed[job_id], stalled)
        assert found.get("stalled_since") is None, found
    assert all(sample == leading for sample in samples), samples
    print(f"{len(placed)} jobs on {sorted(set(placed.values()))} completed; roles held: {leading}")
    assert set(placed.values()) == set(WORKERS)
