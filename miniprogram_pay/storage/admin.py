"""Read-only views for operators: payment lists, one payment's story, paged inbox and outbox.

Nothing here writes. Each method is one read session (one snapshot), pages are
keyset pages on the row id, newest first (``before_id`` is the last id of the
previous page), so a page costs the same at row 10 and at row 10 million and
never skips or repeats a row that was there when the first page was read.
``counts`` is what the metrics and the back office read at a glance.

Example::

    reads = AdminReads(database)
    page = await reads.payments(PaymentFilter(state=PaymentState.PENDING), limit=50)
    story = await reads.story(page.items[0].reference)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, func, or_
from sqlalchemy.exc import OperationalError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import StorageError
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.records import (
    EventRecord,
    OutboxRecord,
    PaymentRecord,
    TransitionRecord,
)

# The event log and history readers are the repository's; a payment's story reads them
# in the same session as the payment row.
from miniprogram_pay.storage.repository import (
    _aware,
    _events,
    _history,
    _outbox_record,
    _payment_record,
)
from miniprogram_pay.storage.tables import NotificationRow, OutboxRow, PaymentRow, utcnow

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
# A story lists at most this many webhook items and outbox rows (a payment has a handful).
MAX_STORY_ROWS = 500

Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class Page(Generic[Row]):
    """One page, newest first; ``next_before_id`` reads the next one (None: this is the last)."""

    items: list[Row]
    next_before_id: int | None


@dataclass(frozen=True, slots=True)
class PaymentFilter:
    """Which payments to list; every field given narrows the list (all of them at once)."""

    state: PaymentState | None = None
    created_from: datetime | None = None  # inclusive
    created_before: datetime | None = None  # exclusive
    reference_prefix: str | None = None
    has_conflicts: bool | None = None
    # Refunds are not stored yet: a "has refunds" filter joins their table once it exists.


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
class InboxRecord:
    """A webhook item as operators see it."""

    id: int
    status: str
    detail: str | None
    psp_reference: str
    merchant_reference: str
    event_code: str
    success: bool
    # As Adyen sent them: a webhook may name any currency, or a zero amount.
    amount_value: int | None
    amount_currency: str | None
    deliveries: int
    attempts: int
    received_at: datetime
    next_attempt_at: datetime
    applied_at: datetime | None


@dataclass(frozen=True, slots=True)
class PaymentStory:
    """Everything stored about one payment, read in one snapshot.

    One payment is one attempt at Adyen today; ``transitions`` and ``events`` are
    that attempt's. Webhook items are those naming the payment's reference or its
    ``pspReference``; ``deliveries`` are its state changes for the host's hook.
    """

    payment: PaymentRecord
    transitions: list[TransitionRecord]
    events: list[EventRecord]
    webhooks: list[InboxRecord]
    deliveries: list[OutboxRecord]


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

    @property
    def inbox_backlog(self) -> int:
        return sum(self.inbox.get(status, 0) for status in INBOX_WAITING)

    @property
    def outbox_backlog(self) -> int:
        return self.outbox.get("pending", 0)


class AdminReads:
    """Read-only queries for operators, on the database's read sessions."""

    def __init__(self, database: Database) -> None:
        self.db = database

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self.db.read() as session:
                yield session
        except OperationalError as exc:
            raise StorageError("the database is unavailable; retry shortly") from exc

    async def payments(
        self, where: PaymentFilter, *, before_id: int | None = None, limit: int = 50
    ) -> Page[PaymentSummary]:
        """Payments matching ``where``, newest first."""
        stmt = _payment_filter(select(PaymentRow), where)
        async with self._reading() as session:
            rows = await _page(session, stmt, PaymentRow.id, before_id, limit)
        return Page([_summary(r) for r in rows[:limit]], _next(rows, limit))

    async def story(self, reference: str) -> PaymentStory | None:
        """The payment ``reference`` and everything that happened to it."""
        async with self._reading() as session:
            stmt = select(PaymentRow).where(PaymentRow.reference == reference)
            row = (await session.exec(stmt)).first()
            if row is None or row.id is None:
                return None
            payment = _payment_record(row)
            return PaymentStory(
                payment=payment,
                transitions=await _history(session, row.id),
                events=await _events(session, row.id),
                webhooks=await _payment_webhooks(session, payment),
                deliveries=await _payment_deliveries(session, row.id),
            )

    async def notifications(
        self,
        *,
        status: str | None = None,
        reference: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> Page[InboxRecord]:
        """Webhook items, newest first (all, or those in ``status`` / for ``reference``)."""
        stmt = select(NotificationRow)
        if status is not None:
            stmt = stmt.where(NotificationRow.status == status)
        if reference is not None:
            stmt = stmt.where(NotificationRow.merchant_reference == reference)
        async with self._reading() as session:
            rows = await _page(session, stmt, NotificationRow.id, before_id, limit)
        return Page([_inbox_record(r) for r in rows[:limit]], _next(rows, limit))

    async def outbox(
        self,
        *,
        status: str | None = None,
        reference: str | None = None,
        before_id: int | None = None,
        limit: int = 50,
    ) -> Page[OutboxRecord]:
        """State changes for the host, newest first (all, or those in ``status`` / of one)."""
        stmt = select(OutboxRow)
        if status is not None:
            stmt = stmt.where(OutboxRow.status == status)
        if reference is not None:
            stmt = stmt.where(OutboxRow.reference == reference)
        async with self._reading() as session:
            rows = await _page(session, stmt, OutboxRow.id, before_id, limit)
        return Page([_outbox_record(r) for r in rows[:limit]], _next(rows, limit))

    async def counts(self, *, stale_after_seconds: int) -> StoredCounts:
        """Payments by state, inbox and outbox by status, stale payments, oldest backlog."""
        now = utcnow()
        async with self._reading() as session:
            payments = await _grouped(session, PaymentRow.state)
            inbox = await _grouped(session, NotificationRow.status)
            outbox = await _grouped(session, OutboxRow.status)
            stale = await _count(session, _stale(now - timedelta(seconds=stale_after_seconds)))
            conflicted = await _count(session, col(PaymentRow.conflicts) > 0)
            waiting = await _oldest(
                session,
                NotificationRow.received_at,
                col(NotificationRow.status).in_(INBOX_WAITING),
            )
            pending = await _oldest(session, OutboxRow.created_at, OutboxRow.status == "pending")
        return StoredCounts(
            payments=payments,
            inbox=inbox,
            outbox=outbox,
            stale_payments=stale,
            conflicted_payments=conflicted,
            oldest_waiting_inbox_seconds=_age(waiting, now),
            oldest_pending_outbox_seconds=_age(pending, now),
            at=now,
        )


# -- queries -----------------------------------------------------------------------------


def _payment_filter(stmt: SelectOfScalar[PaymentRow], where: PaymentFilter) -> Any:
    if where.state is not None:
        stmt = stmt.where(PaymentRow.state == where.state.value)
    if where.created_from is not None:
        stmt = stmt.where(col(PaymentRow.created_at) >= where.created_from)
    if where.created_before is not None:
        stmt = stmt.where(col(PaymentRow.created_at) < where.created_before)
    if where.reference_prefix:
        stmt = stmt.where(
            col(PaymentRow.reference).startswith(where.reference_prefix, autoescape=True)
        )
    if where.has_conflicts is not None:
        conflicted = col(PaymentRow.conflicts) > 0
        stmt = stmt.where(conflicted if where.has_conflicts else ~conflicted)
    return stmt


async def _page(
    session: AsyncSession, stmt: Any, id_column: Any, before_id: int | None, limit: int
) -> list[Any]:
    """Up to ``limit + 1`` rows by id descending: the extra row says whether a next page exists."""
    if not 0 < limit <= MAX_PAGE_ROWS:
        raise ValueError(f"limit must be from 1 to {MAX_PAGE_ROWS}")
    if before_id is not None:
        stmt = stmt.where(col(id_column) < before_id)
    stmt = stmt.order_by(col(id_column).desc()).limit(limit + 1)
    return list((await session.exec(stmt)).all())


def _next(rows: Sequence[Any], limit: int) -> int | None:
    if len(rows) <= limit:
        return None
    last: int = rows[limit - 1].id
    return last


async def _payment_webhooks(session: AsyncSession, payment: PaymentRecord) -> list[InboxRecord]:
    named: Any = col(NotificationRow.merchant_reference) == payment.reference
    if payment.psp_reference:
        named = or_(named, col(NotificationRow.psp_reference) == payment.psp_reference)
    stmt = (
        select(NotificationRow).where(named).order_by(col(NotificationRow.id)).limit(MAX_STORY_ROWS)
    )
    return [_inbox_record(r) for r in (await session.exec(stmt)).all()]


async def _payment_deliveries(session: AsyncSession, payment_id: int) -> list[OutboxRecord]:
    stmt = (
        select(OutboxRow)
        .where(OutboxRow.payment_id == payment_id)
        .order_by(col(OutboxRow.id))
        .limit(MAX_STORY_ROWS)
    )
    return [_outbox_record(r) for r in (await session.exec(stmt)).all()]


async def _grouped(session: AsyncSession, column: Any) -> dict[str, int]:
    stmt = select(column, func.count()).group_by(column)
    return {str(key): int(n) for key, n in (await session.exec(stmt)).all()}


def _stale(cutoff: datetime) -> Any:
    unsettled = [PaymentState.CREATED.value, PaymentState.PENDING.value]
    return and_(col(PaymentRow.state).in_(unsettled), col(PaymentRow.updated_at) < cutoff)


async def _count(session: AsyncSession, condition: Any) -> int:
    stmt = select(func.count()).select_from(PaymentRow).where(condition)
    return int((await session.exec(stmt)).one())


async def _oldest(session: AsyncSession, column: Any, condition: Any) -> datetime | None:
    stmt = select(func.min(column)).where(condition)
    found: datetime | None = (await session.exec(stmt)).one()
    return _aware(found)


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else max((now - moment).total_seconds(), 0.0)


# -- records -----------------------------------------------------------------------------


def _summary(row: PaymentRow) -> PaymentSummary:
    return PaymentSummary(
        id=row.id or 0,
        reference=row.reference,
        state=PaymentState(row.state),
        amount=Amount(row.amount_value, row.currency),
        psp_reference=row.psp_reference,
        result_code=row.result_code,
        conflicts=row.conflicts,
        created_at=_aware(row.created_at) or row.created_at,
        updated_at=_aware(row.updated_at) or row.updated_at,
    )


def _inbox_record(row: NotificationRow) -> InboxRecord:
    return InboxRecord(
        id=row.id or 0,
        status=row.status,
        detail=row.detail,
        psp_reference=row.psp_reference,
        merchant_reference=row.merchant_reference,
        event_code=row.event_code,
        success=row.success,
        amount_value=row.amount_value,
        amount_currency=row.amount_currency,
        deliveries=row.deliveries,
        attempts=row.attempts,
        received_at=_aware(row.received_at) or row.received_at,
        next_attempt_at=_aware(row.next_attempt_at) or row.next_attempt_at,
        applied_at=_aware(row.applied_at),
    )
