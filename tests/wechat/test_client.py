from __future__ import annotations

import json
import logging
import traceback
from typing import Any

import httpx
import pytest

from miniprogram_pay.config import Secret, Settings
from miniprogram_pay.errors import InvalidRequestError, WeChatError
from miniprogram_pay.wechat.client import WeChatClient, WeChatSession
from tests.fakes import ScriptedServer, Sleeper, Step

APP_ID = "wx1234567890abcdef"
APP_SECRET = "app-secret-0123456789abcdef"
SESSION_KEY = "tiihtNczf5v6AKRyjwEUhQ=="
JS_CODE = "061Xw1Ga1ZSmYH0bCTFa1vgnkb2Xw1GJ"
BASE = "https://api.weixin.qq.com"


class FakeWeChat(ScriptedServer):
    """Answers the queued steps in order, then repeats the last one."""


def make_client(
    fake: FakeWeChat, *, busy_retries: int = 1, sleeper: Sleeper | None = None
) -> WeChatClient:
    return WeChatClient(
        base_url=BASE + "/",
        app_id=APP_ID,
        app_secret=Secret(APP_SECRET),
        http=httpx.AsyncClient(transport=httpx.MockTransport(fake)),
        busy_retries=busy_retries,
        sleep=sleeper or Sleeper(),
    )


def text_plain(payload: Any) -> httpx.Response:
    # WeChat labels its JSON as text/plain.
    return httpx.Response(
        200, content=json.dumps(payload).encode(), headers={"Content-Type": "text/plain"}
    )


def session_body(**extra: Any) -> dict[str, Any]:
    return {"openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "session_key": SESSION_KEY, **extra}


def errcode(code: int) -> httpx.Response:
    return text_plain({"errcode": code, "errmsg": f"error {JS_CODE} {APP_SECRET}"})


async def test_success_sends_the_documented_query() -> None:
    fake = FakeWeChat(text_plain(session_body(unionid="o6_bmasdasdsad6_2sgVt7hMZOPfL")))
    session = await make_client(fake).code_to_session(JS_CODE)
    assert session == WeChatSession(
        openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        session_key=Secret(SESSION_KEY),
        unionid="o6_bmasdasdsad6_2sgVt7hMZOPfL",
    )
    assert session.session_key.reveal() == SESSION_KEY
    (request,) = fake.requests
    assert request.method == "GET"
    assert request.url.path == "/sns/jscode2session"
    assert dict(request.url.params) == {
        "appid": APP_ID,
        "secret": APP_SECRET,
        "js_code": JS_CODE,
        "grant_type": "authorization_code",
    }


async def test_json_content_type_and_errcode_zero_work_too() -> None:
    fake = FakeWeChat(httpx.Response(200, json=session_body(errcode=0, errmsg="ok")))
    session = await make_client(fake).code_to_session(JS_CODE)
    assert session.unionid is None


def test_session_key_never_prints() -> None:
    session = WeChatSession(openid="o", session_key=Secret(SESSION_KEY), unionid=None)
    assert SESSION_KEY not in repr(session) and SESSION_KEY not in str(session)


@pytest.mark.parametrize(
    ("code", "expected", "status", "retry_after"),
    [
        (40029, "wechat_invalid_code", 400, None),
        (40163, "wechat_code_used", 400, None),
        (45011, "wechat_rate_limited", 429, 60),
        (40226, "wechat_user_blocked", 403, None),
        (40013, "wechat_error", 502, None),
        (99999, "wechat_error", 502, None),
    ],
)
async def test_errcode_mapping(
    code: int, expected: str, status: int, retry_after: int | None
) -> None:
    fake = FakeWeChat(errcode(code), text_plain(session_body()))
    with pytest.raises(WeChatError) as info:
        await make_client(fake).code_to_session(JS_CODE)
    error = info.value
    assert (error.code, error.status, error.errcode) == (expected, status, code)
    assert error.retry_after_seconds == retry_after
    assert fake.calls == 1


async def test_busy_is_retried_then_succeeds() -> None:
    sleeper = Sleeper()
    fake = FakeWeChat(errcode(-1), text_plain(session_body()))
    session = await make_client(fake, sleeper=sleeper).code_to_session(JS_CODE)
    assert session.openid.startswith("oUpF")
    assert fake.calls == 2
    assert len(sleeper.delays) == 1


@pytest.mark.parametrize("busy_retries", [0, 1, 3])
async def test_busy_retries_are_bounded(busy_retries: int) -> None:
    sleeper = Sleeper()
    fake = FakeWeChat(errcode(-1))
    with pytest.raises(WeChatError) as info:
        await make_client(fake, busy_retries=busy_retries, sleeper=sleeper).code_to_session(JS_CODE)
    assert (info.value.code, info.value.status, info.value.errcode) == ("wechat_busy", 502, -1)
    assert fake.calls == busy_retries + 1
    assert len(sleeper.delays) == busy_retries


@pytest.mark.parametrize(
    ("step", "status"),
    [
        (httpx.ConnectTimeout("timed out"), 504),
        (httpx.ReadTimeout("timed out"), 504),
        (httpx.ConnectError("refused"), 502),
        (httpx.Response(500), 502),
        (httpx.Response(503, text="busy"), 502),
    ],
)
async def test_unavailable(step: Step, status: int) -> None:
    fake = FakeWeChat(step)
    with pytest.raises(WeChatError) as info:
        await make_client(fake).code_to_session(JS_CODE)
    assert (info.value.code, info.value.status) == ("wechat_unavailable", status)
    assert info.value.retryable
    assert fake.calls == 1


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>oops</html>"),
        httpx.Response(200, content=b"\xff\xfe"),
        httpx.Response(200, text=""),
        text_plain([session_body()]),
        text_plain({"session_key": SESSION_KEY}),
        text_plain({"openid": "", "session_key": SESSION_KEY}),
        text_plain({"openid": 5, "session_key": SESSION_KEY}),
        text_plain({"openid": "o"}),
        text_plain(session_body(unionid=7)),
        text_plain({"errcode": "40029"}),
        text_plain({"errcode": True}),
        httpx.Response(404, text="not found"),
    ],
)
async def test_bad_response(response: httpx.Response) -> None:
    with pytest.raises(WeChatError) as info:
        await make_client(FakeWeChat(response)).code_to_session(JS_CODE)
    assert (info.value.code, info.value.status) == ("wechat_bad_response", 502)


@pytest.mark.parametrize(
    "js_code", ["", "x" * 129, "has space", "tab\tcode", "ünïcode", "new\nline"]
)
async def test_invalid_code_is_rejected_before_calling(js_code: str) -> None:
    fake = FakeWeChat(text_plain(session_body()))
    with pytest.raises(InvalidRequestError) as info:
        await make_client(fake).code_to_session(js_code)
    assert (info.value.code, info.value.status) == ("invalid_code", 400)
    assert fake.calls == 0
    assert js_code not in info.value.message or js_code == ""


async def test_128_char_code_is_accepted() -> None:
    fake = FakeWeChat(text_plain(session_body()))
    await make_client(fake).code_to_session("a" * 128)
    assert fake.calls == 1


@pytest.mark.parametrize(
    "step",
    [
        errcode(40029),
        errcode(-1),
        errcode(12345),
        httpx.ReadTimeout(f"timed out {APP_SECRET}"),
        httpx.ConnectError(f"refused {APP_SECRET}"),
        httpx.Response(500, text=APP_SECRET),
        httpx.Response(200, text=f"not json {APP_SECRET} {JS_CODE} {SESSION_KEY}"),
        text_plain({"session_key": SESSION_KEY, "secret": APP_SECRET}),
    ],
)
async def test_errors_and_logs_never_contain_secrets(
    step: Step, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_client(FakeWeChat(step), busy_retries=0)
    with caplog.at_level(logging.DEBUG), pytest.raises(WeChatError) as info:
        await client.code_to_session(JS_CODE)
    rendered = "".join(
        [
            str(info.value),
            repr(info.value),
            json.dumps(info.value.to_dict()),
            "".join(traceback.format_exception(info.value)),
            repr(client),
            caplog.text,
        ]
    )
    for secret in (APP_SECRET, JS_CODE, SESSION_KEY):
        assert secret not in rendered


async def test_logs_one_line_per_attempt_and_redacts_httpx(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeWeChat(errcode(-1), text_plain(session_body()))
    with caplog.at_level(logging.INFO):
        await make_client(fake).code_to_session(JS_CODE)
    ours = [r.getMessage() for r in caplog.records if r.name == "miniprogram_pay.wechat"]
    assert len(ours) == 2
    assert "attempt=1" in ours[0] and "attempt=2" in ours[1]
    assert "/sns/jscode2session" in ours[0] and "status=200" in ours[0]
    httpx_lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert httpx_lines, "httpx logs each request at INFO"
    assert all("REDACTED" in line for line in httpx_lines)
    assert APP_SECRET not in caplog.text and JS_CODE not in caplog.text


def test_from_settings() -> None:
    settings = Settings(
        adyen_api_key=Secret("AQE-key"),
        adyen_merchant_account="TestMerchant",
        adyen_hmac_keys=(
            Secret("44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"),
        ),
        adyen_return_url="https://shop.example/return",
        webhook_username=Secret("adyen"),
        webhook_password=Secret("pw"),
        wechat_app_id=APP_ID,
        wechat_app_secret=Secret(APP_SECRET),
        session_secret=Secret("0123456789abcdef0123456789abcdef"),
        wechat_api_url="https://wechat.example/",
    )
    client = WeChatClient.from_settings(settings, httpx.AsyncClient())
    assert client._url == "https://wechat.example/sns/jscode2session"
    assert client._app_secret.reveal() == APP_SECRET
    assert APP_SECRET not in repr(client)
