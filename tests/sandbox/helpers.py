"""Test doubles and builders for the sandbox suite: a verifying merchant receiver,
request builders with overrides, and a harness that wires them together."""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from miniprogram_pay.adyen.hmac import verify_item
from miniprogram_pay.errors import SignatureError
from miniprogram_pay.sandbox import Sandbox, SandboxConfig, create_sandbox_app

SECOND_KEY = "280F1B655A1E730E7480B0DAEFAC8B84208D57C9059C78C670BBD00F762662EB"
ADYEN = "http://sandbox.test/adyen/v71"
WEBHOOK_URL = "http://merchant.test/webhooks/adyen"
_MISSING = object()


def payment_request(**overrides: Any) -> dict[str, Any]:
    """A valid /payments body; an override of ``_MISSING`` deletes the field."""
    body: dict[str, Any] = {
        "amount": {"currency": "CNY", "value": 1130},
        "merchantAccount": "SandboxMerchantCN",
        "reference": "order-1",
        "returnUrl": "https://shop.example/return",
        "countryCode": "CN",
        "paymentMethod": {
            "type": "wechatpayMiniProgram",
            "openid": "oSandboxShopper000000000000",
            "appId": "wxsandbox0000000001",
        },
    }
    for name, value in overrides.items():
        if value is _MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def refund_request(**overrides: Any) -> dict[str, Any]:
    """A valid /payments/{psp}/refunds body; an override of ``_MISSING`` deletes the field."""
    body: dict[str, Any] = {
        "merchantAccount": "SandboxMerchantCN",
        "amount": {"currency": "CNY", "value": 300},
        "reference": "order-1-refund-1",
    }
    for name, value in overrides.items():
        if value is _MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return body


def missing() -> Any:
    return _MISSING


def wx_params(body: dict[str, Any]) -> dict[str, str]:
    """The wx.requestPayment parameters, wherever the response style put them."""
    if "redirect" in body:
        params: dict[str, str] = body["redirect"]["data"]
    elif "sdkData" in body["action"]:
        params = body["action"]["sdkData"]
    else:
        params = body["action"]["data"]
    return params


@dataclass
class Received:
    """One webhook the merchant stand-in got, with what it made of it."""

    item: dict[str, Any]
    auth_ok: bool
    key_index: int | None
    status: int


@dataclass
class Receiver:
    """A merchant's webhook endpoint that verifies Basic auth and HMAC like ours must.

    ``scripted`` statuses are answered first (one per request) whatever the
    content; after that: 401 for bad auth or signature, else 200 ``[accepted]``.
    """

    keys: list[bytes]
    username: str = "adyen"
    password: str = "sandbox-webhook-password"
    scripted: deque[int] = field(default_factory=deque)
    received: list[Received] = field(default_factory=list)
    delay_seconds: float = 0.0
    in_flight: int = 0
    peak_in_flight: int = 0

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/webhooks/adyen", self.endpoint, methods=["POST"])])

    async def endpoint(self, request: Request) -> Response:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_seconds)
            return await self._handle(request)
        finally:
            self.in_flight -= 1

    async def _handle(self, request: Request) -> Response:
        body = await request.json()
        item = body["notificationItems"][0]["NotificationRequestItem"]
        auth_ok = request.headers.get("authorization") == self._expected_auth()
        try:
            key_index: int | None = verify_item(item, self.keys)
        except SignatureError:
            key_index = None
        status = self._status(auth_ok, key_index)
        self.received.append(Received(item, auth_ok, key_index, status))
        return PlainTextResponse("[accepted]" if status == 200 else "rejected", status)

    def _expected_auth(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def _status(self, auth_ok: bool, key_index: int | None) -> int:
        if self.scripted:
            return self.scripted.popleft()
        return 200 if auth_ok and key_index is not None else 401


@dataclass
class Harness:
    """A sandbox app, a client on its Adyen/WeChat/control URLs, and the merchant receiver."""

    app: Starlette
    sandbox: Sandbox
    client: httpx.AsyncClient
    receiver: Receiver
    webhook_client: httpx.AsyncClient

    async def post_payment(
        self, body: dict[str, Any] | None = None, *, key: str | None = None, **overrides: Any
    ) -> httpx.Response:
        headers = {"X-API-Key": self.sandbox.config.api_key}
        if key is not None:
            headers["Idempotency-Key"] = key
        payload = body if body is not None else payment_request(**overrides)
        return await self.client.post(f"{ADYEN}/payments", json=payload, headers=headers)

    async def post_details(
        self,
        payment_data: str | None,
        status: str = "requestPayment:ok",
        *,
        key: str | None = None,
    ) -> httpx.Response:
        """``payment_data`` None sends the details alone, as after a v71 redirect action."""
        headers = {"X-API-Key": self.sandbox.config.api_key}
        if key is not None:
            headers["Idempotency-Key"] = key
        body: dict[str, Any] = {"details": {"paymentStatus": status}}
        if payment_data is not None:
            body["paymentData"] = payment_data
        return await self.client.post(f"{ADYEN}/payments/details", json=body, headers=headers)

    async def post_refund(
        self,
        psp_reference: str,
        body: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        **overrides: Any,
    ) -> httpx.Response:
        headers = {"X-API-Key": self.sandbox.config.api_key}
        if key is not None:
            headers["Idempotency-Key"] = key
        payload = body if body is not None else refund_request(**overrides)
        url = f"{ADYEN}/payments/{psp_reference}/refunds"
        return await self.client.post(url, json=payload, headers=headers)

    async def paid(self, reference: str = "order-1") -> str:
        """An authorised payment whose webhooks have all been delivered; its pspReference."""
        body = await self.pay(reference)
        await self.sandbox.drain(2)
        self.receiver.received.clear()
        psp_reference: str = body["pspReference"]
        return psp_reference

    async def pay(self, reference: str, status: str = "requestPayment:ok") -> dict[str, Any]:
        """Create a payment and submit the shopper's result; the details answer."""
        # Like a merchant: one key per logical payment, one retry on a 5xx.
        created = await self.post_payment(reference=reference, key=f"pay-{reference}")
        if created.status_code >= 500:
            created = await self.post_payment(reference=reference, key=f"pay-{reference}")
        assert created.status_code == 200, created.text
        details = await self.post_details(created.json()["action"]["paymentData"], status)
        assert details.status_code == 200, details.text
        result: dict[str, Any] = details.json()
        return result

    async def aclose(self) -> None:
        await self.sandbox.aclose()
        await self.client.aclose()
        await self.webhook_client.aclose()


def make_harness(**config: Any) -> Harness:
    """A harness with webhooks on, two HMAC keys and tiny retry delays; override anything."""
    settings: dict[str, Any] = {
        "webhook_url": WEBHOOK_URL,
        "hmac_keys": (SandboxConfig().hmac_keys[0], SECOND_KEY),
        "webhook_retry_delays": (0.01, 0.01, 0.01),
        "timeout_fault_seconds": 0.01,
        **config,
    }
    sandbox_config = SandboxConfig(**settings)
    receiver = Receiver(keys=[binascii.unhexlify(k) for k in sandbox_config.hmac_keys])
    webhook_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=receiver.app()))
    app = create_sandbox_app(sandbox_config, webhook_client=webhook_client)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test"
    )
    return Harness(app, app.state.sandbox, client, receiver, webhook_client)
