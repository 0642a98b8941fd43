"""The console in-process: the page's requests to the sandbox app, the host mounted beside it."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from miniprogram_pay.sandbox import SandboxConfig
from tests.world import ADMIN_KEY, MERCHANT_BASE, World

CONSOLE = {"X-Sandbox-Console": "1"}
API = f"{MERCHANT_BASE}/pay"


@dataclasses.dataclass
class Console:
    world: World
    client: httpx.AsyncClient  # on the sandbox app, as the page's fetch()

    async def relay(self, path: str, method: str = "GET", **extra: Any) -> dict[str, Any]:
        body = {"run": "run-1", "url": API + path, "method": method, **extra}
        answer = await self.client.post("/_sandbox/console/relay", json=body, headers=CONSOLE)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def play(self, reference: str, outcome: str = "ok") -> dict[str, Any]:
        """What the page does for one payment: the client module's requests, through the relay."""
        session = await self.relay("/session", "POST", data={"code": "alice.1"})
        auth = {"Authorization": f"Bearer {session['data']['token']}"}
        order = {"reference": reference, "amount": {"currency": "CNY", "value": 1130}}
        payment = await self.relay(
            "/payments",
            "POST",
            header=auth,
            data={**order, "paymentMethod": {"type": "wechatpayMiniProgram"}},
        )
        params = payment["data"]["redirect"]["data"]
        paid = await self.client.post("/_sandbox/wechat/pay", json={**params, "outcome": outcome})
        details = {"reference": reference, "details": {"paymentStatus": paid.json()["errMsg"]}}
        await self.relay("/payments/details", "POST", header=auth, data=details)
        await self.world.settle()
        return payment

    async def timeline(self, reference: str, **headers: str) -> httpx.Response:
        query = {"run": "run-1", "reference": reference, "api": API}
        return await self.client.get(
            "/_sandbox/console/timeline", params=query, headers={**CONSOLE, **headers}
        )


def config(**overrides: Any) -> SandboxConfig:
    values: dict[str, Any] = {
        "webhook_url": f"{MERCHANT_BASE}/pay/webhooks/adyen",
        "merchant_admin_key": ADMIN_KEY,
        **overrides,
    }
    return SandboxConfig(**values)
