"""The hand-over of a flow run: the launcher (the work pool's command) asks the pool for a
warm process and hands it its environment, working folder, arguments and standard streams;
the warm process (`python -m deployments.warm serve`) runs Prefect's engine with them
(`prefect_engine`). The pool's side of the protocol is `pool`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
from typing import Any, NoReturn

from deployments.warm import SOCKET_ENV

#: How long a launcher waits for the pool's answer before it starts cold.
CLAIM_SECONDS = 2.0
KILLED = 137


def peer_uid(conn: socket.socket) -> int:
    """The user id of the process at the other end of a Unix socket (SO_PEERCRED: what the
    kernel recorded when the connection was made, not what the peer says)."""
    ucred = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", ucred)
    return int(uid)


def same_user(conn: socket.socket) -> bool:
    """The peer runs as this process's user. The pool hands a launcher's connection (and so
    the flow run's whole environment, its secret key included) only to a warm process of
    its own user, and a launcher or warm process talks only to a pool of its own user."""
    try:
        return peer_uid(conn) == os.getuid()
    except OSError:
        return False


def read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data.decode().strip()


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


# ---------------------------------------------------------------------------- launcher


def claim(path: str) -> tuple[socket.socket, int] | None:
    """A warm process from the pool at `path`: its connection and PID; None if the pool
    is not there or has none free."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(CLAIM_SECONDS)
    try:
        conn.connect(path)
        if not same_user(conn):
            raise PermissionError(f"the warm pool at {path} is another user's")
        conn.sendall(b"claim\n")
        answer = read_line(conn)
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
    claimed = claim(path) if path else None
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
        answer = read_line(conn)
    except (ConnectionError, OSError):
        answer = ""
    code = int(answer.split()[1]) if answer.startswith("exit ") else KILLED
    os._exit(code)


# ------------------------------------------------------------------------ warm process


def serve(path: str, settings: tuple[Any, dict[str, str]] | None = None) -> NoReturn:
    """Import what every flow run needs, then wait for one flow run and run it. `settings`:
    Prefect's, as `prefect_engine.prefect_settings` built them from this process's
    environment (a forked pool's, built once before it forked), else built here."""
    from deployments.warm import prefect_engine

    prefect_engine.warm_up()
    if settings is None:
        settings = prefect_engine.prefect_settings()
    client = prefect_engine.prefect_client()

    pool = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    pool.connect(path)
    if not same_user(pool):
        os._exit(1)  # not our pool: hand nothing to it
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

    code = prefect_engine.run_handed_over(job["env"], job["cwd"], job["argv"], settings, client)
    with contextlib.suppress(OSError):
        launcher.sendall(f"exit {code}\n".encode())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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
