"""The inbox: every webhook item as received, before and after it is applied.

An item is stored durably before Adyen hears ``[accepted]``. ``take`` stores a batch
and applies the items waiting in it under the same commit (one transaction, one sync
of the log on SQLite); ``store`` only stores them, for the caller to apply after the
answer with ``apply`` (the fallback when ``take`` cannot, and what a crash leaves to
the worker loops). Exactly once is the database's decision: the unique ``dedup_key``,
the item's status read under lock, the event log's unique key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from miniprogram_pay.domain.events import webhook_event
from miniprogram_pay.domain.machine import PaymentMachine
from miniprogram_pay.domain.refunds import REFUND_EVENT_CODES, RefundMachine, refund_webhook_event
from miniprogram_pay.retrying import Backoff, no_jitter
from miniprogram_pay.storage.changes import Change, PaymentChanges, with_outbox
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.inbox_rows import (
    CODE,
    COUNTS,
    DUE,
    DUE_OR_LEASED,
    FAILED,
    IGNORED,
    LISTING,
    LISTING_BY_STATUS,
    LOCK_ONE,
    LOCK_WAITING,
    MARK,
    NOTE_FIELDS,
    RAW,
    REQUEUE,
    WAITING,
    chosen,
    lock_order,
    merchant_account,
    original_reference,
    stored_records,
    upsert_rows,
)
from miniprogram_pay.storage.records import (
    IgnoredNotification,
    InboxItem,
    Intake,
    NotificationRecord,
    StoredNotification,
)
from miniprogram_pay.storage.refunds import (
    RefundChanges,
    lock_owners,
    lock_payments,
)
from miniprogram_pay.storage.sql import Unit
from miniprogram_pay.storage.tables import aware, utcnow

__all__ = ["InboxStore"]

MAX_BACKOFF_SECONDS = 600.0


class InboxStore:
    """The inbox of one database. One per process; safe for concurrent use."""

    def __init__(self, database: Database, machine: PaymentMachine | None = None) -> None:
        self.db = database
        self.machine = machine or PaymentMachine()
        self.refund_machine = RefundMachine()

    # -- storing ---------------------------------------------------------------------

    async def store(
        self, items: Sequence[InboxItem], *, lease_seconds: float = 0.0
    ) -> list[StoredNotification]:
        """Durably store webhook items; a redelivered item is recognised by its unique key.

        ``lease_seconds`` leaves new items to the caller for that long: their first
        attempt is not due for the worker loops (of any process) until it ends, so the
        request that stored them applies them alone. A redelivery keeps its schedule.
        """

        def work(unit: Unit) -> list[StoredNotification]:
            now = utcnow()
            rows = upsert_rows(unit, items, now, now + timedelta(seconds=lease_seconds))
            return stored_records(items, {row[3]: row for row in rows})

        return await self.db.write(work, what="store webhooks")

    async def take(
        self, items: Sequence[InboxItem], *, outbox_lease_seconds: float | None = None
    ) -> Intake:
        """Store webhook items and apply those waiting, in one transaction (one commit).

        If anything in it fails, nothing is stored: the caller stores the items alone
        (``store``) and applies them afterwards, so a failure is recorded against the
        one item that caused it.
        """

        def work(unit: Unit) -> Intake:
            now = utcnow()
            changes = PaymentChanges(unit, self.machine, now, outbox_lease_seconds)
            rows = upsert_rows(unit, items, now, now, then_lock=changes)
            by_key = {row[3]: row for row in rows}
            waiting = sorted((row[2:] for row in rows if row[1] == "received"), key=lock_order)
            refunds = RefundChanges(unit, self.refund_machine, now, outbox_lease_seconds)
            applied = _apply_notes(unit, changes, refunds, waiting, now)
            after = {record.id: record.status for record in applied}
            stored = [
                StoredNotification(s.id, s.dedup_key, s.new, after.get(s.id, s.status))
                for s in stored_records(items, by_key)
            ]
            return Intake(stored=stored, applied=applied)

        return await self.db.write(work, what="take webhooks")

    # -- applying --------------------------------------------------------------------

    async def apply(
        self, notification_ids: Sequence[int], *, outbox_lease_seconds: float | None = None
    ) -> list[NotificationRecord]:
        """Apply many stored items in one transaction (one commit for all).

        Items another worker holds, or that are no longer waiting, are left out of the
        result. If anything fails the whole batch rolls back and the caller applies the
        items one by one.
        """
        if not notification_ids:
            return []
        ids = sorted(set(notification_ids))

        def work(unit: Unit) -> list[NotificationRecord]:
            now = utcnow()
            notes = sorted(unit.run(LOCK_WAITING, {"ids": ids}).all(), key=lock_order)
            changes = PaymentChanges(unit, self.machine, now, outbox_lease_seconds)
            owners = [original_reference(n[RAW]) for n in notes if n[CODE] in REFUND_EVENT_CODES]
            changes.lock(
                [n[2] for n in notes],
                [f"webhook:{n[1]}" for n in notes],
                owners=[psp for psp in owners if psp],
            )
            refunds = RefundChanges(unit, self.refund_machine, now, outbox_lease_seconds)
            return _apply_notes(unit, changes, refunds, notes, now)

        return await self.db.write(work, what="apply webhooks")

    async def apply_one(
        self, notification_id: int, *, outbox_lease_seconds: float | None = None
    ) -> NotificationRecord | None:
        """Apply one stored item; None when it is not waiting (applied, or held elsewhere)."""
        records = await self.apply([notification_id], outbox_lease_seconds=outbox_lease_seconds)
        return records[0] if records else None

    async def record_failure(
        self, notification_id: int, *, error: str, max_attempts: int, backoff_seconds: float = 1.0
    ) -> str:
        """Record that applying failed, in its own transaction so it survives the rollback."""

        def work(unit: Unit) -> str:
            # Locked, so a worker that has just applied it cannot be overwritten.
            found = unit.run(LOCK_ONE, {"id": notification_id}).all()
            if not found or found[0][0] not in WAITING:
                return str(found[0][0]) if found else "missing"
            attempts = int(found[0][1]) + 1
            status = "parked" if attempts >= max_attempts else "failed"
            delay = Backoff(backoff_seconds, MAX_BACKOFF_SECONDS, no_jitter).delay(attempts)
            unit.run(
                FAILED,
                {
                    "id": notification_id, "status": status, "detail": error[:255],
                    "attempts": attempts, "due": utcnow() + timedelta(seconds=delay),
                },
            )  # fmt: skip
            return status

        return await self.db.write(work, what="record webhook failure")

    # -- reading and requeueing -----------------------------------------------------

    async def due(self, *, limit: int = 50, include_leased: bool = False) -> list[int]:
        """Ids of stored items not yet applied whose next attempt is due, oldest first.

        ``include_leased`` also returns never-attempted items still leased to the
        request that stored them (a drain takes everything; failed items keep their
        backoff either way).
        """
        sql = DUE_OR_LEASED if include_leased else DUE
        rows = await self.db.read(
            lambda unit: unit.run(sql, {"now": utcnow(), "limit": limit}).all()
        )
        return [int(row[0]) for row in rows]

    async def listing(
        self, *, status: str | None = None, limit: int = 100
    ) -> list[NotificationRecord]:
        """Items, newest first (all, or those in ``status``)."""
        params: dict[str, Any]
        sql, params = LISTING, {"limit": limit}
        if status is not None:
            sql, params = LISTING_BY_STATUS, {"limit": limit, "status": status}
        rows = await self.db.read(lambda unit: unit.run(sql, params).all())
        return [
            NotificationRecord(
                id=int(i), status=s, detail=d, merchant_reference=ref, event_code=code,
                success=bool(ok), deliveries=int(deliveries), attempts=int(attempts),
            )
            for i, s, d, ref, code, ok, deliveries, attempts in rows
        ]  # fmt: skip

    async def counts(self) -> dict[str, int]:
        rows = await self.db.read(lambda unit: unit.run(COUNTS).all())
        return {str(status): int(n) for status, n in rows}

    async def ignored(
        self, *, ids: Sequence[int] | None = None, limit: int = 1000
    ) -> list[IgnoredNotification]:
        """Ignored items (all, or those of ``ids``) with what deciding again needs."""
        params = {**chosen(ids), "limit": limit}
        rows = await self.db.read(lambda unit: unit.run(IGNORED, params).all())
        return [
            IgnoredNotification(id=int(i), merchant_account=merchant_account(raw), live=live)
            for i, raw, live in rows
        ]

    async def requeue(self, *, status: str, ids: Sequence[int] | None = None) -> list[int]:
        """Make items in ``status`` (all, or those of ``ids``) due now, with fresh attempts.

        Returns the ids requeued; an item no longer in ``status`` is left alone.
        """
        if ids is not None and not ids:
            return []
        params = {**chosen(ids), "requeued_from": status}
        rows = await self.db.write(
            lambda unit: unit.run(REQUEUE, {**params, "now": utcnow()}).all(),
            what="requeue webhooks",
        )
        return sorted(int(row[0]) for row in rows)


# -- inside a unit of work ---------------------------------------------------------------


def _apply_notes(
    unit: Unit,
    changes: PaymentChanges,
    refunds: RefundChanges,
    notes: Sequence[Sequence[Any]],
    now: datetime,
) -> list[NotificationRecord]:
    """Apply locked inbox rows (``NOTE_FIELDS``), in order; mark each with its outcome.

    A refund's item (REFUND & co.) goes to its payment's refunds, after the payment
    items are written: its payment is named by ``originalReference`` (a refund's
    ``merchantReference`` is the refund's own reference), and locked then.
    """
    if not notes:
        return []
    all_fields = [dict(zip(NOTE_FIELDS, note, strict=True)) for note in notes]
    applied: dict[int, tuple[Any, datetime]] = {}
    for fields in all_fields:
        if fields["event_code"] in REFUND_EVENT_CODES:
            continue
        event = webhook_event(
            fields["event_code"], bool(fields["success"]), dedup_key=fields["dedup_key"],
            psp_reference=fields["psp_reference"], amount_value=fields["amount_value"],
            amount_currency=fields["amount_currency"], reason=fields["reason"],
        )  # fmt: skip
        change = changes.apply(Change(fields["merchant_reference"], event))
        applied[int(fields["id"])] = (change, aware(fields["received_at"]))
    written = changes.flush()
    # received_at goes back with each record: the acceptance-to-apply lag is measured from it.
    records = {
        i: NotificationRecord(id=i, status="applied", detail=None, applied=a, received_at=at)
        if a is not None
        else NotificationRecord(
            id=i, status="orphan", detail="no payment with this merchantReference", received_at=at
        )
        for i, (a, at) in applied.items()
    }
    records.update(
        _apply_refund_notes(unit, refunds, [f for f in all_fields if int(f["id"]) not in records])
    )
    ordered = [records[int(fields["id"])] for fields in all_fields]
    marks = [{"b_id": r.id, "status": r.status, "detail": r.detail, "at": now} for r in ordered]
    unit.run_many(MARK, marks)
    unit.commit()  # the unit's last statement: the outbox ids come back with the commit
    events = written()
    return [
        replace(r, applied=with_outbox(r.applied, events)) if r.applied is not None else r
        for r in ordered
    ]


def _apply_refund_notes(
    unit: Unit, refunds: RefundChanges, notes: Sequence[dict[str, Any]]
) -> dict[int, NotificationRecord]:
    if not notes:
        return {}
    originals = {int(n["id"]): original_reference(n["raw"]) for n in notes}
    owners = lock_owners(unit, [psp for psp in originals.values() if psp])
    # A refund made in the Customer Area may name its payment by merchantReference only.
    unnamed = [n["merchant_reference"] for n in notes if originals[int(n["id"])] not in owners]
    by_reference = lock_payments(unit, unnamed)
    found: dict[int, Any] = {}
    for note in notes:
        note_id = int(note["id"])
        payment = owners.get(originals[note_id] or "") or by_reference.get(
            note["merchant_reference"]
        )
        if payment is None:
            found[note_id] = None
            continue
        event = refund_webhook_event(
            note["event_code"], bool(note["success"]), dedup_key=note["dedup_key"],
            psp_reference=note["psp_reference"], amount_value=note["amount_value"],
            amount_currency=note["amount_currency"], reason=note["reason"],
        )  # fmt: skip
        found[note_id] = refunds.webhook(
            payment, event, merchant_reference=note["merchant_reference"] or None
        )
    written = refunds.flush()
    received = {int(n["id"]): aware(n["received_at"]) for n in notes}
    return {
        i: NotificationRecord(
            id=i,
            status="applied",
            detail=None,
            refund=refunds.owed(a, written),
            received_at=received[i],
        )
        if a is not None
        else NotificationRecord(
            id=i,
            status="orphan",
            detail="no payment with this originalReference or merchantReference",
            received_at=received[i],
        )
        for i, a in found.items()
    }
