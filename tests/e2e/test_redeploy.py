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
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType

from deployments.pids import MARKER, marked_processes
from deployments.setup import PROJECT_DIR_ENV
from deployments.stack import Stack
from deployments.stack_config import WORK_POOL
from regjobs.catalogue import STEP_IDS
from regjobs.settings import PROJECT_DIR, get_settings
from tests.helpers import (
    create,
    fault,
    flow_run_pids,
    own_accounts,
    progress,
    release_held,
    steps_by_id,
    wait_for,
    wait_step,
    watch_job,
)

pytestmark = [pytest.mark.e2e]

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


# ------------------------------------------------------------------ two releases at once

#: Where each release's step handlers mark their results (the test repository's commits).
MARKED = {
    "menu_import": "    return await ctx.clients.portal.import_menu(",
    "item_tags": "    return await ctx.clients.portal.add_item_tags(",
}


def _commit_marked(repo: Path, mark: str) -> str:
    """Commit handlers whose menu import and item tags mark their results with `mark` (the
    release's code, as a later step could see it); the commit's id."""
    handlers = repo / "tasks" / "handlers.py"
    source = handlers.read_text()
    for line in MARKED.values():
        source = source.replace(
            line, line.replace("return await", "return {'release_mark': '?'} | await")
        )
    source = re.sub(r"'release_mark': '[^']*'", f"'release_mark': '{mark}'", source)
    assert source.count(f"'release_mark': '{mark}'") == len(MARKED), "tasks/handlers.py changed"
    handlers.write_text(source)
    # The catalogue keeps the mark in the steps' results (a result is the fields it gives).
    catalogue = repo / "regjobs" / "catalogue.py"
    text = catalogue.read_text()
    for gives in ('gives=("menu_id", "items")', 'gives=("menu_id", "tags")'):
        text = text.replace(gives, gives.replace(")", ', "release_mark")'))
    assert text.count('"release_mark")') == len(MARKED), "regjobs/catalogue.py changed"
    catalogue.write_text(text)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "commit", "-qam", f"steps marked {mark}"], check=True)
    return subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


class Operator:
    """An operator's machine: a clone of the repository in its own folder, releases made
    from it into their own folders, each deployed and run by its own environment."""

    def __init__(self, stack: Stack, tmp_path: Path, repo: Path) -> None:
        self.clone = tmp_path / "operator" / "registration-jobs"
        subprocess.run(["git", "clone", "-q", str(repo), str(self.clone)], check=True)
        self.root = tmp_path / "releases"
        home = tmp_path / "operator-home"
        home.mkdir()
        env = readme_env(stack, self.clone, home)
        del env["PYTHONPATH"], env[PROJECT_DIR_ENV]  # each release's own environment
        self.env = env
        self.workers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        self.logs = tmp_path

    def checkout(self, commit: str) -> None:
        subprocess.run(["git", "-C", str(self.clone), "checkout", "-q", commit], check=True)

    def run(self, args: list[str], cwd: Path, *, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            args, cwd=cwd, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=180,
        )  # fmt: skip
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done.stdout

    def make_release(self) -> Path:
        """`python -m deployments.release make` from the clone (the release is registered
        in the job database with it); the release's folder. Layered over this test's
        environment's packages (--base-env: seconds, not a minute of pip)."""
        out = self.run(
            [sys.executable, "-m", "deployments.release", "make", "--source", str(self.clone),
             "--root", str(self.root), "--base-env", str(Path(sys.executable).parent.parent)],
            self.clone, env={"PYTHONPATH": str(self.clone)},
        )  # fmt: skip
        folder = Path(out.split(" at ", 1)[1].split("\n", 1)[0])
        assert (folder / "RELEASE.json").is_file(), out
        return folder

    def deploy(self, release: Path) -> None:
        env = {"PATH": os.pathsep.join([str(release / ".venv" / "bin"), self.env["PATH"]])}
        out = self.run(["prefect", "--no-prompt", "deploy", "--all"], release, env=env)
        assert "registration-job/registration-job" in out

    def start_worker(self, release: Path) -> None:
        version = json.loads((release / "RELEASE.json").read_text())["version"]
        marker = uuid.uuid4().hex
        # The held step's call is answered only when the test releases it.
        env = {**self.env, MARKER: marker, "REGJOBS_HTTP_TIMEOUT_SECONDS": "280"}
        with open(self.logs / f"worker-{version}.log", "wb") as log:
            worker = subprocess.Popen(
                [str(release / ".venv" / "bin" / "python"), "-m", "deployments.release",
                 "worker", "--name", f"test-{os.getpid()}"],
                cwd="/", env=env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.workers[version] = (worker, marker)
        wait_for(
            lambda: "started!" in (self.logs / f"worker-{version}.log").read_text(),
            timeout=60, what=f"release {version}'s worker to start",
        )  # fmt: skip

    def stop_worker(self, version: str) -> None:
        worker, marker = self.workers.pop(version)
        _end(worker, marker)

    def regjobs(self, release: Path, *args: str) -> str:
        return self.run([str(release / ".venv" / "bin" / "regjobs"), *args], release)


def _marks(job: dict[str, Any]) -> dict[str, str]:
    return {s: steps_by_id(job)[s]["result_data"].get("release_mark") for s in MARKED}


def _flow_run(flow_run_id: str) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(flow_run_id))


def test_jobs_keep_their_release_while_operators_redeploy(
    stack: Stack,
    api: httpx.Client,
    standin: httpx.Client,
    restaurant_id: str,
    tmp_path: Path,
) -> None:
    """Two releases built from two commits of a repository (their menu import and item
    tags mark results "A" or "B"), redeployed as an operator does (checkout, make the
    release, `prefect deploy --all`, start its workers, drain the old), from a clone in
    another folder: a job of A held at a slow step ends on A's code after B is deployed;
    new jobs run on B; a retry of A's job once A's workers are gone waits saying why, and
    after `regjobs jobs upgrade` runs on B reusing A's results; every effect once a job."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(PROJECT_DIR), str(repo)], check=True)
    commit_a, commit_b = _commit_marked(repo, "A"), _commit_marked(repo, "B")
    ops = Operator(stack, tmp_path, repo)
    version_a, version_b = commit_a[:12], commit_b[:12]
    try:
        ops.checkout(commit_a)
        release_a = ops.make_release()
        ops.deploy(release_a)
        ops.start_worker(release_a)

        # On A: one job fails at its last step (to retry later), one is held at a slow step.
        tags = {n: f"{restaurant_id}-{n}" for n in ("held", "new", "failed")}
        fault(standin, step="item_tags", mode="status", status=400, times=1)
        failed = create(api, tags["failed"], **own_accounts(tags["failed"]))
        job = watch_job(api, failed, timeout=120).job
        assert (job["status"], job["failed_step"], job["code_version"]) == (
            "failed", "item_tags", version_a,
        ), job  # fmt: skip
        # Held until released below, however long the redeploy takes (it once took longer
        # than a 45-s hold on a loaded machine); A's worker waits that long for an answer.
        fault(standin, step="menu_import", mode="slow", seconds=240, times=1)
        held = create(api, tags["held"], **own_accounts(tags["held"]))
        wait_step(api, held, "menu_import", "running")

        # The redeploy: checkout, make the release, deploy it, start its worker.
        ops.checkout(commit_b)
        release_b = ops.make_release()
        ops.deploy(release_b)
        ops.start_worker(release_b)
        assert progress(api, held)["step_statuses"]["menu_import"] == "running"
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(DEPLOYMENT)
            pool = client.read_work_pool(WORK_POOL)
        assert (deployment.version, deployment.work_queue_name) == (
            version_b, f"release-{version_b}",
        )  # fmt: skip
        assert deployment.pull_steps == PULL_STEPS
        recorded = json.dumps(deployment.model_dump(mode="json")) + json.dumps(
            pool.model_dump(mode="json")
        )
        for folder in (PROJECT_DIR, ops.clone, release_a, release_b):
            assert str(folder) not in recorded

        new = create(api, tags["new"], **own_accounts(tags["new"]))
        job = watch_job(api, new, timeout=120).job
        assert (job["status"], job["code_version"], _marks(job)) == (
            "completed", version_b, {"menu_import": "B", "item_tags": "B"},
        ), job  # fmt: skip
        release_held(standin)
        job = watch_job(api, held, timeout=120).job
        assert (job["status"], job["code_version"], _marks(job)) == (
            "completed", version_a, {"menu_import": "A", "item_tags": "A"},
        ), job  # fmt: skip
        assert _flow_run(job["flow_run_id"]).flow_version == version_a

        # An operator's rerun of A's job lands on B's queue (the deployment's): it refuses.
        with get_client(sync_client=True) as client:
            rerun = client.create_flow_run_from_deployment(
                deployment.id, parameters={"job_id": held}
            )
        refused = wait_for(
            lambda: (r := _flow_run(str(rerun.id))).state.is_final() and r,
            timeout=60, what="the rerun on B to end",
        )  # fmt: skip
        assert refused.state.type == StateType.CANCELLED, refused.state
        assert f"regjobs jobs upgrade {held} --to {version_b}" in refused.state.message

        # Drain A: no job is on it any more, so its worker goes.
        listed = ops.regjobs(release_b, "releases")
        rows = {line.split()[0]: line.split() for line in listed.splitlines() if line.strip()}
        assert rows.get(version_a, [""])[-1] == "yes", listed  # drained
        assert f"test-{os.getpid()}@{version_b}" in listed, listed
        ops.stop_worker(version_a)

        # A retry of A's job now waits, saying for what and how to move it.
        assert api.post(f"/api/registration-jobs/{failed}/retry", json={}).status_code == 200
        waiting = wait_for(
            lambda: "regjobs jobs upgrade" in str(
                (j := api.get(f"/api/registration-jobs/{failed}").json())["pending_reason"]
            ) and j,
            timeout=60, what="the retry to say it waits for a worker of release A",
        )  # fmt: skip
        assert f"release {version_a}" in waiting["pending_reason"]
        assert f"regjobs jobs upgrade {failed}" in waiting["pending_reason"]
        assert steps_by_id(waiting)["item_tags"]["status"] == "pending"

        moved = ops.regjobs(release_b, "jobs", "upgrade", failed)
        assert f"{version_a} -> {version_b}" in moved, moved
        changed = moved.split("steps whose code changed", 1)[1].split("completed step(s)")[0]
        assert "menu_import (completed: its result is reused" in changed, moved
        assert "item_tags (pending: will run on" in changed, moved
        assert "account_registration" not in changed, moved
        job = watch_job(api, failed, timeout=120).job
        assert (job["status"], job["code_version"], _marks(job)) == (
            "completed", version_b, {"menu_import": "A", "item_tags": "B"},
        ), job  # fmt: skip
        last = _flow_run(job["flow_run_id"])
        assert last.flow_version == version_b and f"release:{version_b}" in last.tags
        # Every outside effect exactly once for each of the three jobs.
        effects = standin.get("/_control/effects").json()
        assert effects == dict.fromkeys(effects, 3), effects
        assert set(effects) == set(STEP_IDS)
    finally:
        for version in list(ops.workers):
            ops.stop_worker(version)
        stack.set_up_deployment()  # the implicit release again, for the tests after
