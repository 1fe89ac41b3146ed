"""Host failures with jobs in flight, across the test hosts (tests/hosts/harness.py), in
endpoints mode: a worker host cut off or killed, an API host killed, PostgreSQL restarted
(the browsers: test_browsers.py). `make test-hosts` (root) runs them."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import httpx
import pytest

from tests.helpers import full_config, wait_for
from tests.hosts.harness import APIS, HostSystem
from tests.hosts.jobs import jobs_on_both_workers, new_job, wait_ended

pytestmark = [pytest.mark.hosts]

#: How long a lost worker's jobs may take to fail (the issue's bound).
LOST_WITHIN = 60.0


def lost_and_fenced(
    hosts: HostSystem, api: httpx.Client, placed: dict[str, str], victim: str, since: float
) -> None:
    """The victim host's jobs end failed, "the worker was lost", within LOST_WITHIN of
    `since`; the other host's complete."""
    mine = [j for j, h in placed.items() if h == victim]
    others = [j for j, h in placed.items() if h != victim]
    ended = wait_ended(api, mine, LOST_WITHIN)
    took = time.monotonic() - since
    for found in ended.values():
        assert found["status"] == "failed", found["status"]
        assert "worker was lost" in (found["error_message"] or ""), found["error_message"]
    print(f"{len(mine)} job(s) of {victim} failed {took:.1f} s after it was lost")
    for found in wait_ended(api, others, 120).values():
        assert found["status"] == "completed", (found["status"], found["error_message"])


def test_a_worker_host_cut_off_mid_step(
    hosts: HostSystem, apis: dict[str, httpx.Client], standin: httpx.Client
) -> None:
    api = apis["api-1"]
    placed = jobs_on_both_workers(hosts, api, standin, "option_sets", 25)
    victim = "worker-1"
    hosts.host(victim).cut()
    cut = time.monotonic()
    try:
        lost_and_fenced(hosts, api, placed, victim, cut)
        mine = [j for j, h in placed.items() if h == victim]
        before = {j: api.get(f"/api/registration-jobs/{j}").headers["etag"] for j in mine}
    finally:
        hosts.host(victim).mend()
    # Back on the network, its old flow-run processes (their held calls answered, their
    # leases gone) write nothing: the jobs' views do not change.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = {j: api.get(f"/api/registration-jobs/{j}").headers["etag"] for j in mine}
        assert now == before, "a fenced-off flow run wrote to its job"
        time.sleep(1)
    # And the host works again: a new job on the system completes.
    hosts.wait(f"{victim}'s worker to poll again", lambda: _worker_alive(hosts, victim), 60)
    assert wait_ended(api, [new_job(api)], 90)


def _worker_alive(hosts: HostSystem, name: str) -> bool:
    proc = hosts.procs.get((name, hosts.worker_unit))
    return proc is not None and proc.process.poll() is None


def test_a_worker_host_killed_outright(
    hosts: HostSystem, apis: dict[str, httpx.Client], standin: httpx.Client
) -> None:
    api = apis["api-2"]
    placed = jobs_on_both_workers(hosts, api, standin, "option_sets", 20)
    victim = "worker-2"
    killed = hosts.host(victim).kill_all()
    since = time.monotonic()
    hosts.forget(victim)
    assert killed and not hosts.host(victim).pids()
    try:
        lost_and_fenced(hosts, api, placed, victim, since)
    finally:
        hosts.start_worker(victim)


def test_an_api_host_killed(
    hosts: HostSystem, apis: dict[str, httpx.Client], standin: httpx.Client
) -> None:
    roles = {name: apis[name].get("/healthz").json()["reconciler"] for name in APIS}
    assert sorted(roles.values()) == ["leader", "standby"], roles
    leader = next(n for n, r in roles.items() if r == "leader")
    survivor = next(n for n in APIS if n != leader)
    other = apis[survivor]
    standin.post(
        "/_control/faults", json={"step": "menu_import", "mode": "slow", "seconds": 8, "times": 2}
    ).raise_for_status()
    in_flight = [new_job(apis[leader]), new_job(other)]

    answers: Counter[int] = Counter()
    stop = threading.Event()

    def keep_asking() -> None:  # every request to the survivor while the other dies
        with httpx.Client(base_url=other.base_url, headers=other.headers, timeout=10) as c:
            while not stop.is_set():
                for job_id in in_flight:
                    answers[c.get(f"/api/registration-jobs/{job_id}/progress").status_code] += 1
                time.sleep(0.05)

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        hosts.host(leader).kill_all()
        died = time.monotonic()
        hosts.forget(leader)
        wait_for(
            lambda: other.get("/healthz").json()["reconciler"] == "leader",
            timeout=10,
            interval=0.1,
            what="the reconciler to move to the other API host",
        )
        print(f"the reconciler moved {time.monotonic() - died:.1f} s after its host died")
        created = new_job(other)
        ended = wait_ended(other, [*in_flight, created], 90)
    finally:
        stop.set()
        asker.join(timeout=15)
        hosts.start_api(leader)
    assert set(answers) == {200}, answers
    assert answers[200] > 10
    assert {j["status"] for j in ended.values()} == {"completed"}


def test_postgresql_restarts(
    hosts: HostSystem, apis: dict[str, httpx.Client], standin: httpx.Client
) -> None:
    api = apis["api-1"]
    standin.post(
        "/_control/faults", json={"step": "menu_import", "mode": "slow", "seconds": 6, "times": 3}
    ).raise_for_status()
    in_flight = [new_job(api) for _ in range(3)]
    hosts.stop("control", "postgres", sig=2)  # SIGINT: PostgreSQL's fast shutdown
    assert not hosts.postgres_ready()
    answers: list[httpx.Response] = []
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            answers.append(_try_create(api))
            time.sleep(0.5)
    finally:
        hosts.start_postgres()
    codes = Counter(r.status_code for r in answers)
    assert set(codes) <= {201, 503}, codes
    for refused in (r for r in answers if r.status_code == 503):
        assert int(refused.headers["retry-after"]) >= 1
    created = [r.json()["job_id"] for r in answers if r.status_code == 201]
    # What was refused is created once the database is back (the client's retry).
    retried = [new_job(api) for r in answers if r.status_code == 503][:2]
    ended = wait_ended(api, [*in_flight, *created, *retried], 150)
    assert {j["status"] for j in ended.values()} == {"completed"}, {
        j: (v["status"], v["error_message"]) for j, v in ended.items()
    }


def _try_create(api: httpx.Client) -> httpx.Response:
    tag = uuid.uuid4().hex[:8]
    config = full_config(
        account={"email": f"gap-{tag}@example.com"},
        restaurant={"name": f"Gap Café {tag}"},
        onboarding={"user_email": f"gap-staff-{tag}@example.com"},
    )
    return api.post(
        "/api/registration-jobs", json={"restaurant_id": f"gap-{tag}", "execution_config": config}
    )
