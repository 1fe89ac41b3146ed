"""`make run`'s launcher, run as `make run` runs it (`python -m deployments.launcher`) in a
folder and on ports of its own: the one supervisor, it restarts what dies (a worker, the
Prefect server, an API process) while the API keeps answering, ends everything it caused
when stopped, and holds its state folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.pids import marked_processes
from deployments.stack import free_port
from regjobs.catalogue import STEP_IDS
from regjobs.settings import PROJECT_DIR
from tests.helpers import (
    FINAL_JOB,
    NO_MENU,
    as_nobody,
    create,
    effects,
    fault,
    flow_run_pids,
    kill_all,
    own_accounts,
    progress,
    steps_by_id,
    wait_for,
    wait_step,
    watch_job,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

KEY = "rj_launcher_" + uuid.uuid4().hex


@dataclass
class Launched:
    process: subprocess.Popen[str]
    state_dir: Path
    api: httpx.Client
    standin: httpx.Client
    output: list[str] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "launcher.json").read_text()))

    def said(self, text: str) -> int:
        return sum(text in line for line in self.output)


def launch(state_dir: Path, *options: str, **env: str) -> Launched:
    """The launcher with `options` (`--production`) and `env` over the test settings."""
    ports = {name: free_port() for name in ("API", "PREFECT", "STANDIN")}
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments.launcher", *options],
        cwd=PROJECT_DIR,
        env={
            **os.environ,
            "REGJOBS_STATE_DIR": str(state_dir),
            **{f"REGJOBS_{name}_PORT": str(port) for name, port in ports.items()},
            "REGJOBS_DEMO": "0",
            "REGJOBS_DEV_API_KEY": KEY,
            "REGJOBS_API_WORKERS": "2",
            "REGJOBS_RETRY_BASE_SECONDS": "0.5",
            "REGJOBS_HTTP_TIMEOUT_SECONDS": "3",
            "REGJOBS_CDN_POLL_SECONDS": "0.2",
            "REGJOBS_BROWSER_ACTION_TIMEOUT_SECONDS": "3",
            "REGJOBS_STEP_MODE": "endpoints",
            "DATABASE_URL": f"sqlite:///{state_dir / 'regjobs.db'}",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    launched = Launched(
        process,
        state_dir,
        httpx.Client(
            base_url=f"http://127.0.0.1:{ports['API']}",
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=10,
        ),
        httpx.Client(base_url=f"http://127.0.0.1:{ports['STANDIN']}", timeout=10),
    )

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            launched.output.append(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    try:
        wait_for(
            lambda: launched.said("serving;") or process.poll() is not None,
            # Unloaded it serves in ~35 s; beside CI's other test systems it took 184 s.
            timeout=300,
            interval=0.2,
            what="the launcher to serve",
        )
    except AssertionError:
        stop(launched)  # it ends everything it started
        raise AssertionError("\n".join(launched.output)) from None
    assert process.poll() is None, "\n".join(launched.output)
    return launched


def stop(launched: Launched) -> float:
    """SIGTERM, as a service manager stops it; how long it took to exit."""
    asked = time.monotonic()
    launched.process.send_signal(signal.SIGTERM)
    launched.process.wait(timeout=60)
    return time.monotonic() - asked


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launched]:
    """One launcher for the tests that leave it running (each start costs a loaded CI
    machine one to three minutes); the tests that stop one start their own."""
    system = launch(tmp_path_factory.mktemp("launched") / "state")
    try:
        yield system
    finally:
        if system.process.poll() is None:
            stop(system)


def regjobs_cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`regjobs` as an operator runs it in the state folder's shell: with neither
    PREFECT_API_URL nor the API's URL set, it finds the launcher's ports itself."""
    environment = {
        **{k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "REGJOBS_API_URL")},
        "REGJOBS_STATE_DIR": str(state_dir),
        "REGJOBS_API_KEY": KEY,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "regjobs.cli", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


class Poller:
    """Asks the API for the job list every 0.2 s and keeps what went wrong."""

    def __init__(self, api: httpx.Client) -> None:
        self.api = api
        self.failures: list[str] = []
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                status = self.api.get("/api/registration-jobs", params={"limit": 1}).status_code
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))
                continue
            self.answers += 1
            if status != 200:
                self.failures.append(str(status))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def test_a_dead_worker_prefect_server_or_api_process_is_started_again_while_the_api_answers(
    launched: Launched,
) -> None:
    api, standin = launched.api, launched.standin
    poller = Poller(api)
    try:
        fault(standin, step="menu_import", mode="slow", seconds=30, times=1)
        job_id = create(api, "launcher-1", **own_accounts("launcher-1"))
        wait_for(
            lambda: progress(api, job_id)["step_statuses"]["menu_import"] == "running",
            timeout=90,
            what="menu import to run",
        )
        flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]
        worker = launched.status()["children"]["worker"]
        victims = flow_run_pids(flow_run_id)
        assert victims, "the flow-run process was not found"
        os.killpg(worker, signal.SIGKILL)
        kill_all(victims)
        killed = time.monotonic()

        wait_for(
            lambda: (
                launched.status()["children"].get("worker") not in (None, worker)
                and launched.said("worker is back")
            ),
            timeout=15,
            what="the launcher to start the worker again",
        )
        print(f"worker back {time.monotonic() - killed:.1f} s after the kill")
        job = wait_for(
            lambda: (
                (j := api.get(f"/api/registration-jobs/{job_id}").json())["status"] == "failed"
                and j
            ),
            timeout=30 - (time.monotonic() - killed),
            what="the job to fail",
        )
        print(f"job failed {time.monotonic() - killed:.1f} s after the kill")
        assert "worker was lost" in job["error_message"]
        api.post(f"/api/registration-jobs/{job_id}/retry").raise_for_status()
        assert watch_job(api, job_id, timeout=120).job["status"] == "completed"
        wait_for(
            lambda: all(c["end"] for c in standin.get("/_control/calls").json()),
            timeout=40,
            what="the held call to end",
        )
        assert effects(standin) == dict.fromkeys(STEP_IDS, 1)

        # The Prefect server dies mid-job: it comes back, and the API never stops answering.
        fault(standin, step="menu_import", mode="slow", seconds=5, times=1)
        second = create(api, "launcher-2", **own_accounts("launcher-2"))
        wait_for(
            lambda: progress(api, second)["step_statuses"]["menu_import"] == "running",
            timeout=90,
            what="menu import to run",
        )
        os.killpg(launched.status()["children"]["prefect"], signal.SIGKILL)
        wait_for(lambda: launched.said("prefect is back"), timeout=120, what="Prefect to be back")
        ended = watch_job(api, second, timeout=180).job
        assert ended["status"] in FINAL_JOB
    finally:
        poller.close()
    assert poller.answers > 100
    assert poller.failures == []

    # An API process dies: the launcher starts it again; the other answers meanwhile.
    second_api = launched.status()["children"]["api-2"]
    os.killpg(second_api, signal.SIGKILL)
    wait_for(lambda: launched.said("api-2 exited"), timeout=30, what="the launcher to see it")
    with httpx.Client(base_url=api.base_url, headers=api.headers, timeout=10) as fresh:
        assert fresh.get("/api/registration-jobs", params={"limit": 1}).status_code == 200
    wait_for(
        lambda: (
            launched.status()["children"].get("api-2") not in (None, second_api)
            and launched.said("api-2 is back")
        ),
        timeout=60,
        what="the launcher to start the API process again",
    )


def test_a_running_systems_files_are_private_and_stopping_ends_every_process(
    tmp_path: Path,
) -> None:
    """Started from a shell with the usual umask (0022) on a state folder an older version
    left world-readable, the launcher runs a job in direct mode (without a menu, which is
    not the subject) whose browser step fails once (a screenshot stored): every folder
    under the state folder is then 0700 and every file 0600 (the databases and their WAL,
    the logs, the secret key, launcher.json and its lock, Prefect's home, the warm pool's
    socket), and the socket refuses `nobody`. Stopped while two jobs' browser steps run, it
    ends every process it caused, Chromium included, and `regjobs` then says no system
    runs there. (One launcher for both: a start costs a loaded CI machine one to three minutes.)"""
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    previous = os.umask(0o022)  # an ordinary shell's: the system must not rely on it
    try:
        # A missing element or a held page fails an attempt after 10 s: the screenshot's
        # attempt ends soon, and a held step's Chromium lives long enough to be stopped.
        system = launch(
            state, REGJOBS_STEP_MODE="direct", REGJOBS_BROWSER_ACTION_TIMEOUT_SECONDS="10"
        )
    finally:
        os.umask(previous)
    try:
        _files_are_private(system)
        _stopping_ends_every_process(system)
    finally:
        if system.process.poll() is None:
            stop(system)
    gone = regjobs_cli(state, "doctor")
    assert gone.returncode == 1
    assert "PREFECT_API_URL is not set" in gone.stdout


def _files_are_private(system: Launched) -> None:
    state = system.state_dir
    # The files' subject is not the menu: a job without one (four browser steps), whose
    # services settings fail once.
    fault(
        system.standin,
        step="services_configuration",
        mode="hide_element",
        element="#save-services",
        times=1,
    )
    job_id = create(system.api, "modes-1", menu=NO_MENU, **own_accounts("modes-1"))
    job = watch_job(system.api, job_id, timeout=240).job
    assert job["status"] == "completed", job["error_message"]
    assert len(steps_by_id(job)["services_configuration"]["evidence"]) == 1  # a screenshot
    found = {str(p.relative_to(state)): p for p in state.rglob("*")}
    for expected in (
        "regjobs.db",
        "regjobs.db-wal",
        "secret.key",
        "launcher.json",
        "launcher.lock",
        "logs/api.log",
        "logs/worker.log",
        "logs/worker-warm.log",
        "prefect/prefect.db",
        "run/warm-worker.sock",
    ):
        assert expected in found, f"{expected} not in {sorted(found)}"
    modes = {name: stat.S_IMODE(os.lstat(path).st_mode) for name, path in found.items()}
    print(f"{len(found)} entries under the state folder:")
    for name in sorted(found):
        print(f"  {oct(modes[name])} {name}")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    wrong = {
        name: oct(mode)
        for name, mode in modes.items()
        if mode != (0o700 if found[name].is_dir() else 0o600)
    }
    assert wrong == {}
    assert stat.S_ISSOCK(os.lstat(found["run/warm-worker.sock"]).st_mode)

    def connect() -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.connect(str(found["run/warm-worker.sock"]))
        return "connected"

    assert as_nobody(connect) == "PermissionError: Permission denied"
    assert as_nobody(lambda: found["secret.key"].read_text()) == (
        "PermissionError: Permission denied"
    )


def _stopping_ends_every_process(system: Launched) -> None:
    stack_id = system.status()["stack_id"]
    fault(system.standin, step="restaurant_registration", mode="slow", seconds=60)
    jobs = [create(system.api, f"stop-{n}", **own_accounts(f"stop-{n}")) for n in range(2)]
    for job_id in jobs:
        wait_step(system.api, job_id, "restaurant_registration", "running")
    wait_for(
        lambda: any(_is_browser(pid) for pid in marked_processes(stack_id)),
        timeout=30,
        what="a Chromium of this system to run",
    )
    took = stop(system)
    print(f"stopped in {took:.1f} s")
    assert took < 20
    assert marked_processes(stack_id) == []
    assert system.process.returncode == 0


def test_a_second_launcher_on_the_same_state_folder_refuses_and_the_cli_finds_the_first(
    launched: Launched,
) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "deployments.launcher"],
        cwd=PROJECT_DIR,
        env={**os.environ, "REGJOBS_STATE_DIR": str(launched.state_dir)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert f"PID {launched.process.pid}" in second.stderr
    # An operator in the same folder: `regjobs` talks to this launcher's Prefect and API,
    # on whatever ports it took (once it is stopped, it says so: the stopping test).
    doctor = regjobs_cli(launched.state_dir, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert launched.status()["prefect_api_url"] in doctor.stdout
    assert regjobs_cli(launched.state_dir, "jobs", "ls").returncode == 0


def _is_browser(pid: int) -> bool:
    try:
        return "chrom" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
