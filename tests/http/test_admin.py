"""The admin API: payments by filter in keyset pages, one payment's story, paged inbox and outbox,
and every filter value it does not know refused with the values it takes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from miniprogram_pay.domain.states import PaymentState
from tests.world import ADMIN_KEY, World, world

ADMIN = {"X-Admin-Key": ADMIN_KEY}
STATES = [state.value for state in PaymentState]


async def get(w: World, path: str, **params: str) -> dict[str, Any]:
    answer = await w.client.get(path, params=params, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def walk(w: World, path: str, key: str, **params: str) -> list[list[dict[str, Any]]]:
    """Every page of a list, following nextCursor to the end."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        body = await get(w, path, **params, **({"cursor": cursor} if cursor else {}))
        pages.append(body[key])
        cursor = body["nextCursor"]
        if cursor is None:
            return pages


async def pay(w: World, reference: str, *, details: bool = True) -> None:
    headers = await w.login("alice")
    assert (await w.pay_order(headers, reference)).status_code == 200
    if details:
        assert (await w.details(headers, reference)).status_code == 200


@pytest.fixture
async def shop(db_url: str) -> Any:
    """Five payments: two Authorised, one with a conflict, one Pending, one Created only."""
    async with world(db_url) as w:
        await pay(w, "shop-a-1")
        await pay(w, "shop-a-2-sbx-success-then-failure")  # Authorised, then a failure: conflict
        await pay(w, "shop-a-3-sbx-webhook-never")  # Pending for good
        await pay(w, "shop-b-1")
        await pay(w, "shop-b-2", details=False)  # the shopper never paid: Pending
        await w.settle()
        yield w


async def test_payments_are_listed_newest_first_in_pages_that_never_repeat(shop: World) -> None:
    everything = (await get(shop, "/pay/admin/payments"))["payments"]
    assert [p["reference"] for p in everything] == [
        "shop-b-2",
        "shop-b-1",
        "shop-a-3-sbx-webhook-never",
        "shop-a-2-sbx-success-then-failure",
        "shop-a-1",
    ]
    first = everything[-1]
    assert first["amount"] == {"currency": "CNY", "value": 1130}
    assert first["state"] == "Authorised" and first["pspReference"] and first["conflicts"] == 0
    pages = await walk(shop, "/pay/admin/payments", "payments", limit="2")
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [p for page in pages for p in page] == everything
    # An exact fit ends without an empty page.
    assert [
        len(page) for page in await walk(shop, "/pay/admin/payments", "payments", limit="5")
    ] == [5]


FILTERS = [
    ({"state": "Pending"}, ["shop-b-2", "shop-a-3-sbx-webhook-never"]),
    ({"state": "Refused"}, []),
    ({"referencePrefix": "shop-a-"}, ["shop-a-3", "shop-a-2", "shop-a-1"]),
    ({"referencePrefix": "shop-a-", "state": "Authorised"}, ["shop-a-2", "shop-a-1"]),
    ({"hasConflicts": "true"}, ["shop-a-2-sbx-success-then-failure"]),
    ({"hasConflicts": "false", "referencePrefix": "shop-a"}, ["shop-a-3", "shop-a-1"]),
    ({"referencePrefix": "shop_"}, []),  # "_" is a character, not a LIKE wildcard
    ({"state": ""}, ["shop-b-2", "shop-b-1", "shop-a-3", "shop-a-2", "shop-a-1"]),
]


async def test_payments_by_filter(shop: World) -> None:
    for params, expected in FILTERS:
        listed = (await get(shop, "/pay/admin/payments", **params))["payments"]
        found = [p["reference"] for p in listed]
        assert len(found) == len(expected), (params, found)
        assert all(f.startswith(e) for f, e in zip(found, expected, strict=True)), (params, found)


async def test_payments_by_creation_time(shop: World) -> None:
    everything = (await get(shop, "/pay/admin/payments"))["payments"]
    third = datetime.fromisoformat(everything[2]["createdAt"])
    later = (await get(shop, "/pay/admin/payments", createdFrom=third.isoformat()))["payments"]
    assert later == everything[:3]  # inclusive
    earlier = (await get(shop, "/pay/admin/payments", createdBefore=third.isoformat()))["payments"]
    assert earlier == everything[3:]  # exclusive
    # The same moment in Beijing time, and a date (its midnight, UTC).
    beijing = third.astimezone(timezone(timedelta(hours=8))).isoformat()
    assert (await get(shop, "/pay/admin/payments", createdFrom=beijing))["payments"] == later
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert (await get(shop, "/pay/admin/payments", createdFrom=tomorrow))["payments"] == []
    assert (await get(shop, "/pay/admin/payments", createdBefore=tomorrow))[
        "payments"
    ] == everything


REFUSED = [
    ({"state": "Paid"}, "invalid_filter", "state", STATES),
    ({"state": "pending"}, "invalid_filter", "state", STATES),  # states are spelled as listed
    ({"hasConflicts": "yes"}, "invalid_filter", "hasConflicts", ["true", "false"]),
    ({"hasRefunds": "1"}, "invalid_filter", "hasRefunds", ["true", "false"]),
    ({"hasRefunds": "True"}, "invalid_filter", "hasRefunds", ["true", "false"]),
    ({"createdFrom": "yesterday"}, "invalid_filter", "createdFrom", None),
    ({"createdBefore": "2026-13-01"}, "invalid_filter", "createdBefore", None),
    ({"referencePrefix": "a%"}, "invalid_filter", "referencePrefix", None),
    ({"referencePrefix": "a\x00"}, "invalid_filter", "referencePrefix", None),
    ({"cursor": "abc"}, "invalid_page", "cursor", None),
    ({"cursor": "0"}, "invalid_page", "cursor", None),
    ({"cursor": "9" * 5000}, "invalid_page", "cursor", None),
    ({"limit": "0"}, "invalid_page", "limit", None),
    ({"limit": "201"}, "invalid_page", "limit", None),
]


async def test_a_filter_value_the_list_does_not_know_is_refused_with_the_allowed_values(
    shop: World,
) -> None:
    before = await get(shop, "/pay/admin/payments")
    for params, code, parameter, allowed in REFUSED:
        answer = await shop.client.get("/pay/admin/payments", params=params, headers=ADMIN)
        assert answer.status_code == 400, (params, answer.text)
        error = answer.json()["error"]
        found = (error["code"], error["parameter"], error.get("allowed"))
        assert found == (code, parameter, allowed), params
        for value in params.values():
            if len(value) > 3:
                assert value not in error["message"]  # never what was sent
    assert await get(shop, "/pay/admin/payments") == before  # nothing changed


async def test_an_unknown_or_repeated_parameter_is_refused(shop: World) -> None:
    unknown = await shop.client.get("/pay/admin/payments?refunded=true", headers=ADMIN)
    assert unknown.status_code == 400
    error = unknown.json()["error"]
    assert error["code"] == "invalid_filter" and "parameter" not in error
    assert error["allowed"] == [
        "state",
        "createdFrom",
        "createdBefore",
        "referencePrefix",
        "hasConflicts",
        "hasRefunds",
        "cursor",
        "limit",
    ]
    twice = await shop.client.get("/pay/admin/payments?state=Pending&state=Created", headers=ADMIN)
    assert twice.status_code == 400
    assert twice.json()["error"]["parameter"] == "state"


@pytest.mark.parametrize("path", ["/pay/admin/notifications", "/pay/admin/outbox"])
async def test_an_unknown_status_is_refused_with_the_statuses(shop: World, path: str) -> None:
    answer = await shop.client.get(path, params={"status": "bogus"}, headers=ADMIN)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_status" and error["parameter"] == "status"
    assert "pending" in error["allowed"] or "received" in error["allowed"]


@pytest.mark.parametrize(
    "path",
    [
        "/pay/admin/payments",
        "/pay/admin/payments/shop-a-1",
        "/pay/admin/notifications",
        "/pay/admin/outbox",
    ],
)
async def test_the_admin_views_need_the_key(shop: World, path: str) -> None:
    for headers in ({}, {"X-Admin-Key": ADMIN_KEY + "x"}):
        answer = await shop.client.get(path, headers=headers)
        assert (answer.status_code, answer.json()["error"]["code"]) == (404, "not_found")


async def test_one_payment_tells_its_whole_story(shop: World) -> None:
    story = await get(shop, "/pay/admin/payments/shop-a-2-sbx-success-then-failure")
    payment = story["payment"]
    assert payment["state"] == "Authorised" and payment["conflicts"] == 1
    assert "refusalReason" in payment and "openid" not in str(story).lower()
    assert "paymentData" not in payment
    [created, pending, authorised] = [
        (t["from"], t["to"], t["source"]) for t in story["transitions"]
    ]
    assert [created, pending] == [(None, "Created", "payments"), ("Created", "Pending", "payments")]
    # The sandbox sends its first webhook as it answers /payments/details: either one may be
    # recorded first, and the first to arrive authorises (the end state is the same).
    assert authorised in (
        ("Pending", "Authorised", "details"),
        ("Pending", "Authorised", "webhook"),
    )
    conflicts = [e for e in story["events"] if e["conflict"]]
    assert [(e["source"], e["success"]) for e in conflicts] == [("webhook", False)]
    assert conflicts[0]["conflict"] == "failure_after_authorisation"
    webhooks = story["webhooks"]
    assert [(n["eventCode"], n["success"], n["status"]) for n in webhooks] == [
        ("AUTHORISATION", True, "applied"),
        ("AUTHORISATION", False, "applied"),
    ]
    assert all(n["pspReference"] == payment["pspReference"] for n in webhooks)
    assert webhooks[0]["amount"] == {"currency": "CNY", "value": 1130}
    deliveries = story["deliveries"]
    assert [(d["to"], d["status"]) for d in deliveries] == [
        (t["to"], "delivered") for t in story["transitions"] if t["from"] is not None
    ]
    # Listed as recorded. Their clocks are each unit's own: on PostgreSQL the details
    # answer and a webhook are recorded at once by two writers, so the times of two
    # events a few milliseconds apart may not follow the order they were recorded in.
    times = [e["at"] for e in story["events"]]
    assert all(payment["createdAt"] <= at for at in times)


async def test_payments_by_refunds_and_a_story_with_its_refunds(db_url: str) -> None:
    async with world(db_url) as w:
        for reference in ("rf-1", "rf-2", "rf-3"):
            await pay(w, reference)
        await w.settle()
        await w.pay.refund("rf-2", 300, reason="return")
        await w.pay.refund("rf-2")  # the rest
        await w.settle()
        with_refunds = await get(w, "/pay/admin/payments", hasRefunds="true")
        assert [p["reference"] for p in with_refunds["payments"]] == ["rf-2"]
        without = await get(w, "/pay/admin/payments", hasRefunds="false", limit="1")
        assert [p["reference"] for p in without["payments"]] == ["rf-3"]
        rest = await get(w, "/pay/admin/payments", hasRefunds="false", cursor=without["nextCursor"])
        assert [p["reference"] for p in rest["payments"]] == ["rf-1"]
        assert (await get(w, "/pay/admin/payments", hasRefunds=""))["payments"] != []

        story = await get(w, "/pay/admin/payments/rf-2")
        status = await w.status("rf-2")
    refunds = story["refunds"]
    assert refunds == status["refunds"]  # the same ledger and items as the status answer
    assert refunds["refunded"] == {"currency": "CNY", "value": 1130}
    assert refunds["refundable"]["value"] == 0
    assert [(i["reference"], i["amount"]["value"], i["state"]) for i in refunds["items"]] == [
        ("rf-2-refund-1", 300, "Refunded"),
        ("rf-2-refund-2", 830, "Refunded"),
    ]
    refund_items = [n for n in story["webhooks"] if n["eventCode"] == "REFUND"]
    assert sorted(n["merchantReference"] for n in refund_items) == [
        "rf-2-refund-1",
        "rf-2-refund-2",
    ]
    told = [d["refund"]["state"] for d in story["deliveries"] if d["kind"] == "refund"]
    # Each refund's Requested and Refunded; Received too, unless Adyen's webhook came first.
    assert (told.count("Requested"), told.count("Refunded")) == (2, 2)
    assert set(told) <= {"Requested", "Received", "Refunded"} and len(told) <= 6


async def test_a_payment_nobody_made_has_no_story(shop: World) -> None:
    answer = await shop.client.get("/pay/admin/payments/no-such-order", headers=ADMIN)
    assert (answer.status_code, answer.json()["error"]["code"]) == (404, "payment_not_found")


async def test_webhook_items_and_deliveries_come_in_pages(shop: World) -> None:
    items = (await get(shop, "/pay/admin/notifications", limit="200"))["notifications"]
    assert len(items) >= 4 and [n["id"] for n in items] == sorted(
        (n["id"] for n in items), reverse=True
    )
    pages = await walk(shop, "/pay/admin/notifications", "notifications", limit="3")
    assert [n for page in pages for n in page] == items
    assert all(len(page) == 3 for page in pages[:-1])
    ours = await get(shop, "/pay/admin/notifications", reference="shop-a-1")
    assert {n["merchantReference"] for n in ours["notifications"]} == {"shop-a-1"}
    assert ours["notifications"][0]["receivedAt"] and ours["notifications"][0]["appliedAt"]

    rows = (await get(shop, "/pay/admin/outbox", limit="200"))["outbox"]
    pages = await walk(shop, "/pay/admin/outbox", "outbox", limit="4")
    assert [r for page in pages for r in page] == rows
    pending = await get(shop, "/pay/admin/outbox", status="pending", reference="shop-b-2")
    assert pending == {"outbox": [], "nextCursor": None}
    delivered = await get(shop, "/pay/admin/outbox", status="delivered", reference="shop-b-2")
    assert [r["to"] for r in delivered["outbox"]] == ["Pending"]
