"""Everything a running system keeps in its state folder is its user's alone: `make run`'s
launcher, started from a shell with the usual umask (0022) on a state folder an older
version left world-readable, runs a job in direct mode whose browser step fails once (a
screenshot stored), and then every folder under the state folder is 0700 and every file
0600: the databases and their WAL, the logs, the secret key, launcher.json and its lock,
Prefect's home, the warm pool's socket. The socket refuses `nobody`."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_launcher import launch, stop
from tests.helpers import (
    create,
    fault,
    flow_run_pids,
    hold_step,
    own_accounts,
    steps_by_id,
    watch_job,
)
from tests.unit.test_private import as_nobody

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_every_file_under_a_running_systems_state_folder_is_0600(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    previous = os.umask(0o022)  # an ordinary shell's: the system must not rely on it
    try:
        system = launch(state, REGJOBS_STEP_MODE="direct")
    finally:
        os.umask(previous)
    try:
        fault(system.standin, step="item_tags", mode="hide_element", element="#flash", times=1)
        job_id = create(system.api, "modes-1", **own_accounts("modes-1"))
        job = watch_job(system.api, job_id, timeout=240).job
        assert job["status"] == "completed", job["error_message"]
        assert len(steps_by_id(job)["item_tags"]["evidence"]) == 1  # a screenshot stored

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
    finally:
        stop(system)


def test_flow_runs_start_warm_through_the_private_socket(
    api: httpx.Client, standin: httpx.Client, restaurant_id: str
) -> None:
    """The peer checks let the system's own processes through: a flow run's launcher (the
    work pool's `python -m deployments.warm`) is handed a warm process rather than falling
    back to a cold `python -m prefect.engine`, which it would do silently."""
    job_id = hold_step(api, standin, restaurant_id, "code_generation", 30)
    flow_run_id = api.get(f"/api/registration-jobs/{job_id}").json()["flow_run_id"]
    commands = {
        pid: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3]
        for pid in flow_run_pids(flow_run_id)
    }
    assert [b"-m", b"deployments.warm"] in commands.values(), commands
    assert [b"-m", b"prefect.engine"] not in commands.values(), commands
    api.post(f"/api/registration-jobs/{job_id}/cancel").raise_for_status()
