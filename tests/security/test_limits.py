"""Body size and per-client rate limits."""

from __future__ import annotations

import json

import pytest

from tests.security.helpers import SecurityWorld, assert_error, security_world


async def test_the_rate_limit_is_off_by_default(world: SecurityWorld) -> None:
    assert world.settings.rate_limit_per_minute == 0
    for n in range(30):
        response = await world.client.post("/pay/session", json={"code": f"alice.{n}"})
        assert response.status_code == 200


async def test_session_and_payments_are_limited_per_client(db_url: str) -> None:
    async with security_world(db_url, rate_limit_per_minute=3) as world:
        now = [1000.0]
        world.pay.limiter._clock = lambda: now[0]
        world.pay.limiter._window_start = now[0]
        for n in range(3):
            assert (
                await world.client.post("/pay/session", json={"code": f"a.{n}"})
            ).status_code == 200
        before = await world.snapshot()
        wechat_calls = len(world.transport.to("/wechat/"))
        limited = await world.client.post("/pay/session", json={"code": "a.9"})
        error = assert_error(limited, 429, "rate_limited")
        assert error["retryable"] is True
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert len(world.transport.to("/wechat/")) == wechat_calls  # WeChat was not asked

        # /payments has its own budget, shared by /payments/details.
        shopper = {"Authorization": "Bearer " + world.pay.tokens.issue("oAlice0123456789")[0]}
        assert (await world.pay_order(shopper, "order-1")).status_code == 200
        assert (await world.details(shopper, "order-1")).status_code == 200
        assert (await world.pay_order(shopper, "order-1")).status_code == 200
        limited = await world.pay_order(shopper, "order-2")
        assert_error(limited, 429, "rate_limited")
        assert "retry-after" in limited.headers
        assert "order-2" not in json.dumps((await world.snapshot())["mpp_payment"])
        assert before["mpp_payment"] == []

        # Another client has its own budget.
        async with world.client_from("10.0.0.2") as other:
            assert (await other.post("/pay/session", json={"code": "b.1"})).status_code == 200

        # The next window lets the first client in again.
        now[0] += 61
        assert (await world.client.post("/pay/session", json={"code": "a.10"})).status_code == 200


async def test_the_rate_limit_counts_refused_requests_too(db_url: str) -> None:
    # A flood of garbage must not be free: the limit comes before any parsing.
    async with security_world(db_url, rate_limit_per_minute=2) as world:
        for _ in range(2):
            response = await world.client.post("/pay/session", content=b"garbage")
            assert_error(response, 415)
        response = await world.client.post("/pay/session", json={"code": "a.1"})
        assert_error(response, 429, "rate_limited")


async def test_unauthenticated_payments_do_not_spend_a_shoppers_budget(db_url: str) -> None:
    async with security_world(db_url, rate_limit_per_minute=1) as world:
        for _ in range(5):
            response = await world.client.post("/pay/payments", json={})
            assert_error(response, 401, "unauthenticated")
        shopper = await world.login()
        assert (await world.pay_order(shopper, "order-1")).status_code == 200


@pytest.mark.parametrize(("size", "status"), [(1024, 400), (1025, 413)])
async def test_max_body_bytes_is_the_limit(db_url: str, size: int, status: int) -> None:
    async with security_world(db_url, max_body_bytes=1024) as world:
        body = b'{"code": "' + b"a" * (size - 12) + b'"}'
        assert len(body) == size
        response = await world.client.post(
            "/pay/session", content=body, headers={"Content-Type": "application/json"}
        )
        assert_error(response, status, "invalid_code" if status == 400 else "payload_too_large")
