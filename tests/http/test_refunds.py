"""Refunds through the three ways in (Python, the admin endpoint) against the sandbox.

Every test pays a sandbox payment to Authorised, refunds it, lets the sandbox's REFUND
webhooks arrive, and reads the result where a merchant reads it: the status answer,
the host's ``on_state_change``, and the sandbox's own record of the refunds Adyen made.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from miniprogram_pay import (
    AdyenError,
    Amount,
    InvalidRefundError,
    NotFoundError,
    RefundNotAllowedError,
    RefundState,
    StateChange,
)
from miniprogram_pay.errors import ConflictError
from miniprogram_pay.sandbox import DEFAULT_HMAC_KEY
from tests.http.helpers import error_code
from tests.world import (
    ADMIN_KEY,
    World,
    basic_auth,
    default_config,
    notification_body,
    notification_item,
    world,
)

ADMIN = {"X-Admin-Key": ADMIN_KEY}


async def authorised(w: World, reference: str, value: int = 1130) -> str:
    """A payment of ``value`` fen taken to Authorised; its pspReference."""
    headers = await w.login()
    r = await w.pay_order(headers, reference, value)
    assert r.status_code == 200, r.text
    r = await w.details(headers, reference)
    assert r.json()["state"] == "Authorised", r.text
    await w.settle()
    psp: str = r.json()["pspReference"]
    return psp


def refund_changes(changes: list[StateChange]) -> list[tuple[str, str | None, str]]:
    return [
        (c.event_id, c.refund.previous.value if c.refund.previous else None, c.refund.state.value)
        for c in changes
        if c.kind == "refund" and c.refund is not None
    ]


async def test_partial_refunds_from_python_then_the_rest(db_url: str) -> None:
    # Adyen's REFUND webhooks come a moment after its answers, as they do for real.
    config = replace(default_config(), webhook_delay_seconds=0.3)
    async with world(db_url, config=config) as w:
        psp = await authorised(w, "order-rf1")
        first = await w.pay.refund("order-rf1", 300, reason="customer request")
        assert (first.state, first.amount) == (RefundState.RECEIVED, Amount(300, "CNY"))
        assert first.reference == "order-rf1-refund-1" and first.psp_reference
        rest = await w.pay.refund("order-rf1")  # everything that is left
        assert rest.amount == Amount(830, "CNY")
        await w.settle()

        status = await w.status("order-rf1")
        assert status["state"] == "Authorised"  # a refund never changes the payment's state
        refunds = status["refunds"]
        assert refunds["refunded"] == {"currency": "CNY", "value": 1130}
        assert refunds["refundable"]["value"] == 0 and refunds["pending"]["value"] == 0
        assert [(i["reference"], i["state"]) for i in refunds["items"]] == [
            ("order-rf1-refund-1", "Refunded"),
            ("order-rf1-refund-2", "Refunded"),
        ]
        assert [h["to"] for h in refunds["items"][0]["history"]] == [
            "Requested",
            "Received",
            "Refunded",
        ]
        assert refunds["items"][0]["reason"] == "CUSTOMER REQUEST"
        # Adyen made exactly two refunds, of exactly these amounts.
        made = w.sandbox.payments[psp].refunds
        assert sorted(int(r.amount["value"]) for r in made) == [300, 830]

        with pytest.raises(InvalidRefundError) as invalid:
            await w.pay.refund("order-rf1", True)  # bool is an int, but not an amount
        assert invalid.value.code == "invalid_refund_amount"
        with pytest.raises(RefundNotAllowedError) as refused:
            await w.pay.refund("order-rf1", 1)
        assert refused.value.code == "refund_exceeds_refundable"
        assert refused.value.refundable == (0, "CNY")
        assert len(w.sandbox.payments[psp].refunds) == 2  # refused before Adyen was called

        # The host heard of every refund change, with its kind, once per state.
        ids = refund_changes(w.changes)
        assert sorted(ids) == sorted(
            (f"mpp_1_refund_{n}_{state.lower()}", previous, state)
            for n in (1, 2)
            for previous, state in (
                (None, "Requested"),
                ("Requested", "Received"),
                ("Received", "Refunded"),
            )
        )
        refund_change = next(c for c in w.changes if c.kind == "refund")
        assert refund_change.state.value == "Authorised" == refund_change.previous.value  # type: ignore[union-attr]


async def test_the_admin_endpoint_refunds_and_shows_what_is_left(db_url: str) -> None:
    async with world(db_url) as w:
        await authorised(w, "shop/A1")
        body = {"amount": {"currency": "CNY", "value": 500}, "idempotencyKey": "A1-r1"}
        r = await w.client.post("/pay/admin/payments/shop%2FA1/refunds", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text
        answer = r.json()
        assert answer["paymentReference"] == "shop/A1"
        # Adyen has it; its REFUND webhook may even have been applied already.
        assert answer["refund"]["state"] in ("Received", "Refunded")
        assert answer["refund"]["amount"] == {"currency": "CNY", "value": 500}
        refunds = answer["refunds"]
        assert refunds["refundable"] == {"currency": "CNY", "value": 630}
        assert refunds["pending"]["value"] + refunds["refunded"]["value"] == 500

        again = await w.client.post("/pay/admin/payments/shop/A1/refunds", json=body, headers=ADMIN)
        assert again.status_code == 201
        assert again.json()["refund"]["reference"] == answer["refund"]["reference"]
        assert len(again.json()["refunds"]["items"]) == 1  # the same refund, not a second

        other = {"amount": {"currency": "CNY", "value": 501}, "idempotencyKey": "A1-r1"}
        r = await w.client.post("/pay/admin/payments/shop/A1/refunds", json=other, headers=ADMIN)
        assert (r.status_code, error_code(r)) == (409, "idempotency_key_reused")

        too_much = {"amount": {"currency": "CNY", "value": 631}}
        r = await w.client.post("/pay/admin/payments/shop/A1/refunds", json=too_much, headers=ADMIN)
        assert (r.status_code, error_code(r)) == (409, "refund_exceeds_refundable")
        assert r.json()["error"]["refundable"] == {"value": 630, "currency": "CNY"}
        await w.settle()
        shopper = await w.login()
        seen = await w.client.get("/pay/payments/shop%2FA1", headers=shopper)
        assert seen.json()["refunds"]["refunded"]["value"] == 500


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"amount": {"currency": "USD", "value": 100}}, 400, "refund_currency_mismatch"),
        ({"amount": {"currency": "CNY", "value": 0}}, 400, "invalid_amount"),
        ({"amount": {"currency": "CNY", "value": "1"}}, 400, "invalid_amount"),
        ({"reason": "because"}, 400, "invalid_refund_reason"),
        ({"idempotencyKey": ""}, 400, "invalid_idempotency_key"),
        ({"idempotencyKey": "k\u00e9y"}, 400, "invalid_idempotency_key"),
        ({"idempotencyKey": "k" * 65}, 400, "invalid_idempotency_key"),
    ],
)
async def test_bad_refund_requests_are_refused_and_change_nothing(
    db_url: str, body: dict[str, Any], status: int, code: str
) -> None:
    async with world(db_url) as w:
        psp = await authorised(w, "order-bad")
        r = await w.client.post("/pay/admin/payments/order-bad/refunds", json=body, headers=ADMIN)
        assert (r.status_code, error_code(r)) == (status, code), r.text
        assert (await w.status("order-bad"))["refunds"]["items"] == []
        assert w.sandbox.payments[psp].refunds == []


async def test_refunds_need_an_authorised_payment_and_the_admin_key(db_url: str) -> None:
    async with world(db_url) as w:
        headers = await w.login()
        await w.pay_order(headers, "order-pending")
        r = await w.client.post("/pay/admin/payments/order-pending/refunds", json={}, headers=ADMIN)
        assert (r.status_code, error_code(r)) == (409, "payment_not_refundable")
        r = await w.client.post("/pay/admin/payments/order-none/refunds", json={}, headers=ADMIN)
        assert (r.status_code, error_code(r)) == (404, "payment_not_found")
        r = await w.client.post(
            "/pay/admin/payments/order-pending/refunds", json={}, headers=headers
        )
        assert (r.status_code, error_code(r)) == (404, "not_found")
        with pytest.raises(NotFoundError):
            await w.pay.refund("order-none")
        with pytest.raises(RefundNotAllowedError) as refused:
            await w.pay.refund("order-pending", 100)
        assert refused.value.code == "payment_not_refundable"


@pytest.mark.parametrize(
    ("scenario", "state", "refunded", "refundable"),
    [
        ("refused", "Refused", 0, 1130),
        ("failed", "Failed", 0, 1130),
        ("reversed", "Reversed", 0, 1130),
        ("reordered", "Failed", 0, 1130),
        ("duplicated", "Refunded", 400, 730),
        ("webhook-before-answer", "Refunded", 400, 730),
    ],
)
async def test_each_refund_scenario_ends_where_adyen_says(
    db_url: str, scenario: str, state: str, refunded: int, refundable: int
) -> None:
    async with world(db_url) as w:
        await authorised(w, f"order-sbx-refund-{scenario}")
        refund = await w.pay.refund(f"order-sbx-refund-{scenario}", 400)
        await w.settle()
        status = await w.status(f"order-sbx-refund-{scenario}")
        [item] = status["refunds"]["items"]
        assert (item["state"], item["pspReference"]) == (state, refund.psp_reference)
        assert status["refunds"]["refunded"]["value"] == refunded
        assert status["refunds"]["refundable"]["value"] == refundable
        # Each state the refund entered reached the host once (the event ids are unique).
        ids = [event_id for event_id, _, _ in refund_changes(w.changes)]
        assert len(ids) == len(set(ids))
        assert ids[-1].endswith(state.lower()) or state == "Refunded"


async def test_a_customer_area_refund_counts_against_the_payment(db_url: str) -> None:
    async with world(db_url) as w:
        psp = await authorised(w, "order-ca")
        payment = w.sandbox.payments[psp]
        await w.sandbox.refund_in_customer_area(payment, {"currency": "CNY", "value": 1000})
        await w.settle()
        status = await w.status("order-ca")
        [item] = status["refunds"]["items"]
        assert (item["external"], item["state"], item["amount"]["value"]) == (
            True,
            "Refunded",
            1000,
        )
        assert status["refunds"]["refundable"]["value"] == 130
        with pytest.raises(RefundNotAllowedError) as refused:
            await w.pay.refund("order-ca", 131)
        assert refused.value.refundable == (130, "CNY")
        external = [c for c in w.changes if c.kind == "refund"]
        assert [c.refund.state for c in external if c.refund] == [RefundState.REFUNDED]
        assert external[0].refund is not None and external[0].refund.external


async def test_a_refund_webhook_for_an_unknown_payment_is_an_orphan(db_url: str) -> None:
    async with world(db_url) as w:
        item = notification_item(
            psp_reference="9915000000000001",
            merchant_reference="nobody-refund-1",
            event_code="REFUND",
            key_hex=DEFAULT_HMAC_KEY,
            originalReference="9915000000000000",
        )
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        r = await w.client.post(
            "/pay/webhooks/adyen", content=notification_body(item), headers=auth
        )
        assert r.text == "[accepted]"
        await w.settle()
        listed = await w.client.get("/pay/admin/notifications", headers=ADMIN)
        [note] = listed.json()["notifications"]
        assert note["status"] == "orphan"


async def test_a_lost_answer_is_asked_again_with_the_same_key(db_url: str) -> None:
    """Adyen made the refund but its answer never came: the same caller key asks again,
    with the stored Idempotency-Key, and Adyen answers the first refund."""
    async with world(db_url, adyen_max_retries=0) as w:
        psp = await authorised(w, "order-lost")
        # Adyen makes the refund, then answers 503: the answer is lost.
        w.sandbox.inject_fault("503", target="refunds", processed=True)
        with pytest.raises(AdyenError) as lost:
            await w.pay.refund("order-lost", 200, idempotency_key="lost-1")
        assert lost.value.code == "adyen_unavailable"
        status = await w.status("order-lost")
        # Requested, holding its amount; or Refunded if Adyen's webhook for the refund it
        # made came already. Never released: the money may be gone.
        [state] = [i["state"] for i in status["refunds"]["items"]]
        held = {"Requested": "pending", "Refunded": "refunded"}[state]
        assert status["refunds"][held]["value"] == 200

        again = await w.pay.refund("order-lost", 200, idempotency_key="lost-1")
        assert again.state in (RefundState.RECEIVED, RefundState.REFUNDED)
        await w.settle()
        assert len(w.sandbox.payments[psp].refunds) == 1
        with pytest.raises(ConflictError):
            await w.pay.refund("order-lost", 201, idempotency_key="lost-1")


async def test_a_refund_adyen_never_answered_is_asked_again_by_the_recovery_pass(
    db_url: str,
) -> None:
    """No caller key, and the answer lost (or the process gone before it came): nobody
    would ask again, so the recovery pass does, with the stored Idempotency-Key."""
    async with world(db_url, adyen_max_retries=0) as w:
        psp = await authorised(w, "order-orphaned")
        # Adyen is down: it makes nothing, and no webhook will come to settle the refund.
        # (A 503 is by default answered after the work: the refund's webhook could then
        # settle it before the pass looks, which made this test fail now and then.)
        w.sandbox.inject_fault("503", target="refunds", processed=False)
        with pytest.raises(AdyenError):
            await w.pay.refund("order-orphaned", 200)
        young = await w.pay.refunds.ask_again()  # too young: its call may still be running
        assert young == 0
        assert await w.pay.refunds.ask_again(older_than_seconds=0) == 1
        await w.settle()
        [refund] = (await w.status("order-orphaned"))["refunds"]["items"]
        assert (refund["state"], refund["amount"]["value"]) == ("Refunded", 200)
        assert len(w.sandbox.payments[psp].refunds) == 1  # the same refund, made once
        assert await w.pay.refunds.ask_again(older_than_seconds=0) == 0  # answered now


async def test_null_fields_are_absent_fields(db_url: str) -> None:
    """``null`` for the key, the reason or the amount is the field left out (once a 500)."""
    async with world(db_url) as w:
        await authorised(w, "order-null")
        body = {"amount": None, "reason": None, "idempotencyKey": None}
        r = await w.client.post("/pay/admin/payments/order-null/refunds", json=body, headers=ADMIN)
        assert r.status_code == 201, r.text
        assert r.json()["refund"]["amount"] == {"currency": "CNY", "value": 1130}
