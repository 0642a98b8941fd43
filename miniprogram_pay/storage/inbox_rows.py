"""The inbox's statements and rows: what ``storage.inbox`` runs, and how a webhook
item becomes its row. Nothing here commits; the store's units of work do.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, and_, bindparam, case, func, null, or_, select, update

from miniprogram_pay.domain.refunds import REFUND_EVENT_CODES
from miniprogram_pay.storage.changes import PaymentChanges
from miniprogram_pay.storage.payments import upsert
from miniprogram_pay.storage.records import InboxItem, StoredNotification
from miniprogram_pay.storage.sql import RowsSql, Sql, Unit, among, any_of, row_binds
from miniprogram_pay.storage.tables import NotificationRow, table

__all__ = [
    "CODE",
    "COUNTS",
    "DUE",
    "DUE_OR_LEASED",
    "FAILED",
    "IGNORED",
    "LISTING",
    "LISTING_BY_STATUS",
    "LOCK_ONE",
    "LOCK_WAITING",
    "MARK",
    "NOTE_FIELDS",
    "RAW",
    "REQUEUE",
    "WAITING",
    "N",
    "chosen",
    "item_row",
    "lock_order",
    "merchant_account",
    "original_reference",
    "stored_records",
    "upsert_rows",
]  # fmt: skip

N = table(NotificationRow)
WAITING = ("received", "failed")
STORE_COLUMNS = (
    "dedup_key", "psp_reference", "merchant_reference", "event_code", "success",
    "amount_value", "amount_currency", "reason", "raw", "status", "detail", "live",
    "attempts", "deliveries", "received_at", "next_attempt_at",
)  # fmt: skip
# What applying an item needs of its row, as stored (a redelivery may differ in reason).
NOTE_FIELDS = (
    "id", "dedup_key", "merchant_reference", "event_code", "success", "psp_reference",
    "amount_value", "amount_currency", "reason", "received_at", "raw",
)  # fmt: skip
NOTE_COLUMNS = [N.c[name] for name in NOTE_FIELDS]
CODE, RAW = NOTE_FIELDS.index("event_code"), NOTE_FIELDS.index("raw")
LISTED = [
    N.c[n]
    for n in (
        "id",
        "status",
        "detail",
        "merchant_reference",
        "event_code",
        "success",
        "deliveries",
        "attempts",
    )
]


def _upsert(dialect: str, count: int) -> Any:
    """Insert rows; a known key only counts another delivery, except an ``ignored`` item
    that this delivery finds ours (the setting that ignored it was fixed since): it is
    taken up again, as if new."""
    stmt = upsert(dialect, N).values(row_binds(N, STORE_COLUMNS, count))
    new = stmt.excluded
    revive = and_(N.c.status == "ignored", new.status == "received")
    return stmt.on_conflict_do_update(
        index_elements=["dedup_key"],
        set_={
            "deliveries": N.c.deliveries + new.deliveries,
            "status": case((revive, new.status), else_=N.c.status),
            "detail": case((revive, null()), else_=N.c.detail),
            "next_attempt_at": case((revive, new.next_attempt_at), else_=N.c.next_attempt_at),
        },
    ).returning(N.c.deliveries, N.c.status, *NOTE_COLUMNS)


UPSERT = RowsSql(STORE_COLUMNS, _upsert)
LOCK_WAITING = Sql(
    lambda dialect: (
        select(*NOTE_COLUMNS)
        .where(any_of(N.c.id, "ids", dialect), among(N.c.status, WAITING))
        .with_for_update(skip_locked=True)
    )
)
MARK = Sql(
    update(N)
    .where(N.c.id == bindparam("b_id"))
    .values(
        status=bindparam("status"),
        detail=bindparam("detail"),
        applied_at=bindparam("at", type_=N.c.applied_at.type),
        attempts=N.c.attempts + 1,
    )
)
LOCK_ONE = Sql(select(N.c.status, N.c.attempts).where(N.c.id == bindparam("id")).with_for_update())
FAILED = Sql(
    update(N)
    .where(N.c.id == bindparam("id"))
    .values(
        status=bindparam("status"),
        detail=bindparam("detail"),
        attempts=bindparam("attempts"),
        next_attempt_at=bindparam("due", type_=N.c.next_attempt_at.type),
    )
)


def _due(include_leased: bool) -> Any:
    due = N.c.next_attempt_at <= bindparam("now", type_=N.c.next_attempt_at.type)
    if include_leased:
        due = or_(due, N.c.status == "received")
    return (
        select(N.c.id)
        .where(among(N.c.status, WAITING), due)
        .order_by(N.c.id)
        .limit(bindparam("limit"))
    )


DUE = Sql(_due(include_leased=False))
DUE_OR_LEASED = Sql(_due(include_leased=True))
COUNTS = Sql(select(N.c.status, func.count()).group_by(N.c.status))
LISTING = Sql(select(*LISTED).order_by(N.c.id.desc()).limit(bindparam("limit")))
LISTING_BY_STATUS = Sql(
    select(*LISTED)
    .where(N.c.status == bindparam("status"))
    .order_by(N.c.id.desc())
    .limit(bindparam("limit"))
)
CHOSEN = bindparam("all", type_=Boolean)
IGNORED = Sql(
    lambda dialect: (
        select(N.c.id, N.c.raw, N.c.live)
        .where(N.c.status == "ignored", or_(CHOSEN, any_of(N.c.id, "ids", dialect)))
        .order_by(N.c.id)
        .limit(bindparam("limit"))
    )
)
REQUEUE = Sql(
    lambda dialect: (
        update(N)
        .where(
            N.c.status == bindparam("requeued_from"), or_(CHOSEN, any_of(N.c.id, "ids", dialect))
        )
        .values(
            status="received",
            detail=None,
            attempts=0,
            next_attempt_at=bindparam("now", type_=N.c.next_attempt_at.type),
        )
        .returning(N.c.id)
    )
)


def chosen(ids: Sequence[int] | None) -> dict[str, Any]:
    """All rows (``ids`` is None), or those of ``ids``."""
    return {"all": ids is None, "ids": list(ids or ())}


def upsert_rows(
    unit: Unit,
    items: Sequence[InboxItem],
    now: datetime,
    due_at: datetime,
    *,
    then_lock: PaymentChanges | None = None,
) -> list[tuple[Any, ...]]:
    """Upsert the items' rows; each row as (deliveries, status, *NOTE_FIELDS).

    An item twice in one batch is one row delivered twice (one statement may not touch
    a row twice), and rows are written in one global order (by key), then payments are
    locked (by reference): two batches with the same items in another order would
    otherwise deadlock on PostgreSQL. ``then_lock`` sends the payment reads of the items
    right after the upsert, before its answer is read.
    """
    counts = Counter(item.dedup_key for item in items)
    unique = {item.dedup_key: item for item in reversed(items)}
    rows = [item_row(unique[key], counts[key], now, due_at) for key in sorted(unique)]
    upserted = unit.run_rows(UPSERT, rows)
    if then_lock is not None:
        owners = [
            original_reference(i.raw_json)
            for i in unique.values()
            if i.event_code in REFUND_EVENT_CODES
        ]
        then_lock.lock(
            [i.merchant_reference for i in unique.values()],
            [f"webhook:{key}" for key in unique],
            owners=[psp for psp in owners if psp],
        )
    return upserted.all()


def stored_records(
    items: Sequence[InboxItem], rows: dict[str, tuple[Any, ...]]
) -> list[StoredNotification]:
    """One record per item, in order, from the upserted rows by key."""
    counts = Counter(item.dedup_key for item in items)
    stored: list[StoredNotification] = []
    seen: set[str] = set()
    for item in items:
        deliveries, status, notification_id = rows[item.dedup_key][:3]
        # Inserted now, not redelivered: the row holds exactly this batch's deliveries.
        new = item.dedup_key not in seen and deliveries == counts[item.dedup_key]
        seen.add(item.dedup_key)
        stored.append(StoredNotification(int(notification_id), item.dedup_key, new, status))
    return stored


def item_row(item: InboxItem, deliveries: int, now: datetime, due_at: datetime) -> dict[str, Any]:
    return {
        "dedup_key": item.dedup_key,
        "psp_reference": item.psp_reference,
        "merchant_reference": item.merchant_reference,
        "event_code": item.event_code,
        "success": item.success,
        "amount_value": item.amount_value,
        "amount_currency": item.amount_currency,
        "reason": item.reason,
        "raw": item.raw_json,
        "status": item.status,
        "detail": item.detail,
        "live": item.live,
        "attempts": 0,
        "deliveries": deliveries,
        "received_at": now,
        "next_attempt_at": due_at,
    }


def lock_order(note: Sequence[Any]) -> tuple[str, int]:
    """(merchant reference, id): the order batches apply items in, on every path."""
    return (str(note[2]), int(note[0]))


def original_reference(raw: str) -> str | None:
    """A webhook item's ``originalReference``: a refund's names the payment's pspReference."""
    try:
        original = json.loads(raw).get("originalReference")
    except (ValueError, AttributeError):
        return None
    return original if isinstance(original, str) and original else None


def merchant_account(raw: str) -> str | None:
    try:
        account = json.loads(raw).get("merchantAccountCode")
    except (ValueError, AttributeError):
        return None
    return account if isinstance(account, str) else None
