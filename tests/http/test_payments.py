"""POST /pay/payments: record, ask Adyen once, answer the seed's shape in every Adyen style."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from miniprogram_pay import Amount, ConfigurationError, Order, OrderRequest, create_app
from miniprogram_pay.config import Secret
from miniprogram_pay.sandbox import SandboxConfig, verify_pay_sign
from miniprogram_pay.wechat.sessions import SessionTokens
from tests.http.helpers import HostKind, error_code, host_world, start_payment
from tests.world import MERCHANT_BASE, SESSION_SECRET, settings_for

WX_KEYS = {"timeStamp", "package", "paySign", "appId", "signType", "nonceStr"}


def config(**options: Any) -> SandboxConfig:
    return SandboxConfig(webhook_url=f"{MERCHANT_BASE}/pay/webhooks/adyen", **options)


def seed_body(openid: object = None, **extra: Any) -> dict[str, Any]:
    """A payment body; ``openid`` may be any JSON value, to build malformed bodies too."""
    method: dict[str, Any] = {"type": "wechatpayMiniProgram"}
    if openid is not None:
        method["openid"] = openid
    return {"paymentMethod": method, **extra}


@pytest.mark.parametrize("style", ["redirect", "action", "sdk"])
@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_every_response_style_gives_the_seed_shape(
    db_url: str, kind: HostKind, style: str
) -> None:
    async with host_world(db_url, kind=kind, config=config(response_style=style)) as w:
        headers = await w.login("alice")
        body = seed_body(
            w.sandbox.openid_for("alice"),
            reference="order-1",
            amount={"currency": "CNY", "value": 1130},
        )
        r = await w.client.post("/pay/payments", json=body, headers=headers)
        assert r.status_code == 200, r.text
        out = r.json()
        assert {"reference", "state", "resultCode", "paymentData", "redirect", "action"} <= set(out)
        assert (out["reference"], out["state"], out["resultCode"]) == (
            "order-1",
            "Pending",
            "Pending",
        )
        (payment,) = w.sandbox.payments.values()
        # Only an sdk action names paymentData in v71; a redirect action has none.
        assert out["paymentData"] == (payment.payment_data if style == "sdk" else None)
        params = out["redirect"]["data"]
        assert set(params) == WX_KEYS
        assert params == {k: payment.wx_params[k] for k in WX_KEYS}
        assert params["package"].startswith("prepay_id=")
        assert verify_pay_sign(params, w.config.paysign_key)
        assert out["action"]["paymentMethodType"] == "wechatpayMiniProgram"
        assert payment.openid == w.sandbox.openid_for("alice")
        assert payment.amount == {"currency": "CNY", "value": 1130}


async def test_the_same_reference_twice_makes_one_adyen_payment(db_url: str) -> None:
    async with host_world(db_url) as w:
        headers = await w.login("alice")
        first = await w.pay_order(headers, "order-twice")
        again = await w.pay_order(await w.login("alice"), "order-twice")
        assert first.status_code == again.status_code == 200
        assert len(w.sandbox.payments) == 1
        assert again.json()["redirect"] == first.json()["redirect"]
        assert again.json()["paymentData"] == first.json()["paymentData"]
        history = (await w.status("order-twice"))["history"]
        assert [h["to"] for h in history] == ["Created", "Pending"]


async def test_concurrent_posts_of_one_reference_make_one_adyen_payment(db_url: str) -> None:
    async with host_world(db_url) as w:
        headers = await w.login("alice")
        answers = await asyncio.gather(*(w.pay_order(headers, "order-race") for _ in range(5)))
        assert {r.status_code for r in answers} <= {200, 409, 503, 504}
        assert any(r.status_code == 200 for r in answers)
        assert len(w.sandbox.payments) == 1
        history = (await w.status("order-race"))["history"]
        assert [h["to"] for h in history] == ["Created", "Pending"]


async def test_without_a_reference_one_is_made(db_url: str) -> None:
    async with host_world(db_url) as w:
        headers = await w.login()
        body = seed_body(amount={"currency": "CNY", "value": 100})
        r = await w.client.post("/pay/payments", json=body, headers=headers)
        assert r.status_code == 200
        assert r.json()["reference"].startswith("mpp-")


async def test_an_openid_of_someone_else_is_refused_and_nothing_is_stored(db_url: str) -> None:
    async with host_world(db_url) as w:
        headers = await w.login("alice")
        body = seed_body(
            w.sandbox.openid_for("mallory"),
            reference="order-x",
            amount={"currency": "CNY", "value": 1},
        )
        r = await w.client.post("/pay/payments", json=body, headers=headers)
        assert r.status_code == 400
        assert error_code(r) == "openid_mismatch"
        assert w.sandbox.payments == {}
        r = await w.client.get(
            "/pay/payments/order-x", headers={"X-Admin-Key": "test-admin-key-0123456789"}
        )
        assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "invalid_payment_method"),
        ({"paymentMethod": {"type": "scheme"}}, "invalid_payment_method"),
        ({"paymentMethod": "wechatpayMiniProgram"}, "invalid_payment_method"),
        (seed_body(7), "openid_mismatch"),
        (seed_body(reference=""), "invalid_reference"),
        (seed_body(reference="x" * 81), "invalid_reference"),
        (seed_body(reference="has space"), "invalid_reference"),
        (seed_body(reference=12), "invalid_field"),
        (seed_body(reference="o-1"), "missing_amount"),
        (seed_body(amount="11.30"), "invalid_amount"),
        (seed_body(amount={"currency": "CNY", "value": 11.3}), "invalid_amount"),
        (seed_body(amount={"currency": "CNY", "value": "1130"}), "invalid_amount"),
        (seed_body(amount={"currency": "CNY", "value": True}), "invalid_amount"),
        (seed_body(amount={"currency": "CNY", "value": 0}), "invalid_amount"),
        (seed_body(amount={"currency": "CNY", "value": -5}), "invalid_amount"),
        (seed_body(amount={"currency": "CNY", "value": 2**64}), "invalid_amount"),
        (seed_body(amount={"currency": "BTC", "value": 1}), "invalid_currency"),
        (seed_body(amount={"currency": "cny", "value": 1}), "invalid_currency"),
    ],
)
async def test_bad_payment_bodies_are_400_and_store_nothing(
    db_url: str, body: dict[str, Any], expected: str
) -> None:
    async with host_world(db_url) as w:
        r = await w.client.post("/pay/payments", json=body, headers=await w.login())
        assert r.status_code == 400, r.text
        assert error_code(r) == expected
        assert w.sandbox.payments == {}
        stale = await w.client.get(
            "/pay/health", headers={"X-Admin-Key": "test-admin-key-0123456789"}
        )
        assert stale.json()["states"] == {}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "unauthenticated"),
        ({"Authorization": "Basic YTpi"}, "unauthenticated"),
        ({"Authorization": "Bearer "}, "unauthenticated"),
        ({"Authorization": "Bearer not-a-token"}, "invalid_token"),
        ({"Authorization": "Bearer " + "A" * 2000}, "invalid_token"),
        ({"Authorization": "Bearer ✓✓✓".encode()}, "invalid_token"),
    ],
)
async def test_payments_need_a_valid_session(
    db_url: str, headers: dict[str, Any], expected: str
) -> None:
    async with host_world(db_url) as w:
        body = seed_body(reference="o-1", amount={"currency": "CNY", "value": 1})
        r = await w.client.post("/pay/payments", json=body, headers=headers)
        assert r.status_code == 401
        assert error_code(r) == expected
        assert w.sandbox.payments == {}


async def test_a_token_signed_with_another_secret_or_expired_is_refused(db_url: str) -> None:
    async with host_world(db_url) as w:
        openid = w.sandbox.openid_for("alice")
        forged, _ = SessionTokens(Secret("another-secret-0123456789"), ttl_seconds=60).issue(openid)
        expired, _ = SessionTokens(Secret(SESSION_SECRET), ttl_seconds=60, clock=lambda: 0).issue(
            openid
        )
        body = seed_body(reference="o-1", amount={"currency": "CNY", "value": 1})
        for token, expected in ((forged, "invalid_token"), (expired, "session_expired")):
            r = await w.client.post(
                "/pay/payments", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 401
            assert error_code(r) == expected


async def test_a_reference_of_another_shopper_is_a_conflict(db_url: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-mine", "alice")
        r = await w.pay_order(await w.login("bob"), "order-mine")
        assert r.status_code == 409
        assert error_code(r) == "reference_conflict"
        r = await w.pay_order(await w.login("alice"), "order-mine", value=999)
        assert r.status_code == 409
        assert len(w.sandbox.payments) == 1


async def test_amount_limits_are_enforced(db_url: str) -> None:
    async with host_world(db_url, amount_limits={"CNY": (100, 5000)}) as w:
        headers = await w.login()
        for value in (99, 5001):
            r = await w.pay_order(headers, f"o-{value}", value=value)
            assert r.status_code == 400
            assert error_code(r) == "amount_out_of_range"
        assert (await w.pay_order(headers, "o-ok", value=100)).status_code == 200
        assert len(w.sandbox.payments) == 1


# -- order_resolver ------------------------------------------------------------------

ORDERS = {"cart-1": Amount(2500, "CNY"), "cart-2": Amount(990, "CNY")}


async def resolve(request: OrderRequest) -> Order:
    order_id = str(request.body.get("orderId"))
    return Order(reference=f"shop-{order_id}", amount=ORDERS[order_id])


async def test_the_resolver_decides_reference_and_amount(db_url: str) -> None:
    async with host_world(db_url, order_resolver=resolve) as w:
        headers = await w.login()
        r = await w.client.post("/pay/payments", json=seed_body(orderId="cart-1"), headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["reference"] == "shop-cart-1"
        assert r.json()["amount"] == {"currency": "CNY", "value": 2500}
        (payment,) = w.sandbox.payments.values()
        assert payment.amount == {"currency": "CNY", "value": 2500}
        # The client may repeat the right amount; a different one is refused.
        same = seed_body(orderId="cart-1", amount={"currency": "CNY", "value": 2500})
        assert (await w.client.post("/pay/payments", json=same, headers=headers)).status_code == 200
        cheap = seed_body(orderId="cart-2", amount={"currency": "CNY", "value": 1})
        r = await w.client.post("/pay/payments", json=cheap, headers=headers)
        assert r.status_code == 400
        assert error_code(r) == "client_amount_refused"
        assert len(w.sandbox.payments) == 1
        r = await w.client.get("/pay/payments/shop-cart-2", headers=headers)
        assert r.status_code == 404


async def test_the_resolver_may_refuse_with_a_package_error(db_url: str) -> None:
    from miniprogram_pay.errors import NotFoundError

    async def no_such_order(request: OrderRequest) -> Order:
        raise NotFoundError("no such order", code="order_not_found")

    async with host_world(db_url, order_resolver=no_such_order) as w:
        r = await w.client.post("/pay/payments", json=seed_body(), headers=await w.login())
        assert r.status_code == 404
        assert error_code(r) == "order_not_found"
        assert w.sandbox.payments == {}


async def test_a_resolver_returning_a_bad_reference_is_not_a_500(db_url: str) -> None:
    async def bad(request: OrderRequest) -> Order:
        return Order(reference="", amount=Amount(1, "CNY"))

    async with host_world(db_url, order_resolver=bad) as w:
        r = await w.client.post("/pay/payments", json=seed_body(), headers=await w.login())
        assert r.status_code == 502
        assert error_code(r) == "order_error"


def test_no_resolver_and_no_client_amount_fails_at_construction(db_url: str) -> None:
    settings = settings_for(config(), db_url, allow_client_amount=False)
    with pytest.raises(ConfigurationError, match="order_resolver") as caught:
        create_app(settings)
    assert "ALLOW_CLIENT_AMOUNT" in str(caught.value)
    assert create_app(settings, order_resolver=resolve) is not None


# -- Adyen failures --------------------------------------------------------------------


async def test_adyen_rejecting_the_payment_is_502_and_the_payment_is_error(db_url: str) -> None:
    async with host_world(db_url) as w:
        w.sandbox.inject_fault("422", target="payments")
        r = await w.pay_order(await w.login(), "order-422")
        assert r.status_code == 502
        assert error_code(r) == "adyen_rejected"
        assert (await w.status("order-422"))["state"] == "Error"


async def test_adyen_5xx_once_is_retried_with_the_same_key(db_url: str) -> None:
    async with host_world(db_url) as w:
        r = await w.pay_order(await w.login(), "order-sbx-adyen-5xx-once")
        assert r.status_code == 200, r.text
        assert len(w.sandbox.payments) == 1


async def test_adyen_timeout_leaves_created_and_a_retry_pays_once(db_url: str) -> None:
    async with host_world(db_url, adyen_timeout_seconds=0.2, adyen_max_retries=0) as w:
        headers = await w.login()
        r = await w.pay_order(headers, "order-sbx-adyen-timeout-once")
        assert r.status_code == 504
        assert error_code(r) == "adyen_timeout"
        assert r.json()["error"]["retryable"] is True
        assert (await w.status("order-sbx-adyen-timeout-once"))["state"] == "Created"
        r = await w.details(headers, "order-sbx-adyen-timeout-once")
        assert r.status_code == 409
        assert error_code(r) == "payment_not_started"
        r = await w.pay_order(headers, "order-sbx-adyen-timeout-once")
        assert r.status_code == 200, r.text
        assert len(w.sandbox.payments) == 1  # the stored Idempotency-Key replayed Adyen's answer


async def test_adyen_unavailable_is_503_and_state_unchanged(db_url: str) -> None:
    async with host_world(db_url, adyen_max_retries=0) as w:
        w.sandbox.inject_fault("503", target="payments", processed=False)
        r = await w.pay_order(await w.login(), "order-503")
        assert r.status_code == 503
        assert error_code(r) == "adyen_unavailable"
        assert (await w.status("order-503"))["state"] == "Created"


async def test_adyen_garbage_answer_is_502(db_url: str) -> None:
    async with host_world(db_url, adyen_max_retries=0) as w:
        w.sandbox.inject_fault("garbage", target="payments")
        r = await w.pay_order(await w.login(), "order-garbage")
        assert r.status_code == 502
        assert error_code(r) == "adyen_bad_response"


async def test_adyen_refusing_our_api_key_is_502(db_url: str) -> None:
    async with host_world(db_url, adyen_api_key="wrong-key") as w:
        r = await w.pay_order(await w.login(), "order-auth")
        assert r.status_code == 502
        assert error_code(r) == "adyen_auth_failed"
        assert "wrong-key" not in r.text
