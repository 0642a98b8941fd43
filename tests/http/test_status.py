"""GET /pay/payments/{reference}, the admin views, /health, /openapi.json and error rendering."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from miniprogram_pay.sandbox import DEFAULT_HMAC_KEY
from tests.http.helpers import HostKind, error_code, host_world, start_payment
from tests.world import ADMIN_KEY, basic_auth, notification_body, notification_item

ADMIN = {"X-Admin-Key": ADMIN_KEY}


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_the_shopper_sees_their_payment(db_url: str, kind: HostKind) -> None:
    async with host_world(db_url, kind=kind) as w:
        headers = await start_payment(w, "order-st")
        await w.details(headers, "order-st", "requestPayment:fail cancel")
        await w.settle()  # Adyen's AUTHORISATION false for the cancel, applied
        r = await w.client.get("/pay/payments/order-st", headers=headers)
        assert r.status_code == 200
        body = r.json()
        assert {
            "reference",
            "state",
            "amount",
            "pspReference",
            "resultCode",
            "refusalReason",
            "conflicts",
            "history",
        } <= set(body)
        (payment,) = w.sandbox.payments.values()
        assert body["state"] == "Refused"
        # The webhook outranks the details answer (Cancelled) as the payment's summary.
        assert body["resultCode"] == "Refused"
        assert body["amount"] == {"currency": "CNY", "value": 1130}
        assert body["pspReference"] == payment.psp_reference
        assert body["conflicts"] == []
        assert [(h["from"], h["to"]) for h in body["history"]] == [
            (None, "Created"),
            ("Created", "Pending"),
            ("Pending", "Refused"),
        ]
        assert payment.openid not in r.text


async def test_others_and_strangers_get_404_or_401(db_url: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-priv", "alice")
        bob = await w.login("bob")
        r = await w.client.get("/pay/payments/order-priv", headers=bob)
        assert r.status_code == 404
        assert error_code(r) == "payment_not_found"
        r = await w.client.get("/pay/payments/order-none", headers=bob)
        assert (r.status_code, error_code(r)) == (404, "payment_not_found")
        r = await w.client.get("/pay/payments/order-none", headers=ADMIN)
        assert (r.status_code, error_code(r)) == (404, "payment_not_found")
        r = await w.client.get("/pay/payments/order-priv")
        assert (r.status_code, error_code(r)) == (401, "unauthenticated")
        r = await w.client.get("/pay/payments/order-priv", headers={"X-Admin-Key": "wrong"})
        assert r.status_code == 401
        r = await w.client.get("/pay/payments/order-priv", headers=ADMIN)
        assert r.status_code == 200


@pytest.mark.parametrize("reference", ["shop/A2002", "a/b/c", "shop:1/x.y_z-2"])
async def test_a_reference_with_a_slash_is_found_encoded_or_not(
    db_url: str, reference: str
) -> None:
    async with host_world(db_url) as w:
        headers = await start_payment(w, reference)
        for path in (reference, quote(reference, safe="")):
            r = await w.client.get(f"/pay/payments/{path}", headers=headers)
            assert r.status_code == 200, (path, r.text)
            assert r.json()["reference"] == reference
        r = await w.client.get(f"/pay/payments/{reference}/more", headers=headers)
        assert (r.status_code, error_code(r)) == (404, "payment_not_found")


async def test_without_an_admin_key_configured_no_header_is_admin(db_url: str) -> None:
    async with host_world(db_url, admin_api_key=None) as w:
        await start_payment(w, "order-noadmin")
        for value in ("", "None", ADMIN_KEY):
            r = await w.client.get("/pay/payments/order-noadmin", headers={"X-Admin-Key": value})
            assert r.status_code == 401
        assert (await w.client.get("/pay/admin/stale", headers=ADMIN)).status_code == 404


async def test_admin_views(db_url: str) -> None:
    async with host_world(db_url, stale_after_seconds=0) as w:
        await start_payment(w, "order-stale")
        r = await w.client.get("/pay/admin/stale", headers=ADMIN)
        assert r.status_code == 200
        assert [p["reference"] for p in r.json()["payments"]] == ["order-stale"]
        assert (await w.client.get("/pay/admin/stale")).status_code == 404
        assert (await w.client.get("/pay/admin/notifications")).status_code == 404
        body = notification_body(
            notification_item(merchant_reference="x", key_hex=DEFAULT_HMAC_KEY)
        )
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        await w.client.post("/pay/webhooks/adyen", content=body, headers=auth)
        await w.pay.drain()
        r = await w.client.get("/pay/admin/notifications?status=orphan", headers=ADMIN)
        assert [n["status"] for n in r.json()["notifications"]] == ["orphan"]
        r = await w.client.get("/pay/admin/notifications?status=applied", headers=ADMIN)
        assert r.json()["notifications"] == []


async def test_health(db_url: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-h")
        running = {"inbox": "running", "outbox": "running"}
        assert (await w.client.get("/pay/health")).json() == {"status": "ok", "loops": running}
        await w.pay.drain()
        body = (await w.client.get("/pay/health", headers=ADMIN)).json()
        assert body == {
            "status": "ok",
            "loops": running,
            "states": {"Pending": 1},
            "outbox": {"delivered": 1},
            "notifications": {},
            "stalePayments": 0,
            "deliveriesInFlight": 0,
        }


async def test_health_counts_stale_payments_for_monitoring(db_url: str) -> None:
    async with host_world(db_url, stale_after_seconds=0) as w:
        await start_payment(w, "order-stale-1")
        await start_payment(w, "order-stale-2")
        body = (await w.client.get("/pay/health", headers=ADMIN)).json()
        assert body["stalePayments"] == 2
        listed = (await w.client.get("/pay/admin/stale", headers=ADMIN)).json()["payments"]
        assert len(listed) == body["stalePayments"]


@pytest.mark.parametrize("kind", ["starlette", "fastapi", "middleware", "fastapi-middleware"])
async def test_openapi_document_is_served_with_the_mount_prefix(
    db_url: str, kind: HostKind
) -> None:
    async with host_world(db_url, kind=kind) as w:
        r = await w.client.get("/pay/openapi.json")
        assert r.status_code == 200
        doc = r.json()
        assert doc["openapi"].startswith("3.")
        assert doc["servers"] == [{"url": "/pay"}]
        for path in (
            "/session",
            "/payments",
            "/payments/details",
            "/payments/{reference}",
            "/webhooks/adyen",
        ):
            assert path in doc["paths"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/pay/nothing-here", 404, "not_found"),
        ("GET", "/pay/session", 405, "method_not_allowed"),
        ("PUT", "/pay/payments", 405, "method_not_allowed"),
        ("DELETE", "/pay/payments/order-1", 405, "method_not_allowed"),
        ("GET", "/pay/webhooks/adyen", 405, "method_not_allowed"),
    ],
)
async def test_routing_errors_are_json_too(
    db_url: str, method: str, path: str, status: int, code: str
) -> None:
    async with host_world(db_url) as w:
        r = await w.client.request(method, path)
        assert r.status_code == status
        assert error_code(r) == code
