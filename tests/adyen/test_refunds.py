"""``AdyenCheckoutClient.refund_payment`` through ``httpx.MockTransport``; its answer's parser."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from miniprogram_pay.adyen.checkout import AdyenCheckoutClient
from miniprogram_pay.adyen.responses import RefundResult, parse_refund_result
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import RefundReason
from miniprogram_pay.errors import AdyenError, AdyenUnavailableError
from tests.adyen.test_checkout import BASE, KEY, FakeAdyen, make_client, service_error, timeout
from tests.checkout_spec import example, schema_errors
from tests.fakes import Sleeper, Step

PSP = "993617894903480A"
REFUND_PSP = "993617894906488A"
AMOUNT = Amount(2500, "EUR")


def received(**overrides: Any) -> dict[str, Any]:
    body = {
        "merchantAccount": "TestMerchant",
        "paymentPspReference": PSP,
        "reference": "order-1-refund-1",
        "pspReference": REFUND_PSP,
        "status": "received",
        "amount": {"currency": "EUR", "value": 2500},
        **overrides,
    }
    return {k: v for k, v in body.items() if v is not None}


async def refund(
    client: AdyenCheckoutClient,
    psp: str = PSP,
    *,
    reference: str = "order-1-refund-1",
    reason: RefundReason | None = None,
    key: str = KEY,
    merchant_account: str = "TestMerchant",
) -> RefundResult:
    return await client.refund_payment(
        psp,
        merchant_account=merchant_account,
        amount=AMOUNT,
        reference=reference,
        idempotency_key=key,
        reason=reason,
    )


async def test_sends_a_schema_valid_refund_request() -> None:
    fake = FakeAdyen(httpx.Response(201, json=received()))
    result = await refund(make_client(fake), reason=RefundReason.CUSTOMER_REQUEST)
    (request,) = fake.requests
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/payments/{PSP}/refunds"
    assert request.headers["Idempotency-Key"] == KEY
    assert request.headers["X-API-Key"]
    body = json.loads(request.content)
    assert body == {
        "merchantAccount": "TestMerchant",
        "amount": {"currency": "EUR", "value": 2500},
        "reference": "order-1-refund-1",
        "merchantRefundReason": "CUSTOMER REQUEST",
    }
    assert schema_errors("PaymentRefundRequest", body) == []
    assert result == RefundResult(
        psp_reference=REFUND_PSP,
        payment_psp_reference=PSP,
        status="received",
        reference="order-1-refund-1",
        amount_value=2500,
        amount_currency="EUR",
    )


async def test_no_reason_sends_none() -> None:
    fake = FakeAdyen(httpx.Response(201, json=received()))
    await refund(make_client(fake))
    assert "merchantRefundReason" not in json.loads(fake.requests[0].content)


async def test_the_psp_reference_is_escaped_in_the_path() -> None:
    odd = "a/b?c#d e"
    fake = FakeAdyen(httpx.Response(201, json=received(paymentPspReference=odd)))
    await refund(make_client(fake), odd)
    assert fake.requests[0].url.raw_path == b"/v71/payments/a%2Fb%3Fc%23d%20e/refunds"


@pytest.mark.parametrize("first", [timeout(), httpx.Response(503), httpx.Response(500)])
async def test_retries_transient_failures_with_the_same_key_and_body(first: Step) -> None:
    fake = FakeAdyen(first, httpx.Response(201, json=received()))
    sleeper = Sleeper()
    result = await refund(make_client(fake, sleeper=sleeper))
    assert result.psp_reference == REFUND_PSP
    assert fake.calls == 2
    assert {r.headers["Idempotency-Key"] for r in fake.requests} == {KEY}
    assert {r.content for r in fake.requests} == {fake.requests[0].content}
    assert sleeper.delays == [0.25]


async def test_retries_are_bounded() -> None:
    fake = FakeAdyen(httpx.Response(502))
    with pytest.raises(AdyenUnavailableError):
        await refund(make_client(fake, max_retries=1))
    assert fake.calls == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [(422, "adyen_rejected"), (403, "adyen_auth_failed")],
)
async def test_refusals_are_not_retried(status: int, code: str) -> None:
    fake = FakeAdyen(service_error(status, errorCode="137", message="Invalid amount specified"))
    with pytest.raises(AdyenError) as caught:
        await refund(make_client(fake))
    assert caught.value.code == code
    assert fake.calls == 1


@pytest.mark.parametrize(
    "body",
    [
        received(status="refunded"),
        received(status=None),
        received(pspReference=None),
        received(pspReference=""),
        received(pspReference=7),
        received(pspReference="x" * 65),
        received(paymentPspReference="993617894903480B"),
        received(paymentPspReference=None),
        received(amount={"value": "2500", "currency": "EUR"}),
        received(amount="EUR 25.00"),
        received(reference=12),
    ],
)
async def test_a_malformed_answer_is_a_bad_response(body: dict[str, Any]) -> None:
    fake = FakeAdyen(httpx.Response(201, json=body))
    with pytest.raises(AdyenError) as caught:
        await refund(make_client(fake))
    assert (caught.value.code, caught.value.status) == ("adyen_bad_response", 502)


async def test_an_unparseable_2xx_is_retryable_bad_response() -> None:
    fake = FakeAdyen(httpx.Response(201, text='{"status":"rec'))
    with pytest.raises(AdyenError) as caught:
        await refund(make_client(fake, max_retries=0))
    assert caught.value.code == "adyen_bad_response"
    assert caught.value.retryable


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"psp": ""}, "psp_reference"),
        ({"psp": "9" * 65}, "psp_reference"),
        ({"reference": ""}, "reference"),
        ({"reference": "r" * 81}, "reference"),
        ({"merchant_account": ""}, "merchant_account"),
        ({"key": ""}, "idempotency_key"),
    ],
)
async def test_bad_arguments_are_refused_before_any_call(
    kwargs: dict[str, Any], problem: str
) -> None:
    fake = FakeAdyen(httpx.Response(201, json=received()))
    with pytest.raises(ValueError, match=problem):
        await refund(make_client(fake), **kwargs)
    assert fake.calls == 0


async def test_an_80_character_reference_is_sent() -> None:
    fake = FakeAdyen(httpx.Response(201, json=received()))
    await refund(make_client(fake), reference="r" * 80)
    assert json.loads(fake.requests[0].content)["reference"] == "r" * 80


def test_the_specs_own_example_parses() -> None:
    body = example("post-payments-paymentPspReference-refunds-refund-201")
    assert schema_errors("PaymentRefundResponse", body) == []
    result = parse_refund_result(body, payment_psp_reference="993617894903480A")
    assert (result.psp_reference, result.status) == ("993617894906488A", "received")


def test_the_schema_check_can_fail() -> None:
    assert schema_errors("PaymentRefundResponse", received(status="refunded"))
    assert schema_errors("PaymentRefundRequest", {"amount": {"currency": "EUR", "value": 1}})


def test_not_a_mapping() -> None:
    with pytest.raises(AdyenError) as caught:
        parse_refund_result([1])  # type: ignore[arg-type]
    assert caught.value.code == "adyen_bad_response"
