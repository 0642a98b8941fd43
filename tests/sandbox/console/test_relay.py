"""The console's wx.request relay: sent as WeChat's client sends it, recorded, for the page only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from miniprogram_pay.sandbox import SandboxConfig, create_sandbox_app
from miniprogram_pay.sandbox.console import Console

CONSOLE = {"X-Sandbox-Console": "1"}
MERCHANT = "http://merchant.test/pay"


@dataclass
class Merchant:
    """A host that answers like the plugin and remembers what it was sent."""

    seen: list[dict[str, Any]] = field(default_factory=list)

    async def endpoint(self, request: Request) -> Response:
        self.seen.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "body": (await request.body()).decode(),
            }
        )
        if request.url.path.endswith("/text"):
            return PlainTextResponse("[accepted]")
        return JSONResponse({"token": "tok-0123456789abcdef", "expires_in": 7200}, status_code=200)

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/pay/{rest:path}", self.endpoint, methods=["GET", "POST"])])


@dataclass
class Parts:
    client: httpx.AsyncClient
    merchant: Merchant
    console: Console


@pytest.fixture
async def parts() -> AsyncIterator[Parts]:
    merchant = Merchant()
    outbound = httpx.AsyncClient(transport=httpx.ASGITransport(app=merchant.app()))
    app = create_sandbox_app(SandboxConfig(), webhook_client=outbound)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        yield Parts(client, merchant, app.state.console)
    await app.state.sandbox.aclose()
    await outbound.aclose()


async def relay(parts: Parts, body: object, headers: dict[str, str] = CONSOLE) -> httpx.Response:
    return await parts.client.post("/_sandbox/console/relay", json=body, headers=headers)


async def test_a_post_goes_to_the_merchant_as_wechat_sends_it(parts: Parts) -> None:
    answer = await relay(
        parts,
        {
            "run": "r1",
            "url": f"{MERCHANT}/session",
            "method": "POST",
            "header": {"content-type": "application/json", "Cookie": "browser=1"},
            "data": {"code": "alice.1"},
        },
        headers={**CONSOLE, "Cookie": "sandbox=1"},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert (body["statusCode"], body["errMsg"]) == (200, "request:ok")
    assert body["data"] == {"token": "tok-0123456789abcdef", "expires_in": 7200}
    assert body["header"]["content-type"] == "application/json"
    [seen] = parts.merchant.seen
    assert (seen["method"], seen["path"], seen["body"]) == (
        "POST",
        "/pay/session",
        '{"code": "alice.1"}',
    )
    assert (
        seen["headers"]["referer"]
        == "https://servicewechat.com/wxsandbox0000000001/devtools/page-frame.html"
    )
    assert "wx.request" in seen["headers"]["user-agent"]
    assert "cookie" not in seen["headers"]  # neither the browser's nor the page's


async def test_get_data_becomes_the_query_and_text_answers_stay_text(parts: Parts) -> None:
    body = (
        await relay(
            parts, {"run": "r1", "url": f"{MERCHANT}/text", "data": {"status": "failed", "n": 2}}
        )
    ).json()
    assert body["data"] == "[accepted]"
    assert parts.merchant.seen[0]["query"] == {"status": "failed", "n": "2"}
    assert parts.merchant.seen[0]["method"] == "GET"


async def test_records_mask_tokens_and_belong_to_their_run(parts: Parts) -> None:
    authorization = {"Authorization": "Bearer tok-0123456789abcdef"}
    await relay(parts, {"run": "r1", "url": f"{MERCHANT}/session", "method": "POST", "data": {}})
    await relay(parts, {"run": "r2", "url": f"{MERCHANT}/payments", "header": authorization})
    [first] = [r.to_dict() for r in parts.console.relay.of_run("r1")]
    assert first["answer"]["token"] == "...cdef"
    assert (first["path"], first["statusCode"]) == ("/pay/session", 200)
    assert first["answeredAt"] and first["milliseconds"] is not None
    [second] = [r.to_dict() for r in parts.console.relay.of_run("r2")]
    assert second["header"]["Authorization"] == "Bearer ...cdef"
    assert "0123456789abcdef" not in str(first) + str(second)
    # The request itself still went out with the real token.
    assert parts.merchant.seen[1]["headers"]["authorization"] == "Bearer tok-0123456789abcdef"


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ({}, {"run": "r", "url": f"{MERCHANT}/session"}),  # not the console page
        ({**CONSOLE, "Sec-Fetch-Site": "cross-site"}, {"run": "r", "url": f"{MERCHANT}/session"}),
        (CONSOLE, {"run": "r", "url": "file:///etc/passwd"}),
        (CONSOLE, {"run": "r", "url": "http:///no-host"}),
        (CONSOLE, {"run": "r", "url": f"{MERCHANT}/session", "method": "TRACE"}),
        (CONSOLE, {"url": f"{MERCHANT}/session"}),
        (CONSOLE, {"run": "r", "url": f"{MERCHANT}/session", "header": {"x": 1}}),
        (CONSOLE, [1]),
    ],
)
async def test_what_wx_request_could_not_send_is_refused_and_not_sent(
    parts: Parts, headers: dict[str, str], body: object
) -> None:
    answer = await relay(parts, body, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert parts.merchant.seen == []
    assert list(parts.console.relay.records) == []


async def test_an_unreachable_merchant_is_a_request_fail() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    outbound = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    app = create_sandbox_app(SandboxConfig(), webhook_client=outbound)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as client:
        answer = await client.post(
            "/_sandbox/console/relay",
            json={"run": "r", "url": f"{MERCHANT}/session", "method": "POST", "data": {}},
            headers=CONSOLE,
        )
    await outbound.aclose()
    assert answer.json() == {"errMsg": "request:fail ConnectError"}
    [record] = app.state.console.relay.records
    assert (record.status_code, record.error) == (None, "request:fail ConnectError")
