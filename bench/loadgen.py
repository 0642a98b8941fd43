"""A small, bounded HTTP/1.1 load generator for loopback benchmarks.

Raw asyncio streams with keep-alive, no client library: the client must cost
far less than the server it measures, because both share the same two cores.
Every run is limited by a request count *and* a wall-clock budget, so it always
stops by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Conn", "LoadResult", "Request", "percentile", "run_load", "summarize"]

Request = tuple[str, str, dict[str, str], bytes]  # method, path, headers, body


class Conn:
    """One keep-alive connection to 127.0.0.1:port (reopened when the server closes it)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> tuple[int, bytes]:
        """Send one request, return (status, body). Retries once on a stale keep-alive."""
        for attempt in (0, 1):
            if self._writer is None:
                await self._open()
            try:
                return await self._exchange(method, path, headers or {}, body)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _exchange(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        assert self._reader is not None and self._writer is not None
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}")
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        content = await self._read_chunked() if chunked else await self._reader.readexactly(length)
        if close:
            await self.close()
        return status, content

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)


@dataclass
class LoadResult:
    """What one bounded run saw: per-request latency (s), status, and completion time."""

    concurrency: int
    started: float = 0.0
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # time.time() when each answer arrived
    tags: list[object] = field(default_factory=list)
    errors: int = 0
    loop_cpu_s: float = 0.0  # the server's event-loop CPU meanwhile, when measured

    @property
    def count(self) -> int:
        return len(self.latencies)


async def run_load(
    port: int,
    make: Callable[[int], Request],
    *,
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    ok: Callable[[int, bytes], bool] = lambda status, body: 200 <= status < 300,
    tag: Callable[[int], object] | None = None,
) -> LoadResult:
    """Run ``make(i)`` requests on ``concurrency`` connections until either bound is reached."""
    result = LoadResult(concurrency=concurrency)
    counter = iter(range(max_requests))
    deadline = time.perf_counter() + max_seconds

    async def worker() -> None:
        conn = Conn(port)
        try:
            for i in counter:
                if time.perf_counter() >= deadline:
                    return
                method, path, headers, body = make(i)
                t0 = time.perf_counter()
                try:
                    status, content = await conn.request(method, path, headers, body)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status, content = 599, b""
                    await conn.close()
                result.latencies.append(time.perf_counter() - t0)
                result.done_at.append(time.time())
                result.statuses.append(status)
                result.tags.append(tag(i) if tag else i)
                if not ok(status, content):
                    result.errors += 1
        finally:
            await conn.close()

    t_start = time.perf_counter()
    result.started = time.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - t_start
    return result


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of ``values``; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summarize(result: LoadResult) -> dict[str, float | int]:
    lat_ms = [x * 1000 for x in result.latencies]
    return {
        "requests": result.count,
        "errors": result.errors,
        "concurrency": result.concurrency,
        "seconds": round(result.elapsed, 3),
        "rps": round(result.count / result.elapsed, 1) if result.elapsed else 0.0,
        "p50_ms": round(percentile(lat_ms, 50), 2),
        "p95_ms": round(percentile(lat_ms, 95), 2),
        "p99_ms": round(percentile(lat_ms, 99), 2),
        "max_ms": round(max(lat_ms), 2) if lat_ms else 0.0,
    }
