"""The merchant's refund from the console: the host's admin refund endpoint, called by the sandbox.

The page names the payment, the amount (none: everything left), a reason and
what Adyen does with the refund (a refund scenario). The sandbox sets that
scenario for the payment's attempts, then sends the refund as a back office
would, ``POST {api}/admin/payments/{reference}/refunds`` with the host's admin
key. The key is sent and never recorded, logged or answered; the amount and
the reason go to the host as the page gave them, so the host's own checks (and
their error codes) are what the page shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from miniprogram_pay.sandbox.console.relay import WxRequest
from miniprogram_pay.sandbox.scenarios import REFUND_SCENARIOS

__all__ = ["RefundOrder", "RefundOrderError", "parse_refund_order"]

MAX_REFERENCE_CHARS = 256


class RefundOrderError(ValueError):
    """A console refund the page could not have meant."""


@dataclass(frozen=True, slots=True)
class RefundOrder:
    """One "refund through the host" of the page, for the payment ``reference``."""

    run: str
    reference: str
    scenario: str
    body: dict[str, Any]

    def request(self, api: str) -> WxRequest:
        """The back office's request to the host's plugin mounted at ``api``."""
        url = f"{api}/admin/payments/{quote(self.reference, safe='')}/refunds"
        return WxRequest(self.run, url, "POST", {"content-type": "application/json"}, self.body)


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise RefundOrderError(f"{name} must be a string")
    return value or None


def parse_refund_order(body: Any) -> RefundOrder:
    """Check ``{run, reference, scenario, amount?, reason?, idempotencyKey?}`` from the page."""
    if not isinstance(body, dict):
        raise RefundOrderError(
            "send a JSON object: {run, api, reference, scenario, amount, reason}"
        )
    run, reference = body.get("run"), body.get("reference")
    if not isinstance(run, str) or not 0 < len(run) <= 64:
        raise RefundOrderError("run must be a string of 1 to 64 characters")
    if not isinstance(reference, str) or not 0 < len(reference) <= MAX_REFERENCE_CHARS:
        raise RefundOrderError(
            f"reference must be a string of 1 to {MAX_REFERENCE_CHARS} characters"
        )
    scenario = body.get("scenario")
    if scenario not in REFUND_SCENARIOS:
        raise RefundOrderError(f"scenario must be one of {sorted(REFUND_SCENARIOS)}")
    amount = body.get("amount")
    if amount is not None and not isinstance(amount, dict):
        raise RefundOrderError("amount must be an object {currency, value}, or null for all")
    sent = {
        "amount": amount,
        "reason": _optional_str(body, "reason"),
        "idempotencyKey": _optional_str(body, "idempotencyKey"),
    }
    return RefundOrder(run, reference, scenario, {k: v for k, v in sent.items() if v is not None})
