"""miniprogram-pay: WeChat Pay in WeChat Mini Programs through Adyen Checkout, as an ASGI plugin.

Example::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from miniprogram_pay import Settings, create_app

    pay = create_app(Settings.from_env(), order_resolver=resolve_order)
    app = Starlette(routes=[Mount("/pay", app=pay)], lifespan=pay.lifespan)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from miniprogram_pay._version import __version__

if TYPE_CHECKING:
    from miniprogram_pay.app import MiniProgramPay, MiniProgramPayMiddleware, create_app
    from miniprogram_pay.config import Secret, Settings
    from miniprogram_pay.domain.money import Amount
    from miniprogram_pay.domain.refunds import RefundChange, RefundState
    from miniprogram_pay.domain.states import PaymentState
    from miniprogram_pay.errors import (
        AdyenError,
        AuthenticationError,
        ConfigurationError,
        ConflictError,
        InvalidRefundError,
        InvalidRequestError,
        MiniProgramPayError,
        NotFoundError,
        RefundNotAllowedError,
        SignatureError,
        StorageError,
        UpstreamError,
        WebhookError,
        WeChatError,
    )
    from miniprogram_pay.services.hooks import (
        ChangeKind,
        Order,
        OrderRequest,
        OrderResolver,
        StateChange,
        StateChangeHook,
    )
    from miniprogram_pay.storage.records import Refund, RefundHistory

# The front door is lazy: ``import miniprogram_pay`` loads nothing else, and each
# name loads its module on first use (PEP 562), so a host, a CLI call or a worker
# only pays for what it touches (SQLAlchemy, pydantic, httpx come with create_app).
_EXPORTS: dict[str, str] = {
    "AdyenError": "miniprogram_pay.errors",
    "Amount": "miniprogram_pay.domain.money",
    "AuthenticationError": "miniprogram_pay.errors",
    "ChangeKind": "miniprogram_pay.services.hooks",
    "ConfigurationError": "miniprogram_pay.errors",
    "ConflictError": "miniprogram_pay.errors",
    "InvalidRefundError": "miniprogram_pay.errors",
    "InvalidRequestError": "miniprogram_pay.errors",
    "MiniProgramPay": "miniprogram_pay.app",
    "MiniProgramPayError": "miniprogram_pay.errors",
    "MiniProgramPayMiddleware": "miniprogram_pay.app",
    "NotFoundError": "miniprogram_pay.errors",
    "Order": "miniprogram_pay.services.hooks",
    "OrderRequest": "miniprogram_pay.services.hooks",
    "OrderResolver": "miniprogram_pay.services.hooks",
    "PaymentState": "miniprogram_pay.domain.states",
    "Refund": "miniprogram_pay.storage.records",
    "RefundChange": "miniprogram_pay.domain.refunds",
    "RefundHistory": "miniprogram_pay.storage.records",
    "RefundNotAllowedError": "miniprogram_pay.errors",
    "RefundState": "miniprogram_pay.domain.refunds",
    "Secret": "miniprogram_pay.config",
    "Settings": "miniprogram_pay.config",
    "SignatureError": "miniprogram_pay.errors",
    "StateChange": "miniprogram_pay.services.hooks",
    "StateChangeHook": "miniprogram_pay.services.hooks",
    "StorageError": "miniprogram_pay.errors",
    "UpstreamError": "miniprogram_pay.errors",
    "WeChatError": "miniprogram_pay.errors",
    "WebhookError": "miniprogram_pay.errors",
    "create_app": "miniprogram_pay.app",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'miniprogram_pay' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "AdyenError",
    "Amount",
    "AuthenticationError",
    "ChangeKind",
    "ConfigurationError",
    "ConflictError",
    "InvalidRefundError",
    "InvalidRequestError",
    "MiniProgramPay",
    "MiniProgramPayError",
    "MiniProgramPayMiddleware",
    "NotFoundError",
    "Order",
    "OrderRequest",
    "OrderResolver",
    "PaymentState",
    "Refund",
    "RefundChange",
    "RefundHistory",
    "RefundNotAllowedError",
    "RefundState",
    "Secret",
    "Settings",
    "SignatureError",
    "StateChange",
    "StateChangeHook",
    "StorageError",
    "UpstreamError",
    "WeChatError",
    "WebhookError",
    "__version__",
    "create_app",
]
