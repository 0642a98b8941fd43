"""Each scenario's details answer and webhook sequence, verified like a merchant would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from miniprogram_pay.domain.orders import attempt_reference
from miniprogram_pay.sandbox import SCENARIOS, SandboxConfig
from miniprogram_pay.sandbox.scenarios import (
    UnknownScenarioError,
    outcome_for,
    scenario_in_reference,
)
from miniprogram_pay.sandbox.state import SandboxPayment
from miniprogram_pay.sandbox.webhooks import WebhookDelivery
from tests.sandbox.helpers import Harness, payment_request

# scenario -> (details resultCode, [(eventCode, success), ...] in delivery order)
EXPECTED: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "authorised": ("Authorised", [("AUTHORISATION", "true")]),
    "refused": ("Refused", [("AUTHORISATION", "false")]),
    "error": ("Error", [("AUTHORISATION", "false")]),
    "pending-then-webhook": ("Pending", [("AUTHORISATION", "true")]),
    "webhook-held": ("Pending", [("AUTHORISATION", "true")]),  # once released
    "webhook-never": ("Pending", []),
    "webhook-before-details": ("Authorised", [("AUTHORISATION", "true")]),
    "duplicate-webhooks": ("Authorised", [("AUTHORISATION", "true")] * 3),
    "failure-then-success": ("Pending", [("AUTHORISATION", "false"), ("AUTHORISATION", "true")]),
    "webhook-twice-out-of-order": (
        "Authorised",
        [("AUTHORISATION", "false")] * 2 + [("AUTHORISATION", "true")] * 2,
    ),
    "success-then-failure": (
        "Authorised",
        [("AUTHORISATION", "true"), ("AUTHORISATION", "false")],
    ),
    "wrong-amount": ("Pending", [("AUTHORISATION", "true")]),
    "rotated-key": ("Authorised", [("AUTHORISATION", "true")]),
    "bad-signature": ("Authorised", [("AUTHORISATION", "true")]),
    "adyen-5xx-once": ("Authorised", [("AUTHORISATION", "true")]),
    "adyen-timeout-once": ("Authorised", [("AUTHORISATION", "true")]),
    "offer-closed": ("Pending", [("OFFER_CLOSED", "true")]),
    # One attempt alone; their next attempts are below.
    "retry-after-refusal": ("Refused", [("AUTHORISATION", "false")]),
    "expired-paid-late": ("Pending", []),
}


def test_every_scenario_is_covered() -> None:
    assert set(EXPECTED) == set(SCENARIOS)


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
async def test_scenario_result_and_webhook_sequence(harness: Harness, scenario: str) -> None:
    created = await harness.post_payment(reference=f"order-9-sbx-{scenario}", key="k")
    if scenario == "adyen-5xx-once":
        assert created.status_code == 500
        created = await harness.post_payment(reference=f"order-9-sbx-{scenario}", key="k")
    # adyen-timeout-once: the harness's timeout fault is 10 ms, so the late answer arrives.
    assert created.status_code == 200
    payment = next(iter(harness.sandbox.payments.values()))
    details = await harness.post_details(payment.payment_data)
    result_code, webhooks = EXPECTED[scenario]
    assert details.json()["resultCode"] == result_code
    if SCENARIOS[scenario].held:
        await harness.sandbox.drain(2)
        assert harness.sandbox.deliveries == []
        assert harness.sandbox.release(payment)
    await harness.sandbox.drain(2)
    sent = [(d.event_code, d.success) for d in harness.sandbox.deliveries]
    assert sent == webhooks
    assert len(harness.sandbox.payments) == 1


@pytest.mark.parametrize(
    ("scenario", "reason"), [("refused", "Not enough balance"), ("error", "Acquirer Error")]
)
async def test_failures_carry_a_refusal_reason(
    harness: Harness, scenario: str, reason: str
) -> None:
    body = await harness.pay(f"order-sbx-{scenario}")
    assert body["refusalReason"] == reason
    await harness.sandbox.drain(2)
    assert harness.sandbox.deliveries[0].reason == reason


async def test_webhooks_are_signed_and_authenticated(harness: Harness) -> None:
    await harness.pay("order-1")
    await harness.sandbox.drain(2)
    [received] = harness.receiver.received
    assert received.auth_ok
    assert received.key_index == 0
    assert received.item["merchantAccountCode"] == "SandboxMerchantCN"
    assert received.item["paymentMethod"] == "wechatpayMiniProgram"
    assert received.item["amount"] == {"currency": "CNY", "value": 1130}
    assert received.item["eventDate"]
    delivery = harness.sandbox.deliveries[0]
    assert delivery.accepted
    assert delivery.notification["live"] == "false"
    assert [(a.number, a.status_code) for a in delivery.attempts] == [(1, 200)]


async def test_live_config_marks_notifications_live(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(live=True)
    await harness.pay("order-1")
    await harness.sandbox.drain(2)
    assert harness.sandbox.deliveries[0].notification["live"] == "true"


async def test_rotated_key_verifies_only_with_the_second_key(harness: Harness) -> None:
    await harness.pay("order-sbx-rotated-key")
    await harness.sandbox.drain(2)
    assert [r.key_index for r in harness.receiver.received] == [1]


async def test_rotated_key_needs_two_keys(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(hmac_keys=(SandboxConfig().hmac_keys[0],))
    response = await harness.post_payment(reference="order-sbx-rotated-key")
    assert response.status_code == 422
    assert "two hmac_keys" in response.json()["message"]


async def test_bad_signature_is_rejected_and_retried_like_adyen(harness: Harness) -> None:
    body = await harness.pay("order-sbx-bad-signature")
    assert body["resultCode"] == "Authorised"
    await harness.sandbox.drain(2)
    [delivery] = harness.sandbox.deliveries
    assert delivery.state == "failed"
    assert [a.status_code for a in delivery.attempts] == [401, 401, 401, 401]
    assert all(r.key_index is None and r.auth_ok for r in harness.receiver.received)


async def test_webhook_before_details_is_accepted_before_the_answer(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(webhook_delay_seconds=0.02)
    await harness.pay("order-sbx-webhook-before-details")
    # No drain: the delivery must already be done when details answered.
    assert [d.state for d in harness.sandbox.deliveries] == ["accepted"]
    assert len(harness.receiver.received) == 1


async def test_ordinary_webhooks_arrive_after_the_details_answer(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(webhook_delay_seconds=0.02)
    await harness.pay("order-1")
    assert harness.receiver.received == []
    await harness.sandbox.drain(2)
    assert len(harness.receiver.received) == 1


async def test_duplicates_are_identical_and_partly_concurrent(harness: Harness) -> None:
    harness.receiver.delay_seconds = 0.02
    await harness.pay("order-sbx-duplicate-webhooks")
    await harness.sandbox.drain(2)
    deliveries = harness.sandbox.deliveries
    assert [d.copy for d in deliveries] == [1, 2, 3]
    assert all(d.accepted for d in deliveries)
    assert deliveries[0].notification == deliveries[1].notification == deliveries[2].notification
    assert harness.receiver.peak_in_flight == 2


async def test_failure_then_success_waits_for_each_delivery(harness: Harness) -> None:
    harness.receiver.scripted.extend([500])
    await harness.pay("order-sbx-failure-then-success")
    await harness.sandbox.drain(2)
    first, second = harness.sandbox.deliveries
    # The false notification is retried to acceptance before the true one is sent.
    assert [a.status_code for a in first.attempts] == [500, 200]
    assert first.attempts[-1].at <= second.attempts[0].at
    assert (first.success, second.success) == ("false", "true")


async def test_pending_then_webhook_waits_the_configured_delay(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(webhook_delay_seconds=0.05)
    body = await harness.pay("order-sbx-pending-then-webhook")
    assert body["resultCode"] == "Pending"
    await asyncio.sleep(0.01)
    assert harness.receiver.received == []
    await harness.sandbox.drain(2)
    assert [r.item["success"] for r in harness.receiver.received] == ["true"]


async def test_scenario_set_through_the_control_api(harness: Harness) -> None:
    response = await harness.client.post(
        "/_sandbox/scenarios", json={"reference": "order-77", "scenario": "refused"}
    )
    assert response.status_code == 200
    assert (await harness.pay("order-77"))["resultCode"] == "Refused"


async def test_override_applies_to_an_existing_unsettled_payment(harness: Harness) -> None:
    created = (await harness.post_payment(reference="order-5")).json()
    harness.sandbox.set_scenario("order-5", "error")
    details = await harness.post_details(created["action"]["paymentData"])
    assert details.json()["resultCode"] == "Error"


async def test_default_scenario_from_config(harness_factory: Callable[..., Harness]) -> None:
    harness = harness_factory(default_scenario="refused")
    assert (await harness.pay("order-1"))["resultCode"] == "Refused"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("order-17-sbx-refused", "refused"),
        ("sbx-refused-2", "refused"),
        ("x-sbx-pending-then-webhook", "pending-then-webhook"),
        ("order-17", None),
        ("sbx-adyen-5xx-once", "adyen-5xx-once"),
    ],
)
def test_scenario_in_reference(reference: str, expected: str | None) -> None:
    assert scenario_in_reference(reference) == expected


def test_an_unknown_scenario_marker_is_an_error() -> None:
    with pytest.raises(UnknownScenarioError):
        scenario_in_reference("order-sbx-typo")


def test_outcome_for_cancel_overrides_the_scenario() -> None:
    outcome = outcome_for(SCENARIOS["refused"], "requestPayment:fail cancel")
    assert outcome.result_code == "Cancelled"


async def test_wrong_amount_notifies_one_minor_unit_more_than_was_paid(harness: Harness) -> None:
    await harness.pay("order-sbx-wrong-amount")
    await harness.sandbox.drain(2)
    [received] = harness.receiver.received
    assert received.key_index == 0  # correctly signed: only the amount is wrong
    assert received.item["amount"] == {"currency": "CNY", "value": 1131}
    [payment] = harness.sandbox.payments.values()
    assert payment.amount == {"currency": "CNY", "value": 1130}


async def test_held_webhooks_wait_for_release_and_go_once(harness: Harness) -> None:
    body = await harness.pay("order-sbx-webhook-held")
    assert body["resultCode"] == "Pending"
    [payment] = harness.sandbox.payments.values()
    await harness.sandbox.drain(2)  # nothing is scheduled, so nothing to wait for
    assert harness.sandbox.deliveries == []
    assert payment.to_dict()["heldWebhooks"] == 1
    assert harness.sandbox.release(payment)
    assert not harness.sandbox.release(payment)
    await harness.sandbox.drain(2)
    assert [(d.event_code, d.success) for d in harness.sandbox.deliveries] == [
        ("AUTHORISATION", "true")
    ]
    assert payment.to_dict()["heldWebhooks"] == 0


async def test_a_payment_not_yet_settled_holds_nothing(harness: Harness) -> None:
    await harness.post_payment(reference="order-sbx-webhook-held")
    [payment] = harness.sandbox.payments.values()
    assert not harness.sandbox.release(payment)


def merchant_reference(delivery: WebhookDelivery) -> str:
    item = delivery.notification["notificationItems"][0]["NotificationRequestItem"]
    reference: str = item["merchantReference"]
    return reference


async def attempt(harness: Harness, order: str, number: int) -> SandboxPayment:
    """One attempt of ``order`` at Adyen, as the package starts it: its own reference."""
    reference = attempt_reference(order, number)
    created = await harness.post_payment(
        payment_request(reference=reference, merchantOrderReference=order), key=reference
    )
    assert created.status_code == 200, created.text
    return harness.sandbox.payments[created.json()["pspReference"]]


async def test_refused_then_paid_on_retry(harness: Harness) -> None:
    order = "order-9-sbx-retry-after-refusal"
    first = await attempt(harness, order, 1)
    refused = await harness.post_details(first.payment_data)
    assert refused.json()["resultCode"] == "Refused"
    second = await attempt(harness, order, 2)
    assert (first.scenario, second.scenario) == ("retry-after-refusal", "authorised")
    paid = await harness.post_details(second.payment_data)
    assert paid.json()["resultCode"] == "Authorised"
    await harness.sandbox.drain(2)
    sent = [(merchant_reference(d), d.success) for d in harness.sandbox.deliveries]
    assert sent == [(f"{order}-1", "false"), (f"{order}-2", "true")]
    assert second.to_dict()["merchantOrderReference"] == order


async def test_expired_then_paid_late_after_a_second_attempt_was_paid(harness: Harness) -> None:
    order = "order-9-sbx-expired-paid-late"
    first = await attempt(harness, order, 1)
    assert (await harness.post_details(first.payment_data)).json()["resultCode"] == "Pending"
    await harness.sandbox.drain(2)
    assert harness.sandbox.deliveries == []  # the prepay_id expires: nothing ever comes
    second = await attempt(harness, order, 2)
    assert (await harness.post_details(second.payment_data)).json()["resultCode"] == "Authorised"
    await harness.sandbox.drain(2)
    sent = [(merchant_reference(d), d.event_code, d.success) for d in harness.sandbox.deliveries]
    assert sorted(sent) == [
        (f"{order}-1", "AUTHORISATION", "true"),
        (f"{order}-2", "AUTHORISATION", "true"),
    ]
    assert first.authorised and second.authorised  # both hold the money: one is refundable
    # The first attempt's details now say what happened to it.
    assert (await harness.post_details(first.payment_data)).json()["resultCode"] == "Authorised"


async def test_the_first_attempt_paid_late_without_its_details_call(harness: Harness) -> None:
    order = "order-9-sbx-expired-paid-late"
    first = await attempt(harness, order, 1)  # the shopper never came back from it
    second = await attempt(harness, order, 2)
    await harness.post_details(second.payment_data)
    await harness.sandbox.drain(2)
    assert first.authorised and first.settled
    assert {d.psp_reference for d in harness.sandbox.deliveries} == {
        first.psp_reference,
        second.psp_reference,
    }


async def test_attempts_of_other_orders_are_not_retries(harness: Harness) -> None:
    await attempt(harness, "order-9-sbx-retry-after-refusal", 1)
    other = await attempt(harness, "order-10-sbx-retry-after-refusal", 1)
    unlinked = await harness.post_payment(
        payment_request(reference="order-9-sbx-retry-after-refusal-x"), key="x"
    )
    assert other.scenario == "retry-after-refusal"
    psp = unlinked.json()["pspReference"]
    assert harness.sandbox.payments[psp].scenario == "retry-after-refusal"


@pytest.mark.parametrize("bad", ["", 7, "o" * 1001])
async def test_a_bad_merchant_order_reference_is_refused_like_adyen(
    harness: Harness, bad: object
) -> None:
    response = await harness.post_payment(payment_request(merchantOrderReference=bad))
    assert response.status_code == 422
    assert "merchantOrderReference" in response.json()["message"]
    assert harness.sandbox.payments == {}
