"""Request parsing and response shapes of the HTTP contract.

Parsers turn untrusted JSON into the service's small input types or raise an
``InvalidRequestError`` with a stable code. They never echo a value back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request

from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES, Amount
from miniprogram_pay.errors import InvalidRequestError, PayloadTooLargeError, RequestError
from miniprogram_pay.services.payments import PAYMENT_METHOD_TYPE, DetailsInput, PaymentInput
from miniprogram_pay.storage.records import EventRecord, PaymentRecord, TransitionRecord

__all__ = [
    "details_response",
    "parse_details",
    "parse_payment",
    "parse_session",
    "payment_response",
    "read_body",
    "read_json",
    "status_response",
]

REFERENCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,79}$")
OPENID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
MAX_PAYMENT_STATUS_CHARS = 256
MAX_PAYMENT_DATA_CHARS = 8192
JSON_MAX_DEPTH = 16


class UnsupportedMediaTypeError(RequestError):
    code = "unsupported_media_type"
    status = 415


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing anything over ``max_bytes`` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"the body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, with the content type, size, encoding and depth checked."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaTypeError("send the body as application/json")
    raw = await read_body(request, max_bytes)
    return decode_object(raw)


def decode_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError(
            "the body is not valid UTF-8 JSON", code="malformed_json"
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequestError("the body must be a JSON object", code="malformed_json")
    if _depth(value) > JSON_MAX_DEPTH:
        raise InvalidRequestError("the body is nested too deeply", code="malformed_json")
    if not _encodable(value):
        raise InvalidRequestError("the body is not valid UTF-8 JSON", code="malformed_json")
    return value


def _encodable(value: object) -> bool:
    # A "\ud800" escape decodes to a lone surrogate that no UTF-8 column can store.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(_name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _depth(value: object, level: int = 0) -> int:
    if level > JSON_MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _invalid(field: str, problem: str, code: str = "invalid_field") -> InvalidRequestError:
    return InvalidRequestError(f"{field} {problem}", code=code)


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(name, "must be a string")
    return value


def _printable(value: str) -> bool:
    return value.isprintable()


def parse_session(body: Mapping[str, Any]) -> str:
    code = body.get("code")
    if not isinstance(code, str) or not code:
        raise _invalid("code", "is required: the jsCode from wx.login()", "missing_code")
    if len(code) > 128 or not code.isascii() or not _printable(code):
        raise _invalid("code", "is not a jsCode", "invalid_code")
    return code


def parse_amount(value: object) -> Amount:
    if not isinstance(value, Mapping):
        raise _invalid("amount", "must be an object with currency and value", "invalid_amount")
    currency, minor = value.get("currency"), value.get("value")
    if not isinstance(currency, str) or currency not in SUPPORTED_CURRENCIES:
        raise _invalid(
            "amount.currency", "is not a currency WeChat Pay accepts", "invalid_currency"
        )
    if type(minor) is not int:
        raise _invalid("amount.value", "must be an integer number of minor units", "invalid_amount")
    try:
        return Amount(minor, currency)
    except ValueError:
        raise _invalid("amount.value", "must be a positive integer", "invalid_amount") from None


def parse_payment(body: Mapping[str, Any], session_openid: str) -> PaymentInput:
    method = body.get("paymentMethod")
    if not isinstance(method, Mapping) or method.get("type") != PAYMENT_METHOD_TYPE:
        raise _invalid(
            "paymentMethod.type", f"must be {PAYMENT_METHOD_TYPE!r}", "invalid_payment_method"
        )
    openid = method.get("openid")
    if openid is not None and (not isinstance(openid, str) or openid != session_openid):
        raise InvalidRequestError(
            "paymentMethod.openid does not belong to this session", code="openid_mismatch"
        )
    reference = _optional_str(body, "reference")
    if reference is not None and not REFERENCE_PATTERN.match(reference):
        raise _invalid("reference", "must be 1-80 letters, digits or ._:/-", "invalid_reference")
    amount = parse_amount(body["amount"]) if body.get("amount") is not None else None
    return PaymentInput(body=body, reference=reference, amount=amount)


def parse_details(body: Mapping[str, Any]) -> DetailsInput:
    reference = _optional_str(body, "reference")
    payment_data = _optional_str(body, "paymentData")
    if reference is None and payment_data is None:
        raise _invalid("reference", "or paymentData is required", "missing_reference")
    if reference is not None and not REFERENCE_PATTERN.match(reference):
        raise _invalid("reference", "must be 1-80 letters, digits or ._:/-", "invalid_reference")
    if payment_data is not None and not 0 < len(payment_data) <= MAX_PAYMENT_DATA_CHARS:
        raise _invalid("paymentData", "has an invalid length", "invalid_payment_data")
    details = body.get("details")
    status = details.get("paymentStatus") if isinstance(details, Mapping) else None
    if not isinstance(status, str) or not status.startswith("requestPayment:"):
        raise _invalid(
            "details.paymentStatus",
            "must be the res.errMsg of wx.requestPayment (requestPayment:...)",
            "invalid_payment_status",
        )
    if len(status) > MAX_PAYMENT_STATUS_CHARS or not _printable(status):
        raise _invalid(
            "details.paymentStatus", "is too long or not printable", "invalid_payment_status"
        )
    return DetailsInput(reference=reference, payment_data=payment_data, payment_status=status)


def _amount_json(payment: PaymentRecord) -> dict[str, Any]:
    return {"currency": payment.amount.currency, "value": payment.amount.value}


def payment_response(payment: PaymentRecord) -> dict[str, Any]:
    """POST /payments: the seed's shape (``paymentData``, ``redirect.data``) plus ``action``."""
    can_pay = payment.wechat_params is not None and payment.state.value != "Authorised"
    return {
        "reference": payment.reference,
        "state": payment.state.value,
        "resultCode": payment.result_code,
        "pspReference": payment.psp_reference,
        "amount": _amount_json(payment),
        "paymentData": payment.payment_data,
        "redirect": {"data": payment.wechat_params} if can_pay else None,
        "action": payment.action,
    }


def details_response(payment: PaymentRecord) -> dict[str, Any]:
    return {
        "reference": payment.reference,
        "state": payment.state.value,
        "resultCode": payment.result_code,
        "pspReference": payment.psp_reference,
        "refusalReason": payment.refusal_reason,
    }


def status_response(
    payment: PaymentRecord, history: list[TransitionRecord], events: list[EventRecord]
) -> dict[str, Any]:
    return {
        **details_response(payment),
        "amount": _amount_json(payment),
        "createdAt": payment.created_at.isoformat(),
        "updatedAt": payment.updated_at.isoformat(),
        "conflicts": [
            {
                "kind": e.conflict,
                "source": e.source,
                "event": e.kind,
                "success": e.success,
                "at": e.at.isoformat(),
            }
            for e in events
            if e.conflict
        ],
        "history": [
            {
                "from": t.from_state.value if t.from_state else None,
                "to": t.to_state.value,
                "source": t.source,
                "event": t.event_kind,
                "at": t.at.isoformat(),
            }
            for t in history
        ],
        "events": [
            {
                "source": e.source,
                "event": e.kind,
                "success": e.success,
                "outcome": e.outcome,
                "at": e.at.isoformat(),
            }
            for e in events
        ],
    }
