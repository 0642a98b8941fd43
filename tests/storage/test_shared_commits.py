"""SQLite's writer: units that queued behind a commit share the next one, and each
still comes out as if it had run alone."""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Integer, String, column, text
from sqlalchemy.exc import IntegrityError

from miniprogram_pay.errors import StorageError
from miniprogram_pay.storage import Database
from miniprogram_pay.storage.sql import Sql, Unit

INSERT = Sql(text("INSERT INTO scratch (k) VALUES (:k)"))
KEYS = Sql(text("SELECT k FROM scratch ORDER BY k").columns(column("k", String)))
SYNCHRONOUS = Sql(text("PRAGMA synchronous").columns(column("s", Integer)))
RELEASE = Sql(text("RELEASE unit"))
FULL = 2  # PRAGMA synchronous's answer for FULL


@pytest.fixture
async def db(sqlite_url: str) -> AsyncIterator[Database]:
    database = Database(sqlite_url)
    await database.run_sync(
        lambda c: c.exec_driver_sql("CREATE TABLE scratch (k TEXT PRIMARY KEY)")
    )
    try:
        yield database
    finally:
        await database.dispose()


def insert(k: str) -> Callable[[Unit], None]:
    def work(unit: Unit) -> None:
        unit.run(INSERT, {"k": k})

    return work


async def _keys(db: Database) -> list[str]:
    return [str(row[0]) for row in await db.read(lambda unit: unit.run(KEYS).all())]


async def _behind_a_commit(
    db: Database, units: list[tuple[Callable[[Unit], Any], bool]]
) -> list[Any]:
    """Run ``units`` (work, durable) queued behind a unit that holds the writer, so the
    writer finds them all waiting; their outcomes (a result or the exception)."""
    started, release = threading.Event(), threading.Event()

    def hold(unit: Unit) -> None:
        started.set()
        release.wait(10)

    holder = asyncio.create_task(db.write(hold))
    await asyncio.to_thread(started.wait, 10)
    queued = [asyncio.create_task(db.write(work, durable=durable)) for work, durable in units]
    await asyncio.sleep(0.05)  # every task has handed its unit to the writer
    release.set()
    await holder
    return await asyncio.gather(*queued, return_exceptions=True)


async def test_units_queued_behind_a_commit_share_the_next_one(db: Database) -> None:
    count = Sql(text("SELECT count(*) AS n FROM scratch").columns(column("n", Integer)))
    outcomes = await _behind_a_commit(
        db,
        [(insert(f"k{i}"), True) for i in range(5)]
        + [(lambda unit: unit.run(count).all()[0][0], True)],
    )
    assert outcomes == [None] * 5 + [5]  # the last saw the writes before it, in order
    assert db.counts().shared == 5  # six units, one transaction
    assert await _keys(db) == [f"k{i}" for i in range(5)]


async def test_a_unit_that_fails_in_a_shared_commit_is_rolled_back_alone(db: Database) -> None:
    def fails(unit: Unit) -> None:
        unit.run(INSERT, {"k": "b"})
        raise ValueError("the unit's own error, after its insert")

    def commits_then_fails(unit: Unit) -> None:
        unit.run(INSERT, {"k": "d"})
        unit.commit()
        unit.run(INSERT, {"k": "e"})

    outcomes = await _behind_a_commit(
        db,
        [(insert("a"), True), (fails, True), (insert("a"), True),
         (insert("c"), True), (commits_then_fails, True)],
    )  # fmt: skip
    assert outcomes[0] is None and outcomes[3] is None
    assert isinstance(outcomes[1], ValueError)
    assert isinstance(outcomes[2], IntegrityError)
    assert isinstance(outcomes[4], RuntimeError)
    # As alone: the failed units left nothing, and what a unit committed stands.
    assert await _keys(db) == ["a", "c", "d"]
    assert db.counts().shared == 4


async def test_when_the_shared_transaction_fails_each_unit_runs_alone(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="miniprogram_pay.storage")

    def breaks_the_savepoint(unit: Unit) -> None:
        unit.run(INSERT, {"k": "b"})
        unit.run(RELEASE)  # the group's own savepoint: its release then fails

    outcomes = await _behind_a_commit(
        db, [(insert("a"), True), (breaks_the_savepoint, True), (insert("c"), True)]
    )
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], StorageError)  # alone, its RELEASE has no savepoint
    assert await _keys(db) == ["a", "c"]  # each once: the failed group left nothing
    assert db.counts().shared == 0
    assert any("shared transaction failed" in r.getMessage() for r in caplog.records)


async def test_a_shared_commit_is_synced_if_any_of_its_units_is_durable(
    db: Database,
) -> None:
    """Counted by ``unsynced``, which follows the same decision as the pragma; and the
    connection is back at FULL afterwards either way."""
    await _behind_a_commit(db, [(insert("a"), False), (insert("b"), False)])
    assert db.counts().unsynced == 2  # none durable: the commit did not sync
    await _behind_a_commit(db, [(insert("c"), False), (insert("d"), True)])
    assert db.counts().unsynced == 2  # one durable: the commit synced for both
    # The writer's connection is back at FULL for whatever comes next.
    assert await db.write(lambda unit: unit.run(SYNCHRONOUS).all()[0][0]) == FULL
    assert await _keys(db) == ["a", "b", "c", "d"]


# -- any mix of units: together as one after another ------------------------------------

Op = tuple[str, str, bool]  # (what, key, durable)
_ops = st.lists(
    st.tuples(
        st.sampled_from(["insert", "insert_then_fail", "commit_then_fail", "read", "break"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.booleans(),
    ),
    min_size=1,
    max_size=12,
)


def _work(what: str, key: str) -> Callable[[Unit], Any]:
    def work(unit: Unit) -> Any:
        if what == "read":
            return [str(row[0]) for row in unit.run(KEYS).all()]
        unit.run(INSERT, {"k": key})
        if what == "insert_then_fail":
            raise ValueError(key)
        if what == "commit_then_fail":
            unit.commit()
            unit.run(INSERT, {"k": key + "-late"})
        if what == "break":
            unit.run(RELEASE)  # alone: no savepoint to release; together: the group's own
        return key

    return work


def _outcome(value: Any) -> Any:
    """A result as is; an exception by its type (its text names statements and values)."""
    return type(value).__name__ if isinstance(value, BaseException) else value


async def _both_ways(folder: Path, ops: list[Op]) -> tuple[Any, Any]:
    ways = []
    for together in (True, False):
        db = Database(f"sqlite+aiosqlite:///{folder / f'{together}.db'}")
        await db.run_sync(lambda c: c.exec_driver_sql("CREATE TABLE scratch (k TEXT PRIMARY KEY)"))
        try:
            units = [(_work(what, key), durable) for what, key, durable in ops]
            if together:
                outcomes = await _behind_a_commit(db, units)
            else:
                outcomes = []
                for work, durable in units:
                    try:
                        outcomes.append(await db.write(work, durable=durable))
                    except Exception as exc:
                        outcomes.append(exc)
            ways.append(([_outcome(o) for o in outcomes], await _keys(db)))
        finally:
            await db.dispose()
    return ways[0], ways[1]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(ops=_ops)
def test_units_run_together_end_as_they_end_one_after_another(ops: list[Op]) -> None:
    """Whatever the units do (write, fail before or after their commit, read what the
    ones before them wrote, break the shared transaction), each caller gets the same
    outcome, and the database ends the same, as when each ran alone in turn."""
    with tempfile.TemporaryDirectory() as folder:
        together, alone = asyncio.run(_both_ways(Path(folder), ops))
    assert together == alone
