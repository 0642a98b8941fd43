"""Transition tables, as data, enforced by ``transitions``.

A table allows exactly the upward moves of a precedence order (the payment's in
``states.py``, the refund's in ``refunds.py``); nothing else, and no
``to_<state>()`` shortcut (``auto_transitions=False``). The machine is bound to
a throw-away plain object for one transition at a time, because ``transitions``
cannot bind to a SQLModel row. The tables have no conditions or callbacks, so the
machine's answer for a pair of states never changes: each pair is asked once and its
answer kept (binding a model costs more than every other step of deciding an event).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any, Generic, TypeVar

from transitions import Machine, MachineError

from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import MiniProgramPayError

__all__ = [
    "TRANSITIONS",
    "InvalidTransitionError",
    "PaymentMachine",
    "TableMachine",
    "draw_mermaid",
    "mermaid_diagram",
]

S = TypeVar("S", bound=StrEnum)

_C, _P, _E, _R, _A = (s.value for s in PaymentState)

# The one place where the payment's allowed moves are declared.
TRANSITIONS: tuple[dict[str, Any], ...] = (
    {"trigger": "pend", "source": [_C], "dest": _P},
    {"trigger": "fail", "source": [_C, _P], "dest": _E},
    {"trigger": "refuse", "source": [_C, _P, _E], "dest": _R},
    {"trigger": "authorise", "source": [_C, _P, _E, _R], "dest": _A},
)


class InvalidTransitionError(MiniProgramPayError):
    """A move the transition table does not allow (a bug, never bad input)."""

    code = "invalid_transition"


class _Subject:
    """Plain object the machine decorates for the duration of one transition."""

    state: str


def _options(
    states: Sequence[StrEnum], transitions: Sequence[dict[str, Any]], initial: StrEnum
) -> dict[str, Any]:
    return {
        "states": [s.value for s in states],
        "transitions": [dict(t) for t in transitions],
        "initial": initial.value,
        "auto_transitions": False,
    }


class TableMachine(Generic[S]):
    """Moves a subject from one state to another, only along a transition table."""

    def __init__(
        self, state_type: type[S], transitions: Sequence[dict[str, Any]], initial: S
    ) -> None:
        plain = {"trigger", "source", "dest"}
        if any(set(t) - plain for t in transitions):
            raise ValueError("a transition table is plain data: trigger, source, dest")
        self._state_type = state_type
        self._triggers = {state_type(t["dest"]): str(t["trigger"]) for t in transitions}
        self._machine = Machine(model=None, **_options(list(state_type), transitions, initial))
        # (current, target) -> the state reached, or why the table refuses the move.
        self._answers: dict[tuple[S, S], S | str] = {}

    def advance(self, current: S, target: S) -> S:
        answer = self._answers.get((current, target))
        if answer is None:
            # Threads may both ask for a new pair: they get the same answer.
            answer = self._answers[(current, target)] = self._ask(current, target)
        if isinstance(answer, self._state_type):
            return answer
        raise InvalidTransitionError(answer)

    def _ask(self, current: S, target: S) -> S | str:
        """The machine's own answer: the state reached, or the refusal's message."""
        try:
            return self._move(current, target)
        except InvalidTransitionError as exc:
            return str(exc)

    def _move(self, current: S, target: S) -> S:
        subject = _Subject()
        self._machine.add_model(subject, initial=current.value)
        try:
            trigger = self._triggers.get(target)
            if trigger is None:
                raise InvalidTransitionError(f"no transition leads to {target.value}")
            getattr(subject, trigger)()
        except MachineError as exc:
            raise InvalidTransitionError(
                f"{current.value} -> {target.value} is not in the transition table"
            ) from exc
        finally:
            self._machine.remove_model(subject)
        return self._state_type(subject.state)

    def allows(self, current: S, target: S) -> bool:
        trigger = self._triggers.get(target)
        return trigger is not None and current.value in self._sources(trigger)

    def _sources(self, trigger: str) -> set[str]:
        return {t.source for ts in self._machine.events[trigger].transitions.values() for t in ts}


class PaymentMachine(TableMachine[PaymentState]):
    """Moves a payment from one state to another, only along ``TRANSITIONS``."""

    def __init__(self) -> None:
        super().__init__(PaymentState, TRANSITIONS, PaymentState.CREATED)


def draw_mermaid(
    title: str, states: Sequence[S], transitions: Sequence[dict[str, Any]], initial: S
) -> str:
    """A state diagram as Mermaid text, drawn by ``transitions`` from a table."""
    from transitions.extensions import GraphMachine

    subject = _Subject()
    GraphMachine(
        model=subject,
        title=title,
        graph_engine="mermaid",
        show_state_attributes=False,
        **_options(states, transitions, initial),
    )
    drawn: str = subject.get_graph().draw(None)  # type: ignore[attr-defined]
    # transitions writes the title as bare front matter, which Mermaid ignores, and
    # marks the initial state as "active": neither belongs in a reference diagram.
    drawn = drawn.replace(f"---\n{title}\n---", f"---\ntitle: {title}\n---", 1)
    return "\n".join(line for line in drawn.splitlines() if "s_active" not in line.split())


def mermaid_diagram() -> str:
    """The payment state diagram as Mermaid text, generated from ``TRANSITIONS``."""
    return draw_mermaid("Payment", list(PaymentState), TRANSITIONS, PaymentState.CREATED)
