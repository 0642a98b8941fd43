"""The database threads: who takes a job, that each job runs once, closing, and
connections lost while their threads slept."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection, make_url

from miniprogram_pay.errors import StorageError
from miniprogram_pay.storage import Database
from miniprogram_pay.storage.lanes import Lanes
from miniprogram_pay.storage.sql import Sql, Unit

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


PID = Sql(select(func.pg_backend_pid(), func.pg_sleep(0.05)))


async def test_connections_dropped_while_their_threads_slept_are_replaced(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """At low concurrency the other threads' connections sit idle for long, and a server
    or a network in between may drop them; the next burst must still succeed."""
    if database.is_sqlite:
        pytest.skip("SQLite's connections are files: nothing in between drops them")

    def pid(unit: Unit) -> int:
        return int(unit.run(PID).all()[0][0])

    burst = 4
    before = set(await asyncio.gather(*(database.write(pid) for _ in range(burst))))
    assert len(before) == burst  # a burst wakes that many threads, each its connection

    def terminate(connection: Connection) -> None:
        for backend in before:
            connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend})

    await database.run_sync(terminate)
    caplog.set_level(logging.INFO, logger="miniprogram_pay")
    after = await asyncio.gather(*(database.write(pid) for _ in range(burst)))
    assert not before & set(after)
    # The same threads took them (the most recently idle), found their connections
    # gone, and ran each unit again on a new one.
    assert sum("retrying" in r.getMessage() for r in caplog.records) == burst
    assert await database.read(lambda unit: unit.run(PID).all()[0][0]) > 0


async def test_jobs_that_waited_are_run_together_and_a_lone_job_alone() -> None:
    groups: list[int] = []

    def run_group(session: FakeSession, works: Sequence[Callable[[FakeSession], Any]]) -> Any:
        groups.append(len(works))
        return [(work(session), None) for work in works]

    pool = Lanes("test-lane", 1, FakeSession, run_group=run_group, group_size=4)
    release = threading.Event()
    try:
        blocker = pool.submit(lambda s: release.wait(10))
        waiting = [pool.submit(_call(lambda n: n * 10, n)) for n in range(6)]
        release.set()
        assert await blocker
        assert await asyncio.gather(*waiting) == [n * 10 for n in range(6)]
        assert await pool.submit(lambda s: "alone") == "alone"
    finally:
        await asyncio.to_thread(pool.close)
    assert groups == [4, 2]  # the blocker and the last job ran by themselves


async def test_postgresql_connections_send_keepalives_unless_the_url_says_otherwise(
    database: Database,
) -> None:
    """Idle connections are kept alive through firewalls that drop silent ones; a URL's
    own keepalive settings win."""
    if database.is_sqlite:
        pytest.skip("SQLite's connections are files")

    def settings(unit: Unit) -> dict[str, str]:
        dsn = unit.connection.info.dsn  # type: ignore[attr-defined]
        return dict(part.split("=", 1) for part in dsn.split() if "=" in part)

    given = await database.write(settings)
    assert (given["keepalives"], given["keepalives_idle"]) == ("1", "30")
    url = make_url(database.url).update_query_dict({"keepalives_idle": "120"})
    own = Database(url.render_as_string(hide_password=False), schema=database.schema, pool_size=1)
    try:
        assert (await own.write(settings))["keepalives_idle"] == "120"
    finally:
        await own.dispose()
