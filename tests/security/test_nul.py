"""NUL characters, wherever input reaches the database: refused at the edge, as a 4xx.

SQLite stores a NUL in text; PostgreSQL refuses it (``DataError``), which used to
surface as a 500. Every case runs on both, and must answer 4xx and change nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from miniprogram_pay import Amount, Order, OrderRequest
from tests.security.helpers import SecurityWorld, assert_error, security_world
from tests.world import ADMIN_KEY, basic_auth, notification_body, notification_item

BOTH_BACKENDS = True
ADMIN = {"X-Admin-Key": ADMIN_KEY}


async def test_a_nul_in_payment_data_is_refused(world: SecurityWorld) -> None:
    shopper = await world.login("mallory")
    assert (await world.pay_order(shopper, "order-nul")).status_code == 200
    before = await world.snapshot()
    for payment_data in ("\x00", "Ab0=\x00", "\x00" * 100):
        body = {"paymentData": payment_data, "details": {"paymentStatus": "requestPayment:ok"}}
        r = await world.client.post("/pay/payments/details", json=body, headers=shopper)
        assert_error(r, 400, "invalid_payment_data")
    assert await world.snapshot() == before
    assert world.transport.to("/payments/details") == []
    # An explicit null is no paymentData at all: the reference identifies the payment.
    null: dict[str, Any] = {"reference": "order-nul", "paymentData": None, "details": {}}
    r = await world.client.post("/pay/payments/details", json=null, headers=shopper)
    assert_error(r, 400, "invalid_payment_status")


@pytest.mark.parametrize("path", ["%00", "a%00b", "order-nul%00", "%00/x"])
async def test_a_nul_in_a_reference_path_is_refused(world: SecurityWorld, path: str) -> None:
    shopper = await world.login("mallory")
    before = await world.snapshot()
    for headers in (shopper, ADMIN):
        r = await world.client.get(f"/pay/payments/{path}", headers=headers)
        assert_error(r, 400, "invalid_reference")
    assert await world.snapshot() == before


@pytest.mark.parametrize("path", ["/pay/admin/notifications", "/pay/admin/outbox"])
async def test_a_nul_in_a_status_filter_is_refused(world: SecurityWorld, path: str) -> None:
    r = await world.client.get(f"{path}?status=%00", headers=ADMIN)
    assert_error(r, 400, "invalid_status")


NUL_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("merchantReference", {"merchant_reference": "order-1\x00"}),
    ("pspReference", {"psp_reference": "88150000\x0000001"}),
    ("eventCode", {"event_code": "AUTHORISATION\x00"}),
    ("reason", {"reason": "\x00"}),
    ("currency", {"currency": "CN\x00"}),
    ("eventDate", {"eventDate": "2026-11-27\x00"}),
    ("paymentMethod", {"paymentMethod": "wechat\x00"}),
]


@pytest.mark.parametrize(("field", "values"), NUL_FIELDS, ids=[f for f, _ in NUL_FIELDS])
async def test_a_signed_webhook_with_a_nul_is_refused(
    world: SecurityWorld, field: str, values: dict[str, Any]
) -> None:
    item = notification_item(
        merchant_account=world.config.merchant_account,
        key_hex=world.config.hmac_keys[0],
        **values,
    )
    auth = basic_auth(world.config.webhook_username, world.config.webhook_password)
    before = await world.snapshot()
    body = notification_body(item)
    r = await world.client.post("/pay/webhooks/adyen", content=body, headers=auth)
    error = assert_error(r, 400, "invalid_notification")
    assert field in error["message"] and "NUL" in error["message"]
    assert await world.snapshot() == before


async def test_an_order_reference_with_a_nul_is_the_resolvers_error(db_url: str) -> None:
    async def resolver(request: OrderRequest) -> Order:
        return Order(reference="order\x00evil", amount=Amount(1130, "CNY"))

    async with security_world(db_url, order_resolver=resolver, allow_client_amount=False) as w:
        before = await w.snapshot()
        body = {"paymentMethod": {"type": "wechatpayMiniProgram"}}
        r = await w.client.post("/pay/payments", json=body, headers=await w.login("alice"))
        assert_error(r, 502, "order_error")
        assert await w.snapshot() == before
