"""Refunds at the simulated Adyen: the answer, its schema, the webhooks of each scenario."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import (
    RefundMachine,
    RefundView,
    fold_refund,
    refund_webhook_event,
)
from miniprogram_pay.sandbox import REFUND_SCENARIOS, WebhookDelivery
from miniprogram_pay.sandbox.scenarios import (
    UnknownScenarioError,
    refund_scenario_in_reference,
    scenario_in_reference,
)
from miniprogram_pay.sandbox.state import CURRENCY_MISMATCH, EXCEEDS_BALANCE, NOT_CAPTURED
from tests.checkout_spec import schema_errors
from tests.sandbox.helpers import Harness, missing, refund_request

REFUND_CODES = ("REFUND", "REFUND_FAILED", "REFUNDED_REVERSED")


def refund_deliveries(harness: Harness) -> list[WebhookDelivery]:
    return [d for d in harness.sandbox.deliveries if d.event_code in REFUND_CODES]


def sent(harness: Harness, response: httpx.Response | None = None) -> list[tuple[str, str]]:
    """(eventCode, success) sent, in order, for the refund ``response`` answered (or all)."""
    wanted = None if response is None else response.json()["pspReference"]
    deliveries = refund_deliveries(harness)
    return [(d.event_code, d.success) for d in deliveries if wanted in (None, d.psp_reference)]


# -- the answer --------------------------------------------------------------------------


async def test_the_answer_is_a_schema_valid_received(harness: Harness) -> None:
    psp = await harness.paid()
    response = await harness.post_refund(psp, merchantRefundReason="CUSTOMER REQUEST")
    assert response.status_code == 201
    body = response.json()
    assert schema_errors("PaymentRefundResponse", body) == []
    assert body["status"] == "received"
    assert body["paymentPspReference"] == psp
    assert body["pspReference"] != psp and len(body["pspReference"]) == 16
    assert body["amount"] == {"currency": "CNY", "value": 300}
    assert (body["reference"], body["merchantRefundReason"]) == (
        "order-1-refund-1",
        "CUSTOMER REQUEST",
    )
    [refund] = harness.sandbox.payments[psp].refunds
    assert harness.sandbox.refunds[body["pspReference"]] is refund
    assert (refund.outcome, refund.external) == ("refunded", False)


async def test_a_refund_without_reference_or_reason_is_schema_valid(harness: Harness) -> None:
    psp = await harness.paid()
    response = await harness.post_refund(psp, reference=missing())
    assert response.status_code == 201
    assert schema_errors("PaymentRefundResponse", response.json()) == []
    assert "reference" not in response.json()
    await harness.sandbox.drain(2)
    # Without a refund reference, the webhook carries the payment's merchantReference.
    assert refund_deliveries(harness)[0].item["merchantReference"] == "order-1"


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"amount": missing()}, 422, "100"),
        ({"amount": {"currency": "CNY", "value": 0}}, 422, "137"),
        ({"amount": {"currency": "cny", "value": 10}}, 422, "137"),
        ({"amount": {"currency": "CNY", "value": True}}, 422, "137"),
        ({"merchantAccount": "SomeoneElse"}, 403, "901"),
        ({"merchantAccount": missing()}, 403, "901"),
        ({"reference": "r" * 81}, 422, "000"),
        ({"merchantRefundReason": "BECAUSE"}, 422, "000"),
        ({"originalReference": "123"}, 422, "000"),
    ],
)
async def test_invalid_requests_answer_a_service_error(
    harness: Harness, overrides: dict[str, Any], status: int, code: str
) -> None:
    psp = await harness.paid()
    response = await harness.post_refund(psp, **overrides)
    assert (response.status_code, response.json()["errorCode"]) == (status, code)
    assert schema_errors("ServiceError", response.json()) == []
    assert harness.sandbox.payments[psp].refunds == []


async def test_auth_json_and_unknown_payment(harness: Harness) -> None:
    psp = await harness.paid()
    url = f"http://sandbox.test/adyen/v71/payments/{psp}/refunds"
    no_key = await harness.client.post(url, json=refund_request())
    assert (no_key.status_code, no_key.json()["errorCode"]) == (401, "000")
    headers = {"X-API-Key": harness.sandbox.config.api_key}
    garbage = await harness.client.post(url, content=b"{", headers=headers)
    assert garbage.status_code == 400
    unknown = await harness.post_refund("1234567890123456")
    assert unknown.status_code == 422
    assert "Original pspReference" in unknown.json()["message"]
    assert harness.sandbox.refunds == {}


# -- the webhooks of each scenario -------------------------------------------------------

EXPECTED: dict[str, list[tuple[str, str]]] = {
    "refunded": [("REFUND", "true")],
    "refused": [("REFUND", "false")],
    "failed": [("REFUND", "true"), ("REFUND_FAILED", "true")],
    "reversed": [("REFUND", "true"), ("REFUNDED_REVERSED", "true")],
    "duplicated": [("REFUND", "true")] * 3,
    "reordered": [("REFUND_FAILED", "true"), ("REFUND", "true")],
    "webhook-before-answer": [("REFUND", "true")],
}


def test_every_refund_scenario_is_covered() -> None:
    assert set(EXPECTED) == set(REFUND_SCENARIOS)


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
async def test_refund_scenario_webhooks(harness: Harness, scenario: str) -> None:
    psp = await harness.paid()
    reference = f"order-1-refund-1-sbx-refund-{scenario}"
    response = await harness.post_refund(psp, reference=reference)
    assert response.status_code == 201
    refund_psp = response.json()["pspReference"]
    await harness.sandbox.drain(2)
    assert sent(harness) == EXPECTED[scenario]
    for delivery in refund_deliveries(harness):
        item = delivery.item
        assert delivery.accepted
        assert (item["pspReference"], item["originalReference"]) == (refund_psp, psp)
        assert item["merchantReference"] == reference
        assert item["amount"] == {"currency": "CNY", "value": 300}
        assert "operations" not in item
    # Signed with originalReference in the signing string, Basic auth on: the merchant verified.
    assert all(r.auth_ok and r.key_index == 0 for r in harness.receiver.received)
    assert len(harness.receiver.received) == len(EXPECTED[scenario])


async def test_duplicates_are_byte_identical(harness: Harness) -> None:
    psp = await harness.paid()
    await harness.post_refund(psp, reference="r-sbx-refund-duplicated")
    await harness.sandbox.drain(2)
    first, *rest = refund_deliveries(harness)
    assert [d.copy for d in [first, *rest]] == [1, 2, 3]
    assert all(d.notification == first.notification for d in rest)


async def test_webhook_before_answer_is_accepted_before_the_answer(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(webhook_delay_seconds=0.02)
    psp = await harness.paid()
    await harness.post_refund(psp, reference="r-sbx-refund-webhook-before-answer")
    # No drain: the delivery was done when /refunds answered.
    assert [d.state for d in refund_deliveries(harness)] == ["accepted"]


async def test_ordinary_refund_webhooks_come_after_the_delay(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(webhook_delay_seconds=0.02)
    psp = await harness.paid()
    await harness.post_refund(psp)
    assert harness.receiver.received == []
    await harness.sandbox.drain(2)
    assert [r.item["eventCode"] for r in harness.receiver.received] == ["REFUND"]


async def test_a_refused_refund_carries_a_reason(harness: Harness) -> None:
    psp = await harness.paid()
    await harness.post_refund(psp, reference="r-sbx-refund-refused")
    await harness.sandbox.drain(2)
    assert refund_deliveries(harness)[0].item["reason"] == "Refund refused"
    assert harness.sandbox.payments[psp].refundable_value == 1130


# -- what is left to refund at Adyen -----------------------------------------------------


async def test_more_than_is_left_is_refused_in_the_webhook(harness: Harness) -> None:
    psp = await harness.paid()
    first = await harness.post_refund(psp, amount={"currency": "CNY", "value": 1000})
    over = await harness.post_refund(psp, amount={"currency": "CNY", "value": 131})
    # Adyen takes the request and says no later: the answer is still "received".
    assert (over.status_code, over.json()["status"]) == (201, "received")
    rest = await harness.post_refund(psp, amount={"currency": "CNY", "value": 130})
    assert rest.status_code == 201
    await harness.sandbox.drain(2)
    assert [sent(harness, r) for r in (first, over, rest)] == [
        [("REFUND", "true")],
        [("REFUND", "false")],
        [("REFUND", "true")],
    ]
    refused = harness.sandbox.refunds[over.json()["pspReference"]]
    assert refused.refusal_reason == EXCEEDS_BALANCE
    payment = harness.sandbox.payments[psp]
    assert payment.refundable_value == 0
    assert [r.outcome for r in payment.refunds] == ["refunded", "refused", "refunded"]


@pytest.mark.parametrize("scenario", ["failed", "reversed", "reordered", "refused"])
async def test_money_that_came_back_can_be_refunded_again(harness: Harness, scenario: str) -> None:
    psp = await harness.paid()
    full = {"currency": "CNY", "value": 1130}
    await harness.post_refund(psp, amount=full, reference=f"r1-sbx-refund-{scenario}")
    again = await harness.post_refund(psp, amount=full, reference="r2")
    await harness.sandbox.drain(2)
    assert sent(harness, again) == [("REFUND", "true")]
    assert harness.sandbox.payments[psp].refundable_value == 0


async def test_a_payment_that_is_not_authorised_cannot_be_refunded(harness: Harness) -> None:
    body = await harness.pay("order-2-sbx-refused")
    response = await harness.post_refund(body["pspReference"])
    assert response.status_code == 201
    await harness.sandbox.drain(2)
    [refusal] = refund_deliveries(harness)
    assert (refusal.success, refusal.item["reason"]) == ("false", NOT_CAPTURED)


async def test_another_currency_is_refused(harness: Harness) -> None:
    psp = await harness.paid()
    await harness.post_refund(psp, amount={"currency": "USD", "value": 100})
    await harness.sandbox.drain(2)
    [refusal] = refund_deliveries(harness)
    assert (refusal.success, refusal.item["reason"]) == ("false", CURRENCY_MISMATCH)


# -- idempotency and faults --------------------------------------------------------------


async def test_the_same_key_and_body_replays_the_first_answer(harness: Harness) -> None:
    psp = await harness.paid()
    first = await harness.post_refund(psp, key="refund-key-1")
    again = await harness.post_refund(psp, key="refund-key-1")
    assert again.status_code == 201
    assert again.content == first.content
    assert len(harness.sandbox.payments[psp].refunds) == 1
    other_body = await harness.post_refund(psp, key="refund-key-1", reference="another")
    assert (other_body.status_code, other_body.json()["errorCode"]) == (422, "000")


async def test_the_same_key_for_another_payment_is_not_a_replay(harness: Harness) -> None:
    first, second = await harness.paid("order-1"), await harness.paid("order-2")
    assert (await harness.post_refund(first, key="k")).status_code == 201
    other = await harness.post_refund(second, key="k")
    assert other.status_code == 422
    assert harness.sandbox.payments[second].refunds == []


async def test_a_processed_fault_keeps_the_refund_for_the_retry(harness: Harness) -> None:
    psp = await harness.paid()
    harness.sandbox.inject_fault("500", target="refunds")
    failed = await harness.post_refund(psp, key="k")
    assert failed.status_code == 500
    retried = await harness.post_refund(psp, key="k")
    assert retried.status_code == 201
    [refund] = harness.sandbox.payments[psp].refunds
    assert retried.json()["pspReference"] == refund.psp_reference


async def test_a_fault_for_payments_leaves_refunds_alone(harness: Harness) -> None:
    psp = await harness.paid()
    harness.sandbox.inject_fault("503", target="payments")
    assert (await harness.post_refund(psp)).status_code == 201
    assert len(harness.sandbox.faults.pending()) == 1


# -- choosing a refund's scenario --------------------------------------------------------


def test_refund_markers() -> None:
    assert refund_scenario_in_reference("r-sbx-refund-failed") == "failed"
    assert refund_scenario_in_reference("r-sbx-refund-webhook-before-answer-2") == (
        "webhook-before-answer"
    )
    assert refund_scenario_in_reference("order-17") is None
    assert refund_scenario_in_reference(None) is None
    with pytest.raises(UnknownScenarioError):
        refund_scenario_in_reference("r-sbx-refund-nope")


def test_payment_markers_skip_refund_markers() -> None:
    assert scenario_in_reference("order-sbx-refund-failed") is None
    assert scenario_in_reference("order-sbx-refund-failed-sbx-refused") == "refused"
    assert scenario_in_reference("order-sbx-refused-sbx-refund-failed") == "refused"


async def test_a_payment_reference_marker_applies_to_its_refunds(harness: Harness) -> None:
    psp = await harness.paid("order-7-sbx-refund-reversed")
    await harness.post_refund(psp)
    await harness.sandbox.drain(2)
    assert sent(harness) == EXPECTED["reversed"]


async def test_the_refunds_own_marker_wins_over_its_payments(harness: Harness) -> None:
    psp = await harness.paid("order-7-sbx-refund-reversed")
    await harness.post_refund(psp, reference="r-sbx-refund-refused")
    await harness.sandbox.drain(2)
    assert sent(harness) == EXPECTED["refused"]


async def test_overrides_come_first(harness: Harness) -> None:
    psp = await harness.paid("order-8")
    control = "http://sandbox.test/_sandbox/refund-scenarios"
    set_payment = await harness.client.post(
        control, json={"reference": "order-8", "scenario": "failed"}
    )
    assert set_payment.status_code == 200
    harness.sandbox.set_refund_scenario("r-2", "refused")
    by_payment = await harness.post_refund(psp, reference="r-1-sbx-refund-reversed")
    by_refund = await harness.post_refund(psp, reference="r-2")
    await harness.sandbox.drain(2)
    assert sent(harness, by_payment) == EXPECTED["failed"]
    assert sent(harness, by_refund) == EXPECTED["refused"]
    bad = await harness.client.post(control, json={"reference": "x", "scenario": "nope"})
    assert bad.status_code == 400


async def test_an_unknown_refund_marker_fails_loudly(harness: Harness) -> None:
    psp = await harness.paid()
    response = await harness.post_refund(psp, reference="r-sbx-refund-typo")
    assert response.status_code == 422
    payment = await harness.post_payment(reference="order-9-sbx-refund-typo")
    assert payment.status_code == 422


# -- refunds made in the Customer Area ---------------------------------------------------


async def test_a_customer_area_refund_arrives_only_as_webhooks(harness: Harness) -> None:
    psp = await harness.paid()
    url = f"http://sandbox.test/_sandbox/payments/{psp}/refunds"
    response = await harness.client.post(url, json={"scenario": "failed"})
    assert response.status_code == 201
    assert response.json()["external"] is True
    assert response.json()["amount"] == {"currency": "CNY", "value": 1130}
    await harness.sandbox.drain(2)
    assert sent(harness) == EXPECTED["failed"]
    assert refund_deliveries(harness)[0].item["originalReference"] == psp
    view = (await harness.client.get(f"http://sandbox.test/_sandbox/payments/{psp}")).json()
    assert view["refundableValue"] == 1130
    assert [r["outcome"] for r in view["refunds"]] == ["failed"]


async def test_customer_area_refund_requests_are_checked(harness: Harness) -> None:
    psp = await harness.paid()
    url = f"http://sandbox.test/_sandbox/payments/{psp}/refunds"
    for body in ({"amount": {"value": -1, "currency": "CNY"}}, {"scenario": "nope"}):
        assert (await harness.client.post(url, json=body)).status_code == 400
    missing_payment = await harness.client.post(
        "http://sandbox.test/_sandbox/payments/1/refunds", json={}
    )
    assert missing_payment.status_code == 404
    refund = await harness.sandbox.refund_in_customer_area(
        harness.sandbox.payments[psp], {"currency": "CNY", "value": 5}
    )
    assert (refund.external, refund.amount["value"]) == (True, 5)


async def test_scenarios_list_and_reset(harness: Harness) -> None:
    listing = (await harness.client.get("http://sandbox.test/_sandbox/scenarios")).json()
    assert {s["name"] for s in listing["refundScenarios"]} == set(REFUND_SCENARIOS)
    assert listing["refundDefault"] == "refunded"
    psp = await harness.paid()
    harness.sandbox.set_refund_scenario("order-1", "failed")
    await harness.post_refund(psp)
    await harness.client.post("http://sandbox.test/_sandbox/reset")
    assert harness.sandbox.refunds == {}
    assert harness.sandbox.refund_scenario_overrides == {}


@pytest.mark.parametrize("scenario", sorted(REFUND_SCENARIOS))
def test_each_scenarios_outcome_is_where_its_webhooks_lead(scenario: str) -> None:
    """The sandbox's truth and the package's rule agree on every scenario, in its order."""
    chosen = REFUND_SCENARIOS[scenario]
    events = [
        refund_webhook_event(
            step.event_code, step.success, dedup_key=f"{n}", psp_reference="1",
            amount_value=300, amount_currency="CNY",
        )
        for n, step in enumerate(chosen.webhooks)
    ]  # fmt: skip
    view = fold_refund(RefundView.new(Amount(300, "CNY")), events, RefundMachine())
    assert view.state == chosen.outcome.capitalize()


@pytest.mark.parametrize(
    "scenario", ["pending-then-webhook", "failure-then-success", "webhook-held"]
)
async def test_a_payment_authorised_by_its_webhook_can_be_refunded(
    harness: Harness, scenario: str
) -> None:
    """Details said Pending, yet Adyen authorised it: its AUTHORISATION success=true says so."""
    body = await harness.pay(f"order-3-sbx-{scenario}")
    assert body["resultCode"] == "Pending"
    await harness.sandbox.drain(2)
    response = await harness.post_refund(body["pspReference"])
    assert response.status_code == 201
    await harness.sandbox.drain(2)
    assert sent(harness, response) == [("REFUND", "true")]
