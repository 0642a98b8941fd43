"""A unit of work is all or nothing; a moved version runs it again; and on PostgreSQL,
where a unit's statements travel in one pipeline, it waits for the server only where
it reads a result and at its commit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Integer, String, bindparam, column, text, update
from sqlalchemy.exc import IntegrityError

from miniprogram_pay.domain.events import EventSource, result_event
from miniprogram_pay.domain.machine import PaymentMachine
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.storage import Database, Storage
from miniprogram_pay.storage.changes import Change, PaymentChanges
from miniprogram_pay.storage.engine import Executor
from miniprogram_pay.storage.sql import Sql, Unit
from miniprogram_pay.storage.tables import PaymentRow, table, utcnow
from tests.storage.helpers import PSP, create

INSERT = Sql(text("INSERT INTO scratch (k) VALUES (:k)"))
INSERT_RETURNING = Sql(
    text("INSERT INTO scratch (k) VALUES (:k) RETURNING k").columns(column("k", String))
)
COUNT = Sql(text("SELECT count(*) AS n FROM scratch").columns(column("n", Integer)))
P = table(PaymentRow)
BUMP = Sql(update(P).where(P.c.reference == bindparam("b_ref")).values(version=P.c.version + 1))


@pytest.fixture
async def one_writer(database: Database) -> AsyncIterator[Database]:
    """The database with one writer thread: every unit runs on the same connection."""
    scratch = "CREATE TABLE scratch (k TEXT PRIMARY KEY)"
    await database.run_sync(lambda c: c.exec_driver_sql(scratch))
    db = Database(database.url, schema=database.schema, pool_size=1)
    try:
        yield db
    finally:
        await db.dispose()


async def _count(database: Database) -> int:
    return int((await database.read(lambda unit: unit.run(COUNT).all()))[0][0])


async def test_a_unit_that_fails_after_sending_leaves_nothing(one_writer: Database) -> None:
    def fails(unit: Unit) -> None:
        unit.run(INSERT, {"k": "a"})
        raise ValueError("the unit's own error, after a statement went out")

    with pytest.raises(ValueError):
        await one_writer.write(fails)
    assert await _count(one_writer) == 0

    await one_writer.write(lambda unit: unit.run(INSERT, {"k": "b"}))
    with pytest.raises(IntegrityError):
        await one_writer.write(lambda unit: unit.run(INSERT, {"k": "b"}).rowcount)
    # The same connection goes on: the failed transaction was rolled back, not left open.
    await one_writer.write(lambda unit: unit.run(INSERT, {"k": "c"}))
    assert await _count(one_writer) == 2


async def test_a_statement_after_the_commit_is_refused_and_the_commit_stands(
    one_writer: Database,
) -> None:
    def late(unit: Unit) -> None:
        unit.run(INSERT, {"k": "a"})
        unit.commit()
        unit.run(INSERT, {"k": "b"})

    with pytest.raises(RuntimeError, match="after the unit's commit"):
        await one_writer.write(late)
    assert await _count(one_writer) == 1  # "a", on every database alike


@pytest.mark.parametrize("executor", ["driver", "core"])
async def test_a_moved_version_runs_the_unit_again(database: Database, executor: Executor) -> None:
    storage = Storage.over(database)
    payment = await create(storage)
    database = Database(database.url, schema=database.schema, executor=executor)
    attempts = 0

    def work(unit: Unit) -> PaymentState:
        nonlocal attempts
        attempts += 1
        changes = PaymentChanges(unit, PaymentMachine(), utcnow())
        changes.lock([payment.reference], ["k"])
        event = result_event(EventSource.PAYMENTS, "Pending", psp_reference=PSP)
        applied = changes.apply(Change(payment.reference, event))
        assert applied is not None
        if attempts == 1:  # as if another writer changed the row after it was read
            unit.run(BUMP, {"b_ref": payment.reference})
        written = changes.flush()
        unit.commit()
        written()
        return applied.payment.state

    try:
        assert await database.write(work) is PaymentState.PENDING
    finally:
        await database.dispose()
    assert attempts == 2
    stored = await storage.payments.get(payment.reference)
    assert stored is not None and stored.state is PaymentState.PENDING


async def test_a_pipelined_unit_waits_where_it_reads_and_at_its_commit(
    one_writer: Database,
) -> None:
    if one_writer.dialect != "postgresql":
        pytest.skip("SQLite runs each statement as it comes: no waits to count")

    async def waits(coroutine: object) -> int:
        before = one_writer.counts()
        await coroutine  # type: ignore[misc]
        after = one_writer.counts()
        return after.write_waits + after.read_waits - before.write_waits - before.read_waits

    def three(unit: Unit) -> None:
        for k in "abc":
            unit.run(INSERT, {"k": k})

    def read_between(unit: Unit) -> int:
        unit.run(INSERT, {"k": "d"})
        n = int(unit.run(COUNT).all()[0][0])
        unit.run(INSERT, {"k": "e"})
        return n

    def returning_after_commit(unit: Unit) -> str:
        inserted = unit.run(INSERT_RETURNING, {"k": "f"})
        unit.commit()
        return str(inserted.all()[0][0])

    def read_three(unit: Unit) -> list[int]:
        sent = [unit.run(COUNT) for _ in range(3)]
        return [int(r.all()[0][0]) for r in sent]

    assert await waits(one_writer.write(three)) == 1  # the commit
    assert await waits(one_writer.write(read_between)) == 2  # the read, the commit
    assert await waits(one_writer.write(returning_after_commit)) == 1  # with the commit
    assert await waits(one_writer.read(read_three)) == 1  # reads have no commit
    assert await _count(one_writer) == 6
