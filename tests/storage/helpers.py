"""What the storage tests share: a payment, events and webhook items to feed them."""

from __future__ import annotations

from typing import Any

from miniprogram_pay.domain.events import EventSource, PaymentEvent, result_event, webhook_event
from miniprogram_pay.domain.machine import TRANSITIONS
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.storage import (
    InboxItem,
    PaymentRecord,
    Storage,
)

AMOUNT = Amount(1130, "CNY")


PSP = "7914073381342284"


ALLOWED_MOVES = {(src, str(t["dest"])) for t in TRANSITIONS for src in t["source"]}


async def create(storage: Storage, reference: str = "order-1") -> PaymentRecord:
    payment, created = await storage.payments.create(
        reference=reference, openid="o-shopper", amount=AMOUNT, idempotency_key=f"idem-{reference}"
    )
    assert created
    return payment


def details(result_code: str, **overrides: Any) -> PaymentEvent:
    fields: dict[str, Any] = {"psp_reference": PSP, "amount_value": 1130, "amount_currency": "CNY"}
    return result_event(EventSource.DETAILS, result_code, **{**fields, **overrides})


def webhook(dedup_key: str, code: str = "AUTHORISATION", success: bool = True) -> PaymentEvent:
    return webhook_event(
        code,
        success,
        dedup_key=dedup_key,
        psp_reference=PSP,
        amount_value=AMOUNT.value,
        amount_currency=AMOUNT.currency,
    )


def inbox_item(dedup_key: str = "d" * 64, **overrides: Any) -> InboxItem:
    fields: dict[str, Any] = {
        "dedup_key": dedup_key,
        "psp_reference": PSP,
        "merchant_reference": "order-1",
        "event_code": "AUTHORISATION",
        "success": True,
        "amount_value": AMOUNT.value,
        "amount_currency": AMOUNT.currency,
        "reason": None,
        "raw_json": '{"eventCode":"AUTHORISATION"}',
    }
    return InboxItem(**{**fields, **overrides})
