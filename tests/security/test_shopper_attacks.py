"""A shopper (or anyone with a Mini Program) attacking other shoppers' payments.

Someone else's payment looks exactly like a missing one (404), forged, truncated
and expired tokens are 401, and the amount is the merchant's word, not the client's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import pytest

from miniprogram_pay import Amount, ConfigurationError, Order, OrderRequest, Secret, create_app
from miniprogram_pay.errors import InvalidRequestError
from miniprogram_pay.sandbox import SandboxConfig
from miniprogram_pay.wechat.sessions import SessionTokens
from tests.security.helpers import SecurityWorld, assert_error, security_world
from tests.world import ADMIN_KEY, SESSION_SECRET, settings_for


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


async def test_another_shoppers_payment_is_not_found(world: SecurityWorld) -> None:
    alice, bob = await world.login("alice"), await world.login("bob")
    assert (await world.pay_order(alice, "order-alice")).status_code == 200
    before = await world.snapshot()
    adyen_calls = len(world.transport.exchanges)

    mine = await world.client.get("/pay/payments/order-alice", headers=alice)
    assert mine.status_code == 200
    theirs = await world.client.get("/pay/payments/order-alice", headers=bob)
    missing = await world.client.get("/pay/payments/order-nobody", headers=bob)
    assert_error(theirs, 404, "payment_not_found")
    assert theirs.json() == missing.json()  # indistinguishable from a payment that does not exist

    by_reference = await world.details(bob, "order-alice")
    assert_error(by_reference, 404, "payment_not_found")
    payment_data = world.snapshot_payment_data("order-alice")
    by_data = await world.client.post(
        "/pay/payments/details",
        json={"paymentData": payment_data, "details": {"paymentStatus": "requestPayment:ok"}},
        headers=bob,
    )
    assert_error(by_data, 404, "payment_not_found")

    squat = await world.pay_order(bob, "order-alice")
    assert_error(squat, 409, "reference_conflict")
    assert await world.snapshot() == before
    assert len(world.transport.exchanges) == adyen_calls  # neither Adyen nor WeChat was asked


def _flip(token: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[index] ^= 0x01
    return base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def _other_secret_token(openid: str) -> str:
    other = SessionTokens(Secret("another-merchants-secret-0123456789"), ttl_seconds=600)
    return other.issue(openid)[0]


FORGERIES: dict[str, Any] = {
    "garbage": lambda t, o: "not-a-token",
    "empty": lambda t, o: "",
    "truncated": lambda t, o: t[:-4],
    "half": lambda t, o: t[: len(t) // 2],
    "extended": lambda t, o: t + "AAAA",
    "flipped version": lambda t, o: _flip(t, 0),
    "flipped nonce": lambda t, o: _flip(t, 5),
    "flipped ciphertext": lambda t, o: _flip(t, 20),
    "flipped mac": lambda t, o: _flip(t, -1),
    "other secret": lambda t, o: _other_secret_token(o),
    "too long": lambda t, o: "A" * 5000,
    "non-ascii": lambda t, o: t[:-1] + "é",
    "padding": lambda t, o: t + "==",
    "openid instead": lambda t, o: o,
}


@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
async def test_forged_tokens_are_refused_everywhere(world: SecurityWorld, forge: Any) -> None:
    alice = await world.login("alice")
    assert (await world.pay_order(alice, "order-alice")).status_code == 200
    openid = world.sandbox.openid_for("alice")
    forged = forge(token_of(alice), openid)
    headers: Any = {"Authorization": f"Bearer {forged}".encode()}  # bytes: UTF-8 on the wire
    before = await world.snapshot()
    responses = [
        await world.client.get("/pay/payments/order-alice", headers=headers),
        await world.pay_order(headers, "order-forged"),
        await world.details(headers, "order-alice"),
    ]
    for response in responses:
        error = assert_error(response, 401)
        assert error["code"] in ("invalid_token", "unauthenticated"), error
        assert openid not in response.text
    assert await world.snapshot() == before


@pytest.mark.parametrize(
    "header",
    ["Basic YWxpY2U6eA==", "Token abc", "Bearer", "Bearer    ", "bearer"],
)
async def test_missing_or_wrong_scheme_is_401(world: SecurityWorld, header: str) -> None:
    response = await world.client.get("/pay/payments/x", headers={"Authorization": header})
    assert_error(response, 401, "unauthenticated")


async def test_an_expired_token_is_refused(world: SecurityWorld) -> None:
    openid = world.sandbox.openid_for("alice")
    alice = await world.login("alice")
    assert (await world.pay_order(alice, "order-alice")).status_code == 200
    issued_an_hour_ago = SessionTokens(
        Secret(SESSION_SECRET), ttl_seconds=600, clock=lambda: time.time() - 3600
    )
    expired = bearer(issued_an_hour_ago.issue(openid)[0])
    before = await world.snapshot()
    for response in (
        await world.client.get("/pay/payments/order-alice", headers=expired),
        await world.pay_order(expired, "order-late"),
        await world.details(expired, "order-alice"),
    ):
        assert_error(response, 401, "session_expired")
    assert await world.snapshot() == before


async def test_session_ttl_setting_bounds_the_token(db_url: str) -> None:
    async with security_world(db_url, session_ttl_seconds=1) as world:
        r = await world.client.post("/pay/session", json={"code": "alice.1"})
        assert r.json()["expires_in"] == 1
        token = r.json()["token"]
        clock = world.pay.tokens._clock
        world.pay.tokens._clock = lambda: clock() + 2
        response = await world.client.get("/pay/payments/x", headers=bearer(token))
        assert_error(response, 401, "session_expired")


async def test_an_openid_in_the_body_must_be_the_sessions(world: SecurityWorld) -> None:
    alice = await world.login("alice")
    before = await world.snapshot()
    body = {
        "paymentMethod": {
            "type": "wechatpayMiniProgram",
            "openid": world.sandbox.openid_for("bob"),
        },
        "reference": "order-x",
        "amount": {"currency": "CNY", "value": 100},
    }
    response = await world.client.post("/pay/payments", json=body, headers=alice)
    assert_error(response, 400, "openid_mismatch")
    assert await world.snapshot() == before
    assert world.transport.to("/payments") == []


async def test_the_adyen_openid_is_always_the_sessions(world: SecurityWorld) -> None:
    alice = await world.login("alice")
    body = {
        "paymentMethod": {
            "type": "wechatpayMiniProgram",
            "openid": world.sandbox.openid_for("alice"),
        },
        "reference": "order-x",
        "amount": {"currency": "CNY", "value": 100},
    }
    assert (await world.client.post("/pay/payments", json=body, headers=alice)).status_code == 200
    [payment] = world.sandbox.payments.values()
    assert payment.openid == world.sandbox.openid_for("alice")


PRICES = {"cart-1": Amount(1130, "CNY")}


async def resolve(request: OrderRequest) -> Order:
    cart = request.body.get("cartId")
    if not isinstance(cart, str) or cart not in PRICES:
        raise InvalidRequestError("unknown cart", code="unknown_cart")
    return Order(reference=f"{cart}-{request.openid[:6]}", amount=PRICES[cart])


@pytest.mark.parametrize(
    "amount",
    [
        {"currency": "CNY", "value": 1},
        {"currency": "USD", "value": 1130},
        {"currency": "CNY", "value": 1131},
    ],
    ids=["cheaper", "other currency", "dearer"],
)
async def test_a_client_amount_never_overrides_the_merchants(db_url: str, amount: Any) -> None:
    async with security_world(db_url, order_resolver=resolve, allow_client_amount=False) as world:
        alice = await world.login("alice")
        body = {
            "paymentMethod": {"type": "wechatpayMiniProgram"},
            "cartId": "cart-1",
            "amount": amount,
        }
        before = await world.snapshot()
        response = await world.client.post("/pay/payments", json=body, headers=alice)
        assert_error(response, 400, "client_amount_refused")
        assert await world.snapshot() == before
        assert world.transport.to("/payments") == []
        del body["amount"]
        response = await world.client.post("/pay/payments", json=body, headers=alice)
        assert response.status_code == 200, response.text
        assert response.json()["amount"] == {"currency": "CNY", "value": 1130}
        [payment] = world.sandbox.payments.values()
        assert payment.amount == {"currency": "CNY", "value": 1130}


async def test_a_client_reference_never_overrides_the_merchants(db_url: str) -> None:
    async with security_world(db_url, order_resolver=resolve, allow_client_amount=False) as world:
        alice = await world.login("alice")
        body = {
            "paymentMethod": {"type": "wechatpayMiniProgram"},
            "cartId": "cart-1",
            "reference": "mine",
        }
        response = await world.client.post("/pay/payments", json=body, headers=alice)
        assert response.status_code == 200, response.text
        assert response.json()["reference"].startswith("cart-1-")


def test_no_resolver_and_no_client_amount_is_refused_at_start(db_url: str) -> None:
    settings = settings_for(SandboxConfig(), db_url, allow_client_amount=False)
    with pytest.raises(ConfigurationError, match="order_resolver"):
        create_app(settings)


async def test_a_reused_js_code_is_refused(world: SecurityWorld) -> None:
    first = await world.client.post("/pay/session", json={"code": "alice.reused"})
    assert first.status_code == 200
    second = await world.client.post("/pay/session", json={"code": "alice.reused"})
    assert_error(second, 400, "wechat_code_used")
    assert "token" not in second.json()


async def test_a_wrong_admin_key_is_no_admin(world: SecurityWorld) -> None:
    alice = await world.login("alice")
    assert (await world.pay_order(alice, "order-alice")).status_code == 200
    for key in ("", "guess", ADMIN_KEY[:-1], ADMIN_KEY + "x", ADMIN_KEY.upper()):
        response = await world.client.get("/pay/payments/order-alice", headers={"X-Admin-Key": key})
        assert_error(response, 401, "unauthenticated")
        stale = await world.client.get("/pay/admin/stale", headers={"X-Admin-Key": key})
        assert_error(stale, 404, "not_found")
        health = await world.client.get("/pay/health", headers={"X-Admin-Key": key})
        # Liveness only (this world runs no background loops): no counts without the key.
        assert health.json() == {"status": "ok", "loops": {"inbox": "off", "outbox": "off"}}


def _details_calls(world: SecurityWorld) -> list[str]:
    """The paymentStatus of every /payments/details call the plugin made to Adyen."""
    return [
        json.loads(e.request_body)["details"]["paymentStatus"]
        for e in world.transport.to("/payments/details")
    ]


async def test_one_shopper_cannot_buy_unbounded_adyen_calls(world: SecurityWorld) -> None:
    alice = await world.login("alice")
    assert (await world.pay_order(alice, "order-calls")).status_code == 200
    variants = [f"requestPayment:fail variant {i}" for i in range(50)]
    answers = await asyncio.gather(*(world.details(alice, "order-calls", v) for v in variants))
    assert {(r.status_code, r.json()["state"]) for r in answers} == {(200, "Refused")}
    # One shape of res.errMsg, one call, sent in that shape (the detail is the client's prose).
    assert _details_calls(world) == ["requestPayment:fail"]
    # A final payment: a failure report cannot move it, so it costs no call; "ok" may
    # still pay it (a cancelled prepay_id stays payable), once.
    ok = "requestPayment:ok"
    for status in ("requestPayment:fail cancel", "requestPayment:fail again", ok, ok, ok):
        r = await world.details(alice, "order-calls", status)
        assert r.status_code == 200, r.text
    assert _details_calls(world) == ["requestPayment:fail", "requestPayment:ok"]


async def test_a_repeated_report_for_a_pending_payment_asks_adyen_once(
    world: SecurityWorld,
) -> None:
    alice = await world.login("alice")
    reference = "order-sbx-pending-then-webhook"
    assert (await world.pay_order(alice, reference)).status_code == 200
    for _ in range(10):
        r = await world.details(alice, reference)
        assert r.status_code == 200, r.text
    assert _details_calls(world) == ["requestPayment:ok"]
