"""``state_diagram``: a layout of exactly the moves a transition table allows."""

from __future__ import annotations

import pytest

from miniprogram_pay.domain import REFUND_TRANSITIONS, TRANSITIONS, PaymentState, RefundState
from miniprogram_pay.pages import state_diagram


def _allowed(table: object) -> set[tuple[str, str]]:
    moves = set()
    for transition in table:  # type: ignore[attr-defined]
        sources = transition["source"]
        for source in [sources] if isinstance(sources, str) else sources:
            moves.add((source, transition["dest"]))
    return moves


@pytest.mark.parametrize(
    ("states", "table"),
    [(PaymentState, TRANSITIONS), (RefundState, REFUND_TRANSITIONS)],
    ids=["payment", "refund"],
)
def test_every_allowed_move_is_drawn_once_and_nothing_else(states: object, table: object) -> None:
    names = [s.value for s in states]  # type: ignore[attr-defined]
    diagram = state_diagram("d", names, table)  # type: ignore[arg-type]
    drawn = [(e.source, e.dest) for e in diagram.edges]
    assert len(drawn) == len(set(drawn))
    assert set(drawn) == _allowed(table)
    assert [n.state for n in diagram.nodes] == names


def test_states_stand_in_precedence_order_with_the_trigger_that_leads_to_them() -> None:
    diagram = state_diagram("payment", [s.value for s in PaymentState], TRANSITIONS)
    assert [(n.state, n.trigger) for n in diagram.nodes] == [
        ("Created", None),
        ("Pending", "pend"),
        ("Error", "fail"),
        ("Refused", "refuse"),
        ("Authorised", "authorise"),
    ]
    ys = [n.y for n in diagram.nodes]
    assert ys == sorted(ys)
    assert all(
        n.y + n.height <= diagram.height and n.x + n.width < diagram.width for n in diagram.nodes
    )


def test_a_longer_move_bulges_further_so_arcs_do_not_overlap() -> None:
    diagram = state_diagram("payment", [s.value for s in PaymentState], TRANSITIONS)
    bulge = {(e.source, e.dest): float(e.path.split("C ")[1].split()[0]) for e in diagram.edges}
    assert (
        bulge[("Created", "Pending")]
        < bulge[("Created", "Error")]
        < bulge[("Created", "Authorised")]
    )
    assert max(bulge.values()) < diagram.width


def test_a_table_naming_unknown_states_is_refused() -> None:
    with pytest.raises(ValueError, match="Archived"):
        state_diagram(
            "x", ["Created"], [{"trigger": "archive", "source": "Created", "dest": "Archived"}]
        )
