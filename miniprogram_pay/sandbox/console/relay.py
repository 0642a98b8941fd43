"""The console's ``wx.request``: the page's requests to the merchant, sent from the sandbox.

A Mini Program's ``wx.request`` is WeChat's own HTTP client, not a browser
``fetch``: no CORS, no cookies, a ``servicewechat.com`` Referer. The console
page hands each request to this relay, which sends it to the merchant the same
way and gives back what ``wx.request`` would (``{statusCode, data, header}`` or
``{errMsg: "request:fail ..."}``). So the console drives any host without the
host allowing a browser origin, which a merchant should not do for a payment
API. Every exchange is recorded (tokens masked) for the console's timeline.

The relay only answers the console page itself: a request must carry the
``X-Sandbox-Console`` header, which a page of another origin cannot send without
a CORS preflight that the sandbox never grants.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

__all__ = ["CONSOLE_HEADER", "Origin", "Relay", "RelayError", "RelayRecord", "mask_secrets"]

CONSOLE_HEADER = "X-Sandbox-Console"
METHODS = ("GET", "POST", "PUT", "DELETE")
# Never passed on: the sandbox's own connection and the browser's identity are not the shopper's.
_DROPPED_HEADERS = frozenset(
    {"host", "cookie", "content-length", "connection", "transfer-encoding", "origin", "referer"}
)
USER_AGENT = "miniprogram-pay sandbox console (wx.request)"
BACK_OFFICE_AGENT = "miniprogram-pay sandbox console (back office)"
TIMEOUT_SECONDS = 30.0  # wx.request's default is 60 s; a local host answers far sooner
KEPT_RECORDS = 2000
MASKED_FIELDS = ("token", "sessionKey", "session_key")


# Who sent it: the shopper's Mini Program, or the merchant's back office (the console's refunds).
Origin = Literal["shopper", "merchant"]


class RelayError(ValueError):
    """A relay request that is not one ``wx.request`` could make."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _mask(value: str) -> str:
    return f"...{value[-4:]}" if len(value) > 12 else "..."


def mask_secrets(value: Any) -> Any:
    """``value`` with session tokens shortened to their last 4 characters."""
    if isinstance(value, dict):
        return {
            key: _mask(item) if key in MASKED_FIELDS and isinstance(item, str) else item
            for key, item in value.items()
        }
    return value


def _masked_headers(headers: dict[str, str]) -> dict[str, str]:
    shown = dict(headers)
    for name, value in headers.items():
        if name.lower() == "authorization":
            scheme, _, token = value.partition(" ")
            shown[name] = f"{scheme} {_mask(token)}"
    return shown


@dataclass(slots=True)
class RelayRecord:
    """One ``wx.request`` of a console run and its answer."""

    id: int
    run: str
    at: str
    method: str
    url: str
    header: dict[str, str]
    data: Any
    status_code: int | None = None
    answer: Any = None
    error: str | None = None
    answered_at: str | None = None
    milliseconds: float | None = None
    origin: Origin = "shopper"

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run": self.run,
            "at": self.at,
            "method": self.method,
            "url": self.url,
            "path": self.path,
            "header": _masked_headers(self.header),
            "data": mask_secrets(self.data),
            "statusCode": self.status_code,
            "answer": mask_secrets(self.answer),
            "error": self.error,
            "answeredAt": self.answered_at,
            "milliseconds": self.milliseconds,
            "origin": self.origin,
        }


@dataclass(frozen=True, slots=True)
class WxRequest:
    run: str
    url: str
    method: str
    header: dict[str, str]
    data: Any


def parse_request(body: Any) -> WxRequest:
    """Check a relay body: ``{run, url, method?, header?, data?}``, as ``wx.request`` takes."""
    if not isinstance(body, dict):
        raise RelayError("send a JSON object: {run, url, method, header, data}")
    run, url = body.get("run"), body.get("url")
    method = str(body.get("method") or "GET").upper()
    header = body.get("header") or {}
    if not isinstance(run, str) or not run or len(run) > 64:
        raise RelayError("run must be a string of 1 to 64 characters")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise RelayError("url must be an http:// or https:// URL")
    if not urlsplit(url).netloc:
        raise RelayError("url must name a host")
    if method not in METHODS:
        raise RelayError(f"method must be one of {METHODS}")
    if not isinstance(header, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in header.items()
    ):
        raise RelayError("header must be an object of strings")
    return WxRequest(run, url, method, header, body.get("data"))


def _answer_data(response: httpx.Response) -> Any:
    # wx.request with dataType "json" (the default) parses the body when it can.
    try:
        return response.json()
    except ValueError:
        return response.text


class Relay:
    """Sends ``wx.request`` calls for console runs and keeps the latest ``KEPT_RECORDS``."""

    def __init__(self, *, app_id: str, client: httpx.AsyncClient | None = None) -> None:
        self._app_id = app_id
        self._client = client
        self._owns_client = client is None
        self.records: deque[RelayRecord] = deque(maxlen=KEPT_RECORDS)
        self._next_id = 1

    def of_run(self, run: str) -> list[RelayRecord]:
        return [record for record in self.records if record.run == run]

    async def send(
        self,
        request: WxRequest,
        *,
        origin: Origin = "shopper",
        secret_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """What ``wx.request`` hands its ``success`` (or ``fail``) callback.

        ``secret_headers`` (the merchant's admin key) are sent and never recorded.
        """
        record = RelayRecord(
            self._next_id, request.run, _now(), request.method, request.url, request.header,
            request.data, origin=origin,
        )  # fmt: skip
        self._next_id += 1
        self.records.append(record)
        started = time.monotonic()
        payload = self._payload(request, origin)
        payload["headers"].update(secret_headers or {})
        try:
            response = await self._http().request(
                request.method, request.url, timeout=TIMEOUT_SECONDS, **payload
            )
        except httpx.HTTPError as exc:
            record.error = f"request:fail {type(exc).__name__}"
            record.answered_at = _now()
            return {"errMsg": record.error}
        record.milliseconds = round((time.monotonic() - started) * 1000, 1)
        record.status_code = response.status_code
        record.answer = _answer_data(response)
        record.answered_at = _now()
        return {
            "statusCode": response.status_code,
            "data": record.answer,
            "header": dict(response.headers),
            "errMsg": "request:ok",
        }

    def _payload(self, request: WxRequest, origin: Origin) -> dict[str, Any]:
        headers = {
            name: value
            for name, value in request.header.items()
            if name.lower() not in _DROPPED_HEADERS
        }
        headers["User-Agent"] = USER_AGENT if origin == "shopper" else BACK_OFFICE_AGENT
        if origin == "shopper":
            # What WeChat's client sends with every wx.request of a Mini Program in development.
            referer = f"https://servicewechat.com/{self._app_id}/devtools/page-frame.html"
            headers["Referer"] = referer
        payload: dict[str, Any] = {"headers": headers}
        if request.data is None:
            return payload
        if request.method == "GET" and isinstance(request.data, dict):
            # wx.request turns GET data into the query string.
            payload["params"] = {k: str(v) for k, v in request.data.items()}
        else:
            if not any(name.lower() == "content-type" for name in headers):
                headers["content-type"] = "application/json"
            payload["content"] = json.dumps(request.data).encode()
        return payload

    def _http(self) -> httpx.AsyncClient:
        # Lazy, like the webhook sender's: a mounted app's lifespan may never run.
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def get_json(self, url: str, headers: dict[str, str]) -> tuple[int | None, Any]:
        """A GET of the console's own (the host's payment view): status and body, or (None, why)."""
        try:
            response = await self._http().get(url, headers=headers, timeout=TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: the host did not answer"
        return response.status_code, _answer_data(response)

    async def aclose(self) -> None:
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
