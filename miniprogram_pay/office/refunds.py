"""The back office's refunds: a payment's ledger and refunds, and the refund action.

The payment's page shows its ledger (refunded, pending, returned, refundable), each
refund with its history, and a form: an amount in the currency's major units
(``3.76`` for CNY 3.76; whole yen for JPY; empty: everything refundable) and a
reason. The form asks ``GET /admin/office/refund``, a confirmation saying exactly
what will be refunded and what is left, checked by the rule the refund will be
held to (``RefundService.preview``). Only its ``POST`` refunds, through
``RefundService.refund``, with the amount in minor units and an idempotency key
made for that confirmation: a double submit, a reload or a retry of the same
confirmation is one refund. The answer is the payment's page with the outcome, or
the refusal's code and message.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES
from miniprogram_pay.domain.refunds import RefundReason, RefundState, parse_refund_reason
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import AdyenError, InvalidRefundError, MiniProgramPayError
from miniprogram_pay.http import schemas
from miniprogram_pay.http.context import Plugin
from miniprogram_pay.pages import SECURITY_HEADERS
from miniprogram_pay.services.refunds import can_refund, ledger_of
from miniprogram_pay.storage.admin import PaymentStory
from miniprogram_pay.storage.records import Refund

__all__ = [
    "LedgerPanel",
    "Outcome",
    "RefundPages",
    "format_money",
    "minor_units",
    "refund_outcome",
    "refunds_panel",
]

# "office-" and 32 URL-safe characters: made for one confirmation, never typed by a person.
KEY_PATTERN = re.compile(r"office-[A-Za-z0-9_-]{32}")
REASONS = tuple(reason.value for reason in RefundReason)
# What each state of a refund just asked for means for the person who asked.
STATE_NEWS = {
    RefundState.REQUESTED: "stored; Adyen has not answered yet, and is asked again within "
    "minutes with the same Idempotency-Key",
    RefundState.RECEIVED: "Adyen has it; its outcome comes in Adyen's webhook",
    RefundState.REFUNDED: "refunded: the money went back to the shopper",
    RefundState.REFUSED: "refused by Adyen: no money moved",
    RefundState.FAILED: "failed after Adyen took it: the money is back with you",
    RefundState.REVERSED: "reversed: the money came back to you",
}
TONES = {
    RefundState.REFUNDED: "ok",
    RefundState.REFUSED: "bad",
    RefundState.FAILED: "bad",
    RefundState.REVERSED: "bad",
}


class OfficePages(Protocol):
    """What the refund pages use of the back office (``routes.Office``)."""

    def visitor(self, request: Request) -> tuple[Plugin, str | None]: ...

    async def action(self, request: Request) -> tuple[Plugin, dict[str, str]] | None: ...

    def refused(self, request: Request) -> Response: ...

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        *,
        status_code: int = 200,
    ) -> Response: ...

    async def payment_page(
        self,
        request: Request,
        plugin: Plugin,
        csrf: str,
        reference: str,
        *,
        refund_number: int | None = None,
        refusal: MiniProgramPayError | None = None,
    ) -> Response: ...


# -- money as a person reads and types it -------------------------------------------------


def format_money(value: int, currency: str) -> str:
    """``CNY 3.76``; zero included (``CNY 0.00``), which ``Amount`` does not hold."""
    exponent = SUPPORTED_CURRENCIES.get(currency, 0)
    if exponent == 0:
        return f"{currency} {value}"
    whole, minor = divmod(value, 10**exponent)
    return f"{currency} {whole}.{minor:0{exponent}d}"


def minor_units(text: str | None, currency: str) -> int | None:
    """The amount typed in major units (``3.76``), in minor units (376); None when empty.

    At most as many decimals as the currency has (none for JPY), ASCII digits only.
    """
    typed = (text or "").strip()
    if not typed:
        return None
    exponent = SUPPORTED_CURRENCIES.get(currency, 0)
    decimals = rf"(?:\.[0-9]{{1,{exponent}}})?" if exponent else ""
    if not re.fullmatch(rf"[0-9]{{1,15}}{decimals}", typed):
        example = "500" if exponent == 0 else "3.76"
        kind = "a whole number" if exponent == 0 else f"at most {exponent} decimals"
        raise InvalidRefundError(
            f"the amount is in {currency}, {kind}, e.g. {example}", code="invalid_refund_amount"
        )
    whole, _, fraction = typed.partition(".")
    value: int = int(whole) * 10**exponent + int(fraction.ljust(exponent, "0") or "0")
    if value == 0:
        raise InvalidRefundError("the amount must be above zero", code="invalid_refund_amount")
    return value


# -- what the payment's page shows ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerPanel:
    """A payment's refund ledger, as the page prints it."""

    refunded: str
    pending: str
    returned: str
    refundable: str
    refundable_value: int
    disputed: bool
    currency: str
    exponent: int
    why_not: str | None
    """Why no refund can be asked for now (None: one can)."""
    items: list[Refund]
    reasons: tuple[str, ...] = REASONS


def refunds_panel(story: PaymentStory) -> LedgerPanel:
    payment = story.payment
    currency = payment.amount.currency
    ledger = ledger_of(payment, story.refunds)
    refundable = ledger.refundable_value if can_refund(payment) else 0
    why_not = None
    if not can_refund(payment):
        why_not = f"Only an Authorised payment can be refunded; this one is {payment.state.value}."
    elif ledger.disputed:
        why_not = "A refund states contradicting amounts: check it in Adyen's Customer Area."
    elif refundable == 0:
        why_not = "Nothing is left to refund."
    return LedgerPanel(
        refunded=format_money(ledger.refunded_value, currency),
        pending=format_money(ledger.pending_value, currency),
        returned=format_money(ledger.returned_value, currency),
        refundable=format_money(refundable, currency),
        refundable_value=refundable,
        disputed=ledger.disputed,
        currency=currency,
        exponent=SUPPORTED_CURRENCIES.get(currency, 0),
        why_not=why_not,
        items=story.refunds,
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """The notice at the top of the payment's page after a refund was asked for on it."""

    tone: str  # ok, wait, bad
    text: str
    code: str | None = None


def refund_outcome(
    story: PaymentStory, number: int | None, refusal: MiniProgramPayError | None
) -> Outcome | None:
    if refusal is not None:
        return _refusal(refusal)
    refund = next((r for r in story.refunds if r.number == number), None)
    if refund is None or refund.state is None or refund.amount is None:
        return None
    text = f"Refund {refund.reference} of {refund.amount}: {STATE_NEWS[refund.state]}."
    return Outcome(TONES.get(refund.state, "wait"), text)


def _refusal(error: MiniProgramPayError) -> Outcome:
    if isinstance(error, AdyenError) and error.code != "adyen_rejected":
        text = (
            f"Adyen could not be asked ({error.message}). The refund is stored as Requested "
            "and holds its amount; it is asked again within minutes with the same "
            "Idempotency-Key, never made twice."
        )
    elif isinstance(error, AdyenError):
        text = f"Adyen refused the refund: {error.message}. No money moved."
    else:
        text = f"Not refunded: {error.message}."
    return Outcome("bad", text, error.code)


# -- the confirmation and the action ------------------------------------------------------


class RefundPages:
    """``GET <office>/refund``: the confirmation; ``POST <office>/refund``: the refund."""

    def __init__(self, office: OfficePages, office_path: str) -> None:
        self.office = office
        self.office_path = office_path

    def routes(self) -> list[BaseRoute]:
        path = self.office_path + "/refund"
        return [
            Route(path, self.confirm, methods=["GET"]),
            Route(path, self.refund, methods=["POST"]),
        ]

    def _base(self, request: Request) -> str:
        return str(request.scope.get("root_path", "")) + self.office_path

    async def confirm(self, request: Request) -> Response:
        plugin, csrf = self.office.visitor(request)
        if csrf is None:
            return RedirectResponse(self._base(request) + "/login", 303, headers=SECURITY_HEADERS)
        params = request.query_params
        reference = schemas.path_reference(params.get("reference", ""))
        story = await plugin.admin.story(reference)
        if story is None:
            missing = {"csrf": csrf, "reference": reference}
            return self.office.render(request, "office_missing.html", missing, status_code=404)
        context: dict[str, Any] = {"csrf": csrf, "story": story, "error": None}
        try:
            context.update(self._preview(plugin, story, params.get("amount"), params))
        except MiniProgramPayError as exc:
            context["error"] = _refusal(exc)
            return self.office.render(
                request, "office_refund_confirm.html", context, status_code=exc.status
            )
        return self.office.render(request, "office_refund_confirm.html", context)

    def _preview(
        self, plugin: Plugin, story: PaymentStory, typed: str | None, params: Mapping[str, str]
    ) -> dict[str, Any]:
        payment = story.payment
        currency = payment.amount.currency
        value = minor_units(typed, currency)
        reason = parse_refund_reason(params.get("reason") or None)
        authorised_at = next(
            (t.at for t in story.transitions if t.to_state is PaymentState.AUTHORISED), None
        )
        amount = plugin.refunds.preview(payment, authorised_at, story.refunds, value)
        ledger = refunds_panel(story)
        return {
            "amount": amount,
            "everything": value is None,
            "left": format_money(ledger.refundable_value - amount.value, currency),
            "reason": reason.value if reason else None,
            "key": "office-" + secrets.token_urlsafe(24),
            "ledger": ledger,
        }

    async def refund(self, request: Request) -> Response:
        allowed = await self.office.action(request)
        if allowed is None:
            return self.office.refused(request)
        plugin, form = allowed
        reference = schemas.path_reference(form.get("reference", ""))
        csrf = form.get("csrf", "")
        try:
            value, reason, key = _refund_form(form)
            refund = await plugin.refunds.refund(
                reference, value, reason=reason, idempotency_key=key
            )
        except MiniProgramPayError as exc:
            return await self.office.payment_page(request, plugin, csrf, reference, refusal=exc)
        page = f"{self._base(request)}/payments/{quote(reference)}?refund={refund.number}"
        return RedirectResponse(page, 303)


def _refund_form(form: Mapping[str, str]) -> tuple[int, RefundReason | None, str]:
    """The confirmation's fields: the amount in minor units, the reason, its key."""
    value, key = form.get("value", ""), form.get("key", "")
    if not (value.isascii() and value.isdigit() and 0 < len(value) <= 18 and int(value) > 0):
        raise InvalidRefundError(
            "the amount must be a positive number of minor units", code="invalid_refund_amount"
        )
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidRefundError(
            "this form is not a refund confirmation: ask for the refund again",
            code="invalid_idempotency_key",
        )
    return int(value), parse_refund_reason(form.get("reason") or None), key
