"""The database threads: who takes a job, that each job runs once, and closing."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from miniprogram_pay.errors import StorageError
from miniprogram_pay.storage.lanes import Lanes

T = TypeVar("T")


@dataclass
class FakeSession:
    """A connection stand-in: which thread opened it, whether it broke, whether closed."""

    thread: int = field(default_factory=threading.get_ident)
    broken: bool = False
    closed: bool = False

    def close(self) -> None:
        self.closed = True


def lanes(size: int) -> Lanes[FakeSession]:
    return Lanes("test-lane", size, FakeSession)


def _call(function: Callable[[int], T], n: int) -> Callable[[FakeSession], T]:
    return lambda session: function(n)


async def test_one_job_at_a_time_stays_on_one_warm_thread() -> None:
    """The most recently idle thread takes the next job: handed round the pool, each
    job would find a thread (and connection) that had slept through the others."""
    pool = lanes(4)
    try:
        threads = [await pool.submit(lambda s: threading.get_ident()) for _ in range(50)]
    finally:
        await asyncio.to_thread(pool.close)
    assert len(set(threads)) == 1
    assert len(pool.sessions) == 1  # the other three never needed a connection


async def test_a_burst_runs_every_job_once_across_the_threads() -> None:
    pool = lanes(3)
    seen: list[int] = []
    lock = threading.Lock()
    gate = threading.Barrier(3, timeout=10)

    def job(n: int) -> int:
        if n < 3:
            gate.wait()  # the first three run at once, one per thread
        with lock:
            seen.append(n)
        return n * n

    try:
        results = await asyncio.gather(*(pool.submit(_call(job, n)) for n in range(300)))
    finally:
        await asyncio.to_thread(pool.close)
    assert results == [n * n for n in range(300)]
    assert sorted(seen) == list(range(300))
    assert len(pool.sessions) == 3


async def test_close_lets_queued_jobs_finish_then_refuses_new_ones() -> None:
    pool = lanes(2)
    release = threading.Event()

    def slow(n: int) -> int:
        release.wait(10)
        return n

    futures = [pool.submit(_call(slow, n)) for n in range(10)]
    closing = asyncio.create_task(asyncio.to_thread(pool.close))
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.gather(*futures) == list(range(10))
    await closing
    assert all(session.closed for session in pool.sessions)
    with pytest.raises(StorageError):
        pool.submit(lambda s: None)


async def test_a_cancelled_job_does_not_run_and_a_broken_session_is_replaced() -> None:
    pool = lanes(1)
    release = threading.Event()
    ran: list[str] = []

    def break_it(session: FakeSession) -> None:
        session.broken = True
        raise RuntimeError("connection lost")

    try:
        blocker = pool.submit(lambda s: release.wait(10))
        cancelled = pool.submit(lambda s: ran.append("cancelled"))
        cancelled.cancel()
        release.set()
        await blocker
        with pytest.raises(RuntimeError):
            await pool.submit(break_it)
        first = pool.sessions[0]
        after = await pool.submit(lambda s: s)
    finally:
        await asyncio.to_thread(pool.close)
    assert ran == []
    assert first.closed and after is not first and len(pool.sessions) == 2
