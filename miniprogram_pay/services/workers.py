"""Background work of one process: apply stored webhooks, tell the host of changes.

Two loops, independent of each other: the *inbox* loop applies webhook items
that are due (a crashed request's, a failed item's retry), the *outbox* loop
leases committed state changes and hands each to a delivery task of its own.
A delivery calls the host's ``on_state_change`` under a timeout and records its
own outcome, so a slow or hanging hook holds one row, never the loop, the other
rows or the inbox.

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
from datetime import timedelta
from enum import StrEnum

from miniprogram_pay.observability.context import ChangeOrigins, bound_request_id
from miniprogram_pay.observability.metrics import NO_METRICS, HookOutcome, Metrics
from miniprogram_pay.retrying import Backoff
from miniprogram_pay.services.batching import GroupCommitter
from miniprogram_pay.services.hooks import StateChange, StateChangeHook
from miniprogram_pay.storage.records import OutboxEvent
from miniprogram_pay.storage.repository import PaymentRepository
from miniprogram_pay.storage.tables import utcnow

__all__ = ["LoopState", "Workers", "outbox_backoff"]

logger = logging.getLogger("miniprogram_pay.workers")

POLL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300.0
OUTBOX_BACKOFF = Backoff(base_seconds=0.5, cap_seconds=MAX_BACKOFF_SECONDS)
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


def outbox_backoff(attempt: int) -> float:
    """Seconds before retrying a failed delivery: the package's backoff policy, capped at 5 min."""
    return OUTBOX_BACKOFF.delay(attempt)


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
        repository: PaymentRepository,
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
    ) -> None:
        self.apply_notifications = apply_notifications
        self.metrics = metrics
        # Which request caused a change: its hook call runs with that request's id.
        self.origins = origins or ChangeOrigins()
        self.repository = repository
        self.on_state_change = on_state_change
        self.poll_seconds = poll_seconds
        self.stale_after_seconds = stale_after_seconds
        self.hook_timeout_seconds = hook_timeout_seconds
        self.park_after_seconds = park_after_seconds
        self.lease_seconds = lease_seconds or hook_timeout_seconds + LEASE_MARGIN_SECONDS
        self.max_concurrent_deliveries = max_concurrent_deliveries
        self.stall_after_seconds = stall_after_seconds
        self._inbox = _Loop("inbox", self._inbox_pass)
        self._outbox = _Loop("outbox", self._outbox_pass)
        self._deliveries: dict[int, asyncio.Task[None]] = {}
        self._claiming = 0
        self._stopping = False
        self._next_report = 0.0
        # Delivered rows are marked as their hooks return; concurrent marks share a commit.
        self._marks: GroupCommitter[int, None] = GroupCommitter(
            self._mark_delivered, name="outbox-delivered"
        )

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
        await self._finish_deliveries(SHUTDOWN_GRACE_SECONDS)
        await self._marks.stop()

    async def _finish_deliveries(self, grace_seconds: float) -> None:
        pending = list(self._deliveries.values())
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)
            logger.warning(
                "%d delivery(ies) cut short by shutdown; they are delivered again later",
                len(late),
            )

    def kick(self) -> None:
        """Look at the inbox and the outbox now, not at the next poll."""
        self._inbox.wake.set()
        self._outbox.wake.set()

    def kick_outbox(self) -> None:
        """A state change was committed: deliver it now."""
        self._outbox.wake.set()

    def loop_states(self) -> dict[str, LoopState]:
        """Each loop's liveness, for ``/health``."""
        return {loop.name: self._state(loop) for loop in self._loops}

    @property
    def deliveries_in_flight(self) -> int:
        return len(self._deliveries)

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
            if cancelled and (self._stopping or _cancelled_from_outside()):
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

    async def _apply_due(self, *, include_leased: bool = False) -> int:
        """Apply inbox items that are due; returns how many were due.

        Items just stored by a webhook request are leased to it (see
        ``PaymentService.store_webhook``) and are not due here until the lease ends.
        """
        due = await self.repository.due_notifications(
            limit=INBOX_BATCH, include_leased=include_leased
        )
        if due:
            await self.apply_notifications(due)
        return len(due)

    # -- the outbox loop --------------------------------------------------------------

    async def _outbox_pass(self) -> None:
        for _ in range(MAX_PASSES_PER_WAKE):
            free = self.max_concurrent_deliveries - len(self._deliveries)
            if free <= 0 or len(await self._start_deliveries(free)) < free or self._stopping:
                break

    async def _start_deliveries(self, limit: int) -> list[asyncio.Task[None]]:
        """Lease up to ``limit`` due rows and start a delivery task for each."""
        self._claiming += 1
        try:
            events = await self.repository.claim_outbox(
                limit=limit, lease_seconds=self.lease_seconds, exclude=self._deliveries.keys()
            )
            return [self._start_delivery(event) for event in events]
        finally:
            self._claiming -= 1

    def _start_delivery(self, event: OutboxEvent) -> asyncio.Task[None]:
        task = asyncio.create_task(self._deliver(event), name=f"mpp-deliver-{event.event_id}")
        self._deliveries[event.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._deliveries.pop(event.id, None)
            self._outbox.wake.set()  # a slot is free: more rows may be waiting

        task.add_done_callback(done)
        return task

    async def _deliver(self, event: OutboxEvent) -> None:
        """Tell the host of one change and record the outcome of this row alone."""
        origin = self.origins.of(event.reference, event.to_state)
        with bound_request_id(origin):
            error = await self._timed_hook(event, origin)
        try:
            if error is None:
                self.origins.forget(event.reference, event.to_state)
                await self._marks.submit([event.id])
            else:
                await self._record_failure(event, error)
        except Exception:
            # The row stays leased: when the lease ends it is delivered again.
            logger.exception("could not record the delivery of %s", event.event_id)

    async def _timed_hook(self, event: OutboxEvent, origin: str | None) -> str | None:
        if self.on_state_change is None:
            return None
        started = time.perf_counter()
        error = await self._call_hook(event, origin)
        outcome = {None: HookOutcome.DELIVERED, "TimeoutError": HookOutcome.TIMEOUT}.get(
            error, HookOutcome.FAILED
        )
        self.metrics.hook_called(outcome, time.perf_counter() - started)
        return error

    async def _call_hook(self, event: OutboxEvent, origin: str | None = None) -> str | None:
        """Run the host's hook; None when it took the change, else what went wrong."""
        if self.on_state_change is None:
            return None
        try:
            async with asyncio.timeout(self.hook_timeout_seconds):
                await self.on_state_change(_state_change(event, origin))
        except TimeoutError:
            logger.warning(
                "on_state_change did not return within %.1f s for %s (attempt %d)",
                self.hook_timeout_seconds,
                event.event_id,
                event.attempts,
            )
            return "TimeoutError"
        except asyncio.CancelledError:
            if _cancelled_from_outside():
                raise  # shutdown cancelled this delivery: the row stays leased
            logger.exception("on_state_change was cancelled for %s", event.event_id)
            return "CancelledError"
        except BaseException as exc:  # the host's code must never stop delivery
            logger.exception(
                "on_state_change failed for %s (attempt %d)", event.event_id, event.attempts
            )
            return type(exc).__name__
        return None

    async def _record_failure(self, event: OutboxEvent, error: str) -> None:
        park = self._past_window(event)
        if park:
            logger.error(
                "PARKED %s for payment %s: on_state_change kept failing for %d s (%d attempts, "
                "last %s). The host has NOT been told of this change. Fix the host, then "
                "requeue it: POST /admin/outbox/requeue or `miniprogram-pay outbox requeue`",
                event.event_id,
                event.reference,
                self.park_after_seconds,
                event.attempts,
                error,
            )
        await self.repository.outbox_failed(
            event.id, error=error, retry_in_seconds=outbox_backoff(event.attempts), park=park
        )

    def _past_window(self, event: OutboxEvent) -> bool:
        """True once the row has been offered for ``park_after_seconds`` (since its requeue)."""
        start = event.requeued_at or event.created_at
        return utcnow() >= start + timedelta(seconds=self.park_after_seconds)

    async def _mark_delivered(self, outbox_ids: list[int]) -> list[None]:
        await self.repository.outbox_delivered_many(outbox_ids)
        return [None] * len(outbox_ids)

    # -- passes on demand -------------------------------------------------------------

    async def run_once(self, *, include_leased: bool = False) -> int:
        """One pass over due inbox items and outbox rows, deliveries awaited.

        Returns how many items and rows were handled.
        """
        applied = await self._apply_due(include_leased=include_leased)
        free = max(self.max_concurrent_deliveries - len(self._deliveries), 1)
        started = await self._start_deliveries(free)
        if started:
            await asyncio.wait(started)
        return applied + len(started)

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
            await self._wait_for_deliveries(deadline)
            idle = handled == 0 and not self._deliveries and self._claiming == 0
            if idle and not await self.repository.due_notifications(limit=1, include_leased=True):
                return
            if handled == 0:
                await asyncio.sleep(0.01)
        logger.warning("drain stopped after %.0f s with work still due", timeout_seconds)

    async def _wait_for_deliveries(self, deadline: float) -> None:
        in_flight = list(self._deliveries.values())
        if in_flight:
            await asyncio.wait(in_flight, timeout=max(deadline - time.monotonic(), 0.0))

    # -- reports ----------------------------------------------------------------------

    async def report_stale(self) -> int:
        """Log payments stuck in Created or Pending; returns how many were found."""
        if self.stale_after_seconds is None:
            return 0
        count = await self.repository.count_stale(older_than_seconds=self.stale_after_seconds)
        if count:
            oldest = await self.repository.stale_payments(
                older_than_seconds=self.stale_after_seconds, limit=1
            )
            logger.warning(
                "%d payment(s) still Created or Pending after %d s, oldest %s (GET /admin/stale)",
                count,
                self.stale_after_seconds,
                oldest[0].reference if oldest else "?",
            )
        return count

    async def report_parked(self) -> tuple[int, int]:
        """Log parked outbox rows and inbox items; returns their counts."""
        outbox = (await self.repository.outbox_counts()).get("parked", 0)
        inbox = (await self.repository.notification_counts()).get("parked", 0)
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


def _state_change(event: OutboxEvent, origin: str | None) -> StateChange:
    return StateChange(
        event_id=event.event_id,
        reference=event.reference,
        previous=event.from_state,
        state=event.to_state,
        source=event.source,
        occurred_at=event.created_at,
        attempt=event.attempts,
        request_id=origin,
    )


def _cancelled_from_outside() -> bool:
    """True when this task was asked to stop (``task.cancel()``), not when a hook raised."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
