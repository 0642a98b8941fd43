"""A PSP that times out, fails or talks nonsense; WeChat down; the database locked.

The API answers a clear error (retryable ones say so), a payment never claims
what is not known (a /payments that timed out stays Created, never Error), a
retry reuses the Idempotency-Key so Adyen makes one payment, and nothing is
half-written.
"""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, contextmanager

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

import miniprogram_pay.storage.engine as engine
from miniprogram_pay import create_app
from miniprogram_pay.sandbox import SandboxConfig
from tests.security.helpers import Exchange, SecurityWorld, assert_error, security_world
from tests.world import ADMIN_KEY, basic_auth, notification_body, notification_item, settings_for

# No webhooks: what a failed call did to a payment is not hidden by a later webhook.
QUIET = SandboxConfig(timeout_fault_seconds=5.0)


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[SecurityWorld]:
    async with security_world(
        db_url, config=QUIET, adyen_timeout_seconds=0.2, adyen_max_retries=1
    ) as w:
        yield w


def payment_keys(world: SecurityWorld, reference: str) -> list[str | None]:
    """The Idempotency-Key of every /payments attempt the plugin made for ``reference``."""
    return [
        e.headers.get("idempotency-key")
        for e in world.transport.to("/payments")
        if not e.url.endswith("/details")
        and f'"reference":"{reference}"' in e.request_body.decode()
    ]


def sandbox_payments(world: SecurityWorld, reference: str) -> int:
    return sum(p.merchant_reference == reference for p in world.sandbox.payments.values())


@pytest.mark.parametrize(
    ("kind", "processed", "status", "code"),
    [
        ("timeout", True, 504, "adyen_timeout"),
        ("500", True, 503, "adyen_unavailable"),
        ("503", False, 503, "adyen_unavailable"),
        ("garbage", True, 502, "adyen_bad_response"),
    ],
)
async def test_an_unknown_outcome_keeps_created_and_the_retry_pays_once(
    world: SecurityWorld, kind: str, processed: bool, status: int, code: str
) -> None:
    attempts = 2 if kind != "garbage" else 1  # garbage is a 2xx: not retried in the client
    world.sandbox.inject_fault(kind, count=attempts, target="payments", processed=processed)  # type: ignore[arg-type]
    shopper = await world.login()
    response = await world.pay_order(shopper, f"order-{kind}")
    error = assert_error(response, status, code)
    assert error["retryable"] is True
    state = await world.status(f"order-{kind}")
    assert (state["state"], state["resultCode"]) == ("Created", None)
    assert [t["to"] for t in state["history"]] == ["Created"]

    retry = await world.pay_order(shopper, f"order-{kind}")
    assert retry.status_code == 200, retry.text
    assert retry.json()["state"] == "Pending" and retry.json()["redirect"]["data"]["paySign"]
    keys = payment_keys(world, f"order-{kind}")
    assert len(keys) == attempts + 1 and len(set(keys)) == 1 and keys[0]
    assert sandbox_payments(world, f"order-{kind}") == 1


@pytest.mark.parametrize(
    ("kind", "code", "final"),
    [("401", "adyen_auth_failed", "Created"), ("422", "adyen_rejected", "Error")],
)
async def test_a_definitive_refusal_is_a_clear_502_and_never_retried(
    world: SecurityWorld, kind: str, code: str, final: str
) -> None:
    world.sandbox.inject_fault(kind, target="payments")  # type: ignore[arg-type]
    response = await world.pay_order(await world.login(), f"order-{kind}")
    error = assert_error(response, 502, code)
    assert "retryable" not in error
    assert "sandbox-api-key" not in response.text
    assert len(payment_keys(world, f"order-{kind}")) == 1  # not retried
    assert sandbox_payments(world, f"order-{kind}") == 0
    state = await world.status(f"order-{kind}")
    # 422: Adyen refused this payment request, so none exists there: Error says exactly that.
    # 401: our API key was refused; the payment stays Created so it can be paid once fixed.
    assert state["state"] == final
    assert not [c for c in world.changes if c.state.value == "Authorised"]


@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [("timeout", 504, "adyen_timeout"), ("500", 503, "adyen_unavailable"), ("garbage", 502, None)],
)
async def test_a_failed_details_call_changes_nothing_and_the_retry_settles_once(
    world: SecurityWorld, kind: str, status: int, code: str | None
) -> None:
    shopper = await world.login()
    assert (await world.pay_order(shopper, "order-d")).status_code == 200
    before = await world.snapshot()
    attempts = 2 if kind != "garbage" else 1
    world.sandbox.inject_fault(kind, count=attempts, target="details")  # type: ignore[arg-type]
    assert_error(await world.details(shopper, "order-d"), status, code)
    assert await world.snapshot() == before
    assert (await world.status("order-d"))["state"] == "Pending"

    retry = await world.details(shopper, "order-d")
    assert retry.status_code == 200 and retry.json()["state"] == "Authorised", retry.text
    keys = [e.headers["idempotency-key"] for e in world.transport.to("/payments/details")]
    assert len(set(keys)) == 1 and len(keys) == attempts + 1
    [payment] = world.sandbox.payments.values()
    assert payment.details_calls == 1  # the retries were answered from Adyen's stored result


async def test_wechat_down_is_a_retryable_502(world: SecurityWorld) -> None:
    world.transport.down.add("/wechat/")
    response = await world.client.post("/pay/session", json={"code": "alice.1"})
    error = assert_error(response, 502, "wechat_unavailable")
    assert error["retryable"] is True
    assert "sandbox-app-secret" not in response.text
    world.transport.down.clear()
    assert (await world.client.post("/pay/session", json={"code": "alice.1"})).status_code == 200


async def test_wechat_on_a_closed_port(db_url: str) -> None:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = settings_for(QUIET, db_url, wechat_api_url=f"http://127.0.0.1:{port}")
    pay = create_app(settings)  # its own real httpx client
    try:
        host = Starlette(routes=[Mount("/pay", app=pay)])
        transport = httpx.ASGITransport(app=host)
        async with httpx.AsyncClient(transport=transport, base_url="http://m.test") as client:
            response = await client.post("/pay/session", json={"code": "alice.1"})
        error = assert_error(response, 502, "wechat_unavailable")
        assert error["retryable"] is True
    finally:
        await pay.stop()


@pytest.mark.parametrize(
    ("code", "status", "error_code"),
    [
        ("busy.1", 200, None),  # WeChat's -1 is retried once
        ("ratelimit.1", 429, "wechat_rate_limited"),
        ("blocked.1", 403, "wechat_user_blocked"),
        ("invalid.1", 400, "wechat_invalid_code"),
    ],
)
async def test_wechat_errors_are_clear(
    world: SecurityWorld, code: str, status: int, error_code: str | None
) -> None:
    response = await world.client.post("/pay/session", json={"code": code})
    if error_code is None:
        assert response.status_code == 200
        return
    assert_error(response, status, error_code)
    if status == 429:
        assert int(response.headers["retry-after"]) > 0


@contextmanager
def write_lock(db_path: str) -> Iterator[None]:
    """Hold SQLite's write lock from another connection, like a long transaction elsewhere."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 20)


async def test_a_locked_database_is_a_retryable_503_and_writes_nothing(
    short_busy_timeout: None, world: SecurityWorld
) -> None:
    shopper = await world.login()
    before = await world.snapshot()
    with write_lock(world.db_path):
        response = await world.pay_order(shopper, "order-locked")
        error = assert_error(response, 503, "storage_unavailable")
        assert error["retryable"] is True
    assert await world.snapshot() == before
    assert world.transport.to("/adyen/") == []  # nothing was asked of Adyen either
    assert (await world.pay_order(shopper, "order-locked")).status_code == 200


async def test_a_lock_after_adyen_answered_leaves_created_and_the_retry_pays_once(
    short_busy_timeout: None, world: SecurityWorld
) -> None:
    shopper = await world.login()
    locks: list[sqlite3.Connection] = []

    def lock_when_adyen_answers(exchange: Exchange) -> None:
        if exchange.url.endswith("/payments") and not locks:
            conn = sqlite3.connect(world.db_path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            locks.append(conn)

    world.transport.on_response = lock_when_adyen_answers
    response = await world.pay_order(shopper, "order-half")
    assert_error(response, 503, "storage_unavailable")
    locks[0].execute("ROLLBACK")
    locks[0].close()
    world.transport.on_response = None

    state = await world.status("order-half")
    assert state["state"] == "Created" and state["pspReference"] is None
    retry = await world.pay_order(shopper, "order-half")
    assert retry.status_code == 200 and retry.json()["state"] == "Pending"
    keys = payment_keys(world, "order-half")
    assert len(keys) == 2 and len(set(keys)) == 1
    assert sandbox_payments(world, "order-half") == 1


async def test_a_webhook_during_a_lock_is_not_acknowledged_then_redelivery_works(
    short_busy_timeout: None, world: SecurityWorld
) -> None:
    shopper = await world.login()
    psp = (await world.pay_order(shopper, "order-w")).json()["pspReference"]
    item = notification_item(
        psp_reference=psp, merchant_reference="order-w", key_hex=world.config.hmac_keys[0]
    )
    headers = basic_auth(world.config.webhook_username, world.config.webhook_password)
    before = await world.snapshot()
    with write_lock(world.db_path):
        response = await world.client.post(
            "/pay/webhooks/adyen", content=notification_body(item), headers=headers
        )
        assert_error(response, 503, "storage_unavailable")  # Adyen will deliver it again
    assert await world.snapshot() == before
    response = await world.client.post(
        "/pay/webhooks/adyen", content=notification_body(item), headers=headers
    )
    assert response.text == "[accepted]"
    assert (await world.status("order-w"))["state"] == "Authorised"


async def test_reads_are_unaffected_by_a_write_lock(
    short_busy_timeout: None, world: SecurityWorld
) -> None:
    shopper = await world.login()
    assert (await world.pay_order(shopper, "order-r")).status_code == 200
    with write_lock(world.db_path):
        response = await world.client.get("/pay/payments/order-r", headers=shopper)
        assert response.status_code == 200
        admin = await world.client.get(
            "/pay/admin/notifications", headers={"X-Admin-Key": ADMIN_KEY}
        )
        assert admin.status_code == 200


async def test_an_unwritable_database_is_a_clear_503() -> None:
    settings = settings_for(QUIET, "sqlite+aiosqlite:////proc/no-such-dir/pay.db")
    pay = create_app(settings)
    host = Starlette(routes=[Mount("/pay", app=pay)])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://m.test") as client:
        for _ in range(2):  # and it keeps answering clearly, it does not wedge
            response = await client.post("/pay/session", json={"code": "alice.1"})
            error = assert_error(response, 503, "storage_unavailable")
            assert error["retryable"] is True
    await pay.stop()
