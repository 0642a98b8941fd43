"""How hosts carry the plugin: Mount in Starlette and FastAPI, the middleware, the lifespan."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from miniprogram_pay import ConfigurationError, MiniProgramPayMiddleware, Settings, create_app
from miniprogram_pay.sandbox import SandboxConfig
from tests.http.helpers import (
    HOST_KINDS,
    HostKind,
    LifespanDriver,
    find_middleware,
    host_hello,
    host_world,
    start_payment,
)
from tests.world import MERCHANT_BASE, settings_for


def sandbox_settings(db_url: str) -> Settings:
    return settings_for(SandboxConfig(webhook_url=f"{MERCHANT_BASE}/pay/webhooks/adyen"), db_url)


@pytest.mark.parametrize("kind", HOST_KINDS)
async def test_a_whole_payment_in_every_host_form(db_url: str, kind: HostKind) -> None:
    async with host_world(db_url, kind=kind) as w:
        headers = await start_payment(w, "order-host")
        assert (await w.details(headers, "order-host")).json()["state"] == "Authorised"
        await w.settle()
        assert all(d.accepted for d in w.sandbox.deliveries)
        assert (await w.status("order-host"))["state"] == "Authorised"


@pytest.mark.parametrize("kind", HOST_KINDS)
async def test_other_paths_reach_the_host_untouched(db_url: str, kind: HostKind) -> None:
    async with host_world(db_url, kind=kind) as w:
        r = await w.client.get("/hello")
        assert r.json() == {"host": "hello", "path": "/hello"}
        for path in ("/payments", "/payx/session", "/session"):
            r = await w.client.post(path, json={"code": "alice.1"})
            assert r.status_code in (404, 405)
            assert "token" not in r.text
        assert w.sandbox.used_codes == set()


async def test_the_middleware_keeps_the_host_scope_and_root_path(db_url: str) -> None:
    seen: list[dict[str, object]] = []

    async def host(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(dict(scope))
        await host_hello_app(scope, receive, send)

    host_hello_app = Starlette(routes=[Route("/hello", host_hello)])
    middleware = MiniProgramPayMiddleware(host, settings=sandbox_settings(db_url), prefix="/pay")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=middleware), base_url=MERCHANT_BASE
    ) as client:
        assert (await client.get("/hello")).status_code == 200
        assert seen[0]["path"] == "/hello" and seen[0].get("root_path", "") == ""
        doc = (await client.get("/pay/openapi.json")).json()
        assert doc["servers"] == [{"url": "/pay"}]
        assert len(seen) == 1
    await middleware.plugin.stop()


@pytest.mark.parametrize("prefix", ["pay", "/pay/", ""])
def test_the_middleware_prefix_is_checked(db_url: str, prefix: str) -> None:
    host = Starlette(routes=[Route("/hello", host_hello)])
    settings = sandbox_settings(db_url)
    with pytest.raises(ConfigurationError, match="prefix"):
        MiniProgramPayMiddleware(host, settings=settings, prefix=prefix)


async def test_starlette_lifespan_starts_and_stops_the_plugin(db_url: str) -> None:
    pay = create_app(sandbox_settings(db_url))
    host = Starlette(
        routes=[Route("/hello", host_hello), Mount("/pay", app=pay)], lifespan=pay.lifespan
    )
    driver = LifespanDriver(host)
    assert await driver.startup() == "lifespan.startup.complete"
    assert pay.started  # before any request: workers run, tables exist
    assert pay.workers.running
    assert await driver.shutdown() == "lifespan.shutdown.complete"
    assert not pay.started


@pytest.mark.parametrize("kind", ["middleware", "fastapi-middleware"])
async def test_the_middleware_follows_the_host_lifespan(db_url: str, kind: HostKind) -> None:
    settings: Settings = sandbox_settings(db_url)
    app: ASGIApp
    if kind == "middleware":
        middleware = MiniProgramPayMiddleware(
            Starlette(routes=[Route("/hello", host_hello)]), settings=settings, prefix="/pay"
        )
        app, pay = middleware, middleware.plugin
    else:
        fastapi_app = FastAPI()
        fastapi_app.add_middleware(MiniProgramPayMiddleware, settings=settings, prefix="/pay")
        app, pay = fastapi_app, find_middleware(fastapi_app).plugin
    driver = LifespanDriver(app)
    assert await driver.startup() == "lifespan.startup.complete"
    assert pay.started
    assert await driver.shutdown() == "lifespan.shutdown.complete"
    assert not pay.started


async def test_standalone_the_plugin_serves_its_own_lifespan(db_url: str) -> None:
    pay = create_app(sandbox_settings(db_url))
    driver = LifespanDriver(pay)
    assert await driver.startup() == "lifespan.startup.complete"
    assert pay.started
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=pay), base_url=MERCHANT_BASE
    ) as client:
        assert (await client.get("/health")).json() == {
            "status": "ok",
            "loops": {"inbox": "running", "outbox": "running"},
        }
        assert (await client.get("/openapi.json")).json()["servers"] == [{"url": "/"}]
    assert await driver.shutdown() == "lifespan.shutdown.complete"
    assert not pay.started


async def test_a_failing_start_is_reported_to_the_server() -> None:
    settings = settings_for(
        SandboxConfig(), "postgresql+psycopg://nobody@127.0.0.1:1/none", adyen_timeout_seconds=1
    )
    pay = create_app(settings)
    driver = LifespanDriver(pay)
    assert await driver.startup() == "lifespan.startup.failed"


async def test_without_a_lifespan_the_plugin_starts_lazily_once(db_url: str) -> None:
    async with host_world(db_url) as w:
        assert not w.pay.started
        answers = await asyncio.gather(*(w.client.get("/pay/health") for _ in range(5)))
        assert {r.status_code for r in answers} == {200}
        assert w.pay.started
