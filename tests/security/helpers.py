"""Helpers for the security suite: a world whose outbound calls honour timeouts and
are recorded, database snapshots, and error-shape checks.

``tests/world.py`` wires the sandbox through a bare ``httpx.ASGITransport``, which
ignores timeouts (an in-process app is simply awaited). Here the outbound transport
enforces the client's read timeout, so a sandbox "timeout" fault looks to the
plugin exactly like Adyen not answering in time.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from miniprogram_pay import MiniProgramPay, OrderResolver, StateChange
from miniprogram_pay.sandbox import SandboxConfig
from tests.postgres import libpq_dsn
from tests.world import MERCHANT_BASE, World, connect, settings_for, wiring

TABLES = ("mpp_payment", "mpp_transition", "mpp_payment_event", "mpp_notification", "mpp_outbox")


@dataclass
class Exchange:
    """One outbound request the plugin made and what came back."""

    method: str
    url: str
    headers: dict[str, str]
    request_body: bytes
    status: int | None
    response_body: bytes
    error: str | None


@dataclass
class RecordingTransport(httpx.AsyncBaseTransport):
    """Wraps a transport: enforces the read timeout and records every exchange."""

    inner: httpx.AsyncBaseTransport
    exchanges: list[Exchange] = field(default_factory=list)
    # Force a failure for URLs containing one of these substrings (e.g. "/wechat/").
    down: set[str] = field(default_factory=set)
    # Called after each answer arrives, before the plugin sees it.
    on_response: Callable[[Exchange], None] | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        headers = dict(request.headers)
        if any(part in str(request.url) for part in self.down):
            self.exchanges.append(
                Exchange(request.method, str(request.url), headers, body, None, b"", "down")
            )
            raise httpx.ConnectError("connection refused", request=request)
        timeout = request.extensions.get("timeout", {}).get("read")
        try:
            async with asyncio.timeout(timeout):
                response = await self.inner.handle_async_request(request)
                content = await response.aread()
        except TimeoutError:
            self.exchanges.append(
                Exchange(request.method, str(request.url), headers, body, None, b"", "timeout")
            )
            raise httpx.ReadTimeout("timed out", request=request) from None
        exchange = Exchange(
            request.method, str(request.url), headers, body, response.status_code, content, None
        )
        self.exchanges.append(exchange)
        if self.on_response is not None:
            self.on_response(exchange)
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )

    def to(self, fragment: str) -> list[Exchange]:
        return [e for e in self.exchanges if fragment in e.url]


@dataclass
class SecurityWorld(World):
    transport: RecordingTransport = field(default=None)  # type: ignore[assignment]
    host: Starlette = field(default=None)  # type: ignore[assignment]

    def client_from(self, address: str) -> httpx.AsyncClient:
        """A client whose requests come from another IP address (close it after use)."""
        transport = httpx.ASGITransport(app=self.host, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url=MERCHANT_BASE)

    @property
    def db_path(self) -> str:
        return self.settings.database_url.split(":///", 1)[1]

    def snapshot_payment_data(self, reference: str) -> str:
        with closing(sqlite3.connect(self.db_path)) as conn:
            row = conn.execute(
                "SELECT payment_data FROM mpp_payment WHERE reference = ?", (reference,)
            ).fetchone()
        assert row is not None and row[0], reference
        data: str = row[0]
        return data

    async def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored row, once the workers have nothing left to do.

        Draining first keeps the background delivery of earlier state changes
        (an outbox row turning ``delivered``) from looking like an effect of
        the request under test.
        """
        await self.pay.drain()
        return await asyncio.to_thread(snapshot_database, self.settings.database_url)


@asynccontextmanager
async def security_world(
    database_url: str,
    *,
    config: SandboxConfig | None = None,
    order_resolver: OrderResolver | None = None,
    run_workers: bool = False,
    **overrides: Any,
) -> AsyncIterator[SecurityWorld]:
    """Like ``tests.world.world`` with a timeout-honouring, recording outbound transport.

    The background workers are off unless asked for: tests ``drain()`` explicitly,
    so no delivery races a before/after snapshot.
    """
    config = config or SandboxConfig(
        webhook_url=f"{MERCHANT_BASE}/pay/webhooks/adyen",
        webhook_retry_delays=(0.01, 0.01, 0.01),
        timeout_fault_seconds=5.0,
    )
    settings = settings_for(config, database_url, **overrides)
    changes: list[StateChange] = []

    async def record(change: StateChange) -> None:
        changes.append(change)

    recording: list[RecordingTransport] = []

    def outbound_transport(app: ASGIApp) -> httpx.AsyncBaseTransport:
        recording.append(RecordingTransport(httpx.ASGITransport(app=app)))
        return recording[0]

    async with wiring(config, outbound_transport=outbound_transport) as parts:
        pay = MiniProgramPay(
            settings,
            on_state_change=record,
            http_client=parts.outbound,
            order_resolver=order_resolver,
            run_workers=run_workers,
        )
        host = Starlette(routes=[Mount("/pay", app=pay)])
        client = connect(parts, host)
        w = SecurityWorld(
            pay,
            parts.sandbox_app,
            client,
            settings,
            config,
            changes,
            transport=recording[0],
            host=host,
        )
        try:
            await pay.start()
            yield w
        finally:
            await pay.stop()


def snapshot(db_path: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the package, in id order (committed data only)."""
    with closing(sqlite3.connect(db_path)) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES}


def snapshot_database(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """``snapshot`` of a SQLite file or a PostgreSQL database, given its URL."""
    if database_url.startswith("sqlite"):
        return snapshot(database_url.split(":///", 1)[1])
    with psycopg.connect(libpq_dsn(database_url)) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY id").fetchall() for t in TABLES}


def dump_text(db_path: str) -> str:
    """Every value stored in the database, as one string to search for secrets."""
    rows = snapshot(db_path)
    return "\n".join(repr(row) for table in rows.values() for row in table)


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """A JSON ``{"error": {"code", "message"}}`` answer with this status (and code)."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    error = assert_error_shape(response)
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_error_shape(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], error
    assert isinstance(error.get("message"), str) and error["message"], error
    return error


# Fuzz cases actually sent, per test and answer status; printed by conftest.py.
FUZZ_CASES: dict[str, Counter[int]] = {}


def count_case(name: str, status: int) -> None:
    FUZZ_CASES.setdefault(name, Counter())[status] += 1
