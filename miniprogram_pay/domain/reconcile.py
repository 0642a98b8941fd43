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

Because ``max`` does not care about order or repetition, the state is a function
of the *set* of events received. The payment's summary (resultCode,
refusalReason) comes from the event with the highest precedence
``(state rank, source weight, key)``, so it is order-independent too.
"""

from __future__ import annotations

from dataclasses import dataclass
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
]

Precedence = tuple[int, int, str]


class Outcome(StrEnum):
    TRANSITION = "transition"
    """The state moved up."""
    RECORDED = "recorded"
    """Kept as a fact; the state did not move (stale, equal, or a non-state event)."""
    CONFLICT = "conflict"
    """Contradicts what we know; nothing moved. Visible on the payment."""
    UNEXPECTED = "unexpected"
    """A resultCode that does not belong to this flow; kept, nothing moved."""


class ConflictKind(StrEnum):
    AMOUNT_MISMATCH = "amount_mismatch"
    AMOUNT_MISSING = "amount_missing"
    PSP_REFERENCE_MISMATCH = "psp_reference_mismatch"
    FAILURE_AFTER_AUTHORISATION = "failure_after_authorisation"


@dataclass(frozen=True, slots=True)
class PaymentView:
    """What reconciliation needs to know of the stored payment."""

    state: PaymentState
    amount: Amount
    psp_reference: str | None = None
    decisive: Precedence | None = None


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

    @property
    def moved(self) -> bool:
        return self.outcome is Outcome.TRANSITION


def precedence(state: PaymentState, event: PaymentEvent) -> Precedence:
    return (state.rank, event.source.weight, event.key)


def decide(view: PaymentView, event: PaymentEvent, machine: PaymentMachine) -> Decision:
    """Decide what ``event`` does to the payment ``view`` describes."""
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
    fills = view.psp_reference is None and bool(event.psp_reference)
    if implied.rank < view.state.rank:
        return _stale(view, implied, fills)
    rank = precedence(implied, event)
    takes = view.decisive is None or rank > view.decisive
    if implied.rank == view.state.rank:
        return Decision(Outcome.RECORDED, view.state, implied, None, takes, rank, fills)
    new_state = machine.advance(view.state, implied)
    return Decision(Outcome.TRANSITION, new_state, implied, None, takes, rank, fills)


def _money_conflict(
    view: PaymentView, event: PaymentEvent, implied: PaymentState
) -> ConflictKind | None:
    if event.amount_differs_from(view.amount):
        return ConflictKind.AMOUNT_MISMATCH
    if view.psp_reference and event.psp_reference and event.psp_reference != view.psp_reference:
        return ConflictKind.PSP_REFERENCE_MISMATCH
    if _authorises_blind(event, implied):
        return ConflictKind.AMOUNT_MISSING
    return None


def _authorises_blind(event: PaymentEvent, implied: PaymentState) -> bool:
    """A webhook that would authorise without saying for how much."""
    return (
        event.source is EventSource.WEBHOOK
        and implied is PaymentState.AUTHORISED
        and (event.amount_value is None or event.amount_currency is None)
    )


def _stale(view: PaymentView, implied: PaymentState, fills: bool) -> Decision:
    if view.state is PaymentState.AUTHORISED and implied.is_final:
        return Decision(
            Outcome.CONFLICT,
            view.state,
            implied,
            ConflictKind.FAILURE_AFTER_AUTHORISATION,
            fills_psp_reference=fills,
        )
    return Decision(Outcome.RECORDED, view.state, implied, fills_psp_reference=fills)


def _is_unexpected(event: PaymentEvent) -> bool:
    # Webhook event codes we do not act on (REFUND, CAPTURE, ...) are ordinary;
    # an API resultCode outside this flow (RedirectShopper, 3DS codes...) is not.
    return event.source is not EventSource.WEBHOOK and event.kind not in RESULT_CODE_STATES
