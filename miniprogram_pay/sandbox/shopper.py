"""A scripted shopper: a Mini Program's payment flow played over real HTTP.

It does what the Mini Program in ``examples/miniprogram`` does, against the
merchant API, with the sandbox standing in for WeChat: ``wx.login`` (a sandbox
code), ``POST /session``, ``POST /payments``, ``wx.requestPayment`` (``POST
/_sandbox/wechat/pay``, which checks the paySign), ``POST /payments/details``,
then it waits for Adyen's webhooks and reads the payment's state from the server.
``miniprogram-pay demo`` and the end-to-end tests use it.

Example::

    async with httpx.AsyncClient() as client:
        shopper = Shopper(client, api_url=..., sandbox_url=..., admin_api_key=...)
        result = await shopper.pay("failure-then-success")
        assert result.state == result.expected
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import MiniProgramPayError
from miniprogram_pay.sandbox.scenarios import SCENARIOS

__all__ = ["EXPECTED", "Action", "PaymentResult", "Say", "Shopper", "expected_state", "mask"]

Action = Literal["ok", "cancel", "fail"]
Say = Callable[[str, str], None]
"""Told ``(label, text)`` for every step as it happens."""

A, R, P = PaymentState.AUTHORISED, PaymentState.REFUSED, PaymentState.PENDING
# The final state when the shopper pays (requestPayment:ok): the highest state
# implied by an event that agrees with the payment's money facts.
EXPECTED: dict[str, PaymentState] = {
    "authorised": A,
    "refused": R,
    "error": R,  # details Error, then AUTHORISATION success=false: Refused outranks Error
    "pending-then-webhook": A,
    "webhook-held": P,  # until the held webhook is released
    "webhook-never": P,  # stale: nothing ever settles it
    "webhook-before-details": A,
    "duplicate-webhooks": A,
    "failure-then-success": A,  # a later success upgrades a failure
    "webhook-twice-out-of-order": A,  # duplicates change nothing, the success upgrades
    "success-then-failure": A,  # a failure never downgrades; it is recorded as a conflict
    "wrong-amount": P,  # a webhook for another amount moves nothing
    "rotated-key": A,
    "bad-signature": A,  # the webhook is rejected; the details answer stands
    "adyen-5xx-once": A,
    "adyen-timeout-once": A,
    "offer-closed": R,
    # A single attempt: these scenarios' later attempts need a retry of the same order.
    "retry-after-refusal": R,
    "expired-paid-late": P,
}
SETTLE_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 0.05


def expected_state(scenario: str, action: Action = "ok") -> PaymentState:
    """What the server must end with: a cancel or a failure is Refused in every scenario."""
    return EXPECTED[scenario] if action == "ok" else PaymentState.REFUSED


def mask(openid: str) -> str:
    """An openid as the demo shows it."""
    return f"{openid[:4]}...{openid[-2:]}" if len(openid) > 8 else "..."


class FlowError(MiniProgramPayError):
    """A step of the flow got an answer it cannot continue with."""

    code = "flow_failed"


class _AdminRefused(Exception):
    """The host does not take the admin key it was given."""


@dataclass
class PaymentResult:
    """How one played payment ended, as the server tells it."""

    scenario: str
    action: Action
    reference: str
    expected: str
    state: str
    conflicts: list[str] = field(default_factory=list)
    history: list[str] = field(default_factory=list)
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.state == self.expected


def _quiet(label: str, text: str) -> None:
    pass


def _check(response: httpx.Response, step: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise FlowError(f"{step} answered {response.status_code}: {response.text[:200]}")
    body: dict[str, Any] = response.json()
    return body


class Shopper:
    """Plays payments against a merchant API (``api_url``, e.g. ``.../pay``) and a sandbox."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        api_url: str,
        sandbox_url: str,
        admin_api_key: str | None,
        say: Say = _quiet,
    ) -> None:
        self.client = client
        self.api_url = api_url.rstrip("/")
        self.sandbox_url = sandbox_url.rstrip("/")
        # Without the host's admin key, the shopper waits on the payment's state alone.
        self.admin = {"X-Admin-Key": admin_api_key} if admin_api_key else None
        self.say = say

    async def pay(
        self,
        scenario: str,
        *,
        action: Action = "ok",
        amount: Amount | None = None,
        name: str = "alice",
        order: dict[str, Any] | None = None,
        prefix: str = "demo",
        reference: str | None = None,
    ) -> PaymentResult:
        """One shopper, one order, the whole flow; the result is the server's word.

        Without ``order`` the shopper sends a reference naming the scenario
        (``<prefix>-sbx-<scenario>-<random>``) and ``amount``, for a host that
        takes the client's amount. With ``order`` (for a host with an order
        resolver, e.g. ``{"orderId": "A1001"}``) the host decides the reference
        and the amount, and the scenario is set for that reference before the
        shopper pays. ``reference`` pays that order again (a retry: the server starts
        its next attempt, whose Adyen behaviour is the order's scenario's ``retry``).
        """
        if scenario not in SCENARIOS:
            raise FlowError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
        if order is not None and SCENARIOS[scenario].first_payments_call_fault:
            raise FlowError(
                f"{scenario} acts on the first /payments call, before the host's reference is "
                "known: play it without an order, on a host that takes the client's amount"
            )
        started = time.monotonic()
        amount = amount or Amount(1130, "CNY")
        reference = reference or f"{prefix}-sbx-{scenario}-{secrets.token_hex(3)}"
        auth = await self._open_session(name)
        payment = await self._create_payment(auth, reference, amount, order=order)
        reference = str(payment.get("reference") or reference)
        if order is not None:
            await self._choose_scenario(reference, scenario)
        err_msg = await self._request_payment(payment, action)
        await self._submit_details(auth, reference, err_msg)
        webhooks = await self._await_webhooks(reference, payment.get("pspReference"), auth)
        status = await self._status(auth, reference)
        return PaymentResult(
            scenario=scenario,
            action=action,
            reference=reference,
            expected=expected_state(scenario, action).value,
            state=status["state"],
            conflicts=[c["kind"] for c in status.get("conflicts", [])],
            history=[h["to"] for h in status.get("history", [])],
            webhooks=webhooks,
            seconds=time.monotonic() - started,
        )

    async def _open_session(self, name: str) -> dict[str, str]:
        code = f"{name}.{secrets.token_hex(4)}"  # the sandbox logs "<name>.<anything>" in
        self.say("1 wx.login", f"code {code}")
        self.say("2 POST /session", "exchanging the code for a session")
        body = _check(
            await self.client.post(self.api_url + "/session", json={"code": code}), "session"
        )
        self.say("", f"-> 200 token issued, expires in {body['expires_in']} s")
        return {"Authorization": f"Bearer {body['token']}"}

    async def _create_payment(
        self,
        auth: dict[str, str],
        reference: str,
        amount: Amount,
        *,
        order: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        method = {"paymentMethod": {"type": "wechatpayMiniProgram"}}
        if order is None:
            self.say("3 POST /payments", f"{amount} for order {reference}")
            request = {**method, "reference": reference, "amount": amount.to_adyen()}
        else:
            self.say("3 POST /payments", f"order {json.dumps(order)}; the host decides the amount")
            request = {**order, **method}
        response = await self.client.post(self.api_url + "/payments", json=request, headers=auth)
        body = _check(response, "POST /payments")
        openid = await self._openid(body.get("pspReference"))
        self.say(
            "", f"-> 200 {body['state']}, pspReference {body['pspReference']}, shopper {openid}"
        )
        if not (body.get("redirect") or {}).get("data"):
            raise FlowError("POST /payments gave no wx.requestPayment parameters (redirect.data)")
        return body

    async def _choose_scenario(self, reference: str, scenario: str) -> None:
        response = await self.client.post(
            self.sandbox_url + "/_sandbox/scenarios",
            json={"reference": reference, "scenario": scenario},
        )
        _check(response, "sandbox scenario")
        self.say("", f"the sandbox plays {scenario} for {reference}")

    async def _openid(self, psp_reference: str | None) -> str:
        response = await self.client.get(f"{self.sandbox_url}/_sandbox/payments/{psp_reference}")
        return mask(response.json().get("openid", "")) if response.status_code == 200 else "?"

    async def _request_payment(self, payment: dict[str, Any], action: Action) -> str:
        params = payment["redirect"]["data"]
        body = {**params, "outcome": action}
        response = await self.client.post(self.sandbox_url + "/_sandbox/wechat/pay", json=body)
        err_msg: str = _check(response, "wx.requestPayment")["errMsg"]
        verdict = (
            "paySign rejected" if "paySign" in err_msg else f"paySign ok ({params['signType']})"
        )
        self.say("4 wx.requestPayment", f"{verdict}, shopper chose {action} -> {err_msg}")
        return err_msg

    async def _submit_details(self, auth: dict[str, str], reference: str, err_msg: str) -> None:
        self.say("5 POST /payments/details", f"paymentStatus {err_msg}")
        request = {"reference": reference, "details": {"paymentStatus": err_msg}}
        response = await self.client.post(
            self.api_url + "/payments/details", json=request, headers=auth
        )
        body = _check(response, "POST /payments/details")
        reason = f" ({body['refusalReason']})" if body.get("refusalReason") else ""
        self.say("", f"-> 200 {body['state']}, resultCode {body['resultCode']}{reason}")

    async def _await_webhooks(
        self, reference: str, psp_reference: str | None, auth: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        self.say("6 webhooks", "waiting for Adyen's notifications")
        drained = await self.client.post(
            self.sandbox_url + "/_sandbox/drain",
            json={"timeout_seconds": SETTLE_TIMEOUT_SECONDS},
            timeout=SETTLE_TIMEOUT_SECONDS + 5,
        )
        _check(drained, "sandbox drain")
        listing = _check(await self.client.get(self.sandbox_url + "/_sandbox/webhooks"), "webhooks")
        mine = [d for d in listing["deliveries"] if d["pspReference"] == psp_reference]
        for delivery in mine:
            self.say("", _describe(delivery))
        if not mine:
            self.say("", "none sent")
        if self.admin is not None:
            try:
                await self._await_merchant(reference, self.admin)
                return mine
            except _AdminRefused:
                self.say("", "the host refused the admin key: waiting on the payment's state")
        if auth is None:
            raise FlowError("without the host's admin key, give the shopper's auth to wait on")
        await self._await_final(auth, reference)
        return mine

    async def _await_merchant(self, reference: str, admin: dict[str, str]) -> None:
        """Until the merchant has applied this payment's webhooks and told the host."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if await self._merchant_idle(reference, admin):
                return
            await asyncio.sleep(POLL_SECONDS)
        raise FlowError(f"the merchant did not apply the webhooks of {reference} in time")

    async def _merchant_idle(self, reference: str, admin: dict[str, str]) -> bool:
        for status in ("received", "failed"):
            response = await self.client.get(
                self.api_url + "/admin/notifications", params={"status": status}, headers=admin
            )
            if response.status_code == 404:  # the host hides admin endpoints from a wrong key
                raise _AdminRefused
            rows = _check(response, "GET /admin/notifications")["notifications"]
            if any(row["merchantReference"] == reference for row in rows):
                return False
        health = _check(await self.client.get(self.api_url + "/health", headers=admin), "health")
        return int(health.get("outbox", {}).get("pending", 0)) == 0

    async def _await_final(self, auth: dict[str, str], reference: str) -> None:
        """Until the payment has a final state, or the settle time is over (it may stay Pending)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        url = f"{self.api_url}/payments/{reference}"
        while time.monotonic() < deadline:
            state = _check(await self.client.get(url, headers=auth), "GET /payments/{reference}")
            if PaymentState(state["state"]).is_final:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _status(self, auth: dict[str, str], reference: str) -> dict[str, Any]:
        response = await self.client.get(f"{self.api_url}/payments/{reference}", headers=auth)
        body = _check(response, "GET /payments/{reference}")
        path = " -> ".join(h["to"] for h in body.get("history", []))
        conflicts = ", ".join(c["kind"] for c in body.get("conflicts", []))
        self.say("7 GET /payments/{ref}", f"{body['state']} (history {path})")
        if conflicts:
            self.say("", f"conflicts recorded: {conflicts}")
        return body


def _describe(delivery: dict[str, Any]) -> str:
    attempts = delivery["attempts"]
    codes = ",".join(str(a["statusCode"] or "error") for a in attempts)
    what = f"{delivery['eventCode']} success={delivery['success']}"
    if delivery["copy"] > 1:
        what += f" (copy {delivery['copy']})"
    if delivery["signing"] != "primary":
        what += f" [{delivery['signing']} signature]"
    verdict = "accepted" if delivery["state"] == "accepted" else delivery["state"]
    plural = "s" if len(attempts) != 1 else ""
    return f"{what} -> {verdict} ({len(attempts)} attempt{plural}: {codes})"
