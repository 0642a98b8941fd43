"""The query strings of the admin lists: known names only, each once, each value checked.

A list that cannot honour a filter says so (``400 invalid_filter`` naming the
parameter and the values it takes) instead of answering an empty list, which
reads as "nothing matched". Pages are keyset pages: ``cursor`` is the
``nextCursor`` of the previous page. Messages never repeat what was sent.

Example::

    query = Query(request.query_params, ("state", *PAGING))
    state = query.choice("state", ("Created", "Pending"))
    before_id, limit = query.cursor(), query.limit()
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, date, datetime

from starlette.datastructures import QueryParams

from miniprogram_pay.errors import InvalidQueryError
from miniprogram_pay.storage.admin import MAX_PAGE_ROWS

__all__ = ["DEFAULT_PAGE_ROWS", "MAX_PAGE_ROWS", "PAGING", "Query", "cursor_of"]

DEFAULT_PAGE_ROWS = 50
PAGING = ("cursor", "limit")
# Row ids are INTEGER columns (see schemas.MAX_ROW_ID): a larger cursor names no row.
MAX_CURSOR = 2**31 - 1
# What a payment reference may hold (schemas.REFERENCE_PATTERN), as a prefix of one.
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,79}")
_BOOLEANS = {"true": True, "false": False}


class Query:
    """One admin list's query parameters; an unknown or repeated name is refused at once."""

    def __init__(self, params: QueryParams, allowed: Sequence[str]) -> None:
        self._params = params
        self.allowed = tuple(allowed)
        names = [name for name, _ in params.multi_items()]
        if any(name not in self.allowed for name in names):
            raise InvalidQueryError(
                "unknown query parameter; this list takes " + ", ".join(self.allowed),
                parameter=None,
                allowed=self.allowed,
            )
        for name in self.allowed:
            if names.count(name) > 1:
                raise InvalidQueryError(f"give {name} at most once", parameter=name)

    def text(self, name: str) -> str | None:
        value = self._params.get(name)
        return value if value else None  # ?state= is no filter, as a form sends it

    def choice(self, name: str, allowed: Sequence[str]) -> str | None:
        value = self.text(name)
        if value is None or value in allowed:
            return value
        raise InvalidQueryError(
            f"{name} must be one of " + ", ".join(allowed), parameter=name, allowed=tuple(allowed)
        )

    def boolean(self, name: str) -> bool | None:
        value = self.text(name)
        if value is None:
            return None
        if value in _BOOLEANS:
            return _BOOLEANS[value]
        raise InvalidQueryError(
            f"{name} must be true or false", parameter=name, allowed=tuple(_BOOLEANS)
        )

    def moment(self, name: str) -> datetime | None:
        """ISO 8601: a date (its midnight, UTC) or a date-time (UTC unless it names an offset)."""
        value = self.text(name)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value) if "T" in value else _midnight(value)
        except ValueError:
            raise InvalidQueryError(
                f"{name} must be an ISO 8601 date or date-time, e.g. 2026-12-01 or "
                "2026-12-01T08:00:00+08:00",
                parameter=name,
            ) from None
        # Stored times are UTC; SQLite compares them as text, so the bound value must be too.
        aware = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        return aware.astimezone(UTC)

    def prefix(self, name: str) -> str | None:
        value = self.text(name)
        if value is None or _PREFIX.fullmatch(value):
            return value
        raise InvalidQueryError(
            f"{name} must be the start of a reference: 1-80 of A-Z a-z 0-9 . _ : / -",
            parameter=name,
        )

    def cursor(self) -> int | None:
        """The id below which the page starts (the previous page's ``nextCursor``)."""
        value = self.text("cursor")
        if value is None:
            return None
        if _whole(value) and 0 < int(value) <= MAX_CURSOR:
            return int(value)
        raise InvalidQueryError(
            "cursor must be a nextCursor from a previous page",
            parameter="cursor",
            code="invalid_page",
        )

    def limit(self) -> int:
        value = self.text("limit")
        if value is None:
            return DEFAULT_PAGE_ROWS
        if _whole(value) and 0 < int(value) <= MAX_PAGE_ROWS:
            return int(value)
        raise InvalidQueryError(
            f"limit must be a whole number from 1 to {MAX_PAGE_ROWS}",
            parameter="limit",
            code="invalid_page",
        )


def cursor_of(next_before_id: int | None) -> str | None:
    """A page's ``nextCursor``: opaque to callers, the last row's id to us."""
    return None if next_before_id is None else str(next_before_id)


def _whole(value: str) -> bool:
    # Short first: int() refuses (ValueError) a string of over 4300 digits.
    return len(value) <= 10 and value.isascii() and value.isdigit()


def _midnight(value: str) -> datetime:
    day = date.fromisoformat(value)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
