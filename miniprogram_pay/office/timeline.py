"""One payment's story as a time line: every event, webhook item, state change and delivery (pure).

The story's lists (``storage.admin.PaymentStory``) are merged by time, oldest
first. Each entry says what kind of thing happened (its lane), a one-line
summary, details, and whether it is a conflict, so the page can highlight it.
Ties keep a fixed order (a webhook is received before it is applied; a state
change happens before its delivery) so the line reads as cause, then effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES, Amount
from miniprogram_pay.storage.admin import PaymentStory

__all__ = ["Entry", "path_taken", "timeline"]

# Order of entries at the same instant: cause before effect.
_LANES = ("webhook", "event", "state", "delivery")


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    lane: str  # webhook (an item received), event (an answer or webhook applied), state, delivery
    title: str
    detail: str
    conflict: bool = False
    tone: str = ""  # ok, warn, bad, wait: how the page colours it


def timeline(story: PaymentStory) -> list[Entry]:
    entries = [
        *_webhooks(story),
        *_events(story),
        *_states(story),
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
                title=f"on_state_change({d.to_state.value}) {d.status}",
                detail=f"{d.event_id}, {tries}" + _and(d.last_error),
                tone=tone,
            )
        )
    return out


def _money(value: int | None, currency: str | None) -> str:
    """``, CNY 11.30`` (in the currency's own unit); another currency in minor units."""
    if value is None or not currency:
        return ""
    if currency in SUPPORTED_CURRENCIES and value > 0:
        return f", {Amount(value, currency)}"
    return f", {currency} {value} (minor units)"


def _and(text: str | None) -> str:
    return f"; {text}" if text else ""
