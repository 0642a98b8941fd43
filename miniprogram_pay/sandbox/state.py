"""The sandbox's memory: payments, refunds, idempotent answers, scenarios, faults, webhooks.

One ``Sandbox`` per app, reachable as ``app.state.sandbox``. Tests read it to see
what the merchant did and what it was sent; the control API is a JSON view of it.
Everything lives in memory and is lost on restart, which is what a sandbox wants.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from miniprogram_pay.sandbox.calls import CallLog
from miniprogram_pay.sandbox.config import SandboxConfig
from miniprogram_pay.sandbox.faults import (
    Fault,
    FaultKind,
    FaultQueue,
    FaultTarget,
    default_processed,
)
from miniprogram_pay.sandbox.idempotency import IdempotencyStore
from miniprogram_pay.sandbox.ids import (
    new_nonce_str,
    new_payment_data,
    new_prepay_id,
    new_psp_reference,
)
from miniprogram_pay.sandbox.paysign import md5_pay_sign
from miniprogram_pay.sandbox.scenarios import (
    DEFAULT_REFUND_SCENARIO,
    OK_STATUS,
    REFUND_SCENARIOS,
    SCENARIOS,
    RefundOutcome,
    RefundScenario,
    Scenario,
    UnknownScenarioError,
    WebhookStep,
    outcome_for,
    refund_scenario_in_reference,
    scenario_in_reference,
)
from miniprogram_pay.sandbox.validation import PaymentRequest, RefundRequest
from miniprogram_pay.sandbox.webhooks import DeliveryPlan, WebhookDelivery, WebhookSender

__all__ = ["Sandbox", "SandboxPayment", "SandboxRefund"]

OPENID_LENGTH = 28
# Adyen's own words for a refund of a payment that was never captured (its webhook example).
NOT_CAPTURED = "Transaction hasn't been captured, refund not possible"
# Adyen's wording for these two is unconfirmed: these are the sandbox's.
CURRENCY_MISMATCH = "Refund currency does not match the payment's currency"
EXCEEDS_BALANCE = "Refund amount exceeds the amount left to refund"


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _refusal_reason(steps: tuple[WebhookStep, ...]) -> str | None:
    return next((step.reason for step in steps if not step.success), None)


@dataclass(slots=True)
class SandboxRefund:
    """A refund as the simulated Adyen knows it; ``outcome`` is where its webhooks lead."""

    psp_reference: str
    payment_psp_reference: str
    reference: str | None
    amount: dict[str, Any]
    reason: str | None
    scenario: str
    external: bool
    outcome: RefundOutcome
    refusal_reason: str | None = None
    created_at: str = field(default_factory=_now)

    @property
    def holds_balance(self) -> bool:
        return self.outcome == "refunded"

    def to_dict(self) -> dict[str, Any]:
        return {
            "pspReference": self.psp_reference,
            "paymentPspReference": self.payment_psp_reference,
            "reference": self.reference,
            "amount": self.amount,
            "merchantRefundReason": self.reason,
            "scenario": self.scenario,
            "external": self.external,
            "outcome": self.outcome,
            "refusalReason": self.refusal_reason,
            "createdAt": self.created_at,
        }


@dataclass(slots=True)
class SandboxPayment:
    """A payment as the simulated Adyen knows it."""

    psp_reference: str
    merchant_reference: str
    amount: dict[str, Any]
    openid: str
    app_id: str
    scenario: str
    payment_data: str
    wx_params: dict[str, str]
    order_reference: str | None = None  # merchantOrderReference: the order this attempt pays
    # The /payments answer named paymentData, so /payments/details can name the payment;
    # without it the shopper's choice at WeChat settles the payment.
    payment_data_sent: bool = True
    created_at: str = field(default_factory=_now)
    result_code: str = "Pending"
    refusal_reason: str | None = None
    payment_status: str | None = None  # the errMsg that settled it; None = shopper not back yet
    wechat_outcome: str | None = None  # the errMsg /_sandbox/wechat/pay answered
    wechat_at: str | None = None  # when the shopper answered the pay sheet
    details_calls: int = 0
    refunds: list[SandboxRefund] = field(default_factory=list)
    held: DeliveryPlan | None = None  # webhooks waiting for ``Sandbox.release``
    # Adyen authorised it: its details answer said so, or it notifies AUTHORISATION success=true
    # (however late that arrives, or in whatever order): a refund can take its money.
    authorised: bool = False

    @property
    def refundable_value(self) -> int:
        """What is left to refund at the sandbox: refunded-and-kept money is gone."""
        kept = sum(int(r.amount["value"]) for r in self.refunds if r.holds_balance)
        return int(self.amount["value"]) - kept

    @property
    def prepay_id(self) -> str:
        return self.wx_params["package"].removeprefix("prepay_id=")

    @property
    def settled(self) -> bool:
        return self.payment_status is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "pspReference": self.psp_reference,
            "merchantReference": self.merchant_reference,
            "merchantOrderReference": self.order_reference,
            "amount": self.amount,
            "openid": self.openid,
            "appId": self.app_id,
            "scenario": self.scenario,
            "createdAt": self.created_at,
            "resultCode": self.result_code,
            "refusalReason": self.refusal_reason,
            "authorised": self.authorised,
            "paymentStatus": self.payment_status,
            "wechatOutcome": self.wechat_outcome,
            "wechatAt": self.wechat_at,
            "detailsCalls": self.details_calls,
            "heldWebhooks": len(self.held.steps) if self.held is not None else 0,
            "prepayId": self.prepay_id,
            "refundableValue": self.refundable_value,
            "refunds": [refund.to_dict() for refund in self.refunds],
        }


class Sandbox:
    """State and behaviour of one sandbox instance.

    Example (in a test)::

        sandbox: Sandbox = app.state.sandbox
        sandbox.set_scenario("order-1", "refused")
        ...
        await sandbox.drain(timeout=2)
        assert [d.success for d in sandbox.deliveries] == ["false"]
    """

    def __init__(
        self, config: SandboxConfig, *, webhook_client: httpx.AsyncClient | None = None
    ) -> None:
        self.config = config
        self.payments: dict[str, SandboxPayment] = {}
        self.refunds: dict[str, SandboxRefund] = {}
        self.idempotency = IdempotencyStore()
        self.calls = CallLog()
        self.faults = FaultQueue()
        self.scenario_overrides: dict[str, str] = {}
        self.refund_scenario_overrides: dict[str, str] = {}
        self.webhooks = WebhookSender(config, webhook_client)
        self.used_codes: set[str] = set()
        self.busy_codes: set[str] = set()
        self._faulted_references: set[str] = set()

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        """Every webhook delivery so far, in the order they were created."""
        return self.webhooks.deliveries

    # Scenarios and faults -------------------------------------------------

    def set_scenario(self, reference: str, scenario: str) -> None:
        """Run ``scenario`` for payments with this reference (also unsettled existing ones)."""
        self._check_scenario(SCENARIOS.get(scenario), scenario)
        self.scenario_overrides[reference] = scenario
        for payment in self.payments.values():
            if payment.merchant_reference == reference and not payment.settled:
                payment.scenario = scenario

    def scenario_for(self, reference: str, order_reference: str | None = None) -> Scenario:
        """Override, the ``retry`` of the order's previous attempt, the order's override,
        then ``sbx-<name>`` in the reference, then the default."""
        # A refund marker in a payment reference is checked now, so a typo fails at once.
        refund_scenario_in_reference(reference)
        name = (
            self.scenario_overrides.get(reference)
            or self._retry_scenario(order_reference)
            or (self.scenario_overrides.get(order_reference) if order_reference else None)
            or scenario_in_reference(reference)
            or self.config.default_scenario
        )
        scenario = SCENARIOS[name]
        self._check_scenario(scenario, name)
        return scenario

    def _retry_scenario(self, order_reference: str | None) -> str | None:
        attempts = self._attempts_of(order_reference)
        return SCENARIOS[attempts[-1].scenario].retry if attempts else None

    def _attempts_of(self, order_reference: str | None) -> list[SandboxPayment]:
        """The payments of one order, in the order they were created."""
        if order_reference is None:
            return []
        return [p for p in self.payments.values() if p.order_reference == order_reference]

    def _check_scenario(self, scenario: Scenario | None, name: str) -> None:
        if scenario is None:
            raise UnknownScenarioError(f"unknown scenario {name!r}; known: {sorted(SCENARIOS)}")
        if scenario.signing == "rotated" and len(self.config.hmac_keys) < 2:
            raise UnknownScenarioError(
                "scenario 'rotated-key' signs with hmac_keys[1]: give SandboxConfig two hmac_keys"
            )

    def set_refund_scenario(self, reference: str, scenario: str) -> None:
        """Run ``scenario`` for refunds with this reference, or of payments with it."""
        if scenario not in REFUND_SCENARIOS:
            known = sorted(REFUND_SCENARIOS)
            raise UnknownScenarioError(f"unknown refund scenario {scenario!r}; known: {known}")
        self.refund_scenario_overrides[reference] = scenario

    def refund_scenario_for(self, reference: str | None, payment: SandboxPayment) -> RefundScenario:
        """Overrides (the refund's reference, then its payment's), markers, then the default."""
        overrides = self.refund_scenario_overrides
        name = (
            (overrides.get(reference) if reference is not None else None)
            or overrides.get(payment.merchant_reference)
            or refund_scenario_in_reference(reference)
            or refund_scenario_in_reference(payment.merchant_reference)
            or DEFAULT_REFUND_SCENARIO
        )
        return REFUND_SCENARIOS[name]

    def inject_fault(
        self,
        kind: FaultKind,
        *,
        count: int = 1,
        target: FaultTarget = "any",
        processed: bool | None = None,
        delay_seconds: float | None = None,
    ) -> Fault:
        """Make the next ``count`` calls to ``target`` answer ``kind``."""
        if processed is None:
            processed = default_processed(kind)
        fault = Fault(kind, count, target, processed, delay_seconds)
        self.faults.add(fault)
        return fault

    def first_call_fault(self, payment: SandboxPayment) -> Fault | None:
        """adyen-5xx-once / adyen-timeout-once: the first /payments call per reference fails."""
        kind = SCENARIOS[payment.scenario].first_payments_call_fault
        if kind is None or payment.merchant_reference in self._faulted_references:
            return None
        self._faulted_references.add(payment.merchant_reference)
        return Fault(kind, 1, "payments", True)

    # Payments -------------------------------------------------------------

    def create_payment(self, request: PaymentRequest, scenario: Scenario) -> SandboxPayment:
        """Record a new payment with WeChat's signed wx.requestPayment parameters."""
        psp_reference = self._new_psp_reference()
        payment = SandboxPayment(
            psp_reference=psp_reference,
            merchant_reference=request.reference,
            amount=request.amount,
            openid=request.openid,
            app_id=request.app_id,
            scenario=scenario.name,
            payment_data=new_payment_data(),
            wx_params=self._wx_params(),
            order_reference=request.order_reference,
        )
        self.payments[psp_reference] = payment
        return payment

    def _new_psp_reference(self) -> str:
        psp_reference = new_psp_reference()
        while psp_reference in self.payments or psp_reference in self.refunds:
            psp_reference = new_psp_reference()
        return psp_reference

    def _wx_params(self) -> dict[str, str]:
        params = {
            "appId": self.config.wechat_app_id,
            "timeStamp": str(int(time.time())),
            "nonceStr": new_nonce_str(),
            "package": "prepay_id=" + new_prepay_id(),
            "signType": "MD5",
        }
        params["paySign"] = md5_pay_sign(params, self.config.paysign_key)
        return params

    def payment_by_data(self, payment_data: str) -> SandboxPayment | None:
        return next((p for p in self.payments.values() if p.payment_data == payment_data), None)

    def payment_by_prepay_id(self, prepay_id: str) -> SandboxPayment | None:
        return next((p for p in self.payments.values() if p.prepay_id == prepay_id), None)

    async def settle(self, payment: SandboxPayment, payment_status: str) -> None:
        """Apply the shopper's action once; later calls change nothing and send nothing."""
        if payment.settled:
            return
        scenario = SCENARIOS[payment.scenario]
        outcome = outcome_for(scenario, payment_status)
        payment.payment_status = payment_status
        payment.result_code = outcome.result_code
        payment.refusal_reason = outcome.refusal_reason
        payment.authorised = outcome.result_code == "Authorised" or any(
            step.event_code == "AUTHORISATION" and step.success for step in outcome.webhooks
        )
        amount = payment.amount
        if scenario.amount_delta:
            amount = {**amount, "value": int(amount["value"]) + scenario.amount_delta}
        plan = DeliveryPlan(
            psp_reference=payment.psp_reference,
            merchant_reference=payment.merchant_reference,
            amount=amount,
            steps=outcome.webhooks,
            signing=scenario.signing,
            copies=scenario.copies,
        )
        if scenario.held and plan.steps:
            payment.held = plan
        else:
            task = self.webhooks.start(plan)
            if task is not None and scenario.webhooks_before_details:
                # Shielded: a caller that gives up must not cancel Adyen's deliveries.
                await asyncio.shield(task)
        if payment.authorised:
            self._authorise_late_attempts(payment)

    def _authorise_late_attempts(self, paid: SandboxPayment) -> None:
        """``expired-paid-late``: an earlier attempt of the order is authorised after all."""
        for late in self._attempts_of(paid.order_reference):
            if late is paid or late.authorised or not SCENARIOS[late.scenario].paid_late:
                continue
            # The shopper did pay it: a details call for it now answers Authorised.
            late.payment_status = late.payment_status or OK_STATUS
            late.result_code, late.refusal_reason, late.authorised = "Authorised", None, True
            self.webhooks.start(
                DeliveryPlan(
                    psp_reference=late.psp_reference,
                    merchant_reference=late.merchant_reference,
                    amount=late.amount,
                    steps=(WebhookStep("AUTHORISATION", True),),
                    signing="primary",
                    copies=1,
                )
            )

    def release(self, payment: SandboxPayment) -> bool:
        """Send the payment's held webhooks now; False when none are held."""
        plan, payment.held = payment.held, None
        if plan is None:
            return False
        self.webhooks.start(plan)
        return True

    # Refunds --------------------------------------------------------------

    async def refund(
        self,
        payment: SandboxPayment,
        request: RefundRequest,
        scenario: RefundScenario,
        *,
        external: bool = False,
    ) -> SandboxRefund:
        """Accept a refund like Adyen: record it, then say in webhooks how it went.

        A refund the payment cannot take (not authorised, another currency, more
        than is left) is accepted too and refused in its REFUND webhook.
        """
        refusal = self._refund_refusal(payment, request.amount)
        steps = (WebhookStep("REFUND", False, refusal),) if refusal else scenario.webhooks
        refund = SandboxRefund(
            psp_reference=self._new_psp_reference(),
            payment_psp_reference=payment.psp_reference,
            reference=request.reference,
            amount=request.amount,
            reason=request.reason,
            scenario=scenario.name,
            external=external,
            outcome="refused" if refusal else scenario.outcome,
            refusal_reason=refusal or _refusal_reason(steps),
        )
        payment.refunds.append(refund)
        self.refunds[refund.psp_reference] = refund
        plan = DeliveryPlan(
            psp_reference=refund.psp_reference,
            # Adyen's choice here is unconfirmed: the refund's reference when there is one.
            merchant_reference=request.reference or payment.merchant_reference,
            amount=request.amount,
            steps=steps,
            copies=scenario.copies,
            original_reference=payment.psp_reference,
        )
        task = self.webhooks.start(plan)
        if task is not None and scenario.webhooks_before_answer:
            await asyncio.shield(task)
        return refund

    async def refund_in_customer_area(
        self,
        payment: SandboxPayment,
        amount: dict[str, Any] | None = None,
        *,
        scenario: str = DEFAULT_REFUND_SCENARIO,
        reference: str | None = None,
    ) -> SandboxRefund:
        """A refund made by hand in Adyen's Customer Area: the merchant hears only webhooks.

        ``amount`` defaults to the payment's whole amount.
        """
        chosen = REFUND_SCENARIOS.get(scenario)
        if chosen is None:
            raise UnknownScenarioError(f"unknown refund scenario {scenario!r}")
        request = RefundRequest(dict(amount or payment.amount), reference, None)
        return await self.refund(payment, request, chosen, external=True)

    def _refund_refusal(self, payment: SandboxPayment, amount: dict[str, Any]) -> str | None:
        if not payment.authorised:
            return NOT_CAPTURED
        if amount["currency"] != payment.amount["currency"]:
            return CURRENCY_MISMATCH
        if amount["value"] > payment.refundable_value:
            return EXCEEDS_BALANCE
        return None

    # WeChat ---------------------------------------------------------------

    def openid_for(self, shopper: str) -> str:
        """The stable openid of a shopper: "o" + 27 base64url characters of an HMAC."""
        digest = hmac.new(
            self.config.openid_secret.encode(), shopper.encode("utf-8"), hashlib.sha256
        ).digest()
        return "o" + base64.urlsafe_b64encode(digest).decode("ascii")[: OPENID_LENGTH - 1]

    # Lifecycle ------------------------------------------------------------

    # The documented test API takes a timeout; asyncio.timeout() would not say what is stuck.
    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109
        """Wait until every scheduled webhook delivery (with retries) has finished."""
        await self.webhooks.drain(timeout)

    async def reset(self) -> None:
        """Forget everything: payments, keys, scenarios, faults, codes, deliveries."""
        await self.webhooks.reset()
        self.payments.clear()
        self.refunds.clear()
        self.idempotency.clear()
        self.calls.clear()
        self.faults.clear()
        self.scenario_overrides.clear()
        self.refund_scenario_overrides.clear()
        self.used_codes.clear()
        self.busy_codes.clear()
        self._faulted_references.clear()

    async def aclose(self) -> None:
        """Cancel running deliveries and close the HTTP client the sandbox created."""
        await self.webhooks.aclose()
