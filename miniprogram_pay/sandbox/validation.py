"""Validating Checkout requests the way Adyen does, with Adyen's error codes.

Codes Adyen documents are used where they fit (``100`` amount missing, ``137``
invalid amount, ``130`` reference missing, ``901`` wrong merchant account,
``14_030`` returnUrl missing); any other problem gets Adyen's generic ``000``
with a message that names the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from miniprogram_pay.sandbox.config import SandboxConfig

__all__ = [
    "DetailsRequest",
    "PaymentRequest",
    "RefundRequest",
    "RequestInvalid",
    "parse_details",
    "parse_payment",
    "parse_refund",
]

MAX_REFERENCE_LENGTH = 80
MAX_ORDER_REFERENCE_LENGTH = 1000
MAX_RETURN_URL_LENGTH = 8000
PAYMENT_METHOD_TYPE = "wechatpayMiniProgram"
_PAYMENT_METHOD_FIELDS = frozenset({"type", "openid", "appId"})
_CURRENCY = re.compile(r"[A-Z]{3}")
_INT64_MAX = 2**63 - 1
# PaymentRefundRequest's properties (additionalProperties: false) and merchantRefundReason's enum.
_REFUND_FIELDS = frozenset(
    {
        "amount",
        "applicationInfo",
        "capturePspReference",
        "enhancedSchemeData",
        "lineItems",
        "merchantAccount",
        "merchantRefundReason",
        "reference",
        "splits",
        "store",
    }
)
REFUND_REASONS = ("FRAUD", "CUSTOMER REQUEST", "RETURN", "DUPLICATE", "OTHER")


class RequestInvalid(Exception):
    """A request Adyen would reject; rendered as a ``ServiceError``."""

    def __init__(
        self, message: str, *, code: str = "000", status: int = 422, error_type: str = "validation"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.error_type = error_type


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """The parts of a valid ``PaymentRequest`` the sandbox uses."""

    amount: dict[str, Any]
    reference: str
    openid: str
    app_id: str
    return_url: str
    order_reference: str | None = None
    """``merchantOrderReference``: links the attempts of one order."""


@dataclass(frozen=True, slots=True)
class RefundRequest:
    """The parts of a valid ``PaymentRefundRequest`` the sandbox uses."""

    amount: dict[str, Any]
    reference: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class DetailsRequest:
    payment_data: str | None  # v71 makes it optional; without it nothing names the payment
    payment_status: str


def parse_payment(body: Any, config: SandboxConfig) -> PaymentRequest:
    """Check a ``POST /payments`` body; raise ``RequestInvalid`` like Adyen would."""
    body = _object(body)
    amount = _amount(body.get("amount"))
    _merchant_account(body, config)
    reference = _reference(body.get("reference"))
    return_url = _return_url(body.get("returnUrl"))
    openid, app_id = _payment_method(body.get("paymentMethod"), config)
    order_reference = _order_reference(body.get("merchantOrderReference"))
    return PaymentRequest(amount, reference, openid, app_id, return_url, order_reference)


def parse_refund(body: Any, config: SandboxConfig) -> RefundRequest:
    """Check a ``POST /payments/{psp}/refunds`` body; raise ``RequestInvalid`` like Adyen would."""
    body = _object(body)
    unknown = sorted(set(body) - _REFUND_FIELDS)
    if unknown:
        raise RequestInvalid(f"PaymentRefundRequest contains unknown fields: {unknown}")
    amount = _amount(body.get("amount"))
    _merchant_account(body, config)
    reference = body.get("reference")
    if reference is not None:
        reference = _reference(reference)
    reason = body.get("merchantRefundReason")
    if reason is not None and reason not in REFUND_REASONS:
        raise RequestInvalid(f"Field 'merchantRefundReason' must be one of {list(REFUND_REASONS)}.")
    return RefundRequest(amount, reference, reason)


def parse_details(body: Any) -> DetailsRequest:
    """Check a ``POST /payments/details`` body (details.paymentStatus, paymentData if any)."""
    body = _object(body)
    payment_data = body.get("paymentData")
    if payment_data is not None and (not isinstance(payment_data, str) or not payment_data):
        raise RequestInvalid("Field 'paymentData' must be a non-empty string.")
    details = body.get("details")
    status = details.get("paymentStatus") if isinstance(details, dict) else None
    if not isinstance(status, str) or not status.startswith("requestPayment:"):
        raise RequestInvalid("Field 'details.paymentStatus' must be a requestPayment errMsg.")
    return DetailsRequest(payment_data, status)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestInvalid("Unable to parse message.", status=400)
    return body


def _amount(amount: Any) -> dict[str, Any]:
    if amount is None:
        raise RequestInvalid("Required object 'amount' is not provided.", code="100")
    if not isinstance(amount, dict):
        raise RequestInvalid("Invalid amount specified", code="137")
    currency, value = amount.get("currency"), amount.get("value")
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise RequestInvalid("Invalid amount specified: currency must be 3 letters", code="137")
    # bool is an int in Python, but true is not an amount in JSON.
    if type(value) is not int or not 0 < value <= _INT64_MAX:
        raise RequestInvalid(
            "Invalid amount specified: value must be a positive integer", code="137"
        )
    return {"currency": currency, "value": value}


def _merchant_account(body: dict[str, Any], config: SandboxConfig) -> None:
    if body.get("merchantAccount") != config.merchant_account:
        raise RequestInvalid(
            "Invalid Merchant Account", code="901", status=403, error_type="security"
        )


def _reference(reference: Any) -> str:
    if not isinstance(reference, str) or not reference:
        raise RequestInvalid("Required field 'reference' is not provided.", code="130")
    if len(reference) > MAX_REFERENCE_LENGTH:
        raise RequestInvalid(f"Field 'reference' is longer than {MAX_REFERENCE_LENGTH} characters.")
    return reference


def _order_reference(order_reference: Any) -> str | None:
    if order_reference is None:
        return None
    if not isinstance(order_reference, str) or not order_reference:
        raise RequestInvalid("Field 'merchantOrderReference' must be a non-empty string.")
    if len(order_reference) > MAX_ORDER_REFERENCE_LENGTH:
        limit = MAX_ORDER_REFERENCE_LENGTH
        raise RequestInvalid(f"Field 'merchantOrderReference' is longer than {limit} characters.")
    return order_reference


def _return_url(return_url: Any) -> str:
    if not isinstance(return_url, str) or not return_url:
        raise RequestInvalid("Return URL is missing.", code="14_030")
    if len(return_url) > MAX_RETURN_URL_LENGTH:
        raise RequestInvalid(
            f"Field 'returnUrl' is longer than {MAX_RETURN_URL_LENGTH} characters."
        )
    return return_url


def _payment_method(method: Any, config: SandboxConfig) -> tuple[str, str]:
    if not isinstance(method, dict):
        raise RequestInvalid("Required object 'paymentMethod' is not provided.")
    if method.get("type") != PAYMENT_METHOD_TYPE:
        raise RequestInvalid(f"paymentMethod.type must be '{PAYMENT_METHOD_TYPE}'.")
    unknown = sorted(set(method) - _PAYMENT_METHOD_FIELDS)
    if unknown:
        # WeChatPayMiniProgramDetails has additionalProperties: false.
        raise RequestInvalid(f"paymentMethod contains unknown fields: {unknown}")
    openid, app_id = method.get("openid"), method.get("appId")
    if not isinstance(openid, str) or not openid:
        raise RequestInvalid("Required field 'paymentMethod.openid' is not provided.")
    if app_id != config.wechat_app_id:
        raise RequestInvalid(
            "paymentMethod.appId is not the Mini Program configured for WeChat Pay."
        )
    return openid, app_id
