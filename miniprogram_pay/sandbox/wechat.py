"""Simulated WeChat: ``GET /wechat/sns/jscode2session`` and the client's wx.requestPayment.

Codes encode the shopper and the failure to simulate (see docs/sandbox.md):
``<shopper>.<anything>`` logs ``<shopper>`` in with a stable openid; prefixes
``invalid``, ``busy``, ``ratelimit`` and ``blocked`` produce WeChat's errors.
"""

from __future__ import annotations

import hmac
import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from miniprogram_pay.sandbox.ids import new_rid, new_session_key
from miniprogram_pay.sandbox.paysign import verify_pay_sign
from miniprogram_pay.sandbox.responses import json_bytes, json_response
from miniprogram_pay.sandbox.state import Sandbox

__all__ = ["wechat_routes"]

# errcode -> errmsg, as WeChat words them.
ERRORS: dict[int, str] = {
    -1: "system error",
    40002: "invalid grant_type",
    40013: "invalid appid",
    40029: "invalid code",
    40125: "invalid appsecret",
    40163: "code been used",
    40226: "high risk user",
    41008: "missing code",
    45011: "api minute-quota reach limit mustslower retry next minute",
}
# Prefixes that always fail (busy fails once per code, see _code_error).
_PREFIX_ERRORS = (("invalid", 40029), ("ratelimit", 45011), ("blocked", 40226))
PAY_OUTCOMES = ("ok", "cancel", "fail")
_PAY_PARAMS = ("appId", "timeStamp", "nonceStr", "package", "signType", "paySign")


def _wechat_text(body: dict[str, Any]) -> Response:
    # WeChat answers jscode2session as text/plain; clients must parse JSON regardless.
    return Response(json_bytes(body), media_type="text/plain")


def _wechat_error(errcode: int) -> Response:
    return _wechat_text({"errcode": errcode, "errmsg": f"{ERRORS[errcode]}, rid: {new_rid()}"})


class WeChatSimulator:
    """code2Session and requestPayment bound to one ``Sandbox``."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.config = sandbox.config

    async def jscode2session(self, request: Request) -> Response:
        query = request.query_params
        errcode = self._credentials_error(query.get("appid"), query.get("secret"))
        if errcode is None and query.get("grant_type") != "authorization_code":
            errcode = 40002
        code = query.get("js_code") or ""
        if errcode is None:
            errcode = self._code_error(code)
        if errcode is not None:
            return _wechat_error(errcode)
        self.sandbox.used_codes.add(code)
        shopper = code.split(".", 1)[0]
        openid = self.sandbox.openid_for(shopper)
        return _wechat_text({"openid": openid, "session_key": new_session_key()})

    def _credentials_error(self, appid: str | None, secret: str | None) -> int | None:
        if appid != self.config.wechat_app_id:
            return 40013
        received = (secret or "").encode("utf-8", "replace")
        if not hmac.compare_digest(received, self.config.wechat_app_secret.encode("utf-8")):
            return 40125
        return None

    def _code_error(self, code: str) -> int | None:
        if not code:
            return 41008
        for prefix, errcode in _PREFIX_ERRORS:
            if code.startswith(prefix):
                return errcode
        if code in self.sandbox.used_codes:
            return 40163
        if code.startswith("busy") and code not in self.sandbox.busy_codes:
            # WeChat's -1 is transient: the same (unused) code works on the retry.
            self.sandbox.busy_codes.add(code)
            return -1
        return None

    async def request_payment(self, request: Request) -> Response:
        """What wx.requestPayment does at WeChat: check paySign, then the shopper's choice."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("outcome", "ok") not in PAY_OUTCOMES:
            return json_response(
                {"error": f"send a JSON object; outcome one of {PAY_OUTCOMES}"}, 400
            )
        return json_response({"errMsg": await self._pay(body)})

    async def _pay(self, body: dict[str, Any]) -> str:
        params = {name: str(body.get(name, "")) for name in _PAY_PARAMS}
        missing = [name for name, value in params.items() if not value]
        if missing:
            return f"requestPayment:fail parameter error: {', '.join(missing)} missing"
        if not verify_pay_sign(params, self.config.paysign_key):
            return "requestPayment:fail invalid paySign"
        payment = self.sandbox.payment_by_prepay_id(params["package"].removeprefix("prepay_id="))
        if payment is None:
            return "requestPayment:fail prepay_id invalid"
        outcome = body.get("outcome", "ok")
        if outcome == "ok":
            err_msg = "requestPayment:ok"
        elif outcome == "cancel":
            err_msg = "requestPayment:fail cancel"
        else:
            err_msg = f"requestPayment:fail {body.get('reason') or 'insufficient balance'}"
        payment.wechat_outcome = err_msg
        payment.wechat_at = datetime.now(UTC).isoformat()
        if not payment.payment_data_sent:
            # WeChat tells Adyen; no /payments/details call could name this payment.
            await self.sandbox.settle(payment, err_msg)
        return err_msg


def wechat_routes(sandbox: Sandbox) -> list[Route]:
    """``/wechat/sns/jscode2session`` and ``/_sandbox/wechat/pay``."""
    simulator = WeChatSimulator(sandbox)
    return [
        Route("/wechat/sns/jscode2session", simulator.jscode2session, methods=["GET"]),
        Route("/_sandbox/wechat/pay", simulator.request_payment, methods=["POST"]),
    ]
