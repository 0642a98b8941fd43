from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from miniprogram_pay.adyen.hmac import sign_item, signing_string
from miniprogram_pay.adyen.webhooks import (
    NotificationBatch,
    check_basic_auth,
    parse_notification_body,
    verify_batch,
)
from miniprogram_pay.config import Secret
from miniprogram_pay.errors import InvalidRequestError, SignatureError, WebhookAuthError

KEY_HEX = "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"
KEY = binascii.unhexlify(KEY_HEX)
OLD_KEY_HEX = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF"
OLD_KEY = binascii.unhexlify(OLD_KEY_HEX)
USER = Secret("adyen-webhook")
PASSWORD = Secret("pa:ss-wörd")


_DROP = object()


def item(key_hex: str | None = KEY_HEX, **overrides: Any) -> dict[str, Any]:
    """A NotificationRequestItem signed with ``key_hex`` (unsigned if None)."""
    data: dict[str, Any] = {
        "pspReference": "7914073381342284",
        "merchantAccountCode": "TestMerchant",
        "merchantReference": "order-1",
        "amount": {"currency": "CNY", "value": 1130},
        "eventCode": "AUTHORISATION",
        "eventDate": "2024-01-01T10:00:00+01:00",
        "success": "true",
        "reason": "",
        "paymentMethod": "wechatpayMiniProgram",
        "operations": ["CANCEL", "CAPTURE", "REFUND"],
    }
    data.update(overrides)
    data = {k: v for k, v in data.items() if v is not _DROP}
    if key_hex is not None:
        signature = sign_item(data, binascii.unhexlify(key_hex))
        data["additionalData"] = {"hmacSignature": signature}
    return data


def body(*items: dict[str, Any], live: object = "false") -> bytes:
    document = {"live": live, "notificationItems": [{"NotificationRequestItem": i} for i in items]}
    return json.dumps(document).encode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# parse ---------------------------------------------------------------------


def test_parses_a_standard_notification() -> None:
    batch = parse_notification_body(body(item()))
    assert batch.live is False
    (parsed,) = batch.items
    assert parsed.psp_reference == "7914073381342284"
    assert parsed.original_reference is None
    assert parsed.merchant_account == "TestMerchant"
    assert parsed.merchant_reference == "order-1"
    assert (parsed.amount_value, parsed.amount_currency) == (1130, "CNY")
    assert parsed.event_code == "AUTHORISATION"
    assert parsed.success is True
    assert parsed.event_date == "2024-01-01T10:00:00+01:00"
    assert parsed.reason == ""
    assert parsed.payment_method == "wechatpayMiniProgram"
    assert parsed.raw == item()
    json.dumps(parsed.raw)


@pytest.mark.parametrize(
    ("live", "success", "expected"),
    [("true", "false", (True, False)), (True, False, (True, False)), (False, True, (False, True))],
)
def test_accepts_json_booleans(live: object, success: object, expected: tuple[bool, bool]) -> None:
    batch = parse_notification_body(body(item(success=success), live=live))
    assert (batch.live, batch.items[0].success) == expected


def test_modification_with_original_reference_and_no_amount() -> None:
    raw = item(eventCode="CANCELLATION", originalReference="ORIG1", amount=_DROP)
    parsed = parse_notification_body(body(raw)).items[0]
    assert parsed.original_reference == "ORIG1"
    assert parsed.amount_value is None and parsed.amount_currency is None


def test_dedup_key_is_shared_by_identical_redeliveries() -> None:
    first = parse_notification_body(body(item())).items[0]
    again = parse_notification_body(body(item(eventDate="2024-01-01T10:00:09+01:00"))).items[0]
    failed = parse_notification_body(body(item(success="false"))).items[0]
    assert first.dedup_key == again.dedup_key
    assert first.dedup_key != failed.dedup_key
    expected = hashlib.sha256(("false:" + signing_string(first.raw)).encode()).hexdigest()
    assert first.dedup_key == expected


def test_dedup_key_tells_the_live_flag_apart() -> None:
    # ``live`` is not signed: a copy with it flipped must not share the genuine item's key.
    test = parse_notification_body(body(item(), live="false")).items[0]
    live = parse_notification_body(body(item(), live="true")).items[0]
    assert (test.live, live.live) == (False, True)
    assert test.dedup_key != live.dedup_key
    expected = hashlib.sha256(("true:" + signing_string(live.raw)).encode()).hexdigest()
    assert live.dedup_key == expected


@pytest.mark.parametrize(
    "field", ["pspReference", "merchantReference", "eventCode", "reason", "merchantAccountCode"]
)
def test_a_nul_in_a_stored_string_is_malformed(field: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        parse_notification_body(body(item(**{field: "ab\x00c"})))
    assert caught.value.code == "invalid_notification"
    assert "NUL" in caught.value.message


def test_parses_many_items() -> None:
    batch = parse_notification_body(body(*(item(pspReference=f"P{n}") for n in range(100))))
    assert [i.psp_reference for i in batch.items] == [f"P{n}" for n in range(100)]


SECRET_VALUE = "SENSITIVE-VALUE-42"


def raw_document(**overrides: Any) -> bytes:
    document: dict[str, Any] = {
        "live": "false",
        "notificationItems": [{"NotificationRequestItem": item()}],
    }
    document.update(overrides)
    return json.dumps(document).encode()


MALFORMED: list[tuple[str, bytes]] = [
    ("not utf-8", b'{"live": "\xff"}'),
    ("not json", b"live=false"),
    ("empty", b""),
    ("nan", b'{"live": "false", "notificationItems": [NaN]}'),
    ("deep", b"[" * 100_000),
    ("huge int", b'{"x": ' + b"9" * 5000 + b"}"),
    ("array", b"[]"),
    (
        "live missing",
        json.dumps({"notificationItems": [{"NotificationRequestItem": item()}]}).encode(),
    ),
    ("live bad", raw_document(live=SECRET_VALUE)),
    ("items missing", json.dumps({"live": "false"}).encode()),
    ("items empty", raw_document(notificationItems=[])),
    ("items not list", raw_document(notificationItems={"NotificationRequestItem": item()})),
    ("too many", body(*(item() for _ in range(101)))),
    ("entry not object", raw_document(notificationItems=[SECRET_VALUE])),
    ("no inner item", raw_document(notificationItems=[{"Other": item()}])),
    ("inner not object", raw_document(notificationItems=[{"NotificationRequestItem": [1]}])),
    ("psp missing", body(item(pspReference=_DROP))),
    ("psp not str", body(item(key_hex=None, pspReference=12345))),
    ("psp empty", body(item(pspReference=""))),
    ("event missing", body(item(eventCode=_DROP))),
    ("account missing", body(item(merchantAccountCode=_DROP))),
    ("account not str", body(item(key_hex=None, merchantAccountCode=[SECRET_VALUE]))),
    ("success missing", body(item(success=_DROP))),
    ("success bad", body(item(success=SECRET_VALUE))),
    ("success True str", body(item(success="True"))),
    ("success int", body(item(key_hex=None, success=1))),
    ("value float", body(item(key_hex=None, amount={"currency": "CNY", "value": 11.3}))),
    ("value bool", body(item(key_hex=None, amount={"currency": "CNY", "value": True}))),
    ("value str", body(item(amount={"currency": "CNY", "value": SECRET_VALUE}))),
    ("amount not object", body(item(key_hex=None, amount=SECRET_VALUE))),
    ("currency not str", body(item(key_hex=None, amount={"currency": 156, "value": 1}))),
    ("reference not str", body(item(key_hex=None, merchantReference=7))),
    ("reason not str", body(item(reason={"x": SECRET_VALUE}))),
    ("additionalData not object", body(item(key_hex=None, additionalData=SECRET_VALUE))),
]


@pytest.mark.parametrize(("case", "raw"), MALFORMED, ids=[c for c, _ in MALFORMED])
def test_malformed_is_invalid_notification(case: str, raw: bytes) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_notification_body(raw)
    assert (info.value.code, info.value.status) == ("invalid_notification", 400)
    assert SECRET_VALUE not in info.value.message
    assert "9999" not in info.value.message


@given(st.binary(max_size=200))
def test_fuzz_bytes_only_invalid_notification(raw: bytes) -> None:
    try:
        parse_notification_body(raw)
    except InvalidRequestError as exc:
        assert exc.code == "invalid_notification"


json_leaf = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=15,
)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "pspReference",
                "merchantAccountCode",
                "merchantReference",
                "amount",
                "eventCode",
                "success",
                "additionalData",
                "reason",
            ]
        ),
        json_values,
    ),
    json_values,
)
def test_fuzz_items_only_invalid_notification(raw_item: dict[str, Any], live: Any) -> None:
    try:
        parse_notification_body(body(raw_item, live=live))
    except InvalidRequestError as exc:
        assert exc.code == "invalid_notification"


# basic auth ----------------------------------------------------------------


def test_basic_auth_accepts_the_right_credentials() -> None:
    check_basic_auth(basic("adyen-webhook", "pa:ss-wörd"), username=USER, password=PASSWORD)
    check_basic_auth(
        "basic " + basic("adyen-webhook", "pa:ss-wörd")[6:], username=USER, password=PASSWORD
    )


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Bearer abc",
        basic("adyen-webhook", "wrong"),
        basic("wrong", "pa:ss-wörd"),
        basic("", ""),
        "Basic " + base64.b64encode(b"adyen-webhook").decode(),
        "Basic !!!not-base64!!!",
        "Basic YWJj",  # "abc": no colon
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Basic éé",
        "Digest " + basic("adyen-webhook", "pa:ss-wörd")[6:],
    ],
)
def test_basic_auth_rejects(header: str | None) -> None:
    with pytest.raises(WebhookAuthError) as info:
        check_basic_auth(header, username=USER, password=PASSWORD)
    assert info.value.code == "webhook_auth_failed"
    assert "pa:ss-wörd" not in str(info.value) and "adyen-webhook" not in str(info.value)


def test_basic_auth_compares_both_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[str] = []
    original = Secret.matches

    def spy(self: Secret, candidate: str) -> bool:
        compared.append(candidate)
        return original(self, candidate)

    monkeypatch.setattr(Secret, "matches", spy)
    with pytest.raises(WebhookAuthError):
        check_basic_auth(basic("wrong", "pa:ss-wörd"), username=USER, password=PASSWORD)
    assert compared == ["wrong", "pa:ss-wörd"]


# verify --------------------------------------------------------------------


def test_verify_batch_accepts_signed_items() -> None:
    verify_batch(parse_notification_body(body(item(), item(pspReference="P2"))), [KEY])


def test_verify_batch_key_rotation() -> None:
    batch = parse_notification_body(body(item(OLD_KEY_HEX)))
    verify_batch(batch, [KEY, OLD_KEY])
    with pytest.raises(SignatureError):
        verify_batch(batch, [KEY])


@pytest.mark.parametrize("bad_index", [0, 1, 2])
def test_verify_batch_checks_every_item(bad_index: int) -> None:
    items = [item(pspReference=f"P{n}") for n in range(3)]
    items[bad_index] = item(OLD_KEY_HEX, pspReference="PBAD")
    bad_signature = items[bad_index]["additionalData"]["hmacSignature"]
    with pytest.raises(SignatureError) as info:
        verify_batch(parse_notification_body(body(*items)), [KEY])
    assert f"item {bad_index}" in info.value.message
    assert bad_signature not in info.value.message


def test_verify_batch_tampered_after_signing() -> None:
    tampered = item()
    tampered["amount"] = {"currency": "CNY", "value": 1}
    with pytest.raises(SignatureError, match="item 0"):
        verify_batch(parse_notification_body(body(tampered)), [KEY])


def test_verify_batch_missing_additional_data() -> None:
    with pytest.raises(SignatureError, match="item 0"):
        verify_batch(parse_notification_body(body(item(key_hex=None))), [KEY])


def test_verify_batch_needs_keys_and_items() -> None:
    batch = parse_notification_body(body(item()))
    with pytest.raises(SignatureError):
        verify_batch(batch, [])
    with pytest.raises(SignatureError):
        verify_batch(NotificationBatch(live=False, items=()), [KEY])
