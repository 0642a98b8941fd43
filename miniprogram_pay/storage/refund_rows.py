"""Refund rows: the statements, a row as read, and what a fact does to it.

``storage.refunds`` changes refunds under their payment's lock with these; the status
read (``storage.payments``) reads them with ``read_refunds``. Nothing here commits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.orders import OrderView
from miniprogram_pay.domain.reconcile import Outcome
from miniprogram_pay.domain.refunds import (
    RefundChange,
    RefundDecision,
    RefundEvent,
    RefundReason,
    RefundSource,
    RefundState,
    RefundView,
    apply_refund_decision,
)
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import NotFoundError
from miniprogram_pay.storage.payment_rows import (
    ATTEMPT_COLUMNS,
    LOCK,
    StoredPayment,
    attempt_view,
    fact_values,
    stored_payment,
)
from miniprogram_pay.storage.records import Refund, RefundHistory
from miniprogram_pay.storage.sql import Sql, Unit, any_of, bind_all
from miniprogram_pay.storage.tables import (
    OrderRow,
    PaymentRow,
    RefundEventRow,
    RefundRow,
    TransitionRow,
    aware,
    table,
)

__all__ = [
    "RefundAsk",
    "StoredRefund",
    "authorised_at",
    "event_values",
    "find_refund",
    "lock_payment",
    "order_of",
    "outbox_values",
    "read_refunds",
    "refund_changes",
    "refund_reads",
    "refund_record",
    "refund_reference",
    "refund_rows",
    "refund_view",
    "refunds_by_payment",
]

OR = table(OrderRow)
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


def refund_changes(
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


def event_values(
    refund_id: int,
    event: RefundEvent,
    decision: RefundDecision,
    moved: tuple[RefundState | None, RefundState] | None,
    now: datetime,
) -> dict[str, Any]:
    conflict = decision.conflict.value if decision.conflict else None
    values = fact_values(event, event.source.value, decision.outcome.value, conflict, now)
    return {
        "refund_id": refund_id,
        **values,
        "from_state": moved[0].value if moved and moved[0] else None,
        "to_state": moved[1].value if moved else None,
    }


def outbox_values(
    payment: StoredPayment,
    row: StoredRefund,
    moved: tuple[RefundState | None, RefundState],
    source: RefundSource,
    now: datetime,
    lease_seconds: float | None,
    order: OrderView,
) -> dict[str, Any]:
    """The change owed to the host; a refund enters each state at most once (stable id).

    It names the order (``order``) the refunded attempt belongs to, and its state, so a
    host keyed by order finds it whichever attempt was refunded (a duplicate, say)."""
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
        order_reference=order.reference,
        attempt_number=payment.attempt,
        order_state=order.state.value,
        conflict=None,
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


def refund_record(
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


def refund_rows(unit: Unit, payment_id: int) -> list[StoredRefund]:
    return [StoredRefund(*row) for row in unit.run(REFUNDS_OF, {"id": payment_id}).all()]


ORDER_OF = Sql(
    select(OR.c.reference, *ATTEMPT_COLUMNS)
    .select_from(OR.join(P, P.c.order_id == OR.c.id))
    .where(OR.c.id == bindparam("order_id"))
)


def order_of(unit: Unit, payment: StoredPayment) -> OrderView:
    """The order of the locked ``payment``, its own attempt as the unit holds it now.

    The order itself is not locked. An attempt started meanwhile changes the order's
    state only while none of its attempts is authorised: a refund of ours (of an
    authorised attempt) always reads it right; an external refund of an attempt still
    unpaid here may report the order's state as of this read.
    """
    attempts, reference = [], payment.reference
    for row in unit.run(ORDER_OF, {"order_id": payment.order_id}).all():
        reference, attempt = str(row[0]), attempt_view(row[1:])
        if attempt.number == payment.attempt:  # as this unit may have just moved it
            attempt = replace(attempt, state=PaymentState(payment.state))
        attempts.append(attempt)
    return OrderView(reference, tuple(attempts))


def refund_reads(payment_ids: Any) -> tuple[Sql, Sql]:
    """The refunds of the payments ``payment_ids`` selects, and their histories: two
    statements that need no result of another, so a unit sends them together."""
    refund_ids = select(R.c.id).where(R.c.payment_id.in_(payment_ids))
    return (
        Sql(select(*REFUND_COLUMNS).where(R.c.payment_id.in_(payment_ids)).order_by(R.c.id)),
        Sql(
            select(*(RE.c[n] for n in HISTORY_FIELDS))
            .where(RE.c.refund_id.in_(refund_ids))
            .order_by(RE.c.id)
        ),
    )


def refunds_by_payment(
    refunds: Sequence[Sequence[Any]],
    histories: Sequence[Sequence[Any]],
    references: dict[int, str],
) -> dict[int, list[Refund]]:
    """``refund_reads``' rows as each payment's refunds, oldest first, with their history."""
    by_refund: dict[int, list[RefundHistory]] = {}
    for values in histories:
        by_refund.setdefault(int(values[0]), []).append(_history(values))
    found: dict[int, list[Refund]] = {}
    for row in (StoredRefund(*values) for values in refunds):
        record = refund_record(row, references[row.payment_id], by_refund.get(row.id, ()))
        found.setdefault(row.payment_id, []).append(record)
    return found


# One payment's refunds and their histories: both sent before either is read.
_ONE_PAYMENT = select(P.c.id).where(P.c.id == bindparam("id"))
REFUNDS_OF_ONE, HISTORIES_OF_ONE = refund_reads(_ONE_PAYMENT)


def read_refunds(unit: Unit, payment_id: int, payment_reference: str) -> list[Refund]:
    """A payment's refunds, oldest first, each with its history (one wait on PostgreSQL)."""
    refunds, histories = [
        unit.run(sql, {"id": payment_id}) for sql in (REFUNDS_OF_ONE, HISTORIES_OF_ONE)
    ]
    found = refunds_by_payment(refunds.all(), histories.all(), {payment_id: payment_reference})
    return found.get(payment_id, [])


def lock_payment(unit: Unit, reference: str) -> StoredPayment:
    found = unit.run(LOCK, {"references": [reference]}).all()
    if not found:
        raise NotFoundError("no payment with this reference", code="payment_not_found")
    return stored_payment(found[0])


def authorised_at(unit: Unit, payment_id: int) -> datetime | None:
    found = unit.run(AUTHORISED_AT, {"id": payment_id}).all()
    return aware(found[0][0]) if found else None
