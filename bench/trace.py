"""Where a request's wall-clock time goes: ``BENCH_TRACE=<file>`` in the plugin's environment.

``bench/plugin_app.py`` installs this when the variable is set (never in a measured run).
It wraps, in the serving process only:

- each HTTP request (path, start, end);
- each unit of work: when it was submitted, when its thread started and ended it, and
  when the awaiting coroutine resumed (so queueing, the unit's own run and commit, and
  the hop back are told apart). A unit a shared task submits (a group commit's batch)
  is counted as ``<lane>_shared`` in every request open when it was submitted: at one
  sender that is the request it serves, at more it is shared;
- each call to the sandbox (Adyen and WeChat), and how long the event loop was busy
  (the serving thread's CPU) during the request;
- each unit's own CPU time in its thread (``run_cpu``): what ``run`` spent neither
  waiting for the interpreter lock nor off the processor; and which unit it was
  (``what``: its function, ``InboxStore.take.work``);
- every thread's CPU time (``/proc/self/task``), sampled twice a second, so the CPU
  each thread used while requests were served can be told apart (event loop, writer,
  readers).

On shutdown it writes one JSON object per request to the file, and the threads' CPU
to ``<file>.threads.json``; ``python -m bench.profile --workload flow`` summarises them.
"""

from __future__ import annotations

import atexit
import bisect
import contextvars
import dataclasses
import functools
import json
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["install", "traced"]

_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "bench_trace", default=None
)
_records: list[dict[str, Any]] = []
_shared: list[dict[str, Any]] = []


def _now() -> float:
    return time.perf_counter()


def traced(app: ASGIApp) -> ASGIApp:
    """The app, each of its HTTP requests recorded with what ran inside it."""

    async def wrapper(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        record: dict[str, Any] = {
            "path": scope["path"], "start": _now(), "cpu0": time.thread_time(), "events": [],
        }  # fmt: skip
        token = _current.set(record)

        async def answer(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                record["answered"] = _now()
            await send(message)

        try:
            await app(scope, receive, answer)
        finally:
            record["end"] = _now()
            record["loop_cpu"] = time.thread_time() - record.pop("cpu0")
            _current.reset(token)
            _records.append(record)

    return wrapper


def _event(kind: str, **fields: Any) -> None:
    record = _current.get()
    if record is not None:
        record["events"].append({"kind": kind, **fields})


def install(path: str) -> None:
    """Patch the storage and the clients to record into the current request's trace."""
    from miniprogram_pay.adyen.checkout import AdyenCheckoutClient
    from miniprogram_pay.storage import lanes
    from miniprogram_pay.wechat.client import WeChatClient

    original_submit = lanes.Lanes.submit

    def submit(self: Any, work: Callable[[Any], Any]) -> Any:
        marks: dict[str, Any] = {"submitted": _now()}

        def timed(call: Callable[[Any], Any], session: Any) -> Any:
            marks["thread_start"] = _now()
            cpu = time.thread_time()
            try:
                return call(session)
            finally:
                marks["thread_end"] = _now()
                marks["run_cpu"] = time.thread_time() - cpu

        # Every job is a unit of work (engine._Part): timed inside its transaction, so
        # SQLite's writer can still run it with others. "run" is its statements; its
        # commit, shared or not, is in "back".
        part: Any = work
        marks["what"] = getattr(part.work, "__qualname__", "?").replace(".<locals>", "")
        job = dataclasses.replace(part, work=functools.partial(timed, part.work))
        future = original_submit(self, job)
        record = _current.get()
        lane = self._name.rsplit("-", 1)[-1]
        # A shared task (a group commit's writer) runs in the context of the request that
        # started it, long after that request ended: its units belong to no one request.
        own = record is not None and "end" not in record

        def resumed(_: Any) -> None:
            marks["resumed"] = _now()
            if own and record is not None:
                record["events"].append({"kind": lane, **marks})
            else:
                _shared.append({"kind": f"{lane}_shared", **marks})

        future.add_done_callback(resumed)
        return future

    lanes.Lanes.submit = submit  # type: ignore[method-assign]

    def wrap_call(cls: Any, name: str, kind: str) -> None:
        original = getattr(cls, name)

        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = _now()
            try:
                return await original(self, *args, **kwargs)
            finally:
                _event(kind, start=start, end=_now())

        setattr(cls, name, call)

    wrap_call(AdyenCheckoutClient, "_attempt", "adyen")
    wrap_call(WeChatClient, "_call", "wechat")

    samples: list[tuple[float, dict[str, float]]] = []
    threading.Thread(
        target=_sample_threads, args=(samples,), name="bench-trace-sampler", daemon=True
    ).start()

    def write() -> None:
        _shared.sort(key=lambda u: u["submitted"])
        submitted = [u["submitted"] for u in _shared]
        for record in _records:
            answered = record.get("answered", record["end"])
            first = bisect.bisect_left(submitted, record["start"])
            last = bisect.bisect_right(submitted, answered)
            record["events"].extend(_shared[first:last])
        Path(path).write_text("\n".join(json.dumps(r) for r in _records))
        Path(f"{path}.threads.json").write_text(json.dumps(_threads_cpu(samples, _records)))

    atexit.register(write)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user and system) of each live thread, by thread name."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        fields = stat.rpartition(")")[2].split()  # after the command name, which may hold spaces
        found[thread.name] = (int(fields[11]) + int(fields[12])) / tick
    return found


def _sample_threads(samples: list[tuple[float, dict[str, float]]]) -> None:
    while True:
        samples.append((_now(), _thread_cpu()))
        time.sleep(0.5)


def _threads_cpu(
    samples: list[tuple[float, dict[str, float]]], records: list[dict[str, Any]]
) -> dict[str, Any]:
    """Each thread's share of one processor between the first and the last request."""
    if not records or len(samples) < 2:
        return {}
    first = min(r["start"] for r in records)
    last = max(r["end"] for r in records)
    inside = [s for s in samples if first <= s[0] <= last] or samples
    (t0, cpu0), (t1, cpu1) = inside[0], inside[-1]
    if t1 <= t0:
        return {}
    share: dict[str, float] = {}
    for name, seconds in cpu1.items():
        group = "event loop" if name == "MainThread" else re.sub(r"-\d+$", "", name)
        share[group] = share.get(group, 0.0) + (seconds - cpu0.get(name, 0.0)) / (t1 - t0)
    return {"seconds": round(t1 - t0, 2), "share": {k: round(v, 3) for k, v in share.items()}}
