"""A record of every call the merchant made to the simulated Adyen, as it happened.

Each call is recorded when it arrives and completed when it is answered, so a
call that an injected timeout keeps waiting shows as unanswered. The console's
timeline and tests read it through ``GET /_sandbox/calls``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from miniprogram_pay.sandbox.faults import Endpoint

__all__ = ["AdyenCall", "CallLog"]


def _now() -> str:
    return datetime.now(UTC).isoformat()


@dataclass(slots=True)
class AdyenCall:
    """One request to ``/payments``, ``/payments/details`` or ``/payments/{psp}/refunds``.

    ``psp_reference`` and ``merchant_reference`` name the payment the call is
    about, as far as the request or the real answer tells (a refund's own
    pspReference is ``refund_psp_reference``).
    """

    id: int
    endpoint: Endpoint
    at: str
    idempotency_key: str | None
    psp_reference: str | None = None
    merchant_reference: str | None = None
    refund_psp_reference: str | None = None
    status_code: int | None = None  # None: not answered yet
    result: str | None = None  # resultCode, a refund's status, or an error's message
    fault: str | None = None  # the injected fault that answered instead
    replayed: bool = False  # answered from the idempotency store
    answered_at: str | None = None

    def learn(self, response: Response) -> None:
        """Take the payment's references and the result from a real answer."""
        body = _json(response)
        if not 200 <= response.status_code < 300:
            self.result = self.result or _text(body.get("message"))
            return
        if self.endpoint == "refunds":
            self.refund_psp_reference = _text(body.get("pspReference"))
            self.result = _text(body.get("status"))
            return
        self.psp_reference = _text(body.get("pspReference")) or self.psp_reference
        self.merchant_reference = _text(body.get("merchantReference")) or self.merchant_reference
        self.result = _text(body.get("resultCode"))

    def answer(self, response: Response, fault: str | None = None) -> None:
        self.status_code = response.status_code
        self.fault = fault
        if fault is not None and not 200 <= response.status_code < 300:
            self.result = _text(_json(response).get("message"))
        self.answered_at = _now()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "at": self.at,
            "idempotencyKey": self.idempotency_key,
            "pspReference": self.psp_reference,
            "merchantReference": self.merchant_reference,
            "refundPspReference": self.refund_psp_reference,
            "statusCode": self.status_code,
            "result": self.result,
            "fault": self.fault,
            "replayed": self.replayed,
            "answeredAt": self.answered_at,
        }


class CallLog:
    """Every call, in arrival order."""

    def __init__(self) -> None:
        self.calls: list[AdyenCall] = []

    def open(
        self,
        endpoint: Endpoint,
        *,
        idempotency_key: str | None,
        psp_reference: str | None = None,
        merchant_reference: str | None = None,
    ) -> AdyenCall:
        call = AdyenCall(
            id=len(self.calls) + 1,
            endpoint=endpoint,
            at=_now(),
            idempotency_key=idempotency_key,
            psp_reference=psp_reference,
            merchant_reference=merchant_reference,
        )
        self.calls.append(call)
        return call

    def about(
        self, *, psp_reference: str | None, merchant_reference: str | None
    ) -> list[AdyenCall]:
        """The calls about one payment, named by either reference."""
        return [
            call
            for call in self.calls
            if (psp_reference is not None and call.psp_reference == psp_reference)
            or (merchant_reference is not None and call.merchant_reference == merchant_reference)
        ]

    def clear(self) -> None:
        self.calls.clear()


def _json(response: Response) -> dict[str, Any]:
    try:
        body = json.loads(bytes(response.body))
    except (ValueError, TypeError):
        return {}
    return body if isinstance(body, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
