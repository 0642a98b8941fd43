"""The sandbox's memory: payments, idempotent answers, scenarios, faults, webhooks.

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
    SCENARIOS,
    Scenario,
    UnknownScenarioError,
    outcome_for,
    scenario_in_reference,
)
from miniprogram_pay.sandbox.validation import PaymentRequest
from miniprogram_pay.sandbox.webhooks import DeliveryPlan, WebhookDelivery, WebhookSender

__all__ = ["Sandbox", "SandboxPayment"]

OPENID_LENGTH = 28


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
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    result_code: str = "Pending"
    refusal_reason: str | None = None
    payment_status: str | None = None  # the errMsg that settled it; None = shopper not back yet
    wechat_outcome: str | None = None  # the errMsg /_sandbox/wechat/pay answered
    details_calls: int = 0

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
            "amount": self.amount,
            "openid": self.openid,
            "appId": self.app_id,
            "scenario": self.scenario,
            "createdAt": self.created_at,
            "resultCode": self.result_code,
            "refusalReason": self.refusal_reason,
            "paymentStatus": self.payment_status,
            "wechatOutcome": self.wechat_outcome,
            "detailsCalls": self.details_calls,
            "prepayId": self.prepay_id,
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
        self.idempotency = IdempotencyStore()
        self.faults = FaultQueue()
        self.scenario_overrides: dict[str, str] = {}
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

    def scenario_for(self, reference: str) -> Scenario:
        """Override, then ``sbx-<name>`` in the reference, then the default."""
        name = (
            self.scenario_overrides.get(reference)
            or scenario_in_reference(reference)
            or self.config.default_scenario
        )
        scenario = SCENARIOS[name]
        self._check_scenario(scenario, name)
        return scenario

    def _check_scenario(self, scenario: Scenario | None, name: str) -> None:
        if scenario is None:
            raise UnknownScenarioError(f"unknown scenario {name!r}; known: {sorted(SCENARIOS)}")
        if scenario.signing == "rotated" and len(self.config.hmac_keys) < 2:
            raise UnknownScenarioError(
                "scenario 'rotated-key' signs with hmac_keys[1]: give SandboxConfig two hmac_keys"
            )

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
        psp_reference = new_psp_reference()
        while psp_reference in self.payments:
            psp_reference = new_psp_reference()
        payment = SandboxPayment(
            psp_reference=psp_reference,
            merchant_reference=request.reference,
            amount=request.amount,
            openid=request.openid,
            app_id=request.app_id,
            scenario=scenario.name,
            payment_data=new_payment_data(),
            wx_params=self._wx_params(),
        )
        self.payments[psp_reference] = payment
        return payment

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
        plan = DeliveryPlan(
            psp_reference=payment.psp_reference,
            merchant_reference=payment.merchant_reference,
            amount=payment.amount,
            steps=outcome.webhooks,
            signing=scenario.signing,
            copies=scenario.copies,
        )
        task = self.webhooks.start(plan)
        if task is not None and scenario.webhooks_before_details:
            # Shielded: a caller that gives up must not cancel Adyen's deliveries.
            await asyncio.shield(task)

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
        self.idempotency.clear()
        self.faults.clear()
        self.scenario_overrides.clear()
        self.used_codes.clear()
        self.busy_codes.clear()
        self._faulted_references.clear()

    async def aclose(self) -> None:
        """Cancel running deliveries and close the HTTP client the sandbox created."""
        await self.webhooks.aclose()
