"""The /_sandbox/ control API."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from miniprogram_pay.sandbox import SCENARIOS, faults
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


async def test_scenarios_list_their_steps(harness: Harness) -> None:
    body = (await harness.client.get("/_sandbox/scenarios")).json()
    steps = {s["name"]: s["steps"] for s in body["scenarios"]}
    assert steps["authorised"] == ["details answers Authorised", "AUTHORISATION success=true"]
    assert steps["webhook-before-details"] == [
        "AUTHORISATION success=true",
        "details answers Authorised",
    ]
    assert steps["duplicate-webhooks"][1] == "AUTHORISATION success=true x3, the first two at once"
    assert steps["webhook-never"] == ["details answers Pending", "no webhook, ever"]
    assert steps["wrong-amount"][1] == "AUTHORISATION success=true, amount +1"
    assert steps["adyen-5xx-once"][0].startswith("first /payments call")
    refunds = {s["name"]: s["steps"] for s in body["refundScenarios"]}
    assert refunds["reordered"] == [
        "/refunds answers received",
        'REFUND_FAILED success=true "Refund Failed"',
        "REFUND success=true",
    ]
    assert refunds["webhook-before-answer"][-1] == "/refunds answers received"


async def test_release_sends_held_webhooks_once(harness: Harness) -> None:
    created = (await harness.post_payment(reference="o-sbx-webhook-held")).json()
    url = f"/_sandbox/payments/{created['pspReference']}/release"
    assert (await harness.client.post(url)).status_code == 409  # not settled: nothing held
    await harness.post_details(created["action"]["paymentData"])
    released = await harness.client.post(url)
    assert released.status_code == 200
    assert released.json()["heldWebhooks"] == 0
    await harness.sandbox.drain(2)
    assert [d.event_code for d in harness.sandbox.deliveries] == ["AUTHORISATION"]
    again = await harness.client.post(url)
    assert again.status_code == 409
    assert "holds no webhooks" in again.json()["error"]
    assert (await harness.client.post("/_sandbox/payments/1/release")).status_code == 404


async def test_calls_record_each_adyen_call_with_its_payment(harness: Harness) -> None:
    harness.sandbox.inject_fault("500", target="payments")
    first = await harness.post_payment(reference="o-1", key="k1")
    assert first.status_code == 500
    replay = await harness.post_payment(reference="o-1", key="k1")
    psp = replay.json()["pspReference"]
    await harness.post_details(replay.json()["action"]["paymentData"])
    await harness.post_payment(reference="o-2")
    calls = (await harness.client.get("/_sandbox/calls", params={"reference": "o-1"})).json()
    assert [
        (c["endpoint"], c["statusCode"], c["fault"], c["replayed"], c["result"])
        for c in calls["calls"]
    ] == [
        ("payments", 500, "500", False, "Internal error"),
        ("payments", 200, None, True, "Pending"),
        ("details", 200, None, False, "Authorised"),
    ]
    # The faulted call created the payment before failing: it knows its pspReference.
    assert {c["pspReference"] for c in calls["calls"]} == {psp}
    assert all(c["idempotencyKey"] in ("k1", None) and c["answeredAt"] for c in calls["calls"])
    by_psp = (await harness.client.get("/_sandbox/calls", params={"pspReference": psp})).json()
    assert by_psp == calls
    everything = (await harness.client.get("/_sandbox/calls")).json()["calls"]
    assert [c["merchantReference"] for c in everything] == ["o-1", "o-1", "o-1", "o-2"]


async def test_calls_name_the_payment_a_refund_is_about(harness: Harness) -> None:
    psp = await harness.paid("o-1")
    refund = await harness.post_refund(psp)
    [call] = (await harness.client.get("/_sandbox/calls", params={"pspReference": psp})).json()[
        "calls"
    ][-1:]
    assert (call["endpoint"], call["statusCode"], call["result"]) == ("refunds", 201, "received")
    assert call["merchantReference"] == "o-1"
    assert call["refundPspReference"] == refund.json()["pspReference"]


async def test_an_unanswered_call_shows_while_it_hangs(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    hanging, release = asyncio.Event(), asyncio.Event()

    async def hang(seconds: float) -> None:  # the timeout fault's wait, held by the test
        hanging.set()
        await release.wait()

    monkeypatch.setattr(faults, "asyncio", SimpleNamespace(sleep=hang))
    harness.sandbox.inject_fault("timeout", target="payments")
    pending = asyncio.create_task(harness.post_payment(reference="o-1"))
    await hanging.wait()
    [call] = (await harness.client.get("/_sandbox/calls")).json()["calls"]
    assert (call["statusCode"], call["fault"], call["answeredAt"]) == (None, "timeout", None)
    release.set()
    assert (await pending).status_code == 200  # the late, real answer
    [call] = (await harness.client.get("/_sandbox/calls")).json()["calls"]
    assert (call["statusCode"], call["fault"], call["result"]) == (200, "timeout", "Pending")


async def test_reset_forgets_calls(harness: Harness) -> None:
    await harness.pay("o-1")
    await harness.client.post("/_sandbox/reset")
    assert (await harness.client.get("/_sandbox/calls")).json() == {"calls": []}
