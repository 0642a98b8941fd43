"""``create_sandbox_app``: simulated Adyen + WeChat as one Starlette app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette

from miniprogram_pay.sandbox.adyen import adyen_routes
from miniprogram_pay.sandbox.config import SandboxConfig
from miniprogram_pay.sandbox.console import Console
from miniprogram_pay.sandbox.control import EXCEPTION_HANDLERS, control_routes
from miniprogram_pay.sandbox.state import Sandbox
from miniprogram_pay.sandbox.wechat import wechat_routes

__all__ = ["create_sandbox_app"]


def create_sandbox_app(
    config: SandboxConfig, *, webhook_client: httpx.AsyncClient | None = None
) -> Starlette:
    """Simulated Adyen Checkout and WeChat for ``config``, with the console at ``/``.

    ``app.state.sandbox`` is the ``Sandbox`` to inspect, ``app.state.console``
    the console. Everything the sandbox sends the merchant (webhooks, the
    console's requests) goes through ``webhook_client`` when given (the caller
    closes it); otherwise the sandbox creates its own clients lazily and closes
    them when the app's lifespan ends (or call ``await
    app.state.sandbox.aclose()`` and ``await app.state.console.aclose()`` if it
    never ran).

    Example::

        app = create_sandbox_app(SandboxConfig(webhook_url="http://127.0.0.1:8000/webhooks/adyen"))
        # uvicorn.run(app, port=8100)  ->  Adyen base http://127.0.0.1:8100/adyen/v71,
        #                                  WeChat base http://127.0.0.1:8100/wechat
    """
    sandbox = Sandbox(config, webhook_client=webhook_client)
    console = Console(sandbox, client=webhook_client)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # Cancel pending deliveries so shutdown never waits on a retry schedule.
            await sandbox.aclose()
            await console.aclose()

    routes = [
        *adyen_routes(sandbox),
        *wechat_routes(sandbox),
        *control_routes(sandbox),
        *console.routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.sandbox = sandbox
    app.state.console = console
    return app
