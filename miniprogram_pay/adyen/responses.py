"""Normalise Adyen /payments, /payments/details and /payments/{psp}/refunds responses.

Adyen has moved the ``wx.requestPayment`` parameters between API versions: the
top-level ``redirect.data`` (older API, the seed document), ``action.data`` (a
redirect action) or ``action.sdkData`` (an SDK action). ``parse_payment_result``
accepts all three and always yields one shape. Anything of the wrong type raises
``AdyenError(code="adyen_bad_response")`` and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from miniprogram_pay.domain.money import MAX_MINOR_UNITS
from miniprogram_pay.errors import AdyenError

__all__ = [
    "WECHAT_PARAM_KEYS",
    "PaymentResult",
    "RefundResult",
    "parse_payment_result",
    "parse_refund_result",
]

# The parameters wx.requestPayment takes, and nothing else: extra keys from Adyen
# are dropped so the Mini Program never sees something we did not vet.
T = TypeVar("T")

WECHAT_PARAM_KEYS = ("timeStamp", "package", "paySign", "appId", "signType", "nonceStr")


@dataclass(frozen=True, slots=True)
class PaymentResult:
    """The parts of a /payments or /payments/details response this package uses."""

    result_code: str | None
    psp_reference: str | None
    merchant_reference: str | None
    refusal_reason: str | None
    refusal_reason_code: str | None
    amount_value: int | None
    amount_currency: str | None
    payment_data: str | None
    wechat_params: dict[str, str] | None
    action: dict[str, Any] | None


class _BadResponse(Exception):
    """Internal: the response is malformed; translated once at the boundary."""


def _bad(problem: str) -> AdyenError:
    return AdyenError(
        f"Adyen response is malformed: {problem}", code="adyen_bad_response", status=502
    )


def _checked(body: object, parse: Callable[[Mapping[str, Any]], T]) -> T:
    """``parse(body)``, with every problem translated once into ``adyen_bad_response``."""
    if not isinstance(body, Mapping):
        raise _bad("the body is not an object")
    try:
        return parse(body)
    except _BadResponse as exc:
        raise _bad(str(exc)) from exc


def _opt_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or isinstance(value, str):
        return value
    raise _BadResponse(f"{name} is not a string")


def _opt_mapping(body: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    value = body.get(name)
    if value is None or isinstance(value, Mapping):
        return value
    raise _BadResponse(f"{name} is not an object")


def _amount(body: Mapping[str, Any]) -> tuple[int | None, str | None]:
    amount = _opt_mapping(body, "amount")
    if amount is None:
        return None, None
    value = amount.get("value")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _BadResponse("amount.value is not an integer")
    if value is not None and not -MAX_MINOR_UNITS <= value <= MAX_MINOR_UNITS:
        raise _BadResponse("amount.value is out of range")  # the column is int64
    return value, _opt_str(amount, "currency")


def _places(body: Mapping[str, Any], action: Mapping[str, Any] | None) -> Iterator[object]:
    redirect = _opt_mapping(body, "redirect")
    for holder, key in ((redirect, "data"), (action, "data"), (action, "sdkData")):
        if holder is not None and holder.get(key) is not None:
            yield holder[key]


def _decode_place(place: object) -> Mapping[str, Any] | None:
    # Some shapes carry the parameters as a JSON string rather than an object.
    if isinstance(place, str):
        try:
            place = json.loads(place)
        except (ValueError, RecursionError):
            return None
    return place if isinstance(place, Mapping) else None


def _param(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if key == "timeStamp" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) and value else None


def _extract_params(place: object) -> dict[str, str] | None:
    data = _decode_place(place)
    if data is None:
        return None
    params = {key: _param(data, key) for key in WECHAT_PARAM_KEYS}
    if any(value is None for value in params.values()):
        return None
    return {key: value for key, value in params.items() if value is not None}


def _wechat_params(
    body: Mapping[str, Any], action: Mapping[str, Any] | None
) -> dict[str, str] | None:
    places = list(_places(body, action))
    for place in places:
        params = _extract_params(place)
        if params is not None:
            return params
    if places:
        raise _BadResponse("no complete wx.requestPayment parameters where Adyen puts them")
    return None


def _short(value: str | None, name: str, limit: int) -> str | None:
    # Real values are far shorter; a longer one is not Adyen's and would not fit its column.
    if value is not None and len(value) > limit:
        raise _BadResponse(f"{name} is longer than {limit} characters")
    return value


def _parse(body: Mapping[str, Any]) -> PaymentResult:
    action = _opt_mapping(body, "action")
    payment_data = _opt_str(body, "paymentData")
    if payment_data is None and action is not None:
        payment_data = _opt_str(action, "paymentData")
    value, currency = _amount(body)
    return PaymentResult(
        result_code=_short(_opt_str(body, "resultCode"), "resultCode", 32),
        psp_reference=_short(_opt_str(body, "pspReference"), "pspReference", 64),
        merchant_reference=_opt_str(body, "merchantReference"),
        refusal_reason=_opt_str(body, "refusalReason"),
        refusal_reason_code=_opt_str(body, "refusalReasonCode"),
        amount_value=value,
        amount_currency=currency,
        payment_data=payment_data,
        wechat_params=_wechat_params(body, action),
        action=dict(action) if action is not None else None,
    )


def parse_payment_result(body: Mapping[str, Any]) -> PaymentResult:
    """Normalise a /payments or /payments/details response body.

    Example::

        result = parse_payment_result(await adyen.create_payment(...))
        if result.result_code == "Pending" and result.wechat_params:
            ...  # hand result.wechat_params to wx.requestPayment
    """
    return _checked(body, _parse)


@dataclass(frozen=True, slots=True)
class RefundResult:
    """Adyen's answer to a refund request: it has the request, the outcome comes later."""

    psp_reference: str
    """The refund's own pspReference, which its webhooks carry."""
    payment_psp_reference: str
    status: str
    """Always ``"received"``."""
    reference: str | None
    amount_value: int | None
    amount_currency: str | None


REFUND_RECEIVED = "received"


def _required_str(body: Mapping[str, Any], name: str) -> str:
    value = _short(_opt_str(body, name), name, 64)
    if not value:
        raise _BadResponse(f"{name} is missing")
    return value


def _parse_refund(body: Mapping[str, Any], payment_psp_reference: str | None) -> RefundResult:
    status = _opt_str(body, "status")
    if status != REFUND_RECEIVED:
        # The only status Adyen defines; anything else is not an answer we can trust.
        raise _BadResponse(f"status is not {REFUND_RECEIVED!r}")
    paid = _required_str(body, "paymentPspReference")
    if payment_psp_reference is not None and paid != payment_psp_reference:
        raise _BadResponse("paymentPspReference is not the payment refunded")
    value, currency = _amount(body)
    return RefundResult(
        psp_reference=_required_str(body, "pspReference"),
        payment_psp_reference=paid,
        status=status,
        reference=_opt_str(body, "reference"),
        amount_value=value,
        amount_currency=currency,
    )


def parse_refund_result(
    body: Mapping[str, Any], *, payment_psp_reference: str | None = None
) -> RefundResult:
    """Check and type a ``PaymentRefundResponse``.

    ``payment_psp_reference``, when given, must be the answer's
    ``paymentPspReference``: an answer about another payment is malformed.

    Example::

        result = parse_refund_result(body, payment_psp_reference="7914073381342284")
        result.psp_reference  # the refund's, to match its REFUND webhook
    """
    return _checked(body, lambda checked: _parse_refund(checked, payment_psp_reference))
