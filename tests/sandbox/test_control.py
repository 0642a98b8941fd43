"""The /_sandbox/ control API."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from miniprogram_pay.sandbox import SCENARIOS
from tests.sandbox.helpers import Harness


async def test_list_scenarios(harness: Harness) -> None:
    body = (await harness.client.get("/_sandbox/scenarios")).json()
    assert [s["name"] for s in body["scenarios"]] == list(SCENARIOS)
    assert body["default"] == "authorised"
    assert body["overrides"] == {}


@pytest.mark.parametrize(
    "body",
    [{"reference": "o-1", "scenario": "nope"}, {"reference": "o-1"}, [1, 2]],
)
async def test_bad_scenario_requests_are_400(harness: Harness, body: object) -> None:
    response = await harness.client.post("/_sandbox/scenarios", json=body)
    assert response.status_code == 400
    assert "error" in response.json()


async def test_list_and_get_payments(harness: Harness) -> None:
    await harness.pay("order-1")
    payments = (await harness.client.get("/_sandbox/payments")).json()["payments"]
    assert [p["merchantReference"] for p in payments] == ["order-1"]
    assert payments[0]["resultCode"] == "Authorised"
    assert payments[0]["paymentStatus"] == "requestPayment:ok"
    one = await harness.client.get(f"/_sandbox/payments/{payments[0]['pspReference']}")
    assert one.json() == payments[0]
    assert (await harness.client.get("/_sandbox/payments/0000")).status_code == 404


async def test_list_webhooks_with_attempts(harness: Harness) -> None:
    await harness.pay("order-1")
    await harness.sandbox.drain(2)
    [delivery] = (await harness.client.get("/_sandbox/webhooks")).json()["deliveries"]
    assert delivery["state"] == "accepted"
    assert delivery["attempts"][0]["statusCode"] == 200
    item = delivery["notification"]["notificationItems"][0]["NotificationRequestItem"]
    assert item["additionalData"]["hmacSignature"]


async def test_complete_settles_a_payment_without_details(harness: Harness) -> None:
    created = (await harness.post_payment(reference="o-1")).json()
    url = f"/_sandbox/payments/{created['pspReference']}/complete"
    response = await harness.client.post(url, json={"paymentStatus": "requestPayment:fail cancel"})
    assert response.json()["resultCode"] == "Cancelled"
    await harness.sandbox.drain(2)
    assert [d.reason for d in harness.sandbox.deliveries] == ["Cancelled"]
    assert (await harness.client.post(url, json={"paymentStatus": "ok"})).status_code == 400
    assert (await harness.client.post("/_sandbox/payments/1/complete")).status_code == 404


async def test_drain_endpoint(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(webhook_delay_seconds=0.5)
    await harness.pay("order-1")
    timed_out = await harness.client.post("/_sandbox/drain", json={"timeout_seconds": 0.01})
    assert timed_out.status_code == 504
    assert (await harness.client.post("/_sandbox/drain", json={"timeout_seconds": 2})).json() == {
        "drained": True
    }
    bad = await harness.client.post("/_sandbox/drain", json={"timeout_seconds": "soon"})
    assert bad.status_code == 400


async def test_reset_forgets_everything(harness: Harness) -> None:
    await harness.pay("order-1")
    await harness.post_payment(key="k")
    harness.sandbox.set_scenario("o-2", "refused")
    harness.sandbox.inject_fault("500", count=5)
    assert (await harness.client.post("/_sandbox/reset")).json() == {"reset": True}
    sandbox = harness.sandbox
    assert (sandbox.payments, sandbox.deliveries, sandbox.scenario_overrides) == ({}, [], {})
    assert sandbox.faults.pending() == []
    assert (await harness.post_payment(key="k")).status_code == 200
