"""What the docs' snippets leave to the reader: their own order store and hooks.

The snippets call functions every merchant writes for themselves
(``resolve_order``, ``order_changed``, ...). A snippet runs with these
stand-ins already in its namespace, and with nothing else: every name it takes
from miniprogram_pay, Starlette or FastAPI it must import itself, so a snippet
that forgets an import still fails.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from miniprogram_pay import Amount, Order, OrderRequest, StateChange

__all__ = ["reader_namespace"]


async def resolve_order(request: OrderRequest) -> Order:
    return Order(reference=f"shop-{request.body.get('orderId')}", amount=Amount(1130, "CNY"))


async def order_changed(change: StateChange) -> None:
    return None


async def order_page(request: Request) -> Response:
    return JSONResponse({"order": request.path_params["id"]})


async def _webhook(request: Request) -> Response:
    return PlainTextResponse("[accepted]")


class _Vault:
    """A secrets manager: ``vault.read(name)``."""

    def read(self, name: str) -> str:
        return "AQE-from-the-vault"


def reader_namespace() -> dict[str, Any]:
    """The reader's own names, fresh for each snippet."""
    merchant_app = Starlette(routes=[Route("/pay/webhooks/adyen", _webhook, methods=["POST"])])
    return {
        "resolve_order": resolve_order,
        "order_changed": order_changed,
        "order_paid": order_changed,
        "order_page": order_page,
        "merchant_app": merchant_app,
        "vault": _Vault(),
    }
