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
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from miniprogram_pay.observability.context import current_request_id

__all__ = [
    "PACKAGE_LOGGER",
    "JsonFormatter",
    "LogHandlerSetting",
    "RequestIdFilter",
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


def install_handler(
    *, setting: LogHandlerSetting, log_format: LogFormat, level: str
) -> logging.Handler | None:
    """Add the package's stderr handler if ``setting`` says so; the handler, or None."""
    package = logging.getLogger(PACKAGE_LOGGER)
    if setting == "never" or any(h.get_name() == HANDLER_NAME for h in package.handlers):
        return None
    if setting == "auto" and (package.handlers or logging.getLogger().handlers):
        return None  # the host configured logging: its handlers show the lines
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter_for(log_format))
    handler.addFilter(RequestIdFilter())
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
