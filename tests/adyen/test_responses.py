from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniprogram_pay.adyen.responses import PaymentResult, parse_payment_result
from miniprogram_pay.errors import AdyenError

PARAMS = {
    "timeStamp": "1490840662",
    "package": "prepay_id=wx2017033010242291fcfe0db70013231072",
    "paySign": "22D9B4E54AB1950F51E0649E8810ACD6",
    "appId": "wxd678efh567hg6787",
    "signType": "MD5",
    "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
}


def seed_response(**overrides: Any) -> dict[str, Any]:
    """The older shape from the seed document: top-level paymentData and redirect.data."""
    body: dict[str, Any] = {
        "resultCode": "Pending",
        "pspReference": "8815",
        "merchantReference": "order-1",
        "paymentData": "Ab02b4c0!BQABAgB...",
        "action": {
            "paymentMethodType": "wechatpayMiniProgram",
            "paymentData": "Ab02b4c0!action",
            "type": "redirect",
        },
        "redirect": {"data": dict(PARAMS), "method": "GET"},
    }
    body.update(overrides)
    return body


def test_seed_shape_redirect_data() -> None:
    result = parse_payment_result(seed_response())
    assert result.result_code == "Pending"
    assert result.psp_reference == "8815"
    assert result.merchant_reference == "order-1"
    assert result.payment_data == "Ab02b4c0!BQABAgB..."
    assert result.wechat_params == PARAMS
    assert result.action is not None and result.action["type"] == "redirect"


def test_action_data_shape() -> None:
    body = {
        "resultCode": "Pending",
        "action": {
            "type": "redirect",
            "paymentMethodType": "wechatpayMiniProgram",
            "paymentData": "from-action",
            "data": dict(PARAMS),
            "method": "GET",
            "url": "https://example.invalid",
        },
    }
    result = parse_payment_result(body)
    assert result.wechat_params == PARAMS
    assert result.payment_data == "from-action"


def test_action_sdk_data_shape() -> None:
    body = {
        "resultCode": "Pending",
        "action": {"type": "sdk", "paymentMethodType": "wechatpayMiniProgram", "sdkData": PARAMS},
    }
    result = parse_payment_result(body)
    assert result.wechat_params == PARAMS
    assert result.payment_data is None


@pytest.mark.parametrize("place", ["redirect", "action.data", "action.sdkData"])
def test_json_string_place_is_decoded(place: str) -> None:
    encoded = json.dumps(PARAMS)
    if place == "redirect":
        body: dict[str, Any] = {"redirect": {"data": encoded}}
    else:
        body = {"action": {"type": "sdk", place.split(".")[1]: encoded}}
    assert parse_payment_result(body).wechat_params == PARAMS


def test_keeps_only_known_keys_and_coerces_timestamp() -> None:
    data = {**PARAMS, "timeStamp": 1490840662, "extra": "<script>", "url": "x"}
    result = parse_payment_result({"action": {"type": "sdk", "sdkData": data}})
    assert result.wechat_params == {**PARAMS, "timeStamp": "1490840662"}
    assert result.wechat_params is not None
    assert all(isinstance(v, str) for v in result.wechat_params.values())


def test_second_place_used_when_first_is_not_params() -> None:
    body = {"action": {"type": "sdk", "data": {"foo": "bar"}, "sdkData": PARAMS}}
    assert parse_payment_result(body).wechat_params == PARAMS


def test_details_response_without_params() -> None:
    body = {
        "resultCode": "Refused",
        "pspReference": "P9",
        "merchantReference": "order-9",
        "refusalReason": "Not enough balance",
        "refusalReasonCode": "2",
        "amount": {"currency": "CNY", "value": 1130},
        "additionalData": {"wechatpay.openid": "o-123"},
    }
    assert parse_payment_result(body) == PaymentResult(
        result_code="Refused",
        psp_reference="P9",
        merchant_reference="order-9",
        refusal_reason="Not enough balance",
        refusal_reason_code="2",
        amount_value=1130,
        amount_currency="CNY",
        payment_data=None,
        wechat_params=None,
        action=None,
    )


def test_empty_body() -> None:
    result = parse_payment_result({})
    assert result.result_code is None and result.wechat_params is None and result.action is None


@pytest.mark.parametrize(
    "body",
    [
        {"resultCode": 5},
        {"pspReference": ["x"]},
        {"refusalReason": {}},
        {"amount": "1130 CNY"},
        {"amount": {"value": 11.3, "currency": "CNY"}},
        {"amount": {"value": True, "currency": "CNY"}},
        {"amount": {"value": "1130", "currency": "CNY"}},
        {"amount": {"value": 1, "currency": 156}},
        {"action": "redirect"},
        {"action": {"paymentData": 7}},
        {"paymentData": 1},
        {"redirect": "data"},
        {"redirect": {"data": "not json"}},
        {"redirect": {"data": [PARAMS]}},
        {"redirect": {"data": {**PARAMS, "paySign": None}}},
        {"redirect": {"data": {**PARAMS, "paySign": 123}}},
        {"redirect": {"data": {**PARAMS, "timeStamp": True}}},
        {"action": {"sdkData": {k: v for k, v in PARAMS.items() if k != "package"}}},
        {"action": {"data": "[1, 2"}},
        {"action": {"data": "[" * 100_000}},
    ],
)
def test_garbage_raises_bad_response(body: dict[str, Any]) -> None:
    with pytest.raises(AdyenError) as info:
        parse_payment_result(body)
    assert (info.value.code, info.value.status) == ("adyen_bad_response", 502)


def test_not_a_mapping() -> None:
    with pytest.raises(AdyenError) as info:
        parse_payment_result([1, 2])  # type: ignore[arg-type]
    assert info.value.code == "adyen_bad_response"


json_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
field_names = st.sampled_from(
    [
        "resultCode",
        "pspReference",
        "merchantReference",
        "refusalReason",
        "refusalReasonCode",
        "amount",
        "paymentData",
        "action",
        "redirect",
        "data",
        "sdkData",
        "value",
        "currency",
        *PARAMS,
    ]
)
garbage = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(field_names | st.text(max_size=5), inner, max_size=6)
    ),
    max_leaves=12,
)


@given(st.dictionaries(field_names, garbage, max_size=6))
def test_fuzz_only_bad_response_escapes(body: dict[str, Any]) -> None:
    try:
        result = parse_payment_result(body)
    except AdyenError as exc:
        assert exc.code == "adyen_bad_response"
        return
    if result.wechat_params is not None:
        assert set(result.wechat_params) == set(PARAMS)
        assert all(isinstance(v, str) for v in result.wechat_params.values())
