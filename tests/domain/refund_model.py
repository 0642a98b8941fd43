"""An independent model of the refund rule and ledger, for the property tests.

Written from docs/refunds.md, not from ``refunds.py``/``ledger.py``: a refund's
state is the highest state, in the order below, implied by any of its events
that agrees with its money facts; the ledger sums refunds by state. States are
plain strings here on purpose.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from miniprogram_pay.domain.refunds import REFUND_TRANSITIONS, RefundEvent

ORDER = ["Requested", "Received", "Refused", "Refunded", "Failed", "Reversed"]
WEBHOOK_CODES = ["REFUND", "REFUND_FAILED", "REFUNDED_REVERSED", "CANCEL_OR_REFUND", "CAPTURE"]
ALLOWED_MOVES = {(src, str(t["dest"])) for t in REFUND_TRANSITIONS for src in t["source"]}
HOLDS = {"Requested", "Received", "Refunded"}
PENDING = {"Requested", "Received"}
RETURNED = {"Failed", "Reversed"}


def model_implied(event: RefundEvent) -> str | None:
    if event.source.value == "request":
        return "Requested" if event.kind == "Requested" else None
    if event.source.value == "api":
        return {"received": "Received", "rejected": "Refused"}.get(event.kind)
    if event.kind in ("REFUND", "CANCEL_OR_REFUND"):
        return "Refunded" if event.success else "Refused"
    if event.kind == "REFUND_FAILED" and event.success:
        return "Failed"
    if event.kind == "REFUNDED_REVERSED" and event.success:
        return "Reversed"
    return None


@dataclass(frozen=True)
class ModelRefund:
    """The refund as the documented rule says it ends, whatever the order of its events."""

    state: str | None
    value: int | None
    disputed: bool


def stated_amount(event: RefundEvent) -> tuple[int | None, str | None] | None:
    """What the event says the refund was for, (value, currency); None: it says nothing."""
    if event.amount_value is None and event.amount_currency is None:
        return None
    return event.amount_value, event.amount_currency


def model_ours(
    requested: tuple[int, str], events: Sequence[RefundEvent], psp: str | None
) -> ModelRefund:
    """Our refund of ``requested``; ``psp`` is its pspReference when known from the start."""
    agreeing, disputed = [], False
    for event in events:
        implied = model_implied(event)
        if implied is None:
            continue
        stated = stated_amount(event)
        if stated is not None and stated != requested:
            disputed = True
            continue
        if psp is not None and event.psp_reference not in (None, psp):
            continue
        agreeing.append(implied)
    return ModelRefund(max(["Requested", *agreeing], key=ORDER.index), requested[0], disputed)


def model_external(currency: str, events: Sequence[RefundEvent]) -> ModelRefund:
    """A refund known only from webhooks: every event in the payment's currency counts."""
    implied_states, values, disputed = [], set(), False
    for event in events:
        implied = model_implied(event)
        if implied is None:
            continue
        if event.amount_currency not in (None, currency):
            disputed = True
            continue
        implied_states.append(implied)
        if event.amount_value is not None:
            values.add(event.amount_value)
    state = max(implied_states, key=ORDER.index) if implied_states else None
    return ModelRefund(state, max(values) if values else None, disputed or len(values) > 1)


@dataclass(frozen=True)
class ModelLedger:
    refunded: int
    pending: int
    returned: int
    count: int
    disputed: bool

    def refundable(self, authorised: int) -> int:
        return 0 if self.disputed else max(0, authorised - self.refunded - self.pending)


def model_ledger(refunds: Sequence[ModelRefund]) -> ModelLedger:
    known = [r for r in refunds if r.state is not None and r.value is not None]

    def total(states: set[str]) -> int:
        return sum(r.value or 0 for r in known if r.state in states)

    return ModelLedger(
        refunded=total({"Refunded"}),
        pending=total(PENDING),
        returned=total(RETURNED),
        count=sum(r.state != "Refused" for r in known),
        disputed=any(r.disputed for r in refunds),
    )


def assert_valid_path(history: Sequence[str]) -> None:
    """Enters no state twice, and every step is in REFUND_TRANSITIONS."""
    assert len(set(history)) == len(history)
    for before, after in pairwise(history):
        assert (before, after) in ALLOWED_MOVES
