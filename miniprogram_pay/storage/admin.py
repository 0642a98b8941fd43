"""Read-only views for operators: payment lists, one payment's story, paged inbox and outbox.

Nothing here writes. Each method is one read unit of work on a reader thread (one
hop, one snapshot). Pages are keyset pages on the row id, newest first
(``before_id`` is the last id of the previous page), so a page costs the same at row
10 and at row 10 million and never skips or repeats a row that was there when the
first page was read. A list's statement depends on which filters are given: each
such shape is built and compiled once (a few hundred at most; a few dozen in use). ``counts``
is what the metrics and the back office read at a glance.

Example::

    reads = AdminReads(database)
    page = await reads.payments(PaymentFilter(state=PaymentState.PENDING), limit=50)
    story = await reads.story(page.items[0].reference)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import bindparam, exists, func, not_, select
from sqlalchemy.sql.expression import Executable

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import RefundState
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.storage import inbox_rows, outbox, payments
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.payment_rows import PAYMENT_COLUMNS, stored_payment
from miniprogram_pay.storage.records import OutboxRecord
from miniprogram_pay.storage.sql import Sql, Unit, among, like_prefix
from miniprogram_pay.storage.story import (
    INBOX_COLUMNS,
    InboxRecord,
    PaymentStory,
    inbox_record,
    read_story,
)
from miniprogram_pay.storage.tables import (
    NotificationRow,
    OutboxRow,
    PaymentRow,
    RefundRow,
    aware,
    table,
    utcnow,
)

__all__ = [
    "INBOX_STATUSES",
    "MAX_PAGE_ROWS",
    "OUTBOX_STATUSES",
    "AdminReads",
    "InboxRecord",
    "Page",
    "PaymentFilter",
    "PaymentStory",
    "PaymentSummary",
    "StoredCounts",
]

INBOX_STATUSES = ("applied", "failed", "ignored", "orphan", "parked", "received")
OUTBOX_STATUSES = ("delivered", "parked", "pending")
# Items not applied yet: new (received) or waiting for a retry (failed).
INBOX_WAITING = ("received", "failed")
MAX_PAGE_ROWS = 200

P = table(PaymentRow)
N = table(NotificationRow)
OB = table(OutboxRow)
R = table(RefundRow)
# Refunds whose outcome is not known yet: how long the oldest has waited is worth an alert.
PENDING_REFUND_STATES = (RefundState.REQUESTED.value, RefundState.RECEIVED.value)
Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class Page(Generic[Item]):
    """One page, newest first; ``next_before_id`` reads the next one (None: this is the last)."""

    items: list[Item]
    next_before_id: int | None


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    """Which payments to list; every field given narrows the list (all of them at once)."""

    state: PaymentState | None = None
    created_from: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    reference_prefix: str | None = None
    has_conflicts: bool | None = None
    has_refunds: bool | None = None
    """True: at least one refund, in any state (ours or made in the Customer Area)."""


@dataclass(frozen=True, slots=True)
class PaymentSummary:
    """A payment as a list shows it (without paymentData or the shopper's openid)."""

    id: int
    reference: str
    state: PaymentState
    amount: Amount
    psp_reference: str | None
    result_code: str | None
    conflicts: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredCounts:
    """The database's counts at one moment, for metrics and the back office's health panel."""

    payments: dict[str, int]
    inbox: dict[str, int]
    outbox: dict[str, int]
    stale_payments: int
    conflicted_payments: int
    oldest_waiting_inbox_seconds: float | None
    oldest_pending_outbox_seconds: float | None
    at: datetime = field(default_factory=utcnow)
    refunds: dict[str, int] = field(default_factory=dict)
    """Refunds by state (an external refund none of whose webhooks implied one is left out)."""
    oldest_pending_refund_seconds: dict[str, float] = field(default_factory=dict)
    """For Requested and Received: how long the oldest refund there has not moved."""

    @property
    def inbox_backlog(self) -> int:
        return sum(self.inbox.get(status, 0) for status in INBOX_WAITING)

    @property
    def outbox_backlog(self) -> int:
        return self.outbox.get("pending", 0)


# -- statements --------------------------------------------------------------------------


class _Shapes:
    """One ``Sql`` per set of filters given, built (and compiled) the first time it is used."""

    def __init__(self, build: Callable[[frozenset[str]], Executable]) -> None:
        self._build = build
        self._sql: dict[frozenset[str], Sql] = {}

    def run(self, unit: Unit, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        given = frozenset(params)
        sql = self._sql.get(given)
        if sql is None:
            sql = self._sql[given] = Sql(self._build(given))
        return unit.run(sql, params).all()


def _newest_first(stmt: Any, id_column: Any, given: frozenset[str]) -> Any:
    if "before_id" in given:
        stmt = stmt.where(id_column < bindparam("before_id"))
    return stmt.order_by(id_column.desc()).limit(bindparam("limit"))


def _payments_page(given: frozenset[str]) -> Any:
    created = P.c.created_at
    conditions = {
        "state": P.c.state == bindparam("state"),
        "created_from": created >= bindparam("created_from", type_=created.type),
        "created_before": created < bindparam("created_before", type_=created.type),
        "prefix": P.c.reference.like(bindparam("prefix"), escape="/"),
    }
    stmt = select(*PAYMENT_COLUMNS)
    for name in sorted(given & conditions.keys()):
        stmt = stmt.where(conditions[name])
    # Both compare the count with 0 (the parameter); each answer is a shape of its own.
    if "conflicted" in given:
        stmt = stmt.where(P.c.conflicts > bindparam("conflicted"))
    elif "unconflicted" in given:
        stmt = stmt.where(not_(P.c.conflicts > bindparam("unconflicted")))
    # Refunds are numbered from 1: "a refund numbered above 0" is "a refund" (one index probe).
    if "refunded" in given:
        stmt = stmt.where(_has_refund("refunded"))
    elif "unrefunded" in given:
        stmt = stmt.where(not_(_has_refund("unrefunded")))
    return _newest_first(stmt, P.c.id, given)


def _has_refund(param: str) -> Any:
    return exists().where(R.c.payment_id == P.c.id, R.c.number > bindparam(param))


def _filtered_page(
    columns: Sequence[Any], *, status: Any, reference: Any
) -> Callable[[frozenset[str]], Any]:
    """A page of inbox or outbox rows (``columns``, the id first), by status and reference."""

    def build(given: frozenset[str]) -> Any:
        stmt = select(*columns)
        if "status" in given:
            stmt = stmt.where(status == bindparam("status"))
        if "reference" in given:
            stmt = stmt.where(reference == bindparam("reference"))
        return _newest_first(stmt, columns[0], given)

    return build


PAYMENTS_PAGE = _Shapes(_payments_page)
INBOX_PAGE = _Shapes(
    _filtered_page(INBOX_COLUMNS, status=N.c.status, reference=N.c.merchant_reference)
)
OUTBOX_PAGE = _Shapes(_filtered_page(outbox.COLUMNS, status=OB.c.status, reference=OB.c.reference))


CONFLICTED = Sql(select(func.count()).select_from(P).where(P.c.conflicts > 0))
OLDEST_WAITING = Sql(select(func.min(N.c.received_at)).where(among(N.c.status, INBOX_WAITING)))
OLDEST_PENDING = Sql(select(func.min(OB.c.created_at)).where(OB.c.status == "pending"))
REFUNDS_BY_STATE = Sql(
    select(R.c.state, func.count()).where(R.c.state.is_not(None)).group_by(R.c.state)
)
# On the (state, updated_at) index: one probe per state.
OLDEST_PENDING_REFUNDS = Sql(
    select(R.c.state, func.min(R.c.updated_at))
    .where(among(R.c.state, PENDING_REFUND_STATES))
    .group_by(R.c.state)
)


# -- the reads ---------------------------------------------------------------------------


class AdminReads:
    """Read-only queries for operators, each one read unit of work."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def payments(
        self, where: PaymentFilter, *, before_id: int | None = None, limit: int = 50
    ) -> Page[PaymentSummary]:
        """Payments matching ``where``, newest first."""
        params = _page_params(before_id, limit)
        if where.state is not None:
            params["state"] = where.state.value
        if where.created_from is not None:
            params["created_from"] = where.created_from
        if where.created_before is not None:
            params["created_before"] = where.created_before
        if where.reference_prefix:
            params["prefix"] = like_prefix(where.reference_prefix)
        if where.has_conflicts is not None:
            params["conflicted" if where.has_conflicts else "unconflicted"] = 0
        if where.has_refunds is not None:
            params["refunded" if where.has_refunds else "unrefunded"] = 0
        rows = await self.db.read(lambda unit: PAYMENTS_PAGE.run(unit, params))
        return _paged(rows, limit, _summary)

    async def story(self, reference: str) -> PaymentStory | None:
        """The payment ``reference`` and everything that happened to it."""
        return await self.db.read(lambda unit: read_story(unit, reference))

    async def notifications(
        self,
        *,
        status: str | None = None,
        reference: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> Page[InboxRecord]:
        """Webhook items, newest first (all, or those in ``status`` / for ``reference``)."""
        params = _page_params(before_id, limit, status=status, reference=reference)
        rows = await self.db.read(lambda unit: INBOX_PAGE.run(unit, params))
        return _paged(rows, limit, inbox_record)

    async def outbox(
        self,
        *,
        status: str | None = None,
        reference: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> Page[OutboxRecord]:
        """State changes for the host, newest first (all, or those in ``status`` / of one)."""
        params = _page_params(before_id, limit, status=status, reference=reference)
        rows = await self.db.read(lambda unit: OUTBOX_PAGE.run(unit, params))
        return _paged(rows, limit, outbox.outbox_record)

    async def counts(self, *, stale_after_seconds: int) -> StoredCounts:
        """Payments and refunds by state, inbox and outbox by status, stale payments, and
        the oldest backlog."""
        now = utcnow()
        cutoff = {"cutoff": now - timedelta(seconds=stale_after_seconds)}

        def work(unit: Unit) -> StoredCounts:
            parts = [
                unit.run(payments.COUNT_BY_STATE),
                unit.run(inbox_rows.COUNTS),
                unit.run(outbox.COUNTS),
                unit.run(payments.COUNT_STALE, cutoff),
                unit.run(CONFLICTED),
                unit.run(OLDEST_WAITING),
                unit.run(OLDEST_PENDING),
                unit.run(REFUNDS_BY_STATE),
                unit.run(OLDEST_PENDING_REFUNDS),
            ]
            (by_state, by_inbox, by_outbox, stale, conflicted, waiting, pending, refunds, old) = (
                part.all() for part in parts
            )
            return StoredCounts(
                payments=_grouped(by_state),
                inbox=_grouped(by_inbox),
                outbox=_grouped(by_outbox),
                stale_payments=int(stale[0][0]),
                conflicted_payments=int(conflicted[0][0]),
                oldest_waiting_inbox_seconds=_age(aware(waiting[0][0]), now),
                oldest_pending_outbox_seconds=_age(aware(pending[0][0]), now),
                at=now,
                refunds=_grouped(refunds),
                oldest_pending_refund_seconds={
                    str(state): _age(aware(moment), now) or 0.0 for state, moment in old
                },
            )

        return await self.db.read(work)


# -- pages and records -------------------------------------------------------------------


def _page_params(before_id: int | None, limit: int, **filters: str | None) -> dict[str, Any]:
    """Up to ``limit + 1`` rows: the extra row says whether a next page exists."""
    if not 0 < limit <= MAX_PAGE_ROWS:
        raise ValueError(f"limit must be from 1 to {MAX_PAGE_ROWS}")
    params: dict[str, Any] = {name: value for name, value in filters.items() if value is not None}
    params["limit"] = limit + 1
    if before_id is not None:
        params["before_id"] = before_id
    return params


def _paged(
    rows: Sequence[Sequence[Any]], limit: int, record: Callable[[Sequence[Any]], Item]
) -> Page[Item]:
    """The page's records; every statement's first column is the row id."""
    items = [record(row) for row in rows[:limit]]
    return Page(items, int(rows[limit - 1][0]) if len(rows) > limit else None)


def _grouped(rows: Sequence[Sequence[Any]]) -> dict[str, int]:
    return {str(key): int(n) for key, n in rows}


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else max((now - moment).total_seconds(), 0.0)


def _summary(row: Sequence[Any]) -> PaymentSummary:
    stored = stored_payment(row)
    return PaymentSummary(
        id=stored.id,
        reference=stored.reference,
        state=PaymentState(stored.state),
        amount=Amount(stored.amount_value, stored.currency),
        psp_reference=stored.psp_reference,
        result_code=stored.result_code,
        conflicts=stored.conflicts,
        created_at=aware(stored.created_at),
        updated_at=aware(stored.updated_at),
    )
