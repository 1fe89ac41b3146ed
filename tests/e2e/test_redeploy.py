"""Redeploy from a clean clone: `prefect --no-prompt deploy --all` run in a fresh `git clone`
of the project (its committed HEAD: commit first) with the README's environment updates the
deployment, which then names no folder of any machine; a worker started from the clone, with
the README's worker environment, runs a job to completion there.

A real worker machine installs the clone into its own virtual environment (`pip install -e
.`, README "Production"); here the clone comes first on `PYTHONPATH` of this test's
environment instead, which runs the clone's code the same way without minutes of pip.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client

from deployments.setup import PROJECT_DIR_ENV
from deployments.stack import MARKER, WORK_POOL, Stack, marked_processes
from regjobs.settings import PROJECT_DIR, get_settings
from tests.helpers import create, fault, flow_run_pids, progress, wait_for, watch_job

pytestmark = [pytest.mark.e2e, pytest.mark.database]

DEPLOYMENT = "registration-job/registration-job"
#: The pull step prefect.yaml gives the deployment: a name, no folder.
PULL_STEPS: list[dict[str, dict[str, str]]] = [{"deployments.setup.project_directory": {}}]


def readme_env(stack: Stack, clone: Path, home: Path) -> dict[str, str]:
    """What README's "Production" section says a machine sets, and nothing of this test's
    own environment: the project's environment on PATH, the Prefect server, and (for a
    worker) the project folder, the job database, the shared secret key and the outside
    systems (here the stand-in, through the app's per-step endpoints)."""
    env = stack.env()
    return {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"]),
        "HOME": str(home),
        "PREFECT_HOME": str(home / ".prefect"),
        "PREFECT_API_URL": stack.config.prefect_api_url,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        PROJECT_DIR_ENV: str(clone),
        "DATABASE_URL": env["DATABASE_URL"],
        # This test system's key is generated into its state folder (development); a
        # worker elsewhere gets the API's key in its environment.
        "REGJOBS_SECRET_KEY": get_settings().fernet_keys()[0].decode(),
        "REGJOBS_STEP_MODE": "endpoints",
        "REGJOBS_APP_ENDPOINTS_URL": env["REGJOBS_APP_ENDPOINTS_URL"],
        # Stands for `pip install -e .` of the clone (module docstring).
        "PYTHONPATH": str(clone),
        "PYTHONUNBUFFERED": "1",
    }


def test_a_clean_clone_redeploys_and_its_worker_runs_a_job(
    stack: Stack,
    api: httpx.Client,
    standin: httpx.Client,
    restaurant_id: str,
    tmp_path: Path,
) -> None:
    clone = tmp_path / "elsewhere" / "registration-jobs"
    subprocess.run(
        ["git", "clone", "--quiet", str(PROJECT_DIR), str(clone)], check=True, timeout=60
    )
    assert not (clone / ".venv").exists() and not (clone / ".state").exists()
    home = tmp_path / "home"
    home.mkdir()
    env = readme_env(stack, clone, home)

    with get_client(sync_client=True) as client:
        before = client.read_deployment_by_name(DEPLOYMENT)

    # The deploy, as an operator runs it in the clone (REGJOBS_PROJECT_DIR set there too:
    # it must not end up in the deployment).
    deployed = subprocess.run(
        ["prefect", "--no-prompt", "deploy", "--all"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "registration-job/registration-job" in deployed.stdout

    with get_client(sync_client=True) as client:
        after = client.read_deployment_by_name(DEPLOYMENT)
    assert after.id == before.id  # updated, not made again
    assert after.updated and before.updated and after.updated > before.updated
    assert after.pull_steps == PULL_STEPS
    recorded = json.dumps(after.model_dump(mode="json"))
    assert str(clone) not in recorded and str(PROJECT_DIR) not in recorded
    assert after.entrypoint == "flows/registration.py:registration_job"
    assert after.work_pool_name == WORK_POOL

    # Only the clone's worker may take the run.
    stack.stop_child("worker")
    marker = uuid.uuid4().hex  # its processes, flow runs included, to end them after
    log_path = tmp_path / "clone-worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            ["prefect", "worker", "start", "--pool", WORK_POOL, "--type", "process",
             "--name", f"clone-{os.getpid()}"],
            cwd=clone,
            env={**env, MARKER: marker},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        # Slow enough to look at the flow-run process while it works.
        fault(standin, step="menu_import", mode="slow", seconds=4, times=1)
        job_id = create(api, restaurant_id)
        wait_for(
            lambda: progress(api, job_id)["step_statuses"]["menu_import"] == "running",
            timeout=60,
            interval=0.2,
            what=f"menu import to run\n{log_path.read_text(errors='replace')[-3000:]}",
        )
        flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]
        pids = flow_run_pids(flow_run_id)
        assert pids, "no flow-run process found"
        # The pull step put the flow run in the clone, and the clone's worker started it.
        assert {Path(f"/proc/{pid}/cwd").resolve() for pid in pids} == {clone.resolve()}
        for pid in pids:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert f"{MARKER}={marker}".encode() in environ

        job = watch_job(api, job_id, timeout=90).job
        assert job["status"] == "completed", job
        assert [s["status"] for s in job["steps"]] == ["completed"] * 12
    finally:
        _end(worker, marker)
        stack.start_worker()


def _end(worker: subprocess.Popen[bytes], marker: str) -> None:
    """The clone's worker and whatever it started (found by their marker): SIGTERM, then
    SIGKILL for what is left after 10 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked_processes(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired, AssertionError):
            worker.wait(timeout=10)
            wait_for(lambda: not marked_processes(marker), timeout=10, what="its processes")
            return
