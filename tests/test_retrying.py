"""The package's one retry policy: exponential, capped, jitter under the test's control."""

from __future__ import annotations

import pytest

from miniprogram_pay.retrying import (
    Backoff,
    RetryAfter,
    equal_jitter,
    no_jitter,
    parse_retry_after,
    retrying,
)
from tests.fakes import Sleeper


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = Backoff(0.5, 4.0, no_jitter)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def test_equal_jitter_stays_within_half_and_whole() -> None:
    assert all(5.0 <= equal_jitter(10.0) <= 10.0 for _ in range(200))


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), (" 12 ", 12.0), ("", None), (None, None), ("-3", None), ("later", None)],
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_date_is_relative_to_now() -> None:
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", now=lambda: 40.0) == 60.0


async def test_the_loop_waits_the_longer_of_backoff_and_retry_after() -> None:
    sleeper = Sleeper()
    answers = iter([RetryAfter("busy", 3.0), RetryAfter("busy", None), "done"])
    async for attempt in retrying(attempts=3, backoff=Backoff(1.0, 8.0, no_jitter), sleep=sleeper):
        with attempt:
            answer = next(answers)
            if isinstance(answer, RetryAfter):
                raise answer
    assert answer == "done"
    assert sleeper.delays == [3.0, 2.0]


async def test_the_last_failure_is_raised_as_it_is() -> None:
    sleeper = Sleeper()
    with pytest.raises(RetryAfter):
        async for attempt in retrying(attempts=2, backoff=Backoff(1, 1, no_jitter), sleep=sleeper):
            with attempt:
                raise RetryAfter("still failing")
    assert sleeper.delays == [1]
