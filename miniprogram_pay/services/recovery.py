"""Operator recovery: offer parked state changes again, re-apply parked or ignored webhooks.

Nothing the package acknowledged is dropped: a state change the host kept
refusing, or a webhook item that kept failing, is *parked*, visible and logged.
Once the cause is fixed, these functions put it back in line; the worker loops
of any process take it from there. The HTTP admin endpoints and the CLI both
call them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from miniprogram_pay.services.payments import ignore_reason
from miniprogram_pay.storage.records import OutboxRecord
from miniprogram_pay.storage.stores import Storage

__all__ = ["NotificationRequeue", "requeue_notifications", "requeue_outbox"]

logger = logging.getLogger("miniprogram_pay.recovery")

RequeueStatus = Literal["parked", "ignored"]


@dataclass(frozen=True, slots=True)
class NotificationRequeue:
    """What a requeue did: the items due again, and ignored items still not ours (and why)."""

    requeued: list[int] = field(default_factory=list)
    kept: list[tuple[int, str]] = field(default_factory=list)


async def requeue_outbox(
    storage: Storage, *, ids: Sequence[int] | None = None
) -> list[OutboxRecord]:
    """Offer parked state changes (all, or ``ids``) to the host again, with a fresh window."""
    rows = await storage.outbox.requeue(ids=ids)
    if rows:
        logger.warning(
            "requeued %d parked state change(s): %s",
            len(rows),
            ", ".join(r.event_id for r in rows[:20]),
        )
    return rows


async def requeue_notifications(
    storage: Storage,
    *,
    status: RequeueStatus,
    merchant_account: str,
    live: bool,
    ids: Sequence[int] | None = None,
) -> NotificationRequeue:
    """Make parked or ignored webhook items (all, or ``ids``) due for applying now.

    A parked item is retried with fresh attempts. An ignored item is judged again
    against ``merchant_account`` and ``live`` (the settings as they are now): only
    one that is ours is requeued; the others stay ignored and are listed as kept.
    """
    if status == "parked":
        result = NotificationRequeue(await storage.inbox.requeue(status=status, ids=ids))
    else:
        result = await _requeue_ignored(storage, merchant_account, live, ids)
    if result.requeued:
        logger.warning("requeued %d %s webhook item(s)", len(result.requeued), status)
    return result


async def _requeue_ignored(
    storage: Storage, merchant_account: str, live: bool, ids: Sequence[int] | None
) -> NotificationRequeue:
    ours: list[int] = []
    kept: list[tuple[int, str]] = []
    for note in await storage.inbox.ignored(ids=ids):
        reason = ignore_reason(
            merchant_account=note.merchant_account,
            live=note.live,
            our_merchant_account=merchant_account,
            our_live=live,
        )
        if reason is None:
            ours.append(note.id)
        else:
            kept.append((note.id, reason))
    requeued = await storage.inbox.requeue(status="ignored", ids=ours) if ours else []
    return NotificationRequeue(requeued, kept)
