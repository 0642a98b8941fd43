"""WeChat ``code2Session`` client (server side only).

The request URL carries the AppSecret in its query string, so this module never
logs a URL, never puts a WeChat-side value into an error, and keeps the
``session_key`` wrapped in a ``Secret``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from miniprogram_pay.config import Secret, Settings
from miniprogram_pay.errors import InvalidRequestError, WeChatError
from miniprogram_pay.observability.metrics import NO_METRICS, CallOutcome, Metrics
from miniprogram_pay.retrying import Backoff, RetryAfter, retrying

__all__ = ["WeChatClient", "WeChatSession"]

logger = logging.getLogger("miniprogram_pay.wechat")

CODE2SESSION_PATH = "/sns/jscode2session"
# WeChat's -1 ("system busy") clears in moments; a shopper is waiting on the login.
BUSY_BACKOFF = Backoff(base_seconds=0.2, cap_seconds=1.0)
RATE_LIMIT_RETRY_AFTER_SECONDS = 60
# A jsCode is short and opaque; anything else is not worth a round trip.
_JS_CODE = re.compile(r"[\x21-\x7e]{1,128}")
_BUSY = -1

# errcode -> (code, HTTP status, Retry-After seconds)
_ERRCODES: dict[int, tuple[str, int, int | None]] = {
    40029: ("wechat_invalid_code", 400, None),
    40163: ("wechat_code_used", 400, None),
    45011: ("wechat_rate_limited", 429, RATE_LIMIT_RETRY_AFTER_SECONDS),
    40226: ("wechat_user_blocked", 403, None),
    _BUSY: ("wechat_busy", 502, None),
}


@dataclass(frozen=True, slots=True)
class WeChatSession:
    """A shopper's WeChat identity. ``session_key`` must never leave the server."""

    openid: str
    session_key: Secret
    unionid: str | None


class _RedactSecretFilter(logging.Filter):
    """Redact the AppSecret and jsCode from httpx's own "HTTP Request: GET <url>" log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_is_code2session_url, record.args)):
            record.args = tuple(_redacted(arg) for arg in record.args)
        return True


_REDACTED_PARAMS = ("secret", "js_code")


def _is_code2session_url(arg: object) -> bool:
    return isinstance(arg, httpx.URL) and any(p in arg.params for p in _REDACTED_PARAMS)


def _redacted(arg: object) -> object:
    if not isinstance(arg, httpx.URL):
        return arg
    for name in _REDACTED_PARAMS:
        if name in arg.params:
            arg = arg.copy_set_param(name, "REDACTED")
    return arg


def _install_httpx_redaction() -> None:
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactSecretFilter) for f in httpx_logger.filters):
        httpx_logger.addFilter(_RedactSecretFilter())


def _validate_js_code(js_code: str) -> None:
    if not isinstance(js_code, str) or not _JS_CODE.fullmatch(js_code):
        raise InvalidRequestError(
            "code must be 1 to 128 printable ASCII characters from wx.login",
            code="invalid_code",
        )


def _bad_response(problem: str) -> WeChatError:
    return WeChatError(f"WeChat code2Session {problem}", code="wechat_bad_response", status=502)


def _transport_error(exc: httpx.RequestError) -> WeChatError:
    if isinstance(exc, httpx.TimeoutException):
        return WeChatError("WeChat code2Session timed out", code="wechat_unavailable", status=504)
    return WeChatError(
        f"could not reach WeChat code2Session ({type(exc).__name__})",
        code="wechat_unavailable",
        status=502,
    )


def _errcode_error(errcode: int) -> WeChatError:
    code, status, retry_after = _ERRCODES.get(errcode, ("wechat_error", 502, None))
    return WeChatError(
        f"WeChat code2Session failed with errcode {errcode}",
        code=code,
        status=status,
        errcode=errcode,
        retry_after_seconds=retry_after,
    )


def _json_object(response: httpx.Response) -> Mapping[str, Any]:
    if response.status_code >= 500:
        raise WeChatError(
            f"WeChat code2Session answered {response.status_code}",
            code="wechat_unavailable",
            status=502,
        )
    if not response.is_success:
        raise _bad_response(f"answered {response.status_code}")
    # WeChat often labels JSON as text/plain, so the content type is ignored.
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        raise _bad_response(f"answered {response.status_code} without JSON") from None
    if not isinstance(body, dict):
        raise _bad_response("answered with JSON that is not an object")
    return body


def _errcode(body: Mapping[str, Any]) -> int:
    errcode = body.get("errcode", 0)
    if isinstance(errcode, bool) or not isinstance(errcode, int):
        raise _bad_response("answered with a non-integer errcode")
    return errcode


def _session(body: Mapping[str, Any]) -> WeChatSession:
    openid, session_key, unionid = (body.get(k) for k in ("openid", "session_key", "unionid"))
    if not isinstance(openid, str) or not openid:
        raise _bad_response("answered without an openid")
    if not isinstance(session_key, str):
        raise _bad_response("answered without a session_key")
    if unionid is not None and not isinstance(unionid, str):
        raise _bad_response("answered with a non-string unionid")
    return WeChatSession(openid=openid, session_key=Secret(session_key), unionid=unionid or None)


class WeChatClient:
    """Exchanges a Mini Program ``wx.login`` code for the shopper's openid.

    Example::

        async with httpx.AsyncClient() as http:
            wechat = WeChatClient.from_settings(settings, http)
            session = await wechat.code_to_session(js_code)
            session.openid  # pass to Adyen as paymentMethod.openid
    """

    def __init__(
        self,
        *,
        base_url: str,
        app_id: str,
        app_secret: Secret,
        http: httpx.AsyncClient,
        timeout_seconds: float = 5.0,
        busy_retries: int = 1,
        backoff: Backoff = BUSY_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        if timeout_seconds <= 0 or busy_retries < 0:
            raise ValueError("timeout_seconds must be > 0 and busy_retries >= 0")
        self._metrics = metrics
        self._url = base_url.rstrip("/") + CODE2SESSION_PATH
        self._app_id = app_id
        self._app_secret = app_secret
        self._http = http
        self._timeout = httpx.Timeout(timeout_seconds)
        self._busy_retries = busy_retries
        self._backoff = backoff
        self._sleep = sleep
        _install_httpx_redaction()

    @classmethod
    def from_settings(
        cls, settings: Settings, http: httpx.AsyncClient, *, metrics: Metrics = NO_METRICS
    ) -> WeChatClient:
        return cls(
            base_url=settings.wechat_api_url,
            app_id=settings.wechat_app_id,
            app_secret=settings.wechat_app_secret,
            http=http,
            timeout_seconds=settings.wechat_timeout_seconds,
            metrics=metrics,
        )

    def __repr__(self) -> str:
        return f"WeChatClient(url={self._url!r}, app_id={self._app_id!r})"

    async def code_to_session(self, js_code: str) -> WeChatSession:
        """Call code2Session; raises ``InvalidRequestError`` or ``WeChatError``."""
        _validate_js_code(js_code)
        try:
            async for retry in retrying(
                attempts=self._busy_retries + 1, backoff=self._backoff, sleep=self._sleep
            ):
                with retry:
                    body = await self._call(js_code, retry.retry_state.attempt_number)
                    errcode = _errcode(body)
                    if errcode == _BUSY:
                        raise RetryAfter(errcode)
                    if errcode != 0:
                        raise _errcode_error(errcode)
                    return _session(body)
        except RetryAfter:  # still busy on the last attempt
            raise _errcode_error(_BUSY) from None
        raise AssertionError("unreachable: the retry loop returns or raises")

    async def _call(self, js_code: str, attempt: int) -> Mapping[str, Any]:
        started = time.perf_counter()
        try:
            response = await self._http.get(
                self._url, params=self._params(js_code), timeout=self._timeout
            )
        except httpx.RequestError as exc:
            _log_attempt(type(exc).__name__, started, attempt)
            timeout = isinstance(exc, httpx.TimeoutException)
            self._observe(CallOutcome.TIMEOUT if timeout else CallOutcome.UNREACHABLE, started)
            # Not chained: the httpx error holds the request, whose URL holds the AppSecret.
            raise _transport_error(exc) from None
        _log_attempt(str(response.status_code), started, attempt)
        try:
            body = _json_object(response)
            errcode = _errcode(body)
        except WeChatError:
            failed = response.status_code >= 500
            self._observe(CallOutcome.SERVER_ERROR if failed else CallOutcome.BAD_RESPONSE, started)
            raise
        self._observe(_errcode_outcome(errcode), started)
        return body

    def _observe(self, outcome: CallOutcome, started: float) -> None:
        elapsed = time.perf_counter() - started
        self._metrics.upstream_call("wechat", CODE2SESSION_PATH, outcome, elapsed)

    def _params(self, js_code: str) -> dict[str, str]:
        return {
            "appid": self._app_id,
            "secret": self._app_secret.reveal(),
            "js_code": js_code,
            "grant_type": "authorization_code",
        }


def _errcode_outcome(errcode: int) -> CallOutcome:
    if errcode == 0:
        return CallOutcome.OK
    return CallOutcome.SERVER_ERROR if errcode == _BUSY else CallOutcome.REJECTED


def _log_attempt(status: str, started: float, attempt: int) -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000
    logger.info(
        "wechat GET %s status=%s elapsed_ms=%.0f attempt=%d",
        CODE2SESSION_PATH,
        status,
        elapsed_ms,
        attempt,
    )
