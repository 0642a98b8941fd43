"""The host's extension points: how it tells us the order, and how we tell it of changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import RefundChange
from miniprogram_pay.domain.states import PaymentState

__all__ = [
    "ChangeKind",
    "Order",
    "OrderRequest",
    "OrderResolver",
    "RefundChange",
    "StateChange",
    "StateChangeHook",
]

ChangeKind = Literal["payment", "refund"]


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What the Mini Program asked to pay: its JSON body and the authenticated shopper."""

    body: Mapping[str, Any]
    openid: str


@dataclass(frozen=True, slots=True)
class Order:
    """The host's answer: which order this is and what it costs (never the client's word)."""

    reference: str
    amount: Amount


@dataclass(frozen=True, slots=True)
class StateChange:
    """One committed state change, delivered at least once.

    ``event_id`` is stable across redeliveries (a payment, and each refund, enters
    each state at most once), so the host de-duplicates on it. ``reference`` names the
    attempt (one Adyen payment); ``order_reference`` and ``order_state`` say what it
    means for the order: fulfil the order on ``order_state`` Authorised.

    ``kind`` says what changed. ``"payment"``: the attempt moved from ``previous``
    to ``state``. ``"refund"``: one of its refunds moved, and ``refund`` says which
    and how; ``previous`` and ``state`` are then both the attempt's own state
    (a refund never changes it).

    ``request_id`` names the request that caused the change (its ``X-Request-ID``),
    when the process delivering it still knows; the hook runs with it bound, so the
    package's log lines carry it.
    """

    event_id: str
    reference: str
    previous: PaymentState | None
    state: PaymentState
    source: str
    occurred_at: datetime
    attempt: int
    """How many times this change has been offered to the host (1 the first time)."""
    request_id: str | None = None
    kind: ChangeKind = "payment"
    refund: RefundChange | None = None
    order_reference: str | None = None
    """The order whose attempt ``reference`` changed (its own reference for a first attempt)."""
    payment_attempt: int | None = None
    """Which attempt of the order changed: 1, 2, ... (None for a change stored before
    orders existed)."""
    order_state: PaymentState | None = None
    """The order's state once the change was made: Authorised when one attempt is."""
    conflict: str | None = None
    """``duplicate_authorisation``: the attempt ``reference`` was authorised although the
    order is paid by another attempt; the change reports it (``state`` is unchanged) and
    the attempt is owed a full refund."""


OrderResolver = Callable[[OrderRequest], Awaitable[Order]]
StateChangeHook = Callable[[StateChange], Awaitable[None]]
