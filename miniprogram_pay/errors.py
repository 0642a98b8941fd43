"""One error hierarchy for the whole package.

Every error carries a stable ``code`` (part of the HTTP contract), an HTTP
``status`` and, where one exists, Adyen's ``psp_reference``. Messages never
contain a request body or a secret.

```
MiniProgramPayError
├── ConfigurationError              bad or conflicting Settings, raised at start-up
├── RequestError (4xx)              the caller sent something we refuse
│   ├── InvalidRequestError         400 invalid_request / malformed_json / ...
│   │   ├── InvalidRefundError      400 invalid_refund / invalid_refund_amount /
│   │   │                               refund_currency_mismatch / invalid_refund_reason
│   │   └── InvalidQueryError       400 invalid_filter / invalid_status / invalid_page
│   │                                   (names the parameter and its allowed values)
│   ├── AuthenticationError         401 unauthenticated / invalid_token / ...
│   ├── NotFoundError               404 not_found
│   ├── ConflictError               409 conflict
│   │   └── RefundNotAllowedError   409 payment_not_refundable / refund_exceeds_refundable /
│   │                                   refund_limit_reached / refund_window_closed /
│   │                                   refund_under_review
│   ├── PayloadTooLargeError        413 payload_too_large
│   └── RateLimitedError            429 rate_limited
├── WebhookError (401)              a notification we must not trust
│   ├── WebhookAuthError            webhook_auth_failed (Basic auth)
│   └── SignatureError              webhook_signature_invalid (HMAC)
├── UpstreamError (502/503/504)     a payment provider failed us
│   ├── AdyenError                  adyen_* (carries Adyen's errorCode)
│   │   ├── AdyenTimeoutError       adyen_timeout
│   │   └── AdyenUnavailableError   adyen_unavailable
│   └── WeChatError                 wechat_*
├── StorageError (503)              the database failed or is busy
├── SchemaOutdatedError (503)       readiness: the database is behind this release's schema
├── WorkersUnavailableError (503)   a background loop (inbox, outbox) is stalled or dead
└── NotInstalledError (501)         a feature whose optional extra is not installed
```
"""

from __future__ import annotations

__all__ = [
    "AdyenError",
    "AdyenTimeoutError",
    "AdyenUnavailableError",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "InvalidQueryError",
    "InvalidRefundError",
    "InvalidRequestError",
    "MiniProgramPayError",
    "NotFoundError",
    "NotInstalledError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "RefundNotAllowedError",
    "RequestError",
    "SchemaOutdatedError",
    "SignatureError",
    "StorageError",
    "UpstreamError",
    "WeChatError",
    "WebhookAuthError",
    "WebhookError",
    "WorkersUnavailableError",
]


class MiniProgramPayError(Exception):
    """Base of every error this package raises on purpose."""

    code: str = "internal_error"
    status: int = 500
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        psp_reference: str | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.psp_reference = psp_reference
        self.retry_after_seconds = retry_after_seconds

    def to_dict(self) -> dict[str, object]:
        """The JSON body the HTTP layer renders: stable code, message, PSP reference."""
        return {"error": self._error_fields()}

    def _error_fields(self) -> dict[str, object]:
        error: dict[str, object] = {"code": self.code, "message": self.message}
        if self.psp_reference:
            error["pspReference"] = self.psp_reference
        if self.retryable:
            error["retryable"] = True
        return error

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(code={self.code!r}, status={self.status}, message={self.message!r})"


class ConfigurationError(MiniProgramPayError):
    """Settings are missing or inconsistent. The message names the setting and the fix."""

    code = "configuration_error"


class RequestError(MiniProgramPayError):
    code = "invalid_request"
    status = 400


class InvalidRequestError(RequestError):
    code = "invalid_request"
    status = 400


class InvalidRefundError(InvalidRequestError):
    """A refund request that is wrong in itself: its amount, currency or reason."""

    code = "invalid_refund"


class InvalidQueryError(InvalidRequestError):
    """A query parameter of an admin list that is unknown, repeated or out of its range.

    The error names the ``parameter`` and, for a closed set, the ``allowed`` values (for an
    unknown name: no parameter, the names allowed), so a back office can show them
    instead of an empty list.
    """

    code = "invalid_filter"

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None,
        allowed: tuple[str, ...] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.parameter = parameter
        self.allowed = allowed

    def _error_fields(self) -> dict[str, object]:
        error = super()._error_fields()
        if self.parameter is not None:
            error["parameter"] = self.parameter
        if self.allowed is not None:
            error["allowed"] = list(self.allowed)
        return error


class AuthenticationError(RequestError):
    code = "unauthenticated"
    status = 401


class NotFoundError(RequestError):
    code = "not_found"
    status = 404


class ConflictError(RequestError):
    code = "conflict"
    status = 409


class RefundNotAllowedError(ConflictError):
    """The payment cannot take this refund now; ``code`` says which rule refused it.

    ``refundable`` is what is left to refund (value, currency), when it is known.
    """

    code = "refund_not_allowed"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        psp_reference: str | None = None,
        refundable: tuple[int, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, psp_reference=psp_reference)
        self.refundable = refundable

    def _error_fields(self) -> dict[str, object]:
        # What is left to refund, so a caller can retry with an amount that fits.
        error = super()._error_fields()
        if self.refundable is not None:
            value, currency = self.refundable
            error["refundable"] = {"value": value, "currency": currency}
        return error


class PayloadTooLargeError(RequestError):
    code = "payload_too_large"
    status = 413


class RateLimitedError(RequestError):
    code = "rate_limited"
    status = 429
    retryable = True


class WebhookError(MiniProgramPayError):
    code = "webhook_rejected"
    status = 401


class WebhookAuthError(WebhookError):
    code = "webhook_auth_failed"


class SignatureError(WebhookError):
    code = "webhook_signature_invalid"


class UpstreamError(MiniProgramPayError):
    code = "upstream_error"
    status = 502


class AdyenError(UpstreamError):
    """Adyen answered with an error. ``error_code`` is Adyen's own (e.g. ``14_030``)."""

    code = "adyen_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        psp_reference: str | None = None,
        retry_after_seconds: int | None = None,
        error_code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(
            message,
            code=code,
            status=status,
            psp_reference=psp_reference,
            retry_after_seconds=retry_after_seconds,
        )
        self.error_code = error_code
        self.http_status = http_status


class AdyenTimeoutError(AdyenError):
    code = "adyen_timeout"
    status = 504
    retryable = True


class AdyenUnavailableError(AdyenError):
    code = "adyen_unavailable"
    status = 503
    retryable = True


class WeChatError(UpstreamError):
    """WeChat refused or failed; ``errcode`` is WeChat's own number."""

    code = "wechat_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        errcode: int | None = None,
        retry_after_seconds: int | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, retry_after_seconds=retry_after_seconds)
        self.errcode = errcode
        self.retryable = self.status in (429, 502, 503, 504)


class StorageError(MiniProgramPayError):
    code = "storage_unavailable"
    status = 503
    retryable = True


class WorkersUnavailableError(MiniProgramPayError):
    """``/health``: a background loop is stalled or dead; stored work is waiting."""

    code = "workers_unavailable"
    status = 503
    retryable = True


class SchemaOutdatedError(MiniProgramPayError):
    """``/ready``: the database has no tables, or a schema older than this release needs."""

    code = "schema_outdated"
    status = 503


class NotInstalledError(MiniProgramPayError):
    """A feature needs an optional extra that is not installed (the message names it)."""

    code = "not_installed"
    status = 501
