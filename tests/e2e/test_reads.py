"""Reads of the materialised view over HTTP: ETags and 304, the list, Server-Sent Events,
CORS. Against the real system (Prefect server, worker, stand-in, API)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from deployments.stack import Stack, free_port
from regjobs.catalogue import STEP_IDS
from tests.helpers import (
    FINAL_JOB,
    Sse,
    create,
    fault,
    full_config,
    new_key,
    read_events,
    steps_by_id,
    wait_for,
    watch_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.database]

ORIGIN = "http://app.example"


@pytest.fixture(scope="module")
def second_api(stack: Stack, stack_env: dict[str, str]) -> Iterator[httpx.Client]:
    """Another API process on the same job database and Prefect, configured as a frontend
    deployment would be: one allowed browser origin, keep-alive comments every 0.5 s."""
    port = free_port()
    stack.start_api(
        {"REGJOBS_CORS_ORIGINS": ORIGIN, "REGJOBS_SSE_KEEPALIVE_SECONDS": "0.5"},
        name="api-2",
        port=port,
    )
    headers = {"Authorization": f"Bearer {stack_env['REGJOBS_DEV_API_KEY']}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:
            yield client
    finally:
        stack.stop_child("api-2")


def parked(api: httpx.Client, restaurant_id: str | None = None) -> str:
    """A job that waits for POST .../start (it changes only when told)."""
    response = api.post(
        "/api/registration-jobs",
        json={
            "restaurant_id": restaurant_id or f"parked-{uuid.uuid4().hex[:8]}",
            "auto_start": False,
            "execution_config": full_config(),
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


# ------------------------------------------------------------------------ ETag and 304


@pytest.mark.parametrize(
    "path", ["/api/registration-jobs/{}", "/api/registration-jobs/{}/progress"]
)
def test_an_unchanged_job_is_304_and_a_change_gives_a_new_etag(
    api: httpx.Client, path: str
) -> None:
    job_id = parked(api)
    url = path.format(job_id)
    first = api.get(url)
    assert first.status_code == 200
    etag = first.headers["etag"]
    assert etag == f'"{api.get(f"/api/registration-jobs/{job_id}").json()["version"]}"'

    for if_none_match in (etag, f"W/{etag}", f'"0", {etag}', "*"):
        again = api.get(url, headers={"If-None-Match": if_none_match})
        assert again.status_code == 304, if_none_match
        assert again.content == b""
        assert again.headers["etag"] == etag
    assert api.get(url, headers={"If-None-Match": '"12345678"'}).status_code == 200

    api.post(f"/api/registration-jobs/{job_id}/cancel").raise_for_status()
    changed = api.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert int(changed.headers["etag"].strip('"')) > int(etag.strip('"'))
    assert changed.json()["status"] == "cancelled"


# ---------------------------------------------------------------------------- the list


def test_the_list_filters_pages_newest_first_and_keeps_to_its_organisation(
    stack: Stack,
) -> None:
    base = stack.config.api_url
    ours = httpx.Client(
        base_url=base,
        headers={"Authorization": f"Bearer {new_key(stack, f'list-{uuid.uuid4().hex[:6]}')}"},
    )
    theirs = httpx.Client(
        base_url=base,
        headers={"Authorization": f"Bearer {new_key(stack, f'other-{uuid.uuid4().hex[:6]}')}"},
    )
    made = [parked(ours, f"list-r{i}") for i in range(5)]
    for job_id in made[:2]:
        ours.post(f"/api/registration-jobs/{job_id}/cancel").raise_for_status()
    others = [parked(theirs, f"list-r{i}") for i in range(2)]

    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = ours.get("/api/registration-jobs", params=params)
        assert page.status_code == 200, page.text
        pages.append(page.json()["jobs"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    listed = [job["id"] for page in pages for job in page]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert listed == list(reversed(made))  # newest first, each once
    assert not set(listed) & set(others)
    summary = pages[0][0]
    assert "steps" not in summary
    assert {"status", "progress_percent", "current_step", "version", "next_action"} <= set(summary)

    def ids(**params: Any) -> set[str]:
        answer = ours.get("/api/registration-jobs", params=params)
        assert answer.status_code == 200, answer.text
        return {job["id"] for job in answer.json()["jobs"]}

    assert ids(status="cancelled") == set(made[:2])
    assert ids(status="pending") == set(made[2:])
    assert ids(restaurant_id="list-r3") == {made[3]}
    assert ids(restaurant_id="list-r3", status="cancelled") == set()
    assert {job["id"] for job in theirs.get("/api/registration-jobs").json()["jobs"]} == set(others)

    for params, field in (
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"status": "sleeping"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
    ):
        bad = ours.get("/api/registration-jobs", params=params)
        assert bad.status_code == 422, (params, bad.text)
        assert ["query", field] in [e["loc"] for e in bad.json()["detail"]]


# ------------------------------------------------------------------------ event stream


def statuses_by_step(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    seen: dict[str, list[str]] = {}
    for event in events:
        if event["event"] == "step":
            seen.setdefault(event["data"]["step_id"], []).append(event["data"]["status"])
    return seen


def test_the_event_stream_carries_every_transition_in_order_and_resumes(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    fault(standin, step="restaurant_registration", mode="slow", seconds=2, times=1)
    job_id = create(api, restaurant_id)

    def restaurant_running(seen: Sse) -> bool:
        return "running" in statuses_by_step(seen.events).get("restaurant_registration", [])

    first = read_events(api, job_id, until=restaurant_running)
    assert not first.ended_by_server
    # Reconnect as a browser would, after the last event it got.
    rest = read_events(api, job_id, last_event_id=first.ids[-1])
    assert rest.ended_by_server  # the stream ends after the job's final event

    events = first.events + rest.events
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))  # none missed
    final = events[-1]
    assert (final["event"], final["data"]["status"]) == ("job", "completed")
    assert final["data"]["version"] == int(final["id"])
    by_step = statuses_by_step(events)
    for step in STEP_IDS:
        # Each step's transitions, in order, with nothing repeated or skipped.
        assert by_step[step] == ["pending", "running", "completed"], (step, by_step[step])
    job = api.get(f"/api/registration-jobs/{job_id}").json()
    assert job["version"] == int(final["id"])
    last_seen = {e["data"]["step_id"]: e["data"] for e in events if e["event"] == "step"}
    assert last_seen == {s["step_id"]: s for s in job["steps"]}


def test_a_stream_of_an_ended_job_replays_it_and_ends(api: httpx.Client) -> None:
    job_id = parked(api)
    api.post(f"/api/registration-jobs/{job_id}/cancel").raise_for_status()
    whole = read_events(api, job_id)
    assert whole.ended_by_server
    assert whole.events[-1]["data"]["status"] == "cancelled"
    after = read_events(api, job_id, last_event_id=whole.ids[-1])
    assert after.ended_by_server and after.events == []


def test_a_quiet_stream_gets_keep_alive_comments_and_any_replica_serves_it(
    api: httpx.Client, second_api: httpx.Client
) -> None:
    job_id = parked(api)  # made through one API process, watched through the other
    quiet = read_events(second_api, job_id, until=lambda seen: len(seen.comments) >= 2)
    assert quiet.comments[:2] == ["keep-alive", "keep-alive"]
    assert [e["event"] for e in quiet.events][-1] == "job"

    # A change made through the first process reaches a subscriber of the second.
    asked: list[bool] = []

    def cancelled(seen: Sse) -> bool:
        if seen.comments and not asked:  # the history is in; the stream is idle
            asked.append(True)
            api.post(f"/api/registration-jobs/{job_id}/cancel").raise_for_status()
        return False

    live = read_events(second_api, job_id, until=cancelled)
    assert live.ended_by_server
    assert live.events[-1]["data"]["status"] == "cancelled"


def test_events_need_a_key_of_the_jobs_organisation(stack: Stack, api: httpx.Client) -> None:
    job_id = parked(api)
    url = f"{stack.config.api_url}/api/registration-jobs/{job_id}/events"
    assert httpx.get(url).status_code == 401
    other = new_key(stack, f"other-{uuid.uuid4().hex[:6]}")
    assert httpx.get(url, headers={"Authorization": f"Bearer {other}"}).status_code == 404
    bad = api.get(f"/api/registration-jobs/{job_id}/events", headers={"Last-Event-ID": "x"})
    assert bad.status_code == 422
    api.post(f"/api/registration-jobs/{job_id}/cancel").raise_for_status()


# ---------------------------------------------------------------------------------- CORS


def test_cors_lets_the_configured_origin_call_and_read_the_etag(
    api: httpx.Client, second_api: httpx.Client
) -> None:
    job_id = parked(api)
    path = f"/api/registration-jobs/{job_id}/progress"
    preflight = second_api.options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, if-none-match",
        },
    )
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    allowed = preflight.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "if-none-match" in allowed

    answer = second_api.get(path, headers={"Origin": ORIGIN})
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "etag" in answer.headers["access-control-expose-headers"].lower()

    stranger = second_api.get(path, headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in stranger.headers
    refused = second_api.options(
        path, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert refused.status_code == 400
    # None by default: the first API process allows no origin.
    assert "access-control-allow-origin" not in api.get(path, headers={"Origin": ORIGIN}).headers
    api.post(f"/api/registration-jobs/{job_id}/cancel").raise_for_status()


def test_every_job_read_agrees_with_the_stream(api: httpx.Client, restaurant_id: str) -> None:
    """GET, /progress and the list show the same state as the job's last event."""
    job_id = create(api, restaurant_id)
    job = watch_job(api, job_id).job
    assert job["status"] in FINAL_JOB
    progress = api.get(f"/api/registration-jobs/{job_id}/progress").json()
    assert progress["step_statuses"] == {s["step_id"]: s["status"] for s in job["steps"]}
    listed = wait_for(
        lambda: next(
            (j for j in api.get("/api/registration-jobs").json()["jobs"] if j["id"] == job_id),
            None,
        ),
        what="the job in the list",
    )
    assert {k: listed[k] for k in ("status", "version", "progress_percent")} == {
        k: job[k] for k in ("status", "version", "progress_percent")
    }
    assert steps_by_id(job)["item_tags"]["status"] == "completed"
