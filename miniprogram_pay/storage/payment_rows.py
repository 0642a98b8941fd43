"""A payment's row and the statements that change it: what ``storage.changes`` runs
under the payment's lock, and what the other stores read payments with. Nothing here
commits; the stores' units of work do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, insert, or_, select, update

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.orders import AttemptView
from miniprogram_pay.domain.reconcile import ConflictKind
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.storage.records import PaymentRecord
from miniprogram_pay.storage.sql import (
    RowsSql,
    Sql,
    any_of,
    bind_all,
    checked_update,
    row_binds,
)
from miniprogram_pay.storage.tables import (
    OrderRow,
    PaymentEventRow,
    PaymentRow,
    TransitionRow,
    aware,
    table,
)

__all__ = [
    "ATTEMPTS",
    "ATTEMPT_COLUMNS",
    "CHANGEABLE",
    "COUNT_CONFLICT",
    "DUPLICATE",
    "DUPLICATE_KEY",
    "INSERT_EVENTS",
    "INSERT_TRANSITIONS",
    "LOCK",
    "LOCK_ORDERS",
    "LOCK_WITH_OWNERS",
    "LOGGED",
    "PAYMENT_COLUMNS",
    "UPDATE_ORDER",
    "UPDATE_PAYMENT",
    "StoredPayment",
    "attempt_view",
    "digest",
    "fact_values",
    "loads_json",
    "payment_record",
    "stored_payment",
]

OR = table(OrderRow)
P = table(PaymentRow)
E = table(PaymentEventRow)
T = table(TransitionRow)


@dataclass(slots=True)
class StoredPayment:
    """A payment row as read, changed in memory while a unit of work holds its lock."""

    id: int
    reference: str
    order_id: int
    attempt: int
    openid: str
    amount_value: int
    currency: str
    state: str
    psp_reference: str | None
    psp_confirmed: bool
    result_code: str | None
    refusal_reason: str | None
    decisive_rank: int | None
    decisive_weight: int | None
    decisive_key: str | None
    decisive_source: str | None
    payment_data: str | None
    payment_data_hash: str | None
    wechat_params: str | None
    action: str | None
    idempotency_key: str
    details_attempts: int
    conflicts: int
    version: int
    created_at: datetime
    updated_at: datetime


PAYMENT_FIELDS = tuple(f.name for f in fields(StoredPayment))
PAYMENT_COLUMNS = [P.c[name] for name in PAYMENT_FIELDS]
# Every column a change may write; a changed payment writes them all, from memory.
CHANGEABLE = tuple(
    name
    for name in PAYMENT_FIELDS
    if name not in ("id", "reference", "order_id", "attempt", "created_at")
)
EVENT_COLUMNS = (
    "payment_id", "key", "source", "kind", "success", "outcome", "conflict", "reason",
    "psp_reference", "amount_value", "amount_currency", "at",
)  # fmt: skip
ATTEMPT_COLUMNS = [
    P.c[n]
    for n in ("id", "order_id", "attempt", "reference", "state", "amount_value", "currency",
              "created_at")
]  # fmt: skip
DUPLICATE = ConflictKind.DUPLICATE_AUTHORISATION.value
DUPLICATE_KEY = f"order:{DUPLICATE}"
TRANSITION_COLUMNS = (
    "payment_id", "from_state", "to_state", "source", "event_kind", "event_key", "at",
)  # fmt: skip

# Orders first, then payments: the one global lock order. Every change to an attempt
# holds its order's lock, so the attempts read after it are the order as it stands.
LOCK_ORDERS = Sql(
    lambda dialect: (
        select(OR.c.id, OR.c.reference, OR.c.duplicates)
        .where(OR.c.id.in_(_orders_of(dialect)))
        .order_by(OR.c.reference)
        .with_for_update()
    )
)
ATTEMPTS = Sql(
    lambda dialect: select(*ATTEMPT_COLUMNS).where(P.c.order_id.in_(_orders_of(dialect)))
)
LOCK = Sql(
    lambda dialect: (
        select(*PAYMENT_COLUMNS)
        .where(any_of(P.c.reference, "references", dialect))
        .order_by(P.c.reference)
        .with_for_update()
    )
)
# The same, with the payments a batch's refund items name by pspReference: locked in the
# same statement, so in the one global order, not after the others.
LOCK_WITH_OWNERS = Sql(
    lambda dialect: (
        select(*PAYMENT_COLUMNS)
        .where(
            or_(
                any_of(P.c.reference, "references", dialect),
                any_of(P.c.psp_reference, "psps", dialect),
            )
        )
        .order_by(P.c.reference)
        .with_for_update()
    )
)
LOGGED = Sql(
    lambda dialect: (
        select(E.c.payment_id, E.c.key)
        .select_from(E.join(P, P.c.id == E.c.payment_id))
        .where(any_of(P.c.reference, "references", dialect), any_of(E.c.key, "keys", dialect))
    )
)
UPDATE_ORDER = Sql(
    update(OR)
    .where(OR.c.id == bindparam("b_id"))
    .values(duplicates=bindparam("duplicates"), updated_at=bindparam("updated_at"))
)
# A duplicate that is not one of the unit's payments: its order's lock covers it.
COUNT_CONFLICT = Sql(
    update(P)
    .where(P.c.id == bindparam("b_id"))
    .values(conflicts=P.c.conflicts + 1, version=P.c.version + 1, updated_at=bindparam("now"))
)
# A unit's events and transitions go in one statement each (per 64 rows), not one each:
# a batch of webhooks writes them for every item.
INSERT_EVENTS = RowsSql(
    EVENT_COLUMNS, lambda dialect, n: insert(E).values(row_binds(E, EVENT_COLUMNS, n))
)
INSERT_TRANSITIONS = RowsSql(
    TRANSITION_COLUMNS, lambda dialect, n: insert(T).values(row_binds(T, TRANSITION_COLUMNS, n))
)
UPDATE_PAYMENT = Sql(
    lambda dialect: checked_update(
        update(P)
        .where(P.c.id == bindparam("b_id"), P.c.version == bindparam("b_version"))
        .values(bind_all(P, CHANGEABLE)),
        dialect,
    )
)


def _orders_of(dialect: str) -> Any:
    return select(P.c.order_id).where(any_of(P.c.reference, "references", dialect))


def attempt_view(row: Sequence[Any]) -> AttemptView:
    """A row of ``ATTEMPT_COLUMNS`` as the order rules see the attempt."""
    _, _, number, reference, state, value, currency, at = row
    return AttemptView(
        int(number),
        str(reference),
        PaymentState(state),
        Amount(int(value), str(currency)),
        aware(at),
    )


def stored_payment(row: Sequence[Any]) -> StoredPayment:
    """A row of ``PAYMENT_COLUMNS`` as a ``StoredPayment``."""
    return StoredPayment(*row)


def payment_record(row: StoredPayment) -> PaymentRecord:
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
        wechat_params=loads_json(row.wechat_params),
        action=loads_json(row.action),
        idempotency_key=row.idempotency_key,
        conflicts=row.conflicts,
        version=row.version,
        created_at=aware(row.created_at),
        updated_at=aware(row.updated_at),
        order_id=row.order_id,
        attempt=row.attempt,
        psp_confirmed=bool(row.psp_confirmed),
    )


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def loads_json(text: str | None) -> Any:
    return json.loads(text) if text else None


class LoggedFact(Protocol):
    """What a payment's and a refund's event logs keep of a fact alike."""

    @property
    def key(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def success(self) -> bool | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def psp_reference(self) -> str | None: ...
    @property
    def amount_value(self) -> int | None: ...
    @property
    def amount_currency(self) -> str | None: ...


def fact_values(
    fact: LoggedFact, source: str, outcome: str, conflict: str | None, now: datetime
) -> dict[str, Any]:
    """The columns both event logs share, cut to their lengths (``kind`` 64, ``reason``
    255) in one place, so a payment's and a refund's logs keep a fact the same way."""
    return dict(
        key=fact.key,
        source=source,
        kind=fact.kind[:64],
        success=fact.success,
        outcome=outcome,
        conflict=conflict,
        reason=fact.reason[:255] if fact.reason else None,
        psp_reference=fact.psp_reference,
        amount_value=fact.amount_value,
        amount_currency=fact.amount_currency,
        at=now,
    )
