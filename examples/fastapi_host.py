"""A FastAPI shop taking WeChat Pay in its Mini Program, two ways.

``app``: the plugin mounted at /pay, its lifespan entered inside the host's own.
``app_with_middleware``: the same through ``MiniProgramPayMiddleware``, which
serves /pay/* and follows the host's lifespan by itself.

Run it against the sandbox (see examples/README.md)::

    uvicorn examples.fastapi_host:app --port 8000
    uvicorn examples.fastapi_host:app_with_middleware --port 8000
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException

from examples.starlette_host import Shop
from miniprogram_pay import MiniProgramPayMiddleware, Settings, create_app


def _shop_routes(app: FastAPI, shop: Shop) -> None:
    @app.get("/orders/{order_id}")
    async def order_status(order_id: str) -> dict[str, object]:
        order = shop.orders.get(order_id)
        if order is None:
            raise HTTPException(status_code=404, detail="no such order")
        return {"orderId": order.order_id, "paid": order.paid}


def build_app(settings: Settings | None = None, shop: Shop | None = None) -> FastAPI:
    """Mount + lifespan: the host's lifespan enters the plugin's."""
    shop = shop or Shop()
    pay = create_app(
        settings or Settings.from_env(),
        order_resolver=shop.resolve_order,
        on_state_change=shop.mark_paid,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # ... open the host's own resources here ...
        async with pay.lifespan(app):
            yield

    app = FastAPI(lifespan=lifespan)
    _shop_routes(app, shop)
    app.mount("/pay", pay)
    app.state.shop = shop
    app.state.pay = pay
    return app


def build_app_with_middleware(
    settings: Settings | None = None, shop: Shop | None = None
) -> FastAPI:
    """The middleware form: no Mount, no lifespan line."""
    shop = shop or Shop()
    app = FastAPI()
    _shop_routes(app, shop)
    app.add_middleware(
        MiniProgramPayMiddleware,
        settings=settings or Settings.from_env(),
        prefix="/pay",
        order_resolver=shop.resolve_order,
        on_state_change=shop.mark_paid,
    )
    app.state.shop = shop
    return app


app = build_app()
app_with_middleware = build_app_with_middleware()
