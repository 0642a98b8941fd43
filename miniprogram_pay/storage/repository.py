"""The payment repository: every read and write of payments, events, the inbox and the outbox.

Applying an event is one atomic unit: lock the payment row, decide with the pure
domain, write the state, the event log, the history and the outbox row, commit.
The lock is ``SELECT ... FOR UPDATE`` on PostgreSQL and SQLite's single
``BEGIN IMMEDIATE`` writer; a version column is checked on every update as well,
so a backend without either could never lose an update silently.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, bindparam, case, func, insert, null, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from miniprogram_pay.domain.events import (
    EventSource,
    PaymentEvent,
    summary_result_code,
    webhook_event,
)
from miniprogram_pay.domain.machine import PaymentMachine
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.reconcile import Decision, Outcome, PaymentView, decide
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import NotFoundError, StorageError
from miniprogram_pay.retrying import Backoff, no_jitter, retrying
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.records import (
    AppliedEvent,
    EventRecord,
    IgnoredNotification,
    InboxItem,
    NotificationRecord,
    OutboxEvent,
    OutboxRecord,
    PaymentRecord,
    ProviderAnswer,
    StoredNotification,
    TransitionRecord,
)
from miniprogram_pay.storage.tables import (
    NotificationRow,
    OutboxRow,
    PaymentEventRow,
    PaymentRow,
    TransitionRow,
    utcnow,
)

__all__ = ["PaymentRepository"]

logger = logging.getLogger("miniprogram_pay.storage")

T = TypeVar("T")

WRITE_ATTEMPTS = 6
# Inbox rows per INSERT: 16 parameters each keeps a statement far below the drivers'
# limits on bound parameters (SQLite 32,766; PostgreSQL 65,535).
STORE_CHUNK_ROWS = 500
LEASE_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 600.0
# Lock waits and version conflicts clear within milliseconds.
WRITE_BACKOFF = Backoff(base_seconds=0.005, cap_seconds=0.5)


class _VersionConflictError(Exception):
    """The row changed under us: retry the whole unit of work."""


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None


def _payment_record(row: PaymentRow) -> PaymentRecord:
    assert row.id is not None
    return PaymentRecord(
        id=row.id,
        reference=row.reference,
        openid=row.openid,
        amount=Amount(row.amount_value, row.currency),
        state=PaymentState(row.state),
        psp_reference=row.psp_reference,
        result_code=row.result_code,
        refusal_reason=row.refusal_reason,
        payment_data=row.payment_data,
        wechat_params=_loads(row.wechat_params),
        action=_loads(row.action),
        idempotency_key=row.idempotency_key,
        conflicts=row.conflicts,
        version=row.version,
        created_at=_aware(row.created_at) or row.created_at,
        updated_at=_aware(row.updated_at) or row.updated_at,
    )


def _view(row: PaymentRow) -> PaymentView:
    decisive = None
    if row.decisive_rank is not None and row.decisive_weight is not None and row.decisive_key:
        decisive = (row.decisive_rank, row.decisive_weight, row.decisive_key)
    return PaymentView(
        state=PaymentState(row.state),
        amount=Amount(row.amount_value, row.currency),
        psp_reference=row.psp_reference,
        decisive=decisive,
    )


@dataclass
class _BatchWrites:
    """The rows a batch of webhook items writes, sent with one statement per table."""

    before: dict[int | None, int]  # each locked payment's version when it was read
    events: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    # Every payment column some item changed; each changed payment writes them all.
    columns: set[str] = field(default_factory=set)

    async def flush(self, session: AsyncSession, payments: Iterable[PaymentRow]) -> None:
        for table, rows in (
            (PaymentEventRow.__table__, self.events),  # type: ignore[attr-defined]
            (TransitionRow.__table__, self.transitions),  # type: ignore[attr-defined]
            (OutboxRow.__table__, self.outbox),  # type: ignore[attr-defined]
        ):
            if rows:
                await session.exec(insert(table), params=rows)
        columns = ("version", *sorted(self.columns))
        updates = [
            {
                "b_id": row.id,
                "b_version": self.before[row.id],
                **{name: getattr(row, name) for name in columns},
            }
            for row in payments
            if row.version != self.before[row.id]  # changed in memory
        ]
        if not updates:
            return
        table = PaymentRow.__table__  # type: ignore[attr-defined]
        stmt = (
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.version == bindparam("b_version"))
            .values({name: bindparam(name) for name in columns})
        )
        result = await session.exec(stmt, params=updates)
        if result.rowcount != len(updates):
            raise _VersionConflictError


class PaymentRepository:
    """Async access to the package's tables. One per process; safe for concurrent use."""

    def __init__(self, database: Database, machine: PaymentMachine | None = None) -> None:
        self.db = database
        self._machine = machine or PaymentMachine()

    # -- units of work -------------------------------------------------------------

    async def _write(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in a write transaction, retrying lock and version conflicts."""
        try:
            async for attempt in retrying(
                attempts=WRITE_ATTEMPTS,
                backoff=WRITE_BACKOFF,
                retry_on=_is_retryable_write,
                logger=logger,
                what="write transaction",
            ):
                with attempt:
                    async with self.db.write() as session:
                        return await work(session)
        except _VersionConflictError:
            raise StorageError("the database is busy; retry shortly") from None
        except OperationalError as exc:
            raise StorageError("the database is unavailable; retry shortly") from exc
        except DBAPIError as exc:
            if isinstance(exc, IntegrityError) or not _is_transient(exc):
                raise
            raise StorageError("the database is busy; retry shortly") from exc
        raise AssertionError("unreachable: the retry loop returns or raises")

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self.db.read() as session:
                yield session
        except OperationalError as exc:
            raise StorageError("the database is unavailable; retry shortly") from exc

    # -- payments ------------------------------------------------------------------

    async def create_payment(
        self, *, reference: str, openid: str, amount: Amount, idempotency_key: str
    ) -> tuple[PaymentRecord, bool]:
        """Record a payment as Created. Returns ``(payment, created)``.

        A reference that already exists returns the stored payment and ``False``:
        the unique constraint, not a prior read, decides who was first.
        """

        async def work(session: AsyncSession) -> PaymentRecord:
            now = utcnow()
            row = PaymentRow(
                reference=reference,
                openid=openid,
                amount_value=amount.value,
                currency=amount.currency,
                state=PaymentState.CREATED.value,
                idempotency_key=idempotency_key,
                created_at=now,
                updated_at=now,
            )
            session.add(row)
            await session.flush()
            assert row.id is not None
            session.add(
                TransitionRow(
                    payment_id=row.id,
                    from_state=None,
                    to_state=PaymentState.CREATED.value,
                    source=EventSource.PAYMENTS.value,
                    event_kind="Created",
                    event_key="created",
                    at=now,
                )
            )
            return _payment_record(row)

        try:
            return await self._write(work), True
        except IntegrityError:
            existing = await self.get(reference)
            if existing is None:  # pragma: no cover - the row that won cannot vanish
                raise StorageError("payment reference collided but is not readable") from None
            return existing, False

    async def get(self, reference: str) -> PaymentRecord | None:
        async with self._reading() as session:
            row = (
                await session.exec(select(PaymentRow).where(PaymentRow.reference == reference))
            ).first()
            return _payment_record(row) if row else None

    async def get_by_payment_data(self, payment_data: str) -> PaymentRecord | None:
        async with self._reading() as session:
            stmt = select(PaymentRow).where(
                PaymentRow.payment_data_hash == _digest(payment_data),
                PaymentRow.payment_data == payment_data,
            )
            row = (await session.exec(stmt)).first()
            return _payment_record(row) if row else None

    async def history(self, payment_id: int) -> list[TransitionRecord]:
        async with self._reading() as session:
            return await _history(session, payment_id)

    async def events(self, payment_id: int) -> list[EventRecord]:
        async with self._reading() as session:
            return await _events(session, payment_id)

    async def has_event(self, payment_id: int, *, key_prefix: str) -> bool:
        """True when the payment's event log holds an event whose key starts so."""
        async with self._reading() as session:
            stmt = (
                select(PaymentEventRow.id)
                .where(PaymentEventRow.payment_id == payment_id)
                .where(col(PaymentEventRow.key).startswith(key_prefix, autoescape=True))
                .limit(1)
            )
            return (await session.exec(stmt)).first() is not None

    async def status(
        self, reference: str
    ) -> tuple[PaymentRecord, list[TransitionRecord], list[EventRecord]] | None:
        """A payment with its history and event log, read in one transaction (one snapshot)."""
        async with self._reading() as session:
            stmt = select(PaymentRow).where(PaymentRow.reference == reference)
            row = (await session.exec(stmt)).first()
            if row is None or row.id is None:
                return None
            history = await _history(session, row.id)
            return _payment_record(row), history, await _events(session, row.id)

    async def stale_payments(
        self, *, older_than_seconds: int, limit: int = 100
    ) -> list[PaymentRecord]:
        """Payments still Created or Pending whose last change is older than the bound."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        async with self._reading() as session:
            stmt = (
                select(PaymentRow)
                .where(
                    col(PaymentRow.state).in_(
                        [PaymentState.CREATED.value, PaymentState.PENDING.value]
                    )
                )
                .where(col(PaymentRow.updated_at) < cutoff)
                .order_by(col(PaymentRow.updated_at))
                .limit(limit)
            )
            return [_payment_record(r) for r in (await session.exec(stmt)).all()]

    async def count_stale(self, *, older_than_seconds: int) -> int:
        """How many payments ``stale_payments`` would list, without a limit (for monitoring)."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)
        async with self._reading() as session:
            stmt = (
                select(func.count())
                .select_from(PaymentRow)
                .where(
                    col(PaymentRow.state).in_(
                        [PaymentState.CREATED.value, PaymentState.PENDING.value]
                    )
                )
                .where(col(PaymentRow.updated_at) < cutoff)
            )
            return int((await session.exec(stmt)).one())

    async def count_by_state(self) -> dict[str, int]:
        async with self._reading() as session:
            stmt = select(PaymentRow.state, func.count()).group_by(PaymentRow.state)
            return {state: int(n) for state, n in (await session.exec(stmt)).all()}

    async def apply(
        self, reference: str, event: PaymentEvent, *, answer: ProviderAnswer | None = None
    ) -> AppliedEvent:
        """Apply one event to the payment ``reference`` atomically; a repeat changes nothing."""

        async def work(session: AsyncSession) -> AppliedEvent:
            row = await self._lock_payment(session, reference)
            if row is None:
                raise NotFoundError("no payment with this reference")
            return await self._apply_locked(session, row, event, answer)

        return await self._write(work)

    async def _lock_payment(self, session: AsyncSession, reference: str) -> PaymentRow | None:
        stmt = select(PaymentRow).where(PaymentRow.reference == reference).with_for_update()
        row = (await session.exec(stmt)).first()
        if row is not None:
            # Writes go through versioned UPDATE statements; a detached row keeps
            # the ORM from flushing a second, unchecked UPDATE at commit.
            session.expunge(row)
        return row

    async def _apply_locked(
        self,
        session: AsyncSession,
        row: PaymentRow,
        event: PaymentEvent,
        answer: ProviderAnswer | None,
    ) -> AppliedEvent:
        assert row.id is not None
        decision = decide(_view(row), event, self._machine)
        now = utcnow()
        if not await self._insert_event(session, row.id, event, decision, now):
            # Applied before: the unique (payment, key) says so. Nothing else changes.
            if answer is not None:
                await self._attach_answer(session, row, answer)
            return AppliedEvent(payment=_payment_record(row), decision=None, duplicate=True)
        changes = _changes(row, event, decision, answer, now)
        transition = None
        if decision.moved:
            transition = await self._record_transition(session, row, event, decision, now)
        await self._update_versioned(session, row, changes)
        return AppliedEvent(
            payment=_payment_record(row), decision=decision, duplicate=False, transition=transition
        )

    async def _insert_event(
        self,
        session: AsyncSession,
        payment_id: int,
        event: PaymentEvent,
        decision: Decision,
        now: datetime,
    ) -> bool:
        """Log the event once; False when the same key was logged before."""
        table = PaymentEventRow.__table__  # type: ignore[attr-defined]
        stmt = (
            self._insert(table)
            .values(_event_values(payment_id, event, decision, now))
            .on_conflict_do_nothing(index_elements=["payment_id", "key"])
            .returning(table.c.id)
        )
        return (await session.exec(stmt)).first() is not None

    def _insert(self, table: Any) -> Any:
        dialect_insert = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        return dialect_insert(table)

    async def _attach_answer(
        self, session: AsyncSession, row: PaymentRow, answer: ProviderAnswer
    ) -> None:
        changes = _answer_changes(row, answer)
        if changes:
            changes["updated_at"] = utcnow()
            await self._update_versioned(session, row, changes)

    async def _record_transition(
        self,
        session: AsyncSession,
        row: PaymentRow,
        event: PaymentEvent,
        decision: Decision,
        now: datetime,
    ) -> TransitionRecord:
        transition, outbox, record = _transition_rows(row, event, decision, now)
        await session.exec(insert(TransitionRow.__table__).values(transition))  # type: ignore[attr-defined]
        await session.exec(insert(OutboxRow.__table__).values(outbox))  # type: ignore[attr-defined]
        return record

    async def _update_versioned(
        self, session: AsyncSession, row: PaymentRow, changes: dict[str, Any]
    ) -> None:
        if not changes:
            return
        stmt = (
            update(PaymentRow)
            .where(col(PaymentRow.id) == row.id, col(PaymentRow.version) == row.version)
            .values(**changes, version=row.version + 1)
            .execution_options(synchronize_session=False)
        )
        result = await session.exec(stmt)
        if result.rowcount != 1:
            raise _VersionConflictError
        for name, value in changes.items():
            setattr(row, name, value)
        row.version += 1

    # -- inbox (webhook notifications) ----------------------------------------------

    async def store_notifications(
        self, items: Sequence[InboxItem], *, lease_seconds: float = 0.0
    ) -> list[StoredNotification]:
        """Durably store webhook items; a redelivered item is recognised by its unique key.

        ``lease_seconds`` leaves new items to the caller for that long: their first
        attempt is not due for the worker loops (of any process) until it ends, so the
        request that stored them applies them alone. A redelivery keeps its schedule.
        """

        async def work(session: AsyncSession) -> list[StoredNotification]:
            now = utcnow()
            due_at = now + timedelta(seconds=lease_seconds)
            # An item twice in one batch is one row delivered twice: one ON CONFLICT
            # statement may not touch the same row twice.
            counts = Counter(item.dedup_key for item in items)
            unique = {item.dedup_key: item for item in reversed(items)}
            # Lock rows in one global order (by key): two batches holding the same
            # items in another order would otherwise deadlock on PostgreSQL.
            rows = [_inbox_values(unique[key], counts[key], now, due_at) for key in sorted(unique)]
            found: dict[str, tuple[int, int, str]] = {}
            for start in range(0, len(rows), STORE_CHUNK_ROWS):
                found.update(
                    await self._upsert_rows(session, rows[start : start + STORE_CHUNK_ROWS])
                )
            stored: list[StoredNotification] = []
            seen: set[str] = set()
            for item in items:
                notification_id, deliveries, status = found[item.dedup_key]
                # Inserted now, not redelivered: the row holds exactly this batch's deliveries.
                new = item.dedup_key not in seen and deliveries == counts[item.dedup_key]
                seen.add(item.dedup_key)
                stored.append(StoredNotification(notification_id, item.dedup_key, new, status))
            return stored

        return await self._write(work)

    async def _upsert_rows(
        self, session: AsyncSession, rows: list[dict[str, Any]]
    ) -> dict[str, tuple[int, int, str]]:
        """Insert inbox rows in one statement; a known key only counts another delivery.

        Except for an item stored as ``ignored`` that this delivery finds ours (the
        setting that ignored it has been fixed since): it is taken up again, as if new.
        """
        table = NotificationRow.__table__  # type: ignore[attr-defined]
        stmt = self._insert(table).values(rows)
        new = stmt.excluded
        revive = and_(table.c.status == "ignored", new.status == "received")
        stmt = stmt.on_conflict_do_update(
            index_elements=["dedup_key"],
            set_={
                "deliveries": table.c.deliveries + new.deliveries,
                "status": case((revive, new.status), else_=table.c.status),
                "detail": case((revive, null()), else_=table.c.detail),
                "next_attempt_at": case(
                    (revive, new.next_attempt_at), else_=table.c.next_attempt_at
                ),
            },
        ).returning(table.c.dedup_key, table.c.id, table.c.deliveries, table.c.status)
        result = await session.exec(stmt)
        return {
            str(key): (int(notification_id), int(deliveries), str(status))
            for key, notification_id, deliveries, status in result.all()
        }

    async def apply_notification(self, notification_id: int) -> NotificationRecord | None:
        """Apply one stored notification to its payment in one transaction.

        Returns None when the item is not waiting (already applied, or being
        applied by another worker right now).
        """

        async def work(session: AsyncSession) -> NotificationRecord | None:
            stmt = (
                select(NotificationRow)
                .where(NotificationRow.id == notification_id)
                .where(col(NotificationRow.status).in_(["received", "failed"]))
                .with_for_update(skip_locked=True)
            )
            note = (await session.exec(stmt)).first()
            if note is None:
                return None
            [record] = await self._apply_notes(session, [note])
            return record

        return await self._write(work)

    async def apply_notifications(
        self, notification_ids: Sequence[int]
    ) -> list[NotificationRecord]:
        """Apply many stored notifications in one transaction (one commit for all).

        Items another worker holds, or that are no longer waiting, are left out of
        the result. Payments are locked in reference order, the one global order,
        so two batches cannot deadlock on them. If anything fails the whole batch
        rolls back and the caller applies the items one by one.
        """

        async def work(session: AsyncSession) -> list[NotificationRecord]:
            stmt = (
                select(NotificationRow)
                .where(col(NotificationRow.id).in_(list(notification_ids)))
                .where(col(NotificationRow.status).in_(["received", "failed"]))
                .with_for_update(skip_locked=True)
            )
            notes = sorted((await session.exec(stmt)).all(), key=_lock_order)
            return await self._apply_notes(session, notes)

        if not notification_ids:
            return []
        return await self._write(work)

    async def _lock_payments(
        self, session: AsyncSession, references: list[str]
    ) -> dict[str, PaymentRow]:
        """Lock many payments with one statement, in reference order (the global lock order)."""
        if not references:
            return {}
        stmt = (
            select(PaymentRow)
            .where(col(PaymentRow.reference).in_(references))
            .order_by(col(PaymentRow.reference))
            .with_for_update()
        )
        rows = list((await session.exec(stmt)).all())
        for row in rows:
            session.expunge(row)  # as in _lock_payment: writes go through versioned UPDATEs
        return {row.reference: row for row in rows}

    async def _apply_notes(
        self, session: AsyncSession, notes: Sequence[NotificationRow]
    ) -> list[NotificationRecord]:
        """Apply locked inbox rows, in order, with one statement per table for them all.

        Each item is decided against its payment as the items before it left it
        (the same row object serves them all), exactly as if they were applied one
        by one. Only the writes are grouped: every event, transition and outbox row
        in one INSERT each, and each payment's final values in one versioned UPDATE.
        """
        if not notes:
            return []
        events = [_notification_event(note) for note in notes]
        references = sorted({note.merchant_reference for note in notes})
        payments = await self._lock_payments(session, references)
        writes = _BatchWrites(before={p.id: p.version for p in payments.values()})
        logged = await self._logged_keys(session, payments.values(), events)
        now = utcnow()
        records: list[NotificationRecord] = []
        for note, event in zip(notes, events, strict=True):
            payment = payments.get(note.merchant_reference)
            received_at = _aware(note.received_at)
            if payment is None:
                detail = "no payment with this merchantReference"
                records.append(
                    NotificationRecord(
                        id=note.id or 0, status="orphan", detail=detail, received_at=received_at
                    )
                )
                continue
            applied = self._decide_note(payment, event, logged, writes, now)
            records.append(
                NotificationRecord(
                    id=note.id or 0,
                    status="applied",
                    detail=None,
                    applied=applied,
                    received_at=received_at,
                )
            )
        await writes.flush(session, payments.values())
        await self._mark_notifications(session, records)
        return records

    async def _logged_keys(
        self,
        session: AsyncSession,
        payments: Iterable[PaymentRow],
        events: Sequence[PaymentEvent],
    ) -> set[tuple[int, str]]:
        """(payment, event key) pairs already in the event log, read under the payment locks."""
        ids = [p.id for p in payments]
        if not ids:
            return set()
        stmt = select(PaymentEventRow.payment_id, PaymentEventRow.key).where(
            col(PaymentEventRow.payment_id).in_(ids),
            col(PaymentEventRow.key).in_([event.key for event in events]),
        )
        return {(int(pid), str(key)) for pid, key in (await session.exec(stmt)).all()}

    def _decide_note(
        self,
        row: PaymentRow,
        event: PaymentEvent,
        logged: set[tuple[int, str]],
        writes: _BatchWrites,
        now: datetime,
    ) -> AppliedEvent:
        """Decide one event against ``row`` and queue its writes; ``row`` is updated in memory."""
        assert row.id is not None
        if (row.id, event.key) in logged:
            return AppliedEvent(payment=_payment_record(row), decision=None, duplicate=True)
        logged.add((row.id, event.key))
        decision = decide(_view(row), event, self._machine)
        writes.events.append(_event_values(row.id, event, decision, now))
        changes = _changes(row, event, decision, None, now)
        transition = None
        if decision.moved:
            transition_row, outbox_row, transition = _transition_rows(row, event, decision, now)
            writes.transitions.append(transition_row)
            writes.outbox.append(outbox_row)
        if changes:
            for name, value in changes.items():
                setattr(row, name, value)
            row.version += 1
            writes.columns.update(changes)
        return AppliedEvent(
            payment=_payment_record(row), decision=decision, duplicate=False, transition=transition
        )

    async def _mark_notifications(
        self, session: AsyncSession, records: Sequence[NotificationRecord]
    ) -> None:
        """Record the outcome of applied items: one UPDATE per (status, detail)."""
        groups: dict[tuple[str, str | None], list[int]] = {}
        for record in records:
            groups.setdefault((record.status, record.detail), []).append(record.id)
        now = utcnow()
        for (status, detail), ids in groups.items():
            await session.exec(
                update(NotificationRow)
                .where(col(NotificationRow.id).in_(ids))
                .values(
                    status=status,
                    detail=detail,
                    applied_at=now,
                    attempts=NotificationRow.attempts + 1,
                )
                .execution_options(synchronize_session=False)
            )

    async def record_notification_failure(
        self, notification_id: int, *, error: str, max_attempts: int, backoff_seconds: float = 1.0
    ) -> str:
        """Record that applying failed, in its own transaction so it survives the rollback."""

        async def work(session: AsyncSession) -> str:
            # Locked, so a worker that has just applied it cannot be overwritten.
            note = await session.get(NotificationRow, notification_id, with_for_update=True)
            if note is None or note.status not in ("received", "failed"):
                return note.status if note else "missing"
            attempts = note.attempts + 1
            status = "parked" if attempts >= max_attempts else "failed"
            note.attempts = attempts
            note.status = status
            note.detail = error[:255]
            delay = Backoff(backoff_seconds, MAX_BACKOFF_SECONDS, no_jitter).delay(attempts)
            note.next_attempt_at = utcnow() + timedelta(seconds=delay)
            session.add(note)
            return status

        return await self._write(work)

    async def due_notifications(
        self, *, limit: int = 50, include_leased: bool = False
    ) -> list[int]:
        """Ids of stored items not yet applied whose next attempt is due, oldest first.

        ``include_leased`` also returns never-attempted items still leased to the
        request that stored them (a drain takes everything; failed items keep their
        backoff either way).
        """
        async with self._reading() as session:
            return await _due_notifications(session, limit, include_leased=include_leased)

    async def notifications(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[NotificationRecord]:
        async with self._reading() as session:
            stmt = select(NotificationRow).order_by(col(NotificationRow.id).desc()).limit(limit)
            if status is not None:
                stmt = stmt.where(NotificationRow.status == status)
            rows = (await session.exec(stmt)).all()
        return [
            NotificationRecord(
                id=r.id or 0,
                status=r.status,
                detail=r.detail,
                merchant_reference=r.merchant_reference,
                event_code=r.event_code,
                success=r.success,
                deliveries=r.deliveries,
                attempts=r.attempts,
            )
            for r in rows
        ]

    async def notification_counts(self) -> dict[str, int]:
        async with self._reading() as session:
            stmt = select(NotificationRow.status, func.count()).group_by(NotificationRow.status)
            return {status: int(n) for status, n in (await session.exec(stmt)).all()}

    async def ignored_notifications(
        self, *, ids: Sequence[int] | None = None, limit: int = 1000
    ) -> list[IgnoredNotification]:
        """Ignored items (all, or those of ``ids``) with what deciding again needs."""
        async with self._reading() as session:
            stmt = (
                select(NotificationRow.id, NotificationRow.raw, NotificationRow.live)
                .where(NotificationRow.status == "ignored")
                .order_by(col(NotificationRow.id))
                .limit(limit)
            )
            if ids is not None:
                stmt = stmt.where(col(NotificationRow.id).in_(list(ids)))
            rows = (await session.exec(stmt)).all()
        return [
            IgnoredNotification(id=int(i or 0), merchant_account=_merchant_account(raw), live=live)
            for i, raw, live in rows
        ]

    async def requeue_notifications(
        self, *, status: str, ids: Sequence[int] | None = None
    ) -> list[int]:
        """Make items in ``status`` (all, or those of ``ids``) due now, with fresh attempts.

        Returns the ids requeued; an item no longer in ``status`` is left alone.
        """

        async def work(session: AsyncSession) -> list[int]:
            stmt = select(NotificationRow.id).where(NotificationRow.status == status)
            if ids is not None:
                stmt = stmt.where(col(NotificationRow.id).in_(list(ids)))
            found = sorted(int(i) for i in (await session.exec(stmt.with_for_update())).all() if i)
            if found:
                await session.exec(
                    update(NotificationRow)
                    .where(col(NotificationRow.id).in_(found))
                    .values(status="received", detail=None, attempts=0, next_attempt_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
            return found

        if ids is not None and not ids:
            return []
        return await self._write(work)

    # -- outbox (state changes for the host) ------------------------------------------

    async def claim_outbox(
        self,
        *,
        limit: int = 20,
        lease_seconds: float = LEASE_SECONDS,
        known_due: bool = False,
        exclude: Iterable[int] = (),
    ) -> list[OutboxEvent]:
        """Lease due outbox rows to this worker; another worker skips them until the lease ends.

        ``known_due`` skips the read that checks first (the caller just did it);
        ``exclude`` names rows the caller is still delivering (never claimed twice).
        """
        excluded = list(exclude)
        if not known_due and not await self._outbox_due(utcnow()):
            # A read never waits for SQLite's single writer; an empty write transaction does.
            return []

        async def work(session: AsyncSession) -> list[OutboxEvent]:
            now = utcnow()
            stmt = (
                select(OutboxRow)
                .where(OutboxRow.status == "pending")
                .where(col(OutboxRow.next_attempt_at) <= now)
                .order_by(col(OutboxRow.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            if excluded:
                stmt = stmt.where(col(OutboxRow.id).not_in(excluded))
            rows = (await session.exec(stmt)).all()
            leased = now + timedelta(seconds=lease_seconds)
            for r in rows:
                r.next_attempt_at = leased
                r.attempts += 1
                session.add(r)
            return [_outbox_event(r) for r in rows]

        return await self._write(work)

    async def _outbox_due(self, now: datetime) -> bool:
        async with self._reading() as session:
            return await _outbox_due(session, now)

    async def outbox_delivered_many(self, outbox_ids: Sequence[int]) -> None:
        """Mark many outbox rows delivered in one transaction."""
        if not outbox_ids:
            return

        async def work(session: AsyncSession) -> None:
            await session.exec(
                update(OutboxRow)
                .where(col(OutboxRow.id).in_(list(outbox_ids)))
                .values(status="delivered", delivered_at=utcnow())
                .execution_options(synchronize_session=False)
            )

        await self._write(work)

    async def outbox_failed(
        self, outbox_id: int, *, error: str, retry_in_seconds: float, park: bool
    ) -> None:
        async def work(session: AsyncSession) -> None:
            await session.exec(
                update(OutboxRow)
                .where(col(OutboxRow.id) == outbox_id)
                .values(
                    status="parked" if park else "pending",
                    last_error=error[:255],
                    next_attempt_at=utcnow() + timedelta(seconds=retry_in_seconds),
                )
                .execution_options(synchronize_session=False)
            )

        await self._write(work)

    async def outbox_counts(self) -> dict[str, int]:
        async with self._reading() as session:
            stmt = select(OutboxRow.status, func.count()).group_by(OutboxRow.status)
            return {status: int(n) for status, n in (await session.exec(stmt)).all()}

    async def outbox(self, *, status: str | None = None, limit: int = 100) -> list[OutboxRecord]:
        """Outbox rows, newest first (all, or those in ``status``)."""
        async with self._reading() as session:
            stmt = select(OutboxRow).order_by(col(OutboxRow.id).desc()).limit(limit)
            if status is not None:
                stmt = stmt.where(OutboxRow.status == status)
            return [_outbox_record(r) for r in (await session.exec(stmt)).all()]

    async def requeue_outbox(self, *, ids: Sequence[int] | None = None) -> list[OutboxRecord]:
        """Offer parked changes (all, or those of ``ids``) to the host again, from now.

        Each gets a fresh retry window; its attempt count goes on. Returns the rows
        requeued; a row no longer parked is left alone.
        """

        async def work(session: AsyncSession) -> list[OutboxRecord]:
            stmt = select(OutboxRow).where(OutboxRow.status == "parked").order_by(col(OutboxRow.id))
            if ids is not None:
                stmt = stmt.where(col(OutboxRow.id).in_(list(ids)))
            rows = (await session.exec(stmt.with_for_update())).all()
            now = utcnow()
            for row in rows:
                row.status, row.next_attempt_at, row.requeued_at = "pending", now, now
                session.add(row)
            return [_outbox_record(r) for r in rows]

        if ids is not None and not ids:
            return []
        return await self._write(work)


def _is_retryable_write(exc: BaseException) -> bool:
    """A version conflict, or a lock wait, deadlock or dropped connection, may pass."""
    if isinstance(exc, _VersionConflictError):
        return True
    return (
        isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError) and _is_transient(exc)
    )


def _is_transient(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    markers = ("locked", "busy", "deadlock", "could not serialize", "connection", "timeout")
    return any(m in text for m in markers)


async def _history(session: AsyncSession, payment_id: int) -> list[TransitionRecord]:
    stmt = (
        select(TransitionRow)
        .where(TransitionRow.payment_id == payment_id)
        .order_by(col(TransitionRow.id))
    )
    return [
        TransitionRecord(
            from_state=PaymentState(r.from_state) if r.from_state else None,
            to_state=PaymentState(r.to_state),
            source=r.source,
            event_kind=r.event_kind,
            event_key=r.event_key,
            at=_aware(r.at) or r.at,
        )
        for r in (await session.exec(stmt)).all()
    ]


async def _events(session: AsyncSession, payment_id: int) -> list[EventRecord]:
    stmt = (
        select(PaymentEventRow)
        .where(PaymentEventRow.payment_id == payment_id)
        .order_by(col(PaymentEventRow.id))
    )
    return [
        EventRecord(
            key=r.key,
            source=r.source,
            kind=r.kind,
            success=r.success,
            outcome=r.outcome,
            conflict=r.conflict,
            reason=r.reason,
            psp_reference=r.psp_reference,
            amount_value=r.amount_value,
            amount_currency=r.amount_currency,
            at=_aware(r.at) or r.at,
        )
        for r in (await session.exec(stmt)).all()
    ]


async def _due_notifications(
    session: AsyncSession, limit: int, *, include_leased: bool = False
) -> list[int]:
    due = col(NotificationRow.next_attempt_at) <= utcnow()
    if include_leased:
        due = or_(due, col(NotificationRow.status) == "received")
    stmt = (
        select(NotificationRow.id)
        .where(col(NotificationRow.status).in_(["received", "failed"]))
        .where(due)
        .order_by(col(NotificationRow.id))
        .limit(limit)
    )
    return [int(i) for i in (await session.exec(stmt)).all() if i is not None]


async def _outbox_due(session: AsyncSession, now: datetime) -> bool:
    stmt = (
        select(OutboxRow.id)
        .where(OutboxRow.status == "pending")
        .where(col(OutboxRow.next_attempt_at) <= now)
        .limit(1)
    )
    return (await session.exec(stmt)).first() is not None


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _lock_order(note: NotificationRow) -> tuple[str, int]:
    return (note.merchant_reference, note.id or 0)


def _event_values(
    payment_id: int, event: PaymentEvent, decision: Decision, now: datetime
) -> dict[str, Any]:
    return dict(
        payment_id=payment_id,
        key=event.key,
        source=event.source.value,
        kind=event.kind[:64],
        success=event.success,
        outcome=decision.outcome.value,
        conflict=decision.conflict.value if decision.conflict else None,
        reason=event.reason[:255] if event.reason else None,
        psp_reference=event.psp_reference,
        amount_value=event.amount_value,
        amount_currency=event.amount_currency,
        at=now,
    )


def _inbox_values(
    item: InboxItem, deliveries: int, now: datetime, due_at: datetime
) -> dict[str, Any]:
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


def _transition_rows(
    row: PaymentRow, event: PaymentEvent, decision: Decision, now: datetime
) -> tuple[dict[str, Any], dict[str, Any], TransitionRecord]:
    """The history row, the outbox row and the record of one state change.

    The outbox row commits with the change: the host hears of every change that
    happened, even if this process dies right after the commit.
    """
    assert row.id is not None
    from_state = PaymentState(row.state)
    to_state = decision.new_state
    record = TransitionRecord(from_state, to_state, event.source.value, event.kind, event.key, now)
    return (
        _transition_values(row.id, from_state, to_state, event, now),
        _outbox_values(row, from_state, to_state, event, now),
        record,
    )


def _transition_values(
    payment_id: int,
    from_state: PaymentState,
    to_state: PaymentState,
    event: PaymentEvent,
    now: datetime,
) -> dict[str, Any]:
    return dict(
        payment_id=payment_id,
        from_state=from_state.value,
        to_state=to_state.value,
        source=event.source.value,
        event_kind=event.kind[:64],
        event_key=event.key,
        at=now,
    )


def _outbox_values(
    row: PaymentRow,
    from_state: PaymentState,
    to_state: PaymentState,
    event: PaymentEvent,
    now: datetime,
) -> dict[str, Any]:
    return dict(
        event_id=f"mpp_{row.id}_{to_state.value.lower()}",
        payment_id=row.id,
        reference=row.reference,
        from_state=from_state.value,
        to_state=to_state.value,
        source=event.source.value,
        status="pending",
        attempts=0,
        created_at=now,
        next_attempt_at=now,
    )


def _changes(
    row: PaymentRow,
    event: PaymentEvent,
    decision: Decision,
    answer: ProviderAnswer | None,
    now: datetime,
) -> dict[str, Any]:
    changes: dict[str, Any] = _answer_changes(row, answer) if answer else {}
    if decision.fills_psp_reference:
        changes["psp_reference"] = event.psp_reference
    if decision.outcome is Outcome.CONFLICT:
        changes["conflicts"] = row.conflicts + 1
    if decision.moved:
        changes["state"] = decision.new_state.value
    if decision.takes_summary and decision.precedence is not None:
        rank, weight, key = decision.precedence
        changes.update(
            decisive_rank=rank,
            decisive_weight=weight,
            decisive_key=key,
            decisive_source=event.source.value,
            result_code=summary_result_code(event)[:32],
            refusal_reason=_reason_for(decision, event),
        )
    if changes:
        changes["updated_at"] = now
    return changes


def _reason_for(decision: Decision, event: PaymentEvent) -> str | None:
    failed = decision.implied in (PaymentState.REFUSED, PaymentState.ERROR)
    return event.reason[:255] if failed and event.reason else None


def _answer_changes(row: PaymentRow, answer: ProviderAnswer | None) -> dict[str, Any]:
    """What an Adyen /payments answer adds; stored once, never overwritten."""
    if answer is None:
        return {}
    changes: dict[str, Any] = {}
    if answer.payment_data and not row.payment_data:
        changes["payment_data"] = answer.payment_data
        changes["payment_data_hash"] = _digest(answer.payment_data)
    if answer.wechat_params and not row.wechat_params:
        changes["wechat_params"] = json.dumps(answer.wechat_params, sort_keys=True)
    if answer.action and not row.action:
        changes["action"] = json.dumps(answer.action, sort_keys=True)
    return changes


def _notification_event(note: NotificationRow) -> PaymentEvent:
    return webhook_event(
        note.event_code,
        note.success,
        dedup_key=note.dedup_key,
        psp_reference=note.psp_reference,
        amount_value=note.amount_value,
        amount_currency=note.amount_currency,
        reason=note.reason,
    )


def _outbox_fields(row: OutboxRow) -> dict[str, Any]:
    """What ``OutboxEvent`` and ``OutboxRecord`` both say of a row."""
    return {
        "id": row.id or 0,
        "event_id": row.event_id,
        "reference": row.reference,
        "from_state": PaymentState(row.from_state) if row.from_state else None,
        "to_state": PaymentState(row.to_state),
        "attempts": row.attempts,
        "created_at": _aware(row.created_at) or row.created_at,
        "requeued_at": _aware(row.requeued_at),
    }


def _outbox_event(row: OutboxRow) -> OutboxEvent:
    return OutboxEvent(**_outbox_fields(row), source=row.source)


def _outbox_record(row: OutboxRow) -> OutboxRecord:
    return OutboxRecord(
        **_outbox_fields(row),
        status=row.status,
        last_error=row.last_error,
        next_attempt_at=_aware(row.next_attempt_at) or row.next_attempt_at,
        delivered_at=_aware(row.delivered_at),
    )


def _merchant_account(raw: str) -> str | None:
    try:
        account = json.loads(raw).get("merchantAccountCode")
    except (ValueError, AttributeError):
        return None
    return account if isinstance(account, str) else None
