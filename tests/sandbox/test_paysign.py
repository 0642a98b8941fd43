from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from miniprogram_pay.sandbox.paysign import (
    hmac_sha256_pay_sign,
    md5_pay_sign,
    pay_sign,
    verify_pay_sign,
)

# WeChat's worked example (PROTOCOL.md).
EXAMPLE = {
    "appId": "wxd678efh567hg6787",
    "nonceStr": "5K8264ILTKCH16CQ2502SI8ZNMTM67VS",
    "package": "prepay_id=wx2017033010242291fcfe0db70013231072",
    "signType": "MD5",
    "timeStamp": "1490840662",
}
EXAMPLE_KEY = "qazwsxedcrfvtgbyhnujmikolp111111"
EXAMPLE_STRING = (
    "appId=wxd678efh567hg6787&nonceStr=5K8264ILTKCH16CQ2502SI8ZNMTM67VS"
    "&package=prepay_id=wx2017033010242291fcfe0db70013231072&signType=MD5"
    "&timeStamp=1490840662&key=qazwsxedcrfvtgbyhnujmikolp111111"
)


def test_md5_matches_wechats_worked_example() -> None:
    assert md5_pay_sign(EXAMPLE, EXAMPLE_KEY) == "22D9B4E54AB1950F51E0649E8810ACD6"


def test_parameter_order_does_not_matter() -> None:
    shuffled = dict(reversed(list(EXAMPLE.items())))
    assert md5_pay_sign(shuffled, EXAMPLE_KEY) == md5_pay_sign(EXAMPLE, EXAMPLE_KEY)


def test_hmac_sha256_signs_the_same_string_keyed_with_the_api_key() -> None:
    params = {**EXAMPLE, "signType": "HMAC-SHA256"}
    string = EXAMPLE_STRING.replace("signType=MD5", "signType=HMAC-SHA256")
    expected = hmac.new(EXAMPLE_KEY.encode(), string.encode(), hashlib.sha256).hexdigest().upper()
    assert hmac_sha256_pay_sign(params, EXAMPLE_KEY) == expected
    assert pay_sign(params, EXAMPLE_KEY) == expected


def test_verify_accepts_the_right_sign_and_rejects_others() -> None:
    signed = {**EXAMPLE, "paySign": "22D9B4E54AB1950F51E0649E8810ACD6"}
    assert verify_pay_sign(signed, EXAMPLE_KEY)
    assert not verify_pay_sign(
        {**signed, "paySign": "22D9B4E54AB1950F51E0649E8810ACD7"}, EXAMPLE_KEY
    )
    assert not verify_pay_sign(signed, "another-key")
    assert not verify_pay_sign({**signed, "signType": "RSA"}, EXAMPLE_KEY)


_value = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1)


@given(app_id=_value, nonce=_value, package=_value, stamp=_value, tampered=_value, key=_value)
def test_any_change_to_a_signed_parameter_breaks_the_sign(
    app_id: str, nonce: str, package: str, stamp: str, tampered: str, key: str
) -> None:
    params = {
        "appId": app_id,
        "nonceStr": nonce,
        "package": package,
        "signType": "MD5",
        "timeStamp": stamp,
    }
    signed = {**params, "paySign": md5_pay_sign(params, key)}
    assert verify_pay_sign(signed, key)
    if tampered != nonce:
        assert not verify_pay_sign({**signed, "nonceStr": tampered}, key)
