"""Adyen Checkout API client: POST /payments, /payments/details and /payments/{psp}/refunds.

One ``Idempotency-Key`` per logical operation is made by the caller *before* it
calls us and is sent unchanged on every retry, so a retry after a timeout returns
Adyen's first result instead of creating a second payment. Only timeouts,
connection errors and 5xx are retried (the package's policy, ``retrying.py``),
after the backoff or the ``Retry-After`` Adyen sends, whichever is longer; a
``Retry-After`` longer than a shopper can wait ends the retries at once and is
passed on. Every failure is translated into ``miniprogram_pay.errors`` at this
boundary.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast
from urllib.parse import quote

import httpx

from miniprogram_pay.adyen.responses import RefundResult, parse_refund_result
from miniprogram_pay.config import Secret, Settings
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import RefundReason
from miniprogram_pay.errors import AdyenError, AdyenTimeoutError, AdyenUnavailableError
from miniprogram_pay.observability.metrics import NO_METRICS, CallOutcome, Metrics
from miniprogram_pay.retrying import Backoff, RetryAfter, parse_retry_after, retrying

__all__ = [
    "DEFAULT_BACKOFF",
    "PAYMENT_METHOD_TYPE",
    "AdyenCheckoutClient",
    "details_request_body",
    "payment_request_body",
    "refund_request_body",
]

logger = logging.getLogger("miniprogram_pay.adyen")

MAX_IDEMPOTENCY_KEY_CHARS = 64
DEFAULT_BACKOFF = Backoff(base_seconds=0.5, cap_seconds=8.0)
# A shopper waits on this call: a longer Retry-After is handed on rather than slept through.
MAX_RETRY_AFTER_SECONDS = 10.0
MAX_REFUND_REFERENCE_CHARS = 80
MAX_PAYMENT_REFERENCE_CHARS = 80
MAX_MERCHANT_ORDER_REFERENCE_CHARS = 1000
PAYMENT_METHOD_TYPE = "wechatpayMiniProgram"
MAX_PSP_REFERENCE_CHARS = 64
# Adyen's free-text error message is useful to operators but unbounded; keep it short.
MAX_ADYEN_MESSAGE_CHARS = 200
# The refunds path as metrics name it: one series, whatever the payment.
REFUNDS_ENDPOINT = "/payments/{pspReference}/refunds"

_Outcome = httpx.Response | httpx.RequestError
_RETRYABLE_TRANSPORT_ERRORS = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


def _check_idempotency_key(key: str) -> None:
    # A bad key is a bug in our own caller (keys are generated server-side), so
    # this is a ValueError rather than a client-facing error.
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise ValueError(f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters")
    if not (key.isascii() and key.isprintable()):
        raise ValueError("idempotency_key must be printable ASCII")


def _retry_after(outcome: _Outcome) -> float | None:
    if isinstance(outcome, httpx.Response):
        return parse_retry_after(outcome.headers.get("retry-after"))
    return None


def _check_refund_request(psp_reference: str, reference: str, merchant_account: str) -> None:
    # Like a bad key, these come from our own service, never straight from a caller.
    if not 0 < len(psp_reference) <= MAX_PSP_REFERENCE_CHARS:
        raise ValueError(f"psp_reference must be 1 to {MAX_PSP_REFERENCE_CHARS} characters")
    if not 0 < len(reference) <= MAX_REFUND_REFERENCE_CHARS:
        raise ValueError(f"reference must be 1 to {MAX_REFUND_REFERENCE_CHARS} characters")
    if not merchant_account:
        raise ValueError("merchant_account must not be empty")


def refund_request_body(
    *, merchant_account: str, amount: Amount, reference: str, reason: RefundReason | None
) -> dict[str, Any]:
    """A ``PaymentRefundRequest``: ``merchantRefundReason`` only when there is one."""
    body: dict[str, Any] = {
        "merchantAccount": merchant_account,
        "amount": amount.to_adyen(),
        "reference": reference,
    }
    if reason is not None:
        body["merchantRefundReason"] = reason.value
    return body


def payment_request_body(
    *,
    merchant_account: str,
    amount: Amount,
    reference: str,
    merchant_order_reference: str,
    return_url: str,
    country_code: str,
    openid: str,
    app_id: str,
) -> dict[str, Any]:
    """A ``PaymentRequest`` for one attempt of an order, paid in a WeChat Mini Program.

    ``reference`` is the attempt's own (unique at Adyen, which does not enforce it);
    ``merchant_order_reference`` is the order's, the same for all its attempts, which
    is how Adyen links them. Both come from our own service, so a bad one is a
    ValueError, never a client-facing error.
    """
    if not 0 < len(reference) <= MAX_PAYMENT_REFERENCE_CHARS:
        raise ValueError(f"reference must be 1 to {MAX_PAYMENT_REFERENCE_CHARS} characters")
    if not 0 < len(merchant_order_reference) <= MAX_MERCHANT_ORDER_REFERENCE_CHARS:
        raise ValueError(
            f"merchant_order_reference must be 1 to {MAX_MERCHANT_ORDER_REFERENCE_CHARS} characters"
        )
    return {
        "amount": amount.to_adyen(),
        "merchantAccount": merchant_account,
        "reference": reference,
        "merchantOrderReference": merchant_order_reference,
        "returnUrl": return_url,
        "countryCode": country_code,
        "paymentMethod": {"type": PAYMENT_METHOD_TYPE, "openid": openid, "appId": app_id},
    }


def details_request_body(payment_status: str, payment_data: str | None) -> dict[str, Any]:
    """A ``PaymentDetailsRequest`` for the Mini Program's ``res.errMsg``.

    ``paymentData`` goes only when the ``/payments`` answer gave one: an ``sdk``
    action carries it, a v71 ``redirect`` action has none, and ``details`` is all
    that ``/payments/details`` requires.
    """
    body: dict[str, Any] = {"details": {"paymentStatus": payment_status}}
    if payment_data is not None:
        body["paymentData"] = payment_data
    return body


def _is_retryable(outcome: _Outcome) -> bool:
    if isinstance(outcome, httpx.Response):
        # 409: the first request with this key is still running at Adyen (often our
        # own, timed out here); once it ends, the same key answers with its result.
        return outcome.status_code >= 500 or outcome.status_code == 409
    # Safe to resend even when the request may have reached Adyen: the
    # Idempotency-Key makes Adyen return the first result.
    return isinstance(
        outcome, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError
    )


def _transport_error(path: str, exc: httpx.RequestError, attempts: int) -> AdyenError:
    if isinstance(exc, httpx.TimeoutException):
        return AdyenTimeoutError(f"Adyen did not answer {path} in time after {attempts} attempt(s)")
    return AdyenUnavailableError(
        f"could not reach Adyen for {path} ({type(exc).__name__}) after {attempts} attempt(s)"
    )


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None
    return body if isinstance(body, dict) else None


def _optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None


def _rejected(path: str, response: httpx.Response) -> AdyenError:
    body = _json_object(response) or {}
    error_code = _optional_str(body, "errorCode")
    detail = (_optional_str(body, "message") or "no message")[:MAX_ADYEN_MESSAGE_CHARS]
    return AdyenError(
        f"Adyen rejected {path} ({error_code or 'no errorCode'}): {detail}",
        code="adyen_rejected",
        status=502,
        psp_reference=_optional_str(body, "pspReference"),
        error_code=error_code,
        http_status=response.status_code,
    )


def _conflict(path: str, response: httpx.Response) -> AdyenError:
    body = _json_object(response) or {}
    error = AdyenError(
        f"Adyen reports {path} already processed or in progress; retry later",
        code="adyen_conflict",
        status=409,
        psp_reference=_optional_str(body, "pspReference"),
        error_code=_optional_str(body, "errorCode"),
        http_status=409,
    )
    # The same request with the same key will succeed once Adyen finishes the first one.
    error.retryable = True
    return error


def _status_error(path: str, response: httpx.Response, attempts: int) -> AdyenError:
    status = response.status_code
    if status >= 500:
        wait = _retry_after(response)
        return AdyenUnavailableError(
            f"Adyen answered {status} on {path} after {attempts} attempt(s)",
            http_status=status,
            retry_after_seconds=math.ceil(wait) if wait is not None else None,
        )
    if status in (401, 403):
        return AdyenError(
            f"Adyen refused our credentials ({status}); check the API key and its roles",
            code="adyen_auth_failed",
            status=502,
            http_status=status,
        )
    if status in (400, 422):
        return _rejected(path, response)
    if status == 409:
        return _conflict(path, response)
    return AdyenError(f"Adyen answered {status} on {path}", status=502, http_status=status)


def _interpret(path: str, outcome: _Outcome, attempts: int) -> dict[str, Any]:
    if isinstance(outcome, httpx.RequestError):
        raise _transport_error(path, outcome, attempts) from outcome
    if not outcome.is_success:
        raise _status_error(path, outcome, attempts)
    body = _json_object(outcome)
    if body is None:
        error = AdyenError(
            f"Adyen answered {outcome.status_code} on {path} without a JSON object",
            code="adyen_bad_response",
            status=502,
            http_status=outcome.status_code,
        )
        # A 2xx that did not parse (a proxy cut it short) says Adyen did the work, not that
        # it refused: the payment must not become Error, and a retry with the same
        # Idempotency-Key returns Adyen's stored answer.
        error.retryable = True
        raise error
    return body


class AdyenCheckoutClient:
    """Async client for the Checkout endpoints a Mini Program payment and its refunds need.

    Example::

        async with httpx.AsyncClient() as http:
            adyen = AdyenCheckoutClient.from_settings(settings, http)
            result = await adyen.create_payment(request_body, idempotency_key=str(uuid4()))
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: Secret,
        http: httpx.AsyncClient,
        timeout_seconds: float = 10.0,
        max_retries: int = 2,
        backoff: Backoff = DEFAULT_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        if timeout_seconds <= 0 or max_retries < 0:
            raise ValueError("timeout_seconds must be > 0 and max_retries >= 0")
        self._metrics = metrics
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._http = http
        self._timeout = httpx.Timeout(timeout_seconds)
        self._max_retries = max_retries
        self._backoff = backoff
        self._sleep = sleep

    @classmethod
    def from_settings(
        cls, settings: Settings, http: httpx.AsyncClient, *, metrics: Metrics = NO_METRICS
    ) -> AdyenCheckoutClient:
        return cls(
            base_url=settings.checkout_url,
            api_key=settings.adyen_api_key,
            http=http,
            timeout_seconds=settings.adyen_timeout_seconds,
            max_retries=settings.adyen_max_retries,
            metrics=metrics,
        )

    def __repr__(self) -> str:
        return f"AdyenCheckoutClient(base_url={self._base_url!r})"

    async def create_payment(
        self, body: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """POST /payments; returns Adyen's JSON object (see ``responses.parse_payment_result``)."""
        return await self._post("/payments", body, idempotency_key)

    async def submit_details(
        self, body: Mapping[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """POST /payments/details (``details_request_body``: paymentData only when there is one)."""
        return await self._post("/payments/details", body, idempotency_key)

    async def refund_payment(
        self,
        psp_reference: str,
        *,
        merchant_account: str,
        amount: Amount,
        reference: str,
        idempotency_key: str,
        reason: RefundReason | None = None,
    ) -> RefundResult:
        """POST /payments/{psp_reference}/refunds; Adyen's ``received`` answer, typed.

        The outcome comes later, in a REFUND webhook carrying the returned
        ``psp_reference``. Retried like the other calls, with the same key.

        Example::

            received = await adyen.refund_payment(
                "7914073381342284", merchant_account="ShopCN", amount=Amount(300, "CNY"),
                reference="order-17-refund-1", idempotency_key=str(uuid4()),
            )
        """
        _check_refund_request(psp_reference, reference, merchant_account)
        body = refund_request_body(
            merchant_account=merchant_account, amount=amount, reference=reference, reason=reason
        )
        # A pspReference is Adyen's, but it goes in the path: escape it whole ("/" included).
        path = f"/payments/{quote(psp_reference, safe='')}/refunds"
        answer = await self._post(path, body, idempotency_key, endpoint=REFUNDS_ENDPOINT)
        return parse_refund_result(answer, payment_psp_reference=psp_reference)

    async def _post(
        self, path: str, body: Mapping[str, Any], key: str, *, endpoint: str | None = None
    ) -> dict[str, Any]:
        _check_idempotency_key(key)
        content = json.dumps(dict(body), separators=(",", ":")).encode("utf-8")
        headers = self._headers(key)  # the same Idempotency-Key on every attempt
        attempt = 0
        try:
            async for retry in retrying(
                attempts=self._max_retries + 1, backoff=self._backoff, sleep=self._sleep
            ):
                with retry:
                    attempt = retry.retry_state.attempt_number
                    outcome = await self._attempt(path, content, headers, attempt, endpoint)
                    wait = _retry_after(outcome)
                    if _is_retryable(outcome) and (wait or 0) <= MAX_RETRY_AFTER_SECONDS:
                        raise RetryAfter(outcome, wait)
                    return _interpret(path, outcome, attempt)
        except RetryAfter as exhausted:  # the last attempt failed too
            return _interpret(path, cast(_Outcome, exhausted.outcome), attempt)
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _headers(self, key: str) -> dict[str, str]:
        return {
            "X-API-Key": self._api_key.reveal(),
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": key,
        }

    async def _attempt(
        self,
        path: str,
        content: bytes,
        headers: dict[str, str],
        attempt: int,
        endpoint: str | None = None,
    ) -> _Outcome:
        started = time.perf_counter()
        try:
            outcome: _Outcome = await self._http.post(
                self._base_url + path, content=content, headers=headers, timeout=self._timeout
            )
        except httpx.RequestError as exc:
            outcome = exc
        status = outcome.status_code if isinstance(outcome, httpx.Response) else None
        _log_attempt(path, str(status) if status else type(outcome).__name__, started, attempt)
        self._metrics.upstream_call(
            "adyen", endpoint or path, _call_outcome(outcome), time.perf_counter() - started
        )
        return outcome


def _call_outcome(outcome: _Outcome) -> CallOutcome:
    if isinstance(outcome, httpx.Response):
        if outcome.status_code >= 500:
            return CallOutcome.SERVER_ERROR
        return CallOutcome.REJECTED if outcome.status_code >= 400 else CallOutcome.OK
    if isinstance(outcome, httpx.TimeoutException):
        return CallOutcome.TIMEOUT
    return CallOutcome.UNREACHABLE


def _log_attempt(path: str, status: str, started: float, attempt: int) -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info(
        "adyen POST %s status=%s elapsed_ms=%.0f attempt=%d", path, status, elapsed_ms, attempt
    )
