"""The transition table, as data, enforced by ``transitions``.

The table allows exactly the upward moves of the precedence order in
``states.py``; nothing else, and no ``to_<state>()`` shortcut
(``auto_transitions=False``). The machine is bound to a throw-away plain object
for one transition at a time, because ``transitions`` cannot bind to a
SQLModel row.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine, MachineError

from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import MiniProgramPayError

__all__ = ["TRANSITIONS", "InvalidTransitionError", "PaymentMachine", "mermaid_diagram"]

_C, _P, _E, _R, _A = (s.value for s in PaymentState)

# The one place where the allowed moves are declared.
TRANSITIONS: tuple[dict[str, Any], ...] = (
    {"trigger": "pend", "source": [_C], "dest": _P},
    {"trigger": "fail", "source": [_C, _P], "dest": _E},
    {"trigger": "refuse", "source": [_C, _P, _E], "dest": _R},
    {"trigger": "authorise", "source": [_C, _P, _E, _R], "dest": _A},
)

TRIGGERS: dict[PaymentState, str] = {
    PaymentState(t["dest"]): str(t["trigger"]) for t in TRANSITIONS
}

_MACHINE_OPTIONS: dict[str, Any] = {
    "states": [s.value for s in PaymentState],
    "transitions": [dict(t) for t in TRANSITIONS],
    "initial": _C,
    "auto_transitions": False,
}


class InvalidTransitionError(MiniProgramPayError):
    """A move the transition table does not allow (a bug, never bad input)."""

    code = "invalid_transition"


class _Subject:
    """Plain object the machine decorates for the duration of one transition."""

    state: str


class PaymentMachine:
    """Moves a payment from one state to another, only along the table."""

    def __init__(self) -> None:
        self._machine = Machine(model=None, **_MACHINE_OPTIONS)

    def advance(self, current: PaymentState, target: PaymentState) -> PaymentState:
        subject = _Subject()
        self._machine.add_model(subject, initial=current.value)
        try:
            trigger = getattr(subject, TRIGGERS[target]) if target in TRIGGERS else None
            if trigger is None:
                raise InvalidTransitionError(f"no transition leads to {target.value}")
            trigger()
        except MachineError as exc:
            raise InvalidTransitionError(
                f"{current.value} -> {target.value} is not in the transition table"
            ) from exc
        finally:
            self._machine.remove_model(subject)
        return PaymentState(subject.state)

    def allows(self, current: PaymentState, target: PaymentState) -> bool:
        trigger = TRIGGERS.get(target)
        return trigger is not None and current.value in self._sources(trigger)

    def _sources(self, trigger: str) -> set[str]:
        return {t.source for ts in self._machine.events[trigger].transitions.values() for t in ts}


def mermaid_diagram() -> str:
    """The state diagram as Mermaid text, generated from ``TRANSITIONS``."""
    from transitions.extensions import GraphMachine

    subject = _Subject()
    GraphMachine(
        model=subject,
        title="Payment",
        graph_engine="mermaid",
        show_state_attributes=False,
        **_MACHINE_OPTIONS,
    )
    drawn: str = subject.get_graph().draw(None)  # type: ignore[attr-defined]
    # transitions writes the title as bare front matter, which Mermaid ignores, and
    # marks the initial state as "active": neither belongs in a reference diagram.
    drawn = drawn.replace("---\nPayment\n---", "---\ntitle: Payment\n---", 1)
    return "\n".join(line for line in drawn.splitlines() if "s_active" not in line.split())
