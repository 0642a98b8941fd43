"""POST /adyen/v{N}/payments: auth, validation, response shapes, idempotency."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from miniprogram_pay.sandbox import md5_pay_sign, verify_pay_sign
from tests.checkout_spec import schema_errors
from tests.sandbox.helpers import ADYEN, Harness, missing, payment_request, wx_params

UNAUTHORIZED = {
    "status": 401,
    "errorCode": "000",
    "message": "HTTP Status Response - Unauthorized",
    "errorType": "security",
}


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
async def test_a_missing_or_wrong_api_key_gets_adyens_401(
    harness: Harness, headers: dict[str, str]
) -> None:
    response = await harness.client.post(
        f"{ADYEN}/payments", json=payment_request(), headers=headers
    )
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED
    assert harness.sandbox.payments == {}


async def test_details_checks_the_api_key_too(harness: Harness) -> None:
    response = await harness.client.post(f"{ADYEN}/payments/details", json={})
    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED


WALLET = {"type": "wechatpayMiniProgram", "openid": "oX", "appId": "wxsandbox0000000001"}


@pytest.mark.parametrize(
    ("overrides", "error_code"),
    [
        ({"amount": missing()}, "100"),
        ({"amount": "1130"}, "137"),
        ({"amount": {"currency": "CN", "value": 1}}, "137"),
        ({"amount": {"currency": "cny", "value": 1}}, "137"),
        ({"amount": {"currency": "CNY", "value": 0}}, "137"),
        ({"amount": {"currency": "CNY", "value": -5}}, "137"),
        ({"amount": {"currency": "CNY", "value": 11.3}}, "137"),
        ({"amount": {"currency": "CNY", "value": True}}, "137"),
        ({"amount": {"currency": "CNY", "value": "1130"}}, "137"),
        ({"reference": missing()}, "130"),
        ({"reference": ""}, "130"),
        ({"reference": "x" * 81}, "000"),
        ({"returnUrl": missing()}, "14_030"),
        ({"returnUrl": ""}, "14_030"),
        ({"returnUrl": "https://x/" + "a" * 8000}, "000"),
        ({"paymentMethod": missing()}, "000"),
        ({"paymentMethod": {**WALLET, "type": "wechatpayQR"}}, "000"),
        ({"paymentMethod": {**WALLET, "extra": "field"}}, "000"),
        ({"paymentMethod": {"type": "wechatpayMiniProgram", "appId": WALLET["appId"]}}, "000"),
        ({"paymentMethod": {**WALLET, "appId": "wxsomeoneelse"}}, "000"),
        ({"reference": "order-sbx-nonsense"}, "000"),
    ],
)
async def test_invalid_requests_get_422_service_errors(
    harness: Harness, overrides: dict[str, Any], error_code: str
) -> None:
    response = await harness.post_payment(**overrides)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["errorCode"] == error_code
    assert body["errorType"] == "validation"
    assert body["status"] == 422
    assert re.fullmatch(r"\d{16}", body["pspReference"])
    assert harness.sandbox.payments == {}


async def test_return_url_missing_uses_adyens_message(harness: Harness) -> None:
    body = (await harness.post_payment(returnUrl=missing())).json()
    assert body["message"] == "Return URL is missing."


@pytest.mark.parametrize("account", ["SomeoneElse", None])
async def test_a_foreign_merchant_account_is_a_403_security_error(
    harness: Harness, account: str | None
) -> None:
    response = await harness.post_payment(merchantAccount=account if account else missing())
    assert response.status_code == 403
    assert response.json()["errorType"] == "security"
    assert response.json()["errorCode"] == "901"


async def test_a_body_that_is_not_json_is_a_400(harness: Harness) -> None:
    response = await harness.client.post(
        f"{ADYEN}/payments", content=b"{not json", headers={"X-API-Key": "sandbox-api-key"}
    )
    assert response.status_code == 400
    assert response.json()["errorCode"] == "000"


async def test_success_is_pending_with_signed_wx_params_in_sdk_data(harness: Harness) -> None:
    response = await harness.post_payment(reference="order-42")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["resultCode"] == "Pending"
    assert body["merchantReference"] == "order-42"
    assert re.fullmatch(r"[1-9]\d{15}", body["pspReference"])
    action = body["action"]
    assert action["type"] == "sdk"
    assert action["paymentMethodType"] == "wechatpayMiniProgram"
    assert action["paymentData"]
    params = action["sdkData"]
    assert set(params) == {"appId", "timeStamp", "nonceStr", "package", "signType", "paySign"}
    assert params["appId"] == "wxsandbox0000000001"
    assert params["signType"] == "MD5"
    assert re.fullmatch(r"\d{10}", params["timeStamp"])
    assert len(params["nonceStr"]) == 32
    assert re.fullmatch(r"prepay_id=wx\d{14}[0-9a-f]{20}", params["package"])


@pytest.mark.parametrize("style", ["redirect", "action", "sdk"])
async def test_paysign_verifies_with_wechats_md5_algorithm(
    harness_factory: Callable[..., Harness], style: str
) -> None:
    harness = harness_factory(response_style=style)
    params = wx_params((await harness.post_payment()).json())
    key = harness.sandbox.config.paysign_key
    assert params["paySign"] == md5_pay_sign(params, key)
    assert verify_pay_sign(params, key)


async def test_redirect_style_below_v67_is_the_seed_shape(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(response_style="redirect")
    response = await harness.client.post(
        "http://sandbox.test/adyen/v66/payments",
        json=payment_request(),
        headers={"X-API-Key": "sandbox-api-key"},
    )
    body = response.json()
    assert body["paymentData"] == body["action"]["paymentData"]
    assert body["action"] == {
        "paymentMethodType": "wechatpayMiniProgram",
        "paymentData": body["paymentData"],
        "type": "redirect",
    }
    assert body["redirect"]["method"] == "GET"
    assert body["redirect"]["data"]["package"].startswith("prepay_id=wx")
    details = await harness.post_details(body["paymentData"])
    assert details.json()["resultCode"] == "Authorised"


@pytest.mark.parametrize("style", ["redirect", "action"])
async def test_from_v67_a_redirect_action_carries_no_payment_data(
    harness_factory: Callable[..., Harness], style: str
) -> None:
    body = (await harness_factory(response_style=style).post_payment()).json()
    assert set(body) == {"resultCode", "pspReference", "merchantReference", "action"}
    assert set(body["action"]) == {"type", "paymentMethodType", "data"}
    assert body["action"]["type"] == "redirect"
    assert body["action"]["data"]["package"].startswith("prepay_id=wx")


async def test_sdk_style_puts_the_params_in_sdk_data(
    harness_factory: Callable[..., Harness],
) -> None:
    body = (await harness_factory(response_style="sdk").post_payment()).json()
    assert body["action"]["type"] == "sdk"
    assert set(body["action"]) == {"type", "paymentMethodType", "paymentData", "sdkData"}
    assert "redirect" not in body and "paymentData" not in body


async def test_without_payment_data_the_shoppers_choice_at_wechat_settles_the_payment(
    harness_factory: Callable[..., Harness],
) -> None:
    harness = harness_factory(response_style="action")
    created = (await harness.post_payment(reference="order-wx")).json()
    payment = harness.sandbox.payments[created["pspReference"]]
    assert not payment.payment_data_sent
    details = await harness.post_details(None)
    assert details.status_code == 422
    assert "paymentData" in details.json()["message"]
    assert not payment.settled and payment.details_calls == 0
    paid = await harness.client.post(
        "/_sandbox/wechat/pay", json={**created["action"]["data"], "outcome": "ok"}
    )
    assert paid.json() == {"errMsg": "requestPayment:ok"}
    assert payment.settled and payment.authorised
    await harness.sandbox.drain(2)
    assert [(r.item["eventCode"], r.item["success"]) for r in harness.receiver.received] == [
        ("AUTHORISATION", "true")
    ]


async def test_with_payment_data_the_details_call_settles_the_payment(harness: Harness) -> None:
    created = (await harness.post_payment(reference="order-sdk")).json()
    payment = harness.sandbox.payments[created["pspReference"]]
    paid = await harness.client.post(
        "/_sandbox/wechat/pay", json={**created["action"]["sdkData"], "outcome": "ok"}
    )
    assert paid.json() == {"errMsg": "requestPayment:ok"}
    assert not payment.settled  # Adyen hears it from the details call
    details = await harness.post_details(created["action"]["paymentData"])
    assert details.json()["resultCode"] == "Authorised"
    assert payment.settled


@pytest.mark.parametrize("version", [67, 71, 72])
async def test_any_api_version_prefix_answers(harness: Harness, version: int) -> None:
    response = await harness.client.post(
        f"http://sandbox.test/adyen/v{version}/payments",
        json=payment_request(),
        headers={"X-API-Key": "sandbox-api-key"},
    )
    assert response.status_code == 200


async def test_the_sandbox_records_the_payment(harness: Harness) -> None:
    body = (await harness.post_payment(reference="order-7")).json()
    payment = harness.sandbox.payments[body["pspReference"]]
    assert payment.merchant_reference == "order-7"
    assert payment.amount == {"currency": "CNY", "value": 1130}
    assert payment.openid == "oSandboxShopper000000000000"
    assert payment.scenario == "authorised"
    assert payment.result_code == "Pending"


async def test_same_idempotency_key_and_body_replays_the_bytes(harness: Harness) -> None:
    first = await harness.post_payment(key="key-1")
    second = await harness.post_payment(key="key-1")
    assert second.status_code == first.status_code == 200
    assert second.content == first.content
    assert len(harness.sandbox.payments) == 1


async def test_key_order_and_whitespace_do_not_make_a_different_body(harness: Harness) -> None:
    first = await harness.post_payment(key="key-1")
    reordered = dict(reversed(list(payment_request().items())))
    second = await harness.post_payment(reordered, key="key-1")
    assert second.content == first.content


async def test_same_key_with_another_body_is_a_422(harness: Harness) -> None:
    await harness.post_payment(key="key-1")
    response = await harness.post_payment(key="key-1", reference="order-2")
    assert response.status_code == 422
    assert "different request body" in response.json()["message"]
    assert len(harness.sandbox.payments) == 1


async def test_without_a_key_each_call_is_a_new_payment(harness: Harness) -> None:
    await harness.post_payment()
    await harness.post_payment()
    assert len(harness.sandbox.payments) == 2


async def test_a_validation_error_is_replayed_too(harness: Harness) -> None:
    first = await harness.post_payment(key="k", returnUrl=missing())
    second = await harness.post_payment(key="k", returnUrl=missing())
    assert first.status_code == 422
    assert second.content == first.content


async def test_an_overlong_idempotency_key_is_rejected(harness: Harness) -> None:
    response = await harness.post_payment(key="k" * 65)
    assert response.status_code == 422
    assert harness.sandbox.payments == {}


async def test_keys_are_scoped_per_endpoint(harness: Harness) -> None:
    created = (await harness.post_payment(key="shared")).json()
    details = await harness.post_details(created["action"]["paymentData"], key="shared")
    assert details.status_code == 200
    assert details.json()["resultCode"] == "Authorised"


@pytest.mark.parametrize("style", ["redirect", "action", "sdk"])
async def test_every_answer_is_valid_against_the_v71_schema(
    harness_factory: Callable[..., Harness], style: str
) -> None:
    """The /payments and details answers and the errors, in every style."""
    harness = harness_factory(response_style=style)
    created = (await harness.post_payment(key="k")).json()
    assert schema_errors("PaymentResponse", created) == []
    payment_data = created["action"].get("paymentData")
    details = await harness.post_details(payment_data)
    if payment_data is None:
        assert details.status_code == 422
        assert schema_errors("ServiceError", details.json()) == []
        await harness.client.post(
            "/_sandbox/wechat/pay", json={**wx_params(created), "outcome": "ok"}
        )
        payment = harness.sandbox.payments[created["pspReference"]]
        assert payment.result_code == "Authorised"
    else:
        assert schema_errors("PaymentDetailsResponse", details.json()) == []
    refused = await harness.post_payment(payment_request(reference=""), key="bad")
    assert refused.status_code == 422
    assert schema_errors("ServiceError", refused.json()) == []
