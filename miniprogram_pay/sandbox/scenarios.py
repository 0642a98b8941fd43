"""Scenarios: what happens to a payment after the shopper acts, and to a refund, as data.

A scenario decides the ``/payments/details`` answer for ``requestPayment:ok``,
the webhooks that follow, and the delivery quirks (signing key, duplicates,
timing). A refund scenario decides the webhooks that follow a refund request.
The module is pure: no I/O, so the tables are easy to read and test.

A payment's scenario comes from, in order: an override set through the
control API, ``sbx-<scenario>`` inside its reference, the configured default.
A refund's comes from an override for its own reference, then for its
payment's, then ``sbx-refund-<scenario>`` in its own reference, then in its
payment's, then ``refunded``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "DEFAULT_REFUND_SCENARIO",
    "REFUND_SCENARIOS",
    "SCENARIOS",
    "Outcome",
    "RefundScenario",
    "Scenario",
    "UnknownScenarioError",
    "WebhookStep",
    "outcome_for",
    "refund_scenario_in_reference",
    "refund_scenario_steps",
    "scenario_in_reference",
    "scenario_steps",
]

Signing = Literal["primary", "rotated", "bad"]
FirstCallFault = Literal["500", "timeout"]

REFERENCE_MARKER = "sbx-"
REFUND_MARKER = "sbx-refund-"
CANCEL_STATUS = "requestPayment:fail cancel"
OK_STATUS = "requestPayment:ok"
FAIL_PREFIX = "requestPayment:fail"


class UnknownScenarioError(ValueError):
    """A scenario name that the sandbox does not know."""


@dataclass(frozen=True, slots=True)
class WebhookStep:
    """One notification to send: ``success`` becomes the string "true"/"false"."""

    event_code: str
    success: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    """How a payment behaves once the shopper has paid (``requestPayment:ok``)."""

    name: str
    summary: str
    result_on_ok: str = "Authorised"
    refusal_reason: str | None = None
    webhooks_on_ok: tuple[WebhookStep, ...] = (WebhookStep("AUTHORISATION", True),)
    signing: Signing = "primary"
    copies: int = 1
    webhooks_before_details: bool = False
    first_payments_call_fault: FirstCallFault | None = None
    # Held webhooks wait until released (``Sandbox.release``); none at all leaves a stale payment.
    held: bool = False
    # The webhooks' amount differs from the payment's by this many minor units.
    amount_delta: int = 0
    # The scenario the order's next attempt runs (a payment with the same merchantOrderReference).
    retry: str | None = None
    # Authorised late (AUTHORISATION success=true) once a later attempt of its order is authorised.
    paid_late: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """The details answer and the webhooks that a shopper's action leads to."""

    result_code: str
    refusal_reason: str | None
    webhooks: tuple[WebhookStep, ...]


_AUTH_OK = WebhookStep("AUTHORISATION", True)


def _auth_failed(reason: str) -> WebhookStep:
    return WebhookStep("AUTHORISATION", False, reason)


_SCENARIO_LIST = (
    Scenario("authorised", "Details Authorised; AUTHORISATION success=true."),
    Scenario(
        "refused",
        "Details Refused; AUTHORISATION success=false.",
        result_on_ok="Refused",
        refusal_reason="Not enough balance",
        webhooks_on_ok=(_auth_failed("Not enough balance"),),
    ),
    Scenario(
        "error",
        "Details Error; AUTHORISATION success=false.",
        result_on_ok="Error",
        refusal_reason="Acquirer Error",
        webhooks_on_ok=(_auth_failed("Acquirer Error"),),
    ),
    Scenario(
        "pending-then-webhook",
        "Details Pending; AUTHORISATION success=true after webhook_delay_seconds.",
        result_on_ok="Pending",
    ),
    Scenario(
        "webhook-held",
        "Details Pending; AUTHORISATION success=true waits until you release it.",
        result_on_ok="Pending",
        held=True,
    ),
    Scenario(
        "webhook-never",
        "Details Pending; no webhook ever: the payment stays Pending (stale).",
        result_on_ok="Pending",
        webhooks_on_ok=(),
    ),
    Scenario(
        "webhook-before-details",
        "AUTHORISATION success=true is delivered (retries included) before details answers.",
        webhooks_before_details=True,
    ),
    Scenario(
        "duplicate-webhooks",
        "Details Authorised; the same notification 3 times, the first two concurrently.",
        copies=3,
    ),
    Scenario(
        "failure-then-success",
        "Details Pending; AUTHORISATION success=false, then success=true.",
        result_on_ok="Pending",
        webhooks_on_ok=(_auth_failed("Refused"), _AUTH_OK),
    ),
    Scenario(
        "webhook-twice-out-of-order",
        "AUTHORISATION success=false, then success=true, each delivered twice at once, all"
        " before details answers Authorised.",
        webhooks_on_ok=(_auth_failed("Refused"), _AUTH_OK),
        copies=2,
        webhooks_before_details=True,
    ),
    Scenario(
        "success-then-failure",
        "Details Authorised; AUTHORISATION success=true, then success=false.",
        webhooks_on_ok=(_AUTH_OK, _auth_failed("Refused")),
    ),
    Scenario(
        "wrong-amount",
        "Details Pending; AUTHORISATION success=true for 1 more minor unit than was paid.",
        result_on_ok="Pending",
        amount_delta=1,
    ),
    Scenario(
        "rotated-key", "Details Authorised; webhook signed with hmac_keys[1].", signing="rotated"
    ),
    Scenario(
        "bad-signature",
        "Details Authorised; webhook with a wrong HMAC signature, retried like Adyen.",
        signing="bad",
    ),
    Scenario(
        "adyen-5xx-once",
        "First /payments call creates the payment, then answers 500; the idempotent retry works.",
        first_payments_call_fault="500",
    ),
    Scenario(
        "adyen-timeout-once",
        "First /payments call creates the payment, then hangs; the idempotent retry succeeds.",
        first_payments_call_fault="timeout",
    ),
    Scenario(
        "offer-closed",
        "Details Pending; then OFFER_CLOSED success=true (the shopper never paid).",
        result_on_ok="Pending",
        webhooks_on_ok=(WebhookStep("OFFER_CLOSED", True),),
    ),
    Scenario(
        "retry-after-refusal",
        "Details Refused; AUTHORISATION success=false. The order's next attempt is authorised.",
        result_on_ok="Refused",
        refusal_reason="Not enough balance",
        webhooks_on_ok=(_auth_failed("Not enough balance"),),
        retry="authorised",
    ),
    Scenario(
        "expired-paid-late",
        "Details Pending, no webhook; the order's next attempt is authorised, then this one is"
        " too (AUTHORISATION success=true): the order is paid twice.",
        result_on_ok="Pending",
        webhooks_on_ok=(),
        retry="authorised",
        paid_late=True,
    ),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in _SCENARIO_LIST}

# Longest first, so "sbx-pending-then-webhook" never stops at a shorter name.
_NAMES_LONGEST_FIRST = sorted(SCENARIOS, key=len, reverse=True)


def _named(rest: str, names: list[str], reference: str) -> str:
    for name in names:
        if rest.startswith(name):
            return name
    raise UnknownScenarioError(f"reference {reference!r} names no known sandbox scenario")


def scenario_in_reference(reference: str) -> str | None:
    """The scenario named by ``sbx-<scenario>`` in a payment reference, if any.

    ``sbx-refund-<scenario>`` markers are the refunds' and are skipped. Raises
    ``UnknownScenarioError`` when a marker is there but names nothing known: a
    typo should fail loudly rather than run the default silently.
    """
    start = reference.find(REFERENCE_MARKER)
    while start >= 0 and reference.startswith(REFUND_MARKER, start):
        start = reference.find(REFERENCE_MARKER, start + len(REFUND_MARKER))
    if start < 0:
        return None
    return _named(reference[start + len(REFERENCE_MARKER) :], _NAMES_LONGEST_FIRST, reference)


def outcome_for(scenario: Scenario, payment_status: str) -> Outcome:
    """Map the Mini Program's ``res.errMsg`` and the scenario to an outcome.

    A shopper cancel is Cancelled in every scenario (AUTHORISATION success=false,
    reason "Cancelled"); any other failure is Refused with WeChat's detail.
    """
    if payment_status == OK_STATUS:
        return Outcome(scenario.result_on_ok, scenario.refusal_reason, scenario.webhooks_on_ok)
    if payment_status == CANCEL_STATUS:
        return Outcome("Cancelled", None, (_auth_failed("Cancelled"),))
    detail = payment_status.removeprefix(FAIL_PREFIX).strip() or "Refused"
    return Outcome("Refused", detail, (_auth_failed(detail),))


def is_payment_status(value: object) -> bool:
    """True for a ``wx.requestPayment`` errMsg (``requestPayment:...``)."""
    return isinstance(value, str) and value.startswith("requestPayment:")


_SIGNED = {"primary": "", "rotated": ", signed with hmac_keys[1]", "bad": ", wrong HMAC signature"}
_FIRST_CALL = {
    "500": "first /payments call: the payment is created, then 500",
    "timeout": "first /payments call: the payment is created, then no answer in time",
}


def _webhook_text(step: WebhookStep) -> str:
    reason = f' "{step.reason}"' if step.reason else ""
    return f"{step.event_code} success={'true' if step.success else 'false'}{reason}"


def _copies_text(copies: int) -> str:
    return f" x{copies}, the first two at once" if copies > 1 else ""


def scenario_steps(scenario: Scenario) -> tuple[str, ...]:
    """What the sandbox does, in order, once the shopper pays: for people (the console, docs)."""
    steps: list[str] = []
    if scenario.first_payments_call_fault is not None:
        steps.append(_FIRST_CALL[scenario.first_payments_call_fault])
    reason = f' "{scenario.refusal_reason}"' if scenario.refusal_reason else ""
    details = f"details answers {scenario.result_on_ok}{reason}"
    webhooks = [
        _webhook_text(step)
        + _copies_text(scenario.copies)
        + _SIGNED[scenario.signing]
        + (f", amount {scenario.amount_delta:+d}" if scenario.amount_delta else "")
        for step in scenario.webhooks_on_ok
    ]
    if scenario.held:
        webhooks = [text + ", held until you release it" for text in webhooks]
    if scenario.webhooks_before_details:
        steps += [*webhooks, details]
    else:
        steps += [details, *(webhooks or ["no webhook, ever"])]
    return tuple(steps)


RefundOutcome = Literal["refunded", "refused", "failed", "reversed"]


@dataclass(frozen=True, slots=True)
class RefundScenario:
    """What happens to a refund Adyen accepted, what it sends, how the webhooks travel.

    ``outcome`` is what really happened, whatever order the webhooks travel in:
    only a ``refunded`` refund keeps its amount out of the payment's balance.
    """

    name: str
    summary: str
    webhooks: tuple[WebhookStep, ...] = (WebhookStep("REFUND", True),)
    outcome: RefundOutcome = "refunded"
    copies: int = 1
    webhooks_before_answer: bool = False


_REFUNDED = WebhookStep("REFUND", True)
_REFUND_FAILED = WebhookStep("REFUND_FAILED", True, "Refund Failed")

_REFUND_SCENARIO_LIST = (
    RefundScenario("refunded", "REFUND success=true."),
    RefundScenario(
        "refused",
        "REFUND success=false (the refund is refused).",
        webhooks=(WebhookStep("REFUND", False, "Refund refused"),),
        outcome="refused",
    ),
    RefundScenario(
        "failed",
        "REFUND success=true, then REFUND_FAILED (an accepted refund fails later).",
        webhooks=(_REFUNDED, _REFUND_FAILED),
        outcome="failed",
    ),
    RefundScenario(
        "reversed",
        "REFUND success=true, then REFUNDED_REVERSED (the money comes back to the merchant).",
        webhooks=(_REFUNDED, WebhookStep("REFUNDED_REVERSED", True)),
        outcome="reversed",
    ),
    RefundScenario(
        "duplicated",
        "REFUND success=true 3 times, the first two concurrently.",
        copies=3,
    ),
    RefundScenario(
        "reordered",
        "REFUND_FAILED delivered before the REFUND success=true it undoes.",
        webhooks=(_REFUND_FAILED, _REFUNDED),
        outcome="failed",
    ),
    RefundScenario(
        "webhook-before-answer",
        "REFUND success=true is delivered (retries included) before /refunds answers.",
        webhooks_before_answer=True,
    ),
)

REFUND_SCENARIOS: dict[str, RefundScenario] = {s.name: s for s in _REFUND_SCENARIO_LIST}
DEFAULT_REFUND_SCENARIO = "refunded"
_REFUND_NAMES_LONGEST_FIRST = sorted(REFUND_SCENARIOS, key=len, reverse=True)


def refund_scenario_in_reference(reference: str | None) -> str | None:
    """The refund scenario named by ``sbx-refund-<scenario>`` in a reference, if any.

    Raises ``UnknownScenarioError`` for a marker that names nothing known.
    """
    start = -1 if reference is None else reference.find(REFUND_MARKER)
    if reference is None or start < 0:
        return None
    rest = reference[start + len(REFUND_MARKER) :]
    return _named(rest, _REFUND_NAMES_LONGEST_FIRST, reference)


def refund_scenario_steps(scenario: RefundScenario) -> tuple[str, ...]:
    """What the sandbox sends, in order, once it has accepted a refund."""
    webhooks = [_webhook_text(step) + _copies_text(scenario.copies) for step in scenario.webhooks]
    answer = "/refunds answers received"
    return (*webhooks, answer) if scenario.webhooks_before_answer else (answer, *webhooks)
