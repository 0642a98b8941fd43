"""The tables this package owns, all prefixed ``mpp_``.

Uniqueness is the database's job: a payment reference, a state entered by a
payment, an event applied to a payment and a received notification each have a
unique key, so a redelivery or a race is rejected by the database itself rather
than by a check-then-insert.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlmodel import Field, SQLModel

__all__ = [
    "NotificationRow",
    "OrderRow",
    "OutboxRow",
    "PaymentEventRow",
    "PaymentRow",
    "RefundEventRow",
    "RefundRow",
    "TransitionRow",
    "aware",
    "metadata",
    "table",
    "utcnow",
]

metadata = SQLModel.metadata


def utcnow() -> datetime:
    return datetime.now(UTC)


def table(model: type[SQLModel]) -> Table:
    """The Core table of a SQLModel table class (what statements are built on)."""
    found: Table = model.__table__  # type: ignore[attr-defined]
    return found


@overload
def aware(moment: datetime) -> datetime: ...
@overload
def aware(moment: None) -> None: ...
def aware(moment: datetime | None) -> datetime | None:
    """A stored moment as UTC: SQLite hands back naive datetimes; everything stored is UTC."""
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


class OrderRow(SQLModel, table=True):
    """The host's order: what its attempts pay, and the row their changes lock first."""

    __tablename__ = "mpp_order"

    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=80, unique=True)
    openid: str = Field(max_length=128)
    amount_value: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    # How many duplicate authorisations the order has met (each one is refunded).
    duplicates: int = 0
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PaymentRow(SQLModel, table=True):
    """One attempt to pay an order: one Adyen payment, with its own ``reference``."""

    __tablename__ = "mpp_payment"
    __table_args__ = (
        Index("ix_mpp_payment_state_updated", "state", "updated_at"),
        UniqueConstraint("order_id", "attempt", name="uq_mpp_payment_attempt"),
    )

    id: int | None = Field(default=None, primary_key=True)
    reference: str = Field(max_length=80, unique=True)
    order_id: int = Field(foreign_key="mpp_order.id", index=True)
    attempt: int
    openid: str = Field(max_length=128, index=True)
    amount_value: int = Field(sa_column=Column(BigInteger, nullable=False))
    currency: str = Field(max_length=3)
    state: str = Field(max_length=16)
    psp_reference: str | None = Field(default=None, max_length=64, index=True)
    # The pspReference came from Adyen's answer to our own call, not from a webhook.
    psp_confirmed: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    result_code: str | None = Field(default=None, max_length=32)
    refusal_reason: str | None = Field(default=None, max_length=255)
    decisive_rank: int | None = None
    decisive_weight: int | None = None
    decisive_key: str | None = Field(default=None, max_length=80)
    decisive_source: str | None = Field(default=None, max_length=16)
    payment_data: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # paymentData can be kilobytes long: it is found through its SHA-256 instead.
    payment_data_hash: str | None = Field(default=None, max_length=64, index=True)
    wechat_params: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    action: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    idempotency_key: str = Field(max_length=64)
    details_attempts: int = 0
    conflicts: int = 0
    version: int = 0
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class TransitionRow(SQLModel, table=True):
    """Append-only history. A payment enters each state at most once (it only moves up)."""

    __tablename__ = "mpp_transition"
    __table_args__ = (UniqueConstraint("payment_id", "to_state", name="uq_mpp_transition_state"),)

    id: int | None = Field(default=None, primary_key=True)
    payment_id: int = Field(foreign_key="mpp_payment.id", index=True)
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str = Field(max_length=16)
    source: str = Field(max_length=16)
    event_kind: str = Field(max_length=64)
    event_key: str = Field(max_length=80)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class PaymentEventRow(SQLModel, table=True):
    """Every fact applied to a payment, once, with what it did (conflicts included)."""

    __tablename__ = "mpp_payment_event"
    __table_args__ = (UniqueConstraint("payment_id", "key", name="uq_mpp_payment_event_key"),)

    id: int | None = Field(default=None, primary_key=True)
    payment_id: int = Field(foreign_key="mpp_payment.id", index=True)
    key: str = Field(max_length=80)
    source: str = Field(max_length=16)
    kind: str = Field(max_length=64)
    success: bool | None = None
    outcome: str = Field(max_length=16)
    conflict: str | None = Field(default=None, max_length=40)
    reason: str | None = Field(default=None, max_length=255)
    psp_reference: str | None = Field(default=None, max_length=64)
    amount_value: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    amount_currency: str | None = Field(default=None, max_length=8)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class NotificationRow(SQLModel, table=True):
    """The inbox: each webhook item as received, before and after it is applied."""

    __tablename__ = "mpp_notification"
    __table_args__ = (Index("ix_mpp_notification_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    dedup_key: str = Field(max_length=64, unique=True)
    psp_reference: str = Field(max_length=64, index=True)
    merchant_reference: str = Field(max_length=255, index=True)
    event_code: str = Field(max_length=64)
    success: bool
    amount_value: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    amount_currency: str | None = Field(default=None, max_length=8)
    reason: str | None = Field(default=None, max_length=255)
    raw: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(max_length=16)
    detail: str | None = Field(default=None, max_length=255)
    # The delivery's ``live`` flag, so an ignored item can be judged again later.
    live: bool | None = None
    attempts: int = 0
    deliveries: int = 1
    received_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    applied_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )


class OutboxRow(SQLModel, table=True):
    """State changes waiting to be told to the host, written with the change itself."""

    __tablename__ = "mpp_outbox"
    __table_args__ = (Index("ix_mpp_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, unique=True)
    payment_id: int = Field(foreign_key="mpp_payment.id", index=True)
    reference: str = Field(max_length=80)
    # Which order and attempt changed, and the order's state once it had (None on
    # rows written before orders existed: their order's reference is ``reference``).
    order_reference: str | None = Field(default=None, max_length=80)
    attempt_number: int | None = None
    order_state: str | None = Field(default=None, max_length=16)
    conflict: str | None = Field(default=None, max_length=40)
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str = Field(max_length=16)
    source: str = Field(max_length=16)
    status: str = Field(max_length=16)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=255)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    next_attempt_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    delivered_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # Set when an operator requeues a parked row: its retry window starts again here.
    requeued_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=True)
    )
    # "payment" (from_state/to_state are the payment's) or "refund" (they are the
    # payment's as it was; ``refund`` holds the refund's change as JSON).
    kind: str = Field(
        default="payment",
        sa_column=Column(String(16), nullable=False, server_default="payment"),
    )
    refund: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class RefundRow(SQLModel, table=True):
    """One refund of a payment: ours (asked for through the package) or external.

    ``number`` counts the payment's refunds (1, 2, ...): unique per payment, it is what
    makes our refund's own reference. ``idempotency_key`` is the key sent to Adyen,
    stored before Adyen is called; ``caller_key`` is the caller's own, unique per payment.
    """

    __tablename__ = "mpp_refund"
    __table_args__ = (
        UniqueConstraint("payment_id", "number", name="uq_mpp_refund_number"),
        UniqueConstraint("payment_id", "caller_key", name="uq_mpp_refund_caller_key"),
        UniqueConstraint("payment_id", "psp_reference", name="uq_mpp_refund_psp_reference"),
        # The recovery pass looks for refunds Adyen never answered: Requested, oldest first.
        Index("ix_mpp_refund_state_updated_at", "state", "updated_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    payment_id: int = Field(foreign_key="mpp_payment.id", index=True)
    number: int
    reference: str | None = Field(default=None, max_length=255, index=True)
    psp_reference: str | None = Field(default=None, max_length=64, index=True)
    amount_value: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    currency: str = Field(max_length=3)
    state: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, max_length=32)
    refusal_reason: str | None = Field(default=None, max_length=255)
    external: bool = False
    disputed: bool = False
    decisive_rank: int | None = None
    decisive_weight: int | None = None
    decisive_key: str | None = Field(default=None, max_length=80)
    idempotency_key: str | None = Field(default=None, max_length=64)
    caller_key: str | None = Field(default=None, max_length=64)
    conflicts: int = 0
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))


class RefundEventRow(SQLModel, table=True):
    """Every fact applied to a refund, once, with what it did; a move names both states."""

    __tablename__ = "mpp_refund_event"
    __table_args__ = (UniqueConstraint("refund_id", "key", name="uq_mpp_refund_event_key"),)

    id: int | None = Field(default=None, primary_key=True)
    refund_id: int = Field(foreign_key="mpp_refund.id", index=True)
    key: str = Field(max_length=80)
    source: str = Field(max_length=16)
    kind: str = Field(max_length=64)
    success: bool | None = None
    outcome: str = Field(max_length=16)
    conflict: str | None = Field(default=None, max_length=40)
    from_state: str | None = Field(default=None, max_length=16)
    to_state: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, max_length=255)
    psp_reference: str | None = Field(default=None, max_length=64)
    amount_value: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    amount_currency: str | None = Field(default=None, max_length=8)
    at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
