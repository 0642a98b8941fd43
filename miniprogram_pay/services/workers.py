"""Background work of one process: apply stored webhooks, tell the host of changes.

Two loops, independent of each other: the *inbox* loop applies webhook items that are
due (a crashed request's, a failed item's retry), the *outbox* loop finds state changes
no delivery of this process holds (another process died with them leased, a failed
delivery's retry is due, an operator requeued one) and starts their deliveries
(``services/delivery.py``). A change committed by this process never waits for that
poll: it is handed to its delivery in memory as it commits.

Each loop is supervised: a pass that raises anything, an ``asyncio.CancelledError``
that is not a cancellation of the loop's task or another ``BaseException``
included, is logged and the loop goes on; a hook's, in its delivery task, the
same. Only a cancellation of the task ends a loop: ``stop()`` (the lifespan's
shutdown), or, logged loudly, anyone else's (an event loop closing, a host
cancelling every task). ``loop_states()`` says whether each loop is running,
stalled or dead, for ``/health``.

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
from dataclasses import dataclass, field
from enum import StrEnum

from miniprogram_pay.observability.context import ChangeOrigins
from miniprogram_pay.observability.metrics import NO_METRICS, Metrics
from miniprogram_pay.services.delivery import Deliveries, cancelled_from_outside
from miniprogram_pay.services.hooks import StateChangeHook
from miniprogram_pay.storage.stores import Storage

__all__ = ["LoopState", "Workers"]

logger = logging.getLogger("miniprogram_pay.workers")

POLL_SECONDS = 1.0
# Bounds one wake-up's work, so items another process holds cannot keep this loop spinning.
MAX_PASSES_PER_WAKE = 20
REPORT_SECONDS = 300.0
INBOX_BATCH = 50
MAX_CONCURRENT_DELIVERIES = 16
# A row stays leased this much longer than a hook call may last: the worker that
# holds it records the outcome before another worker may take it.
LEASE_MARGIN_SECONDS = 20.0
HOOK_TIMEOUT_SECONDS = 10.0
PARK_AFTER_SECONDS = 3 * 24 * 3600
# A pass that has not finished after this long is reported as stalled.
STALL_AFTER_SECONDS = 60.0
# On shutdown, deliveries in flight get this long to finish before they are cancelled
# (a cancelled one is delivered again later: its row is still leased, not delivered).
SHUTDOWN_GRACE_SECONDS = 5.0


class LoopState(StrEnum):
    OFF = "off"
    """Not started (``run_workers=False``, or not started yet)."""
    RUNNING = "running"
    STALLED = "stalled"
    """Alive, but one pass has been running for longer than ``stall_after_seconds``."""
    DEAD = "dead"
    """The task ended while the plugin runs: nothing of its kind happens any more."""


@dataclass
class _Loop:
    """One supervised loop: its pass, its wake-up event and what liveness needs."""

    name: str
    run_pass: Callable[[], Awaitable[None]]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    pass_started: float | None = None  # monotonic; None between passes


class Workers:
    """The inbox and outbox loops of one process, and the deliveries they start."""

    def __init__(
        self,
        *,
        apply_notifications: Callable[[Sequence[int]], Awaitable[None]],
        storage: Storage,
        on_state_change: StateChangeHook | None,
        poll_seconds: float = POLL_SECONDS,
        stale_after_seconds: int | None = None,
        hook_timeout_seconds: float = HOOK_TIMEOUT_SECONDS,
        park_after_seconds: int = PARK_AFTER_SECONDS,
        lease_seconds: float | None = None,
        max_concurrent_deliveries: int = MAX_CONCURRENT_DELIVERIES,
        stall_after_seconds: float = STALL_AFTER_SECONDS,
        metrics: Metrics = NO_METRICS,
        origins: ChangeOrigins | None = None,
        ask_again: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.apply_notifications = apply_notifications
        # Asks Adyen again for what it never answered (refunds left Requested by a crash).
        self.ask_again = ask_again
        self.metrics = metrics
        # Which request caused a change: its hook call runs with that request's id.
        self.origins = origins or ChangeOrigins()
        self.storage = storage
        self.poll_seconds = poll_seconds
        self.stale_after_seconds = stale_after_seconds
        self.stall_after_seconds = stall_after_seconds
        self.deliveries = Deliveries(
            outbox=storage.outbox,
            on_state_change=on_state_change,
            hook_timeout_seconds=hook_timeout_seconds,
            park_after_seconds=park_after_seconds,
            lease_seconds=lease_seconds or hook_timeout_seconds + LEASE_MARGIN_SECONDS,
            max_concurrent=max_concurrent_deliveries,
            metrics=metrics,
            origins=self.origins,
        )
        self._inbox = _Loop("inbox", self._inbox_pass)
        self._outbox = _Loop("outbox", self._outbox_pass)
        self.deliveries.on_slot_free = self._outbox.wake.set
        self._stopping = False
        self._next_report = 0.0

    # -- life cycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return any(loop.task is not None for loop in self._loops)

    @property
    def _loops(self) -> tuple[_Loop, _Loop]:
        return (self._inbox, self._outbox)

    def start(self) -> None:
        self._stopping = False
        for loop in self._loops:
            if loop.task is None:
                self._spawn(loop)
        self.deliveries.accepting = True

    def _spawn(self, loop: _Loop) -> None:
        task = asyncio.create_task(self._supervise(loop), name=f"mpp-{loop.name}")
        loop.task = task
        task.add_done_callback(lambda ended: self._ended(loop, ended))

    def _ended(self, loop: _Loop, task: asyncio.Task[None]) -> None:
        if self._stopping or loop.task is not task:
            return
        # Not started again: the event loop may be closing (asyncio.run cancels every
        # task on its way out), and a loop that refused to end would hang the process.
        logger.error(
            "the %s loop was cancelled, not by the plugin's shutdown: this process no longer "
            "%s; GET /health answers 503 until it restarts",
            loop.name,
            "applies stored webhooks" if loop.name == "inbox" else "tells the host of changes",
        )

    async def stop(self) -> None:
        """Stop both loops, give deliveries in flight a moment, then cancel the rest.

        A loop ends after its current pass; one still busy after the grace period is
        cancelled (its work is picked up again later: leases end, items stay due).
        """
        self._stopping = True
        self.deliveries.accepting = False
        tasks = [loop.task for loop in self._loops if loop.task is not None]
        for loop in self._loops:
            loop.wake.set()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE_SECONDS)
            for task in late:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for loop in self._loops:
            loop.task, loop.pass_started = None, None
        await self.deliveries.stop(SHUTDOWN_GRACE_SECONDS)

    def kick(self) -> None:
        """Look at the inbox and the outbox now, not at the next poll."""
        self._inbox.wake.set()
        self._outbox.wake.set()

    def loop_states(self) -> dict[str, LoopState]:
        """Each loop's liveness, for ``/health``."""
        return {loop.name: self._state(loop) for loop in self._loops}

    @property
    def deliveries_in_flight(self) -> int:
        return self.deliveries.in_flight

    def _state(self, loop: _Loop) -> LoopState:
        if loop.task is None:
            return LoopState.OFF
        if loop.task.done():
            return LoopState.DEAD
        started = loop.pass_started
        if started is not None and time.monotonic() - started > self.stall_after_seconds:
            return LoopState.STALLED
        return LoopState.RUNNING

    # -- supervision ------------------------------------------------------------------

    async def _supervise(self, loop: _Loop) -> None:
        while not self._stopping:
            await self._guarded(loop, self._timed_pass)
            if not self._stopping:
                await self._guarded(loop, self._idle)

    async def _guarded(self, loop: _Loop, step: Callable[[_Loop], Awaitable[None]]) -> None:
        """Run one step of a loop; only a cancellation of the loop's own task gets past this."""
        try:
            await step(loop)
        except BaseException as exc:  # a pass must never end its loop
            cancelled = isinstance(exc, asyncio.CancelledError)
            if cancelled and (self._stopping or cancelled_from_outside()):
                raise
            # A CancelledError raised while nobody cancelled this task is an error like any.
            logger.exception("a pass of the %s loop failed; retrying at the next poll", loop.name)

    async def _timed_pass(self, loop: _Loop) -> None:
        loop.pass_started = time.monotonic()
        try:
            await loop.run_pass()
        finally:
            loop.pass_started = None
        self.metrics.loop_passed(loop.name)  # only a pass that ended without an error

    async def _idle(self, loop: _Loop) -> None:
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands just
        # as kick() sets the event, and stop() would then wait forever.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.poll_seconds):
                await loop.wake.wait()
        loop.wake.clear()

    # -- the inbox loop ---------------------------------------------------------------

    async def _inbox_pass(self) -> None:
        # Keep going while passes find a full batch: a backlog must not wait a whole
        # poll interval per batch.
        for _ in range(MAX_PASSES_PER_WAKE):
            if await self._apply_due() < INBOX_BATCH or self._stopping:
                break
        if time.monotonic() >= self._next_report:
            self._next_report = time.monotonic() + REPORT_SECONDS
            await self.report_stale()
            await self.report_parked()
            if self.ask_again is not None:
                await self.ask_again()

    async def _apply_due(self, *, include_leased: bool = False) -> int:
        """Apply inbox items that are due; returns how many were due.

        Items just stored by a webhook request are leased to it (see
        ``PaymentService.store_webhook``) and are not due here until the lease ends.
        """
        due = await self.storage.inbox.due(limit=INBOX_BATCH, include_leased=include_leased)
        if due:
            await self.apply_notifications(due)
        return len(due)

    # -- the outbox loop --------------------------------------------------------------

    async def _outbox_pass(self) -> None:
        # Rows left behind by others (or due again): a full claim may hide more.
        for _ in range(MAX_PASSES_PER_WAKE):
            free = self.deliveries.max_concurrent - self.deliveries.in_flight
            if free <= 0 or len(await self.deliveries.claim_due()) < free or self._stopping:
                break

    # -- passes on demand -------------------------------------------------------------

    async def run_once(self, *, include_leased: bool = False) -> int:
        """One pass over due inbox items and outbox rows, deliveries awaited.

        Returns how many items and rows were handled.
        """
        applied = await self._apply_due(include_leased=include_leased)
        started = await self.deliveries.claim_due()
        if started:
            await asyncio.wait(started)
        return applied + len(started)

    async def drain(self, *, timeout_seconds: float = 30.0) -> None:
        """Apply and deliver everything due now, then return (tests, scripts, shutdown).

        Items leased to a request's background task are taken too (applying twice
        is harmless), and it waits for the changes this process has in hand, so on
        return every change committed before the call has reached the hook (or failed
        there and been rescheduled) and its "delivered" mark is written.
        """
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            handled = await self.run_once(include_leased=True)
            await self.deliveries.settle(deadline)
            if handled == 0 and self.deliveries.idle:
                if not await self.storage.inbox.due(limit=1, include_leased=True):
                    return
                await asyncio.sleep(0.01)
        logger.warning("drain stopped after %.0f s with work still due", timeout_seconds)

    # -- reports ----------------------------------------------------------------------

    async def report_stale(self) -> int:
        """Log payments stuck in Created or Pending; returns how many were found."""
        if self.stale_after_seconds is None:
            return 0
        payments = self.storage.payments
        count = await payments.count_stale(older_than_seconds=self.stale_after_seconds)
        if count:
            oldest = await payments.stale(older_than_seconds=self.stale_after_seconds, limit=1)
            logger.warning(
                "%d payment(s) still Created or Pending after %d s, oldest %s (GET /admin/stale)",
                count,
                self.stale_after_seconds,
                oldest[0].reference if oldest else "?",
            )
        return count

    async def report_parked(self) -> tuple[int, int]:
        """Log parked outbox rows and inbox items; returns their counts."""
        outbox = (await self.storage.outbox.counts()).get("parked", 0)
        inbox = (await self.storage.inbox.counts()).get("parked", 0)
        if outbox:
            logger.error(
                "%d state change(s) PARKED: the host was not told of them "
                "(GET /admin/outbox?status=parked; requeue with POST /admin/outbox/requeue)",
                outbox,
            )
        if inbox:
            logger.error(
                "%d webhook item(s) PARKED: not applied to their payments "
                "(GET /admin/notifications?status=parked; requeue with "
                "POST /admin/notifications/requeue)",
                inbox,
            )
        return outbox, inbox
