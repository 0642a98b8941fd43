"""Forged, replayed and misdirected webhooks: refused or harmless, never trusted.

Refusals happen before anything is stored (the whole batch, not item by item);
accepted-but-irrelevant deliveries are acknowledged so Adyen stops retrying, and
kept for operators without touching any payment.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from miniprogram_pay.adyen.hmac import sign_item
from tests.security.helpers import SecurityWorld, assert_error, security_world
from tests.world import ADMIN_KEY, basic_auth, notification_body, notification_item

OTHER_KEY = "280F1B655A1E730E7480B0DAEFAC8B84208D57C9059C78C670BBD00F762662EB"
ADMIN = {"X-Admin-Key": ADMIN_KEY}


def auth(world: SecurityWorld) -> dict[str, str]:
    return basic_auth(world.config.webhook_username, world.config.webhook_password)


def item_for(world: SecurityWorld, **overrides: Any) -> dict[str, Any]:
    overrides.setdefault("key_hex", world.config.hmac_keys[0])
    overrides.setdefault("merchant_account", world.config.merchant_account)
    return notification_item(**overrides)


async def deliver(
    world: SecurityWorld, body: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    response = await world.client.post(
        "/pay/webhooks/adyen", content=body, headers=auth(world) if headers is None else headers
    )
    await world.pay.drain()
    return response


async def pending_payment(world: SecurityWorld, reference: str) -> str:
    """A payment started at Adyen (Pending, no webhook yet); its pspReference."""
    r = await world.pay_order(await world.login(), reference)
    assert r.status_code == 200, r.text
    psp: str = r.json()["pspReference"]
    return psp


async def notifications(world: SecurityWorld) -> list[dict[str, Any]]:
    r = await world.client.get("/pay/admin/notifications", headers=ADMIN)
    assert r.status_code == 200
    rows: list[dict[str, Any]] = r.json()["notifications"]
    return rows


def _basic(raw: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(raw).decode(), **JSON}


JSON = {"Content-Type": "application/json"}
BAD_AUTH = {
    "missing": JSON,
    "wrong password": basic_auth("adyen", "guess"),
    "wrong username": basic_auth("admin", "sandbox-webhook-password"),
    "empty password": basic_auth("adyen", ""),
    "password prefix": basic_auth("adyen", "sandbox-webhook-passwor"),
    "password suffix": basic_auth("adyen", "sandbox-webhook-password "),
    "no colon": _basic(b"adyensandbox-webhook-password"),
    "not utf-8": _basic(b"adyen:\xff\xfe"),
    "not base64": {"Authorization": "Basic !!!not-base64!!!", **JSON},
    "bearer": {"Authorization": "Bearer sandbox-webhook-password", **JSON},
    "scheme only": {"Authorization": "Basic", **JSON},
}


@pytest.mark.parametrize("headers", BAD_AUTH.values(), ids=BAD_AUTH.keys())
async def test_bad_basic_auth_is_401_and_stores_nothing(
    world: SecurityWorld, headers: dict[str, str]
) -> None:
    await pending_payment(world, "order-1")
    before = await world.snapshot()
    response = await deliver(world, notification_body(item_for(world)), headers)
    assert_error(response, 401, "webhook_auth_failed")
    assert "sandbox-webhook-password" not in response.text
    assert await world.snapshot() == before


def _tampered(world: SecurityWorld) -> dict[str, Any]:
    item = item_for(world)
    item["amount"]["value"] = 1  # signed for 1130
    return item


def _without_additional(world: SecurityWorld) -> dict[str, Any]:
    item = item_for(world)
    del item["additionalData"]
    return item


BAD_SIGNATURES = {
    "tampered amount": _tampered,
    "tampered success": lambda w: {**item_for(w, success="false"), "success": "true"},
    "other key": lambda w: item_for(w, key_hex=OTHER_KEY),
    "missing signature": lambda w: item_for(w, signature=""),
    "missing additionalData": _without_additional,
    "not base64": lambda w: item_for(w, signature="%%%%"),
    "non-ascii": lambda w: item_for(w, signature="签名"),
    "signature of another item": lambda w: item_for(
        w, signature=item_for(w, psp_reference="1")["additionalData"]["hmacSignature"]
    ),
}


@pytest.mark.parametrize("make", BAD_SIGNATURES.values(), ids=BAD_SIGNATURES.keys())
async def test_bad_hmac_is_401_and_stores_nothing(world: SecurityWorld, make: Any) -> None:
    await pending_payment(world, "order-1")
    before = await world.snapshot()
    response = await deliver(world, notification_body(make(world)))
    assert_error(response, 401, "webhook_signature_invalid")
    assert await world.snapshot() == before


async def test_a_key_that_is_no_longer_configured_is_refused(db_url: str) -> None:
    # The merchant rotated OTHER_KEY out: its genuine old signatures are refused now.
    async with security_world(db_url) as world:
        assert OTHER_KEY not in world.config.hmac_keys
        response = await deliver(world, notification_body(item_for(world, key_hex=OTHER_KEY)))
        assert_error(response, 401, "webhook_signature_invalid")


async def test_both_keys_work_during_a_rotation(db_url: str) -> None:
    async with security_world(db_url) as base:
        keys = (base.config.hmac_keys[0], OTHER_KEY)
    async with security_world(db_url, adyen_hmac_keys=keys) as world:
        for key, reference in ((keys[0], "old-key"), (OTHER_KEY, "new-key")):
            body = notification_body(item_for(world, key_hex=key, merchant_reference=reference))
            assert (await deliver(world, body)).text == "[accepted]"


@pytest.mark.parametrize("bad_position", [0, 1, 2])
async def test_one_badly_signed_item_refuses_the_whole_batch(
    world: SecurityWorld, bad_position: int
) -> None:
    psp = await pending_payment(world, "order-1")
    items = [
        item_for(world, psp_reference=psp, merchant_reference="order-1"),
        item_for(world, psp_reference=psp, merchant_reference="order-1", event_code="CAPTURE"),
        item_for(world, psp_reference="9999", merchant_reference="order-unknown"),
    ]
    items[bad_position]["additionalData"]["hmacSignature"] = sign_item(
        items[bad_position], bytes.fromhex(OTHER_KEY)
    )
    before = await world.snapshot()
    response = await deliver(world, notification_body(*items))
    error = assert_error(response, 401, "webhook_signature_invalid")
    assert f"item {bad_position}" in error["message"]
    assert await world.snapshot() == before
    assert (await world.status("order-1"))["state"] == "Pending"


async def test_a_replayed_notification_is_acknowledged_and_has_no_second_effect(
    world: SecurityWorld,
) -> None:
    psp = await pending_payment(world, "order-1")
    body = notification_body(item_for(world, psp_reference=psp, merchant_reference="order-1"))
    assert (await deliver(world, body)).text == "[accepted]"
    assert (await world.status("order-1"))["state"] == "Authorised"
    after_first = await world.snapshot()
    changes = len(world.changes)
    for _ in range(3):
        response = await deliver(world, body)
        assert (response.status_code, response.text) == (200, "[accepted]")
    after_replays = await world.snapshot()
    # Only the inbox row's delivery counter moved: no new row, no new event or transition.
    for table in ("mpp_payment", "mpp_transition", "mpp_payment_event", "mpp_outbox"):
        assert after_replays[table] == after_first[table], table
    [row] = await notifications(world)
    assert (row["status"], row["deliveries"]) == ("applied", 4)
    assert len(world.changes) == changes


@pytest.mark.parametrize(
    ("overrides", "live", "detail"),
    [
        ({"merchant_account": "SomeoneElsesMerchant"}, "false", "merchant account"),
        ({}, "true", "live flag"),
    ],
    ids=["other merchant account", "live notification on test"],
)
async def test_a_notification_for_someone_else_is_ignored(
    world: SecurityWorld, overrides: dict[str, Any], live: str, detail: str
) -> None:
    psp = await pending_payment(world, "order-1")
    item = item_for(world, psp_reference=psp, merchant_reference="order-1", **overrides)
    before = await world.snapshot()
    response = await deliver(world, notification_body(item, live=live))
    assert (response.status_code, response.text) == (200, "[accepted]")
    [row] = await notifications(world)
    assert row["status"] == "ignored" and detail in row["detail"]
    after = await world.snapshot()
    for table in ("mpp_payment", "mpp_transition", "mpp_payment_event", "mpp_outbox"):
        assert after[table] == before[table], table
    assert (await world.status("order-1"))["state"] == "Pending"


async def test_a_live_notification_reaching_a_test_setup_or_the_reverse(db_url: str) -> None:
    async with security_world(
        db_url, adyen_environment="live", adyen_live_prefix="1797a841fbb37ca7-ShopCN"
    ) as world:
        response = await deliver(world, notification_body(item_for(world), live="false"))
        assert response.text == "[accepted]"
        [row] = await notifications(world)
        assert row["status"] == "ignored"


@pytest.mark.parametrize(
    "overrides",
    [{"value": 1}, {"value": 113000}, {"currency": "USD"}, {"psp_reference": "8815999999999999"}],
    ids=["lower amount", "higher amount", "other currency", "other pspReference"],
)
async def test_a_notification_that_disagrees_with_the_payment_never_authorises(
    world: SecurityWorld, overrides: dict[str, Any]
) -> None:
    psp = await pending_payment(world, "order-1")
    overrides.setdefault("psp_reference", psp)
    item = item_for(world, merchant_reference="order-1", **overrides)
    response = await deliver(world, notification_body(item))
    assert response.text == "[accepted]"
    status = await world.status("order-1")
    assert status["state"] == "Pending"
    [conflict] = status["conflicts"]
    assert conflict["kind"] in ("amount_mismatch", "psp_reference_mismatch")
    assert conflict["source"] == "webhook"
    assert not [c for c in world.changes if c.state.value == "Authorised"]


async def test_a_notification_for_an_unknown_reference_is_kept_as_an_orphan(
    world: SecurityWorld,
) -> None:
    item = item_for(world, merchant_reference="never-created", psp_reference="8815000000000042")
    response = await deliver(world, notification_body(item))
    assert response.text == "[accepted]"
    [row] = await notifications(world)
    assert (row["status"], row["merchantReference"]) == ("orphan", "never-created")
    rows = await world.snapshot()
    assert rows["mpp_payment"] == [] and rows["mpp_outbox"] == []
    assert world.changes == []
    # Visible only to the admin.
    hidden = await world.client.get("/pay/admin/notifications")
    assert_error(hidden, 404, "not_found")
    wrong = await world.client.get("/pay/admin/notifications", headers={"X-Admin-Key": "guess"})
    assert_error(wrong, 404, "not_found")


async def test_a_signed_amount_beyond_int64_is_refused_not_a_crash(world: SecurityWorld) -> None:
    for value in (2**63, -(2**63) - 1, 10**30):
        before = await world.snapshot()
        response = await deliver(world, notification_body(item_for(world, value=value)))
        assert_error(response, 400, "invalid_notification")
        assert await world.snapshot() == before


async def test_auth_is_checked_before_the_body_is_parsed(world: SecurityWorld) -> None:
    # An unauthenticated caller learns nothing about what a valid body looks like.
    response = await deliver(world, b"not json", JSON)
    assert_error(response, 401, "webhook_auth_failed")


async def test_an_item_signed_with_the_key_but_with_json_booleans_still_verifies(
    world: SecurityWorld,
) -> None:
    item = item_for(world, merchant_reference="order-bool")
    item["success"] = True  # a JSON boolean renders as "true" in the signing string
    body = json.dumps({"live": False, "notificationItems": [{"NotificationRequestItem": item}]})
    response = await deliver(world, body.encode())
    assert response.text == "[accepted]"
