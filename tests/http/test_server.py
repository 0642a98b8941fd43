"""The same contract over real sockets: the host on uvicorn (127.0.0.1), lifespan on.

The test client and the sandbox's webhook sender use real HTTP to the server;
the merchant's outbound calls to the sandbox stay in-process.
"""

from __future__ import annotations

import asyncio
from typing import Literal
from urllib.parse import quote

import pytest

from miniprogram_pay.sandbox import DEFAULT_HMAC_KEY
from tests.http.helpers import error_code, served_world, start_payment
from tests.world import ADMIN_KEY, basic_auth, notification_body, notification_item

pytestmark = pytest.mark.slow

Kind = Literal["starlette", "fastapi"]


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_a_payment_over_real_http(db_url: str, kind: Kind) -> None:
    async with served_world(db_url, kind=kind) as w:
        assert w.pay._started  # the host's lifespan started it before any request
        assert (await w.client.get("/hello")).json()["host"] == "hello"
        headers = await start_payment(w, "order-wire")
        r = await w.details(headers, "order-wire")
        assert r.json()["state"] == "Authorised"
        await w.settle()
        (delivery,) = w.sandbox.deliveries
        assert delivery.accepted
        assert [a.status_code for a in delivery.attempts] == [200]
        status = await w.status("order-wire")
        sources = [e["source"] for e in status["events"]]
        # The sandbox sends the webhook as it answers /payments/details: over real sockets
        # either may be recorded first (the end state does not depend on it).
        assert sources[0] == "payments" and sorted(sources[1:]) == ["details", "webhook"]
        r = await w.client.post("/pay/session", json={"code": "invalid.1"})
        assert (r.status_code, error_code(r)) == (400, "wechat_invalid_code")
        r = await w.client.post(
            "/pay/session", content=b"{", headers={"content-type": "application/json"}
        )
        assert (r.status_code, error_code(r)) == (400, "malformed_json")
    assert not w.pay._started  # and its shutdown stopped it


async def test_webhook_before_details_over_real_http(db_url: str) -> None:
    reference = "order-sbx-webhook-before-details"
    async with served_world(db_url, kind="fastapi") as w:
        headers = await start_payment(w, reference)
        assert (await w.details(headers, reference)).json()["state"] == "Authorised"
        await w.settle()
        status = await w.status(reference)
        assert [h["to"] for h in status["history"]] == ["Created", "Pending", "Authorised"]
        # The webhook was accepted before details answered, but over real sockets
        # "accepted" precedes "applied": either fact may be the one that moved it.
        assert status["history"][-1]["source"] in ("webhook", "details")
        assert {e["source"] for e in status["events"]} >= {"webhook", "details"}
        assert [c.state.value for c in w.changes] == ["Pending", "Authorised"]


async def test_concurrent_identical_webhooks_over_real_sockets(db_url: str) -> None:
    async with served_world(db_url) as w:
        await start_payment(w, "order-burst")
        (payment,) = w.sandbox.payments.values()
        body = notification_body(
            notification_item(
                psp_reference=payment.psp_reference,
                merchant_reference="order-burst",
                key_hex=DEFAULT_HMAC_KEY,
            )
        )
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        answers = await asyncio.gather(
            *(w.client.post("/pay/webhooks/adyen", content=body, headers=auth) for _ in range(10))
        )
        assert {(r.status_code, r.text) for r in answers} == {(200, "[accepted]")}
        await w.pay.drain()
        notes = (
            await w.client.get("/pay/admin/notifications", headers={"X-Admin-Key": ADMIN_KEY})
        ).json()["notifications"]
        assert [(n["deliveries"], n["status"]) for n in notes] == [(10, "applied")]
        status = await w.status("order-burst")
        assert [h["to"] for h in status["history"]] == ["Created", "Pending", "Authorised"]
        r = await w.client.post(
            "/pay/webhooks/adyen", content=body, headers=basic_auth("adyen", "x")
        )
        assert (r.status_code, error_code(r)) == (401, "webhook_auth_failed")


async def test_the_sandbox_retries_a_rejected_delivery_like_adyen(db_url: str) -> None:
    reference = "order-sbx-bad-signature"
    async with served_world(db_url) as w:
        headers = await start_payment(w, reference)
        await w.details(headers, reference)
        await w.settle()
        (delivery,) = w.sandbox.deliveries
        assert delivery.state == "failed"
        assert {a.status_code for a in delivery.attempts} == {401}
        assert len(delivery.attempts) == len(w.config.webhook_retry_delays) + 1


async def test_a_reference_with_a_slash_is_read_back_over_real_http(db_url: str) -> None:
    async with served_world(db_url) as w:
        headers = await start_payment(w, "shop/A2002")
        # As the Mini Program sends it (encodeURIComponent), and as typed.
        for path in (quote("shop/A2002", safe=""), "shop/A2002"):
            for who in (headers, {"X-Admin-Key": ADMIN_KEY}):
                r = await w.client.get(f"/pay/payments/{path}", headers=who)
                assert r.status_code == 200, (path, r.text)
                assert r.json()["reference"] == "shop/A2002"
