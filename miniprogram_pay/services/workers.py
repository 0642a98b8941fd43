"""Background work: apply stored webhooks, deliver state changes to the host.

Both loops are safe to run in every worker process at once: inbox items are
taken with ``SKIP LOCKED`` and outbox rows are leased, so each is handled by
one worker at a time, and a crashed worker's share is picked up when its lease
ends or the process restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from miniprogram_pay.retrying import Backoff
from miniprogram_pay.services.hooks import StateChange, StateChangeHook
from miniprogram_pay.storage.records import OutboxEvent
from miniprogram_pay.storage.repository import PaymentRepository

__all__ = ["Workers", "outbox_backoff"]

logger = logging.getLogger("miniprogram_pay.workers")

POLL_SECONDS = 1.0
OUTBOX_MAX_ATTEMPTS = 12
MAX_BACKOFF_SECONDS = 300.0
OUTBOX_BACKOFF = Backoff(base_seconds=0.5, cap_seconds=MAX_BACKOFF_SECONDS)
# Bounds one wake-up's work, so items another process holds cannot keep this loop spinning.
MAX_PASSES_PER_WAKE = 20
STALE_CHECK_SECONDS = 300.0
INBOX_BATCH = 50
OUTBOX_BATCH = 20


def outbox_backoff(attempt: int) -> float:
    """Seconds before retrying a failed delivery: the package's backoff policy."""
    return OUTBOX_BACKOFF.delay(attempt)


class Workers:
    """The inbox and outbox loops of one process."""

    def __init__(
        self,
        *,
        apply_notifications: Callable[[Sequence[int]], Awaitable[None]],
        repository: PaymentRepository,
        on_state_change: StateChangeHook | None,
        poll_seconds: float = POLL_SECONDS,
        stale_after_seconds: int | None = None,
    ) -> None:
        self.apply_notifications = apply_notifications
        self.repository = repository
        self.on_state_change = on_state_change
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._saturated = False
        self.stale_after_seconds = stale_after_seconds
        self._next_stale_check = 0.0

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def kick(self) -> None:
        """Something was committed: look at the inbox and outbox now, not at the next poll."""
        self._wake.set()

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run(), name="miniprogram-pay-workers")]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _run(self) -> None:
        while True:
            try:
                # Keep going while passes find work: one pass takes at most a batch, and
                # a backlog must not wait a whole poll interval per batch.
                for _ in range(MAX_PASSES_PER_WAKE):
                    await self.run_once()
                    if not self._saturated:
                        break
                if time.monotonic() >= self._next_stale_check:
                    self._next_stale_check = time.monotonic() + STALE_CHECK_SECONDS
                    await self.report_stale()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("background pass failed; retrying at the next poll")
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands just
            # as kick() sets the event, and stop() would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_seconds):
                    await self._wake.wait()
            self._wake.clear()

    async def run_once(self, *, include_leased: bool = False) -> int:
        """One pass over due inbox items and outbox rows; returns how many were handled.

        Items just stored by a webhook request are leased to it (see
        ``PaymentService.store_webhook``) and are not due here until the lease ends.
        """
        due, outbox_due = await self.repository.due_work(
            limit=INBOX_BATCH, include_leased=include_leased
        )
        if due:
            await self.apply_notifications(due)
        delivered = await self._deliver_due() if outbox_due else 0
        # A full batch means more may be waiting; anything committed later kicks us anyway.
        self._saturated = len(due) >= INBOX_BATCH or delivered >= OUTBOX_BATCH
        return len(due) + delivered

    async def _deliver_due(self) -> int:
        """Deliver leased outbox rows; the delivered ones are marked in one transaction."""
        self._in_flight += 1
        try:
            events = await self.repository.claim_outbox(limit=OUTBOX_BATCH, known_due=True)
            delivered = [event.id for event in events if await self._deliver(event)]
            await self.repository.outbox_delivered_many(delivered)
            return len(events)
        finally:
            self._in_flight -= 1

    async def drain(self, *, timeout_seconds: float = 30.0) -> None:
        """Apply and deliver everything due now, then return (tests, scripts, shutdown).

        Items leased to a request's background task are taken too (applying twice
        is harmless), and it waits for deliveries this process has in flight,
        so on return every change committed before the call has reached the hook
        (or failed there and been rescheduled).
        """
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            handled = await self.run_once(include_leased=True)
            idle = handled == 0 and self._in_flight == 0
            if idle and not await self.repository.due_notifications(limit=1, include_leased=True):
                return
            if handled == 0:
                await asyncio.sleep(0.01)
        logger.warning("drain stopped after %.0f s with work still due", timeout_seconds)

    async def report_stale(self) -> int:
        """Log payments stuck in Created or Pending; returns how many were found."""
        if self.stale_after_seconds is None:
            return 0
        stale = await self.repository.stale_payments(older_than_seconds=self.stale_after_seconds)
        if stale:
            logger.warning(
                "%d payment(s) still Created or Pending after %d s, oldest %s (GET /admin/stale)",
                len(stale),
                self.stale_after_seconds,
                stale[0].reference,
            )
        return len(stale)

    async def _deliver(self, event: OutboxEvent) -> bool:
        """Tell the host; True when it took the change, False when it will be retried."""
        if self.on_state_change is None:
            return True
        change = StateChange(
            event_id=event.event_id,
            reference=event.reference,
            previous=event.from_state,
            state=event.to_state,
            source=event.source,
            occurred_at=event.created_at,
            attempt=event.attempts,
        )
        try:
            await self.on_state_change(change)
        except Exception as exc:
            park = event.attempts >= OUTBOX_MAX_ATTEMPTS
            logger.exception(
                "on_state_change failed for %s (attempt %d%s)",
                event.event_id,
                event.attempts,
                ", parked" if park else "",
            )
            await self.repository.outbox_failed(
                event.id,
                error=type(exc).__name__,
                retry_in_seconds=outbox_backoff(event.attempts),
                park=park,
            )
            return False
        return True
