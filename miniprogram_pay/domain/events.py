"""Payment events: every input that can say something about a payment's state.

An event is a fact received from somewhere (our own bookkeeping, an Adyen
``/payments`` or ``/payments/details`` answer, a webhook). ``implied_state``
says which state the fact implies, or ``None`` when it implies none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState

__all__ = [
    "RESULT_CODE_STATES",
    "EventSource",
    "PaymentEvent",
    "creation_event",
    "implied_state",
    "result_event",
    "result_key_prefix",
    "summary_result_code",
    "webhook_event",
]


class EventSource(StrEnum):
    """Where an event came from; also its weight when two events imply the same state."""

    PAYMENTS = "payments"
    DETAILS = "details"
    WEBHOOK = "webhook"

    @property
    def weight(self) -> int:
        # The webhook is the source of truth, then the later API answer.
        return _SOURCE_WEIGHT[self]


_SOURCE_WEIGHT = {EventSource.PAYMENTS: 0, EventSource.DETAILS: 1, EventSource.WEBHOOK: 2}

CREATED_KIND = "Created"

RESULT_CODE_STATES: dict[str, PaymentState] = {
    "Pending": PaymentState.PENDING,
    "Received": PaymentState.PENDING,
    "Authorised": PaymentState.AUTHORISED,
    "Refused": PaymentState.REFUSED,
    "Cancelled": PaymentState.REFUSED,
    "Error": PaymentState.ERROR,
}

WEBHOOK_STATES: dict[tuple[str, bool], PaymentState] = {
    ("AUTHORISATION", True): PaymentState.AUTHORISED,
    ("AUTHORISATION", False): PaymentState.REFUSED,
    ("OFFER_CLOSED", True): PaymentState.REFUSED,
}


@dataclass(frozen=True, slots=True)
class PaymentEvent:
    """One fact about a payment.

    ``kind`` is the resultCode for API answers, the eventCode for webhooks and
    ``"Created"`` for the record made before Adyen is called. ``key`` identifies
    the fact: the same fact received twice has the same key, so it is applied once.
    """

    source: EventSource
    kind: str
    key: str
    success: bool | None = None
    amount_value: int | None = None
    amount_currency: str | None = None
    psp_reference: str | None = None
    reason: str | None = None
    authoritative: bool = False
    """Adyen's answer to our own call for this payment: the ``/payments`` answer, or the
    ``/payments/details`` answer for the paymentData we stored. Its pspReference is the
    payment's, whatever was heard before; a webhook, matched by merchant reference only,
    never is."""

    @property
    def states_amount(self) -> bool:
        return self.amount_value is not None or self.amount_currency is not None

    def amount_differs_from(self, amount: Amount) -> bool:
        """True when the event states an amount other than ``amount``."""
        if not self.states_amount:
            return False
        return (self.amount_value, self.amount_currency) != (amount.value, amount.currency)

    @property
    def is_creation(self) -> bool:
        return self.source is EventSource.PAYMENTS and self.kind == CREATED_KIND


def implied_state(event: PaymentEvent) -> PaymentState | None:
    """The state a fact implies on its own, or None when it implies no state."""
    if event.is_creation:
        return PaymentState.CREATED
    if event.source is EventSource.WEBHOOK:
        return WEBHOOK_STATES.get((event.kind, bool(event.success)))
    return RESULT_CODE_STATES.get(event.kind)


def summary_result_code(event: PaymentEvent) -> str:
    """The resultCode a payment shows when ``event`` is its decisive event."""
    if event.source is EventSource.WEBHOOK:
        state = implied_state(event)
        return "Authorised" if state is PaymentState.AUTHORISED else "Refused"
    return event.kind


def _fingerprint(*parts: object) -> str:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def creation_event() -> PaymentEvent:
    """The event recorded with the payment row, before Adyen is called."""
    return PaymentEvent(source=EventSource.PAYMENTS, kind=CREATED_KIND, key="created")


def result_key_prefix(source: EventSource, request: str | None = None) -> str:
    """How the keys of ``source``'s answers to the ``request`` kind of call begin."""
    return f"{source.value}:{request}:" if request else f"{source.value}:"


def result_event(
    source: EventSource,
    result_code: str,
    *,
    psp_reference: str | None = None,
    reason: str | None = None,
    amount_value: int | None = None,
    amount_currency: str | None = None,
    request: str | None = None,
    authoritative: bool = True,
) -> PaymentEvent:
    """An Adyen ``/payments`` or ``/payments/details`` answer as an event.

    ``request`` names the kind of call answered (for details, the shape of the
    Mini Program's ``res.errMsg``); it is part of the key, so the event log says
    which kinds of call Adyen has answered. ``authoritative`` is False for an answer
    Adyen matched to a payment by something other than what we stored for it (a
    ``/payments/details`` call without paymentData): like a webhook, it cannot tell
    which Adyen payment it is about.
    """
    key = result_key_prefix(source, request) + _fingerprint(
        result_code, psp_reference, reason, amount_value, amount_currency
    )
    return PaymentEvent(
        source=source,
        kind=result_code,
        key=key,
        psp_reference=psp_reference,
        reason=reason,
        amount_value=amount_value,
        amount_currency=amount_currency,
        authoritative=authoritative,
    )


def webhook_event(
    event_code: str,
    success: bool,
    *,
    dedup_key: str,
    psp_reference: str | None,
    amount_value: int | None,
    amount_currency: str | None,
    reason: str | None = None,
) -> PaymentEvent:
    """A notification item as an event; ``dedup_key`` is the item's identity."""
    return PaymentEvent(
        source=EventSource.WEBHOOK,
        kind=event_code,
        key=f"webhook:{dedup_key}",
        success=success,
        amount_value=amount_value,
        amount_currency=amount_currency,
        psp_reference=psp_reference,
        reason=reason,
    )
