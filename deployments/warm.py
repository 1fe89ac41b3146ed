"""Warm flow-run processes: a flow run starts in a Python process that has imported Prefect
and the flow already, instead of a new interpreter paying ~1.5 s of CPU for the imports.

Three parts, one module:
- **the pool** (`python -m deployments.warm pool`), one per worker, beside it: keeps
  `REGJOBS_WARM_PROCESSES` warm processes waiting, and starts a new one as soon as one is
  taken. It imports Prefect and the flow once and forks each warm process from itself
  while it is single-threaded (never after any thread started: Prefect's engine deadlocks
  in a process forked after its threads started, PrefectHQ/prefect#16802; see `pool`), so
  a warm process costs milliseconds of CPU, not the imports' seconds;
  `REGJOBS_WARM_FORK=false` spawns each instead;
- **the launcher** (`python -m deployments.warm`), the work pool's command for a flow run,
  so Prefect's process worker starts it exactly where it would start `python -m
  prefect.engine`. It imports nothing heavy; it asks the pool for a warm process and hands
  it its environment, working folder, arguments and standard streams. With no pool, or no
  warm process free at once, it becomes `python -m prefect.engine` itself (a cold start);
- **a warm process** (`python -m deployments.warm serve`) runs Prefect's engine (`python -m
  prefect.engine`, unchanged) with what it was handed.

Prefect's cancel and crash semantics hold because the worker still sees one process per
flow run, the launcher: signals sent to the launcher (the runner's SIGTERM on cancel) are
passed to the warm process; the launcher exits with the warm process's exit code (137 if it
was killed); and a launcher that dies (SIGKILL) takes its warm process with it at once (the
warm process watches the launcher's connection and kills itself when it closes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, NoReturn

#: The pool's Unix socket (set by the stack for each worker and what it starts).
SOCKET_ENV = "REGJOBS_WARM_SOCKET"
#: Warm processes a pool keeps waiting.
SIZE_ENV = "REGJOBS_WARM_PROCESSES"
#: "false": each warm process a new interpreter instead of forked from the pool.
FORK_ENV = "REGJOBS_WARM_FORK"
#: How long a launcher waits for the pool's answer before it starts cold.
CLAIM_SECONDS = 2.0
#: How long a forked pool keeps a launcher waiting for a warm process when none is idle
#: (one is forked for it at once and is ready in ~0.2-0.5 s; a cold start costs seconds).
CLAIM_WAIT = 1.2
#: Spawned warm processes only: after a hand-over, a new one is started this much later
#: while another still waits (at once when none does): importing Prefect takes ~1.5-2.5 s
#: of CPU, which on a small machine would slow the start of the flow run just handed over.
REFILL_PAUSE = 0.75
KILLED = 137


# ---------------------------------------------------------------------------- launcher


def _line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.decode().strip()


def _claim(path: str) -> tuple[socket.socket, int] | None:
    """A warm process from the pool at `path`: its connection and PID; None if the pool
    is not there or has none free."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(CLAIM_SECONDS)
    try:
        conn.connect(path)
        conn.sendall(b"claim\n")
        answer = _line(conn)
    except OSError:
        conn.close()
        return None
    if not answer.startswith("pid "):
        conn.close()
        return None
    conn.settimeout(None)
    return conn, int(answer.split()[1])


def launch(argv: list[str]) -> NoReturn:
    """Run this flow run in a warm process, or start Prefect's engine here if none."""
    path = os.environ.get(SOCKET_ENV)
    claimed = _claim(path) if path else None
    if claimed is None:
        os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *argv])
    conn, pid = claimed
    payload = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "argv": argv}).encode()
    message = len(payload).to_bytes(8, "big") + payload
    sent = socket.send_fds(conn, [message], [0, 1, 2])
    conn.sendall(message[sent:])

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        answer = _line(conn)
    except (ConnectionError, OSError):
        answer = ""
    code = int(answer.split()[1]) if answer.startswith("exit ") else KILLED
    os._exit(code)


# ------------------------------------------------------------------------ warm process


def serve(path: str) -> NoReturn:
    """Import what every flow run needs, then wait for one flow run and run it."""
    import runpy

    _warm_up()
    settings = _prefect_settings()
    client = _prefect_client()

    pool = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pool.connect(path)
    pool.sendall(f"ready {os.getpid()}\n".encode())
    _message, fds, _, _ = socket.recv_fds(pool, 16, 1)
    if not fds:
        os._exit(0)  # the pool closed: nothing to run
    pool.close()
    launcher = socket.socket(fileno=fds[0])
    launcher.setblocking(True)  # the pool read from it with a timeout: a shared flag
    launcher.sendall(f"pid {os.getpid()}\n".encode())
    # The standard streams come with the first bytes of the message (then the rest).
    first, streams, _, _ = socket.recv_fds(launcher, 1 << 16, 3)
    while len(first) < 8:
        first += _exactly(launcher, 8 - len(first))
    size = int.from_bytes(first[:8], "big")
    body = first[8:] + _exactly(launcher, size - len(first) + 8)
    job: dict[str, Any] = json.loads(body)
    for target, fd in zip((0, 1, 2), streams, strict=True):
        os.dup2(fd, target)
        os.close(fd)
    threading.Thread(target=_die_with, args=(launcher,), daemon=True).start()

    prepared, expected = settings
    same_settings = _prefect_env(job["env"]) == expected
    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    if same_settings:  # (the client was made for this Prefect API)
        _entrypoint_imported(client)
    if client is not None:
        with contextlib.suppress(Exception):
            client.__exit__(None, None, None)
    sys.argv = ["prefect.engine", *job["argv"]]
    code = _run_engine(runpy, prepared if same_settings else None)
    _drain()
    with contextlib.suppress(OSError):
        launcher.sendall(f"exit {code}\n".encode())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


#: What a flow run imports on its way to its first step beyond the engine and the flow
#: (seen by diffing sys.modules around a run): imported here, before the run is handed over.
WARM_IMPORTS = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.deployments.steps.core",
    "prefect.deployments.steps.pull",
    "prefect.runner",
    "prefect.utilities.visualization",
    "anyio._backends._asyncio",
    "sqlite3",
    "flows.registration",
    "tasks.steps",
)


def _warm_up() -> None:
    """Import what a flow run needs (if the pool has not), and open the job database once
    (its engine is kept per URL: the flow run, given the same URL, finds its pool and
    driver ready)."""
    _imports()
    from regjobs.db import get_engine, get_read_engine

    for engine in (get_engine(), get_read_engine()):
        try:
            with engine.connect():
                pass
        except Exception:  # the database is not up yet: the flow run connects itself
            engine.dispose()


def _prefect_env(env: Any) -> dict[str, str]:
    """The environment Prefect's settings are read from (PREFECT_*, not PREFECT__*: those
    name the flow run, not settings)."""
    return {
        k: v for k, v in env.items() if k.startswith("PREFECT_") and not k.startswith("PREFECT__")
    }


def _prefect_settings() -> tuple[Any, dict[str, str]]:
    """Prefect's settings as this process's environment gives them (~50-130 ms to build),
    and the PREFECT_* environment a flow run handed over by this process's worker has when
    its settings are these: the worker passes its own environment with its settings written
    over it (`to_environment_variables`). A flow run handed over with
    exactly that environment uses the settings built here."""
    from prefect.settings import Settings

    settings = Settings()
    expected = {**os.environ, **settings.to_environment_variables(exclude_unset=True)}
    return settings, _prefect_env(expected)


def _entrypoint_imported(client: Any) -> None:
    """Skip loading a flow this process has imported already: when the flow run's
    deployment's only pull step is the project's own (`project_directory`) or
    `set_working_directory`, and its entrypoint file is a
    module imported here, go to that folder and name the module to Prefect's engine
    (`PREFECT__FLOW_ENTRYPOINT`, what Prefect's own runner sets for served flows). The
    engine then neither reads the deployment nor runs its pull step nor executes the flow's
    file again as a new module (~0.3-0.5 s). Anything else: the engine does all of it.
    `client`: a Prefect client made at warm-up (making one costs ~30 ms)."""
    deployment_id = os.environ.get("PREFECT__DEPLOYMENT_ID")
    if client is None or not deployment_id or os.environ.get("PREFECT__FLOW_ENTRYPOINT"):
        return
    try:
        deployment = client.read_deployment(deployment_id)
    except Exception:
        return
    steps = deployment.pull_steps or []
    if len(steps) != 1 or not deployment.entrypoint or ".py:" not in deployment.entrypoint:
        return
    (key, arguments), *_ = steps[0].items()
    if key == "deployments.setup.project_directory":
        # The project's own pull step (prefect.yaml): the folder is decided here, now.
        from deployments.setup import project_directory

        try:
            directory: str = project_directory()["directory"]
        except Exception:
            return  # the engine runs the step and reports what is wrong
    else:
        given = (arguments or {}).get("directory")
        if key.rsplit(".", 1)[-1] != "set_working_directory" or not isinstance(given, str):
            return
        directory = given
    if "{{" in directory or not os.path.isdir(directory):
        return
    path, function = deployment.entrypoint.rsplit(":", 1)
    name = os.path.normpath(path).removesuffix(".py").replace(os.sep, ".")
    module = sys.modules.get(name)
    found = getattr(module, "__file__", None)
    target = os.path.join(directory, path)
    if found and os.path.realpath(found) == os.path.realpath(target):
        os.chdir(directory)
        os.environ["PREFECT__FLOW_ENTRYPOINT"] = f"{name}:{function}"


def _prefect_client() -> Any:
    """A Prefect client for the hand-over (None if it cannot be made; never one that
    would start a temporary server of its own)."""
    if not os.environ.get("PREFECT_API_URL"):
        return None
    try:
        from prefect.client.orchestration import get_client

        client = get_client(sync_client=True)
        client.__enter__()
    except Exception:
        return None
    return client


def _run_engine(runpy: Any, prepared: Any = None) -> int:
    """`python -m prefect.engine`, with Prefect's and this project's settings read again
    from the environment the flow run was given (Prefect's `prepared` ones if that
    environment gives the same)."""
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    from regjobs.settings import get_settings

    get_settings.cache_clear()
    current = get_settings_context()
    try:
        with SettingsContext(profile=current.profile, settings=prepared or Settings()):
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
        return 1
    return 0


def _drain() -> None:
    """Send what Prefect's log and event workers still hold, as the interpreter's exit
    would (`os._exit` skips it): a run's last lines and events are not lost."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=5)


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _die_with(launcher: socket.socket) -> None:
    """The launcher's connection closes only when it exits: if that happens before this
    process has finished (the launcher was killed), die at once, as the flow-run process
    it stands for did."""
    try:
        while launcher.recv(1):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGKILL)


# -------------------------------------------------------------------------------- pool


def pool(path: str, size: int, fork: bool = True) -> None:
    """Keep `size` warm processes waiting; hand one to each launcher that asks.

    With `fork`, the pool imports what a flow run needs once (`WARM_IMPORTS`, ~1.5-2.5 s of
    CPU) and forks each warm process from itself (a few milliseconds; the pages stay shared
    until written). That is safe because the pool never runs Prefect's engine, a client or
    anything else that starts a thread: it stays one thread (checked before every fork,
    threads of Python's and of the kernel's count), so no lock can be held by a thread the
    child would not have (what PrefectHQ/prefect#16802 hit). Each child then makes its own
    settings, database connection and Prefect client. Without `fork` (or if the pool ever
    has a second thread) each warm process is a new interpreter (spawned)."""
    import selectors
    import subprocess

    if fork:
        _imports()
    selector = selectors.DefaultSelector()
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    selector.register(server, selectors.EVENT_READ)
    idle: list[socket.socket] = []
    #: Launchers that asked when none was idle, and since when (forked pools only).
    waiting: list[tuple[socket.socket, float]] = []
    #: Warm processes started and not yet reaped: spawned (a Popen) or forked (None).
    children: dict[int, subprocess.Popen[bytes] | None] = {}
    ready: set[int] = set()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    claimed = [0.0]  # when a launcher last took a warm process (monotonic)

    def start_one() -> None:
        if fork and _single_threaded():
            pid = os.fork()
            if pid == 0:  # the warm process: nothing of the pool's but its imports
                try:
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                    # Every socket of the pool: a launcher's connection left open here
                    # would hide the death of the process serving it from the launcher.
                    selector.close()
                    server.close()
                    for conn in [*idle, *(c for c, _ in waiting)]:
                        conn.close()
                    serve(path)
                finally:
                    os._exit(1)
            children[pid] = None
        else:
            spawned = subprocess.Popen([sys.executable, "-m", "deployments.warm", "serve"])
            children[spawned.pid] = spawned

    def fill() -> None:
        # (polling reaps the processes that ended: a finished flow run, a dead one)
        for pid, process in list(children.items()):
            if (process.poll() if process else _reaped(pid)) is not None:
                del children[pid]
        ready.intersection_update(children)
        starting = sum(pid not in ready for pid in children)
        now = time.monotonic()
        while waiting and (not fork or now - waiting[0][1] > CLAIM_WAIT):
            _hand_over(waiting.pop(0)[0], [])  # "none": that launcher starts cold
        if not fork and idle and now - claimed[0] < REFILL_PAUSE:
            return  # a flow run is starting: its CPU first, while one is still waiting
        for _ in range(size + len(waiting) - len(idle) - starting):
            start_one()

    fill()
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.1 if waiting else 0.5):
            if key.fileobj is server:
                conn, _ = server.accept()
                conn.settimeout(5)
                try:
                    hello = _line(conn)
                except (ConnectionError, OSError):
                    conn.close()
                    continue
                if hello.startswith("ready "):
                    conn.settimeout(None)
                    ready.add(int(hello.split()[1]))
                    if waiting:
                        _hand_over(waiting.pop(0)[0], [conn])
                    else:
                        idle.append(conn)
                elif hello == "claim":
                    claimed[0] = time.monotonic()
                    if idle or not fork:
                        _hand_over(conn, idle)
                    else:  # one is forked for it, ready in a fraction of a second
                        waiting.append((conn, claimed[0]))
                    fill()  # (a fork is cheap: the next one is ready sooner)
                else:
                    conn.close()
        fill()
    for conn in idle:
        conn.close()  # a waiting process sees the pool gone and exits
    for conn, _ in waiting:
        _hand_over(conn, [])
    server.close()
    os.unlink(path)


def _imports() -> None:
    import importlib

    for name in WARM_IMPORTS:
        importlib.import_module(name)


def _single_threaded() -> bool:
    """This process has one thread (Python's view and the kernel's agree)."""
    try:
        tasks = len(os.listdir("/proc/self/task"))
    except OSError:
        return False
    return threading.active_count() == 1 and tasks == 1


def _reaped(pid: int) -> int | None:
    """The exit status of a forked child that ended (reaping it), None while it runs."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return 0  # reaped already
    return status if done else None


def _hand_over(launcher: socket.socket, idle: list[socket.socket]) -> None:
    """Give the launcher's connection to a waiting process, or tell it there is none."""
    while idle:
        warm = idle.pop(0)
        try:
            socket.send_fds(warm, [b"run"], [launcher.fileno()])
        except OSError:
            warm.close()
            continue
        warm.close()
        launcher.close()
        return
    with contextlib.suppress(OSError):
        launcher.sendall(b"none\n")
    launcher.close()


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"]:
        serve(os.environ[SOCKET_ENV])
    elif argv[:1] == ["pool"]:
        fork = os.environ.get(FORK_ENV, "true").lower() not in ("0", "false", "no")
        pool(os.environ[SOCKET_ENV], int(os.environ.get(SIZE_ENV, "2")), fork)
    else:
        launch(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
