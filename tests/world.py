"""A whole in-process world for HTTP tests: a host app with the plugin mounted under
``/pay``, the sandbox standing in for Adyen and WeChat, and both wired together
through ``httpx.ASGITransport`` (no sockets). Builders for signed webhooks too.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from miniprogram_pay import MiniProgramPay, Settings, StateChange, create_app
from miniprogram_pay.adyen.hmac import sign_item
from miniprogram_pay.sandbox import Sandbox, SandboxConfig, create_sandbox_app

ADMIN_KEY = "test-admin-key-0123456789"
SESSION_SECRET = "test-session-secret-0123456789abcdef"
MERCHANT_BASE = "http://merchant.test"


class LateApp:
    """An ASGI app whose target is set later (the sandbox and the host refer to each other)."""

    def __init__(self) -> None:
        self.app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.app is not None
        await self.app(scope, receive, send)


def settings_for(config: SandboxConfig, database_url: str, **overrides: Any) -> Settings:
    """Merchant settings pointing at a sandbox configured by ``config``."""
    values: dict[str, Any] = {
        "adyen_api_key": config.api_key,
        "adyen_merchant_account": config.merchant_account,
        "adyen_hmac_keys": config.hmac_keys,
        "adyen_return_url": "https://merchant.test/return",
        "adyen_checkout_url": "http://sandbox.test/adyen/v71",
        "webhook_username": config.webhook_username,
        "webhook_password": config.webhook_password,
        "wechat_app_id": config.wechat_app_id,
        "wechat_app_secret": config.wechat_app_secret,
        "wechat_api_url": "http://sandbox.test/wechat",
        "session_secret": SESSION_SECRET,
        "admin_api_key": ADMIN_KEY,
        "allow_client_amount": True,
        "database_url": database_url,
        "adyen_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class World:
    pay: MiniProgramPay
    sandbox_app: Starlette
    client: httpx.AsyncClient
    settings: Settings
    config: SandboxConfig
    changes: list[StateChange] = field(default_factory=list)
    codes: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def sandbox(self) -> Sandbox:
        sandbox: Sandbox = self.sandbox_app.state.sandbox
        return sandbox

    async def login(self, shopper: str = "alice") -> dict[str, str]:
        """A Bearer header for ``shopper`` (a fresh single-use jsCode each time)."""
        code = f"{shopper}.{next(self.codes)}"
        r = await self.client.post("/pay/session", json={"code": code})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    async def pay_order(
        self, headers: dict[str, str], reference: str, value: int = 1130, currency: str = "CNY"
    ) -> httpx.Response:
        body = {
            "paymentMethod": {"type": "wechatpayMiniProgram"},
            "reference": reference,
            "amount": {"currency": currency, "value": value},
        }
        return await self.client.post("/pay/payments", json=body, headers=headers)

    async def details(
        self, headers: dict[str, str], reference: str, status: str = "requestPayment:ok"
    ) -> httpx.Response:
        body = {"reference": reference, "details": {"paymentStatus": status}}
        return await self.client.post("/pay/payments/details", json=body, headers=headers)

    async def status(self, reference: str) -> dict[str, Any]:
        r = await self.client.get(f"/pay/payments/{reference}", headers={"X-Admin-Key": ADMIN_KEY})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    async def settle(self) -> None:
        """Wait for the sandbox's webhooks, then apply and deliver everything due."""
        await self.sandbox.drain(10.0)
        await self.pay.drain()


@dataclass
class Wiring:
    """The parts a world is made of, before the plugin is built."""

    config: SandboxConfig
    sandbox_app: Starlette
    outbound: httpx.AsyncClient
    late: LateApp
    client: httpx.AsyncClient | None = None


@asynccontextmanager
async def wiring(
    config: SandboxConfig,
    *,
    outbound_transport: Callable[[ASGIApp], httpx.AsyncBaseTransport] = httpx.ASGITransport,
) -> AsyncIterator[Wiring]:
    """The sandbox and the clients between it and a host that ``connect`` plugs in later.

    Everything made here is closed on exit (the plugin is the caller's to stop first).
    """
    late = LateApp()
    webhook_client = httpx.AsyncClient(transport=httpx.ASGITransport(app=late))
    sandbox_app = create_sandbox_app(config, webhook_client=webhook_client)
    outbound = httpx.AsyncClient(transport=outbound_transport(sandbox_app))
    parts = Wiring(config, sandbox_app, outbound, late)
    try:
        yield parts
    finally:
        sandbox: Sandbox = sandbox_app.state.sandbox
        await sandbox.aclose()
        if parts.client is not None:
            await parts.client.aclose()
        await outbound.aclose()
        await webhook_client.aclose()


def connect(parts: Wiring, host: ASGIApp) -> httpx.AsyncClient:
    """Point the sandbox's webhooks at ``host`` and return a client for it."""
    parts.late.app = host
    parts.client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=host), base_url=MERCHANT_BASE
    )
    return parts.client


def default_config() -> SandboxConfig:
    return SandboxConfig(webhook_url=f"{MERCHANT_BASE}/pay/webhooks/adyen")


@asynccontextmanager
async def world(
    database_url: str,
    *,
    config: SandboxConfig | None = None,
    on_state_change: Callable[[StateChange], Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[World]:
    """Build a world; everything is closed on exit."""
    config = config or default_config()
    settings = settings_for(config, database_url, **overrides)
    changes: list[StateChange] = []

    async def record(change: StateChange) -> None:
        changes.append(change)
        if on_state_change is not None:
            await on_state_change(change)

    async with wiring(config) as parts:
        pay = create_app(settings, on_state_change=record, http_client=parts.outbound)
        client = connect(parts, Starlette(routes=[Mount("/pay", app=pay)]))
        try:
            yield World(pay, parts.sandbox_app, client, settings, config, changes)
        finally:
            await pay.stop()


def notification_item(
    *,
    psp_reference: str = "8815000000000001",
    merchant_reference: str = "order-1",
    merchant_account: str = "SandboxMerchantCN",
    value: int = 1130,
    currency: str = "CNY",
    event_code: str = "AUTHORISATION",
    success: str = "true",
    reason: str = "",
    key_hex: str | None = None,
    signature: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A NotificationRequestItem, signed with ``key_hex`` unless ``signature`` is given."""
    item: dict[str, Any] = {
        "pspReference": psp_reference,
        "merchantAccountCode": merchant_account,
        "merchantReference": merchant_reference,
        "amount": {"currency": currency, "value": value},
        "eventCode": event_code,
        "eventDate": "2026-11-27T10:00:00+01:00",
        "success": success,
        "reason": reason,
        "paymentMethod": "wechatpayMiniProgram",
        **extra,
    }
    if signature is None:
        assert key_hex is not None, "give key_hex or signature"
        signature = sign_item(item, bytes.fromhex(key_hex))
    item["additionalData"] = {"hmacSignature": signature}
    return item


def notification_body(*items: dict[str, Any], live: str = "false") -> bytes:
    return json.dumps(
        {"live": live, "notificationItems": [{"NotificationRequestItem": i} for i in items]}
    ).encode()


def basic_auth(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


async def eventually(
    check: Callable[[], Awaitable[Any]], *, seconds: float = 15.0, what: str = "the condition"
) -> Any:
    """Poll the async ``check`` until it returns something truthy, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.02)
