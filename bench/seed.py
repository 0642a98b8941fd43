"""Seeding the database before a run, and reading results back from it afterwards."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg

from bench.common import CONFIG
from miniprogram_pay.adyen.hmac import sign_item
from miniprogram_pay.domain.events import EventSource, result_event
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.schema import create_all
from miniprogram_pay.storage.stores import Storage

__all__ = [
    "bulk_payments",
    "create_schema",
    "psp_for",
    "query",
    "seed_pending",
    "webhook_body",
]

AMOUNT = Amount(1130, "CNY")
HMAC_KEY = CONFIG.hmac_key_bytes()


def psp_for(reference: str) -> str:
    return "88" + uuid.uuid5(uuid.NAMESPACE_OID, reference).hex[:14].upper()


async def create_schema(url: str) -> None:
    db = Database(url)
    try:
        await create_all(db)
    finally:
        await db.dispose()


async def seed_pending(url: str, references: Sequence[str], *, concurrency: int = 8) -> None:
    """Create each payment and move it to Pending through the package's own storage.

    The seeded Pending changes are marked told to the host: they are the set-up, not the
    load, and a server that delivered thousands of them while measured would be timed
    on work the baseline never does.
    """
    db = Database(url)
    storage = Storage.over(db)
    pending = iter(references)

    async def one_by_one() -> None:
        for ref in pending:
            await storage.payments.create(
                reference=ref, openid="o" + ref[-20:], amount=AMOUNT, idempotency_key=ref
            )
            event = result_event(EventSource.PAYMENTS, "Pending", psp_reference=psp_for(ref))
            await storage.payments.apply(ref, event)

    try:
        await asyncio.gather(*(one_by_one() for _ in range(concurrency)))
        await db.run_sync(_told_already)
    finally:
        await db.dispose()


def _told_already(connection: Any) -> None:
    connection.exec_driver_sql(
        "UPDATE mpp_outbox SET status = 'delivered', delivered_at = next_attempt_at"
        " WHERE status = 'pending'"
    )


def webhook_body(reference: str, *, event_code: str = "AUTHORISATION") -> bytes:
    """A signed one-item standard notification for ``reference`` (as Adyen sends it)."""
    item: dict[str, Any] = {
        "pspReference": psp_for(reference),
        "merchantAccountCode": CONFIG.merchant_account,
        "merchantReference": reference,
        "amount": {"currency": AMOUNT.currency, "value": AMOUNT.value},
        "eventCode": event_code,
        "eventDate": "2026-11-27T10:00:00+01:00",
        "success": "true",
        "reason": "",
        "paymentMethod": "wechatpayMiniProgram",
    }
    item["additionalData"] = {"hmacSignature": sign_item(item, HMAC_KEY)}
    body = {"live": "false", "notificationItems": [{"NotificationRequestItem": item}]}
    return json.dumps(body).encode()


@contextmanager
def _connect(url: str) -> Iterator[Any]:
    if url.startswith("sqlite"):
        conn: Any = sqlite3.connect(url.split("///", 1)[1], timeout=30, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=30000")
    else:
        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def query(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run one read on a fresh connection (``?`` placeholders are adapted for PostgreSQL)."""
    if not url.startswith("sqlite"):
        sql = sql.replace("?", "%s")
    with _connect(url) as conn:
        cur = conn.execute(sql, params)
        return list(cur.fetchall())


def epoch_sql(url: str, column: str) -> str:
    """SQL for a timestamp column as Unix seconds."""
    if url.startswith("sqlite"):
        return f"((julianday({column}) - 2440587.5) * 86400.0)"
    return f"extract(epoch from {column})::float8"


ORDER_COLUMNS = "id, reference, openid, amount_value, currency, duplicates, created_at, updated_at"
PAYMENT_COLUMNS = (
    "reference, openid, amount_value, currency, state, psp_reference, idempotency_key,"
    " details_attempts, conflicts, version, created_at, updated_at, order_id, attempt"
)


def status_references(size: int, small: int) -> list[str]:
    """The references the status workloads ask for once ``size`` orders are seeded
    (``small`` first, then the rest): every one of the first ``small``, and at most
    50,000 spread over the rest, so the large table is read old rows and new."""
    references = [f"st-{small:08d}-{i:07d}" for i in range(small)]
    if size > small:
        step = max(1, (size - small) // 50_000)
        references += [f"st-{size:08d}-{i:07d}" for i in range(0, size - small, step)]
    return references


def bulk_payments(url: str, count: int, prefix: str, *, batch: int = 100_000) -> None:
    """Insert ``count`` orders, each with one Pending attempt and its Created transition:
    executemany on SQLite, COPY on PostgreSQL."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    sqlite = url.startswith("sqlite")
    with _connect(url) as conn:
        if sqlite:
            conn.execute("BEGIN IMMEDIATE")
        # Explicit order ids, so each attempt names its order without a lookup per row.
        first = int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM mpp_order").fetchone()[0]) + 1
        if sqlite:
            for start in range(0, count, batch):
                numbers = range(start, min(count, start + batch))
                conn.executemany(
                    f"INSERT INTO mpp_order ({ORDER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                    (_order_row(first + i, f"{prefix}{i:07d}", stamp) for i in numbers),
                )
                conn.executemany(
                    f"INSERT INTO mpp_payment ({PAYMENT_COLUMNS})"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (_payment_row(f"{prefix}{i:07d}", stamp, first + i) for i in numbers),
                )
        else:
            stamp += "+00"
            with conn.cursor() as cur:
                with cur.copy(f"COPY mpp_order ({ORDER_COLUMNS}) FROM STDIN") as copy:
                    for i in range(count):
                        copy.write_row(_order_row(first + i, f"{prefix}{i:07d}", stamp))
                with cur.copy(f"COPY mpp_payment ({PAYMENT_COLUMNS}) FROM STDIN") as copy:
                    for i in range(count):
                        copy.write_row(_payment_row(f"{prefix}{i:07d}", stamp, first + i))
            # COPY with explicit ids leaves the sequence behind: the app's next order needs it.
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('mpp_order', 'id'),"
                " (SELECT MAX(id) FROM mpp_order))"
            )
        conn.execute(
            "INSERT INTO mpp_transition (payment_id, from_state, to_state, source, event_kind,"
            " event_key, at) SELECT id, NULL, 'Created', 'payments', 'Created', 'created',"
            " created_at FROM mpp_payment WHERE reference >= {0} AND reference < {0}".format(
                "?" if sqlite else "%s"
            ),
            (prefix, prefix + "~"),
        )
        if sqlite:
            conn.execute("COMMIT")  # no ANALYZE: a merchant's SQLite file rarely gets one
        else:
            conn.execute("ANALYZE")  # autovacuum would do it shortly


def _order_row(order_id: int, reference: str, stamp: str) -> tuple[Any, ...]:
    return (
        order_id,
        reference,
        "o" + reference[-20:],
        AMOUNT.value,
        AMOUNT.currency,
        0,
        stamp,
        stamp,
    )


def _payment_row(reference: str, stamp: str, order_id: int) -> tuple[Any, ...]:
    return (
        reference,
        "o" + reference[-20:],
        AMOUNT.value,
        AMOUNT.currency,
        "Pending",
        psp_for(reference),
        reference[-64:],
        0,
        0,
        0,
        stamp,
        stamp,
        order_id,
        1,
    )
