"""Plain, immutable snapshots the stores hand out (never live ORM rows)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.reconcile import Decision
from miniprogram_pay.domain.refunds import RefundChange, RefundDecision, RefundState
from miniprogram_pay.domain.states import PaymentState

__all__ = [
    "AppliedEvent",
    "AppliedRefund",
    "EventRecord",
    "IgnoredNotification",
    "InboxItem",
    "Intake",
    "NotificationRecord",
    "OutboxEvent",
    "OutboxRecord",
    "PaymentRecord",
    "ProviderAnswer",
    "Refund",
    "RefundHistory",
    "StoredNotification",
    "TransitionRecord",
]


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    id: int
    reference: str
    openid: str
    amount: Amount
    state: PaymentState
    psp_reference: str | None
    result_code: str | None
    refusal_reason: str | None
    payment_data: str | None
    wechat_params: dict[str, str] | None
    action: dict[str, Any] | None
    idempotency_key: str
    conflicts: int
    version: int
    created_at: datetime
    updated_at: datetime
    order_id: int = 0
    attempt: int = 1
    """The attempt's number in its order: 1, 2, ... in the order they started."""
    psp_confirmed: bool = False


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    from_state: PaymentState | None
    to_state: PaymentState
    source: str
    event_kind: str
    event_key: str
    at: datetime


@dataclass(frozen=True, slots=True)
class EventRecord:
    key: str
    source: str
    kind: str
    success: bool | None
    outcome: str
    conflict: str | None
    reason: str | None
    psp_reference: str | None
    amount_value: int | None
    amount_currency: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """What an Adyen /payments answer gives us to keep for the Mini Program."""

    payment_data: str | None = None
    wechat_params: dict[str, str] | None = None
    action: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """What applying one event did to its payment.

    ``outbox`` is the state change the host is owed when the event moved the payment
    (written with the change, leased to this process when it delivers changes itself).
    """

    payment: PaymentRecord
    decision: Decision | None
    duplicate: bool
    transition: TransitionRecord | None = None
    outbox: OutboxEvent | None = None
    duplicates: tuple[str, ...] = ()
    """Outbox event ids of the order's attempts this change made duplicates (each owed a
    refund): the attempt itself, or the one its order kept until now."""
    reported: tuple[OutboxEvent, ...] = ()
    """The outbox events of ``duplicates``, once written."""


@dataclass(frozen=True, slots=True)
class InboxItem:
    """A webhook item ready to be stored: the fields we index, and the raw JSON as received."""

    dedup_key: str
    psp_reference: str
    merchant_reference: str
    event_code: str
    success: bool
    amount_value: int | None
    amount_currency: str | None
    reason: str | None
    raw_json: str
    status: str = "received"
    detail: str | None = None
    live: bool | None = None


@dataclass(frozen=True, slots=True)
class StoredNotification:
    id: int
    dedup_key: str
    new: bool
    status: str


@dataclass(frozen=True, slots=True)
class Intake:
    """What storing webhook items and applying them in one unit of work did.

    ``stored`` has one entry per item, in order, with the status the unit left its row
    in; ``applied`` the rows the unit applied.
    """

    stored: list[StoredNotification]
    applied: list[NotificationRecord]


@dataclass(frozen=True, slots=True)
class NotificationRecord:
    id: int
    status: str
    detail: str | None
    applied: AppliedEvent | None = None
    refund: AppliedRefund | None = None
    merchant_reference: str | None = None
    event_code: str | None = None
    success: bool | None = None
    deliveries: int = 0
    attempts: int = 0
    received_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    event_id: str
    reference: str
    from_state: PaymentState | None
    to_state: PaymentState
    source: str
    attempts: int
    created_at: datetime
    requeued_at: datetime | None = None
    kind: str = "payment"
    refund: RefundChange | None = None
    order_reference: str | None = None
    """The order the changed attempt belongs to."""
    attempt_number: int | None = None
    """The changed attempt's number in its order (None: from before orders existed)."""
    order_state: PaymentState | None = None
    """The order's state once the change was made."""
    conflict: str | None = None
    """A conflict the change reports (``duplicate_authorisation``), else None."""


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """An outbox row as operators see it (``GET /admin/outbox``)."""

    id: int
    event_id: str
    reference: str
    from_state: PaymentState | None
    to_state: PaymentState
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None
    requeued_at: datetime | None
    kind: str = "payment"
    refund: RefundChange | None = None
    order_reference: str | None = None
    attempt_number: int | None = None
    order_state: PaymentState | None = None
    conflict: str | None = None


@dataclass(frozen=True, slots=True)
class IgnoredNotification:
    """What deciding again whether an ignored webhook item is ours needs."""

    id: int
    merchant_account: str | None
    live: bool | None


@dataclass(frozen=True, slots=True)
class RefundHistory:
    """One fact applied to a refund: what it was, and the move it made (if any)."""

    source: str
    kind: str
    success: bool | None
    outcome: str
    conflict: str | None
    from_state: RefundState | None
    to_state: RefundState | None
    reason: str | None
    at: datetime


@dataclass(frozen=True, slots=True)
class Refund:
    """One refund of a payment, as stored: ours, or made in Adyen's Customer Area.

    ``amount`` is what we asked for (ours), or the amount its webhooks state
    (external; None before one states it). ``state`` is None only for an external
    refund none of whose webhooks implied a state yet.
    """

    id: int
    payment_reference: str
    number: int
    reference: str | None
    psp_reference: str | None
    amount: Amount | None
    state: RefundState | None
    reason: str | None
    refusal_reason: str | None
    external: bool
    disputed: bool
    conflicts: int
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None = None
    """The Idempotency-Key sent to Adyen for this refund (ours only)."""
    caller_key: str | None = None
    """The caller's own idempotency key, when one was given."""
    history: tuple[RefundHistory, ...] = ()


@dataclass(frozen=True, slots=True)
class AppliedRefund:
    """What one fact did to a refund: the refund after it, and the move it made."""

    refund: Refund
    duplicate: bool
    decision: RefundDecision | None = None
    moved: tuple[RefundState | None, RefundState] | None = None
    outbox: OutboxEvent | None = None
    """The change the host is owed, when the fact moved the refund."""
