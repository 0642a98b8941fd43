"""A small host app for running the plugin on its own: ``miniprogram-pay serve``.

The plugin is mounted under ``/pay`` (``API_PREFIX``), exactly as a merchant
mounts it in their own Starlette or FastAPI app, and ``GET /`` says where the
API is. The host owns the plugin's lifespan, so the database, the HTTP client
and the background workers start with the server and stop with it.

Example::

    uvicorn --factory miniprogram_pay.host:create_host_app_from_env
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from miniprogram_pay.app import MiniProgramPay, create_app
from miniprogram_pay.config import ENV_PREFIX, Settings
from miniprogram_pay.errors import ConfigurationError

__all__ = [
    "API_PREFIX",
    "ON_STATE_CHANGE_VARIABLE",
    "ORDER_RESOLVER_VARIABLE",
    "create_host_app",
    "create_host_app_from_env",
    "load_callable",
]

API_PREFIX = "/pay"
# How ``serve --workers N`` hands ``--order-resolver``/``--on-state-change`` to its workers.
ORDER_RESOLVER_VARIABLE = ENV_PREFIX + "SERVE_ORDER_RESOLVER"
ON_STATE_CHANGE_VARIABLE = ENV_PREFIX + "SERVE_ON_STATE_CHANGE"


def load_callable(spec: str, *, option: str) -> Any:
    """``module:function`` imported; a ``ConfigurationError`` saying what is wrong otherwise."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{option} must look like module:function, not {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{option}: cannot import {module_name!r} ({exc}); run from the directory that "
            "holds it or put it on PYTHONPATH"
        ) from None
    found = getattr(module, attribute, None)
    if not callable(found):
        raise ConfigurationError(f"{option}: {module_name!r} has no function {attribute!r}")
    return found


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
    """uvicorn factory (``--factory``): the plugin configured by ``MINIPROGRAM_PAY_*`` variables.

    The hooks come from ``MINIPROGRAM_PAY_SERVE_ORDER_RESOLVER`` and
    ``MINIPROGRAM_PAY_SERVE_ON_STATE_CHANGE`` (``module:function``), when set.
    """
    resolver = os.environ.get(ORDER_RESOLVER_VARIABLE)
    hook = os.environ.get(ON_STATE_CHANGE_VARIABLE)
    plugin = create_app(
        Settings.from_env(),
        order_resolver=load_callable(resolver, option="--order-resolver") if resolver else None,
        on_state_change=load_callable(hook, option="--on-state-change") if hook else None,
    )
    return create_host_app(plugin)
