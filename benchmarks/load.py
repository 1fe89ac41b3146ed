"""A lean HTTP/1.1 load generator for the benchmarks: one keep-alive connection per client,
raw asyncio streams, latencies in milliseconds. On 2 cores the load generator shares the
machine with what it measures, so it must cost little: a request here is a few dozen
microseconds of client CPU, against hundreds with a general-purpose HTTP client."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field


@dataclass
class Tally:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    def add(self, status: int, ms: float) -> None:
        self.statuses[status] = self.statuses.get(status, 0) + 1
        self.latencies_ms.append(ms)

    def percentile(self, p: float) -> float:
        values = sorted(self.latencies_ms)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(len(values) * p / 100))]

    def line(self, seconds: float) -> str:
        done = len(self.latencies_ms)
        return (
            f"{done / seconds:.0f} requests/s, p50 {self.percentile(50):.1f} ms, "
            f"p95 {self.percentile(95):.1f} ms, max {max(self.latencies_ms, default=0):.1f} ms, "
            f"errors {self.errors + sum(n for s, n in self.statuses.items() if s >= 400)}, "
            f"statuses {dict(sorted(self.statuses.items()))}"
        )


class Connection:
    """One keep-alive HTTP/1.1 connection that sends GETs and reads whole answers."""

    def __init__(self, host: str, port: int, timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str]]:
        status, answer_headers, _ = await self.request("GET", path, headers)
        return status, answer_headers

    async def request(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request on the connection (opened on first use); its whole answer."""
        if self.writer is None:
            await self.open()
        assert self.writer is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        try:
            return await asyncio.wait_for(self._answer(), self.timeout)
        except BaseException:
            self.close()
            raise

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def _answer(self) -> tuple[int, dict[str, str], bytes]:
        assert self.reader is not None
        head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        body = await self.reader.readexactly(length) if length else b""
        return status, headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def closed_loop(
    host: str,
    port: int,
    clients: int,
    seconds: float,
    path: Callable[[int], str],
    headers: Callable[[int, dict[str, str]], Mapping[str, str]],
) -> Tally:
    """`clients` pollers, each sending its next request as soon as the last one answered,
    for `seconds`. `headers(i, last_answer_headers)` lets a poller send `If-None-Match`."""
    tally = Tally()
    deadline = time.perf_counter() + seconds

    async def poller(i: int) -> None:
        connection = Connection(host, port)
        last: dict[str, str] = {}
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                status, last = await connection.get(path(i), headers(i, last))
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                tally.errors += 1
                continue
            tally.add(status, (time.perf_counter() - started) * 1000)
        connection.close()

    await asyncio.gather(*(poller(i) for i in range(clients)))
    return tally


async def open_loop(
    host: str,
    port: int,
    clients: int,
    every: float,
    seconds: float,
    path: Callable[[int], str],
    headers: Callable[[int, dict[str, str]], Mapping[str, str]],
) -> Tally:
    """`clients` browser tabs, each polling every `every` seconds (starting at a random
    moment) whatever the answers' pace: latency as a tab sees it at a steady rate."""
    tally = Tally()
    start = time.perf_counter()
    rng = random.Random(7)

    async def tab(i: int) -> None:
        connection = Connection(host, port)
        last: dict[str, str] = {}
        next_at = start + rng.uniform(0, every)
        while next_at < start + seconds:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            sent = time.perf_counter()
            try:
                status, last = await connection.get(path(i), headers(i, last))
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
                tally.errors += 1
            else:
                tally.add(status, (time.perf_counter() - sent) * 1000)
            next_at += every

    await asyncio.gather(*(tab(i) for i in range(clients)))
    return tally


def run(coroutine: Awaitable[Tally]) -> Tally:
    """Run a load on uvloop (cheaper per request than asyncio's own loop)."""
    import uvloop

    async def main() -> Tally:
        return await coroutine

    return uvloop.run(main())
