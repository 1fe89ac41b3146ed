"""Browsers across the test hosts, in direct mode (the admin portal in Chromium on each
worker host): the one browser limit holds across hosts, and a worker host cut off during a
browser step gives its slot back."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import steps_by_id, wait_for
from tests.hosts.harness import APIS, BROWSER_LIMIT, WORKERS, HostSystem
from tests.hosts.jobs import FINAL, host_of, job, new_job, wait_ended

pytestmark = [pytest.mark.hosts]


@pytest.fixture(scope="module", autouse=True)
def direct_workers(hosts: HostSystem) -> Iterator[None]:
    """Both workers in direct mode for this module, endpoints mode again after it. A portal
    page the stand-in holds is waited for (the browser's own timeout past the hold)."""
    hosts.step_mode = "direct"
    hosts.settings["REGJOBS_BROWSER_ACTION_TIMEOUT_SECONDS"] = "90"
    try:
        hosts.restart_workers()
        yield
    finally:
        hosts.step_mode = "endpoints"
        hosts.settings.pop("REGJOBS_BROWSER_ACTION_TIMEOUT_SECONDS")
        hosts.restart_workers()


def test_the_browser_limit_holds_across_hosts(
    hosts: HostSystem, apis: dict[str, httpx.Client]
) -> None:
    # One more job than a worker runs at once (the units' --limit 4): both hosts run some.
    job_ids = [new_job(apis[APIS[n % 2]]) for n in range(5)]
    peak: dict[str, int] = {}
    seen_on: set[str] = set()

    def count() -> bool:
        alive = hosts.chromiums()
        total = sum(alive.values())
        if total > sum(peak.values()):
            peak.clear()
            peak.update(alive)
        seen_on.update(h for h, n in alive.items() if n)
        if total > BROWSER_LIMIT:
            raise AssertionError(
                f"{total} browsers under a limit of {BROWSER_LIMIT}: {hosts.browsers_described()}"
                f"; Prefect counts {hosts.browser_slots_in_use()} slots taken"
            )
        return all(job(apis["api-1"], j)["status"] in FINAL for j in job_ids)

    wait_for(count, timeout=240, interval=0.2, what="the direct-mode jobs to end")
    statuses = {job(apis["api-1"], j)["status"] for j in job_ids}
    print(f"most Chromiums alive at once, by host: {peak}; seen on {sorted(seen_on)}")
    assert statuses == {"completed"}, statuses
    assert sum(peak.values()) >= 1
    assert seen_on == set(WORKERS), seen_on  # the limit held across both hosts' browsers


def test_a_worker_host_cut_off_in_a_browser_step_gives_its_slot_back(
    hosts: HostSystem, apis: dict[str, httpx.Client], standin: httpx.Client
) -> None:
    api = apis["api-2"]
    standin.post(
        "/_control/faults",
        json={"step": "restaurant_registration", "mode": "slow", "seconds": 60, "times": 1},
    ).raise_for_status()
    job_id = new_job(api)
    victim = host_of(hosts, api, job_id)
    wait_for(
        lambda: (
            steps_by_id(job(api, job_id))["restaurant_registration"]["status"] == "running"
            and hosts.browser_slots_in_use() >= 1
        ),
        timeout=90,
        what="restaurant registration to run, holding a browser slot",
    )
    hosts.host(victim).cut()
    cut = time.monotonic()
    try:
        found = wait_ended(api, [job_id], 60)[job_id]
        step = steps_by_id(found)["restaurant_registration"]
        assert found["status"] == "failed"
        assert "worker was lost" in step["error_message"], step["error_message"]
        wait_for(
            lambda: hosts.browser_slots_in_use() == 0,
            timeout=75 - (time.monotonic() - cut),
            interval=0.5,
            what="the cut-off step's browser slot to come back",
        )
        print(f"browser slot back {time.monotonic() - cut:.1f} s after {victim} was cut off")
    finally:
        hosts.host(victim).mend()
    # The slot serves again: a retry of the lost job completes.
    api.post(f"/api/registration-jobs/{job_id}/retry").raise_for_status()
    again = wait_ended(api, [job_id], 120)[job_id]
    assert again["status"] == "completed", (again["status"], again["error_message"])
