"""`python -m api.serve --port 8000`: one API process. It serves; it does not supervise.

Several API processes share one port, each listening on a socket of its own (SO_REUSEPORT),
so the kernel spreads new connections evenly among them. uvicorn's own `--workers` shares
one listening socket, and the process that wakes first takes every connection then waiting
(asyncio accepts up to the backlog at a time): of 200 connections opened at once, one of two
processes took up to 151. With a socket each, the split of the same 200 stayed within
92-108 (docs/design.md, "API processes behind one port"). Whoever starts the processes
keeps them running: `make run`'s launcher (`deployments.stack.Stack.start_api`,
REGJOBS_API_WORKERS of them), or systemd (`regjobs-api@.service`, one instance each).

A port something else listens on (without SO_REUSEPORT) is refused, naming it. The job
database is migrated by the app at start when REGJOBS_AUTO_MIGRATE is true (one process);
whoever starts several migrates once first and sets it false.

Connections are bounded (docs/design.md, "Connections are bounded"): the open-file limit is
raised to its hard limit at start; at most REGJOBS_API_MAX_CONNECTIONS are served at once
(uvicorn's `limit_concurrency`: a request beyond it is answered 503); and a connection that
has not sent a whole request head REGJOBS_API_HEADER_TIMEOUT_SECONDS after it opened (or
after the first byte of its next request) is closed (`HeaderTimeoutProtocol`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import resource
import socket
from asyncio import TimerHandle, Transport
from typing import ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from regjobs.private import restrict_umask
from regjobs.settings import get_settings

APP = "api.main:app"
#: Open files an API process keeps for other than connections: its job-database pool,
#: logs, the listening socket, Prefect's client, the event loop's own.
RESERVED_FILES = 200
logger = logging.getLogger("regjobs.api.serve")


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request head.

    uvicorn (0.55, httptools and h11 alike) arms no timer when a connection opens: its
    keep-alive timeout starts only after a response, and the first byte received cancels
    it. So a connection that opens and sends nothing, or sends its headers a byte at a
    time, is held for ever, one file descriptor each. Here a timer starts when the
    connection opens and again at the first byte of each later request (`on_message_begin`;
    between requests uvicorn's keep-alive timeout applies), and stops when the head is
    complete; if it fires first, the connection is closed. A slow body is not this
    timer's: the body's size is bounded (`api.bodylimit`) and the connection counts against
    `limit_concurrency` once its head is in."""

    header_timeout: ClassVar[float] = 10.0
    _header_timer: TimerHandle | None = None

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the next request of a kept-alive connection
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class with a head deadline of `seconds` (uvicorn's `http=`)."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout": seconds})


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit (each connection is
    one; the usual soft limit, 1024, is what ~1,100 idle sockets exhausted); the new soft
    limit. Processes started after this inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def connection_limit(configured: int, open_files: int) -> int:
    """The connections a process serves at once: the setting, kept below the open-file
    limit less `RESERVED_FILES`."""
    if open_files == resource.RLIM_INFINITY:
        return configured
    fitting = max(1, open_files - RESERVED_FILES)
    if configured > fitting:
        logger.warning(
            "REGJOBS_API_MAX_CONNECTIONS=%s does not fit the open-file limit (%s): serving "
            "at most %s connections at once; raise the limit (ulimit -n, LimitNOFILE=)",
            configured,
            open_files,
            fitting,
        )
    return min(configured, fitting)


def server_config(app: str, host: str, port: int) -> uvicorn.Config:
    """uvicorn's configuration of one API process, with the bounds above."""
    settings = get_settings()
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        http=header_timeout_protocol(settings.api_header_timeout_seconds),
        limit_concurrency=connection_limit(settings.api_max_connections, raise_open_files_limit()),
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket of this process's own on `host:port`, sharing the port with the other API
    processes (SO_REUSEPORT; the kernel lets only sockets of the same user that all set it
    share a port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api.serve", description=__doc__)
    parser.add_argument("--app", default=APP, help="the ASGI app (module:attribute)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    restrict_umask()  # what the API creates (SQLite, the keys) is 0600
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as error:
        parser.exit(1, f"cannot listen on {args.host}:{args.port}: {error.strerror}\n")
    server = uvicorn.Server(server_config(args.app, args.host, args.port))
    server.run(sockets=[sock])
    if not server.started:
        parser.exit(3, "the API did not start\n")


if __name__ == "__main__":
    main()
