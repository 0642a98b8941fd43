"""One payment's story as a time line: every event, webhook item, state change, refund fact
and delivery (pure).

The story's lists (``storage.admin.PaymentStory``) are merged by time, oldest
first. Each entry says what kind of thing happened (its lane), a one-line
summary, details, and whether it is a conflict, so the page can highlight it.
Ties keep a fixed order (a webhook is received before it is applied; a state
change or a refund's move happens before its delivery) so the line reads as
cause, then effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES, Amount
from miniprogram_pay.domain.refunds import REFUND_EVENT_CODES, RefundState
from miniprogram_pay.storage.admin import PaymentStory
from miniprogram_pay.storage.records import OutboxRecord, Refund, RefundHistory

__all__ = ["Entry", "path_taken", "timeline"]

# Order of entries at the same instant: cause before effect.
_LANES = ("webhook", "event", "state", "refund", "delivery")
_REFUND_TONES = {
    RefundState.REFUNDED: "ok",
    RefundState.REFUSED: "bad",
    RefundState.FAILED: "bad",
    RefundState.REVERSED: "bad",
    RefundState.REQUESTED: "wait",
    RefundState.RECEIVED: "wait",
}


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    # webhook (an item received), event (an answer or webhook applied), state, refund (a fact
    # applied to a refund), delivery
    lane: str
    title: str
    detail: str
    conflict: bool = False
    tone: str = ""  # ok, warn, bad, wait: how the page colours it


def timeline(story: PaymentStory) -> list[Entry]:
    entries = [
        *_webhooks(story),
        *_events(story),
        *_states(story),
        *_refunds(story),
        *_deliveries(story),
    ]
    return sorted(entries, key=lambda e: (e.at, _LANES.index(e.lane)))


def path_taken(story: PaymentStory) -> list[tuple[str | None, str]]:
    """The moves of the state machine, in order: ``(from, to)`` (``from`` None: created)."""
    return [
        (t.from_state.value if t.from_state else None, t.to_state.value) for t in story.transitions
    ]


def _webhooks(story: PaymentStory) -> list[Entry]:
    out = []
    for n in story.webhooks:
        success = "true" if n.success else "false"
        copies = f", delivered {n.deliveries} times" if n.deliveries > 1 else ""
        if n.event_code in REFUND_EVENT_CODES:
            copies += f", refund {n.merchant_reference} ({n.psp_reference})"
        tone = {"parked": "bad", "failed": "warn"}.get(n.status, "")
        out.append(
            Entry(
                at=n.received_at,
                lane="webhook",
                title=f"Webhook {n.event_code} success={success} received",
                detail=f"inbox item #{n.id}, {n.status}{copies}" + _and(n.detail),
                tone=tone,
            )
        )
    return out


def _events(story: PaymentStory) -> list[Entry]:
    out = []
    for e in story.events:
        success = "" if e.success is None else f" success={'true' if e.success else 'false'}"
        money = _money(e.amount_value, e.amount_currency)
        detail = f"outcome {e.outcome}{money}" + _and(e.reason)
        if e.conflict:
            detail = f"conflict: {e.conflict}; " + detail
        out.append(
            Entry(
                at=e.at,
                lane="event",
                title=f"{e.source}: {e.kind}{success}",
                detail=detail,
                conflict=e.conflict is not None,
                tone="bad" if e.conflict else "",
            )
        )
    return out


def _states(story: PaymentStory) -> list[Entry]:
    out = []
    for t in story.transitions:
        start = t.from_state.value if t.from_state else "(new)"
        tone = {"Authorised": "ok", "Refused": "bad", "Error": "bad", "Pending": "wait"}
        out.append(
            Entry(
                at=t.at,
                lane="state",
                title=f"{start} → {t.to_state.value}",
                detail=f"by {t.source} ({t.event_kind})",
                tone=tone.get(t.to_state.value, ""),
            )
        )
    return out


def _refunds(story: PaymentStory) -> list[Entry]:
    return [_refund_fact(r, h) for r in story.refunds for h in r.history]


def _refund_fact(refund: Refund, fact: RefundHistory) -> Entry:
    name = refund.reference or refund.psp_reference or f"#{refund.number}"
    success = "" if fact.success is None else f" success={'true' if fact.success else 'false'}"
    if fact.to_state is not None:
        start = fact.from_state.value if fact.from_state else "(new)"
        title = f"Refund {name}: {start} → {fact.to_state.value}"
    else:
        title = f"Refund {name}: {fact.kind}{success} {fact.outcome}"
    money = f", {refund.amount}" if refund.amount else ""
    detail = f"by {fact.source} ({fact.kind}{success}){money}" + _and(fact.reason)
    if fact.conflict:
        detail = f"conflict: {fact.conflict}; " + detail
    tone = _REFUND_TONES.get(fact.to_state, "") if fact.to_state else ""
    return Entry(
        at=fact.at,
        lane="refund",
        title=title,
        detail=detail,
        conflict=fact.conflict is not None,
        tone="bad" if fact.conflict else tone,
    )


def _deliveries(story: PaymentStory) -> list[Entry]:
    out = []
    for d in story.deliveries:
        tries = f"{d.attempts} attempt{'s' if d.attempts != 1 else ''}"
        tone = {"delivered": "ok", "parked": "bad", "pending": "wait"}.get(d.status, "")
        at = d.delivered_at or d.created_at
        out.append(
            Entry(
                at=at,
                lane="delivery",
                title=f"on_state_change({_told(d)}) {d.status}",
                detail=f"{d.event_id}, {tries}" + _and(d.last_error),
                tone=tone,
            )
        )
    return out


def _told(delivery: OutboxRecord) -> str:
    """What the host is told: the payment's state, or a refund's move."""
    change = delivery.refund
    if delivery.kind != "refund" or change is None:
        return delivery.to_state.value
    return f"refund {change.reference or change.psp_reference}: {change.state.value}"


def _money(value: int | None, currency: str | None) -> str:
    """``, CNY 11.30`` (in the currency's own unit); another currency in minor units."""
    if value is None or not currency:
        return ""
    if currency in SUPPORTED_CURRENCIES and value > 0:
        return f", {Amount(value, currency)}"
    return f", {currency} {value} (minor units)"


def _and(text: str | None) -> str:
    return f"; {text}" if text else ""
