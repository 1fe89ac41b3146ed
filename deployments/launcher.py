"""`make run`: the whole system on this machine, a demo job, then serve until Ctrl-C.

`python -m deployments.launcher --production`: the production shape on this machine instead
(docs/design.md): Prefect's server and the job tables on PostgreSQL (databases
`regjobs_prefect` and `regjobs` on REGJOBS_PG_ADMIN_URL's server, made if missing, or
PREFECT_API_DATABASE_CONNECTION_URL and DATABASE_URL), Redis (REGJOBS_REDIS_URL) for Prefect's
messaging and leases, Prefect's services as a process of their own, two API processes
behind the API port, REGJOBS_WORKERS (2) workers. State in `.state-production`. Prefect's
API there is closed: its auth string is PREFECT_API_AUTH_STRING (or
PREFECT_SERVER_API_AUTH_STRING) if set, else the state folder's `prefect-auth` (made once,
0600), never printed; it listens on PREFECT_SERVER_API_HOST (loopback by default).

Ports: REGJOBS_API_PORT (8000), REGJOBS_PREFECT_PORT (4200), REGJOBS_STANDIN_PORT (8100).
REGJOBS_DEMO=0 skips the demo job. State (Prefect's SQLite database, the job database,
logs, the development key) lives in REGJOBS_STATE_DIR (.state).

The launcher is the one supervisor of `make run` (docs/design.md, "One supervisor"): every
process the stack starts is its child, and a child that exits (the worker or its warm pool,
the Prefect server, the stand-in, an API process) is started again after a pause that
doubles with each quick failure, while the rest keep serving meanwhile (the API answers
from the job database with Prefect down). On
Ctrl-C or SIGTERM it ends every process it caused, the worker's flow-run processes and
their Chromium included. One launcher per state folder: a second refuses and names the
first.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from deployments import prefect_server
from deployments.demo import run_demo
from deployments.stack import Stack
from deployments.stack_config import StackConfig, production_from_env
from regjobs.private import open_private, private_dir, restrict_umask, write_private
from regjobs.settings import PROJECT_DIR

#: Pauses before restarting a child that exited, doubling up to the last.
BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: A child that ran this long before exiting starts again after the first pause.
HEALTHY_SECONDS = 60.0


class StateDirBusy(RuntimeError):
    pass


def lock_state_dir(state_dir: Path) -> IO[str]:
    """Hold the state folder for this process (released when it exits, however)."""
    private_dir(state_dir)
    handle = os.fdopen(open_private(state_dir / "launcher.lock", os.O_RDWR), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StateDirBusy(
            f"another `make run` (PID {holder}) is using {state_dir}; stop it first, or give "
            "this one its own REGJOBS_STATE_DIR and ports"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


@dataclass
class Supervisor:
    stack: Stack
    say: Callable[[str], None] = print
    #: The state folder's file of Prefect's auth string (production shape, when generated).
    prefect_auth_file: str | None = None
    _failures: dict[str, int] = field(default_factory=dict)
    _restarting: dict[str, threading.Thread] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    def starters(self) -> dict[str, Callable[[], object]]:
        found: dict[str, Callable[[], object]] = {
            "prefect": self.stack.start_prefect,
            "prefect-services": self.stack.start_services,
            "standin": self.stack.start_standin,
        }
        for api in self.stack.api_names:
            found[api] = functools.partial(self.stack.start_api_process, api)
        for worker in self.stack.worker_names:
            found[worker] = functools.partial(self.stack.start_worker, worker)
            found[f"{worker}-warm"] = functools.partial(self.stack.start_warm_pool, worker)
        return found

    def check(self) -> None:
        """Start again, after its pause, every child that exited."""
        for name, child in list(self.stack.children.items()):
            if name in self._restarting or child.process.poll() is None:
                continue
            lived = time.monotonic() - self._started.get(name, 0.0)
            failures = 0 if lived > HEALTHY_SECONDS else self._failures.get(name, 0)
            pause = BACKOFF[min(failures, len(BACKOFF) - 1)]
            self._failures[name] = failures + 1
            self.say(
                f"{name} exited ({child.process.returncode}); starting it again in {pause:.0f} s"
            )
            thread = threading.Thread(target=self._restart, args=(name, pause), daemon=True)
            self._restarting[name] = thread
            thread.start()
        self.write_status()

    def _restart(self, name: str, pause: float) -> None:
        try:
            time.sleep(pause)
            self._started[name] = time.monotonic()
            self.starters()[name]()
            self.say(f"{name} is back")
        except Exception as exc:  # seen as exited again at the next check
            self.say(f"{name} did not start: {exc}".splitlines()[0])
        finally:
            self._restarting.pop(name, None)

    def started_all(self) -> None:
        now = time.monotonic()
        self._started.update(dict.fromkeys(self.stack.children, now))
        self.write_status()

    def write_status(self) -> None:
        """`launcher.json` in the state folder: this launcher and its children, for
        operators and tests."""
        status = {
            "pid": os.getpid(),
            "stack_id": self.stack.stack_id,
            "api_url": self.stack.config.api_url,
            "prefect_api_url": self.stack.config.prefect_api_url,
            # Where the `regjobs` CLI on this machine finds Prefect's auth string (the
            # path, never the string).
            "prefect_auth_file": self.prefect_auth_file,
            "children": {
                name: child.process.pid
                for name, child in self.stack.children.items()
                if child.process.poll() is None
            },
        }
        write_private(self.stack.config.state_dir / "launcher.json", json.dumps(status).encode())


def main(argv: list[str] | None = None) -> int:
    # Before anything is created: everything this and its children make is 0600 / 0700.
    restrict_umask()
    parser = argparse.ArgumentParser(prog="python -m deployments.launcher")
    parser.add_argument(
        "--production",
        action="store_true",
        help="the production shape on this machine: PostgreSQL, Redis, Prefect's services "
        "apart, two API processes, two workers (docs/design.md)",
    )
    args = parser.parse_args(argv)
    default_state = PROJECT_DIR / (".state-production" if args.production else ".state")
    state_dir = Path(os.environ.get("REGJOBS_STATE_DIR", default_state)).resolve()
    auth_file = None
    if args.production:
        try:
            auth_file = prefect_server.auth_string_for(os.environ, state_dir)[1]
            prefect_server.check_host(os.environ.get(prefect_server.HOST, "127.0.0.1"))
        except prefect_server.Refused as refused:
            print(f"refusing to start: {refused}", file=sys.stderr)
            return 2
    config = StackConfig(
        state_dir=state_dir,
        api_port=int(os.environ.get("REGJOBS_API_PORT", "8000")),
        prefect_port=int(os.environ.get("REGJOBS_PREFECT_PORT", "4200")),
        standin_port=int(os.environ.get("REGJOBS_STANDIN_PORT", "8100")),
        # The development shape is on loopback whatever the environment says.
        prefect_host=(
            os.environ.get(prefect_server.HOST, "127.0.0.1") if args.production else "127.0.0.1"
        ),
        production=production_from_env(os.environ, state_dir) if args.production else None,
    )
    try:
        lock = lock_state_dir(state_dir)
    except StateDirBusy as busy:
        print(busy, file=sys.stderr)
        return 1
    stack = Stack(config)
    supervisor = Supervisor(
        stack,
        say=lambda line: print(line, flush=True),
        prefect_auth_file=str(auth_file) if auth_file else None,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    started = time.monotonic()
    shape = "production shape" if config.production else "embedded default"
    print(f"starting registration-jobs, {shape} (state in {state_dir}, logs in {stack.logs_dir})")
    try:
        stack.start_all()
        supervisor.started_all()
        print(f"up in {time.monotonic() - started:.1f} s")
        print(f"  API         {config.api_url}  (docs: {config.api_url}/docs)")
        print(f"  Prefect UI  {config.prefect_url}")
        print(f"  stand-in    {config.standin_url}")
        print(f"  API key     {stack.dev_api_key()}  (organisation: demo-organisation)")
        print(f"  for the prefect CLI: export PREFECT_API_URL={config.prefect_api_url}")
        if config.production:
            # The auth string itself is never printed: this output may well be a log.
            source = auth_file or "the PREFECT_API_AUTH_STRING this launcher was given"
            print(f"  Prefect's auth string: {source} (the UI asks for it once)")
            if auth_file:
                print(f"    export PREFECT_API_AUTH_STRING=$(cat {auth_file})")
        if os.environ.get("REGJOBS_DEMO", "1") != "0":
            run_demo(config.api_url, stack.dev_api_key(), stop)
        print("serving; Ctrl-C stops everything", flush=True)
        while not stop.wait(0.5):
            supervisor.check()
    finally:
        print("stopping...", flush=True)
        stopping = time.monotonic()
        stack.stop()
        with contextlib.suppress(OSError):
            (state_dir / "launcher.json").unlink()
        lock.close()
        print(f"stopped in {time.monotonic() - stopping:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
