"""The database threads: each owns one connection (a session) and takes units of work
from one queue; a unit's outcome comes back to its event loop in one hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from miniprogram_pay.errors import StorageError

__all__ = ["Lanes", "Session"]


class Session(Protocol):
    """What a lane needs of the connection it owns."""

    @property
    def broken(self) -> bool: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=Session)
T = TypeVar("T")


@dataclass(slots=True)
class _Job(Generic[S, T]):
    work: Callable[[S], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


class Lanes(Generic[S]):
    """Threads that each own one connection and take jobs from one queue.

    A job's outcome comes back to its event loop with ``call_soon_threadsafe``: one
    hop there, one back. The threads start with the first job; ``close`` lets them
    finish what is queued, closes their connections and joins them.
    """

    def __init__(self, name: str, size: int, open_session: Callable[[], S]) -> None:
        self._name = name
        self._size = size
        self._open = open_session
        self._queue: queue.SimpleQueue[_Job[S, Any] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self.sessions: list[S] = []

    def submit(self, work: Callable[[S], T]) -> asyncio.Future[T]:
        if self._closed:
            raise StorageError("the database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._threads:
            self._start()
        self._queue.put(_Job(work, loop, future))
        return future

    def _start(self) -> None:
        with self._lock:
            while len(self._threads) < self._size:
                thread = threading.Thread(
                    target=self._serve, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _serve(self) -> None:
        session: S | None = None
        while (job := self._queue.get()) is not None:
            if job.future.cancelled():
                continue  # its caller is gone; nothing of it has run
            result: Any = None
            error: BaseException | None = None
            try:
                if session is None:
                    session = self._open()
                    self.sessions.append(session)
                result = job.work(session)
            except BaseException as exc:
                error = exc
                if session is not None and session.broken:
                    session.close()
                    session = None
            # A closed event loop refuses the callback: nobody waits for this outcome.
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_settle, job.future, result, error)
        if session is not None:
            session.close()

    def close(self) -> None:
        """Blocking: let queued jobs run, then stop every thread."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        for thread in threads:
            thread.join()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
