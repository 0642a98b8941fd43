"""The pure domain: orders and their attempts, payment and refund states, events,
transition tables, reconciliation.

Nothing here performs I/O; everything is testable without a database or network.
"""

from __future__ import annotations

from miniprogram_pay.domain.events import EventSource, PaymentEvent, implied_state
from miniprogram_pay.domain.ledger import (
    DEFAULT_REFUND_WINDOW,
    MAX_REFUNDS_PER_PAYMENT,
    RefundablePayment,
    RefundLedger,
    RefundRefusal,
    admit_refund,
    refund_ledger,
)
from miniprogram_pay.domain.machine import TRANSITIONS, PaymentMachine, mermaid_diagram
from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES, Amount
from miniprogram_pay.domain.orders import (
    DEFAULT_PREPAY_LIFETIME,
    AttemptView,
    OrderView,
    Step,
    attempt_reference,
)
from miniprogram_pay.domain.reconcile import (
    ConflictKind,
    Decision,
    Outcome,
    PaymentView,
    decide,
    reconsider,
)
from miniprogram_pay.domain.refunds import (
    REFUND_EVENT_CODES,
    REFUND_TRANSITIONS,
    RefundConflict,
    RefundDecision,
    RefundEvent,
    RefundMachine,
    RefundReason,
    RefundSource,
    RefundState,
    RefundView,
    apply_refund_decision,
    decide_refund,
    fold_refund,
    implied_refund_state,
    parse_refund_reason,
    refund_mermaid_diagram,
    refund_received_event,
    refund_rejected_event,
    refund_requested_event,
    refund_webhook_event,
)
from miniprogram_pay.domain.states import PaymentState

__all__ = [
    "DEFAULT_PREPAY_LIFETIME",
    "DEFAULT_REFUND_WINDOW",
    "MAX_REFUNDS_PER_PAYMENT",
    "REFUND_EVENT_CODES",
    "REFUND_TRANSITIONS",
    "SUPPORTED_CURRENCIES",
    "TRANSITIONS",
    "Amount",
    "AttemptView",
    "ConflictKind",
    "Decision",
    "EventSource",
    "OrderView",
    "Outcome",
    "PaymentEvent",
    "PaymentMachine",
    "PaymentState",
    "PaymentView",
    "RefundConflict",
    "RefundDecision",
    "RefundEvent",
    "RefundLedger",
    "RefundMachine",
    "RefundReason",
    "RefundRefusal",
    "RefundSource",
    "RefundState",
    "RefundView",
    "RefundablePayment",
    "Step",
    "admit_refund",
    "apply_refund_decision",
    "attempt_reference",
    "decide",
    "decide_refund",
    "fold_refund",
    "implied_refund_state",
    "implied_state",
    "mermaid_diagram",
    "parse_refund_reason",
    "reconsider",
    "refund_ledger",
    "refund_mermaid_diagram",
    "refund_received_event",
    "refund_rejected_event",
    "refund_requested_event",
    "refund_webhook_event",
]
