"""The pure payment domain: states, events, the transition table, reconciliation.

Nothing here performs I/O; everything is testable without a database or network.
"""

from __future__ import annotations

from miniprogram_pay.domain.events import EventSource, PaymentEvent, implied_state
from miniprogram_pay.domain.machine import TRANSITIONS, PaymentMachine, mermaid_diagram
from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES, Amount
from miniprogram_pay.domain.reconcile import ConflictKind, Decision, Outcome, PaymentView, decide
from miniprogram_pay.domain.states import PaymentState

__all__ = [
    "SUPPORTED_CURRENCIES",
    "TRANSITIONS",
    "Amount",
    "ConflictKind",
    "Decision",
    "EventSource",
    "Outcome",
    "PaymentEvent",
    "PaymentMachine",
    "PaymentState",
    "PaymentView",
    "decide",
    "implied_state",
    "mermaid_diagram",
]
