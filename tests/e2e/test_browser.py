"""The seven browser steps through real Chromium against the stand-in's admin portal."""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

import httpx
import pytest

from deployments.pids import chromium_processes, marked_processes
from deployments.stack import Stack
from regjobs.catalogue import STEPS, StepKind
from tests.helpers import (
    NO_MENU,
    create,
    effects,
    fault,
    flow_run_logs,
    progress,
    steps_by_id,
    wait_for,
    wait_step,
    watch_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("direct_mode")]

BROWSER_STEPS = [s.id for s in STEPS if s.kind is StepKind.BROWSER]


def chromium_pids(stack: Stack) -> list[int]:
    """This test system's Chromium processes (not another system's on the same machine)."""
    return chromium_processes(marked_processes(stack.stack_id))


def portal_calls(standin: httpx.Client) -> list[dict[str, Any]]:
    return [c for c in standin.get("/_control/calls").json() if c["path"].startswith("/portal")]


def test_direct_mode_drives_the_portal_in_chromium(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    watch = watch_job(api, create(api, restaurant_id))

    job = watch.job
    assert job["status"] == "completed", job
    assert [s["status"] for s in job["steps"]] == ["completed"] * 12
    calls = portal_calls(standin)
    assert {c["step"] for c in calls} == set(BROWSER_STEPS)
    # Direct mode: the API steps call the platform API, onboarding service and CDN.
    api_calls = [c for c in standin.get("/_control/calls").json() if c["step"] not in BROWSER_STEPS]
    assert all(c["path"].startswith(("/platform/", "/onboarding/", "/cdn/")) for c in api_calls), (
        api_calls
    )
    assert standin.get("/_control/effects").json() == {s.id: 1 for s in STEPS}
    state = standin.get("/_control/state").json()
    steps = steps_by_id(job)
    subdomain = steps["restaurant_registration"]["result_data"]["subdomain"]
    restaurant = state["restaurants"][subdomain]
    assert restaurant["name"] == "Demo Pizza"
    website = restaurant["website"]
    # Every form's submission as the portal received it.
    assert set(restaurant["received"]) >= {
        "website_configuration",
        "services_configuration",
        "payment_configuration",
    }
    code = steps["code_generation"]["result_data"]
    assert website["head_injection"] == code["head_injection"]
    assert website["body_injection"] == code["body_injection"]
    assert website["settings"]["theme"] == "light"
    assert website["settings"]["primary_color"] == "#c0392b"
    print("browser step durations (ms):", {s: steps[s]["duration_ms"] for s in BROWSER_STEPS})


def test_a_missing_element_retries_then_fails_naming_page_and_element(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    fault(standin, step="website_configuration", mode="hide_element", element="#save-website")

    job = watch_job(api, create(api, restaurant_id), timeout=180).job

    step = steps_by_id(job)["website_configuration"]
    assert job["status"] == "failed"
    assert step["status"] == "failed"
    assert step["attempts"] == 4
    assert "website settings page" in step["error_message"]
    assert "#save-website" in step["error_message"]
    assert steps_by_id(job)["menu_import"]["status"] == "completed"
    assert len(step["evidence"]) == 4
    shot = httpx.get(step["evidence"][-1]["url"])
    assert shot.status_code == 200
    assert shot.headers["content-type"] == "image/png"
    assert shot.content.startswith(b"\x89PNG")
    # Without the signature the screenshot needs a key of the job's organisation.
    unsigned = step["evidence"][-1]["url"].split("?")[0]
    assert httpx.get(unsigned).status_code == 401
    assert api.get(unsigned).status_code == 200


def test_session_expiry_midway_through_option_sets(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    standin.post("/_control/config", json={"menu_option_sets": 40}).raise_for_status()
    job_id = create(api, restaurant_id)

    def midway() -> bool:
        text = (
            steps_by_id(api.get(f"/api/registration-jobs/{job_id}").json())["option_sets"][
                "progress"
            ]
            or ""
        )
        return text.startswith("option set ") and int(text.split()[2]) >= 5

    wait_for(midway, timeout=120, interval=0.05, what="option sets to be under way")
    fault(standin, step="option_sets", mode="expire_session", times=1)
    job = watch_job(api, job_id, timeout=180).job

    assert job["status"] == "completed", job
    assert steps_by_id(job)["option_sets"]["attempts"] == 1
    expired = [
        c
        for c in standin.get("/_control/calls").json()
        if c["step"] == "option_sets" and c.get("fault") == "expire_session"
    ]
    assert len(expired) == 1
    state = standin.get("/_control/state").json()
    steps = steps_by_id(job)
    subdomain = steps["restaurant_registration"]["result_data"]["subdomain"]
    menu = steps["menu_import"]["result_data"]["menu_id"]
    counts = state["restaurants"][subdomain]["menus"][menu]["option_set_creations"]
    assert len(counts) == 40
    assert set(counts.values()) == {1}


def test_cancel_during_a_browser_step_leaves_no_browser(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    fault(standin, step="services_configuration", mode="slow", seconds=30)
    job_id = create(api, restaurant_id)
    wait_step(api, job_id, "services_configuration", "running")
    # The step is `running` from its attempt's start; its browser launches just after.
    wait_for(lambda: chromium_pids(stack), timeout=15, what="a browser running the step")

    api.post(f"/api/registration-jobs/{job_id}/cancel").raise_for_status()
    cancelled_at = time.monotonic()
    wait_for(
        lambda: progress(api, job_id)["status"] == "cancelled",
        timeout=10,
        what="the job to be cancelled",
    )
    wait_for(lambda: not chromium_pids(stack), timeout=10, what="every chromium process to end")
    print(f"no chromium {time.monotonic() - cancelled_at:.1f} s after the cancel")
    leftovers = list((stack.config.state_dir / "browser-tmp").glob("*"))
    wait_for(
        lambda: not list((stack.config.state_dir / "browser-tmp").glob("*")),
        timeout=10,
        what=f"Playwright's temporary folders to go: {leftovers}",
    )


def test_browser_limit_holds_across_three_jobs(
    api: httpx.Client, standin: httpx.Client, stack: Stack
) -> None:
    for step in BROWSER_STEPS:
        fault(standin, step=step, mode="slow", seconds=0.3)
    stack.run(
        [sys.executable, "-m", "prefect", "gcl", "update", "registration-browser", "--limit", "1"]
    )
    try:
        # Three different restaurants of three different accounts; without their menus,
        # four browser steps each, three of them ready at once in every job.
        jobs = [
            create(
                api,
                f"limit-{n}-{time.time_ns()}",
                restaurant={"name": f"Limit {n}"},
                account={"email": f"limit{n}@example.com"},
                menu=NO_MENU,
            )
            for n in range(3)
        ]
        waiting_seen: set[str] = set()

        def all_ended() -> bool:
            views = [api.get(f"/api/registration-jobs/{j}").json() for j in jobs]
            for view in views:
                for step in view["steps"]:
                    if step["status"] == "pending" and (step["progress"] or "").startswith(
                        "waiting for a browser slot"
                    ):
                        waiting_seen.add(step["step_id"])
            return all(v["status"] in ("completed", "failed", "cancelled") for v in views)

        wait_for(all_ended, timeout=300, interval=0.2, what="the three jobs to end")
        ends = [api.get(f"/api/registration-jobs/{j}").json() for j in jobs]
    finally:
        stack.run(
            [
                sys.executable,
                "-m",
                "prefect",
                "gcl",
                "update",
                "registration-browser",
                "--limit",
                "2",
            ]
        )
    assert [j["status"] for j in ends] == ["completed"] * 3
    # Steps queued for the one browser slot showed as pending, with the reason.
    assert waiting_seen
    # Group the portal calls by the job and step that made them (a header every request of
    # a step carries), and check no two of those intervals overlap.
    spans: dict[str, list[float]] = {}
    for call in portal_calls(standin):
        key = call["client"]
        span = spans.setdefault(key, [call["start"], call["end"]])
        span[0], span[1] = min(span[0], call["start"]), max(span[1], call["end"])
    ran = [[s["step_id"] for s in job["steps"] if s["status"] == "completed"] for job in ends]
    browser_steps = [s for s in ran[0] if s in BROWSER_STEPS]
    assert len(browser_steps) == 4 and all(r == ran[0] for r in ran), ran
    assert len(spans) == 3 * len(browser_steps)
    ordered = sorted(spans.values())
    overlaps = [(a, b) for a, b in itertools.pairwise(ordered) if b[0] < a[1]]
    assert overlaps == []


def test_secrets_audit_after_a_browser_job(
    api: httpx.Client, standin: httpx.Client, stack: Stack, db: Any, restaurant_id: str
) -> None:
    """A job with a distinctive password, through the portal, with a failed attempt that
    leaves a screenshot and an artifact: the password is nowhere in the clear."""
    import json
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
    )
    from sqlalchemy import inspect, text

    password = f"Audit-{time.time_ns()}-pw"
    fault(
        standin,
        step="services_configuration",
        mode="hide_element",
        element="#save-services",
        times=1,
    )
    job_id = create(api, restaurant_id, account={"password": password})
    job = watch_job(api, job_id, timeout=120).job
    assert job["status"] == "completed"
    shots = steps_by_id(job)["services_configuration"]["evidence"]
    assert len(shots) == 1

    haystacks: dict[str, bytes] = {
        "GET job": json.dumps(job).encode(),
        "screenshot": httpx.get(shots[0]["url"]).content,
    }
    with db.connect() as connection:
        for table in inspect(db).get_table_names():
            rows = connection.execute(text(f'SELECT * FROM "{table}"')).all()
            haystacks[f"table {table}"] = repr(rows).encode()
    with get_client(sync_client=True) as client:
        run_id = UUID(job["flow_run_id"])
        run = client.read_flow_run(run_id)
        haystacks["flow-run parameters"] = json.dumps(run.parameters).encode()
        logs = flow_run_logs(run_id)
        haystacks["Prefect logs"] = "\n".join(log.message for log in logs).encode()
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
        assert artifacts, "the failed attempt's screenshot is linked from an artifact"
        haystacks["artifacts"] = repr([(a.data, a.description) for a in artifacts]).encode()
    prefect_home = stack.config.state_dir / "prefect"
    for path in prefect_home.rglob("*"):
        if path.is_file():
            haystacks[f"Prefect file {path.name}"] = path.read_bytes()
    for path in stack.logs_dir.glob("*.log"):
        haystacks[f"log {path.name}"] = path.read_bytes()

    found = [name for name, data in haystacks.items() if password.encode() in data]
    assert found == []
    assert any(b"Services configuration" in d for d in haystacks.values())


def test_a_settings_step_run_again_sets_nothing_twice(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    """Website and services settings look at the saved form before they submit: run again
    with the same config (as after a crash whose success never reached the ledger), they
    find it saved as wanted and submit nothing."""
    job_id = create(api, restaurant_id)
    assert watch_job(api, job_id, timeout=180).job["status"] == "completed"
    for step in ("website_configuration", "services_configuration"):
        api.post(
            f"/api/registration-jobs/{job_id}/retry", json={"from_step": step}
        ).raise_for_status()
        again = watch_job(api, job_id, timeout=120).job
        assert again["status"] == "completed"
        assert steps_by_id(again)[step]["attempts"] == 2
    assert effects(standin) == {s.id: 1 for s in STEPS}
    submitted = [
        c for c in portal_calls(standin) if c["method"] == "POST" and "/settings/" in c["path"]
    ]
    assert len(submitted) == 3  # website, services, payments: once each


def test_a_portal_step_whose_answer_was_lost_acts_once(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    """The menu import and the item tags reach the portal, but the page they lead to never
    shows what the step waits for (as when a crash loses the answer): the attempt fails,
    and the next one, with the same idempotency key, finds the effect and does not repeat
    it. A deliberate run again from the menu import (a new generation) imports afresh."""
    fault(standin, step="menu_import", mode="hide_element", element="#item-count", times=1)
    fault(standin, step="item_tags", mode="hide_element", element="#flash", times=1)
    job_id = create(api, restaurant_id)
    job = watch_job(api, job_id, timeout=180).job
    assert job["status"] == "completed", job["error_message"]
    steps = steps_by_id(job)
    assert steps["menu_import"]["attempts"] == 2
    assert steps["menu_import"]["warning"] == "the menu is already imported; using it"
    assert steps["item_tags"]["attempts"] == 2
    assert effects(standin) == {s.id: 1 for s in STEPS}
    tag_saves = [
        c for c in portal_calls(standin) if c["method"] == "POST" and c["path"].endswith("/tags")
    ]
    assert len(tag_saves) == 1

    api.post(
        f"/api/registration-jobs/{job_id}/retry", json={"from_step": "menu_import"}
    ).raise_for_status()
    again = watch_job(api, job_id, timeout=120).job
    assert again["status"] == "completed", again["error_message"]
    assert steps_by_id(again)["menu_import"]["warning"] is None
    assert effects(standin)["menu_import"] == 2
