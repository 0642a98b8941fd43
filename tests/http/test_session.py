"""POST /pay/session: a wx.login() jsCode for a shopper token, and every way it fails."""

from __future__ import annotations

import pytest

from miniprogram_pay.sandbox import SandboxConfig
from tests.http.helpers import HostKind, error_code, host_world
from tests.world import MERCHANT_BASE

SECRET_WORDS = ("session_key", "openid", "unionid", "secret", "sandbox-app-secret")


@pytest.mark.parametrize("kind", ["starlette", "fastapi"])
async def test_a_code_becomes_a_token_and_nothing_else(db_url: str, kind: HostKind) -> None:
    async with host_world(db_url, kind=kind) as w:
        r = await w.client.post("/pay/session", json={"code": "alice.1"})
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"token", "expires_in"}
        assert body["expires_in"] == w.settings.session_ttl_seconds
        openid = w.sandbox.openid_for("alice")
        assert openid not in r.text and openid not in body["token"]
        for word in SECRET_WORDS:
            assert word not in r.text


async def test_the_same_shopper_keeps_one_openid_across_logins(db_url: str) -> None:
    async with host_world(db_url) as w:
        first = await w.login("alice")
        assert (await w.pay_order(first, "order-same")).status_code == 200
        second, bob = await w.login("alice"), await w.login("bob")
        assert second != first  # a fresh token for the same shopper sees the payment
        r = await w.client.get("/pay/payments/order-same", headers=second)
        assert r.status_code == 200
        r = await w.client.get("/pay/payments/order-same", headers=bob)
        assert r.status_code == 404


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("invalid.1", 400, "wechat_invalid_code"),
        ("ratelimit.1", 429, "wechat_rate_limited"),
        ("blocked.1", 403, "wechat_user_blocked"),
    ],
)
async def test_wechat_errors_map_to_statuses(
    db_url: str, code: str, status: int, expected: str
) -> None:
    async with host_world(db_url) as w:
        r = await w.client.post("/pay/session", json={"code": code})
        assert r.status_code == status
        assert error_code(r) == expected
        if status == 429:
            assert int(r.headers["retry-after"]) > 0
        assert "sandbox-app-secret" not in r.text


async def test_a_reused_code_is_refused(db_url: str) -> None:
    async with host_world(db_url) as w:
        assert (await w.client.post("/pay/session", json={"code": "bob.7"})).status_code == 200
        r = await w.client.post("/pay/session", json={"code": "bob.7"})
        assert r.status_code == 400
        assert error_code(r) == "wechat_code_used"


async def test_wechat_busy_once_is_retried_transparently(db_url: str) -> None:
    async with host_world(db_url) as w:
        r = await w.client.post("/pay/session", json={"code": "busy.1"})
        assert r.status_code == 200, r.text


async def test_wechat_down_is_502(db_url: str) -> None:
    async with host_world(db_url, wechat_down=True) as w:
        r = await w.client.post("/pay/session", json={"code": "alice.1"})
        assert r.status_code == 502
        assert error_code(r) == "wechat_unavailable"
        assert "sandbox-app-secret" not in r.text


async def test_wrong_app_secret_is_an_upstream_error_not_a_leak(db_url: str) -> None:
    config = SandboxConfig(webhook_url=f"{MERCHANT_BASE}/pay/webhooks/adyen")
    async with host_world(db_url, config=config, wechat_app_secret="not-the-secret") as w:
        r = await w.client.post("/pay/session", json={"code": "alice.1"})
        assert r.status_code == 502
        assert error_code(r) == "wechat_error"
        assert "not-the-secret" not in r.text


@pytest.mark.parametrize(
    ("kwargs", "status", "expected"),
    [
        ({"json": {}}, 400, "missing_code"),
        ({"json": {"code": ""}}, 400, "missing_code"),
        ({"json": {"code": 42}}, 400, "missing_code"),
        ({"json": {"code": "ü.1"}}, 400, "invalid_code"),
        ({"json": {"code": "x" * 129}}, 400, "invalid_code"),
        ({"json": ["alice.1"]}, 400, "malformed_json"),
        (
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            {"content": b'{"code": NaN}', "headers": {"content-type": "application/json"}},
            400,
            "malformed_json",
        ),
        (
            {"content": b"code=alice.1", "headers": {"content-type": "text/plain"}},
            415,
            "unsupported_media_type",
        ),
        ({"json": {"code": "a" * 70_000}}, 413, "payload_too_large"),
    ],
)
async def test_bad_bodies_are_4xx_json(
    db_url: str, kwargs: dict[str, object], status: int, expected: str
) -> None:
    async with host_world(db_url) as w:
        r = await w.client.post("/pay/session", **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, r.text
        assert error_code(r) == expected
        assert w.sandbox.used_codes == set()


async def test_deeply_nested_json_is_refused(db_url: str) -> None:
    async with host_world(db_url) as w:
        nested: object = "x"
        for _ in range(40):
            nested = {"a": nested}
        r = await w.client.post("/pay/session", json={"code": "alice.1", "n": nested})
        assert r.status_code == 400
        assert error_code(r) == "malformed_json"


async def test_rate_limit_is_429_with_retry_after(db_url: str) -> None:
    async with host_world(db_url, rate_limit_per_minute=2) as w:
        for n in range(2):
            r = await w.client.post("/pay/session", json={"code": f"alice.{n}"})
            assert r.status_code == 200
        r = await w.client.post("/pay/session", json={"code": "alice.9"})
        assert r.status_code == 429
        assert error_code(r) == "rate_limited"
        assert r.json()["error"]["retryable"] is True
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert "alice.9" not in w.sandbox.used_codes
