"""`python -m api.serve --port 8000 --workers 2`: the API as `workers` processes behind one
port, each listening on a socket of its own (SO_REUSEPORT), so the kernel spreads new
connections evenly among them.

uvicorn's own `--workers` shares one listening socket, and the process that wakes first
takes every connection then waiting (asyncio accepts up to the backlog at a time): of 200
connections opened at once, one of two processes took up to 151. With a socket each, the
split of the same 200 stayed within 92-108 (docs/design.md, "API processes behind one
port").

A process that dies is started again, as uvicorn's supervisor does; one that cannot start
at all (exit code 3: the app's start-up failed) stops the whole, since every restart
would fail the same way. SIGTERM or SIGINT stops the processes and then this one; a
SIGKILL of this one alone stops them too (each asked the kernel for a SIGTERM when its
supervisor goes). The job database is migrated here, once, before the processes start
(REGJOBS_AUTO_MIGRATE).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from multiprocessing.process import BaseProcess

import uvicorn
from uvicorn.config import STARTUP_FAILURE

from regjobs.settings import get_settings

APP = "api.main:app"
PR_SET_PDEATHSIG = 1
logger = logging.getLogger("regjobs.api.serve")


def listening_socket(host: str, port: int, *, shared: bool = True) -> socket.socket:
    """A socket of this process's own on `host:port`, sharing the port with the other API
    processes (`shared`), or bound alone (which fails while anything else holds the port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def _die_with(parent: int) -> None:
    """SIGTERM to this process when its supervisor dies, however it dies (Linux's
    PR_SET_PDEATHSIG): an API process never serves on, orphaned, after a SIGKILL of the
    supervisor alone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        sys.exit(0)


def serve_one(app: str, host: str, port: int, parent: int) -> None:
    """One API process (the target of each child)."""
    _die_with(parent)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False))
    server.run(sockets=[listening_socket(host, port)])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def supervise(app: str, host: str, port: int, workers: int) -> int:
    """Run `workers` API processes until told to stop; the exit code."""
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def start() -> BaseProcess:
        child = context.Process(target=serve_one, args=(app, host, port, os.getpid()), daemon=False)
        child.start()
        return child

    children = [start() for _ in range(workers)]
    code = 0
    while not stop.wait(0.5):
        for n, child in enumerate(children):
            if child.is_alive():
                continue
            if child.exitcode == STARTUP_FAILURE:
                logger.error("API process %s could not start; stopping", child.pid)
                stop.set()
                code = 1
                break
            logger.warning(
                "API process %s died (exit code %s); starting another", child.pid, child.exitcode
            )
            children[n] = start()
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()
    return code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__)
    parser.add_argument("--app", default=APP, help="the ASGI app (module:attribute)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="API processes (at least 1)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The port is free before any process starts: bound alone, not shared, so a server
    # left running on it (another API's included) is an error here, not a silent partner.
    try:
        listening_socket(args.host, args.port, shared=False).close()
    except OSError as error:
        parser.exit(1, f"cannot listen on {args.host}:{args.port}: {error.strerror}\n")
    if get_settings().auto_migrate:
        # Once, here, not in every process at once (two would both create the tables).
        from regjobs.db import migrate  # only then: this process stays small otherwise

        migrate()
        os.environ["REGJOBS_AUTO_MIGRATE"] = "false"
    sys.exit(supervise(args.app, args.host, args.port, args.workers))


if __name__ == "__main__":
    main()
