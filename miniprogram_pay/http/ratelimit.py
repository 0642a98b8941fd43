"""A per-client, per-endpoint rate limit (fixed one-minute windows, in memory).

It protects one process from a flood; several workers each count on their own,
so the effective limit is per worker. Off when the limit is 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from starlette.requests import Request

from miniprogram_pay.errors import RateLimitedError

__all__ = ["RateLimiter"]

WINDOW_SECONDS = 60.0
MAX_TRACKED_CLIENTS = 100_000


class RateLimiter:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._window_start = clock()
        self._counts: dict[tuple[str, str], int] = {}

    def check(self, request: Request, bucket: str) -> None:
        """Count one request; ``RateLimitedError`` (429, Retry-After) past the limit."""
        if self.per_minute <= 0:
            return
        now = self._clock()
        if now - self._window_start >= WINDOW_SECONDS or len(self._counts) > MAX_TRACKED_CLIENTS:
            self._window_start, self._counts = now, {}
        client = request.client.host if request.client else "unknown"
        key = (bucket, client)
        self._counts[key] = self._counts.get(key, 0) + 1
        if self._counts[key] > self.per_minute:
            retry_after = max(1, math.ceil(WINDOW_SECONDS - (now - self._window_start)))
            raise RateLimitedError(
                "too many requests; retry later", retry_after_seconds=retry_after
            )
