"""A small host app for running the plugin on its own: ``miniprogram-pay serve``.

The plugin is mounted under ``/pay`` (``API_PREFIX``), exactly as a merchant
mounts it in their own Starlette or FastAPI app, and ``GET /`` says where the
API is. The host owns the plugin's lifespan, so the database, the HTTP client
and the background workers start with the server and stop with it.

Example::

    uvicorn --factory miniprogram_pay.host:create_host_app_from_env
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from miniprogram_pay.app import MiniProgramPay, create_app
from miniprogram_pay.config import Settings
from miniprogram_pay.services.hooks import StateChange

__all__ = ["API_PREFIX", "create_host_app", "create_host_app_from_env", "log_state_change"]

API_PREFIX = "/pay"

logger = logging.getLogger("miniprogram_pay.host")


async def log_state_change(change: StateChange) -> None:
    """The default ``on_state_change`` of ``serve``: one log line per committed change."""
    previous = change.previous.value if change.previous else "(new)"
    logger.info(
        "payment %s: %s -> %s (%s)", change.reference, previous, change.state.value, change.source
    )


def create_host_app(plugin: MiniProgramPay, *, prefix: str = API_PREFIX) -> Starlette:
    """A Starlette app with ``plugin`` mounted at ``prefix`` and running its lifespan.

    Example::

        app = create_host_app(create_app(Settings.from_env()))
    """

    async def index(request: Request) -> Response:
        root = str(request.base_url).rstrip("/") + prefix
        return JSONResponse(
            {
                "service": "miniprogram-pay",
                "api": root,
                "health": root + "/health",
                "openapi": root + "/openapi.json",
            }
        )

    return Starlette(
        routes=[Route("/", index, methods=["GET"]), Mount(prefix, app=plugin)],
        lifespan=plugin.lifespan,
    )


def create_host_app_from_env() -> Starlette:
    """uvicorn factory (``--factory``): the plugin configured by ``MINIPROGRAM_PAY_*`` variables."""
    return create_host_app(create_app(Settings.from_env(), on_state_change=log_state_change))
