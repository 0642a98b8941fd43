from __future__ import annotations

import binascii
from typing import Any

import pytest
from Adyen.util import (  # type: ignore[import-untyped]
    generate_notification_sig,
    is_valid_hmac_notification,
)
from hypothesis import given
from hypothesis import strategies as st

from miniprogram_pay.adyen.hmac import sign_item, signing_string, verify_item
from miniprogram_pay.errors import SignatureError

KEY_HEX = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
KEY = binascii.unhexlify(KEY_HEX)
OTHER_KEY_HEX = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"
OTHER_KEY = binascii.unhexlify(OTHER_KEY_HEX)
EXAMPLE: dict[str, Any] = {
    "pspReference": "7914073381342284",
    "merchantAccountCode": "TestMerchant",
    "merchantReference": "TestPayment-1407325143704",
    "amount": {"currency": "EUR", "value": 1130},
    "eventCode": "AUTHORISATION",
    "success": "true",
}
EXAMPLE_SIGNATURE = "coqCmt/IZ4E3CzPvMY8zTjQVL5hYJUiBRg8UU+iCWo0="


def signed(item: dict[str, Any], key: bytes = KEY) -> dict[str, Any]:
    return {**item, "additionalData": {"hmacSignature": sign_item(item, key)}}


def test_protocol_worked_example() -> None:
    assert signing_string(EXAMPLE) == (
        "7914073381342284::TestMerchant:TestPayment-1407325143704:1130:EUR:AUTHORISATION:true"
    )
    assert sign_item(EXAMPLE, KEY) == EXAMPLE_SIGNATURE
    assert generate_notification_sig(EXAMPLE, KEY_HEX).decode() == EXAMPLE_SIGNATURE
    item = {**EXAMPLE, "additionalData": {"hmacSignature": EXAMPLE_SIGNATURE}}
    assert verify_item(item, [KEY]) == 0


# Text that stresses the unescaped colon join: separators, backslashes, unicode.
awkward_text = st.text(
    alphabet=st.sampled_from([":", "\\", "a", "Z", "0", " ", "é", "中", "😀", '"', "\n"])
    | st.characters(codec="utf-8"),
    max_size=30,
)
items = st.fixed_dictionaries(
    {
        "pspReference": awkward_text,
        "originalReference": awkward_text,
        "merchantAccountCode": awkward_text,
        "merchantReference": awkward_text,
        "amount": st.fixed_dictionaries(
            {"value": st.integers(min_value=-(2**63), max_value=2**63), "currency": awkward_text}
        ),
        "eventCode": awkward_text,
        "success": st.sampled_from(["true", "false"]),
    }
)


@given(items)
def test_matches_official_library(item: dict[str, Any]) -> None:
    expected = generate_notification_sig(item, KEY_HEX).decode()
    assert sign_item(item, KEY) == expected
    verify_item({**item, "additionalData": {"hmacSignature": expected}}, [KEY])
    oracle_item = {**item, "additionalData": {"hmacSignature": expected}}
    assert is_valid_hmac_notification(oracle_item, KEY_HEX) is True


@given(items, st.sampled_from(["originalReference", "merchantReference"]))
def test_missing_optional_field_is_empty_string(item: dict[str, Any], missing: str) -> None:
    del item[missing]
    assert sign_item(item, KEY) == generate_notification_sig(item, KEY_HEX).decode()


def test_key_rotation_second_key_matches() -> None:
    item = signed(EXAMPLE, OTHER_KEY)
    assert verify_item(item, [KEY, OTHER_KEY]) == 1
    with pytest.raises(SignatureError):
        verify_item(item, [KEY])


@pytest.mark.parametrize(
    "additional",
    [None, {}, {"hmacSignature": ""}, {"hmacSignature": 5}, "sig"],
)
def test_missing_signature(additional: object) -> None:
    item = dict(EXAMPLE)
    if additional is not None:
        item["additionalData"] = additional
    with pytest.raises(SignatureError):
        verify_item(item, [KEY])


@pytest.mark.parametrize(
    "field", ["pspReference", "merchantReference", "eventCode", "success", "amount"]
)
def test_tampered_item_fails(field: str) -> None:
    item = signed(EXAMPLE)
    item[field] = {"currency": "EUR", "value": 1131} if field == "amount" else "false"
    with pytest.raises(SignatureError) as info:
        verify_item(item, [KEY])
    assert EXAMPLE_SIGNATURE not in str(info.value)
