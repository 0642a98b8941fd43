"""Injected faults, and retries with the same Idempotency-Key after them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from tests.sandbox.helpers import ADYEN, Harness, payment_request


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("503", 503), ("422", 422)])
async def test_the_next_call_answers_the_fault(harness: Harness, kind: str, status: int) -> None:
    harness.sandbox.inject_fault(kind)  # type: ignore[arg-type]
    failed = await harness.post_payment()
    assert failed.status_code == status
    assert failed.json()["status"] == status
    assert (await harness.post_payment()).status_code == 200


async def test_a_401_fault_looks_like_a_wrong_key(harness: Harness) -> None:
    harness.sandbox.inject_fault("401")
    response = await harness.post_payment()
    assert response.status_code == 401
    assert response.json()["errorType"] == "security"
    # 401 rejects up front: nothing was created.
    assert harness.sandbox.payments == {}


async def test_garbage_is_not_json(harness: Harness) -> None:
    harness.sandbox.inject_fault("garbage")
    response = await harness.post_payment()
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_a_fault_lasts_count_calls(harness: Harness) -> None:
    harness.sandbox.inject_fault("503", count=2)
    statuses = [(await harness.post_payment()).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]


async def test_a_fault_can_target_one_endpoint(harness: Harness) -> None:
    harness.sandbox.inject_fault("500", target="details")
    created = await harness.post_payment()
    assert created.status_code == 200
    data = created.json()["action"]["paymentData"]
    assert (await harness.post_details(data)).status_code == 500


async def test_retry_after_a_processed_5xx_returns_the_original_payment(harness: Harness) -> None:
    harness.sandbox.inject_fault("500")
    failed = await harness.post_payment(key="k-1")
    assert failed.status_code == 500
    assert len(harness.sandbox.payments) == 1  # created before the failure answer
    retried = await harness.post_payment(key="k-1")
    assert retried.status_code == 200
    assert retried.json()["pspReference"] in harness.sandbox.payments
    assert len(harness.sandbox.payments) == 1


async def test_an_unprocessed_5xx_creates_nothing(harness: Harness) -> None:
    harness.sandbox.inject_fault("503", processed=False)
    assert (await harness.post_payment(key="k-1")).status_code == 503
    assert harness.sandbox.payments == {}
    assert (await harness.post_payment(key="k-1")).status_code == 200
    assert len(harness.sandbox.payments) == 1


async def test_a_retry_after_a_client_timeout_gets_the_same_payment(harness: Harness) -> None:
    harness.sandbox.inject_fault("timeout", delay_seconds=5)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await harness.post_payment(key="k-1")
    [payment] = harness.sandbox.payments.values()
    retried = await harness.post_payment(key="k-1")
    assert retried.json()["pspReference"] == payment.psp_reference
    assert len(harness.sandbox.payments) == 1


async def test_a_timeout_answers_late_if_the_client_waits(harness: Harness) -> None:
    harness.sandbox.inject_fault("timeout", delay_seconds=0.01)
    response = await harness.post_payment()
    assert response.status_code == 200


async def test_an_unprocessed_timeout_ends_in_504(harness: Harness) -> None:
    harness.sandbox.inject_fault("timeout", delay_seconds=0.01, processed=False)
    assert (await harness.post_payment()).status_code == 504
    assert harness.sandbox.payments == {}


async def test_adyen_5xx_once_fails_only_the_first_call(harness: Harness) -> None:
    first = await harness.post_payment(reference="o-sbx-adyen-5xx-once", key="k")
    second = await harness.post_payment(reference="o-sbx-adyen-5xx-once", key="k")
    assert (first.status_code, second.status_code) == (500, 200)
    assert len(harness.sandbox.payments) == 1
    # Even a retry without the key (a new payment at Adyen) is not failed again.
    third = await harness.post_payment(reference="o-sbx-adyen-5xx-once")
    assert third.status_code == 200
    assert len(harness.sandbox.payments) == 2


async def test_adyen_timeout_once_hangs_then_the_retry_succeeds(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(timeout_fault_seconds=5)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await harness.post_payment(reference="o-sbx-adyen-timeout-once", key="k")
    retried = await harness.post_payment(reference="o-sbx-adyen-timeout-once", key="k")
    assert retried.status_code == 200
    assert len(harness.sandbox.payments) == 1


async def test_a_concurrent_request_with_the_same_key_is_a_409(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(webhook_delay_seconds=0.05)
    data = (await harness.post_payment(reference="o-sbx-webhook-before-details")).json()
    payment_data = data["action"]["paymentData"]
    slow = asyncio.create_task(harness.post_details(payment_data, key="d"))
    await asyncio.sleep(0.01)
    racing = await harness.post_details(payment_data, key="d")
    assert racing.status_code == 409
    assert racing.json()["errorCode"] == "704"
    assert (await slow).status_code == 200


async def test_faults_through_the_control_api(harness: Harness) -> None:
    response = await harness.client.post(
        "/_sandbox/faults", json={"kind": "503", "count": 2, "target": "payments"}
    )
    assert response.status_code == 201
    listed = (await harness.client.get("/_sandbox/faults")).json()["faults"]
    assert listed == [
        {"kind": "503", "count": 2, "target": "payments", "processed": True, "delay_seconds": None}
    ]
    assert (await harness.post_payment()).status_code == 503
    await harness.client.delete("/_sandbox/faults")
    assert (await harness.post_payment()).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "418"},
        {"kind": "500", "target": "captures"},
        {"kind": "500", "count": 0},
        {"kind": "500", "processed": "yes"},
        {"kind": "timeout", "delay_seconds": -1},
    ],
)
async def test_bad_fault_requests_are_400(harness: Harness, body: dict[str, object]) -> None:
    response = await harness.client.post("/_sandbox/faults", json=body)
    assert response.status_code == 400
    assert "error" in response.json()


async def test_faults_fire_before_auth(harness: Harness) -> None:
    harness.sandbox.inject_fault("503", processed=False)
    response = await harness.client.post(f"{ADYEN}/payments", json=payment_request())
    assert response.status_code == 503
