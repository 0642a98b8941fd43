"""The /payments and /payments/details bodies, checked against Adyen's Checkout v71 schemas."""

from __future__ import annotations

from typing import Any

import pytest

from miniprogram_pay.adyen.checkout import details_request_body, payment_request_body
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.orders import attempt_reference
from tests.checkout_spec import schema_errors


def attempt_body(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "merchant_account": "ShopCN",
        "amount": Amount(1130, "CNY"),
        "reference": attempt_reference("order-17", 2),
        "merchant_order_reference": "order-17",
        "return_url": "https://shop.example/return",
        "country_code": "CN",
        "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        "app_id": "wx1234567890abcdef",
    }
    return payment_request_body(**{**fields, **overrides})


def test_an_attempt_is_its_own_payment_linked_to_the_order() -> None:
    body = attempt_body()
    assert schema_errors("PaymentRequest", body) == []
    assert (body["reference"], body["merchantOrderReference"]) == ("order-17-2", "order-17")
    assert body["amount"] == {"currency": "CNY", "value": 1130}
    assert body["paymentMethod"] == {
        "type": "wechatpayMiniProgram",
        "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        "appId": "wx1234567890abcdef",
    }


def test_the_longest_attempt_reference_is_accepted() -> None:
    body = attempt_body(reference=attempt_reference("x" * 80, 3), merchant_order_reference="x" * 80)
    assert len(body["reference"]) == 80
    assert schema_errors("PaymentRequest", body) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"reference": ""},
        {"reference": "r" * 81},
        {"merchant_order_reference": ""},
        {"merchant_order_reference": "o" * 1001},
    ],
    ids=["empty-reference", "long-reference", "empty-order", "long-order"],
)
def test_references_adyen_would_refuse_are_a_bug_of_ours(overrides: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        attempt_body(**overrides)


@pytest.mark.parametrize("payment_data", ["Ab02b4c0!BQABAgA...", None], ids=["sdk", "redirect"])
def test_details_send_payment_data_only_when_there_is_one(payment_data: str | None) -> None:
    body = details_request_body("requestPayment:ok", payment_data)
    assert schema_errors("PaymentDetailsRequest", body) == []
    assert body["details"] == {"paymentStatus": "requestPayment:ok"}
    assert ("paymentData" in body) is (payment_data is not None)
    assert body.get("paymentData") == payment_data


def test_the_schema_check_sees_a_stray_field() -> None:
    # The check can fail: v71 forbids fields it does not declare.
    body = {**details_request_body("requestPayment:ok", None), "redirect": {}}
    assert schema_errors("PaymentDetailsRequest", body) != []
