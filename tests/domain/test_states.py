from __future__ import annotations

from miniprogram_pay.domain.states import FINAL_STATES, PaymentState

PRECEDENCE = ["Created", "Pending", "Error", "Refused", "Authorised"]


def test_rank_is_the_documented_precedence_order() -> None:
    by_rank = sorted(PaymentState, key=lambda s: s.rank)
    assert [s.value for s in by_rank] == PRECEDENCE
    assert [s.rank for s in by_rank] == list(range(len(PRECEDENCE)))


def test_final_states_are_the_definitive_answers() -> None:
    assert {s.value for s in FINAL_STATES} == {"Error", "Refused", "Authorised"}
    assert [s.value for s in PaymentState if s.is_final] == ["Error", "Refused", "Authorised"]


def test_a_final_state_outranks_every_non_final_state() -> None:
    lowest_final = min(s.rank for s in FINAL_STATES)
    assert all(s.rank < lowest_final for s in PaymentState if not s.is_final)
