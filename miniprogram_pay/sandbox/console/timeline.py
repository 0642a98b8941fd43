"""One order's story from both sides, in time order (pure).

The sandbox knows what the shopper's Mini Program and the merchant's back office
sent the host (the console's relay), what the host asked Adyen for each of the
order's attempts, which webhooks Adyen sent and how the host answered each
delivery attempt, and the refunds made at Adyen. The host's own view, its
``GET /payments/{reference}`` for an admin, adds what it recorded, the states
its payment went through (each attempt's, when the order has several) and the
conflicts it found. ``build`` merges them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.sandbox.calls import AdyenCall
from miniprogram_pay.sandbox.console.relay import RelayRecord
from miniprogram_pay.sandbox.state import SandboxPayment, SandboxRefund
from miniprogram_pay.sandbox.webhooks import WebhookDelivery

__all__ = ["Entry", "Lane", "Tone", "build", "host_path"]

Lane = Literal["shopper", "merchant", "adyen", "webhook", "host", "state", "conflict", "refund"]
Tone = Literal["ok", "warn", "bad", "wait", "info"]
# Among entries stamped the same instant: cause before effect.
_LANE_ORDER: dict[str, int] = {
    lane: n
    for n, lane in enumerate(
        ("shopper", "merchant", "adyen", "refund", "webhook", "host", "state", "conflict")
    )
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Entry:
    at: str
    lane: Lane
    title: str
    detail: str = ""
    tone: Tone = "info"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _moment(at: str) -> datetime:
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        return _EPOCH
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _millisecond(at: str) -> datetime:
    moment = _moment(at)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _status_tone(status: int | None) -> Tone:
    if status is None:
        return "wait"
    return "ok" if 200 <= status < 300 else "bad"


def _money(amount: dict[str, Any]) -> str:
    value, currency = amount.get("value"), str(amount.get("currency"))
    try:
        return str(Amount(value, currency))  # type: ignore[arg-type]  # checked by Amount
    except ValueError:  # a currency the package does not take: its minor units as they are
        return f"{currency} {value} (minor units)"


def host_path(record: RelayRecord, api_base: str) -> str:
    """The request's path below the plugin's base URL (``/payments``), else the URL's path."""
    base = api_base.rstrip("/")
    if record.url.startswith(base):
        return record.url[len(base) :].split("?", 1)[0] or "/"
    return record.path


def _relay_detail(record: RelayRecord) -> str:
    answer = record.answer if isinstance(record.answer, dict) else {}
    if record.error:
        return record.error
    error = answer.get("error")
    if isinstance(error, dict):
        return f"{error.get('code')}: {error.get('message')}"
    parts = [
        f"{name} {answer[key]}"
        for key, name in (("state", "state"), ("resultCode", "resultCode"), ("pspReference", "psp"))
        if answer.get(key)
    ]
    if "token" in answer:
        parts.append("session token issued")
    return ", ".join(parts)


def _refund_answer_detail(record: RelayRecord) -> str:
    """The host's answer to a back-office refund: the refund and what is left."""
    answer = record.answer if isinstance(record.answer, dict) else {}
    refund, refunds = answer.get("refund"), answer.get("refunds")
    if not isinstance(refund, dict) or not isinstance(refunds, dict):
        return _relay_detail(record)
    left = refunds.get("refundable") or {}
    return (
        f"refund {refund.get('reference')} of {_money(refund.get('amount') or {})}"
        f" {refund.get('state')}; refundable {_money(left)}"
    )


_SENDERS = {"shopper": "Mini Program", "merchant": "back office"}


def _relay_entries(records: Iterable[RelayRecord], api_base: str) -> list[Entry]:
    entries = []
    for record in records:
        status = "..." if record.status_code is None and not record.error else record.status_code
        path = host_path(record, api_base)
        title = f"{_SENDERS[record.origin]} -> host: {record.method} {path} -> {status}"
        tone = "bad" if record.error else _status_tone(record.status_code)
        detail = _refund_answer_detail(record) if record.origin == "merchant" else None
        entries.append(
            Entry(record.at, record.origin, title, detail or _relay_detail(record), tone)
        )
    return entries


def _wechat_entries(payments: Sequence[SandboxPayment]) -> list[Entry]:
    entries = []
    for payment in payments:
        if payment.wechat_at is None or payment.wechat_outcome is None:
            continue
        ok = payment.wechat_outcome == "requestPayment:ok"
        detail = "the shopper answered the WeChat pay sheet"
        if len(payments) > 1:
            detail += f" for attempt {payment.merchant_reference}"
        title = f"wx.requestPayment -> {payment.wechat_outcome}"
        entries.append(Entry(payment.wechat_at, "shopper", title, detail, "ok" if ok else "warn"))
    return entries


_PATHS = {"payments": "/payments", "details": "/payments/details", "refunds": "/refunds"}


def _call_entries(calls: Iterable[AdyenCall]) -> list[Entry]:
    entries = []
    for call in calls:
        status = "no answer yet" if call.status_code is None else str(call.status_code)
        title = f"host -> Adyen: POST {_PATHS[call.endpoint]} -> {status}"
        notes = [call.result or ""]
        if call.fault:
            notes.append(f"injected fault: {call.fault}")
        if call.replayed:
            notes.append("replayed for the same Idempotency-Key")
        tone: Tone = "warn" if call.fault else _status_tone(call.status_code)
        entries.append(Entry(call.at, "adyen", title, "; ".join(n for n in notes if n), tone))
    return entries


def _delivery_label(delivery: WebhookDelivery) -> str:
    label = f"{delivery.event_code} success={delivery.success}"
    if delivery.copy > 1:
        label += f" (copy {delivery.copy})"
    if delivery.signing != "primary":
        label += f" [{delivery.signing} signature]"
    return label


def _webhook_entries(
    deliveries: Iterable[WebhookDelivery], attempts: dict[str, str]
) -> list[Entry]:
    """``attempts``: the attempt's reference by pspReference, when the order has several."""
    entries = []
    for delivery in deliveries:
        label = _delivery_label(delivery)
        amount = _money(delivery.item.get("amount", {}))
        payment = delivery.original_reference or delivery.psp_reference
        about = f"for {attempts[payment]}, " if payment in attempts else ""
        if delivery.original_reference:
            about += f"refund {delivery.psp_reference}, "
        for attempt in delivery.attempts:
            answer = attempt.status_code if attempt.status_code is not None else attempt.error
            verdict = "accepted" if attempt.accepted else "not accepted"
            title = f"Adyen -> host: {label} -> {answer}"
            detail = f"{about}{amount}, attempt {attempt.number}, {verdict}"
            entries.append(
                Entry(attempt.at, "webhook", title, detail, "ok" if attempt.accepted else "bad")
            )
    return entries


def _refund_entries(refunds: Sequence[SandboxRefund]) -> list[Entry]:
    entries = []
    for refund in refunds:
        where = "Customer Area" if refund.external else "POST /refunds"
        title = f"refund {_money(refund.amount)} at Adyen ({where})"
        detail = f"scenario {refund.scenario}, ends {refund.outcome}"
        if refund.refusal_reason:
            detail += f": {refund.refusal_reason}"
        entries.append(Entry(refund.created_at, "refund", title, detail, "info"))
    return entries


# A host event that moved the state or is a conflict has an entry of its own (state, conflict).
_SHOWN_ELSEWHERE = ("transition", "conflict")


def _attempt_entries(attempt: dict[str, Any], label: str) -> list[Entry]:
    """One attempt's recorded events and state changes; ``label`` names it among several."""
    entries = []
    for event in attempt.get("events", []):
        if event.get("outcome") in _SHOWN_ELSEWHERE:
            continue
        flag = event.get("success")
        success = "" if flag is None else f" success={str(flag).lower()}"
        title = f"host recorded {event.get('source')} {event.get('event')}{success}"
        detail = f"{label}{event.get('outcome')}: the state did not move"
        entries.append(Entry(str(event.get("at")), "host", title, detail))
    for change in attempt.get("history", []):
        before = change.get("from") or "(new)"
        title = f"state {before} -> {change.get('to')}"
        detail = f"{label}by {change.get('source')} {change.get('event')}"
        entries.append(Entry(str(change.get("at")), "state", title, detail, "ok"))
    return entries


def _host_entries(status: dict[str, Any]) -> list[Entry]:
    attempts = status.get("attempts") or []
    if len(attempts) > 1:  # the order's own history is its deciding attempt's: show each
        entries = [
            entry
            for attempt in attempts
            for entry in _attempt_entries(attempt, f"attempt {attempt.get('reference')}, ")
        ]
    else:
        entries = _attempt_entries(status, "")
    for conflict in status.get("conflicts", []):
        title = f"conflict: {conflict.get('kind')}"
        detail = f"{conflict.get('source')} {conflict.get('event')}; the state did not move"
        entries.append(Entry(str(conflict.get("at")), "conflict", title, detail, "bad"))
    return [*entries, *_host_refund_entries(status)]


def _host_refund_entries(status: dict[str, Any]) -> list[Entry]:
    """What the host recorded of each refund (the status answer's ``refunds``)."""
    entries = []
    for refund in (status.get("refunds") or {}).get("items", []):
        name = refund.get("reference") or refund.get("pspReference")
        for fact in refund.get("history", []):
            if fact.get("source") == "request":
                continue  # the refund's own record, shown as the /refunds call
            flag = fact.get("success")
            success = "" if flag is None else f" success={str(flag).lower()}"
            title = f"host recorded {fact.get('source')} {fact.get('event')}{success}"
            tone: Tone = "info"
            detail = f"refund {name}, {fact.get('outcome')}: its state did not move"
            if fact.get("to"):
                title += f": refund {fact.get('from') or '(new)'} -> {fact.get('to')}"
                detail, tone = f"refund {name}", "ok"
            if fact.get("conflict"):
                detail, tone = f"refund {name}, conflict {fact.get('conflict')}", "bad"
            entries.append(Entry(str(fact.get("at")), "host", title, detail, tone))
    return entries


def _attempt_names(payments: Sequence[SandboxPayment]) -> dict[str, str]:
    if len(payments) < 2:
        return {}
    return {payment.psp_reference: payment.merchant_reference for payment in payments}


def build(
    *,
    api_base: str,
    relayed: Iterable[RelayRecord],
    payments: Sequence[SandboxPayment],
    calls: Iterable[AdyenCall],
    deliveries: Iterable[WebhookDelivery],
    host: dict[str, Any] | None,
) -> list[Entry]:
    """Every entry, oldest first.

    Some clocks write milliseconds (webhook attempts), others microseconds: the
    entries of one millisecond go in cause-to-effect order by lane, and in their
    exact order within a lane (both sorts are stable).
    """
    entries = [
        *_relay_entries(relayed, api_base),
        *_wechat_entries(payments),
        *_call_entries(calls),
        *_refund_entries([refund for payment in payments for refund in payment.refunds]),
        *_webhook_entries(deliveries, _attempt_names(payments)),
        *_host_entries(host or {}),
    ]
    entries.sort(key=lambda e: _moment(e.at))
    entries.sort(key=lambda e: (_millisecond(e.at), _LANE_ORDER[e.lane]))
    return _collapse(entries)


def _collapse(entries: list[Entry]) -> list[Entry]:
    """Repeats in a row (a Mini Program polling its payment) as one entry: "... (x8)"."""
    out: list[tuple[Entry, int]] = []
    for entry in entries:
        if out and _same(out[-1][0], entry):
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((entry, 1))
    return [
        entry if count == 1 else dataclasses.replace(entry, title=f"{entry.title} (x{count})")
        for entry, count in out
    ]


def _same(a: Entry, b: Entry) -> bool:
    return (a.lane, a.title, a.detail, a.tone) == (b.lane, b.title, b.detail, b.tone)
