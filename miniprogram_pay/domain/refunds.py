"""Refunds: each refund is its own small state machine, decided without I/O.

A refund only ever moves up this order::

    Requested < Received < Refused < Refunded < Failed < Reversed

The rule, stated once (the same as the payment's, in ``reconcile.py``):

* A refund's state is the highest state implied by any of its events that agrees
  with the refund's money facts. Because ``max`` does not care about order or
  repetition, the state is a function of the *set* of events received.
* Our own refund's amount is the one we asked for: an event stating another
  amount or currency moves nothing, is a conflict, and marks the refund
  *disputed* (the ledger then admits no further refund of the payment).
* A refund made in Adyen's Customer Area (an *external* refund) is known only
  from its webhooks, so its amount is the largest one they state; webhooks that
  disagree on it mark it disputed, and still count for its state, so that the
  state stays a function of the set. A currency other than the payment's moves
  nothing and disputes it.
* A refusal that arrives after the refund was carried out (Refunded, Failed or
  Reversed) moves nothing and is a conflict.

Why this order is right for money is explained in docs/refunds.md.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from miniprogram_pay.domain.machine import TableMachine, draw_mermaid
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.reconcile import Outcome, Precedence
from miniprogram_pay.errors import InvalidRefundError

__all__ = [
    "REFUND_EVENT_CODES",
    "REFUND_TRANSITIONS",
    "RefundChange",
    "RefundConflict",
    "RefundDecision",
    "RefundEvent",
    "RefundMachine",
    "RefundReason",
    "RefundSource",
    "RefundState",
    "RefundView",
    "apply_refund_decision",
    "decide_refund",
    "fold_refund",
    "implied_refund_state",
    "parse_refund_reason",
    "refund_mermaid_diagram",
    "refund_received_event",
    "refund_rejected_event",
    "refund_requested_event",
    "refund_webhook_event",
]


class RefundState(StrEnum):
    REQUESTED = "Requested"
    RECEIVED = "Received"
    REFUSED = "Refused"
    REFUNDED = "Refunded"
    FAILED = "Failed"
    REVERSED = "Reversed"

    @property
    def rank(self) -> int:
        """Position in Requested < Received < Refused < Refunded < Failed < Reversed."""
        return _RANK[self]

    @property
    def is_pending(self) -> bool:
        """Asked for, outcome not known yet: the money may or may not be on its way."""
        return self in (RefundState.REQUESTED, RefundState.RECEIVED)

    @property
    def holds_amount(self) -> bool:
        """True when the refund's amount counts against what is left to refund."""
        return self.is_pending or self is RefundState.REFUNDED

    @property
    def returned(self) -> bool:
        """The refund was carried out and the money came back to the merchant."""
        return self in (RefundState.FAILED, RefundState.REVERSED)


_RANK = {state: position for position, state in enumerate(RefundState)}


class RefundSource(StrEnum):
    """Where a refund event came from; also its weight when two imply the same state."""

    REQUEST = "request"
    API = "api"
    WEBHOOK = "webhook"

    @property
    def weight(self) -> int:
        # The webhook is the source of truth, then Adyen's API answer, then our own record.
        return _SOURCE_WEIGHT[self]


_SOURCE_WEIGHT = {RefundSource.REQUEST: 0, RefundSource.API: 1, RefundSource.WEBHOOK: 2}


class RefundReason(StrEnum):
    """Adyen's ``merchantRefundReason`` values."""

    FRAUD = "FRAUD"
    CUSTOMER_REQUEST = "CUSTOMER REQUEST"
    RETURN = "RETURN"
    DUPLICATE = "DUPLICATE"
    OTHER = "OTHER"


def parse_refund_reason(text: str | None) -> RefundReason | None:
    """``"customer request"``, ``"CUSTOMER_REQUEST"`` or ``"customer-request"`` alike.

    Raises ``InvalidRefundError`` (``invalid_refund_reason``) for anything else.
    """
    if text is None:
        return None
    normalised = " ".join(text.upper().replace("_", " ").replace("-", " ").split())
    try:
        return RefundReason(normalised)
    except ValueError:
        known = ", ".join(r.value for r in RefundReason)
        raise InvalidRefundError(
            f"refund reason must be one of {known}", code="invalid_refund_reason"
        ) from None


REQUESTED_KIND = "Requested"
RECEIVED_KIND = "received"
REJECTED_KIND = "rejected"

# The webhook event codes that speak of a refund. CANCEL_OR_REFUND (from
# /reversals) refunds an auto-captured payment such as WeChat Pay's in full.
REFUND_EVENT_CODES = frozenset({"REFUND", "REFUND_FAILED", "REFUNDED_REVERSED", "CANCEL_OR_REFUND"})

_WEBHOOK_STATES: dict[tuple[str, bool], RefundState] = {
    ("REFUND", True): RefundState.REFUNDED,
    ("REFUND", False): RefundState.REFUSED,
    ("CANCEL_OR_REFUND", True): RefundState.REFUNDED,
    ("CANCEL_OR_REFUND", False): RefundState.REFUSED,
    # Adyen sends both with success "true"; a "false" one says nothing we could act on,
    # and releasing money on a fact we do not understand is the unsafe direction.
    ("REFUND_FAILED", True): RefundState.FAILED,
    ("REFUNDED_REVERSED", True): RefundState.REVERSED,
}

_API_STATES: dict[tuple[RefundSource, str], RefundState] = {
    (RefundSource.REQUEST, REQUESTED_KIND): RefundState.REQUESTED,
    (RefundSource.API, RECEIVED_KIND): RefundState.RECEIVED,
    (RefundSource.API, REJECTED_KIND): RefundState.REFUSED,
}


@dataclass(frozen=True, slots=True)
class RefundEvent:
    """One fact about a refund.

    ``kind`` is ``"Requested"`` for our own record (made before Adyen is called),
    ``"received"`` for Adyen's ``/refunds`` answer, ``"rejected"`` when Adyen
    refused the request outright (a 4xx: no refund exists) and the eventCode for
    webhooks. ``key`` identifies the fact: the same fact twice is applied once.
    """

    source: RefundSource
    kind: str
    key: str
    success: bool | None = None
    amount_value: int | None = None
    amount_currency: str | None = None
    psp_reference: str | None = None
    reason: str | None = None

    @property
    def states_amount(self) -> bool:
        return self.amount_value is not None or self.amount_currency is not None


def implied_refund_state(event: RefundEvent) -> RefundState | None:
    """The state a fact implies on its own, or None when it implies none."""
    if event.source is RefundSource.WEBHOOK:
        return _WEBHOOK_STATES.get((event.kind, bool(event.success)))
    return _API_STATES.get((event.source, event.kind))


def _fingerprint(*parts: object) -> str:
    text = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:40]


def refund_requested_event(amount: Amount, reason: RefundReason | None = None) -> RefundEvent:
    """Our record of the refund, made (and stored) before Adyen is called."""
    return RefundEvent(
        source=RefundSource.REQUEST,
        kind=REQUESTED_KIND,
        key="requested",
        amount_value=amount.value,
        amount_currency=amount.currency,
        reason=reason.value if reason is not None else None,
    )


def refund_received_event(
    psp_reference: str, *, amount_value: int | None = None, amount_currency: str | None = None
) -> RefundEvent:
    """Adyen's ``/payments/{psp}/refunds`` answer: ``status: received`` and the refund's psp."""
    return RefundEvent(
        source=RefundSource.API,
        kind=RECEIVED_KIND,
        key="api:" + _fingerprint(RECEIVED_KIND, psp_reference, amount_value, amount_currency),
        psp_reference=psp_reference,
        amount_value=amount_value,
        amount_currency=amount_currency,
    )


def refund_rejected_event(reason: str) -> RefundEvent:
    """Adyen refused the request itself (400/422): no refund was made, none will be.

    Only for a definitive refusal; a timeout, a 5xx or a 409 leaves the refund
    Requested, because Adyen may have made it.
    """
    return RefundEvent(
        source=RefundSource.API,
        kind=REJECTED_KIND,
        key="api:" + _fingerprint(REJECTED_KIND, reason),
        reason=reason,
    )


def refund_webhook_event(
    event_code: str,
    success: bool,
    *,
    dedup_key: str,
    psp_reference: str,
    amount_value: int | None,
    amount_currency: str | None,
    reason: str | None = None,
) -> RefundEvent:
    """A refund notification item as an event; ``psp_reference`` is the refund's own."""
    return RefundEvent(
        source=RefundSource.WEBHOOK,
        kind=event_code,
        key=f"webhook:{dedup_key}",
        success=success,
        amount_value=amount_value,
        amount_currency=amount_currency,
        psp_reference=psp_reference,
        reason=reason or None,
    )


_RQ, _RC, _RF, _RD, _F, _RV = (s.value for s in RefundState)

# The one place where a refund's allowed moves are declared: every upward move.
REFUND_TRANSITIONS: tuple[dict[str, Any], ...] = (
    {"trigger": "receive", "source": [_RQ], "dest": _RC},
    {"trigger": "refuse", "source": [_RQ, _RC], "dest": _RF},
    {"trigger": "refund", "source": [_RQ, _RC, _RF], "dest": _RD},
    {"trigger": "fail", "source": [_RQ, _RC, _RF, _RD], "dest": _F},
    {"trigger": "reverse", "source": [_RQ, _RC, _RF, _RD, _F], "dest": _RV},
)


class RefundMachine(TableMachine[RefundState]):
    """Moves a refund from one state to another, only along ``REFUND_TRANSITIONS``."""

    def __init__(self) -> None:
        super().__init__(RefundState, REFUND_TRANSITIONS, RefundState.REQUESTED)


def refund_mermaid_diagram() -> str:
    """The refund state diagram as Mermaid text, generated from ``REFUND_TRANSITIONS``."""
    return draw_mermaid("Refund", list(RefundState), REFUND_TRANSITIONS, RefundState.REQUESTED)


class RefundConflict(StrEnum):
    AMOUNT_MISMATCH = "amount_mismatch"
    PSP_REFERENCE_MISMATCH = "psp_reference_mismatch"
    REFUSAL_AFTER_REFUND = "refusal_after_refund"


@dataclass(frozen=True, slots=True)
class RefundView:
    """What the rule needs to know of a stored refund.

    ``state`` is None only for an external refund before its first event.
    ``value`` is in ``currency`` (always the payment's): for our own refund the
    amount we asked for, for an external one the largest amount its webhooks
    stated (None before the first that states one in the payment's currency).
    """

    state: RefundState | None
    currency: str
    value: int | None
    external: bool = False
    psp_reference: str | None = None
    disputed: bool = False
    decisive: Precedence | None = None

    @classmethod
    def new(cls, amount: Amount) -> RefundView:
        """A refund we are about to ask Adyen for."""
        return cls(RefundState.REQUESTED, amount.currency, amount.value)

    @classmethod
    def new_external(cls, currency: str) -> RefundView:
        """A refund we did not ask for (made in the Customer Area), before its first webhook."""
        return cls(None, currency, None, external=True)

    @property
    def amount(self) -> Amount | None:
        return Amount(self.value, self.currency) if self.value is not None else None


@dataclass(frozen=True, slots=True)
class RefundDecision:
    """What one event does to a refund.

    ``outcome`` says what happened to the state. ``conflict``, when set, says the
    event contradicts what is known: for our own refund such an event moves
    nothing (outcome CONFLICT); an external refund's disagreeing amount still
    counts for its state. ``disputes`` marks the refund disputed from now on.
    """

    outcome: Outcome
    new_state: RefundState | None
    value: int | None
    implied: RefundState | None = None
    conflict: RefundConflict | None = None
    disputes: bool = False
    takes_summary: bool = False
    """The event becomes the refund's decisive event (its reason shows)."""
    precedence: Precedence | None = None
    fills_psp_reference: bool = False

    @property
    def moved(self) -> bool:
        return self.outcome is Outcome.TRANSITION


def refund_precedence(state: RefundState, event: RefundEvent) -> Precedence:
    return (state.rank, event.source.weight, event.key)


def decide_refund(view: RefundView, event: RefundEvent, machine: RefundMachine) -> RefundDecision:
    """Decide what ``event`` does to the refund ``view`` describes."""
    implied = implied_refund_state(event)
    if implied is None:
        # A webhook code we do not act on is ordinary; an API kind outside this flow is not.
        outcome = Outcome.RECORDED if event.source is RefundSource.WEBHOOK else Outcome.UNEXPECTED
        return RefundDecision(outcome, view.state, view.value)
    conflict = _money_conflict(view, event)
    if conflict is not None:
        disputes = conflict is RefundConflict.AMOUNT_MISMATCH
        return RefundDecision(
            Outcome.CONFLICT, view.state, view.value, implied, conflict, disputes=disputes
        )
    value, disputes = _value_after(view, event)
    fills = view.psp_reference is None and bool(event.psp_reference)
    base = RefundDecision(
        Outcome.RECORDED,
        view.state,
        value,
        implied,
        RefundConflict.AMOUNT_MISMATCH if disputes else None,
        disputes=disputes,
        fills_psp_reference=fills,
    )
    if view.state is not None and implied.rank < view.state.rank:
        return _stale(view.state, implied, base)
    rank = refund_precedence(implied, event)
    takes = view.decisive is None or rank > view.decisive
    if view.state is implied:
        return replace(base, takes_summary=takes, precedence=rank)
    # An external refund's first fact is where it starts; any other move is the table's.
    new_state = implied if view.state is None else machine.advance(view.state, implied)
    return replace(
        base, outcome=Outcome.TRANSITION, new_state=new_state, takes_summary=takes, precedence=rank
    )


def _money_conflict(view: RefundView, event: RefundEvent) -> RefundConflict | None:
    if event.states_amount:
        if event.amount_currency != view.currency:
            return RefundConflict.AMOUNT_MISMATCH
        if not view.external and event.amount_value != view.value:
            return RefundConflict.AMOUNT_MISMATCH
    if view.psp_reference and event.psp_reference and event.psp_reference != view.psp_reference:
        return RefundConflict.PSP_REFERENCE_MISMATCH
    return None


def _value_after(view: RefundView, event: RefundEvent) -> tuple[int | None, bool]:
    """The refund's value after the event, and whether the event disputes it."""
    stated = event.amount_value
    if not view.external or stated is None:
        return view.value, False
    if view.value is None:
        return stated, False
    # The largest stated amount: a maximum, so the result does not depend on order.
    return max(view.value, stated), stated != view.value


def _stale(state: RefundState, implied: RefundState, base: RefundDecision) -> RefundDecision:
    if implied is RefundState.REFUSED and state.rank > RefundState.REFUSED.rank:
        return replace(
            base,
            outcome=Outcome.CONFLICT,
            conflict=base.conflict or RefundConflict.REFUSAL_AFTER_REFUND,
        )
    return base


def apply_refund_decision(
    view: RefundView, event: RefundEvent, decision: RefundDecision
) -> RefundView:
    """The refund as it is once ``decision`` (made for ``event``) has been applied."""
    return replace(
        view,
        state=decision.new_state,
        value=decision.value,
        psp_reference=event.psp_reference if decision.fills_psp_reference else view.psp_reference,
        disputed=view.disputed or decision.disputes,
        decisive=decision.precedence if decision.takes_summary else view.decisive,
    )


def fold_refund(
    view: RefundView, events: Iterable[RefundEvent], machine: RefundMachine
) -> RefundView:
    """Apply ``events`` in order, each key once: what storage does one event at a time.

    Also how two records of one refund are merged (an external refund whose
    pspReference turns out to be ours): fold the other's events into ours.
    """
    applied: set[str] = set()
    for event in events:
        if event.key in applied:
            continue
        applied.add(event.key)
        view = apply_refund_decision(view, event, decide_refund(view, event, machine))
    return view


@dataclass(frozen=True, slots=True)
class RefundChange:
    """What changed about one refund, as the host is told (``StateChange.refund``)."""

    reference: str | None
    """The refund's own reference: ours is ``<payment reference>-refund-<n>``."""
    psp_reference: str | None
    amount: Amount | None
    previous: RefundState | None
    state: RefundState
    external: bool
    """Made in Adyen's Customer Area, not through the package."""

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "pspReference": self.psp_reference,
            "amount": self.amount.to_adyen() if self.amount else None,
            "previous": self.previous.value if self.previous else None,
            "state": self.state.value,
            "external": self.external,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RefundChange:
        amount = data.get("amount")
        return cls(
            reference=data.get("reference"),
            psp_reference=data.get("pspReference"),
            amount=Amount(int(amount["value"]), str(amount["currency"])) if amount else None,
            previous=RefundState(data["previous"]) if data.get("previous") else None,
            state=RefundState(data["state"]),
            external=bool(data.get("external")),
        )
