"""The pool (`python -m deployments.warm pool`): keeps warm processes waiting and hands one
to each launcher that asks (the protocol's other side is `handover`)."""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

from deployments.warm import handover

#: How long a forked pool keeps a launcher waiting for a warm process when none is idle
#: (one is forked for it at once and is ready in ~0.2-0.5 s; a cold start costs seconds).
CLAIM_WAIT = 1.2
#: Spawned warm processes only: after a hand-over, a new one is started this much later
#: while another still waits (at once when none does): importing Prefect takes ~1.5-2.5 s
#: of CPU, which on a small machine would slow the start of the flow run just handed over.
REFILL_PAUSE = 0.75

#: A warm process waiting to be handed a flow run: its connection to the pool, its PID.
Idle = tuple[socket.socket, int]


def pool(path: str, size: int, fork: bool = True) -> None:
    """Keep `size` warm processes waiting; hand one to each launcher that asks.

    With `fork`, the pool imports what a flow run needs once (`WARM_IMPORTS`, ~1.5-2.5 s of
    CPU) and forks each warm process from itself (a few milliseconds; the pages stay shared
    until written). That is safe because the pool never runs Prefect's engine, a client or
    anything else that starts a thread: it stays one thread (checked before every fork,
    threads of Python's and of the kernel's count), so no lock can be held by a thread the
    child would not have (what PrefectHQ/prefect#16802 hit). Prefect's settings are built
    here once too; each child then makes its own database connection and Prefect client.
    Without `fork` (or if the pool ever has a second thread) each warm process is a new
    interpreter (spawned).

    When the pool stops, the warm processes it started that were not handed a flow run
    (waiting, or still starting) end with it; those running a flow run go on."""
    settings = None
    if fork:
        from deployments.warm import prefect_engine

        prefect_engine.imports()
        # Prefect's settings as the warm processes' environment (this one's, unchanged
        # until a hand-over) gives them: built once here, not in each warm process (about
        # a fifth of the warm processes' samples, docs/figures.md "Against Prefect itself,
        # tenth session"). Plain data, no thread.
        settings = prefect_engine.prefect_settings()
    selector = selectors.DefaultSelector()
    server = _listen(path)
    selector.register(server, selectors.EVENT_READ)
    idle: list[Idle] = []
    #: Launchers that asked when none was idle, and since when (forked pools only).
    waiting: list[tuple[socket.socket, float]] = []
    #: Warm processes started and not yet reaped: spawned (a Popen) or forked (None).
    children: dict[int, subprocess.Popen[bytes] | None] = {}
    ready: set[int] = set()
    #: Warm processes handed a flow run.
    handed: set[int] = set()
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
                    for conn in [*(c for c, _ in idle), *(c for c, _ in waiting)]:
                        conn.close()
                    handover.serve(path, settings)
                finally:
                    os._exit(1)
            children[pid] = None
        else:
            spawned = subprocess.Popen([sys.executable, "-m", "deployments.warm", "serve"])
            children[spawned.pid] = spawned

    def hand_over(launcher: socket.socket) -> None:
        pid = _hand_over(launcher, idle)
        if pid is not None:
            handed.add(pid)

    def fill() -> None:
        # (polling reaps the processes that ended: a finished flow run, a dead one)
        for pid, process in list(children.items()):
            if (process.poll() if process else _reaped(pid)) is not None:
                del children[pid]
        ready.intersection_update(children)
        handed.intersection_update(children)
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
                if not handover.same_user(conn):
                    sys.stderr.write("warm pool: refused a connection of another user\n")
                    conn.close()
                    continue
                conn.settimeout(5)
                try:
                    hello = handover.read_line(conn)
                except (ConnectionError, OSError):
                    conn.close()
                    continue
                if hello.startswith("ready "):
                    conn.settimeout(None)
                    pid = int(hello.split()[1])
                    ready.add(pid)
                    idle.append((conn, pid))
                    if waiting:
                        hand_over(waiting.pop(0)[0])
                elif hello == "claim":
                    claimed[0] = time.monotonic()
                    if idle or not fork:
                        hand_over(conn)
                    else:  # one is forked for it, ready in a fraction of a second
                        waiting.append((conn, claimed[0]))
                    fill()  # (a fork is cheap: the next one is ready sooner)
                else:
                    conn.close()
        fill()
    for conn, _ in idle:
        conn.close()
    for conn, _ in waiting:
        _hand_over(conn, [])
    server.close()
    os.unlink(path)
    _end_unused(children, handed)


def _end_unused(children: dict[int, subprocess.Popen[bytes] | None], handed: set[int]) -> None:
    """End the warm processes never handed a flow run (nothing of a run's is lost), and
    wait for them: none is left to outlive the pool (to open the job database, say, in a
    folder removed meanwhile)."""
    unused = [pid for pid in children if pid not in handed]
    for pid in unused:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in unused:
        process = children[pid]
        if process is not None:
            process.wait()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _listen(path: str) -> socket.socket:
    """The pool's socket at `path`: its folder made 0700 if missing, the socket 0600 from
    its creation (the umask while it is bound; the pool is one thread)."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(previous)
    server.listen(64)
    return server


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


def _hand_over(launcher: socket.socket, idle: list[Idle]) -> int | None:
    """Give the launcher's connection to a waiting process (its PID), or tell it there is
    none (None)."""
    while idle:
        warm, pid = idle.pop(0)
        try:
            socket.send_fds(warm, [b"run"], [launcher.fileno()])
        except OSError:
            warm.close()
            continue
        warm.close()
        launcher.close()
        return pid
    with contextlib.suppress(OSError):
        launcher.sendall(b"none\n")
    launcher.close()
    return None
