"""Simulated WeChat: jscode2session and wx.requestPayment."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from miniprogram_pay.sandbox import md5_pay_sign
from tests.sandbox.helpers import Harness, wx_params

APP = {"appid": "wxsandbox0000000001", "secret": "sandbox-app-secret"}


async def login(harness: Harness, code: str, **overrides: str) -> httpx.Response:
    params = {**APP, "js_code": code, "grant_type": "authorization_code", **overrides}
    return await harness.client.get("/wechat/sns/jscode2session", params=params)


def parsed(response: httpx.Response) -> dict[str, Any]:
    # WeChat's content type is text/plain: parse the text, as a client must.
    body: dict[str, Any] = json.loads(response.text)
    return body


async def test_a_login_answers_openid_and_session_key_as_text_plain(harness: Harness) -> None:
    response = await login(harness, "alice.1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = parsed(response)
    assert set(body) == {"openid", "session_key"}
    assert re.fullmatch(r"o[A-Za-z0-9_-]{27}", body["openid"])
    assert len(body["session_key"]) == 24


async def test_the_openid_is_stable_per_shopper(harness: Harness) -> None:
    first = parsed(await login(harness, "alice.1"))
    second = parsed(await login(harness, "alice.second-login"))
    bob = parsed(await login(harness, "bob.1"))
    assert first["openid"] == second["openid"] == harness.sandbox.openid_for("alice")
    assert bob["openid"] != first["openid"]
    assert first["session_key"] != second["session_key"]


async def test_a_code_without_a_dot_is_its_own_shopper(harness: Harness) -> None:
    body = parsed(await login(harness, "0a3bXk000"))
    assert body["openid"] == harness.sandbox.openid_for("0a3bXk000")


async def test_a_code_is_single_use(harness: Harness) -> None:
    await login(harness, "alice.1")
    body = parsed(await login(harness, "alice.1"))
    assert body["errcode"] == 40163
    assert body["errmsg"].startswith("code been used")


@pytest.mark.parametrize(
    ("code", "errcode"),
    [("invalid-x", 40029), ("ratelimit.1", 45011), ("blocked.1", 40226), ("", 41008)],
)
async def test_special_codes_give_wechats_errors(harness: Harness, code: str, errcode: int) -> None:
    response = await login(harness, code)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert parsed(response)["errcode"] == errcode
    # An error never uses the code up: the same answer comes again.
    assert parsed(await login(harness, code))["errcode"] == errcode


async def test_busy_fails_once_then_the_same_code_works(harness: Harness) -> None:
    first = parsed(await login(harness, "busy.1"))
    assert (first["errcode"], first["errmsg"].split(",")[0]) == (-1, "system error")
    assert "openid" in parsed(await login(harness, "busy.1"))
    assert parsed(await login(harness, "busy.1"))["errcode"] == 40163


@pytest.mark.parametrize(
    ("overrides", "errcode"),
    [
        ({"appid": "wxother"}, 40013),
        ({"secret": "wrong"}, 40125),
        ({"grant_type": "client_credential"}, 40002),
    ],
)
async def test_wrong_credentials(harness: Harness, overrides: dict[str, str], errcode: int) -> None:
    assert parsed(await login(harness, "alice.1", **overrides))["errcode"] == errcode
    # A refused call does not consume the code.
    assert "openid" in parsed(await login(harness, "alice.1"))


async def _wx(harness: Harness) -> dict[str, str]:
    return wx_params((await harness.post_payment()).json())


async def test_request_payment_ok(harness: Harness) -> None:
    params = await _wx(harness)
    response = await harness.client.post("/_sandbox/wechat/pay", json={**params, "outcome": "ok"})
    assert response.json() == {"errMsg": "requestPayment:ok"}
    [payment] = harness.sandbox.payments.values()
    assert payment.wechat_outcome == "requestPayment:ok"


@pytest.mark.parametrize(
    ("extra", "err_msg"),
    [
        ({"outcome": "cancel"}, "requestPayment:fail cancel"),
        ({"outcome": "fail"}, "requestPayment:fail insufficient balance"),
        ({"outcome": "fail", "reason": "card frozen"}, "requestPayment:fail card frozen"),
        ({}, "requestPayment:ok"),
    ],
)
async def test_request_payment_outcomes(
    harness: Harness, extra: dict[str, str], err_msg: str
) -> None:
    params = await _wx(harness)
    response = await harness.client.post("/_sandbox/wechat/pay", json={**params, **extra})
    assert response.json() == {"errMsg": err_msg}


async def test_a_wrong_pay_sign_is_refused_like_wechat(harness: Harness) -> None:
    params = await _wx(harness)
    tampered = {**params, "timeStamp": str(int(params["timeStamp"]) + 1)}
    response = await harness.client.post("/_sandbox/wechat/pay", json=tampered)
    assert response.json() == {"errMsg": "requestPayment:fail invalid paySign"}


async def test_hmac_sha256_signs_are_verified_too(harness: Harness) -> None:
    from miniprogram_pay.sandbox import hmac_sha256_pay_sign

    params = {**(await _wx(harness)), "signType": "HMAC-SHA256"}
    params["paySign"] = hmac_sha256_pay_sign(params, harness.sandbox.config.paysign_key)
    response = await harness.client.post("/_sandbox/wechat/pay", json=params)
    assert response.json() == {"errMsg": "requestPayment:ok"}


async def test_an_unknown_prepay_id_is_refused(harness: Harness) -> None:
    params = {**(await _wx(harness)), "package": "prepay_id=wx000"}
    params["paySign"] = md5_pay_sign(params, harness.sandbox.config.paysign_key)
    response = await harness.client.post("/_sandbox/wechat/pay", json=params)
    assert response.json() == {"errMsg": "requestPayment:fail prepay_id invalid"}


async def test_missing_parameters_are_named(harness: Harness) -> None:
    response = await harness.client.post("/_sandbox/wechat/pay", json={"outcome": "ok"})
    assert response.json()["errMsg"].startswith("requestPayment:fail parameter error")


@pytest.mark.parametrize("body", [b"[]", b"nope", b'{"outcome": "maybe"}'])
async def test_a_malformed_pay_request_is_400(harness: Harness, body: bytes) -> None:
    response = await harness.client.post("/_sandbox/wechat/pay", content=body)
    assert response.status_code == 400
