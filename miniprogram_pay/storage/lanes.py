"""The database threads: each owns one connection (a session) and takes units of work,
the most recently idle thread first; a unit's outcome comes back to its event loop in
one hop. A lane given ``run_group`` lets a thread take the jobs that waited for it
together (SQLite's writer: one transaction, one sync of the log, for all of them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from miniprogram_pay.errors import StorageError

__all__ = ["Lanes", "Outcome", "RunGroup", "Session"]


class Session(Protocol):
    """What a lane needs of the connection it owns."""

    @property
    def broken(self) -> bool: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=Session)
T = TypeVar("T")

# What one job came to: its result, or the exception it raised.
Outcome = tuple[Any, BaseException | None]
# Runs several jobs on one session: one outcome per job, in order (raising fails them all).
RunGroup = Callable[[S, Sequence[Callable[[S], Any]]], list[Outcome]]


@dataclass(slots=True)
class _Job(Generic[S, T]):
    work: Callable[[S], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


@dataclass(slots=True)
class _Seat(Generic[S]):
    """One thread's session: opened for its first job, closed and forgotten once broken."""

    session: S | None = None

    def drop_broken(self) -> None:
        if self.session is not None and self.session.broken:
            self.session.close()
            self.session = None


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

    With ``run_group``, a thread that finds jobs waiting when it is done takes up to
    ``group_size`` of them at once and hands them to ``run_group``; a job that waited
    alone still runs by itself.
    """

    def __init__(
        self,
        name: str,
        size: int,
        open_session: Callable[[], S],
        *,
        run_group: RunGroup[S] | None = None,
        group_size: int = 32,
    ) -> None:
        self._name = name
        self._size = size
        self._open = open_session
        self._run_group = run_group
        self._group_size = group_size if run_group is not None else 1
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

    def _take(self, inbox: _Inbox[S]) -> list[_Job[S, Any]]:
        """Waiting jobs, up to a group's size; else none, and this thread is idle: its
        next job (or None, to stop) then comes through ``inbox``."""
        with self._lock:
            waiting = self._waiting
            if waiting:
                return [waiting.popleft() for _ in range(min(len(waiting), self._group_size))]
            if self._closed:
                inbox.put(None)  # close() has told the idle threads already
            else:
                self._idle.append(inbox)
        return []

    def _serve(self, inbox: _Inbox[S]) -> None:
        seat: _Seat[S] = _Seat()
        jobs = _given(inbox)
        while jobs:
            # A cancelled job's caller is gone: none of it runs, and nobody is told.
            live = [job for job in jobs if not job.future.cancelled()]
            outcomes = self._run(seat, live) if live else []
            jobs = self._take(inbox)  # idle before the outcomes are told
            for job, (result, error) in zip(live, outcomes, strict=True):
                # A closed event loop refuses the callback: nobody waits for this outcome.
                with contextlib.suppress(RuntimeError):
                    job.loop.call_soon_threadsafe(_settle, job.future, result, error)
            if not jobs:
                jobs = _given(inbox)
        if seat.session is not None:
            seat.session.close()

    def _run(self, seat: _Seat[S], jobs: list[_Job[S, Any]]) -> list[Outcome]:
        """The jobs' outcomes on the thread's session (opened here the first time)."""
        try:
            if seat.session is None:
                seat.session = self._open()
                self.sessions.append(seat.session)
            session = seat.session
            if self._run_group is None or len(jobs) == 1:
                return [_run_one(seat, session, job) for job in jobs]
            return self._run_group(session, [job.work for job in jobs])
        except BaseException as exc:
            seat.drop_broken()
            return [(None, exc)] * len(jobs)

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


def _given(inbox: _Inbox[S]) -> list[_Job[S, Any]]:
    """Blocking: the next job handed to an idle thread (none: stop)."""
    job = inbox.get()
    return [job] if job is not None else []


def _run_one(seat: _Seat[S], session: S, job: _Job[S, Any]) -> Outcome:
    try:
        return job.work(session), None
    except BaseException as exc:
        seat.drop_broken()
        return None, exc


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
