"""The refund state machine: its table, and its rule checked against an independent model.

Everything folds generated events through ``decide_refund`` the way storage does
(one event at a time, each key once) and compares with ``tests/domain/refund_model.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product

import pytest
from hypothesis import event as label
from hypothesis import given, settings
from hypothesis import strategies as st

from miniprogram_pay.domain.machine import InvalidTransitionError
from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES, Amount
from miniprogram_pay.domain.reconcile import Outcome
from miniprogram_pay.domain.refunds import (
    REFUND_TRANSITIONS,
    RefundConflict,
    RefundDecision,
    RefundEvent,
    RefundMachine,
    RefundReason,
    RefundState,
    RefundView,
    apply_refund_decision,
    decide_refund,
    fold_refund,
    parse_refund_reason,
    refund_received_event,
    refund_rejected_event,
    refund_requested_event,
    refund_webhook_event,
)
from miniprogram_pay.errors import InvalidRefundError
from tests.domain.refund_model import (
    ORDER,
    WEBHOOK_CODES,
    assert_valid_path,
    model_external,
    model_ours,
)

EXAMPLES = 300
PSP = "RFND000000000001"
OTHER_PSP = "RFND999999999999"
CNY = Amount(500, "CNY")
STATES = list(RefundState)


# -- the table ---------------------------------------------------------------------------


def test_precedence_is_the_documented_order() -> None:
    assert [s.value for s in sorted(RefundState, key=lambda s: s.rank)] == ORDER


def test_table_holds_exactly_the_upward_moves() -> None:
    moves = {(src, str(t["dest"])) for t in REFUND_TRANSITIONS for src in t["source"]}
    expected = {(a.value, b.value) for a, b in product(STATES, STATES) if b.rank > a.rank}
    assert moves == expected
    destinations = [t["dest"] for t in REFUND_TRANSITIONS]
    assert len(set(destinations)) == len(destinations)
    assert RefundState.REQUESTED.value not in destinations


@pytest.mark.parametrize(("current", "target"), list(product(STATES, STATES)), ids=str)
def test_machine_takes_upward_moves_and_refuses_the_rest(
    current: RefundState, target: RefundState
) -> None:
    machine = RefundMachine()
    assert machine.allows(current, target) is (target.rank > current.rank)
    if target.rank > current.rank:
        assert machine.advance(current, target) is target
    else:
        with pytest.raises(InvalidTransitionError):
            machine.advance(current, target)


def test_what_each_state_holds() -> None:
    assert {s.value for s in RefundState if s.holds_amount} == {
        "Requested",
        "Received",
        "Refunded",
    }
    assert {s.value for s in RefundState if s.is_pending} == {"Requested", "Received"}
    assert {s.value for s in RefundState if s.returned} == {"Failed", "Reversed"}


# -- folding like storage does -----------------------------------------------------------


@dataclass
class Fold:
    view: RefundView
    history: list[str] = field(default_factory=list)
    decisions: list[RefundDecision] = field(default_factory=list)
    applied: set[str] = field(default_factory=set)

    def apply(self, event: RefundEvent, machine: RefundMachine) -> None:
        if event.key in self.applied:
            return
        self.applied.add(event.key)
        before = self.view
        decision = decide_refund(before, event, machine)
        if before.state is not None and decision.new_state is not None:
            assert decision.new_state.rank >= before.state.rank, "the state moved down"
        assert decision.moved == (decision.new_state is not before.state)
        if decision.moved and decision.new_state is not None:
            self.history.append(decision.new_state.value)
        self.decisions.append(decision)
        self.view = apply_refund_decision(before, event, decision)


def fold(view: RefundView, events: Sequence[RefundEvent]) -> Fold:
    machine = RefundMachine()
    result = Fold(view, [view.state.value] if view.state else [])
    for event in events:
        result.apply(event, machine)
    return result


# -- strategies --------------------------------------------------------------------------

reasons = st.none() | st.sampled_from(["Insufficient balance", "Refund Failed", ""])
OTHER_CURRENCY = {c: sorted(set(SUPPORTED_CURRENCIES) - {c})[0] for c in SUPPORTED_CURRENCIES}


@st.composite
def stated_amount(
    draw: st.DrawFn, amount: Amount, *, optional: bool
) -> tuple[int | None, str | None]:
    """The refund's own amount, mostly; sometimes another value or currency, or nothing."""
    # Mostly its own: a dispute settles every later question, so it must stay the exception.
    choices = ["own"] * 12 + ["other_value", "other_currency"]
    choice = draw(st.sampled_from([*choices, *(["none"] if optional else [])]))
    if choice == "none":
        return None, None
    if choice == "other_value":
        return amount.value + draw(st.sampled_from([-1, 1, 250])), amount.currency
    if choice == "other_currency":
        return amount.value, OTHER_CURRENCY[amount.currency]
    return amount.value, amount.currency


@st.composite
def webhooks(draw: st.DrawFn, amount: Amount, key: str, psp: str = PSP) -> RefundEvent:
    value, currency = draw(stated_amount(amount, optional=False))
    return refund_webhook_event(
        draw(st.sampled_from(["REFUND", "REFUND", *WEBHOOK_CODES])),
        draw(st.booleans()),
        dedup_key=key,
        psp_reference=psp,
        amount_value=value,
        amount_currency=currency,
        reason=draw(reasons),
    )


@st.composite
def api_events(draw: st.DrawFn, amount: Amount) -> RefundEvent:
    if draw(st.booleans()):
        return refund_rejected_event(draw(st.sampled_from(["14_004", "137", "000"])))
    value, currency = draw(stated_amount(amount, optional=True))
    return refund_received_event(PSP, amount_value=value, amount_currency=currency)


@st.composite
def our_events(draw: st.DrawFn, amount: Amount) -> list[RefundEvent]:
    """What one of our refunds can hear: our record, Adyen's answer, its webhooks."""
    events = {"requested": refund_requested_event(amount)}
    for _ in range(draw(st.integers(0, 2))):
        event = draw(api_events(amount))
        events[event.key] = event
    for number in range(draw(st.integers(0, 5))):
        event = draw(webhooks(amount, f"item-{number}"))
        events[event.key] = event
    return list(events.values())


@st.composite
def external_events(draw: st.DrawFn, amount: Amount) -> list[RefundEvent]:
    count = draw(st.integers(1, 5))
    return [draw(webhooks(amount, f"item-{n}")) for n in range(count)]


@st.composite
def deliveries(draw: st.DrawFn, events: Sequence[RefundEvent]) -> list[RefundEvent]:
    """The events in some order, some delivered more than once."""
    copies = [e for e in events for _ in range(1 + draw(st.integers(0, 2)))]
    return list(draw(st.permutations(copies)))


amounts = st.builds(
    Amount,
    value=st.integers(min_value=300, max_value=10**9),
    currency=st.sampled_from(sorted(SUPPORTED_CURRENCIES)),
)


def comparable(view: RefundView) -> tuple[object, ...]:
    return (view.state, view.value, view.disputed, view.psp_reference, view.decisive)


# -- properties --------------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_our_refund_ends_as_the_model_says_in_every_order(data: st.DataObject) -> None:
    amount = data.draw(amounts)
    events = data.draw(our_events(amount))
    start = RefundView.new(amount)
    expected = model_ours((amount.value, amount.currency), events, psp=None)
    folds = [fold(start, data.draw(deliveries(events))) for _ in range(3)]
    folds.append(fold(start, list(reversed(events))))
    label(f"final {expected.state}{' disputed' if expected.disputed else ''}")
    for result in folds:
        assert result.view.state is not None
        assert result.view.state.value == expected.state
        assert (result.view.value, result.view.disputed) == (expected.value, expected.disputed)
        assert comparable(result.view) == comparable(folds[0].view)
        assert_valid_path(result.history)
        assert result.history[-1] == result.view.state.value


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_an_external_refund_ends_as_the_model_says_in_every_order(data: st.DataObject) -> None:
    amount = data.draw(amounts)
    events = data.draw(external_events(amount))
    start = RefundView.new_external(amount.currency)
    expected = model_external(amount.currency, events)
    label(f"final {expected.state}{' disputed' if expected.disputed else ''}")
    for _ in range(3):
        result = fold(start, data.draw(deliveries(events)))
        state = result.view.state.value if result.view.state else None
        assert (state, result.view.value, result.view.disputed) == (
            expected.state,
            expected.value,
            expected.disputed,
        )
        assert result.view.decisive == fold(start, events).view.decisive
        assert_valid_path(result.history)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_replaying_applied_events_changes_nothing(data: st.DataObject) -> None:
    amount = data.draw(amounts)
    events = data.draw(our_events(amount))
    done = fold(RefundView.new(amount), data.draw(deliveries(events)))
    machine = RefundMachine()
    for event in events:
        again = decide_refund(done.view, event, machine)
        assert not again.moved
        assert not again.takes_summary
        assert not again.fills_psp_reference
        assert apply_refund_decision(done.view, event, again).state is done.view.state


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_a_known_psp_reference_keeps_other_refunds_facts_out(data: st.DataObject) -> None:
    amount = data.draw(amounts)
    own = data.draw(our_events(amount))
    foreign = [data.draw(webhooks(amount, f"foreign-{n}", OTHER_PSP)) for n in range(3)]
    start = RefundView(RefundState.REQUESTED, amount.currency, amount.value, psp_reference=PSP)
    expected = model_ours((amount.value, amount.currency), own, psp=PSP)
    result = fold(start, data.draw(deliveries(own + foreign)))
    assert result.view.state is not None
    assert result.view.state.value == expected.state
    assert result.view.psp_reference == PSP


def test_fold_refund_is_the_same_fold() -> None:
    events = [
        refund_requested_event(CNY),
        refund_received_event(PSP, amount_value=500, amount_currency="CNY"),
        webhook("REFUND", True),
        webhook("REFUND", True),
    ]
    folded = fold_refund(RefundView.new(CNY), events, RefundMachine())
    assert folded == fold(RefundView.new(CNY), events).view


# -- cases that matter for money ----------------------------------------------------------


def webhook(
    code: str, success: bool, *, value: int = 500, currency: str = "CNY", key: str | None = None
) -> RefundEvent:
    return refund_webhook_event(
        code,
        success,
        dedup_key=key or f"{code}-{success}-{value}-{currency}",
        psp_reference=PSP,
        amount_value=value,
        amount_currency=currency,
        reason="Refund Failed" if code == "REFUND_FAILED" else None,
    )


REQUESTED = refund_requested_event(CNY)
RECEIVED = refund_received_event(PSP, amount_value=500, amount_currency="CNY")
SUCCESS = webhook("REFUND", True)
REFUSAL = webhook("REFUND", False)
FAILURE = webhook("REFUND_FAILED", True)
REVERSAL = webhook("REFUNDED_REVERSED", True)


@pytest.mark.parametrize(
    ("events", "final"),
    [
        ([REQUESTED], "Requested"),
        ([REQUESTED, RECEIVED], "Received"),
        ([REQUESTED, RECEIVED, SUCCESS], "Refunded"),
        ([REQUESTED, SUCCESS, RECEIVED], "Refunded"),
        ([REQUESTED, RECEIVED, REFUSAL], "Refused"),
        ([REQUESTED, refund_rejected_event("137")], "Refused"),
        ([REQUESTED, RECEIVED, SUCCESS, FAILURE], "Failed"),
        ([REQUESTED, FAILURE, SUCCESS, RECEIVED], "Failed"),
        ([REQUESTED, RECEIVED, SUCCESS, REVERSAL], "Reversed"),
        ([REQUESTED, REVERSAL, FAILURE, SUCCESS], "Reversed"),
        ([REQUESTED, REFUSAL, SUCCESS], "Refunded"),
        ([REQUESTED, webhook("CANCEL_OR_REFUND", True)], "Refunded"),
        ([REQUESTED, webhook("CANCEL_OR_REFUND", False)], "Refused"),
    ],
)
def test_final_states(events: list[RefundEvent], final: str) -> None:
    assert fold(RefundView.new(CNY), events).view.state == final


def test_a_failure_that_arrives_before_the_success_still_ends_failed() -> None:
    result = fold(RefundView.new(CNY), [REQUESTED, RECEIVED, FAILURE, SUCCESS])
    assert result.view.state is RefundState.FAILED
    assert result.decisions[-1].outcome is Outcome.RECORDED
    assert result.decisions[-1].conflict is None
    assert result.history == ["Requested", "Received", "Failed"]


def test_a_refusal_after_the_refund_is_a_conflict_and_moves_nothing() -> None:
    for done in (SUCCESS, FAILURE, REVERSAL):
        result = fold(RefundView.new(CNY), [REQUESTED, done, REFUSAL])
        assert result.decisions[-1].outcome is Outcome.CONFLICT
        assert result.decisions[-1].conflict is RefundConflict.REFUSAL_AFTER_REFUND
        assert result.view.state is not RefundState.REFUSED
        assert not result.view.disputed


def test_a_webhook_for_another_amount_is_a_conflict_and_disputes_the_refund() -> None:
    for other in (webhook("REFUND", True, value=600), webhook("REFUND", True, currency="USD")):
        result = fold(RefundView.new(CNY), [REQUESTED, RECEIVED, other])
        decision = result.decisions[-1]
        assert (decision.outcome, decision.conflict) == (
            Outcome.CONFLICT,
            RefundConflict.AMOUNT_MISMATCH,
        )
        assert result.view.state is RefundState.RECEIVED
        assert result.view.disputed
        assert result.view.value == 500


def test_an_answer_for_another_amount_disputes_the_refund() -> None:
    answer = refund_received_event(PSP, amount_value=499, amount_currency="CNY")
    result = fold(RefundView.new(CNY), [REQUESTED, answer])
    assert result.view.state is RefundState.REQUESTED
    assert result.view.disputed
    assert result.view.psp_reference is None


def test_the_first_psp_reference_is_kept_and_another_one_conflicts() -> None:
    foreign = refund_webhook_event(
        "REFUND", True, dedup_key="x", psp_reference=OTHER_PSP, amount_value=500,
        amount_currency="CNY",
    )  # fmt: skip
    result = fold(RefundView.new(CNY), [REQUESTED, RECEIVED, foreign])
    assert result.view.psp_reference == PSP
    assert result.decisions[-1].conflict is RefundConflict.PSP_REFERENCE_MISMATCH
    assert result.view.state is RefundState.RECEIVED
    assert not result.view.disputed


def test_the_psp_reference_comes_from_the_answer_or_a_webhook() -> None:
    assert fold(RefundView.new(CNY), [REQUESTED, RECEIVED]).view.psp_reference == PSP
    assert fold(RefundView.new(CNY), [REQUESTED, SUCCESS]).view.psp_reference == PSP
    late = fold(RefundView.new(CNY), [REQUESTED, SUCCESS, RECEIVED])
    assert late.decisions[-1].outcome is Outcome.RECORDED


def test_an_external_refund_starts_at_its_first_webhook() -> None:
    result = fold(RefundView.new_external("CNY"), [webhook("REFUND", True)])
    assert result.view.state is RefundState.REFUNDED
    assert result.view.value == 500
    assert result.view.external
    assert result.view.psp_reference == PSP
    assert result.history == ["Refunded"]
    assert result.decisions[0].outcome is Outcome.TRANSITION


def test_external_webhooks_that_disagree_dispute_it_in_every_order() -> None:
    small, large = webhook("REFUND", True, value=400), webhook("REFUND_FAILED", True, value=600)
    for events in ([small, large], [large, small]):
        view = fold(RefundView.new_external("CNY"), events).view
        assert (view.state, view.value, view.disputed) == (RefundState.FAILED, 600, True)


def test_an_external_webhook_in_another_currency_moves_nothing() -> None:
    result = fold(RefundView.new_external("CNY"), [webhook("REFUND", True, currency="USD")])
    assert result.view.state is None
    assert result.view.value is None
    assert result.view.disputed


def test_events_without_a_state_are_kept_and_move_nothing() -> None:
    machine = RefundMachine()
    view = fold(RefundView.new(CNY), [REQUESTED, RECEIVED]).view
    for event in [
        webhook("REFUND_FAILED", False),
        webhook("REFUNDED_REVERSED", False),
        webhook("CAPTURE", True),
    ]:
        decision = decide_refund(view, event, machine)
        assert (decision.outcome, decision.new_state) == (Outcome.RECORDED, view.state)
    odd = RefundEvent(source=RECEIVED.source, kind="pending", key="api:odd")
    assert decide_refund(view, odd, machine).outcome is Outcome.UNEXPECTED


def test_the_decisive_event_is_the_highest_precedence_one() -> None:
    failed = fold(RefundView.new(CNY), [FAILURE, REQUESTED, SUCCESS, RECEIVED])
    assert failed.view.decisive is not None
    assert failed.view.decisive[:2] == (RefundState.FAILED.rank, 2)
    assert [d.takes_summary for d in failed.decisions] == [True, False, False, False]


def test_a_requested_refund_starts_requested() -> None:
    view = RefundView.new(CNY)
    assert (view.state, view.amount, view.external) == (RefundState.REQUESTED, CNY, False)
    decision = decide_refund(view, REQUESTED, RefundMachine())
    assert decision.outcome is Outcome.RECORDED
    assert decision.takes_summary


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("CUSTOMER REQUEST", RefundReason.CUSTOMER_REQUEST),
        ("customer_request", RefundReason.CUSTOMER_REQUEST),
        (" customer-request ", RefundReason.CUSTOMER_REQUEST),
        ("fraud", RefundReason.FRAUD),
        ("RETURN", RefundReason.RETURN),
        (None, None),
    ],
)
def test_parse_refund_reason(text: str | None, reason: RefundReason | None) -> None:
    assert parse_refund_reason(text) is reason


@pytest.mark.parametrize("text", ["", "changed my mind", "CUSTOMERREQUEST"])
def test_unknown_refund_reasons_are_refused(text: str) -> None:
    with pytest.raises(InvalidRefundError) as caught:
        parse_refund_reason(text)
    assert (caught.value.code, caught.value.status) == ("invalid_refund_reason", 400)
