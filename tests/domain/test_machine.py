from __future__ import annotations

from itertools import product

import pytest
from transitions import Machine

from miniprogram_pay.domain.machine import (
    TRANSITIONS,
    InvalidTransitionError,
    PaymentMachine,
)
from miniprogram_pay.domain.states import PaymentState

STATES = list(PaymentState)
PAIRS = list(product(STATES, STATES))


def _upward(current: PaymentState, target: PaymentState) -> bool:
    return target.rank > current.rank


def _table_moves() -> set[tuple[str, str]]:
    return {(source, str(t["dest"])) for t in TRANSITIONS for source in t["source"]}


def test_table_holds_exactly_the_upward_moves() -> None:
    expected = {(a.value, b.value) for a, b in PAIRS if _upward(a, b)}
    assert _table_moves() == expected


def test_table_has_one_trigger_per_destination() -> None:
    destinations = [t["dest"] for t in TRANSITIONS]
    triggers = [t["trigger"] for t in TRANSITIONS]
    assert len(set(destinations)) == len(destinations)
    assert len(set(triggers)) == len(triggers)
    assert PaymentState.CREATED.value not in destinations


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=lambda s: s.value)
def test_allows_agrees_with_the_precedence_order(
    current: PaymentState, target: PaymentState
) -> None:
    assert PaymentMachine().allows(current, target) is _upward(current, target)


@pytest.mark.parametrize(
    ("current", "target"), [p for p in PAIRS if _upward(*p)], ids=lambda s: s.value
)
def test_advance_takes_every_upward_move(current: PaymentState, target: PaymentState) -> None:
    assert PaymentMachine().advance(current, target) is target


@pytest.mark.parametrize(
    ("current", "target"), [p for p in PAIRS if not _upward(*p)], ids=lambda s: s.value
)
def test_advance_refuses_every_other_move(current: PaymentState, target: PaymentState) -> None:
    with pytest.raises(InvalidTransitionError) as caught:
        PaymentMachine().advance(current, target)
    assert caught.value.code == "invalid_transition"


def test_downward_move_names_both_states() -> None:
    with pytest.raises(InvalidTransitionError, match="Authorised -> Refused"):
        PaymentMachine().advance(PaymentState.AUTHORISED, PaymentState.REFUSED)


def test_advance_releases_the_model_even_when_it_fails() -> None:
    machine = PaymentMachine()
    machine.advance(PaymentState.CREATED, PaymentState.PENDING)
    with pytest.raises(InvalidTransitionError):
        machine.advance(PaymentState.AUTHORISED, PaymentState.ERROR)
    inner: Machine = machine._machine
    assert inner.models == []


def test_a_bound_model_has_no_to_state_shortcut() -> None:
    machine = PaymentMachine()
    inner: Machine = machine._machine

    class Subject:
        state: str

    subject = Subject()
    inner.add_model(subject, initial=PaymentState.CREATED.value)
    try:
        assert not [name for name in dir(subject) if name.startswith("to_")]
        for state in PaymentState:
            assert not hasattr(subject, f"to_{state.value}")
        # The table's own triggers are there, and they still refuse a downward move.
        assert all(hasattr(subject, str(t["trigger"])) for t in TRANSITIONS)
        subject.authorise()  # type: ignore[attr-defined]
        assert subject.state == PaymentState.AUTHORISED.value
        assert not subject.may_refuse()  # type: ignore[attr-defined]
    finally:
        inner.remove_model(subject)


def test_every_pair_answers_as_a_fresh_machine_each_time_it_is_asked() -> None:
    """Kept answers: the same state, or the same refusal, as the table's own machine."""
    kept = PaymentMachine()
    for _ in range(3):
        for current, target in PAIRS:
            fresh = Machine(
                states=[s.value for s in STATES],
                transitions=[dict(t) for t in TRANSITIONS],
                initial=current.value,
                auto_transitions=False,
            )
            trigger = next((t["trigger"] for t in TRANSITIONS if t["dest"] == target.value), None)
            moved = trigger is not None and fresh.may_trigger(trigger)
            if moved:
                assert kept.advance(current, target) is target
            else:
                with pytest.raises(InvalidTransitionError):
                    kept.advance(current, target)
    assert kept._machine.models == []


def test_a_table_with_a_condition_or_callback_is_refused() -> None:
    """Kept answers hold only for plain tables: a condition could answer otherwise."""
    from miniprogram_pay.domain.machine import TableMachine

    table = [{"trigger": "pend", "source": ["Created"], "dest": "Pending", "conditions": "ok"}]
    with pytest.raises(ValueError, match="plain data"):
        TableMachine(PaymentState, table, PaymentState.CREATED)
