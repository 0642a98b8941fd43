"""Reconciliation: what one event does to a payment, decided without I/O.

The rule, stated once:

* A payment's state is the highest state, in the order
  Created < Pending < Error < Refused < Authorised, implied by any event that
  agrees with the payment's money facts (amount, currency, pspReference).
* An event that implies a state but disagrees with those facts moves nothing and
  is a conflict. Events that imply no state (refunds, captures, unexpected
  resultCodes) are recorded and change nothing, not even the pspReference.
* A failure that arrives after an authorisation moves nothing and is a conflict.
* A webhook that would authorise but states no amount is a conflict too: Adyen
  always sends one, so its absence leaves nothing to check the money against.

Which Adyen payment is ours (its pspReference):

* Adyen's answer to our own call (``PaymentEvent.authoritative``) names it: its
  pspReference becomes the payment's, *confirmed*, even over one heard before
  from an event that could not tell (a webhook is matched by merchant reference
  only, and Adyen does not keep those unique).
* Otherwise the first event that implies a state other than a failure and names
  a pspReference gives it, unconfirmed.
* A failure never gives it. For a caller that reconsiders (``decide(...,
  reconsiders=True)``), a failure that names a pspReference while the payment's is
  unknown is *deferred* (nothing moves) and decided again once the pspReference is
  known (``reconsider``): then it counts if it names the same payment, and is a
  ``psp_reference_mismatch`` conflict if it names another. For any other caller it
  counts at once, as a failure naming no pspReference does, since a deferred event
  nobody reconsiders would be lost. Once the attempt is over with its pspReference
  still unknown, ``reconsider(..., settle=True)`` lets its deferred failures count.

Because ``max`` does not care about order or repetition, the state is a function
of the *set* of events received. The payment's summary (resultCode,
refusalReason) comes from the event with the highest precedence
``(state rank, source weight, key)``, so it is order-independent too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from miniprogram_pay.domain.events import (
    RESULT_CODE_STATES,
    EventSource,
    PaymentEvent,
    implied_state,
)
from miniprogram_pay.domain.machine import PaymentMachine
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState

__all__ = [
    "ConflictKind",
    "Decision",
    "Outcome",
    "PaymentView",
    "Precedence",
    "decide",
    "precedence",
    "reconsider",
]

Precedence = tuple[int, int, str]

_FAILURES = frozenset({PaymentState.ERROR, PaymentState.REFUSED})


class Outcome(StrEnum):
    TRANSITION = "transition"
    """The state moved up."""
    RECORDED = "recorded"
    """Kept as a fact; the state did not move (stale, equal, or a non-state event)."""
    CONFLICT = "conflict"
    """Contradicts what we know; nothing moved. Visible on the payment."""
    UNEXPECTED = "unexpected"
    """A resultCode that does not belong to this flow; kept, nothing moved."""
    DEFERRED = "deferred"
    """A failure naming a pspReference before the payment's is known; nothing moved.
    Decided again by ``reconsider`` once the payment's pspReference is known."""


class ConflictKind(StrEnum):
    AMOUNT_MISMATCH = "amount_mismatch"
    AMOUNT_MISSING = "amount_missing"
    PSP_REFERENCE_MISMATCH = "psp_reference_mismatch"
    FAILURE_AFTER_AUTHORISATION = "failure_after_authorisation"
    DUPLICATE_AUTHORISATION = "duplicate_authorisation"
    """An order's attempt authorised while another attempt is the one kept: owed a
    full refund (``domain.orders``)."""


@dataclass(frozen=True, slots=True)
class PaymentView:
    """What reconciliation needs to know of the stored payment."""

    state: PaymentState
    amount: Amount
    psp_reference: str | None = None
    decisive: Precedence | None = None
    psp_confirmed: bool = False
    """The pspReference came from Adyen's answer to our own call (authoritative)."""

    def after(self, event: PaymentEvent, decision: Decision) -> PaymentView:
        """The payment as it is once ``decision`` (about ``event``) is written."""
        return replace(
            self,
            state=decision.new_state,
            psp_reference=(
                event.psp_reference if decision.fills_psp_reference else self.psp_reference
            ),
            psp_confirmed=self.psp_confirmed or decision.confirms_psp_reference,
            decisive=decision.precedence if decision.takes_summary else self.decisive,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    new_state: PaymentState
    implied: PaymentState | None = None
    conflict: ConflictKind | None = None
    takes_summary: bool = False
    """The event becomes the payment's decisive event (its resultCode and reason show)."""
    precedence: Precedence | None = None
    fills_psp_reference: bool = False
    """The event's pspReference becomes the payment's: the first one known, or an
    authoritative one in place of an unconfirmed one. Deferred events of the payment
    are then decided again (``reconsider``)."""
    confirms_psp_reference: bool = False
    """The payment's pspReference is now confirmed by Adyen's answer to our own call."""

    @property
    def moved(self) -> bool:
        return self.outcome is Outcome.TRANSITION


def precedence(state: PaymentState, event: PaymentEvent) -> Precedence:
    return (state.rank, event.source.weight, event.key)


def decide(
    view: PaymentView, event: PaymentEvent, machine: PaymentMachine, *, reconsiders: bool = False
) -> Decision:
    """Decide what ``event`` does to the payment ``view`` describes.

    ``reconsiders``: the caller keeps the events decided ``DEFERRED`` and calls
    ``reconsider`` after writing a decision that ``fills_psp_reference``.
    """
    implied = implied_state(event)
    if implied is None:
        # Kept as a fact, nothing more. A modification (REFUND, CAPTURE, ...) carries
        # its own pspReference and may be for part of the amount: neither is a conflict,
        # and neither may become the payment's pspReference.
        outcome = Outcome.UNEXPECTED if _is_unexpected(event) else Outcome.RECORDED
        return Decision(outcome, view.state)
    conflict = _money_conflict(view, event, implied)
    if conflict is not None:
        return Decision(Outcome.CONFLICT, view.state, implied, conflict)
    if reconsiders and _awaits_psp_reference(view, event, implied):
        return Decision(Outcome.DEFERRED, view.state, implied)
    fills = _fills_psp_reference(view, event, implied)
    confirms = event.authoritative and bool(event.psp_reference) and not view.psp_confirmed
    if implied.rank < view.state.rank:
        return _stale(view, implied, fills, confirms)
    rank = precedence(implied, event)
    takes = view.decisive is None or rank > view.decisive
    outcome = Outcome.RECORDED
    new_state = view.state
    if implied.rank > view.state.rank:
        outcome, new_state = Outcome.TRANSITION, machine.advance(view.state, implied)
    return Decision(outcome, new_state, implied, None, takes, rank, fills, confirms)


def reconsider(
    view: PaymentView,
    deferred: Iterable[PaymentEvent],
    machine: PaymentMachine,
    *,
    settle: bool = False,
) -> tuple[PaymentView, list[tuple[PaymentEvent, Decision]]]:
    """Decide the payment's deferred events again, after its pspReference became known.

    Call it after writing a decision that ``fills_psp_reference``, with every event
    of the payment recorded as ``DEFERRED``; write each new decision in place of the
    deferred one. Returns the payment after them all, and each event's new decision:
    a failure of the same Adyen payment now counts (it may move the state), one that
    names another is a ``psp_reference_mismatch`` conflict. The order of ``deferred``
    does not matter.

    ``settle``: the attempt is over (its prepay lifetime has passed) and still nothing
    named its pspReference; the deferred failures then count as they are, so that a
    payment Adyen only ever reported as failed (an ``OFFER_CLOSED`` after the shopper
    walked away) does not stay Pending for ever.
    """
    decided: list[tuple[PaymentEvent, Decision]] = []
    for event in sorted(deferred, key=lambda e: e.key):
        decision = decide(view, event, machine, reconsiders=not settle)
        view = view.after(event, decision)
        decided.append((event, decision))
    return view, decided


def _money_conflict(
    view: PaymentView, event: PaymentEvent, implied: PaymentState
) -> ConflictKind | None:
    if event.amount_differs_from(view.amount):
        return ConflictKind.AMOUNT_MISMATCH
    if _names_another_payment(view, event):
        return ConflictKind.PSP_REFERENCE_MISMATCH
    if _authorises_blind(event, implied):
        return ConflictKind.AMOUNT_MISSING
    return None


def _names_another_payment(view: PaymentView, event: PaymentEvent) -> bool:
    if not (view.psp_reference and event.psp_reference):
        return False
    if event.psp_reference == view.psp_reference:
        return False
    # Adyen's answer to our own call outranks what an unconfirmed event said.
    return view.psp_confirmed or not event.authoritative


def _awaits_psp_reference(view: PaymentView, event: PaymentEvent, implied: PaymentState) -> bool:
    """A failure that names a pspReference cannot be checked until the payment's is known.

    Applying it now could let a failure of another Adyen payment (one that reused
    the merchant reference) refuse ours; giving it the pspReference would make the
    genuine authorisation a conflict.
    """
    return (
        view.psp_reference is None
        and bool(event.psp_reference)
        and not event.authoritative
        and implied in _FAILURES
    )


def _fills_psp_reference(view: PaymentView, event: PaymentEvent, implied: PaymentState) -> bool:
    if not event.psp_reference or event.psp_reference == view.psp_reference:
        return False
    if implied in _FAILURES and not event.authoritative:
        return False  # a failure never says which Adyen payment is ours
    # Unknown so far, or an authoritative answer in place of an unconfirmed one (a
    # different confirmed one is a conflict, decided before this).
    return view.psp_reference is None or event.authoritative


def _authorises_blind(event: PaymentEvent, implied: PaymentState) -> bool:
    """A webhook that would authorise without saying for how much."""
    return (
        event.source is EventSource.WEBHOOK
        and implied is PaymentState.AUTHORISED
        and (event.amount_value is None or event.amount_currency is None)
    )


def _stale(view: PaymentView, implied: PaymentState, fills: bool, confirms: bool) -> Decision:
    if view.state is PaymentState.AUTHORISED and implied.is_final:
        return Decision(
            Outcome.CONFLICT,
            view.state,
            implied,
            ConflictKind.FAILURE_AFTER_AUTHORISATION,
            fills_psp_reference=fills,
            confirms_psp_reference=confirms,
        )
    return Decision(
        Outcome.RECORDED,
        view.state,
        implied,
        fills_psp_reference=fills,
        confirms_psp_reference=confirms,
    )


def _is_unexpected(event: PaymentEvent) -> bool:
    # Webhook event codes we do not act on (REFUND, CAPTURE, ...) are ordinary;
    # an API resultCode outside this flow (RedirectShopper, 3DS codes...) is not.
    return event.source is not EventSource.WEBHOOK and event.kind not in RESULT_CODE_STATES
