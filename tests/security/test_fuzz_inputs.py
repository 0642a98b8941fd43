"""Hand-written attacks and hypothesis strategies against every JSON endpoint.

Each refused request must answer a 4xx ``{"error": {"code", "message"}}`` with a
stable code, and leave every table exactly as it was: on SQLite and on PostgreSQL,
which refuses some input SQLite takes (a NUL in text).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.security.helpers import (
    SecurityWorld,
    assert_error,
    assert_error_shape,
    count_case,
)
from tests.world import ADMIN_KEY, basic_auth

BOTH_BACKENDS = True
FUZZ_SETTINGS = settings(
    max_examples=50,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
SERIAL = itertools.count()
NASTY: list[Any] = [
    2**63,
    -(2**63) - 1,
    10**30,
    -1,
    0,
    1.5,
    1e3,
    True,
    False,
    None,
    "",
    "x" * 10_000,
    "\x00",
    "\u202e\u0000\ud7ff",
    "requestPayment:ok\x00",
    [],
    {},
    [1, [2, [3]]],
]


def valid_payment(reference: str | None = None) -> dict[str, Any]:
    return {
        "paymentMethod": {"type": "wechatpayMiniProgram"},
        "reference": reference or f"fz-{next(SERIAL)}",
        "amount": {"currency": "CNY", "value": 100},
    }


async def post(
    world: SecurityWorld, path: str, body: Any, headers: dict[str, str] | None = None
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **(headers or {})}
    return await world.client.post(path, content=content, headers=headers)


async def refused(
    world: SecurityWorld,
    path: str,
    body: Any,
    status: int,
    code: str | set[str],
    headers: dict[str, str] | None = None,
) -> None:
    before = await world.snapshot()
    response = await post(world, path, body, headers)
    error = assert_error(response, status)
    assert error["code"] in ({code} if isinstance(code, str) else code), error
    assert await world.snapshot() == before


@pytest.fixture
async def shopper(world: SecurityWorld) -> AsyncIterator[dict[str, str]]:
    yield await world.login("mallory")


# -- POST /payments ------------------------------------------------------------------


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = valid_payment()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


def _without(*path: str) -> dict[str, Any]:
    body = valid_payment()
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


PAYMENT_CASES = [
    ("value 2**63", _with(("amount", "value"), 2**63), "invalid_amount"),
    ("value 10**30", _with(("amount", "value"), 10**30), "invalid_amount"),
    ("value above the limit", _with(("amount", "value"), 10**12 + 1), "amount_out_of_range"),
    ("value int64 max", _with(("amount", "value"), 2**63 - 1), "amount_out_of_range"),
    ("value negative", _with(("amount", "value"), -100), "invalid_amount"),
    ("value zero", _with(("amount", "value"), 0), "invalid_amount"),
    ("value float", _with(("amount", "value"), 11.3), "invalid_amount"),
    ("value integral float", _with(("amount", "value"), 100.0), "invalid_amount"),
    ("value true", _with(("amount", "value"), True), "invalid_amount"),
    ("value string", _with(("amount", "value"), "100"), "invalid_amount"),
    ("value missing", _without("amount", "value"), "invalid_amount"),
    ("currency unknown", _with(("amount", "currency"), "XXX"), "invalid_currency"),
    ("currency lowercase", _with(("amount", "currency"), "cny"), "invalid_currency"),
    ("currency number", _with(("amount", "currency"), 156), "invalid_currency"),
    ("currency missing", _without("amount", "currency"), "invalid_currency"),
    ("amount list", _with(("amount",), [100, "CNY"]), "invalid_amount"),
    ("amount number", _with(("amount",), 100), "invalid_amount"),
    ("amount missing", _without("amount"), "missing_amount"),
    ("method missing", _without("paymentMethod"), "invalid_payment_method"),
    ("method type", _with(("paymentMethod", "type"), "scheme"), "invalid_payment_method"),
    ("method string", _with(("paymentMethod",), "wechatpayMiniProgram"), "invalid_payment_method"),
    ("openid other", _with(("paymentMethod", "openid"), "oSomeoneElse"), "openid_mismatch"),
    ("openid number", _with(("paymentMethod", "openid"), 1), "openid_mismatch"),
    ("reference long", _with(("reference",), "r" * 81), "invalid_reference"),
    ("reference empty", _with(("reference",), ""), "invalid_reference"),
    ("reference control", _with(("reference",), "order\n1"), "invalid_reference"),
    ("reference unicode", _with(("reference",), "订单1"), "invalid_reference"),
    ("reference traversal", _with(("reference",), "../../etc"), "invalid_reference"),
    ("reference number", _with(("reference",), 12), "invalid_field"),
]


async def test_payments_refuses_bad_fields(
    world: SecurityWorld, shopper: dict[str, str], subtests: pytest.Subtests
) -> None:
    for name, body, code in PAYMENT_CASES:
        with subtests.test(name):
            await refused(world, "/pay/payments", body, 400, code, shopper)
    assert world.transport.to("/payments") == []  # Adyen was never asked


RAW_BODIES = {
    "empty": b"",
    "truncated": b"{",
    "utf16-bom": b"\xff\xfe{\x00}\x00",
    "utf8-bom": b'\xef\xbb\xbf{"code":"a.1"}',
    "not-utf8": b"\x80\x81\x82",
    "nan": b'{"code": NaN}',
    "infinity": b'{"code": Infinity}',
    "5000-digit-int": b'{"amount": 1' + b"0" * 5000 + b"}",
    "array": b"[" * 20 + b"]" * 20,
    "nested-30": b'{"a":' * 30 + b"1" + b"}" * 30,
    "nested-100k": b"[" * 100_000,
    "string": b'"a string"',
    "null": b"null",
    "number": b"12",
}
JSON_ENDPOINTS = ["/pay/session", "/pay/payments", "/pay/payments/details"]


@pytest.mark.parametrize("path", [*JSON_ENDPOINTS, "/pay/webhooks/adyen"])
async def test_malformed_json_is_400(
    world: SecurityWorld, shopper: dict[str, str], path: str, subtests: pytest.Subtests
) -> None:
    limit = world.settings.max_body_bytes
    invalid = "invalid_notification" if "webhooks" in path else "malformed_json"
    auth = basic_auth(world.config.webhook_username, world.config.webhook_password)
    headers = auth if "webhooks" in path else shopper
    for name, raw in RAW_BODIES.items():
        with subtests.test(name):
            status, code = (413, "payload_too_large") if len(raw) > limit else (400, invalid)
            await refused(world, path, raw, status, code, headers)


DETAILS_CASES = [
    ("no reference", {"details": {"paymentStatus": "requestPayment:ok"}}, "missing_reference"),
    ("reference number", {"reference": 5, "details": {}}, "invalid_field"),
    ("reference bad", {"reference": "a b", "details": {}}, "invalid_reference"),
    ("paymentData empty", {"paymentData": "", "details": {}}, "invalid_payment_data"),
    ("paymentData huge", {"paymentData": "A" * 8193, "details": {}}, "invalid_payment_data"),
    ("paymentData list", {"paymentData": ["A"], "details": {}}, "invalid_field"),
    ("no details", {"reference": "fz-1"}, "invalid_payment_status"),
    ("details list", {"reference": "fz-1", "details": []}, "invalid_payment_status"),
    ("status other", {"reference": "fz-1", "details": {"paymentStatus": "ok"}}, None),
    ("status number", {"reference": "fz-1", "details": {"paymentStatus": 1}}, None),
    (
        "status long",
        {"reference": "fz-1", "details": {"paymentStatus": "requestPayment:" + "x" * 300}},
        None,
    ),
    (
        "status control",
        {"reference": "fz-1", "details": {"paymentStatus": "requestPayment:ok\n"}},
        None,
    ),
]


@pytest.mark.parametrize(("body", "code"), [pytest.param(b, c, id=i) for i, b, c in DETAILS_CASES])
async def test_details_refuses_bad_fields(
    world: SecurityWorld, shopper: dict[str, str], body: dict[str, Any], code: str | None
) -> None:
    assert (await world.pay_order(shopper, "fz-1")).status_code == 200
    await refused(
        world, "/pay/payments/details", body, 400, code or "invalid_payment_status", shopper
    )
    assert world.transport.to("/payments/details") == []


SESSION_CASES = [
    ("missing", {}, "missing_code"),
    ("empty", {"code": ""}, "missing_code"),
    ("number", {"code": 12345}, "missing_code"),
    ("null", {"code": None}, "missing_code"),
    ("list", {"code": ["a.1"]}, "missing_code"),
    ("long", {"code": "a" * 129}, "invalid_code"),
    ("unicode", {"code": "代码"}, "invalid_code"),
    ("nul", {"code": "a.1\x00"}, "invalid_code"),
    ("newline", {"code": "a.1\r\nX-Injected: 1"}, "invalid_code"),
    ("space", {"code": "a 1"}, {"invalid_code", "wechat_invalid_code"}),
]


@pytest.mark.parametrize(("body", "code"), [pytest.param(b, c, id=i) for i, b, c in SESSION_CASES])
async def test_session_refuses_bad_codes(
    world: SecurityWorld, body: dict[str, Any], code: str | set[str]
) -> None:
    await refused(world, "/pay/session", body, 400, code)
    assert world.transport.to("/wechat/") == []


# -- content types, methods, sizes ------------------------------------------------------


CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "",
    "json",
    "application/jsonp",
    "text/json",
]


@pytest.mark.parametrize("path", JSON_ENDPOINTS)
async def test_wrong_content_type_is_415(
    world: SecurityWorld, shopper: dict[str, str], path: str, subtests: pytest.Subtests
) -> None:
    before = await world.snapshot()
    body = json.dumps({"code": "a.1", **valid_payment()}).encode()
    for content_type in CONTENT_TYPES:
        with subtests.test(content_type or "none"):
            headers = {**shopper, "Content-Type": content_type}
            response = await world.client.post(path, content=body, headers=headers)
            assert_error(response, 415, "unsupported_media_type")
    assert await world.snapshot() == before


ROUTES = {
    "/pay/session": {"POST"},
    "/pay/payments": {"POST"},
    # GET /payments/details is GET /payments/{reference} for the reference "details".
    "/pay/payments/details": {"POST", "GET"},
    "/pay/payments/fz-1": {"GET"},
    "/pay/webhooks/adyen": {"POST"},
    "/pay/admin/stale": {"GET"},
    "/pay/admin/notifications": {"GET"},
    "/pay/admin/notifications/requeue": {"POST"},
    "/pay/admin/outbox": {"GET"},
    "/pay/admin/outbox/requeue": {"POST"},
    "/pay/health": {"GET"},
    "/pay/openapi.json": {"GET"},
}


async def test_wrong_methods_are_405(world: SecurityWorld) -> None:
    before = await world.snapshot()
    tried = 0
    for path, allowed in sorted(ROUTES.items()):
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - allowed):
            response = await world.client.request(method, path, headers={"X-Admin-Key": ADMIN_KEY})
            assert_error(response, 405, "method_not_allowed")
            assert set(response.headers["allow"].split(", ")) & allowed
            tried += 1
    assert tried == 47
    assert await world.snapshot() == before


async def _chunks(total: int, size: int = 4096) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        chunk = b" " * min(size, total - sent)
        sent += len(chunk)
        yield chunk


BODY_PATHS = [*JSON_ENDPOINTS, "/pay/webhooks/adyen"]


@pytest.mark.parametrize("path", BODY_PATHS)
@pytest.mark.parametrize("framing", ["content-length", "chunked", "lying-length"])
async def test_oversized_bodies_are_413(
    world: SecurityWorld, shopper: dict[str, str], path: str, framing: str
) -> None:
    limit = world.settings.max_body_bytes
    auth = basic_auth(world.config.webhook_username, world.config.webhook_password)
    headers = {**(auth if "webhooks" in path else shopper), "Content-Type": "application/json"}
    content: Any = b"{" + b" " * limit + b"}"
    if framing == "chunked":
        content = _chunks(limit + 10)  # no Content-Length: Transfer-Encoding: chunked
    elif framing == "lying-length":
        headers["Content-Length"] = "10"
    before = await world.snapshot()
    response = await world.client.post(path, content=content, headers=headers)
    assert_error(response, 413, "payload_too_large")
    if framing == "chunked":
        assert "content-length" not in response.request.headers
    assert await world.snapshot() == before


async def test_a_body_at_the_limit_is_read(world: SecurityWorld) -> None:
    limit = world.settings.max_body_bytes
    body = json.dumps({"code": "x" * 129}).encode()
    body = body[:-1] + b" " * (limit - len(body)) + b"}"
    assert len(body) == limit
    await refused(world, "/pay/session", body, 400, "invalid_code")


# -- hypothesis: mutate valid bodies ---------------------------------------------------

JSON_SCALARS = st.one_of(
    st.sampled_from(NASTY),
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=300),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
PAYMENT_PATHS = [
    ("paymentMethod",),
    ("paymentMethod", "type"),
    ("paymentMethod", "openid"),
    ("reference",),
    ("amount",),
    ("amount", "currency"),
    ("amount", "value"),
    ("extra",),
    ("amount", "extra"),
]
DETAILS_PATHS = [
    ("reference",),
    ("paymentData",),
    ("details",),
    ("details", "paymentStatus"),
    ("details", "extra"),
    ("extra",),
]
SESSION_PATHS: list[tuple[str, ...]] = [("code",), ("extra",)]


@st.composite
def mutations(
    draw: st.DrawFn, valid: dict[str, Any], paths: list[tuple[str, ...]]
) -> dict[str, Any]:
    """``valid`` with one to three fields replaced by hostile values or removed."""
    body: dict[str, Any] = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        target = body
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        if draw(st.booleans()) and path[-1] in target:
            del target[path[-1]]
        else:
            target[path[-1]] = draw(JSON_VALUES)
    return body


def _check(response: httpx.Response, before: Any, after: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert_error_shape(response)
        assert after == before


@FUZZ_SETTINGS
@given(data=st.data())
async def test_fuzz_payments(world: SecurityWorld, data: st.DataObject) -> None:
    headers = await world.login("fuzzer")
    body = data.draw(mutations(valid_payment(), PAYMENT_PATHS))
    before = await world.snapshot()
    response = await post(world, "/pay/payments", body, headers)
    note(f"{response.status_code} {response.text[:300]}")
    count_case("hypothesis POST /payments", response.status_code)
    _check(response, before, await world.snapshot())


@FUZZ_SETTINGS
@given(data=st.data())
async def test_fuzz_details(world: SecurityWorld, data: st.DataObject) -> None:
    headers = await world.login("fuzzer")
    if not (await world.snapshot())["mpp_payment"]:
        assert (await world.pay_order(headers, "fz-details")).status_code == 200
    valid = {"reference": "fz-details", "details": {"paymentStatus": "requestPayment:fail x"}}
    body = data.draw(mutations(valid, DETAILS_PATHS))
    before = await world.snapshot()
    response = await post(world, "/pay/payments/details", body, headers)
    note(f"{response.status_code} {response.text[:300]}")
    count_case("hypothesis POST /payments/details", response.status_code)
    _check(response, before, await world.snapshot())


@FUZZ_SETTINGS
@given(data=st.data())
async def test_fuzz_session(world: SecurityWorld, data: st.DataObject) -> None:
    body = data.draw(mutations({"code": f"fuzz.{next(SERIAL)}"}, SESSION_PATHS))
    before = await world.snapshot()
    response = await post(world, "/pay/session", body)
    note(f"{response.status_code} {response.text[:300]}")
    count_case("hypothesis POST /session", response.status_code)
    _check(response, before, await world.snapshot())


@FUZZ_SETTINGS
@given(raw=st.binary(max_size=2048), path=st.sampled_from(BODY_PATHS))
async def test_fuzz_raw_bytes(world: SecurityWorld, raw: bytes, path: str) -> None:
    auth = basic_auth(world.config.webhook_username, world.config.webhook_password)
    headers = auth if "webhooks" in path else await world.login("fuzzer")
    before = await world.snapshot()
    response = await post(world, path, raw, headers)
    count_case("hypothesis raw bytes", response.status_code)
    assert 400 <= response.status_code < 500, response.text
    assert_error_shape(response)
    assert await world.snapshot() == before
