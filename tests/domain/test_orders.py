"""Orders with several attempts: which attempt may start, which one is kept, which are refunded.

The properties fold each attempt's events through ``decide`` exactly as
``test_reconcile`` does, interleave the attempts' events in many orders (some
delivered twice), and after every event ask the order which refunds it owes, as a
caller that remembers the refunds it already asked for would.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import event as label
from hypothesis import given, settings
from hypothesis import strategies as st

from miniprogram_pay.domain.events import PaymentEvent, webhook_event
from miniprogram_pay.domain.machine import PaymentMachine
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.orders import (
    DEFAULT_PREPAY_LIFETIME,
    MAX_ATTEMPT_REFERENCE_CHARS,
    AttemptView,
    OrderView,
    Step,
    attempt_reference,
)
from miniprogram_pay.domain.states import PaymentState
from tests.domain.model import model_state
from tests.domain.test_reconcile import Fold, amounts, apply, event_sets, start

ORDER = "order-17"
CNY = Amount(1130, "CNY")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LIFETIME = DEFAULT_PREPAY_LIFETIME
ALL = list(PaymentState)


def attempt(number: int, state: PaymentState, started_at: datetime = T0) -> AttemptView:
    return AttemptView(number, attempt_reference(ORDER, number), state, CNY, started_at)


def order(*states: PaymentState) -> OrderView:
    """An order whose attempts 1, 2, ... are in ``states``, all started at T0."""
    return OrderView(ORDER, tuple(attempt(n, s) for n, s in enumerate(states, start=1)))


# -- which attempt may start -----------------------------------------------------------


def test_an_order_without_attempts_starts_the_first() -> None:
    empty = OrderView(ORDER)
    assert empty.next_step(T0) is Step.START
    assert empty.next_attempt_reference() == "order-17-1"
    assert empty.state is PaymentState.CREATED


@pytest.mark.parametrize("state", [PaymentState.CREATED, PaymentState.PENDING])
def test_an_open_attempt_is_reused_while_young_then_replaced(state: PaymentState) -> None:
    current = order(PaymentState.REFUSED, state)
    assert current.next_step(T0) is Step.REUSE
    assert current.next_step(T0 + LIFETIME - timedelta(seconds=1)) is Step.REUSE
    assert current.next_step(T0 + LIFETIME) is Step.START
    assert current.next_attempt_reference() == "order-17-3"


@pytest.mark.parametrize("state", [PaymentState.REFUSED, PaymentState.ERROR])
def test_a_failed_attempt_is_replaced_at_once(state: PaymentState) -> None:
    assert order(state).next_step(T0) is Step.START
    assert order(state).state is state


def test_the_lifetime_is_a_setting() -> None:
    pending = order(PaymentState.PENDING)
    assert pending.next_step(T0 + timedelta(minutes=10), timedelta(minutes=5)) is Step.START
    assert pending.next_step(T0 + timedelta(minutes=10), timedelta(hours=3)) is Step.REUSE


@given(st.lists(st.sampled_from(ALL), min_size=1, max_size=5), st.integers(0, 3))
def test_an_authorised_attempt_anywhere_means_paid_and_nothing_starts(
    states: list[PaymentState], position: int
) -> None:
    states.insert(min(position, len(states)), PaymentState.AUTHORISED)
    paid = order(*states)
    assert paid.state is PaymentState.AUTHORISED
    for later in (T0, T0 + 10 * LIFETIME):
        assert paid.next_step(later) is Step.PAID


@given(st.lists(st.sampled_from(ALL[:-1]), min_size=1, max_size=5), st.booleans())
def test_an_unpaid_order_shows_its_current_attempt(
    states: list[PaymentState], expired: bool
) -> None:
    unpaid = order(*states)
    assert unpaid.state is states[-1]
    assert unpaid.kept is None and unpaid.duplicates == ()
    step = unpaid.next_step(T0 + (LIFETIME if expired else timedelta(0)))
    # Never two open attempts: a new one starts only once the current one is not.
    reusable = states[-1] in (PaymentState.CREATED, PaymentState.PENDING) and not expired
    assert step is (Step.REUSE if reusable else Step.START)


def test_the_current_attempt_is_the_last_started_whatever_the_listing_order() -> None:
    listed = OrderView(ORDER, (attempt(2, PaymentState.PENDING), attempt(1, PaymentState.REFUSED)))
    assert listed.current is not None and listed.current.number == 2
    assert listed.next_step(T0) is Step.REUSE


def test_attempt_numbers_are_distinct_and_start_at_one() -> None:
    with pytest.raises(ValueError):
        OrderView(ORDER, (attempt(1, PaymentState.ERROR), attempt(1, PaymentState.PENDING)))
    with pytest.raises(ValueError):
        OrderView(ORDER, (attempt(0, PaymentState.PENDING),))


# -- attempt references ------------------------------------------------------------------


def test_attempt_references_read_as_the_order_and_a_number() -> None:
    assert [attempt_reference("order-17", n) for n in (1, 2, 10)] == [
        "order-17-1",
        "order-17-2",
        "order-17-10",
    ]
    for bad in (("order-17", 0), ("", 1)):
        with pytest.raises(ValueError):
            attempt_reference(*bad)


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=80), st.integers(1, 10_000)),
        min_size=2,
        max_size=6,
        unique=True,
    )
)
def test_attempt_references_are_unique_and_fit_adyen(pairs: list[tuple[str, int]]) -> None:
    references = [attempt_reference(order_reference, n) for order_reference, n in pairs]
    assert all(1 <= len(r) <= MAX_ATTEMPT_REFERENCE_CHARS for r in references)
    assert len(set(references)) == len(references)


def test_long_order_references_sharing_a_beginning_stay_apart() -> None:
    first, second = "x" * 79 + "a", "x" * 79 + "b"
    assert attempt_reference(first, 12) != attempt_reference(second, 12)
    assert attempt_reference(first, 12).startswith("x" * 60)
    assert len(attempt_reference(first, 12)) == MAX_ATTEMPT_REFERENCE_CHARS


# -- never charged twice -----------------------------------------------------------------


def test_later_authorised_attempts_are_duplicates_of_the_first() -> None:
    paid = order(PaymentState.AUTHORISED, PaymentState.REFUSED, PaymentState.AUTHORISED)
    assert paid.kept is not None and paid.kept.number == 1
    assert [d.number for d in paid.duplicates] == [3]
    assert [d.reference for d in paid.refunds_owed(())] == ["order-17-3"]
    assert paid.refunds_owed({"order-17-3"}) == ()


@dataclass
class OrderFold:
    """An order's attempts folded event by event, and the refunds asked for on the way."""

    attempts: dict[int, Fold]
    refunds: list[str] = field(default_factory=list)
    history: list[PaymentState] = field(default_factory=list)

    def view(self) -> OrderView:
        return OrderView(
            ORDER,
            tuple(
                AttemptView(n, attempt_reference(ORDER, n), fold.view.state, CNY, T0)
                for n, fold in self.attempts.items()
            ),
        )

    def deliver(self, number: int, event: PaymentEvent, machine: PaymentMachine) -> None:
        apply(self.attempts[number], event, machine)
        current = self.view()
        kept = current.kept
        assert kept is None or kept.reference not in self.refunds, "a refunded attempt is kept"
        self.refunds += [a.reference for a in current.refunds_owed(self.refunds)]
        self.history.append(current.state)


def fold_order(
    amount: Amount, count: int, ordering: Sequence[tuple[int, PaymentEvent]]
) -> tuple[OrderFold, OrderView]:
    machine = PaymentMachine()
    folded = OrderFold({n: start(amount) for n in range(1, count + 1)})
    for number, event in ordering:
        folded.deliver(number, event, machine)
    return folded, folded.view()


def _psp(number: int) -> str:
    return f"PSP{number:013d}"


def _authorisation(number: int, amount: Amount) -> PaymentEvent:
    return webhook_event(
        "AUTHORISATION", True, dedup_key=f"auth-{number}", psp_reference=_psp(number),
        amount_value=amount.value, amount_currency=amount.currency,
    )  # fmt: skip


@st.composite
def order_scenarios(
    draw: st.DrawFn,
) -> tuple[Amount, int, list[tuple[int, PaymentEvent]], list[list[tuple[int, PaymentEvent]]]]:
    """Attempts with random events each (some surely authorised), and orders to deliver them."""
    amount = draw(amounts)
    count = draw(st.integers(1, 3))
    tagged: list[tuple[int, PaymentEvent]] = []
    for number in range(1, count + 1):
        events = draw(event_sets(amount, (_psp(number), None)))
        if draw(st.booleans()):
            events.append(_authorisation(number, amount))
        tagged += [(number, e) for e in {e.key: e for e in events}.values()]
    orderings = [draw(_deliveries(tagged)) for _ in range(3)]
    return amount, count, tagged, [*orderings, list(reversed(orderings[0]))]


@st.composite
def _deliveries(
    draw: st.DrawFn, tagged: Sequence[tuple[int, PaymentEvent]]
) -> list[tuple[int, PaymentEvent]]:
    """The attempts' events interleaved in some order, some delivered more than once."""
    copies = [t for t in tagged for _ in range(1 + draw(st.integers(0, 2)))]
    return list(draw(st.permutations(copies)))


@settings(max_examples=150, deadline=None)
@given(order_scenarios())
def test_the_order_and_its_refunds_are_functions_of_the_set_of_events(
    scenario: tuple[
        Amount, int, list[tuple[int, PaymentEvent]], list[list[tuple[int, PaymentEvent]]]
    ],
) -> None:
    amount, count, tagged, orderings = scenario
    expected_states = {
        n: model_state(amount, [e for m, e in tagged if m == n], _psp(n), deferring=True)
        for n in range(1, count + 1)
    }
    authorised = sorted(n for n, s in expected_states.items() if s == "Authorised")
    expected_refunds = {attempt_reference(ORDER, n) for n in authorised[1:]}
    label(f"{len(authorised)} of {count} attempts authorised")
    for ordering in orderings:
        folded, final = fold_order(amount, count, ordering)
        assert {a.number: a.state.value for a in final.attempts} == expected_states
        kept = final.kept
        assert (kept.number if kept else None) == (authorised[0] if authorised else None)
        assert final.state.value == ("Authorised" if authorised else expected_states[count])
        # Every duplicate refunded, each once, and never the kept attempt.
        assert sorted(folded.refunds) == sorted(expected_refunds)
        assert {d.reference for d in final.duplicates} == expected_refunds
        # Once paid, the order stays paid, whatever arrives after.
        paid_at = folded.history.index(PaymentState.AUTHORISED) if authorised else len(ordering)
        assert set(folded.history[paid_at:]) <= {PaymentState.AUTHORISED}


def test_two_attempts_both_authorised_in_every_order_keep_one_and_refund_the_other() -> None:
    """An expired Pending attempt authorised late, after a second attempt was paid."""
    refusal = webhook_event(
        "AUTHORISATION", False, dedup_key="refused-2", psp_reference=_psp(2),
        amount_value=CNY.value, amount_currency=CNY.currency,
    )  # fmt: skip
    events = [
        (1, _authorisation(1, CNY)),
        (2, _authorisation(2, CNY)),
        (2, refusal),  # a stale refusal of the second attempt: a conflict, not a refund
        (1, _authorisation(1, CNY)),  # delivered twice
    ]
    orderings = list(itertools.permutations(events))
    for ordering in orderings:
        folded, final = fold_order(CNY, 2, ordering)
        assert final.state is PaymentState.AUTHORISED
        assert final.kept is not None and final.kept.number == 1
        assert folded.refunds == ["order-17-2"]
    assert len(orderings) == 24
