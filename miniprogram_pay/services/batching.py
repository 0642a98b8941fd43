"""Group commit: many concurrent callers, one writer task, one transaction per batch.

A webhook must be committed before it is acknowledged, and on SQLite every
commit queues on the one write lock. Writing each request's items in a
transaction of its own makes 64 concurrent senders wait for 64 commits in a
row. Here each caller hands its items to one writer task and awaits its own
future; the task takes everything that is waiting, writes it in one
transaction, and answers every caller at once. The durability promise is
unchanged: a caller's future resolves only after the commit that holds its items.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["GroupCommitter"]

logger = logging.getLogger("miniprogram_pay.batching")

Item = TypeVar("Item")
Result = TypeVar("Result")

MAX_BATCH_ITEMS = 256
STOP_TIMEOUT_SECONDS = 10.0


@dataclass
class _Entry(Generic[Item, Result]):
    items: Sequence[Item]
    future: asyncio.Future[list[Result]] = field(repr=False)


class GroupCommitter(Generic[Item, Result]):
    """Batches ``submit`` calls into calls of ``write_batch``.

    ``write_batch(items)`` must return one result per item, in order. When a
    batch fails, each caller's items are retried on their own, so one bad
    submission never fails the others; its caller gets the exception.
    """

    def __init__(
        self,
        write_batch: Callable[[list[Item]], Awaitable[list[Result]]],
        *,
        name: str,
        max_batch_items: int = MAX_BATCH_ITEMS,
    ) -> None:
        self._write_batch = write_batch
        self._name = name
        self._max = max_batch_items
        self._queue: asyncio.Queue[_Entry[Item, Result]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Write ``items`` in the next batch; returns once that batch has committed."""
        if not items:
            return []
        queue = self._ensure_running()
        future: asyncio.Future[list[Result]] = asyncio.get_running_loop().create_future()
        await queue.put(_Entry(items, future))
        # Shielded: a caller that goes away must not cancel a batch others wait on.
        return await asyncio.shield(future)

    def _ensure_running(self) -> asyncio.Queue[_Entry[Item, Result]]:
        if self._queue is None or self._task is None or self._task.done():
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(
                self._run(self._queue), name=f"group-commit-{self._name}"
            )
        return self._queue

    async def stop(self) -> None:
        """Finish what is queued, then stop the writer task."""
        task, queue = self._task, self._queue
        self._task = self._queue = None
        if task is None or queue is None:
            return
        if not task.done():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_TIMEOUT_SECONDS):
                    await queue.join()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        while not queue.empty():
            entry = queue.get_nowait()
            if not entry.future.done():
                entry.future.set_exception(RuntimeError(f"{self._name} writer stopped"))

    async def _run(self, queue: asyncio.Queue[_Entry[Item, Result]]) -> None:
        while True:
            batch = [await queue.get()]
            size = len(batch[0].items)
            while size < self._max and not queue.empty():
                entry = queue.get_nowait()
                batch.append(entry)
                size += len(entry.items)
            try:
                await self._write(batch)
            except asyncio.CancelledError:
                for entry in batch:
                    _settle(entry, RuntimeError(f"{self._name} writer stopped"))
                raise
            finally:
                for _ in batch:
                    queue.task_done()

    async def _write(self, batch: list[_Entry[Item, Result]]) -> None:
        flat = [item for entry in batch for item in entry.items]
        try:
            results = await self._write_batch(flat)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            logger.warning(
                "%s batch of %d failed; writing its parts one by one", self._name, len(flat)
            )
            for entry in batch:
                await self._write_alone(entry)
            return
        start = 0
        for entry in batch:
            end = start + len(entry.items)
            _settle(entry, results[start:end])
            start = end

    async def _write_alone(self, entry: _Entry[Item, Result]) -> None:
        try:
            _settle(entry, await self._write_batch(list(entry.items)))
        except Exception as exc:
            _settle(entry, exc)


def _settle(entry: _Entry[Item, Result], outcome: list[Result] | BaseException) -> None:
    if entry.future.done():
        return
    if isinstance(outcome, BaseException):
        entry.future.set_exception(outcome)
    else:
        entry.future.set_result(outcome)
