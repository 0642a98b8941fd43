"""Orders: the host's order and its payment attempts, decided without I/O.

An order (the host's reference and amount, from the order resolver) has one or
more attempts; each attempt is one Adyen payment, with its own reference and its
own state (``reconcile``). The rules, stated once:

* An attempt may start when the order has none, or when its current attempt (the
  last started) failed (Refused, Error) or is older than the prepay lifetime (a
  WeChat ``prepay_id`` lives about two hours). A current attempt that is Created or
  Pending and younger is reused. An order with an Authorised attempt starts none.
* Of the Authorised attempts, the order keeps the first started. Every other one
  is a ``duplicate_authorisation``, owed a full refund.
* The order is paid (Authorised) when one attempt is; otherwise it shows its
  current attempt's state.

Each rule reads only the attempts' numbers and states (and, to start one, the
clock), never the order in which their events arrived. Since an attempt's state
is a function of the set of its events, so are the kept attempt, the duplicates
and the order's state. The kept attempt can change only to an earlier one, and
Authorised never moves down, so an attempt owed a refund is never kept later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState

__all__ = [
    "DEFAULT_PREPAY_LIFETIME",
    "MAX_ATTEMPT_REFERENCE_CHARS",
    "AttemptView",
    "OrderView",
    "Step",
    "attempt_reference",
]

DEFAULT_PREPAY_LIFETIME = timedelta(hours=2)
MAX_ATTEMPT_REFERENCE_CHARS = 80
"""Adyen's limit for a payment's ``reference``."""

_OPEN = frozenset({PaymentState.CREATED, PaymentState.PENDING})
_DIGEST_CHARS = 10


class Step(StrEnum):
    """What a request to pay an order does."""

    PAID = "paid"
    """The order has an Authorised attempt: answer with the paid order, start nothing."""
    REUSE = "reuse"
    """The current attempt is still open and young: hand out its parameters again."""
    START = "start"
    """Start a new attempt at Adyen."""


@dataclass(frozen=True, slots=True)
class AttemptView:
    """What the order rules need to know of one attempt."""

    number: int
    """1 for the first attempt of the order, then 2, 3... in the order they started."""
    reference: str
    """The attempt's own Adyen ``reference`` (``attempt_reference``)."""
    state: PaymentState
    amount: Amount
    started_at: datetime

    def is_open_at(self, now: datetime, lifetime: timedelta) -> bool:
        """Created or Pending, and young enough for its WeChat parameters to work."""
        return self.state in _OPEN and now - self.started_at < lifetime


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order's attempts, in any order; their numbers are distinct."""

    reference: str
    attempts: tuple[AttemptView, ...] = ()

    def __post_init__(self) -> None:
        numbers = [a.number for a in self.attempts]
        if len(set(numbers)) != len(numbers) or any(n < 1 for n in numbers):
            raise ValueError("attempt numbers must be distinct and start at 1")

    @property
    def current(self) -> AttemptView | None:
        """The attempt started last."""
        return max(self.attempts, key=_number, default=None)

    @property
    def kept(self) -> AttemptView | None:
        """The attempt that pays the order: the first started of the Authorised ones."""
        return min(self._authorised(), key=_number, default=None)

    @property
    def duplicates(self) -> tuple[AttemptView, ...]:
        """Authorised attempts other than the kept one: each owed a full refund."""
        kept = self.kept
        return tuple(sorted((a for a in self._authorised() if a is not kept), key=_number))

    @property
    def state(self) -> PaymentState:
        """Authorised when one attempt is, else the current attempt's (Created without one)."""
        if self.kept is not None:
            return PaymentState.AUTHORISED
        current = self.current
        return current.state if current is not None else PaymentState.CREATED

    def next_step(self, now: datetime, lifetime: timedelta = DEFAULT_PREPAY_LIFETIME) -> Step:
        """What a request to pay the order does at ``now`` (decide it under the order's lock)."""
        if self.kept is not None:
            return Step.PAID
        current = self.current
        if current is not None and current.is_open_at(now, lifetime):
            return Step.REUSE
        return Step.START

    def next_attempt_reference(self) -> str:
        """The Adyen ``reference`` of the attempt ``Step.START`` would begin."""
        current = self.current
        return attempt_reference(self.reference, 1 if current is None else current.number + 1)

    def refunds_owed(self, refunded: Collection[str]) -> tuple[AttemptView, ...]:
        """Duplicates not yet refunded (``refunded``: references of attempts already asked)."""
        return tuple(a for a in self.duplicates if a.reference not in refunded)

    def _authorised(self) -> Iterable[AttemptView]:
        return (a for a in self.attempts if a.state is PaymentState.AUTHORISED)


def _number(attempt: AttemptView) -> int:
    return attempt.number


def attempt_reference(order_reference: str, number: int) -> str:
    """An attempt's Adyen ``reference``: the order's, a hyphen, the attempt's number.

    Adyen's own convention joins several references with a hyphen, so
    ``order-17-2`` reads as "order-17, attempt 2" in the Customer Area. An order
    reference too long to take the suffix within 80 characters is cut, and a digest
    of the whole keeps two long references that share a beginning apart.
    """
    if number < 1:
        raise ValueError("attempt numbers start at 1")
    if not order_reference:
        raise ValueError("the order reference must not be empty")
    suffix = f"-{number}"
    if len(order_reference) + len(suffix) <= MAX_ATTEMPT_REFERENCE_CHARS:
        return order_reference + suffix
    digest = hashlib.sha256(order_reference.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    keep = MAX_ATTEMPT_REFERENCE_CHARS - len(suffix) - _DIGEST_CHARS - 1
    return f"{order_reference[:keep]}~{digest}{suffix}"
