"""A Starlette shop taking WeChat Pay in its Mini Program, with miniprogram-pay at /pay.

The host keeps its own routes and orders; the plugin decides nothing about money:
``resolve_order`` tells it what an order costs, and ``mark_paid`` hears of every
state change (at least once, so it de-duplicates on ``event_id``).

Run it against the sandbox (see examples/README.md)::

    uvicorn examples.starlette_host:app --port 8000
"""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from miniprogram_pay import (
    Amount,
    InvalidRequestError,
    NotFoundError,
    Order,
    OrderRequest,
    PaymentState,
    Settings,
    StateChange,
    create_app,
)


@dataclass
class ShopOrder:
    order_id: str
    amount: Amount
    paid: bool = False


@dataclass
class Shop:
    """A tiny in-memory order table standing in for the host's database."""

    orders: dict[str, ShopOrder] = field(
        default_factory=lambda: {
            "A1001": ShopOrder("A1001", Amount(1130, "CNY")),
            "A1002": ShopOrder("A1002", Amount(2599, "CNY")),
        }
    )
    seen_events: set[str] = field(default_factory=set)

    async def resolve_order(self, request: OrderRequest) -> Order:
        """The Mini Program sends {"orderId": ...}; the amount comes from our table only."""
        order_id = request.body.get("orderId")
        if not isinstance(order_id, str):
            raise InvalidRequestError("orderId is required", code="missing_order_id")
        order = self.orders.get(order_id)
        if order is None:
            raise NotFoundError("no such order", code="order_not_found")
        return Order(reference=f"shop-{order.order_id}", amount=order.amount)

    async def mark_paid(self, change: StateChange) -> None:
        """Delivered at least once: the event_id makes a redelivery harmless."""
        if change.event_id in self.seen_events:
            return
        # change.reference is the attempt (shop-A1001, then shop-A1001-2 after a retry);
        # the order is the reference the resolver gave.
        order = change.order_reference or change.reference
        if change.kind == "payment" and change.order_state is PaymentState.AUTHORISED:
            self.orders[order.removeprefix("shop-")].paid = True
        self.seen_events.add(change.event_id)


def build_app(settings: Settings | None = None, shop: Shop | None = None) -> Starlette:
    shop = shop or Shop()
    pay = create_app(
        settings or Settings.from_env(),
        order_resolver=shop.resolve_order,
        on_state_change=shop.mark_paid,
    )

    async def order_status(request: Request) -> JSONResponse:
        order = shop.orders.get(request.path_params["order_id"])
        if order is None:
            return JSONResponse({"error": "no such order"}, status_code=404)
        return JSONResponse({"orderId": order.order_id, "paid": order.paid})

    app = Starlette(
        routes=[
            Route("/orders/{order_id}", order_status),
            Mount("/pay", app=pay),
        ],
        # The one line: a mounted app's lifespan never runs, so the host runs the
        # plugin's (workers started at boot, connections closed at shutdown).
        lifespan=pay.lifespan,
    )
    app.state.shop = shop
    app.state.pay = pay
    return app


app = build_app()
