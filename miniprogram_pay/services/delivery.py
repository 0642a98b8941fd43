"""Telling the host of committed state changes: hand-off, one task per change, batched marks.

A unit of work that changes a payment writes the change's outbox row in its own
transaction, already leased to this process (``hand_off_lease``), and the service hands
the committed change over in memory (``hand_off``): the delivery starts at once, with no
read and no claim. Each delivery calls the host's ``on_state_change`` under a timeout
in a task of its own, so a slow or hanging hook holds one change, never the others.
"Delivered" marks are written together, a moment later (``MARK_LINGER_SECONDS``) or
when many are waiting; a mark lost to a crash only means the change is told again.

Rows another process left behind (it died), failed deliveries' retries and requeued
rows are found by ``claim_due``, the outbox loop's poll, once their lease ends. At
least once, under a stable ``event_id``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta

from miniprogram_pay.observability.context import ChangeOrigins, bound_request_id
from miniprogram_pay.observability.metrics import NO_METRICS, HookOutcome, Metrics
from miniprogram_pay.retrying import Backoff
from miniprogram_pay.services.hooks import StateChange, StateChangeHook
from miniprogram_pay.storage.outbox import OutboxStore
from miniprogram_pay.storage.records import OutboxEvent
from miniprogram_pay.storage.tables import utcnow

__all__ = ["Deliveries", "cancelled_from_outside", "outbox_backoff"]

logger = logging.getLogger("miniprogram_pay.workers")

MAX_BACKOFF_SECONDS = 300.0
OUTBOX_BACKOFF = Backoff(base_seconds=0.5, cap_seconds=MAX_BACKOFF_SECONDS)
MARK_LINGER_SECONDS = 0.05
MARK_BATCH = 256
# Changes handed off beyond the concurrent deliveries wait here; past this many, they
# wait in the database instead (their lease ends, the poll takes them).
MAX_WAITING = 10_000


def outbox_backoff(attempt: int) -> float:
    """Seconds before retrying a failed delivery: the package's backoff policy, capped at 5 min."""
    return OUTBOX_BACKOFF.delay(attempt)


class _Marks:
    """Delivered rows, marked in one transaction for many: after a linger, or when full."""

    def __init__(self, write: Callable[[list[int]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: list[int] = []
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, outbox_id: int) -> None:
        self._pending.append(outbox_id)
        if len(self._pending) >= MARK_BATCH:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._after_linger(), name="mpp-outbox-marks")

    async def _after_linger(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(MARK_LINGER_SECONDS):
                await self._full.wait()
        await self.flush()

    async def flush(self) -> None:
        """Write every mark waiting now."""
        self._full.clear()
        while self._pending:
            ids, self._pending = self._pending, []
            try:
                await self._write(ids)
            except Exception:
                # The rows stay leased: when the lease ends they are delivered again.
                logger.exception("could not mark %d delivered change(s)", len(ids))
                return

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()


class Deliveries:
    """The state changes this process is telling the host of, and how each one ends."""

    def __init__(
        self,
        *,
        outbox: OutboxStore,
        on_state_change: StateChangeHook | None,
        hook_timeout_seconds: float,
        park_after_seconds: int,
        lease_seconds: float,
        max_concurrent: int,
        metrics: Metrics = NO_METRICS,
        origins: ChangeOrigins | None = None,
    ) -> None:
        self.outbox = outbox
        self.on_state_change = on_state_change
        self.hook_timeout_seconds = hook_timeout_seconds
        self.park_after_seconds = park_after_seconds
        self.lease_seconds = lease_seconds
        self.max_concurrent = max_concurrent
        self.metrics = metrics
        # Which request caused a change: its hook call runs with that request's id.
        self.origins = origins or ChangeOrigins()
        # True while the outbox loop runs: only then are new rows leased to this process.
        self.accepting = False
        self.on_slot_free: Callable[[], None] = lambda: None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._waiting: collections.deque[tuple[float, OutboxEvent]] = collections.deque()
        self._waiting_ids: set[int] = set()
        self._marks = _Marks(self.outbox.delivered)
        # The last poll found more due rows than free slots: poll again as slots free.
        self._backlog = False

    # -- hand-off ---------------------------------------------------------------------

    def hand_off_lease(self) -> float | None:
        """The lease to write a new change's row with, or None when this process won't
        deliver it (no loop running): then any process's poll takes it at once."""
        return self.lease_seconds if self.accepting else None

    def hand_off(self, events: Iterable[OutboxEvent]) -> None:
        """Deliver committed changes whose rows were written leased to this process."""
        for event in events:
            if not self.accepting:
                return  # shutting down: the rows come back when their lease ends
            if event.id in self._tasks or event.id in self._waiting_ids:
                continue
            if len(self._tasks) < self.max_concurrent:
                self._start(event)
            elif len(self._waiting) < MAX_WAITING:
                self._waiting.append((time.monotonic(), event))
                self._waiting_ids.add(event.id)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def idle(self) -> bool:
        return not self._tasks and not self._waiting

    # -- the poll for rows left behind ------------------------------------------------

    async def claim_due(self) -> list[asyncio.Task[None]]:
        """Lease due rows (left behind, retried, requeued) and start their deliveries."""
        free = self.max_concurrent - len(self._tasks)
        if free <= 0:
            return []
        busy = {*self._tasks, *self._waiting_ids}
        events = await self.outbox.claim(limit=free, lease_seconds=self.lease_seconds, exclude=busy)
        self._backlog = len(events) >= free
        return [self._start(event) for event in events if event.id not in self._tasks]

    # -- one delivery -----------------------------------------------------------------

    def _start(self, event: OutboxEvent) -> asyncio.Task[None]:
        task = asyncio.create_task(self._deliver(event), name=f"mpp-deliver-{event.event_id}")
        self._tasks[event.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._tasks.pop(event.id, None)
            self._next()

        task.add_done_callback(done)
        return task

    def _next(self) -> None:
        """A slot is free: start the oldest waiting change whose lease still has room."""
        room = self.lease_seconds - self.hook_timeout_seconds
        while self._waiting and self.accepting and len(self._tasks) < self.max_concurrent:
            handed, event = self._waiting.popleft()
            self._waiting_ids.discard(event.id)
            if time.monotonic() - handed < room:
                self._start(event)
                return
        if not self._waiting and self._backlog:
            self.on_slot_free()

    async def _deliver(self, event: OutboxEvent) -> None:
        """Tell the host of one change and record the outcome of this row alone."""
        origin = self.origins.of(event.reference, event.to_state)
        with bound_request_id(origin):
            error = await self._timed_hook(event, origin)
        if error is None:
            self.origins.forget(event.reference, event.to_state)
            self._marks.add(event.id)
            return
        try:
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
            if cancelled_from_outside():
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
        await self.outbox.failed(
            event.id, error=error, retry_in_seconds=outbox_backoff(event.attempts), park=park
        )

    def _past_window(self, event: OutboxEvent) -> bool:
        """True once the row has been offered for ``park_after_seconds`` (since its requeue)."""
        start = event.requeued_at or event.created_at
        return utcnow() >= start + timedelta(seconds=self.park_after_seconds)

    # -- waiting and stopping ---------------------------------------------------------

    async def settle(self, deadline: float) -> None:
        """Wait (until ``deadline``, monotonic) for every change in hand, then write the marks."""
        while not self.idle and time.monotonic() < deadline:
            running = list(self._tasks.values())
            if running:
                await asyncio.wait(running, timeout=max(deadline - time.monotonic(), 0.0))
            else:
                await asyncio.sleep(0)  # waiting ones start as slots free
        await self._marks.flush()

    async def stop(self, grace_seconds: float) -> None:
        """Let deliveries in flight finish for a moment, cancel the rest, write the marks.

        A cancelled or never-started change is delivered again later: its row is still
        leased, not delivered.
        """
        self.accepting = False
        self._waiting.clear()
        self._waiting_ids.clear()
        pending = list(self._tasks.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_seconds)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
                logger.warning(
                    "%d delivery(ies) cut short by shutdown; they are delivered again later",
                    len(late),
                )
        await self._marks.stop()


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
        kind="refund" if event.kind == "refund" else "payment",
        refund=event.refund,
        order_reference=event.order_reference or event.reference,
        payment_attempt=event.attempt_number,
        order_state=event.order_state or event.to_state,
        conflict=event.conflict,
    )


def cancelled_from_outside() -> bool:
    """True when this task was asked to stop (``task.cancel()``), not when a hook raised."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
