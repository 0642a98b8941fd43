"""Refunds: each refund of a payment, its event log, and the changes owed to the host.

A refund's rows are ``mpp_refund`` and its event log ``mpp_refund_event`` (which also
holds its history: a row that moved the refund names both states). A refund is only
ever changed under its payment's row lock (``SELECT ... FOR UPDATE`` on PostgreSQL,
SQLite's single ``BEGIN IMMEDIATE`` writer), in one unit of work: one hop to a
database thread (``RefundStore``), or inside the inbox's unit for a webhook
(``RefundChanges``). Under that lock the payment's refunds are read,
the pure domain decides (``admit_refund`` for a new one, ``decide_refund`` for a fact
about one), and the rows are written in the same transaction:

* a new refund: its row (with the Idempotency-Key Adyen will be sent), its
  ``Requested`` event and its outbox row, committed before Adyen is called;
* a fact (Adyen's answer, a webhook): its event row, once per key (the unique
  ``(refund_id, key)`` decides), the refund's new values and, when it moved, an
  outbox row saying so.

Two workers asking for refunds of one payment at once take turns on the lock: the
second sees the first's refund counted, so together they never exceed the payment.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select

from miniprogram_pay.domain.ledger import RefundablePayment, admit_refund
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.orders import OrderView
from miniprogram_pay.domain.reconcile import Outcome
from miniprogram_pay.domain.refunds import (
    RefundDecision,
    RefundEvent,
    RefundMachine,
    RefundSource,
    RefundState,
    decide_refund,
    refund_requested_event,
)
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import ConflictError
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.outbox import write_changes
from miniprogram_pay.storage.payment_rows import LOCK, StoredPayment, stored_payment
from miniprogram_pay.storage.records import AppliedRefund, OutboxEvent, Refund
from miniprogram_pay.storage.refund_rows import (
    CHANGEABLE,
    DELETE_EVENTS,
    DELETE_REFUND,
    FACT_FIELDS,
    FACTS_OF,
    INSERT_COLUMNS,
    INSERT_EVENT,
    INSERT_REFUND,
    OWNERS,
    REFUND_COLUMNS,
    UPDATE_REFUND,
    P,
    R,
    RefundAsk,
    StoredRefund,
    authorised_at,
    event_values,
    find_refund,
    lock_payment,
    order_of,
    outbox_values,
    read_refunds,
    refund_changes,
    refund_record,
    refund_reference,
    refund_rows,
    refund_view,
)
from miniprogram_pay.storage.sql import Sql, Unit
from miniprogram_pay.storage.tables import (
    utcnow,
)

__all__ = [
    "RefundAsk",
    "RefundChanges",
    "RefundStore",
    "lock_owners",
    "lock_payments",
]


# -- writes (under the payment's lock) ------------------------------------------------


def _check_same_ask(earlier: StoredRefund, ask: RefundAsk) -> None:
    same_amount = ask.value is None or ask.value == earlier.amount_value
    same_currency = ask.currency is None or ask.currency == earlier.currency
    same_reason = ask.reason is None or ask.reason.value == earlier.reason
    if not (same_amount and same_currency and same_reason):
        raise ConflictError(
            "this idempotency key was used for another refund of this payment",
            code="idempotency_key_reused",
        )


@dataclass
class RefundChanges:
    """The refund facts one unit of work applies, under their payments' locks.

    Rows are written as each fact is decided (a refund's id is needed before its
    events); the outbox rows of the moves are written together by ``flush``.
    """

    unit: Unit
    machine: RefundMachine
    now: datetime
    # The outbox rows' lease: this process delivers them itself (None: any process may).
    lease_seconds: float | None = None
    _outbox: list[dict[str, Any]] = field(default_factory=list)
    _event_ids: dict[tuple[int, RefundState], str] = field(default_factory=dict)
    _orders: dict[int, OrderView] = field(default_factory=dict)  # by payment id

    def begin(
        self, payment: StoredPayment, ask: RefundAsk, *, window: timedelta, limit: int
    ) -> tuple[Refund, bool]:
        """Admit and store a new refund of the locked ``payment``; ``(refund, created)``.

        A caller key already used for a refund of this payment returns that refund
        (``created`` False), or refuses a request that differs from it.
        """
        rows = refund_rows(self.unit, payment.id)
        if ask.caller_key is not None:
            earlier = next((r for r in rows if r.caller_key == ask.caller_key), None)
            if earlier is not None:
                _check_same_ask(earlier, ask)
                return refund_record(earlier, payment.reference), False
        amount = admit_refund(
            RefundablePayment(
                state=PaymentState(payment.state),
                amount=Amount(payment.amount_value, payment.currency),
                psp_reference=payment.psp_reference,
                authorised_at=authorised_at(self.unit, payment.id),
            ),
            [refund_view(r) for r in rows],
            ask.value,
            ask.currency,
            now=self.now,
            window=window,
            limit=limit,
        )
        number = max((r.number for r in rows), default=0) + 1
        row = self._insert(
            payment,
            number=number,
            reference=refund_reference(payment.reference, number),
            amount_value=amount.value,
            state=RefundState.REQUESTED.value,
            reason=ask.reason.value if ask.reason else None,
            idempotency_key=str(uuid.uuid4()),
            caller_key=ask.caller_key,
        )
        event = refund_requested_event(amount, ask.reason)
        decision = RefundDecision(Outcome.TRANSITION, RefundState.REQUESTED, amount.value)
        moved = (None, RefundState.REQUESTED)
        self.unit.run(INSERT_EVENT, event_values(row.id, event, decision, moved, self.now))
        self._move(payment, row, moved, RefundSource.REQUEST)
        return refund_record(row, payment.reference), True

    def _insert(self, payment: StoredPayment, **values: Any) -> StoredRefund:
        row = StoredRefund(
            id=0, payment_id=payment.id, number=0, reference=None, psp_reference=None,
            amount_value=None, currency=payment.currency, state=None, reason=None,
            refusal_reason=None, external=False, disputed=False, decisive_rank=None,
            decisive_weight=None, decisive_key=None, idempotency_key=None, caller_key=None,
            conflicts=0, created_at=self.now, updated_at=self.now,
        )  # fmt: skip
        for name, value in values.items():
            setattr(row, name, value)
        params = {name: getattr(row, name) for name in INSERT_COLUMNS}
        row.id = int(self.unit.run(INSERT_REFUND, params).all()[0][0])
        return row

    def _move(
        self,
        payment: StoredPayment,
        row: StoredRefund,
        moved: tuple[RefundState | None, RefundState],
        source: RefundSource,
    ) -> None:
        order = self._orders.get(payment.id)
        if order is None:
            order = self._orders[payment.id] = order_of(self.unit, payment)
        values = outbox_values(payment, row, moved, source, self.now, self.lease_seconds, order)
        self._outbox.append(values)
        self._event_ids[(row.id, moved[1])] = values["event_id"]

    def apply(self, payment: StoredPayment, row: StoredRefund, event: RefundEvent) -> AppliedRefund:
        """Apply one fact to the refund ``row`` of the locked ``payment``; a repeat: nothing."""
        decision = decide_refund(refund_view(row), event, self.machine)
        previous = RefundState(row.state) if row.state else None
        moved = (previous, decision.new_state) if decision.moved and decision.new_state else None
        values = event_values(row.id, event, decision, moved, self.now)
        if not self.unit.run(INSERT_EVENT, values).all():
            return AppliedRefund(refund_record(row, payment.reference), duplicate=True)
        changes = refund_changes(row, event, decision, self.now)
        if changes:
            for name, value in changes.items():
                setattr(row, name, value)
            params = {"b_id": row.id, **{name: getattr(row, name) for name in CHANGEABLE}}
            self.unit.run(UPDATE_REFUND, params)
        if moved is not None:
            self._move(payment, row, moved, event.source)
        return AppliedRefund(refund_record(row, payment.reference), False, decision, moved)

    def answer(self, payment: StoredPayment, refund_id: int, event: RefundEvent) -> AppliedRefund:
        """Apply Adyen's ``/refunds`` answer (or refusal) to our refund ``refund_id``.

        Should a webhook have been taken for an external refund before the answer named
        it ours (its pspReference), the two are one refund: the external one's facts
        are folded into ours and its row removed.
        """
        rows = refund_rows(self.unit, payment.id)
        row = next(r for r in rows if r.id == refund_id)
        psp = event.psp_reference
        twin = next((r for r in rows if r.external and psp and r.psp_reference == psp), None)
        facts = self._take_over(twin) if twin is not None else []
        applied = self.apply(payment, row, event)
        for fact in facts:
            applied = self.apply(payment, row, fact)
        return applied

    def _take_over(self, twin: StoredRefund) -> list[RefundEvent]:
        """Remove an external refund that is one of ours; its facts, to apply to ours."""
        facts = [
            RefundEvent(
                **{**dict(zip(FACT_FIELDS, values, strict=True)), "source": RefundSource(values[0])}
            )
            for values in self.unit.run(FACTS_OF, {"id": twin.id}).all()
        ]
        self.unit.run(DELETE_EVENTS, {"id": twin.id})
        self.unit.run(DELETE_REFUND, {"id": twin.id})
        return facts

    def webhook(
        self, payment: StoredPayment, event: RefundEvent, *, merchant_reference: str | None
    ) -> AppliedRefund:
        """Apply a refund webhook to the locked ``payment``'s refund it names.

        A refund we do not know (made in the Customer Area) is recorded as an external
        refund first, and counts against the payment from then on.
        """
        assert event.psp_reference is not None
        rows = refund_rows(self.unit, payment.id)
        row = find_refund(
            rows, psp_reference=event.psp_reference, merchant_reference=merchant_reference
        )
        if row is None:
            row = self._insert(
                payment,
                number=max((r.number for r in rows), default=0) + 1,
                reference=merchant_reference,
                psp_reference=event.psp_reference,
                external=True,
            )
        return self.apply(payment, row, event)

    def flush(self) -> dict[str, OutboxEvent]:
        """Write the outbox rows of the moves; the events written, by ``event_id``."""
        written = write_changes(self.unit, self._outbox)()
        self._outbox = []
        return written

    def owed(self, applied: AppliedRefund, written: dict[str, OutboxEvent]) -> AppliedRefund:
        """``applied`` with the outbox event of the move it made, if any."""
        if applied.moved is None:
            return applied
        event_id = self._event_ids.get((applied.refund.id, applied.moved[1]))
        return replace(applied, outbox=written.get(event_id or ""))


def lock_owners(unit: Unit, psp_references: Sequence[str]) -> dict[str, StoredPayment]:
    """The payments of ``psp_references`` (a refund webhook's originalReference), locked."""
    if not psp_references:
        return {}
    found = unit.run(OWNERS, {"psps": sorted(set(psp_references))}).all()
    owners: dict[str, str] = {str(psp): str(ref) for psp, ref in found}
    if not owners:
        return {}
    locked = unit.run(LOCK, {"references": sorted(set(owners.values()))}).all()
    by_reference = {p.reference: p for p in map(stored_payment, locked)}
    return {psp: by_reference[ref] for psp, ref in owners.items() if ref in by_reference}


def lock_payments(unit: Unit, references: Sequence[str]) -> dict[str, StoredPayment]:
    """Payments by reference, locked (for a refund webhook naming no known pspReference)."""
    if not references:
        return {}
    locked = unit.run(LOCK, {"references": sorted(set(references))}).all()
    return {p.reference: p for p in map(stored_payment, locked)}


class RefundStore:
    """Refunds of one database. One per process; safe for concurrent use."""

    def __init__(self, database: Database, machine: RefundMachine | None = None) -> None:
        self.db = database
        self.machine = machine or RefundMachine()

    async def begin(
        self,
        reference: str,
        ask: RefundAsk,
        *,
        window: timedelta,
        limit: int,
        lease_seconds: float | None = None,
    ) -> tuple[Refund, bool, list[OutboxEvent]]:
        """Admit and store a refund of ``reference`` under the payment's lock, then commit.

        Returns the refund, whether it is new, and the change owed to the host. Adyen
        is called only after this returns: the refund and its Idempotency-Key are
        durable before the money can move.
        """

        def work(unit: Unit) -> tuple[Refund, bool, list[OutboxEvent]]:
            changes = RefundChanges(unit, self.machine, utcnow(), lease_seconds)
            refund, created = changes.begin(
                lock_payment(unit, reference), ask, window=window, limit=limit
            )
            return refund, created, list(changes.flush().values())

        return await self.db.write(work, what="begin refund")

    async def answer(
        self,
        reference: str,
        refund_id: int,
        event: RefundEvent,
        *,
        lease_seconds: float | None = None,
    ) -> AppliedRefund:
        """Apply Adyen's answer about our refund ``refund_id`` (under the payment's lock)."""

        def work(unit: Unit) -> AppliedRefund:
            changes = RefundChanges(unit, self.machine, utcnow(), lease_seconds)
            applied = changes.answer(lock_payment(unit, reference), refund_id, event)
            return changes.owed(applied, changes.flush())

        return await self.db.write(work, what="record refund answer")

    async def unanswered(self, *, older_than_seconds: float, limit: int = 100) -> list[Refund]:
        """Our refunds still ``Requested`` (Adyen's answer never recorded) for longer than
        ``older_than_seconds``, oldest first: a crash or an outage between storing one
        and hearing Adyen leaves them so, and they are asked again with their own key."""
        cutoff = utcnow() - timedelta(seconds=older_than_seconds)

        def work(unit: Unit) -> list[Refund]:
            found = unit.run(UNANSWERED, {"cutoff": cutoff, "limit": limit}).all()
            return [refund_record(StoredRefund(*row[1:]), str(row[0])) for row in found]

        return await self.db.read(work)

    async def of(self, reference: str) -> list[Refund]:
        """The refunds of the payment ``reference``, oldest first, with their histories."""

        def work(unit: Unit) -> list[Refund]:
            found = unit.run(PAYMENT_ID, {"reference": reference}).all()
            return read_refunds(unit, int(found[0][0]), reference) if found else []

        return await self.db.read(work)


PAYMENT_ID = Sql(select(P.c.id).where(P.c.reference == bindparam("reference")))
UNANSWERED = Sql(
    select(P.c.reference, *REFUND_COLUMNS)
    .select_from(R.join(P, P.c.id == R.c.payment_id))
    .where(
        R.c.state == RefundState.REQUESTED.value,
        R.c.external.is_(False),
        R.c.idempotency_key.is_not(None),
        R.c.updated_at < bindparam("cutoff"),
    )
    .order_by(R.c.updated_at, R.c.id)
    .limit(bindparam("limit"))
)
