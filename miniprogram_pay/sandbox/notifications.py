"""Adyen standard notifications, built and signed like Adyen's (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from miniprogram_pay.adyen.hmac import sign_item
from miniprogram_pay.sandbox.config import SandboxConfig
from miniprogram_pay.sandbox.scenarios import Signing, WebhookStep

__all__ = ["build_notification", "notification_item"]

PAYMENT_METHOD = "wechatpayMiniProgram"
# Signs "bad-signature" notifications: a key no merchant has configured.
WRONG_KEY = b"sandbox: not the key you configured"


def notification_item(
    *,
    psp_reference: str,
    merchant_reference: str,
    merchant_account: str,
    amount: dict[str, Any],
    step: WebhookStep,
    original_reference: str | None = None,
) -> dict[str, Any]:
    """One ``NotificationRequestItem`` without its signature.

    A modification (a refund) carries its own ``pspReference`` and the payment's
    as ``originalReference``.
    """
    item: dict[str, Any] = {
        "additionalData": {},
        "amount": {"currency": amount["currency"], "value": amount["value"]},
        "eventCode": step.event_code,
        "eventDate": datetime.now(UTC).isoformat(timespec="seconds"),
        "merchantAccountCode": merchant_account,
        "merchantReference": merchant_reference,
        "pspReference": psp_reference,
        "paymentMethod": PAYMENT_METHOD,
        "reason": step.reason,
        "success": "true" if step.success else "false",
    }
    if original_reference is not None:
        item["originalReference"] = original_reference
    if step.event_code == "AUTHORISATION" and step.success:
        item["operations"] = ["CANCEL", "CAPTURE", "REFUND"]
    return item


def signing_key(config: SandboxConfig, signing: Signing) -> bytes:
    """The key a scenario signs with (validated earlier: "rotated" needs two keys)."""
    if signing == "bad":
        return WRONG_KEY
    return config.hmac_key_bytes(1 if signing == "rotated" else 0)


def build_notification(
    config: SandboxConfig, item: dict[str, Any], signing: Signing
) -> dict[str, Any]:
    """The full webhook body: ``{"live": ..., "notificationItems": [...]}``, signed."""
    signed = dict(item)
    signed["additionalData"] = {
        **item.get("additionalData", {}),
        "hmacSignature": sign_item(item, signing_key(config, signing)),
    }
    return {
        "live": "true" if config.live else "false",
        "notificationItems": [{"NotificationRequestItem": signed}],
    }
