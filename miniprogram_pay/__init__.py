"""miniprogram-pay: WeChat Pay in WeChat Mini Programs through Adyen Checkout, as an ASGI plugin.

Example::

    from starlette.applications import Starlette
    from starlette.routing import Mount
    from miniprogram_pay import Settings, create_app

    pay = create_app(Settings.from_env(), order_resolver=resolve_order)
    app = Starlette(routes=[Mount("/pay", app=pay)], lifespan=pay.lifespan)
"""

from __future__ import annotations

from miniprogram_pay._version import __version__
from miniprogram_pay.app import MiniProgramPay, MiniProgramPayMiddleware, create_app
from miniprogram_pay.config import Secret, Settings
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import (
    AdyenError,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    InvalidRequestError,
    MiniProgramPayError,
    NotFoundError,
    SignatureError,
    StorageError,
    UpstreamError,
    WebhookError,
    WeChatError,
)
from miniprogram_pay.services.hooks import (
    Order,
    OrderRequest,
    OrderResolver,
    StateChange,
    StateChangeHook,
)

__all__ = [
    "AdyenError",
    "Amount",
    "AuthenticationError",
    "ConfigurationError",
    "ConflictError",
    "InvalidRequestError",
    "MiniProgramPay",
    "MiniProgramPayError",
    "MiniProgramPayMiddleware",
    "NotFoundError",
    "Order",
    "OrderRequest",
    "OrderResolver",
    "PaymentState",
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
