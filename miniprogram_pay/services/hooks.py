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
    each state at most once), so the host de-duplicates on it.

    ``kind`` says what changed. ``"payment"``: the payment moved from ``previous``
    to ``state``. ``"refund"``: one of its refunds moved, and ``refund`` says which
    and how; ``previous`` and ``state`` are then both the payment's own state
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
    request_id: str | None = None
    kind: ChangeKind = "payment"
    refund: RefundChange | None = None


OrderResolver = Callable[[OrderRequest], Awaitable[Order]]
StateChangeHook = Callable[[StateChange], Awaitable[None]]
