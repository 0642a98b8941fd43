"""``create_sandbox_app``: simulated Adyen + WeChat as one Starlette app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette

from miniprogram_pay.sandbox.adyen import adyen_routes
from miniprogram_pay.sandbox.config import SandboxConfig
from miniprogram_pay.sandbox.control import EXCEPTION_HANDLERS, control_routes
from miniprogram_pay.sandbox.state import Sandbox
from miniprogram_pay.sandbox.wechat import wechat_routes

__all__ = ["create_sandbox_app"]


def create_sandbox_app(
    config: SandboxConfig, *, webhook_client: httpx.AsyncClient | None = None
) -> Starlette:
    """A Starlette app simulating Adyen Checkout and WeChat for ``config``.

    ``app.state.sandbox`` is the ``Sandbox`` to inspect. Webhooks go out through
    ``webhook_client`` when given (the caller closes it); otherwise the sandbox
    creates its own client lazily and closes it when the app's lifespan ends
    (or when you call ``await app.state.sandbox.aclose()`` if it never ran).

    Example::

        app = create_sandbox_app(SandboxConfig(webhook_url="http://127.0.0.1:8000/webhooks/adyen"))
        # uvicorn.run(app, port=8100)  ->  Adyen base http://127.0.0.1:8100/adyen/v71,
        #                                  WeChat base http://127.0.0.1:8100/wechat
    """
    sandbox = Sandbox(config, webhook_client=webhook_client)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # Cancel pending deliveries so shutdown never waits on a retry schedule.
            await sandbox.aclose()

    routes = [*adyen_routes(sandbox), *wechat_routes(sandbox), *control_routes(sandbox)]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=dict(EXCEPTION_HANDLERS),
    )
    app.state.sandbox = sandbox
    return app
