"""Warm flow-run processes: a flow run starts in a Python process that has imported Prefect
and the flow already, instead of a new interpreter paying ~1.5 s of CPU for the imports.

Three parts, one module:
- **the pool** (`python -m deployments.warm pool`), one per worker, beside it: keeps
  `REGJOBS_WARM_PROCESSES` warm processes waiting (spawned, never forked: Prefect's engine
  deadlocks in a process forked after its threads started, PrefectHQ/prefect#16802), and
  starts a new one as soon as one is taken;
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
from typing import Any, NoReturn

#: The pool's Unix socket (set by the stack for each worker and what it starts).
SOCKET_ENV = "REGJOBS_WARM_SOCKET"
#: Warm processes a pool keeps waiting.
SIZE_ENV = "REGJOBS_WARM_PROCESSES"
#: How long a launcher waits for a warm process before it starts cold.
CLAIM_SECONDS = 2.0
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

    import prefect.engine
    import prefect.flow_engine  # noqa: F401

    import flows.registration  # noqa: F401

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

    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    sys.argv = ["prefect.engine", *job["argv"]]
    code = _run_engine(runpy)
    _drain()
    with contextlib.suppress(OSError):
        launcher.sendall(f"exit {code}\n".encode())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run_engine(runpy: Any) -> int:
    """`python -m prefect.engine`, with Prefect's and this project's settings read again
    from the environment the flow run was given."""
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    from regjobs.settings import get_settings

    get_settings.cache_clear()
    current = get_settings_context()
    try:
        with SettingsContext(profile=current.profile, settings=Settings()):
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


def pool(path: str, size: int) -> None:
    """Keep `size` warm processes waiting; hand one to each launcher that asks."""
    import selectors
    import subprocess

    selector = selectors.DefaultSelector()
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(64)
    selector.register(server, selectors.EVENT_READ)
    idle: list[socket.socket] = []
    children: list[subprocess.Popen[bytes]] = []
    ready: set[int] = set()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def fill() -> None:
        # (polling reaps the processes that ended: a finished flow run, a dead one)
        children[:] = [p for p in children if p.poll() is None]
        ready.intersection_update(p.pid for p in children)
        starting = sum(p.pid not in ready for p in children)
        for _ in range(size - len(idle) - starting):
            children.append(subprocess.Popen([sys.executable, "-m", "deployments.warm", "serve"]))

    fill()
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.5):
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
                    idle.append(conn)
                    ready.add(int(hello.split()[1]))
                elif hello == "claim":
                    _hand_over(conn, idle)
                else:
                    conn.close()
        fill()
    for conn in idle:
        conn.close()  # a waiting process sees the pool gone and exits
    server.close()
    os.unlink(path)


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
        pool(os.environ[SOCKET_ENV], int(os.environ.get(SIZE_ENV, "2")))
    else:
        launch(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
