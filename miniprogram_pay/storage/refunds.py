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

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from miniprogram_pay.domain.ledger import RefundablePayment, admit_refund
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.reconcile import Outcome
from miniprogram_pay.domain.refunds import (
    RefundChange,
    RefundDecision,
    RefundEvent,
    RefundMachine,
    RefundReason,
    RefundSource,
    RefundState,
    RefundView,
    apply_refund_decision,
    decide_refund,
    refund_requested_event,
)
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import ConflictError, NotFoundError
from miniprogram_pay.storage.changes import LOCK, StoredPayment, stored_payment
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.outbox import write_changes
from miniprogram_pay.storage.records import AppliedRefund, OutboxEvent, Refund, RefundHistory
from miniprogram_pay.storage.sql import Sql, Unit, any_of, bind_all
from miniprogram_pay.storage.tables import (
    PaymentRow,
    RefundEventRow,
    RefundRow,
    TransitionRow,
    aware,
    table,
    utcnow,
)

__all__ = [
    "RefundAsk",
    "RefundChanges",
    "RefundStore",
    "StoredRefund",
    "find_refund",
    "read_refunds",
    "refund_reference",
]

P = table(PaymentRow)
R = table(RefundRow)
RE = table(RefundEventRow)
T = table(TransitionRow)

# Our refund's reference at Adyen: the payment's, then "-refund-<n>"; at most 80 chars.
MAX_REFERENCE_HEAD = 64
REFUSAL_STATES = (RefundState.REFUSED, RefundState.FAILED, RefundState.REVERSED)


@dataclass(frozen=True, slots=True)
class RefundAsk:
    """A refund asked for: ``value`` None is everything refundable."""

    value: int | None
    currency: str | None
    reason: RefundReason | None
    caller_key: str | None


def refund_reference(payment_reference: str, number: int) -> str:
    """Our ``number``-th refund's own reference (what its webhooks carry back)."""
    return f"{payment_reference[:MAX_REFERENCE_HEAD]}-refund-{number}"


@dataclass(slots=True)
class StoredRefund:
    """A refund row as read, changed in memory while a unit of work holds its payment's lock."""

    id: int
    payment_id: int
    number: int
    reference: str | None
    psp_reference: str | None
    amount_value: int | None
    currency: str
    state: str | None
    reason: str | None
    refusal_reason: str | None
    external: bool
    disputed: bool
    decisive_rank: int | None
    decisive_weight: int | None
    decisive_key: str | None
    idempotency_key: str | None
    caller_key: str | None
    conflicts: int
    created_at: datetime
    updated_at: datetime


REFUND_FIELDS = tuple(f.name for f in fields(StoredRefund))
REFUND_COLUMNS = [R.c[name] for name in REFUND_FIELDS]
INSERT_COLUMNS = REFUND_FIELDS[1:]
CHANGEABLE = tuple(
    n for n in REFUND_FIELDS if n not in ("id", "payment_id", "number", "created_at")
)
EVENT_COLUMNS = (
    "refund_id", "key", "source", "kind", "success", "outcome", "conflict", "from_state",
    "to_state", "reason", "psp_reference", "amount_value", "amount_currency", "at",
)  # fmt: skip
HISTORY_FIELDS = (
    "refund_id", "source", "kind", "success", "outcome", "conflict", "from_state", "to_state",
    "reason", "at",
)  # fmt: skip
FACT_FIELDS = ("source", "kind", "key", "success", "amount_value", "amount_currency",
               "psp_reference", "reason")  # fmt: skip


def _upsert(dialect: str, target: Any) -> Any:
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(target)


REFUNDS_OF = Sql(select(*REFUND_COLUMNS).where(R.c.payment_id == bindparam("id")).order_by(R.c.id))
HISTORIES = Sql(
    lambda dialect: (
        select(*(RE.c[n] for n in HISTORY_FIELDS))
        .where(any_of(RE.c.refund_id, "ids", dialect))
        .order_by(RE.c.id)
    )
)
FACTS_OF = Sql(
    select(*(RE.c[n] for n in FACT_FIELDS))
    .where(RE.c.refund_id == bindparam("id"))
    .order_by(RE.c.id)
)
AUTHORISED_AT = Sql(
    select(T.c.at).where(
        T.c.payment_id == bindparam("id"), T.c.to_state == PaymentState.AUTHORISED.value
    )
)
INSERT_REFUND = Sql(insert(R).values(bind_all(R, INSERT_COLUMNS)).returning(R.c.id))
UPDATE_REFUND = Sql(update(R).where(R.c.id == bindparam("b_id")).values(bind_all(R, CHANGEABLE)))
INSERT_EVENT = Sql(
    lambda dialect: (
        _upsert(dialect, RE)
        .values(bind_all(RE, EVENT_COLUMNS))
        .on_conflict_do_nothing(index_elements=["refund_id", "key"])
        .returning(RE.c.id)
    )
)
DELETE_EVENTS = Sql(delete(RE).where(RE.c.refund_id == bindparam("id")))
DELETE_REFUND = Sql(delete(R).where(R.c.id == bindparam("id")))
OWNERS = Sql(
    lambda dialect: select(P.c.psp_reference, P.c.reference).where(
        any_of(P.c.psp_reference, "psps", dialect)
    )
)


# -- pure: a stored refund as the domain sees it, and what a fact does to it ----------


def refund_view(row: StoredRefund) -> RefundView:
    decisive = None
    if row.decisive_rank is not None and row.decisive_weight is not None and row.decisive_key:
        decisive = (row.decisive_rank, row.decisive_weight, row.decisive_key)
    return RefundView(
        state=RefundState(row.state) if row.state else None,
        currency=row.currency,
        value=row.amount_value,
        external=row.external,
        psp_reference=row.psp_reference,
        disputed=row.disputed,
        decisive=decisive,
    )


def _changes(
    row: StoredRefund, event: RefundEvent, decision: RefundDecision, now: datetime
) -> dict[str, Any]:
    """The refund's columns the decision changes (nothing when it changes nothing)."""
    before = refund_view(row)
    after = apply_refund_decision(before, event, decision)
    changes: dict[str, Any] = {}
    if after.state is not before.state and after.state is not None:
        changes["state"] = after.state.value
    if after.value != before.value:
        changes["amount_value"] = after.value
    if after.psp_reference != before.psp_reference:
        changes["psp_reference"] = after.psp_reference
    if after.disputed and not before.disputed:
        changes["disputed"] = True
    if decision.outcome is Outcome.CONFLICT:
        changes["conflicts"] = row.conflicts + 1
    if decision.takes_summary and decision.precedence is not None:
        rank, weight, key = decision.precedence
        changes.update(decisive_rank=rank, decisive_weight=weight, decisive_key=key)
        refused = decision.implied in REFUSAL_STATES
        changes["refusal_reason"] = event.reason[:255] if refused and event.reason else None
    if changes:
        changes["updated_at"] = now
    return changes


def _event_values(
    refund_id: int,
    event: RefundEvent,
    decision: RefundDecision,
    moved: tuple[RefundState | None, RefundState] | None,
    now: datetime,
) -> dict[str, Any]:
    return dict(
        refund_id=refund_id,
        key=event.key,
        source=event.source.value,
        kind=event.kind[:64],
        success=event.success,
        outcome=decision.outcome.value,
        conflict=decision.conflict.value if decision.conflict else None,
        from_state=moved[0].value if moved and moved[0] else None,
        to_state=moved[1].value if moved else None,
        reason=event.reason[:255] if event.reason else None,
        psp_reference=event.psp_reference,
        amount_value=event.amount_value,
        amount_currency=event.amount_currency,
        at=now,
    )


def _outbox_values(
    payment: StoredPayment,
    row: StoredRefund,
    moved: tuple[RefundState | None, RefundState],
    source: RefundSource,
    now: datetime,
    lease_seconds: float | None,
) -> dict[str, Any]:
    """The change owed to the host; a refund enters each state at most once (stable id)."""
    previous, state = moved
    change = RefundChange(
        reference=row.reference,
        psp_reference=row.psp_reference,
        amount=Amount(row.amount_value, row.currency) if row.amount_value else None,
        previous=previous,
        state=state,
        external=row.external,
    )
    return dict(
        event_id=f"mpp_{payment.id}_refund_{row.number}_{state.value.lower()}",
        payment_id=payment.id,
        reference=payment.reference,
        from_state=payment.state,
        to_state=payment.state,
        source=source.value,
        status="pending",
        # Leased: this process delivers it itself, at once (attempt 1).
        attempts=0 if lease_seconds is None else 1,
        created_at=now,
        next_attempt_at=now + timedelta(seconds=lease_seconds or 0.0),
        kind="refund",
        refund=json.dumps(change.to_json(), sort_keys=True),
    )


def find_refund(
    rows: Iterable[StoredRefund], *, psp_reference: str, merchant_reference: str | None
) -> StoredRefund | None:
    """The stored refund a webhook speaks of: by its pspReference, else ours by reference.

    A webhook can arrive before Adyen's ``/refunds`` answer gave our refund its
    pspReference: our own reference, which it carries back, names the refund then.
    """
    rows = list(rows)
    by_psp = next((r for r in rows if r.psp_reference == psp_reference), None)
    if by_psp is not None:
        return by_psp
    return next(
        (
            r
            for r in rows
            if not r.external and r.psp_reference is None and r.reference == merchant_reference
        ),
        None,
    )


def _record(
    row: StoredRefund, payment_reference: str, history: Sequence[RefundHistory] = ()
) -> Refund:
    assert row.id is not None
    return Refund(
        id=row.id,
        payment_reference=payment_reference,
        number=row.number,
        reference=row.reference,
        psp_reference=row.psp_reference,
        amount=Amount(row.amount_value, row.currency) if row.amount_value else None,
        state=RefundState(row.state) if row.state else None,
        reason=row.reason,
        refusal_reason=row.refusal_reason,
        external=row.external,
        disputed=row.disputed,
        conflicts=row.conflicts,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        idempotency_key=row.idempotency_key,
        caller_key=row.caller_key,
        history=tuple(history),
    )


def _history(values: Sequence[Any]) -> RefundHistory:
    row = dict(zip(HISTORY_FIELDS, values, strict=True))
    return RefundHistory(
        source=row["source"],
        kind=row["kind"],
        success=row["success"],
        outcome=row["outcome"],
        conflict=row["conflict"],
        from_state=RefundState(row["from_state"]) if row["from_state"] else None,
        to_state=RefundState(row["to_state"]) if row["to_state"] else None,
        reason=row["reason"],
        at=aware(row["at"]),
    )


# -- reads (inside any unit of work) --------------------------------------------------


def _rows(unit: Unit, payment_id: int) -> list[StoredRefund]:
    return [StoredRefund(*row) for row in unit.run(REFUNDS_OF, {"id": payment_id}).all()]


def read_refunds(unit: Unit, payment_id: int, payment_reference: str) -> list[Refund]:
    """A payment's refunds, oldest first, each with its history."""
    rows = _rows(unit, payment_id)
    if not rows:
        return []
    histories: dict[int, list[RefundHistory]] = {}
    for values in unit.run(HISTORIES, {"ids": [r.id for r in rows]}).all():
        histories.setdefault(int(values[0]), []).append(_history(values))
    return [_record(r, payment_reference, histories.get(r.id, ())) for r in rows]


def _lock(unit: Unit, reference: str) -> StoredPayment:
    found = unit.run(LOCK, {"references": [reference]}).all()
    if not found:
        raise NotFoundError("no payment with this reference", code="payment_not_found")
    return stored_payment(found[0])


def _authorised_at(unit: Unit, payment_id: int) -> datetime | None:
    found = unit.run(AUTHORISED_AT, {"id": payment_id}).all()
    return aware(found[0][0]) if found else None


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

    def begin(
        self, payment: StoredPayment, ask: RefundAsk, *, window: timedelta, limit: int
    ) -> tuple[Refund, bool]:
        """Admit and store a new refund of the locked ``payment``; ``(refund, created)``.

        A caller key already used for a refund of this payment returns that refund
        (``created`` False), or refuses a request that differs from it.
        """
        rows = _rows(self.unit, payment.id)
        if ask.caller_key is not None:
            earlier = next((r for r in rows if r.caller_key == ask.caller_key), None)
            if earlier is not None:
                _check_same_ask(earlier, ask)
                return _record(earlier, payment.reference), False
        amount = admit_refund(
            RefundablePayment(
                state=PaymentState(payment.state),
                amount=Amount(payment.amount_value, payment.currency),
                psp_reference=payment.psp_reference,
                authorised_at=_authorised_at(self.unit, payment.id),
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
        self.unit.run(INSERT_EVENT, _event_values(row.id, event, decision, moved, self.now))
        self._move(payment, row, moved, RefundSource.REQUEST)
        return _record(row, payment.reference), True

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
        values = _outbox_values(payment, row, moved, source, self.now, self.lease_seconds)
        self._outbox.append(values)
        self._event_ids[(row.id, moved[1])] = values["event_id"]

    def apply(self, payment: StoredPayment, row: StoredRefund, event: RefundEvent) -> AppliedRefund:
        """Apply one fact to the refund ``row`` of the locked ``payment``; a repeat: nothing."""
        decision = decide_refund(refund_view(row), event, self.machine)
        previous = RefundState(row.state) if row.state else None
        moved = (previous, decision.new_state) if decision.moved and decision.new_state else None
        values = _event_values(row.id, event, decision, moved, self.now)
        if not self.unit.run(INSERT_EVENT, values).all():
            return AppliedRefund(_record(row, payment.reference), duplicate=True)
        changes = _changes(row, event, decision, self.now)
        if changes:
            for name, value in changes.items():
                setattr(row, name, value)
            params = {"b_id": row.id, **{name: getattr(row, name) for name in CHANGEABLE}}
            self.unit.run(UPDATE_REFUND, params)
        if moved is not None:
            self._move(payment, row, moved, event.source)
        return AppliedRefund(_record(row, payment.reference), False, decision, moved)

    def answer(self, payment: StoredPayment, refund_id: int, event: RefundEvent) -> AppliedRefund:
        """Apply Adyen's ``/refunds`` answer (or refusal) to our refund ``refund_id``.

        Should a webhook have been taken for an external refund before the answer named
        it ours (its pspReference), the two are one refund: the external one's facts
        are folded into ours and its row removed.
        """
        rows = _rows(self.unit, payment.id)
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
        rows = _rows(self.unit, payment.id)
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
            refund, created = changes.begin(_lock(unit, reference), ask, window=window, limit=limit)
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
            applied = changes.answer(_lock(unit, reference), refund_id, event)
            return changes.owed(applied, changes.flush())

        return await self.db.write(work, what="record refund answer")

    async def of(self, reference: str) -> list[Refund]:
        """The refunds of the payment ``reference``, oldest first, with their histories."""

        def work(unit: Unit) -> list[Refund]:
            found = unit.run(PAYMENT_ID, {"reference": reference}).all()
            return read_refunds(unit, int(found[0][0]), reference) if found else []

        return await self.db.read(work)


PAYMENT_ID = Sql(select(P.c.id).where(P.c.reference == bindparam("reference")))
