"""The database threads: each owns one connection (a session) and takes units of work,
the most recently idle thread first; a unit's outcome comes back to its event loop in
one hop.
"""

from __future__ import annotations

import asyncio
import collections
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


# A thread's own queue: the job handed to it while it was idle, or None (stop).
_Inbox = queue.SimpleQueue[_Job[S, Any] | None]


class Lanes(Generic[S]):
    """Threads that each own one connection and take jobs, the most recently idle first.

    A job's outcome comes back to its event loop with ``call_soon_threadsafe``: one
    hop there, one back. A job goes to the thread that went idle last, not round the
    pool: at low concurrency one thread, its connection and its CPU caches stay warm
    while the others sleep (one webhook's unit on PostgreSQL, one at a time: about
    1.5 ms on one warm thread, 2.4 ms handed round ten). A thread is idle again before
    its outcome is told, so the caller's next job finds it. Jobs that find every
    thread busy wait in arrival order. The threads start with the first job; ``close``
    lets them finish what is queued, closes their connections and joins them.
    """

    def __init__(self, name: str, size: int, open_session: Callable[[], S]) -> None:
        self._name = name
        self._size = size
        self._open = open_session
        self._waiting: collections.deque[_Job[S, Any]] = collections.deque()
        self._idle: list[_Inbox[S]] = []  # idle threads' inboxes, the most recent last
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False
        self.sessions: list[S] = []

    def submit(self, work: Callable[[S], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(work, loop, future)
        with self._lock:
            if self._closed:
                raise StorageError("the database is closed")
            if not self._threads:
                self._start()
            inbox = self._idle.pop() if self._idle else None
            if inbox is None:
                self._waiting.append(job)
        if inbox is not None:
            inbox.put(job)
        return future

    def _start(self) -> None:
        """Start every thread (the caller holds the lock)."""
        while len(self._threads) < self._size:
            inbox: _Inbox[S] = queue.SimpleQueue()
            thread = threading.Thread(
                target=self._serve,
                args=(inbox,),
                name=f"{self._name}-{len(self._threads)}",
                daemon=True,
            )
            self._threads.append(thread)
            self._idle.append(inbox)  # idle from the start: the first jobs go straight to it
            thread.start()

    def _take(self, inbox: _Inbox[S]) -> _Job[S, Any] | None:
        """A waiting job; else None, with this thread idle: its next job (or None, to
        stop) then comes through ``inbox``."""
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()
            if self._closed:
                inbox.put(None)  # close() has told the idle threads already
            else:
                self._idle.append(inbox)
        return None

    def _serve(self, inbox: _Inbox[S]) -> None:
        session: S | None = None
        job = inbox.get()
        while job is not None:
            result: Any = None
            error: BaseException | None = None
            ran = not job.future.cancelled()  # else its caller is gone; none of it runs
            try:
                if ran:
                    if session is None:
                        session = self._open()
                        self.sessions.append(session)
                    result = job.work(session)
            except BaseException as exc:
                error = exc
                if session is not None and session.broken:
                    session.close()
                    session = None
            done, job = job, self._take(inbox)  # idle before the outcome is told
            if ran:
                # A closed event loop refuses the callback: nobody waits for this outcome.
                with contextlib.suppress(RuntimeError):
                    done.loop.call_soon_threadsafe(_settle, done.future, result, error)
            if job is None:
                job = inbox.get()
        if session is not None:
            session.close()

    def close(self) -> None:
        """Blocking: let queued jobs run, then stop every thread."""
        with self._lock:
            self._closed = True
            threads, self._threads = self._threads, []
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)
        for thread in threads:
            thread.join()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
