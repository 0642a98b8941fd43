"""POST /adyen/v{N}/payments/details: mapping paymentStatus to a result."""

from __future__ import annotations

from typing import Any

import pytest

from miniprogram_pay.sandbox import SCENARIOS
from tests.sandbox.helpers import ADYEN, Harness


async def test_ok_in_the_default_scenario_is_authorised(harness: Harness) -> None:
    created = (await harness.post_payment(reference="order-1")).json()
    body = (await harness.post_details(created["action"]["paymentData"])).json()
    assert body == {
        "resultCode": "Authorised",
        "pspReference": created["pspReference"],
        "merchantReference": "order-1",
        "amount": {"currency": "CNY", "value": 1130},
        "additionalData": {"wechatpay.openid": "oSandboxShopper000000000000"},
    }


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_a_shopper_cancel_is_cancelled_in_every_scenario(
    harness: Harness, scenario: str
) -> None:
    body = await harness.pay(f"order-sbx-{scenario}", "requestPayment:fail cancel")
    assert body["resultCode"] == "Cancelled"
    assert "refusalReason" not in body
    if SCENARIOS[scenario].held:  # held like any webhook of the payment, cancels included
        assert harness.sandbox.deliveries == []
        assert harness.sandbox.release(next(iter(harness.sandbox.payments.values())))
    await harness.sandbox.drain(2)
    first = harness.sandbox.deliveries[0]
    assert (first.event_code, first.success, first.reason) == (
        "AUTHORISATION",
        "false",
        "Cancelled",
    )


async def test_another_failure_is_refused_with_wechats_detail(harness: Harness) -> None:
    body = await harness.pay("order-1", "requestPayment:fail insufficient balance")
    assert body["resultCode"] == "Refused"
    assert body["refusalReason"] == "insufficient balance"
    await harness.sandbox.drain(2)
    assert [(d.success, d.reason) for d in harness.sandbox.deliveries] == [
        ("false", "insufficient balance")
    ]


async def test_a_bare_fail_is_refused(harness: Harness) -> None:
    body = await harness.pay("order-1", "requestPayment:fail")
    assert (body["resultCode"], body["refusalReason"]) == ("Refused", "Refused")


@pytest.mark.parametrize(
    "body",
    [
        {"paymentData": "Ab02b4c0!unknown", "details": {"paymentStatus": "requestPayment:ok"}},
        {"details": {"paymentStatus": "requestPayment:ok"}},
        {"paymentData": "x"},
        {"paymentData": "x", "details": {"paymentStatus": "ok"}},
        {"paymentData": "x", "details": "requestPayment:ok"},
    ],
)
async def test_bad_details_requests_are_422(harness: Harness, body: dict[str, Any]) -> None:
    await harness.post_payment()
    response = await harness.client.post(
        f"{ADYEN}/payments/details", json=body, headers={"X-API-Key": "sandbox-api-key"}
    )
    assert response.status_code == 422
    assert response.json()["errorType"] == "validation"


async def test_a_second_details_call_repeats_the_result_and_sends_nothing_new(
    harness: Harness,
) -> None:
    created = (await harness.post_payment()).json()
    data = created["action"]["paymentData"]
    first = (await harness.post_details(data)).json()
    second = (await harness.post_details(data, "requestPayment:fail cancel")).json()
    assert second == first
    await harness.sandbox.drain(2)
    assert len(harness.sandbox.deliveries) == 1
    assert harness.sandbox.payments[created["pspReference"]].details_calls == 2


async def test_details_honours_idempotency_keys(harness: Harness) -> None:
    data = (await harness.post_payment()).json()["action"]["paymentData"]
    first = await harness.post_details(data, key="d-1")
    again = await harness.post_details(data, key="d-1")
    other = await harness.post_details(data, "requestPayment:fail cancel", key="d-1")
    assert again.content == first.content
    assert other.status_code == 422
