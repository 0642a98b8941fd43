"""Log lines: human-readable by default, one JSON object a line as an option, request ids in both.

The package logs under ``miniprogram_pay.*`` and never configures the root logger.
When nothing else handles its lines (plain ``uvicorn app:app`` configures only
uvicorn's own loggers), the plugin adds one handler on stderr at start-up, with
``TextFormatter`` or ``JsonFormatter`` (``LOG_FORMAT``) at ``LOG_LEVEL``;
``LOG_HANDLER=never`` leaves logging to the host, ``always`` adds the handler
even so (and stops the lines propagating to the root's handlers).

A host with its own logging set-up uses the same pieces, e.g. with ``dictConfig``::

    "formatters": {"pay": {"()": "miniprogram_pay.observability.logs.JsonFormatter"}},
    "handlers": {"pay": {"class": "logging.StreamHandler", "formatter": "pay"}},
    "loggers": {"miniprogram_pay": {"handlers": ["pay"], "level": "INFO", "propagate": False}},

``RequestIdFilter`` sets ``record.request_id`` for format strings of its own
(``"%(request_id)s %(message)s"``).

The plugin's own handler (``StderrHandler``) writes from a thread of its own: the
event loop only queues a line. A write to stderr blocks while the pipe behind it is
full (a log collector that fell behind), and gives up the interpreter lock, which
the loop must then wait for behind the database threads. While the queue is full
(10,000 lines behind), new lines are dropped and counted, and the count is written
once the lines flow again; stopping the plugin (or the interpreter) writes what is
queued.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import queue
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal

from miniprogram_pay.observability.context import current_request_id

__all__ = [
    "PACKAGE_LOGGER",
    "JsonFormatter",
    "LogHandlerSetting",
    "RequestIdFilter",
    "StderrHandler",
    "TextFormatter",
    "formatter_for",
    "install_handler",
    "remove_handler",
]

PACKAGE_LOGGER = "miniprogram_pay"
HANDLER_NAME = "miniprogram-pay"
LogFormat = Literal["text", "json"]
LogHandlerSetting = Literal["auto", "always", "never"]


NO_REQUEST = "-"
QUEUED_LINES = 10_000


def _request_id(record: logging.LogRecord) -> str | None:
    given = getattr(record, "request_id", None)
    if isinstance(given, str) and given and given != NO_REQUEST:
        return given
    return current_request_id()


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` (``-`` outside a request) for a host's own format strings."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id(record) or NO_REQUEST
        return True


class TextFormatter(logging.Formatter):
    """``2026-12-01 10:00:00,123 INFO    miniprogram_pay.payments: ... [request 3f2a...]``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = _request_id(record)
        return f"{line} [request {request_id}]" if request_id else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (UTC), ``level``, ``logger``, ``message``, ``pid``,
    ``request_id`` (inside a request), ``exception`` (the traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = _request_id(record)
        if request_id:
            entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(log_format: LogFormat) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


class _Writer(logging.handlers.QueueListener):
    """The standard listener, except that stopping waits for room in a full queue
    (the standard one fails to stop then) rather than losing what it holds."""

    def __init__(self, lines: queue.Queue[Any], writer: logging.Handler) -> None:
        super().__init__(lines, writer)
        self._lines = lines

    def enqueue_sentinel(self) -> None:
        self._lines.put(None)  # the listener's sentinel: None ends its thread


class StderrHandler(logging.handlers.QueueHandler):
    """Formats and writes the package's lines to a stream in a thread of its own.

    ``formatter`` is what the lines look like; the calling thread only freezes a
    record (its message with its arguments, its traceback as text, and, by
    ``RequestIdFilter``, its request id: a context variable the writer's thread
    cannot see) and queues it.
    """

    def __init__(
        self,
        formatter: logging.Formatter,
        stream: Any = None,
        *,
        capacity: int = QUEUED_LINES,
        on_dropped: Callable[[], None] | None = None,
    ) -> None:
        self._lines: queue.Queue[Any] = queue.Queue(capacity)
        super().__init__(self._lines)
        self.setFormatter(formatter)
        self._formatter = formatter  # ``self.formatter`` as typed: never None here
        self.addFilter(RequestIdFilter())
        self.writer = logging.StreamHandler(sys.stderr if stream is None else stream)
        self.writer.setFormatter(formatter)
        self.dropped = 0
        self._on_dropped = on_dropped  # a metric: the count line waits for stderr to flow
        self._listener: _Writer | None = None

    def start(self) -> None:
        """Start the writer's thread (``install_handler`` does)."""
        if self._listener is None:
            self._listener = _Writer(self._lines, self.writer)
            self._listener.start()

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        frozen = copy.copy(record)
        frozen.msg = record.getMessage()
        frozen.args = None
        if record.exc_info:
            frozen.exc_text = record.exc_text or self._formatter.formatException(record.exc_info)
            frozen.exc_info = None
        return frozen

    def enqueue(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock: ``dropped`` needs no lock of its own.
        try:
            if self.dropped:
                self._lines.put_nowait(self._dropped_line())
                self.dropped = 0
            self._lines.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            if self._on_dropped is not None:
                self._on_dropped()

    def _dropped_line(self) -> logging.LogRecord:
        line = logging.LogRecord(
            PACKAGE_LOGGER + ".logs",
            logging.WARNING,
            __file__,
            0,
            f"{self.dropped} log lines were dropped: stderr was not being read",
            None,
            None,
        )
        line.request_id = NO_REQUEST
        return line

    def close(self) -> None:
        """Write what is queued, then stop the writer (``logging.shutdown`` calls it too)."""
        listener, self._listener = self._listener, None
        if listener is not None:
            self.acquire()  # an RLock: logging.shutdown calls this holding it already
            try:
                if self.dropped:
                    self._lines.put(self._dropped_line())
                    self.dropped = 0
            finally:
                self.release()
            listener.stop()
        self.writer.close()
        super().close()


def install_handler(
    *,
    setting: LogHandlerSetting,
    log_format: LogFormat,
    level: str,
    on_dropped: Callable[[], None] | None = None,
) -> logging.Handler | None:
    """Add the package's stderr handler if ``setting`` says so; the handler, or None.

    ``on_dropped`` is called for each line dropped while stderr is not read."""
    package = logging.getLogger(PACKAGE_LOGGER)
    if setting == "never" or any(h.get_name() == HANDLER_NAME for h in package.handlers):
        return None
    if setting == "auto" and (package.handlers or logging.getLogger().handlers):
        return None  # the host configured logging: its handlers show the lines
    handler = StderrHandler(formatter_for(log_format), on_dropped=on_dropped)
    handler.set_name(HANDLER_NAME)
    handler.start()
    package.addHandler(handler)
    package.setLevel(level.upper())
    if setting == "always":
        package.propagate = False
    return handler


def remove_handler(handler: logging.Handler) -> None:
    """Undo ``install_handler`` (the plugin stopped)."""
    package = logging.getLogger(PACKAGE_LOGGER)
    package.removeHandler(handler)
    package.propagate = True
    package.setLevel(logging.NOTSET)
    handler.close()
