"""One retry policy for the whole package, on tenacity.

Every retry here, whether a loop (the Adyen and WeChat clients, the
repository's write transaction) or a rescheduled attempt (the outbox, the
webhook inbox, the sandbox's webhook deliveries), waits ``Backoff.delay(attempt)``:
exponential from ``base_seconds``, capped at ``cap_seconds``, spread by
``jitter``. The jitter is a plain function on the policy, so tests pass
``no_jitter`` and get exact delays. Loops run through ``retrying``, tenacity's
``AsyncRetrying`` set up with the policy, a retry predicate and an injectable
``sleep``; a server's ``Retry-After`` replaces the backoff when it asks for longer.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

__all__ = [
    "Backoff",
    "RetryAfter",
    "equal_jitter",
    "no_jitter",
    "parse_retry_after",
    "retrying",
]

Jitter = Callable[[float], float]
Sleep = Callable[[float], Awaitable[None]]


def equal_jitter(delay: float) -> float:
    """A delay in [delay/2, delay], so many clients retrying together do not stampede."""
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - spreading retries, not a secret


def no_jitter(delay: float) -> float:
    """The delay as it is (tests)."""
    return delay


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: ``base_seconds * 2**(attempt-1)``, capped, jittered."""

    base_seconds: float
    cap_seconds: float
    jitter: Jitter = field(default=equal_jitter, compare=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        raw = min(self.cap_seconds, self.base_seconds * 2.0 ** max(attempt - 1, 0))
        return self.jitter(raw)


class RetryAfter(Exception):
    """Raised inside a retried block: this attempt failed; the server named a wait (or not)."""

    def __init__(self, outcome: object, retry_after_seconds: float | None = None) -> None:
        super().__init__("retry")
        self.outcome = outcome
        self.retry_after_seconds = retry_after_seconds


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now())


class _Wait(wait_base):
    """The policy's backoff, or the server's Retry-After when that is longer."""

    def __init__(self, backoff: Backoff) -> None:
        self.backoff = backoff

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self.backoff.delay(retry_state.attempt_number)
        failed = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(failed, RetryAfter) and failed.retry_after_seconds is not None:
            return max(delay, failed.retry_after_seconds)
        return delay


def retrying(
    *,
    attempts: int,
    backoff: Backoff,
    retry_on: Callable[[BaseException], bool] = lambda exc: isinstance(exc, RetryAfter),
    sleep: Sleep = asyncio.sleep,
    logger: logging.Logger | None = None,
    what: str = "call",
) -> AsyncRetrying:
    """Tenacity's ``AsyncRetrying`` with the package policy: ``async for attempt in ...``.

    The last failure is re-raised as it is (``reraise=True``), so the caller
    translates it once, after the loop.
    """

    def log(state: RetryCallState) -> None:
        if logger is not None and state.next_action is not None:
            logger.info(
                "%s failed (attempt %d); retrying in %.2f s",
                what,
                state.attempt_number,
                state.next_action.sleep,
            )

    return AsyncRetrying(
        stop=stop_after_attempt(attempts),
        wait=_Wait(backoff),
        retry=retry_if_exception(retry_on),
        sleep=sleep,
        reraise=True,
        before_sleep=log,
    )
