"""Builders for the HTTP suite, on top of ``tests/world.py``.

``host_world`` builds the same in-process world as ``tests.world.world`` but lets
the test choose how the host carries the plugin (Starlette ``Mount``, FastAPI
``app.mount``, ``MiniProgramPayMiddleware`` around a Starlette or inside a
FastAPI app) and pass an ``order_resolver``. ``served_world`` runs the host on a
real uvicorn server on 127.0.0.1: the test client and the sandbox's webhook
sender talk real HTTP to it, the merchant's outbound calls stay in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Scope

from miniprogram_pay import (
    MiniProgramPay,
    MiniProgramPayMiddleware,
    OrderResolver,
    StateChange,
    create_app,
)
from miniprogram_pay.sandbox import SandboxConfig, create_sandbox_app
from tests.world import World, connect, default_config, settings_for, wiring

HostKind = Literal["starlette", "fastapi", "middleware", "fastapi-middleware"]
HOST_KINDS: tuple[HostKind, ...] = ("starlette", "fastapi", "middleware", "fastapi-middleware")
Hook = Callable[[StateChange], Awaitable[None]]


# -- hosts ---------------------------------------------------------------------------


async def host_hello(request: Request) -> Response:
    return JSONResponse({"host": "hello", "path": request.url.path})


def starlette_host(pay: MiniProgramPay, *, lifespan: bool = True) -> Starlette:
    """A host with its own route and the plugin at /pay (the one line: lifespan=)."""
    return Starlette(
        routes=[Route("/hello", host_hello), Mount("/pay", app=pay)],
        lifespan=pay.lifespan if lifespan else None,
    )


def fastapi_host(pay: MiniProgramPay, *, lifespan: bool = True) -> FastAPI:
    app = FastAPI(lifespan=pay.lifespan if lifespan else None)

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"host": "hello", "path": "/hello"}

    app.mount("/pay", pay)
    return app


def find_middleware(app: Starlette) -> MiniProgramPayMiddleware:
    """The middleware instance a Starlette/FastAPI app built from ``add_middleware``."""
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    layer: Any = app.middleware_stack
    while layer is not None:
        if isinstance(layer, MiniProgramPayMiddleware):
            return layer
        layer = getattr(layer, "app", None)
    raise AssertionError("MiniProgramPayMiddleware is not in the stack")


def build_host(kind: HostKind, **plugin: Any) -> tuple[ASGIApp, MiniProgramPay]:
    """The host app of ``kind`` and the plugin inside it; ``plugin`` goes to create_app."""
    settings = plugin.pop("settings")
    if kind == "starlette":
        pay = create_app(settings, **plugin)
        return starlette_host(pay), pay
    if kind == "fastapi":
        pay = create_app(settings, **plugin)
        return fastapi_host(pay), pay
    if kind == "middleware":
        inner = Starlette(routes=[Route("/hello", host_hello)])
        middleware = MiniProgramPayMiddleware(inner, settings=settings, prefix="/pay", **plugin)
        return middleware, middleware.plugin
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"host": "hello", "path": "/hello"}

    app.add_middleware(MiniProgramPayMiddleware, settings=settings, prefix="/pay", **plugin)
    return app, find_middleware(app).plugin


# -- transports ----------------------------------------------------------------------


class TimeoutASGITransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` that honours the request's read timeout.

    ``ASGITransport`` ignores timeouts (they live in httpcore), so a sandbox
    "timeout" fault would just make the call slow. This raises ``ReadTimeout``
    like a real socket would.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = request.extensions.get("timeout", {}).get("read")
        try:
            return await asyncio.wait_for(self._inner.handle_async_request(request), timeout)
        except TimeoutError:
            raise httpx.ReadTimeout("sandbox did not answer in time", request=request) from None


class WeChatDownTransport(httpx.AsyncBaseTransport):
    """Adyen calls go to the sandbox; WeChat calls fail to connect."""

    def __init__(self, app: ASGIApp) -> None:
        self._inner = TimeoutASGITransport(app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/wechat"):
            raise httpx.ConnectError("connection refused", request=request)
        return await self._inner.handle_async_request(request)


# -- in-process world ------------------------------------------------------------------


@asynccontextmanager
async def host_world(
    database_url: str,
    *,
    kind: HostKind = "starlette",
    config: SandboxConfig | None = None,
    on_state_change: Hook | None = None,
    order_resolver: OrderResolver | None = None,
    wechat_down: bool = False,
    **overrides: Any,
) -> AsyncIterator[World]:
    """Like ``tests.world.world`` with a choice of host; everything closed on exit."""
    config = config or default_config()
    if order_resolver is not None:
        overrides.setdefault("allow_client_amount", False)
    settings = settings_for(config, database_url, **overrides)
    changes: list[StateChange] = []

    async def record(change: StateChange) -> None:
        if on_state_change is not None:
            await on_state_change(change)  # a failure here must not be recorded as delivered
        changes.append(change)

    transport = WeChatDownTransport if wechat_down else TimeoutASGITransport
    async with wiring(config, outbound_transport=transport) as parts:
        host, pay = build_host(
            kind,
            settings=settings,
            on_state_change=record,
            order_resolver=order_resolver,
            http_client=parts.outbound,
        )
        client = connect(parts, host)
        try:
            yield World(
                pay, parts.sandbox_app, client, settings, config, changes, itertools.count()
            )
        finally:
            await pay.stop()


# -- lifespan ------------------------------------------------------------------------


class LifespanDriver:
    """Sends ``lifespan.startup`` / ``lifespan.shutdown`` to an app, like a server does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.sent: list[str] = []
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def _receive(self) -> Message:
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        self.sent.append(message["type"])
        await self._outbox.put(message)

    async def _run(self, scope: Scope) -> None:
        await self.app(scope, self._receive, self._send)

    async def startup(self) -> str:
        scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._task = asyncio.create_task(self._run(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        message = await asyncio.wait_for(self._outbox.get(), 10)
        return str(message["type"])

    async def shutdown(self) -> str:
        await self._inbox.put({"type": "lifespan.shutdown"})
        message = await asyncio.wait_for(self._outbox.get(), 10)
        assert self._task is not None
        await asyncio.wait_for(self._task, 10)
        return str(message["type"])


# -- real server -----------------------------------------------------------------------


class ServedWorld(World):
    """A ``World`` whose host runs on uvicorn; ``base_url`` is its real address."""

    base_url: str
    server: uvicorn.Server


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@asynccontextmanager
async def serving(
    app: ASGIApp, sock: socket.socket | None = None, **config: Any
) -> AsyncIterator[uvicorn.Server]:
    """``app`` on uvicorn at 127.0.0.1 (lifespan on) until the block ends; ``config`` to uvicorn."""
    sock = sock or _free_socket()
    options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", "ws": "none"}
    server = uvicorn.Server(uvicorn.Config(app, **{**options, "access_log": False, **config}))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield server
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        sock.close()


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


@asynccontextmanager
async def served_world(
    database_url: str,
    *,
    kind: Literal["starlette", "fastapi"] = "starlette",
    config_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[ServedWorld]:
    """The host on uvicorn (lifespan on); the sandbox delivers webhooks over real HTTP."""
    sock = _free_socket()
    base = base_url(sock)
    config = SandboxConfig(webhook_url=f"{base}/pay/webhooks/adyen", **(config_options or {}))
    settings = settings_for(config, database_url, **overrides)
    sandbox_app = create_sandbox_app(config)  # its own client: real HTTP to uvicorn
    outbound = httpx.AsyncClient(transport=TimeoutASGITransport(sandbox_app))
    changes: list[StateChange] = []

    async def record(change: StateChange) -> None:
        changes.append(change)

    host, pay = build_host(kind, settings=settings, on_state_change=record, http_client=outbound)
    async with serving(host, sock) as server:
        client = httpx.AsyncClient(base_url=base)
        w = ServedWorld(pay, sandbox_app, client, settings, config, changes, itertools.count())
        w.base_url, w.server = base, server
        try:
            yield w
        finally:
            await w.sandbox.aclose()
            await client.aclose()
    await outbound.aclose()


# -- small steps -----------------------------------------------------------------------


async def start_payment(w: World, reference: str, shopper: str = "alice") -> dict[str, str]:
    """Log in, POST /payments, check 200; the Bearer header for the rest of the test."""
    headers = await w.login(shopper)
    r = await w.pay_order(headers, reference)
    assert r.status_code == 200, r.text
    return headers


def error_code(response: httpx.Response) -> str:
    """The stable code of an error answer, after checking the error shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]), body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    code: str = body["error"]["code"]
    return code
