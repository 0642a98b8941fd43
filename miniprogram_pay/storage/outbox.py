"""The outbox: state changes the host is owed, written in the transaction of the change.

A change's row is written by the unit that makes the change (``write_changes``, called
from ``storage/changes.py``). When this process delivers changes itself, the row is
written already leased to it (``lease_seconds``) and handed to the delivery loop in
memory: no read, no claim, and one batched "delivered" mark afterwards. Rows another
process left behind (it crashed, or a delivery failed and was rescheduled) are found by
``claim`` once their lease ends. At least once, under a stable ``event_id``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update

from miniprogram_pay.domain.refunds import RefundChange
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.records import OutboxEvent, OutboxRecord
from miniprogram_pay.storage.sql import RowsSql, Sql, Unit, any_of, row_binds
from miniprogram_pay.storage.tables import OutboxRow, aware, table, utcnow

__all__ = [
    "COLUMNS",
    "LEASE_SECONDS",
    "OrderChange",
    "OutboxStore",
    "outbox_record",
    "outbox_row",
    "write_changes",
]

OB = table(OutboxRow)
LEASE_SECONDS = 30.0
# The row as ``OutboxRecord`` reads it (and ``OutboxEvent``).
FIELDS = (
    "id", "event_id", "reference", "from_state", "to_state", "source", "attempts",
    "created_at", "requeued_at", "status", "last_error", "next_attempt_at", "delivered_at",
    "kind", "refund", "order_reference", "attempt_number", "order_state", "conflict",
)  # fmt: skip
COLUMNS = [OB.c[name] for name in FIELDS]
WRITE_COLUMNS = (
    "event_id", "payment_id", "reference", "from_state", "to_state", "source", "status",
    "attempts", "created_at", "next_attempt_at", "kind", "refund", "order_reference",
    "attempt_number", "order_state", "conflict",
)  # fmt: skip

INSERT = RowsSql(
    WRITE_COLUMNS,
    lambda _, n: (
        insert(OB).values(row_binds(OB, WRITE_COLUMNS, n)).returning(OB.c.id, OB.c.event_id)
    ),
)
DUE = Sql(
    select(OB.c.id)
    .where(
        OB.c.status == "pending",
        OB.c.next_attempt_at <= bindparam("now", type_=OB.c.next_attempt_at.type),
    )
    .limit(1)
)


def _claim(dialect: str) -> Any:
    due = (
        select(OB.c.id)
        .where(
            OB.c.status == "pending",
            OB.c.next_attempt_at <= bindparam("now", type_=OB.c.next_attempt_at.type),
        )
        .where(~any_of(OB.c.id, "exclude", dialect))
        .order_by(OB.c.id)
        .limit(bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    return (
        update(OB)
        .where(OB.c.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=bindparam("leased"), attempts=OB.c.attempts + 1)
        .returning(*COLUMNS)
    )


CLAIM = Sql(_claim)
DELIVERED = Sql(
    lambda dialect: (
        update(OB)
        .where(any_of(OB.c.id, "ids", dialect))
        .values(status="delivered", delivered_at=bindparam("now", type_=OB.c.delivered_at.type))
    )
)
FAILED = Sql(
    update(OB)
    .where(OB.c.id == bindparam("id"), OB.c.status == "pending")
    .values(
        status=bindparam("status"),
        last_error=bindparam("error"),
        next_attempt_at=bindparam("due", type_=OB.c.next_attempt_at.type),
    )
)
COUNTS = Sql(select(OB.c.status, func.count()).group_by(OB.c.status))
LISTING = Sql(select(*COLUMNS).order_by(OB.c.id.desc()).limit(bindparam("limit")))
LISTING_BY_STATUS = Sql(
    select(*COLUMNS)
    .where(OB.c.status == bindparam("status"))
    .order_by(OB.c.id.desc())
    .limit(bindparam("limit"))
)


def _requeue(dialect: str) -> Any:
    now = bindparam("now", type_=OB.c.requeued_at.type)
    return (
        update(OB)
        .where(OB.c.status == "parked", any_of(OB.c.id, "ids", dialect) | bindparam("all"))
        .values(status="pending", next_attempt_at=now, requeued_at=now)
        .returning(*COLUMNS)
    )


REQUEUE = Sql(_requeue)


def outbox_row(
    *,
    payment_id: int,
    reference: str,
    from_state: PaymentState,
    to_state: PaymentState,
    source: str,
    now: datetime,
    lease_seconds: float | None,
    order: OrderChange | None = None,
) -> dict[str, Any]:
    """The row of one state change. Leased: this process delivers it (attempt 1) right away.

    ``order``: the attempt's order, its number and the order's state after the change;
    a change that reports a conflict (a duplicate authorisation) has an id of its own.
    """
    leased = lease_seconds is not None
    order = order or OrderChange(reference, None, to_state)
    # A payment enters each state once, and reports each conflict once: the id is
    # stable across redeliveries.
    what = order.conflict or to_state.value.lower()
    return {
        "event_id": f"mpp_{payment_id}_{what}",
        "order_reference": order.reference,
        "attempt_number": order.attempt,
        "order_state": order.state.value,
        "conflict": order.conflict,
        "payment_id": payment_id,
        "reference": reference,
        "from_state": from_state.value,
        "to_state": to_state.value,
        "source": source,
        "status": "pending",
        "attempts": 1 if leased else 0,
        "created_at": now,
        "next_attempt_at": now + timedelta(seconds=lease_seconds or 0.0),
        "kind": "payment",
        "refund": None,
    }


@dataclass(frozen=True, slots=True)
class OrderChange:
    """What a change's outbox row says of the attempt's order."""

    reference: str
    attempt: int | None
    state: PaymentState
    conflict: str | None = None


def write_changes(
    unit: Unit, rows: Sequence[dict[str, Any]]
) -> Callable[[], dict[str, OutboxEvent]]:
    """Send the inserts of a unit's state changes; read their events (by ``event_id``)
    with the function returned, once the unit needs them (on PostgreSQL: after the
    unit's other writes went out with them)."""
    if not rows:
        return dict
    inserted = unit.run_rows(INSERT, rows)

    def events() -> dict[str, OutboxEvent]:
        ids = {str(event_id): int(row_id) for row_id, event_id in inserted.all()}
        return {row["event_id"]: _written(ids[row["event_id"]], row) for row in rows}

    return events


def _written(row_id: int, row: dict[str, Any]) -> OutboxEvent:
    return OutboxEvent(
        id=row_id,
        event_id=row["event_id"],
        reference=row["reference"],
        from_state=PaymentState(row["from_state"]),
        to_state=PaymentState(row["to_state"]),
        source=row["source"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        kind=row["kind"],
        refund=_refund(row["refund"]),
        order_reference=row["order_reference"],
        attempt_number=row["attempt_number"],
        order_state=PaymentState(row["order_state"]) if row["order_state"] else None,
        conflict=row["conflict"],
    )


def _refund(text: str | None) -> RefundChange | None:
    """A refund change as the row keeps it (JSON), for the host."""
    return RefundChange.from_json(json.loads(text)) if text else None


def _fields(row: Sequence[Any]) -> dict[str, Any]:
    values = dict(zip(FIELDS, row, strict=True))
    return {
        "id": int(values["id"]),
        "event_id": values["event_id"],
        "reference": values["reference"],
        "from_state": PaymentState(values["from_state"]) if values["from_state"] else None,
        "to_state": PaymentState(values["to_state"]),
        "attempts": int(values["attempts"]),
        "created_at": aware(values["created_at"]),
        "requeued_at": aware(values["requeued_at"]),
        "kind": values["kind"],
        "refund": _refund(values["refund"]),
        # Rows from before orders existed: the payment was its order's only attempt.
        "order_reference": values["order_reference"] or values["reference"],
        "attempt_number": values["attempt_number"],
        "order_state": PaymentState(values["order_state"] or values["to_state"]),
        "conflict": values["conflict"],
        "rest": values,
    }


def _event(row: Sequence[Any]) -> OutboxEvent:
    fields = _fields(row)
    rest = fields.pop("rest")
    return OutboxEvent(**fields, source=rest["source"])


def outbox_record(row: Sequence[Any]) -> OutboxRecord:
    fields = _fields(row)
    rest = fields.pop("rest")
    return OutboxRecord(
        **fields,
        status=rest["status"],
        last_error=rest["last_error"],
        next_attempt_at=aware(rest["next_attempt_at"]),
        delivered_at=aware(rest["delivered_at"]),
    )


class OutboxStore:
    """The outbox of one database: recovery, delivery outcomes, operators' views."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def claim(
        self,
        *,
        limit: int = 20,
        lease_seconds: float = LEASE_SECONDS,
        exclude: Iterable[int] = (),
    ) -> list[OutboxEvent]:
        """Lease due rows (left behind, retried, requeued) to this process, oldest first.

        Another process skips them until the lease ends; ``exclude`` names rows this
        process is delivering already. A read looks first: on SQLite an empty write
        transaction would still queue for the single writer.
        """
        if not await self.db.read(lambda unit: bool(unit.run(DUE, {"now": utcnow()}).all())):
            return []
        params = {"limit": limit, "exclude": sorted(exclude)}

        def work(unit: Unit) -> list[OutboxEvent]:
            now = utcnow()
            leased = now + timedelta(seconds=lease_seconds)
            rows = unit.run(CLAIM, {**params, "now": now, "leased": leased}).all()
            return sorted((_event(row) for row in rows), key=lambda event: event.id)

        return await self.db.write(work, what="outbox claim")

    async def delivered(self, outbox_ids: Sequence[int]) -> None:
        """Mark many rows delivered in one transaction.

        Not synced on its own: a mark lost to a power failure only means the change is
        told again (at least once, under the same ``event_id``).
        """
        if not outbox_ids:
            return
        params = {"ids": list(outbox_ids)}
        await self.db.write(
            lambda unit: unit.run(DELIVERED, {**params, "now": utcnow()}),
            what="outbox delivered",
            durable=False,
        )

    async def failed(
        self, outbox_id: int, *, error: str, retry_in_seconds: float, park: bool
    ) -> None:
        """Record a failed delivery: due again after ``retry_in_seconds``, or parked."""

        def work(unit: Unit) -> None:
            due = utcnow() + timedelta(seconds=retry_in_seconds)
            status = "parked" if park else "pending"
            params = {"id": outbox_id, "status": status, "error": error[:255], "due": due}
            unit.run(FAILED, params)

        await self.db.write(work, what="outbox failure")

    async def counts(self) -> dict[str, int]:
        rows = await self.db.read(lambda unit: unit.run(COUNTS).all())
        return {str(status): int(n) for status, n in rows}

    async def listing(self, *, status: str | None = None, limit: int = 100) -> list[OutboxRecord]:
        """Rows, newest first (all, or those in ``status``)."""
        params: dict[str, Any]
        sql, params = LISTING, {"limit": limit}
        if status is not None:
            sql, params = LISTING_BY_STATUS, {"limit": limit, "status": status}
        rows = await self.db.read(lambda unit: unit.run(sql, params).all())
        return [outbox_record(row) for row in rows]

    async def requeue(self, *, ids: Sequence[int] | None = None) -> list[OutboxRecord]:
        """Offer parked changes (all, or those of ``ids``) to the host again, from now.

        Each gets a fresh retry window; its attempt count goes on. Returns the rows
        requeued; a row no longer parked is left alone.
        """
        if ids is not None and not ids:
            return []
        params = {"ids": list(ids or ()), "all": ids is None}
        rows = await self.db.write(
            lambda unit: unit.run(REQUEUE, {**params, "now": utcnow()}).all(),
            what="outbox requeue",
        )
        return sorted((outbox_record(row) for row in rows), key=lambda record: record.id)
