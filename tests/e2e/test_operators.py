"""What an operator sees of a job in Prefect, read through Prefect's API: the summary and
progress artifacts, every step as a task run with the catalogue's edges, the run named and
tagged from its job, and a rerun from a step started with the `prefect` CLI."""

from __future__ import annotations

import json
import logging
import re
import sys
from functools import partial
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import (
    State,
    StateType,
    TaskRun,
    TaskRunResult,
)
from prefect.client.schemas.responses import SetStateStatus

from deployments.setup import ALERT_AUTOMATION
from deployments.stack import Stack
from regjobs import catalogue
from regjobs.catalogue import STEP_IDS, STEPS
from tests.helpers import (
    create,
    effects,
    fault,
    flow_run_logs,
    flow_run_state,
    hold_step,
    job_events,
    latest_artifact,
    steps_by_id,
    task_run_events,
    task_runs,
    wait_for,
    watch_job,
)

pytestmark = [pytest.mark.e2e]


def assert_edges_match_catalogue(runs: dict[str, TaskRun]) -> None:
    names = {str(r.id): sid for sid, r in runs.items()}
    for sid, run in runs.items():
        edges = run.task_inputs.get("wait_for", [])
        upstream = {names[str(i.id)] for i in edges if isinstance(i, TaskRunResult)}
        assert len(upstream) == len(edges), edges
        assert upstream == set(catalogue.step(sid).needs), sid


def shown(markdown: str) -> str:
    """The text a reader sees of the summary's markdown: every character escaped as tenant
    text is (`regjobs.observe.markdown_text`, CommonMark's backslash escapes) as itself."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown)


def test_summary_progress_and_graph_of_a_completed_and_a_failed_job(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    done = watch_job(api, create(api, restaurant_id)).job
    assert done["status"] == "completed", done
    fault(standin, step="menu_import", mode="status", status=400)
    failed = watch_job(api, create(api, restaurant_id + "-b")).job
    assert failed["status"] == "failed", failed

    # The completed job: every step completed in its summary, 100 % in its progress.
    summary = latest_artifact(f"job-{done['id']}", "completed (100%)")
    assert summary.type == "markdown"
    text = shown(str(summary.data))
    assert "completed (100%)" in text
    assert f"/api/registration-jobs/{done['id']})" in text
    for step in STEPS:
        row = re.search(rf"\| {step.number} \| {step.label} \| (\w+) \| (\d+) \|", text)
        assert row is not None and row.groups() == ("completed", "1"), (step.id, text)
    assert "subdomain=demo-pizza" in text  # a one-line result
    progress = latest_artifact(f"job-{done['id']}-progress", 100.0)
    assert progress.type == "progress" and float(str(progress.data)) == 100.0
    runs = task_runs(done["flow_run_id"])
    assert set(runs) == set(STEP_IDS)
    assert {r.state.name for r in runs.values() if r.state} == {"Completed"}
    # A step's start and end are Prefect's own task-run events, named by the step's label.
    labels = sorted(step.label for step in STEPS)

    def named(state: str) -> bool:
        return sorted(task_run_events(done["flow_run_id"], state)) == labels

    for state in ("Running", "Completed"):
        wait_for(
            partial(named, state),
            timeout=30,
            what=f"Prefect's prefect.task-run.{state} events of the job's steps",
        )
    assert_edges_match_catalogue(runs)

    # The failed job: the failed step with its error, the skipped steps with their reasons.
    text = shown(str(latest_artifact(f"job-{failed['id']}", "Failed step").data))
    steps = steps_by_id(failed)
    menu = steps["menu_import"]
    assert menu["status"] == "failed" and menu["error_message"]
    assert "**Failed step**: menu_import" in text
    assert menu["error_message"] in text
    skipped = {sid: s["skip_reason"] for sid, s in steps.items() if s["status"] == "skipped"}
    assert set(skipped) == {"option_sets", "item_tags"}
    for sid, reason in skipped.items():
        step = catalogue.step(sid)
        assert f"| {step.number} | {step.label} | skipped | 0 |  | {reason} |" in text
    progress = latest_artifact(f"job-{failed['id']}-progress", float(failed["progress_percent"]))
    assert float(str(progress.data)) == failed["progress_percent"]
    runs = task_runs(failed["flow_run_id"])
    assert set(runs) == set(STEP_IDS)
    for sid, run in runs.items():
        assert run.state is not None
        if sid in skipped:
            assert (run.state.type, run.state.name) == (StateType.COMPLETED, "Skipped")
            assert run.state.message == skipped[sid]
        elif sid == "menu_import":
            assert run.state.type is StateType.FAILED
        else:
            assert run.state.name == "Completed", sid
    assert_edges_match_catalogue(runs)

    # Prefect events for automations: what Prefect's own task-run events do not say (a
    # step skipped, failed), and the job's end. A step's start and end are Prefect's
    # `prefect.task-run.Running` / `.Completed` (resource name: the step's label).
    expected = {
        *(("regjobs.step.skipped", sid) for sid in skipped),
        ("regjobs.step.failed", "menu_import"),
        ("regjobs.job.failed", None),
    }
    seen = wait_for(
        lambda: (got := job_events(failed["id"])) >= expected and got,
        timeout=30,
        what="the job's events in Prefect",
    )
    assert seen == expected
    with get_client(sync_client=True) as client:
        automations = client.read_automations_by_name(ALERT_AUTOMATION)
    assert len(automations) == 1
    assert "regjobs.job.failed" in automations[0].trigger.model_dump_json()


def test_deployment_run_from_a_step_reruns_it_and_its_dependents(
    api: httpx.Client, standin: httpx.Client, stack: Stack, restaurant_id: str
) -> None:
    job = watch_job(api, create(api, restaurant_id)).job
    assert job["status"] == "completed", job
    assert effects(standin) == dict.fromkeys(STEP_IDS, 1)

    # The deployment offers the steps as a choice (the UI's custom run shows a dropdown).
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("registration-job/registration-job")
    schema = json.dumps(deployment.parameter_openapi_schema)
    assert all(f'"{sid}"' in schema for sid in STEP_IDS), schema

    out = stack.run(
        [
            *(sys.executable, "-m", "prefect", "deployment", "run"),
            "registration-job/registration-job",
            *("--param", f"job_id={job['id']}", "--param", "from_step=menu_import"),
        ]
    )
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
    assert match, out
    flow_run_id = match.group(1)

    def ended() -> Any:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(flow_run_id))
        return run if run.state and run.state.is_final() else None

    run = wait_for(ended, timeout=90, what="the operator's run to end")
    assert run.state.type is StateType.COMPLETED, run.state
    again = api.get(f"/api/registration-jobs/{job['id']}").json()
    assert again["status"] == "completed" and again["flow_run_id"] == flow_run_id
    rerun = {"menu_import", "option_sets", "item_tags"}
    assert effects(standin) == {sid: 2 if sid in rerun else 1 for sid in STEP_IDS}
    # Named and tagged like the runs the API makes, though an operator started it.
    assert run.name == f"{job['restaurant_name']} · {job['id'][:8]}"
    assert f"restaurant:{job['restaurant_id']}" in run.tags
    assert any(t.startswith("organisation:") for t in run.tags)
    # Steps not run again are in its graph too, as reused.
    runs = task_runs(flow_run_id)
    assert {sid for sid, r in runs.items() if r.state and r.state.name == "Reused"} == (
        set(STEP_IDS) - rerun
    )
    assert_edges_match_catalogue(runs)


@pytest.mark.parametrize("by", ["api", "prefect"])
def test_a_deliberate_cancel_logs_no_error(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str, by: str
) -> None:
    job_id = hold_step(api, standin, restaurant_id, "restaurant_registration", 30)
    flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]
    if by == "api":
        assert api.post(f"/api/registration-jobs/{job_id}/cancel").status_code == 200
    else:
        # What `prefect flow-run cancel` does (test_control runs the CLI itself), without
        # an interpreter start: the stand-in holds the step only as long as the step's
        # 3-s HTTP timeout, and a cancel landing after it would meet a retry's warning.
        with get_client(sync_client=True) as client:
            result = client.set_flow_run_state(UUID(flow_run_id), State(type=StateType.CANCELLING))
        assert result.status is SetStateStatus.ACCEPT, result
    wait_for(
        lambda: flow_run_state(flow_run_id)[0] is StateType.CANCELLED,
        timeout=30,
        what="the flow run to be cancelled",
    )

    logs = flow_run_logs(flow_run_id)
    loud = [(log.level, log.message) for log in logs if log.level >= logging.WARNING]
    assert loud == [], "\n".join(f"{log.level} {log.message}" for log in logs)
    assert any("cancel" in log.message.lower() for log in logs), "\n".join(
        log.message for log in logs
    )
