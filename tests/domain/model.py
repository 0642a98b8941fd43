"""An independent model of the reconciliation rule, for the property tests.

Written from the documented rule, not from ``reconcile.py``: a payment's state is
the highest state, in the order Created < Pending < Error < Refused < Authorised,
implied by any event whose amount, currency and pspReference agree with the
payment's; a webhook that would authorise must state its amount. States are plain
strings here on purpose.

The pspReference: Adyen's answer to our own call (an authoritative event) gives
it, and so does any other event that implies a state that is not a failure; a
failure never does. For a caller that reconsiders deferred events, a failure that
names a pspReference counts only once the payment's pspReference is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from miniprogram_pay.domain.events import PaymentEvent
from miniprogram_pay.domain.machine import TRANSITIONS
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState

ORDER = ["Created", "Pending", "Error", "Refused", "Authorised"]
API_STATES = {
    "Pending": "Pending",
    "Received": "Pending",
    "Authorised": "Authorised",
    "Refused": "Refused",
    "Cancelled": "Refused",
    "Error": "Error",
}
EXPECTED_API_CODES = sorted(API_STATES)
UNEXPECTED_API_CODES = [
    "RedirectShopper",
    "PresentToShopper",
    "PartiallyAuthorised",
    "IdentifyShopper",
    "ChallengeShopper",
    "AuthenticationFinished",
    "AuthenticationNotRequired",
    "Success",
]
WEBHOOK_CODES = [
    "AUTHORISATION",
    "OFFER_CLOSED",
    "REFUND",
    "CAPTURE",
    "CANCELLATION",
    "CANCEL_OR_REFUND",
    "EXPIRE",
    "TECHNICAL_CANCEL",
]
# The codes a payment's own webhooks carry: a refund's (REFUND & co.) go to its refunds.
PAYMENT_WEBHOOK_CODES = [
    code for code in WEBHOOK_CODES if code not in ("REFUND", "CANCEL_OR_REFUND")
]
SOURCE_WEIGHT = {"payments": 0, "details": 1, "webhook": 2}
ALLOWED_MOVES = {(src, str(t["dest"])) for t in TRANSITIONS for src in t["source"]}


def model_implied(event: PaymentEvent) -> str | None:
    if event.source.value == "webhook":
        if event.kind == "AUTHORISATION":
            return "Authorised" if event.success else "Refused"
        if event.kind == "OFFER_CLOSED" and event.success:
            return "Refused"
        return None
    return API_STATES.get(event.kind)


def money_agrees(event: PaymentEvent, amount: Amount) -> bool:
    stated = (event.amount_value, event.amount_currency)
    if stated != (None, None) and stated != (amount.value, amount.currency):
        return False
    blind = model_implied(event) == "Authorised" and event.source.value == "webhook"
    # Adyen always sends the amount: without one, nothing is checked.
    return not (blind and None in stated)


def agrees(event: PaymentEvent, amount: Amount, psp: str | None) -> bool:
    """The event's money facts agree with the payment's (``psp=None``: not known)."""
    if not money_agrees(event, amount):
        return False
    return event.psp_reference is None or psp is None or event.psp_reference == psp


def is_failure(event: PaymentEvent) -> bool:
    return model_implied(event) in ("Error", "Refused")


def gives_psp(event: PaymentEvent, amount: Amount) -> bool:
    """The event may give the payment its pspReference when none is known."""
    if model_implied(event) is None or not event.psp_reference:
        return False
    return money_agrees(event, amount) and (event.authoritative or not is_failure(event))


def counted(
    amount: Amount, events: Sequence[PaymentEvent], psp: str | None, *, deferring: bool
) -> list[PaymentEvent]:
    """The events that count for the state (``psp``: the payment's, as it ends).

    ``deferring``: the payment started without a pspReference and its deferred
    events are reconsidered; a failure naming one then counts only if the
    pspReference became known.
    """
    known = any(gives_psp(e, amount) for e in events)
    return [
        e
        for e in events
        if agrees(e, amount, psp)
        and not (deferring and not known and is_failure(e) and e.psp_reference)
    ]


def model_state(
    amount: Amount, events: Sequence[PaymentEvent], psp: str | None, *, deferring: bool = False
) -> str:
    implied = [model_implied(e) for e in counted(amount, events, psp, deferring=deferring)]
    return max(["Created", *[s for s in implied if s]], key=ORDER.index)


def model_summary(
    amount: Amount, events: Sequence[PaymentEvent], psp: str | None, *, deferring: bool = False
) -> tuple[str, str | None] | None:
    """(resultCode, refusal reason) of the agreeing event with the highest precedence."""
    ranked = [
        ((ORDER.index(s), SOURCE_WEIGHT[e.source.value], e.key), e, s)
        for e in counted(amount, events, psp, deferring=deferring)
        if (s := model_implied(e)) is not None
    ]
    if not ranked:
        return None
    _, event, state = max(ranked, key=lambda r: r[0])
    if event.source.value == "webhook":
        code = "Authorised" if state == "Authorised" else "Refused"
    else:
        code = event.kind
    return code, event.reason if state in ("Refused", "Error") else None


def assert_valid_path(history: Sequence[PaymentState]) -> None:
    """Starts at Created, enters no state twice, and every step is in TRANSITIONS."""
    assert history[0] is PaymentState.CREATED
    assert len(set(history)) == len(history)
    for before, after in pairwise(history):
        assert (before.value, after.value) in ALLOWED_MOVES
