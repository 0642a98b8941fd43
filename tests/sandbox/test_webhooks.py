"""Webhook delivery: acceptance, retries, records, drain and shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

import httpx
import pytest

from miniprogram_pay.adyen.hmac import verify_item
from miniprogram_pay.sandbox import Sandbox, SandboxConfig, create_sandbox_app
from tests.sandbox.helpers import WEBHOOK_URL, Harness, payment_request


async def test_a_refused_delivery_is_retried_until_accepted(harness: Harness) -> None:
    harness.receiver.scripted.extend([500, 503])
    await harness.pay("order-1")
    await harness.sandbox.drain(2)
    [delivery] = harness.sandbox.deliveries
    assert delivery.state == "accepted"
    assert [a.status_code for a in delivery.attempts] == [500, 503, 200]
    assert [a.number for a in delivery.attempts] == [1, 2, 3]


async def test_any_2xx_is_accepted(harness: Harness) -> None:
    harness.receiver.scripted.append(204)
    await harness.pay("order-1")
    await harness.sandbox.drain(2)
    assert [a.status_code for a in harness.sandbox.deliveries[0].attempts] == [204]


async def test_a_delivery_fails_after_the_retry_schedule(harness: Harness) -> None:
    harness.receiver.scripted.extend([500] * 10)
    await harness.pay("order-1")
    await harness.sandbox.drain(2)
    [delivery] = harness.sandbox.deliveries
    assert delivery.state == "failed"
    assert len(delivery.attempts) == 1 + len(harness.sandbox.config.webhook_retry_delays)


async def test_wrong_basic_auth_is_rejected_by_the_merchant(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(webhook_password="not-what-the-merchant-expects")
    await harness.pay("order-1")
    await harness.sandbox.drain(2)
    assert all(not r.auth_ok for r in harness.receiver.received)
    assert harness.sandbox.deliveries[0].state == "failed"


Handler = Callable[[httpx.Request], httpx.Response]


async def pay_through_mock(config: SandboxConfig, handler: Handler) -> Sandbox:
    """One authorised payment whose webhooks go to an ``httpx.MockTransport``."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as webhook_client:
        app = create_sandbox_app(config, webhook_client=webhook_client)
        sandbox: Sandbox = app.state.sandbox
        transport = httpx.ASGITransport(app=app)
        headers = {"X-API-Key": config.api_key}
        async with httpx.AsyncClient(transport=transport, base_url="http://s") as client:
            created = await client.post(
                "/adyen/v71/payments", json=payment_request(), headers=headers
            )
            data = created.json()["action"]["paymentData"]
            details = {"paymentData": data, "details": {"paymentStatus": "requestPayment:ok"}}
            await client.post("/adyen/v71/payments/details", json=details, headers=headers)
            await sandbox.drain(2)
        await sandbox.aclose()
    return sandbox


async def test_transport_errors_are_recorded_and_retried() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, text="[accepted]")

    config = SandboxConfig(webhook_url=WEBHOOK_URL, webhook_retry_delays=(0.01,))
    sandbox = await pay_through_mock(config, handler)
    first, second = sandbox.deliveries[0].attempts
    assert first.status_code is None
    assert "ConnectError" in (first.error or "")
    assert second.status_code == 200


async def test_mock_transport_sees_adyens_request_shape() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="[accepted]")

    config = SandboxConfig(webhook_url=WEBHOOK_URL)
    sandbox = await pay_through_mock(config, handler)
    [request] = seen
    assert str(request.url) == WEBHOOK_URL
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/json"
    expected = base64.b64encode(b"adyen:sandbox-webhook-password").decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    body = json.loads(request.content)
    assert set(body) == {"live", "notificationItems"}
    item = body["notificationItems"][0]["NotificationRequestItem"]
    assert verify_item(item, [config.hmac_key_bytes(0)]) == 0
    assert item["success"] == "true"
    [payment] = sandbox.payments.values()
    assert item["pspReference"] == payment.psp_reference


async def test_without_a_webhook_url_nothing_is_sent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no webhook expected")

    sandbox = await pay_through_mock(SandboxConfig(), handler)
    [payment] = sandbox.payments.values()
    assert payment.result_code == "Authorised"
    assert sandbox.deliveries == []


async def test_drain_times_out_when_deliveries_are_still_running(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(webhook_delay_seconds=1.0)
    await harness.pay("order-1")
    with pytest.raises(TimeoutError):
        await harness.sandbox.drain(0.02)


async def test_aclose_cancels_pending_deliveries(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(webhook_retry_delays=(5.0,))
    harness.receiver.scripted.append(500)
    await harness.pay("order-1")
    await asyncio.sleep(0.05)
    await harness.sandbox.aclose()
    assert [d.state for d in harness.sandbox.deliveries] == ["cancelled"]
    await harness.sandbox.drain(0.01)


async def test_the_lifespan_owns_and_closes_its_client() -> None:
    app = create_sandbox_app(SandboxConfig(webhook_url=WEBHOOK_URL))
    sandbox = app.state.sandbox
    async with app.router.lifespan_context(app):
        client = sandbox.webhooks._http()  # lazily created, so owned
        assert not client.is_closed
    assert client.is_closed
