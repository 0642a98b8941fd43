"""A status read gives the six reads' rows, value for value: on PostgreSQL as one
statement, on SQLite as the order's read and five reads by its id."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from miniprogram_pay.domain.orders import attempt_reference
from miniprogram_pay.domain.refunds import refund_received_event
from miniprogram_pay.storage import Storage
from miniprogram_pay.storage.orders import STATUS_STATEMENTS, status_rows
from miniprogram_pay.storage.refunds import RefundAsk
from miniprogram_pay.storage.sql import Sql, Unit
from tests.storage.helpers import AMOUNT, PSP, details, inbox_item, webhook

ORDER = "order-json"
SECOND = attempt_reference(ORDER, 2)


@pytest.fixture
def _postgres_only(storage: Storage) -> None:
    if storage.database.is_sqlite:
        pytest.skip("SQLite runs the reads one by one, in one read transaction")


async def _order_with_everything(storage: Storage) -> None:
    """Two attempts (the first refused, the second authorised, a webhook redelivered),
    two refunds of the second (one settled, with its history), and odd text."""
    for key in ("k1", "k2"):
        await storage.orders.pay(
            reference=ORDER, openid="o-ü'\"%", amount=AMOUNT, idempotency_key=key,
            lifetime=timedelta(0),
        )  # fmt: skip
        if key == "k1":
            await storage.payments.apply(ORDER, details("Refused", reason="no: \\ ü"))
    await storage.payments.apply(SECOND, details("Authorised", psp_reference=PSP))
    for _ in range(2):
        await storage.payments.apply(SECOND, webhook("auth-json"))
    window = timedelta(days=365)
    first, _, _ = await storage.refunds.begin(
        SECOND, RefundAsk(100, None, None, None), window=window, limit=50
    )
    await storage.refunds.answer(SECOND, first.id, refund_received_event("R-1"))
    await storage.refunds.begin(SECOND, RefundAsk(50, None, None, None), window=window, limit=50)
    item = inbox_item(
        "r" * 64, psp_reference="R-1", merchant_reference=f"{SECOND}-refund-1",
        event_code="REFUND", amount_value=100, raw_json=json.dumps({"originalReference": PSP}),
    )  # fmt: skip
    [stored] = await storage.inbox.store([item])
    await storage.inbox.apply_one(stored.id)


def _typed(rows: list[list[Any]]) -> list[list[tuple[Any, ...]]]:
    """Each value with its type, and a timestamp with its offset: equal means the same."""
    return [
        [
            tuple((type(v), v, v.utcoffset() if isinstance(v, datetime) else None) for v in row)
            for row in read
        ]
        for read in rows
    ]


async def _both(storage: Storage, reference: str) -> tuple[list[list[Any]], list[list[Any]]]:
    def work(unit: Unit) -> tuple[list[list[Any]], list[list[Any]]]:
        apart = [unit.run(sql, {"reference": reference}) for sql in STATUS_STATEMENTS]
        return status_rows(unit, reference), [read.all() for read in apart]

    return await storage.database.read(work)


@pytest.mark.parametrize("reference", [ORDER, SECOND, "order-nobody"])
async def test_a_status_read_gives_the_six_reads_rows(storage: Storage, reference: str) -> None:
    await _order_with_everything(storage)
    together, apart = await _both(storage, reference)
    assert _typed(together) == _typed(apart)
    if reference != "order-nobody":
        # Everything the order has is there: nothing is empty by accident.
        assert all(apart)


@pytest.mark.usefixtures("_postgres_only")
async def test_a_status_is_one_statement_on_postgresql(storage: Storage) -> None:
    await _order_with_everything(storage)
    before = storage.database.counts()
    status = await storage.orders.status(ORDER)
    after = storage.database.counts()
    assert status is not None and [a.payment.reference for a in status.attempts] == [
        ORDER,
        SECOND,
    ]
    assert sum(len(a.refunds) for a in status.attempts) == 2
    assert (after.statements - before.statements, after.read_waits - before.read_waits) == (1, 1)


def test_the_order_and_its_attempts_are_found_once() -> None:
    """Each of the six statements finds the order by itself; the one statement finds it,
    and the attempts' ids, once for all six reads (two shared CTEs)."""
    from sqlalchemy.dialects import postgresql

    from miniprogram_pay.storage.orders import STATUS_READS

    dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]

    def text(sql: Sql) -> str:
        statement: Any = sql.statement("postgresql")
        return str(statement.compile(dialect=dialect))

    one = text(STATUS_READS.sql)
    apart = [text(sql) for sql in STATUS_STATEMENTS]
    finds = "WHERE mpp_payment.reference = %(reference)s"
    assert one.count(finds) == 1
    assert [t.count(finds) for t in apart] == [1] * 6
    assert one.count("WHERE mpp_payment.order_id = (SELECT status_order.id") == 2


def test_sqlite_finds_the_order_once() -> None:
    """SQLite's read finds the order with the first statement; the other five take its id."""
    from sqlalchemy.dialects import sqlite

    from miniprogram_pay.storage.orders import STATUS_BY_ORDER

    def text(sql: Sql) -> str:
        statement: Any = sql.statement("sqlite")
        return str(statement.compile(dialect=sqlite.dialect()))

    finds = "WHERE mpp_payment.reference = ?"
    assert text(STATUS_STATEMENTS[0]).count(finds) == 1
    assert [text(sql).count(finds) for sql in STATUS_BY_ORDER] == [0] * 5
    assert all("mpp_order" not in text(sql) for sql in STATUS_BY_ORDER)


async def test_an_unknown_order_is_one_statement(storage: Storage) -> None:
    await _order_with_everything(storage)
    before = storage.database.counts()
    assert await storage.orders.status("order-nobody") is None
    after = storage.database.counts()
    expected = 1  # the order's read alone on SQLite; the one statement on PostgreSQL
    assert after.statements - before.statements == expected
