"""The examples run: each host, configured from the environment, takes one payment end to end.

The sandbox and the example each run on uvicorn at 127.0.0.1; everything between
them is real HTTP, as in a developer's first run of examples/README.md.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from miniprogram_pay.sandbox import DEFAULT_HMAC_KEY, SandboxConfig, create_sandbox_app
from tests.http.helpers import _free_socket, base_url, error_code, serving

pytestmark = pytest.mark.slow


def sandbox_env(sandbox: str, db_path: Path) -> dict[str, str]:
    """The environment examples/README.md tells a developer to export."""
    return {
        "MINIPROGRAM_PAY_ADYEN_API_KEY": "sandbox-api-key",
        "MINIPROGRAM_PAY_ADYEN_MERCHANT_ACCOUNT": "SandboxMerchantCN",
        "MINIPROGRAM_PAY_ADYEN_HMAC_KEYS": DEFAULT_HMAC_KEY,
        "MINIPROGRAM_PAY_ADYEN_CHECKOUT_URL": f"{sandbox}/adyen/v71",
        "MINIPROGRAM_PAY_ADYEN_RETURN_URL": "https://shop.example/return",
        "MINIPROGRAM_PAY_WEBHOOK_USERNAME": "adyen",
        "MINIPROGRAM_PAY_WEBHOOK_PASSWORD": "sandbox-webhook-password",
        "MINIPROGRAM_PAY_WECHAT_API_URL": f"{sandbox}/wechat",
        "MINIPROGRAM_PAY_WECHAT_APP_ID": "wxsandbox0000000001",
        "MINIPROGRAM_PAY_WECHAT_APP_SECRET": "sandbox-app-secret",
        "MINIPROGRAM_PAY_SESSION_SECRET": "example-session-secret-0123456789",
        "MINIPROGRAM_PAY_DATABASE_URL": f"sqlite+aiosqlite:///{db_path}",
    }


def load(module: str) -> Any:
    sys.modules.pop(module, None)
    sys.modules.pop("examples.starlette_host", None)
    return importlib.import_module(module)


@asynccontextmanager
async def example_running(
    module: str, attribute: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    shop_sock, sandbox_sock = _free_socket(), _free_socket()
    shop, sandbox = base_url(shop_sock), base_url(sandbox_sock)
    sandbox_app = create_sandbox_app(SandboxConfig(webhook_url=f"{shop}/pay/webhooks/adyen"))
    for name, value in sandbox_env(sandbox, tmp_path / "shop.db").items():
        monkeypatch.setenv(name, value)
    app = getattr(load(module), attribute)
    async with (
        serving(sandbox_app, sandbox_sock),
        serving(app, shop_sock),
        httpx.AsyncClient(base_url=shop) as client,
        httpx.AsyncClient(base_url=sandbox) as control,
    ):
        yield client, control


async def pay_order_a1001(client: httpx.AsyncClient, control: httpx.AsyncClient) -> None:
    """What the Mini Program does, with the sandbox standing in for wx.requestPayment."""
    r = await client.post("/pay/session", json={"code": "alice.1"})
    headers = {"Authorization": f"Bearer {r.json()['token']}"}
    method = {"type": "wechatpayMiniProgram"}
    r = await client.post(
        "/pay/payments",
        json={
            "paymentMethod": method,
            "orderId": "A1001",
            "amount": {"currency": "CNY", "value": 1},
        },
        headers=headers,
    )
    assert (r.status_code, error_code(r)) == (400, "client_amount_refused")
    r = await client.post(
        "/pay/payments", json={"paymentMethod": method, "orderId": "Z9"}, headers=headers
    )
    assert (r.status_code, error_code(r)) == (404, "order_not_found")
    r = await client.post(
        "/pay/payments", json={"paymentMethod": method, "orderId": "A1001"}, headers=headers
    )
    assert r.status_code == 200, r.text
    payment = r.json()
    assert (payment["reference"], payment["amount"]["value"]) == ("shop-A1001", 1130)
    wx = await control.post(
        "/_sandbox/wechat/pay", json={**payment["redirect"]["data"], "outcome": "ok"}
    )
    err_msg = wx.json()["errMsg"]
    assert err_msg == "requestPayment:ok"
    r = await client.post(
        "/pay/payments/details",
        json={"reference": payment["reference"], "details": {"paymentStatus": err_msg}},
        headers=headers,
    )
    assert r.json()["state"] == "Authorised"
    assert (await control.post("/_sandbox/drain", json={"timeout_seconds": 5})).status_code == 200
    for _ in range(100):  # on_state_change runs in the plugin's worker, just after the commit
        if (await client.get("/orders/A1001")).json()["paid"]:
            break
        await asyncio.sleep(0.05)
    assert (await client.get("/orders/A1001")).json() == {"orderId": "A1001", "paid": True}
    assert (await client.get("/orders/A1002")).json()["paid"] is False
    deliveries = (await control.get("/_sandbox/webhooks")).json()["deliveries"]
    assert [d["state"] for d in deliveries] == ["accepted"]


@pytest.mark.parametrize(
    ("module", "attribute"),
    [
        ("examples.starlette_host", "app"),
        ("examples.fastapi_host", "app"),
        ("examples.fastapi_host", "app_with_middleware"),
    ],
)
async def test_example_takes_a_payment(
    module: str, attribute: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with example_running(module, attribute, tmp_path, monkeypatch) as (client, control):
        await pay_order_a1001(client, control)


async def test_an_example_order_refused_then_paid_on_retry_is_marked_paid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The retry is attempt 2 (shop-A1001-2): the host still finds its order A1001."""
    async with example_running("examples.starlette_host", "app", tmp_path, monkeypatch) as (
        client,
        control,
    ):
        r = await client.post("/pay/session", json={"code": "alice.1"})
        headers = {"Authorization": f"Bearer {r.json()['token']}"}
        scenario = {"reference": "shop-A1001", "scenario": "retry-after-refusal"}
        assert (await control.post("/_sandbox/scenarios", json=scenario)).status_code < 300
        order = {"paymentMethod": {"type": "wechatpayMiniProgram"}, "orderId": "A1001"}
        states: list[tuple[str, str]] = []
        for _ in range(2):
            payment = (await client.post("/pay/payments", json=order, headers=headers)).json()
            wx = await control.post(
                "/_sandbox/wechat/pay", json={**payment["redirect"]["data"], "outcome": "ok"}
            )
            report = {"paymentStatus": wx.json()["errMsg"]}
            details = {"reference": payment["reference"], "details": report}
            r = await client.post("/pay/payments/details", json=details, headers=headers)
            states.append((payment["reference"], r.json()["state"]))
        assert states == [("shop-A1001", "Refused"), ("shop-A1001-2", "Authorised")]
        await control.post("/_sandbox/drain", json={"timeout_seconds": 5})
        for _ in range(100):  # on_state_change runs in the plugin's worker
            if (await client.get("/orders/A1001")).json()["paid"]:
                break
            await asyncio.sleep(0.05)
        assert (await client.get("/orders/A1001")).json() == {"orderId": "A1001", "paid": True}


def test_an_example_without_configuration_fails_naming_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from miniprogram_pay import ConfigurationError

    for name in sandbox_env("http://x", Path("x.db")):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="MINIPROGRAM_PAY_ADYEN_API_KEY"):
        load("examples.starlette_host")
    sys.modules.pop("examples.starlette_host", None)
