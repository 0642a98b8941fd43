"""Reconciliation properties, checked against a model written without reconcile.py.

The model: a payment's state is the highest state, in the order
Created < Pending < Error < Refused < Authorised, implied by any event whose
amount and currency agree with the payment's. Everything here folds generated
events through ``decide`` the way the storage does (skip a key already
applied, keep the pspReference and the decisive precedence decide hands back),
as a caller that reconsiders: deferred failures are decided again once the
pspReference is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import event as label
from hypothesis import given, settings
from hypothesis import strategies as st

from miniprogram_pay.domain.events import (
    EventSource,
    PaymentEvent,
    creation_event,
    result_event,
    summary_result_code,
    webhook_event,
)
from miniprogram_pay.domain.machine import PaymentMachine
from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES, Amount
from miniprogram_pay.domain.reconcile import (
    ConflictKind,
    Decision,
    Outcome,
    PaymentView,
    decide,
    reconsider,
)
from miniprogram_pay.domain.states import PaymentState
from tests.domain.model import (
    EXPECTED_API_CODES,
    UNEXPECTED_API_CODES,
    WEBHOOK_CODES,
    agrees,
    assert_valid_path,
    gives_psp,
    model_implied,
    model_state,
    model_summary,
)

EXAMPLES = 300
PSP = "PSP0000000000001"
OTHER_PSP = "PSP9999999999999"

# -- folding events like the storage does -------------------------------------------


@dataclass
class Fold:
    view: PaymentView
    history: list[PaymentState] = field(default_factory=lambda: [PaymentState.CREATED])
    decisions: list[Decision] = field(default_factory=list)
    applied: set[str] = field(default_factory=set)
    events: list[PaymentEvent] = field(default_factory=list)
    summary: tuple[str, str | None] | None = None
    deferred: dict[str, PaymentEvent] = field(default_factory=dict)
    outcomes: dict[str, Decision] = field(default_factory=dict)
    """Each event's decision as it stands (a deferred one replaced when reconsidered)."""

    @property
    def conflicts(self) -> int:
        return sum(d.outcome is Outcome.CONFLICT for d in self.outcomes.values())


def start(amount: Amount, psp: str | None = None) -> Fold:
    """A payment; ``psp``: Adyen's /payments answer named it (confirmed)."""
    return Fold(
        PaymentView(PaymentState.CREATED, amount, psp_reference=psp, psp_confirmed=psp is not None)
    )


def apply(fold: Fold, event: PaymentEvent, machine: PaymentMachine) -> None:
    if event.key in fold.applied:
        return
    fold.applied.add(event.key)
    fold.events.append(event)
    decision = decide(fold.view, event, machine, reconsiders=True)
    _write(fold, event, decision)
    if decision.fills_psp_reference and fold.deferred:
        deferred, fold.deferred = list(fold.deferred.values()), {}
        after, decided = reconsider(fold.view, deferred, machine)
        for again, redecided in decided:
            assert redecided.outcome is not Outcome.DEFERRED
            _write(fold, again, redecided)
        assert fold.view == after


def _write(fold: Fold, event: PaymentEvent, decision: Decision) -> None:
    view = fold.view
    assert decision.new_state.rank >= view.state.rank, "the state moved down"
    assert decision.moved == (decision.new_state is not view.state)
    if decision.moved:
        fold.history.append(decision.new_state)
    if decision.takes_summary:
        implied = decision.implied
        reason = event.reason if implied in (PaymentState.REFUSED, PaymentState.ERROR) else None
        fold.summary = (summary_result_code(event), reason)
    if decision.outcome is Outcome.DEFERRED:
        fold.deferred[event.key] = event
    fold.decisions.append(decision)
    fold.outcomes[event.key] = decision
    fold.view = view.after(event, decision)


def fold_all(amount: Amount, events: Sequence[PaymentEvent], psp: str | None = None) -> Fold:
    machine = PaymentMachine()
    fold = start(amount, psp)
    for event in events:
        apply(fold, event, machine)
    return fold


# -- strategies ----------------------------------------------------------------------

amounts = st.builds(
    Amount,
    value=st.integers(min_value=1, max_value=10**9),
    currency=st.sampled_from(sorted(SUPPORTED_CURRENCIES)),
)
reasons = st.none() | st.sampled_from(["Refused", "Not enough balance", "user cancel"])


@st.composite
def money_facts(
    draw: st.DrawFn, amount: Amount, *, optional: bool
) -> tuple[int | None, str | None]:
    """The payment's own amount, mostly; sometimes nothing, sometimes a different one."""
    choices = ["own", "own", "other_value", "other_currency", *(["none"] if optional else [])]
    choice = draw(st.sampled_from(choices))
    if choice == "none":
        return None, None
    if choice == "other_value":
        return amount.value + draw(st.sampled_from([-1, 1, 100])), amount.currency
    if choice == "other_currency":
        others = sorted(set(SUPPORTED_CURRENCIES) - {amount.currency})
        return amount.value, draw(st.sampled_from(others))
    return amount.value, amount.currency


@st.composite
def api_events(
    draw: st.DrawFn, amount: Amount, psps: Sequence[str | None] = (PSP, None)
) -> PaymentEvent:
    value, currency = draw(money_facts(amount, optional=True))
    return result_event(
        draw(st.sampled_from([EventSource.PAYMENTS, EventSource.DETAILS])),
        draw(st.sampled_from(EXPECTED_API_CODES + EXPECTED_API_CODES + UNEXPECTED_API_CODES)),
        psp_reference=draw(st.sampled_from(psps)),
        reason=draw(reasons),
        amount_value=value,
        amount_currency=currency,
        # An answer to a details call without paymentData cannot tell which payment it is.
        authoritative=draw(st.booleans()),
    )


@st.composite
def webhooks(
    draw: st.DrawFn, amount: Amount, key: str, psps: Sequence[str | None] = (PSP,)
) -> PaymentEvent:
    # Optional: Adyen always sends an amount, so a webhook without one must not authorise.
    value, currency = draw(money_facts(amount, optional=True))
    return webhook_event(
        draw(st.sampled_from(["AUTHORISATION", "AUTHORISATION", *WEBHOOK_CODES])),
        draw(st.booleans()),
        dedup_key=key,
        psp_reference=draw(st.sampled_from(psps)),
        amount_value=value,
        amount_currency=currency,
        reason=draw(reasons),
    )


@st.composite
def event_sets(
    draw: st.DrawFn, amount: Amount, psps: Sequence[str | None] = (PSP, None)
) -> list[PaymentEvent]:
    """Distinct facts (one key each); a webhook's key is its dedup_key, unique per item."""
    count = draw(st.integers(min_value=0, max_value=10))
    events: dict[str, PaymentEvent] = {}
    for index in range(count):
        if draw(st.booleans()):
            event = draw(api_events(amount, psps))
        else:
            webhook_psps = [p for p in psps if p is not None] or [PSP]
            event = draw(webhooks(amount, f"item-{index}", webhook_psps))
        events.setdefault(event.key, event)
    return list(events.values())


@st.composite
def deliveries(draw: st.DrawFn, events: Sequence[PaymentEvent]) -> list[PaymentEvent]:
    """The events in some order, some of them delivered more than once."""
    copies = [e for e in events for _ in range(1 + draw(st.integers(0, 2)))]
    return list(draw(st.permutations(copies)))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Amount, list[PaymentEvent], list[list[PaymentEvent]]]:
    amount = draw(amounts)
    events = draw(event_sets(amount))
    orderings = [draw(deliveries(events)) for _ in range(3)]
    orderings += [list(reversed(orderings[0])), events]
    return amount, events, orderings


# -- properties ----------------------------------------------------------------------


@settings(max_examples=EXAMPLES, deadline=None)
@given(scenarios())
def test_final_state_is_the_model_for_every_ordering(
    scenario: tuple[Amount, list[PaymentEvent], list[list[PaymentEvent]]],
) -> None:
    amount, events, orderings = scenario
    expected_state = model_state(amount, events, PSP, deferring=True)
    expected_summary = model_summary(amount, events, PSP, deferring=True)
    expected_psp = PSP if any(gives_psp(e, amount) for e in events) else None
    folds = [fold_all(amount, ordering) for ordering in orderings]
    label(f"final state {expected_state}")
    label(f"{len(set(folds[0].history))} states visited")
    for fold in folds:
        assert fold.view.state.value == expected_state
        assert fold.summary == expected_summary
        assert fold.view.decisive == folds[0].view.decisive
        assert fold.view.psp_reference == expected_psp
        assert_valid_path(fold.history)
        assert fold.history[-1] is fold.view.state


@settings(max_examples=EXAMPLES, deadline=None)
@given(scenarios(), st.data())
def test_replaying_applied_events_changes_nothing(
    scenario: tuple[Amount, list[PaymentEvent], list[list[PaymentEvent]]], data: st.DataObject
) -> None:
    amount, events, orderings = scenario
    fold = fold_all(amount, orderings[0])
    view, history, decisions = fold.view, list(fold.history), list(fold.decisions)
    replays = data.draw(st.lists(st.sampled_from(events), max_size=8)) if events else []
    machine = PaymentMachine()
    for event in replays:
        apply(fold, event, machine)
    assert (fold.view, fold.history, fold.decisions) == (view, history, decisions)
    # Even without the key check, a replay cannot move the state, the summary or the
    # pspReference; only the conflict counter would grow, which is why keys are kept.
    for event in events:
        again = decide(view, event, machine, reconsiders=True)
        assert again.new_state is view.state
        assert not again.moved
        assert not again.takes_summary
        assert not again.fills_psp_reference


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_amount_mismatch_moves_nothing_and_is_a_conflict(data: st.DataObject) -> None:
    amount = data.draw(amounts)
    state = data.draw(st.sampled_from(list(PaymentState)))
    psp = data.draw(st.sampled_from([None, PSP]))
    event = data.draw(api_events(amount) | webhooks(amount, "item"))
    if agrees(event, amount, PSP) or model_implied(event) is None:
        event = data.draw(
            webhooks(amount, "item").filter(
                lambda e: model_implied(e) is not None and not agrees(e, amount, PSP)
            )
        )
    view = PaymentView(state, amount, psp_reference=psp)
    decision = decide(view, event, PaymentMachine())
    assert decision.outcome is Outcome.CONFLICT
    stated = event.amount_value is not None
    assert decision.conflict is (
        ConflictKind.AMOUNT_MISMATCH if stated else ConflictKind.AMOUNT_MISSING
    )
    assert decision.new_state is state
    assert not decision.takes_summary
    assert not decision.fills_psp_reference


FAILURES = [
    result_event(EventSource.DETAILS, "Refused", psp_reference=PSP, reason="Refused"),
    result_event(EventSource.DETAILS, "Cancelled", psp_reference=PSP),
    result_event(EventSource.PAYMENTS, "Error", reason="Acquirer error"),
    webhook_event(
        "AUTHORISATION", False, dedup_key="f1", psp_reference=PSP, amount_value=None,
        amount_currency=None, reason="Refused",
    ),
    webhook_event(
        "OFFER_CLOSED", True, dedup_key="f2", psp_reference=PSP, amount_value=None,
        amount_currency=None,
    ),
]  # fmt: skip
SUCCESSES = [
    result_event(EventSource.DETAILS, "Authorised", psp_reference=PSP),
    webhook_event(
        "AUTHORISATION", True, dedup_key="s1", psp_reference=PSP, amount_value=1130,
        amount_currency="CNY",
    ),
]  # fmt: skip
CNY = Amount(1130, "CNY")


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(FAILURES), st.sampled_from([None, PSP]))
def test_failure_after_authorisation_is_a_conflict_and_keeps_authorised(
    failure: PaymentEvent, psp: str | None
) -> None:
    view = PaymentView(PaymentState.AUTHORISED, CNY, psp_reference=psp, decisive=(4, 2, "k"))
    decision = decide(view, failure, PaymentMachine())
    assert decision.outcome is Outcome.CONFLICT
    assert decision.conflict is ConflictKind.FAILURE_AFTER_AUTHORISATION
    assert decision.new_state is PaymentState.AUTHORISED
    assert not decision.takes_summary


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.lists(st.sampled_from(FAILURES), min_size=1, max_size=4),
    st.sampled_from(SUCCESSES),
)
def test_success_after_failures_upgrades_to_authorised(
    failures: list[PaymentEvent], success: PaymentEvent
) -> None:
    # The /payments answer named the payment, so no failure waits for its pspReference.
    fold = fold_all(CNY, [*failures, success], psp=PSP)
    assert fold.decisions[-1].outcome is Outcome.TRANSITION
    assert fold.view.state is PaymentState.AUTHORISED
    assert fold.summary == ("Authorised", None)
    assert fold.conflicts == 0
    later = fold_all(CNY, [success, *failures], psp=PSP)
    assert later.view.state is PaymentState.AUTHORISED
    assert later.conflicts == len({f.key for f in failures})


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.sampled_from(list(PaymentState)), st.sampled_from([None, PSP]))
def test_an_authorisation_without_an_amount_is_a_conflict_and_moves_nothing(
    state: PaymentState, psp: str | None
) -> None:
    blind = webhook_event(
        "AUTHORISATION", True, dedup_key="blind", psp_reference=PSP, amount_value=None,
        amount_currency=None,
    )  # fmt: skip
    view = PaymentView(state, CNY, psp_reference=psp)
    decision = decide(view, blind, PaymentMachine())
    assert decision.outcome is Outcome.CONFLICT
    assert decision.conflict is ConflictKind.AMOUNT_MISSING
    assert decision.new_state is state
    assert not decision.takes_summary
    assert not decision.fills_psp_reference


def test_pending_after_authorisation_is_recorded_not_a_conflict() -> None:
    view = PaymentView(PaymentState.AUTHORISED, CNY, psp_reference=PSP)
    decision = decide(view, result_event(EventSource.PAYMENTS, "Pending"), PaymentMachine())
    assert decision.outcome is Outcome.RECORDED
    assert decision.conflict is None
    assert decision.new_state is PaymentState.AUTHORISED


def test_unexpected_result_code_is_kept_and_moves_nothing() -> None:
    for code in UNEXPECTED_API_CODES:
        event = result_event(EventSource.DETAILS, code, psp_reference=PSP)
        decision = decide(PaymentView(PaymentState.PENDING, CNY), event, PaymentMachine())
        assert decision.outcome is Outcome.UNEXPECTED
        assert decision.new_state is PaymentState.PENDING
        assert not decision.fills_psp_reference


def test_webhook_without_a_state_is_recorded() -> None:
    for code in ["REFUND", "CAPTURE", "CANCELLATION", "EXPIRE"]:
        event = webhook_event(
            code, True, dedup_key=code, psp_reference=PSP, amount_value=1130,
            amount_currency="CNY",
        )  # fmt: skip
        decision = decide(PaymentView(PaymentState.AUTHORISED, CNY, PSP), event, PaymentMachine())
        assert decision.outcome is Outcome.RECORDED
        assert decision.new_state is PaymentState.AUTHORISED


def test_creation_event_implies_created_and_moves_nothing() -> None:
    decision = decide(PaymentView(PaymentState.CREATED, CNY), creation_event(), PaymentMachine())
    assert decision.outcome is Outcome.RECORDED
    assert decision.implied is PaymentState.CREATED


# -- pspReference --------------------------------------------------------------------


def test_psp_reference_mismatch_moves_nothing_and_is_a_conflict() -> None:
    machine = PaymentMachine()
    for state in PaymentState:
        for event in [*FAILURES, *SUCCESSES]:
            foreign = PaymentEvent(
                source=event.source,
                kind=event.kind,
                key=event.key + ":foreign",
                success=event.success,
                psp_reference=OTHER_PSP,
            )
            decision = decide(PaymentView(state, CNY, psp_reference=PSP), foreign, machine)
            assert decision.outcome is Outcome.CONFLICT
            assert decision.conflict is ConflictKind.PSP_REFERENCE_MISMATCH
            assert decision.new_state is state
            assert not decision.takes_summary


def test_first_psp_reference_is_kept_and_a_later_different_one_conflicts() -> None:
    pending = result_event(EventSource.PAYMENTS, "Pending", psp_reference=PSP)
    foreign = result_event(EventSource.DETAILS, "Authorised", psp_reference=OTHER_PSP)
    fold = fold_all(CNY, [pending, foreign])
    assert fold.view.psp_reference == PSP
    assert fold.view.state is PaymentState.PENDING
    assert fold.decisions[-1].conflict is ConflictKind.PSP_REFERENCE_MISMATCH


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_known_psp_reference_keeps_the_fold_order_independent(data: st.DataObject) -> None:
    # Events for another payment (a different pspReference) are mixed in; once the
    # payment's own pspReference is known they never count, whatever the order.
    amount = data.draw(amounts)
    events = data.draw(event_sets(amount, psps=(PSP, OTHER_PSP, None)))
    expected = model_state(amount, events, psp=PSP)
    summary = model_summary(amount, events, psp=PSP)
    for _ in range(3):
        fold = fold_all(amount, data.draw(deliveries(events)), psp=PSP)
        assert fold.view.state.value == expected
        assert fold.summary == summary
        assert_valid_path(fold.history)
        for decision, event in zip(fold.decisions, fold.events, strict=True):
            if event.psp_reference == OTHER_PSP and model_implied(event) is not None:
                assert decision.outcome is Outcome.CONFLICT
            if event.psp_reference == OTHER_PSP:
                assert not decision.moved


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_events_implying_no_state_are_recorded_never_conflicts(data: st.DataObject) -> None:
    """A refund or capture has its own pspReference and may be partial: that is no conflict."""
    amount = data.draw(amounts)
    state = data.draw(st.sampled_from(list(PaymentState)))
    psp = data.draw(st.sampled_from([None, PSP]))
    event = data.draw(
        (api_events(amount) | webhooks(amount, "item")).filter(lambda e: model_implied(e) is None)
    )
    decision = decide(PaymentView(state, amount, psp_reference=psp), event, PaymentMachine())
    assert decision.outcome in (Outcome.RECORDED, Outcome.UNEXPECTED)
    assert decision.conflict is None
    assert decision.new_state is state
    assert not decision.takes_summary
    assert not decision.fills_psp_reference


# -- which Adyen payment is ours --------------------------------------------------------


def _auth_webhook(psp: str, key: str, *, success: bool = True) -> PaymentEvent:
    return webhook_event(
        "AUTHORISATION", success, dedup_key=key, psp_reference=psp, amount_value=1130,
        amount_currency="CNY", reason=None if success else "Refused",
    )  # fmt: skip


# Another Adyen payment reused the merchant reference and failed; ours was authorised.
FOREIGN_FAILURE = _auth_webhook(OTHER_PSP, "foreign", success=False)
GENUINE_AUTHORISATION = _auth_webhook(PSP, "genuine")
DETAILS_AUTHORISED = result_event(
    EventSource.DETAILS, "Authorised", psp_reference=PSP, amount_value=1130, amount_currency="CNY"
)
STORY = [FOREIGN_FAILURE, GENUINE_AUTHORISATION, DETAILS_AUTHORISED]


@settings(max_examples=60, deadline=None)
@given(st.permutations(STORY + STORY[:1]), st.booleans())
def test_a_failure_of_another_payment_first_never_hides_the_authorisation(
    deliveries: list[PaymentEvent], details_first: bool
) -> None:
    """The reported story, in every order: the /payments answer named no pspReference."""
    if details_first:
        deliveries = [DETAILS_AUTHORISED, *deliveries]
    fold = fold_all(CNY, deliveries)
    assert fold.view.state is PaymentState.AUTHORISED
    assert fold.view.psp_reference == PSP
    assert fold.view.psp_confirmed
    assert fold.summary == ("Authorised", None)
    assert not fold.deferred
    conflict = fold.outcomes[FOREIGN_FAILURE.key]
    assert (conflict.outcome, conflict.conflict) == (
        Outcome.CONFLICT,
        ConflictKind.PSP_REFERENCE_MISMATCH,
    )
    assert fold.conflicts == 1
    assert PaymentState.REFUSED not in fold.history


def test_the_story_in_arrival_order_step_by_step() -> None:
    machine = PaymentMachine()
    view = PaymentView(PaymentState.PENDING, CNY)
    first = decide(view, FOREIGN_FAILURE, machine, reconsiders=True)
    assert (first.outcome, first.new_state, first.fills_psp_reference) == (
        Outcome.DEFERRED,
        PaymentState.PENDING,
        False,
    )
    view = view.after(FOREIGN_FAILURE, first)
    second = decide(view, GENUINE_AUTHORISATION, machine, reconsiders=True)
    assert second.moved and second.fills_psp_reference and not second.confirms_psp_reference
    view = view.after(GENUINE_AUTHORISATION, second)
    view, [(event, again)] = reconsider(view, [FOREIGN_FAILURE], machine)
    assert event is FOREIGN_FAILURE and again.conflict is ConflictKind.PSP_REFERENCE_MISMATCH
    third = decide(view, DETAILS_AUTHORISED, machine, reconsiders=True)
    assert third.outcome is Outcome.RECORDED and third.confirms_psp_reference
    assert view.after(DETAILS_AUTHORISED, third).psp_confirmed


@pytest.mark.parametrize("reconsiders", [True, False])
@pytest.mark.parametrize("failure", [FOREIGN_FAILURE, *FAILURES[3:]], ids=["foreign", "f1", "f2"])
def test_a_failure_never_gives_the_psp_reference(failure: PaymentEvent, reconsiders: bool) -> None:
    decision = decide(PaymentView(PaymentState.PENDING, CNY), failure, PaymentMachine(),
                      reconsiders=reconsiders)  # fmt: skip
    assert not decision.fills_psp_reference
    # A caller that does not reconsider gets the failure at once: nothing is left waiting.
    expected = Outcome.DEFERRED if reconsiders else Outcome.TRANSITION
    assert decision.outcome is expected


def test_a_deferred_failure_of_our_payment_counts_once_the_psp_reference_is_known() -> None:
    failure = _auth_webhook(PSP, "ours", success=False)
    pending = result_event(EventSource.DETAILS, "Pending", psp_reference=PSP)
    for order in ([failure, pending], [pending, failure]):
        fold = fold_all(CNY, order)
        assert fold.view.state is PaymentState.REFUSED
        assert fold.summary == ("Refused", "Refused")
        assert fold.conflicts == 0 and not fold.deferred


def test_a_failure_of_an_unknown_payment_waits_while_nothing_names_ours() -> None:
    fold = fold_all(CNY, [FOREIGN_FAILURE])
    assert fold.view.state is PaymentState.CREATED
    assert fold.view.psp_reference is None
    assert list(fold.deferred) == [FOREIGN_FAILURE.key]


def test_settling_an_attempt_counts_the_failures_nothing_else_claimed() -> None:
    """An attempt Adyen only reported as closed ends Refused once it is over."""
    closed = _foreign_failure("closed", CNY, offer_closed=True)
    fold = fold_all(CNY, [result_event(EventSource.PAYMENTS, "Pending"), closed])
    assert fold.view.state is PaymentState.PENDING
    view, [(event, decision)] = reconsider(
        fold.view, fold.deferred.values(), PaymentMachine(), settle=True
    )
    assert event is closed and decision.moved
    assert (view.state, view.psp_reference) == (PaymentState.REFUSED, None)
    # Settling an attempt whose pspReference is known decides as reconsidering does.
    known = PaymentView(PaymentState.PENDING, CNY, psp_reference=PSP)
    _, [(_, again)] = reconsider(known, [closed], PaymentMachine(), settle=True)
    assert again.conflict is ConflictKind.PSP_REFERENCE_MISMATCH


def test_adyen_answering_our_call_replaces_an_unconfirmed_psp_reference() -> None:
    machine = PaymentMachine()
    # An authorisation of another Adyen payment for our reference and amount came first.
    foreign = _auth_webhook(OTHER_PSP, "foreign-ok")
    view = PaymentView(PaymentState.PENDING, CNY)
    view = view.after(foreign, decide(view, foreign, machine, reconsiders=True))
    assert (view.psp_reference, view.psp_confirmed) == (OTHER_PSP, False)
    decision = decide(view, DETAILS_AUTHORISED, machine, reconsiders=True)
    assert decision.conflict is None
    assert decision.fills_psp_reference and decision.confirms_psp_reference
    view = view.after(DETAILS_AUTHORISED, decision)
    assert (view.psp_reference, view.psp_confirmed) == (PSP, True)
    # Once confirmed, only the same payment counts, whoever speaks.
    for other in (
        _auth_webhook(OTHER_PSP, "late"),
        result_event(EventSource.DETAILS, "Authorised", psp_reference=OTHER_PSP),
    ):
        assert decide(view, other, machine).conflict is ConflictKind.PSP_REFERENCE_MISMATCH


def test_an_answer_that_cannot_tell_the_payment_does_not_replace_it() -> None:
    blind = result_event(
        EventSource.DETAILS, "Authorised", psp_reference=OTHER_PSP, authoritative=False
    )
    view = PaymentView(PaymentState.PENDING, CNY, psp_reference=PSP)
    decision = decide(view, blind, PaymentMachine())
    assert decision.conflict is ConflictKind.PSP_REFERENCE_MISMATCH
    assert not decision.fills_psp_reference


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.data())
def test_failures_of_other_payments_never_change_the_outcome(data: st.DataObject) -> None:
    """Payments of others that reuse the reference only fail: order never matters."""
    amount = data.draw(amounts)
    ours = data.draw(event_sets(amount))
    foreign = [
        _foreign_failure(f"foreign-{i}", amount, data.draw(st.booleans()))
        for i in range(data.draw(st.integers(0, 3)))
    ]
    expected = model_state(amount, ours, PSP, deferring=True)
    summary = model_summary(amount, ours, PSP, deferring=True)
    known = any(gives_psp(e, amount) for e in ours)
    for _ in range(3):
        fold = fold_all(amount, data.draw(deliveries([*ours, *foreign])))
        assert fold.view.state.value == expected
        assert fold.summary == summary
        assert fold.view.psp_reference == (PSP if known else None)
        for event in foreign:
            outcome = fold.outcomes[event.key].outcome
            assert outcome is (Outcome.CONFLICT if known else Outcome.DEFERRED)


def _foreign_failure(key: str, amount: Amount, offer_closed: bool) -> PaymentEvent:
    return webhook_event(
        "OFFER_CLOSED" if offer_closed else "AUTHORISATION", offer_closed, dedup_key=key,
        psp_reference=OTHER_PSP, amount_value=amount.value, amount_currency=amount.currency,
    )  # fmt: skip


def test_the_story_for_a_caller_that_does_not_reconsider() -> None:
    """Without reconsidering, the failure counts at once, but never names the payment."""
    machine = PaymentMachine()
    view = PaymentView(PaymentState.PENDING, CNY)
    for event in STORY:
        view = view.after(event, decide(view, event, machine))
    assert (view.state, view.psp_reference, view.psp_confirmed) == (
        PaymentState.AUTHORISED,
        PSP,
        True,
    )
