"""A state diagram laid out from a transition table, for pages to draw as SVG (pure).

The states stand in a column in the order given (for our machines, their
precedence order); every allowed move is an arc on the right from one state to
another, and each state shows, on its left, the trigger that leads to it. The
``diagram.html`` macro draws it; ``pages.js`` marks the current state, the
states visited and the moves taken. Nothing is drawn that the table does not
allow, and nothing the table allows is left out.

Example::

    from miniprogram_pay.domain import TRANSITIONS, PaymentState

    diagram = state_diagram("payment", [s.value for s in PaymentState], TRANSITIONS)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Diagram", "DiagramEdge", "DiagramNode", "state_diagram"]

NODE_WIDTH, NODE_HEIGHT, NODE_GAP = 116, 30, 20
LABEL_WIDTH, MARGIN = 78, 10
BULGE_BASE, BULGE_PER_STEP = 16, 16
ATTACH_STEP = 3


@dataclass(frozen=True, slots=True)
class DiagramNode:
    state: str
    x: int
    y: int
    width: int
    height: int
    trigger: str | None  # the trigger that leads here, if any

    @property
    def centre_y(self) -> int:
        return self.y + self.height // 2


@dataclass(frozen=True, slots=True)
class DiagramEdge:
    source: str
    dest: str
    trigger: str
    path: str  # SVG path data


@dataclass(frozen=True, slots=True)
class Diagram:
    name: str  # unique on a page: ids in the SVG derive from it
    width: int
    height: int
    nodes: tuple[DiagramNode, ...]
    edges: tuple[DiagramEdge, ...]


def _sources(transition: Mapping[str, Any]) -> list[str]:
    source = transition["source"]
    return [str(source)] if isinstance(source, str) else [str(s) for s in source]


def _edges(transitions: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(source, dest, trigger) once each, in the table's order."""
    seen: dict[tuple[str, str], str] = {}
    for transition in transitions:
        for source in _sources(transition):
            seen.setdefault((source, str(transition["dest"])), str(transition["trigger"]))
    return [(source, dest, trigger) for (source, dest), trigger in seen.items()]


def _arc(source: DiagramNode, dest: DiagramNode, steps: int) -> str:
    """A curve on the right from ``source`` to ``dest``; longer moves bulge further out."""
    x = source.x + source.width
    down = dest.y > source.y
    offset = ATTACH_STEP * steps
    y1 = source.centre_y + (offset if down else -offset)
    y2 = dest.centre_y - (offset if down else -offset)
    bulge = x + BULGE_BASE + BULGE_PER_STEP * (steps - 1)
    return f"M {x} {y1} C {bulge} {y1}, {bulge} {y2}, {x + 2} {y2}"


def state_diagram(
    name: str, states: Sequence[str], transitions: Sequence[Mapping[str, Any]]
) -> Diagram:
    """Lay out ``states`` (top to bottom) and every move ``transitions`` allows.

    ``transitions`` is a ``transitions``-style table: ``{"trigger", "source"
    (a state or a list), "dest"}``. Raises ``ValueError`` for a move between
    states that are not in ``states``.
    """
    edges = _edges(transitions)
    unknown = {state for edge in edges for state in edge[:2]} - set(states)
    if unknown:
        raise ValueError(f"the table names states the diagram does not have: {sorted(unknown)}")
    triggers = {dest: trigger for _, dest, trigger in edges}
    nodes = tuple(
        DiagramNode(
            state=state,
            x=MARGIN + LABEL_WIDTH,
            y=MARGIN + index * (NODE_HEIGHT + NODE_GAP),
            width=NODE_WIDTH,
            height=NODE_HEIGHT,
            trigger=triggers.get(state),
        )
        for index, state in enumerate(states)
    )
    by_state = {node.state: node for node in nodes}
    index = {state: position for position, state in enumerate(states)}
    drawn = tuple(
        DiagramEdge(
            source,
            dest,
            trigger,
            _arc(by_state[source], by_state[dest], abs(index[dest] - index[source])),
        )
        for source, dest, trigger in edges
    )
    longest = max((abs(index[d] - index[s]) for s, d, _ in edges), default=0)
    width = MARGIN * 2 + LABEL_WIDTH + NODE_WIDTH + BULGE_BASE + BULGE_PER_STEP * longest
    height = MARGIN * 2 + len(states) * NODE_HEIGHT + max(len(states) - 1, 0) * NODE_GAP
    return Diagram(name, width, height, nodes, drawn)
