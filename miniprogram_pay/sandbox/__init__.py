"""A local simulator of Adyen Checkout and WeChat for Mini Program payments.

Mount nothing: run it as its own ASGI app and point the merchant's settings at
it (Adyen base ``http://HOST:PORT/adyen/v71``, WeChat base ``http://HOST:PORT/wechat``).
Its console, at ``http://HOST:PORT/``, plays the shopper and Adyen in a browser.
See ``docs/sandbox.md``.

Example::

    from miniprogram_pay.sandbox import SandboxConfig, create_sandbox_app

    app = create_sandbox_app(SandboxConfig(webhook_url="http://127.0.0.1:8000/webhooks/adyen"))
"""

from __future__ import annotations

from miniprogram_pay.sandbox.app import create_sandbox_app
from miniprogram_pay.sandbox.config import DEFAULT_HMAC_KEY, DEFAULT_PAYSIGN_KEY, SandboxConfig
from miniprogram_pay.sandbox.faults import Fault
from miniprogram_pay.sandbox.paysign import hmac_sha256_pay_sign, md5_pay_sign, verify_pay_sign
from miniprogram_pay.sandbox.scenarios import REFUND_SCENARIOS, SCENARIOS, RefundScenario, Scenario
from miniprogram_pay.sandbox.state import Sandbox, SandboxPayment, SandboxRefund
from miniprogram_pay.sandbox.webhooks import DeliveryAttempt, WebhookDelivery

__all__ = [
    "DEFAULT_HMAC_KEY",
    "DEFAULT_PAYSIGN_KEY",
    "REFUND_SCENARIOS",
    "SCENARIOS",
    "DeliveryAttempt",
    "Fault",
    "RefundScenario",
    "Sandbox",
    "SandboxConfig",
    "SandboxPayment",
    "SandboxRefund",
    "Scenario",
    "WebhookDelivery",
    "create_sandbox_app",
    "hmac_sha256_pay_sign",
    "md5_pay_sign",
    "verify_pay_sign",
]
