"""The three documented shapes of the Mini Program's ``res.errMsg``."""

from __future__ import annotations

import pytest

from miniprogram_pay.services.payments import _KeyedLock, payment_status_shape


@pytest.mark.parametrize(
    ("err_msg", "shape"),
    [
        ("requestPayment:ok", "ok"),
        ("requestPayment:fail cancel", "cancel"),
        ("requestPayment:fail", "fail"),
        ("requestPayment:fail insufficient balance", "fail"),
        ("requestPayment:fail cancel, and more", "fail"),
        ("requestPayment:ok ", "fail"),  # not the success wording: not a success
        ("requestPayment:cancel", "fail"),
    ],
)
def test_every_err_msg_is_one_of_three_shapes(err_msg: str, shape: str) -> None:
    assert payment_status_shape(err_msg) == shape


async def test_a_keys_release_is_told_apart_from_other_keys_until_too_many_passed() -> None:
    locks = _KeyedLock()
    seen = locks.released
    async with locks.hold(1):
        pass
    assert locks.released_since(1, seen) and not locks.released_since(2, seen)
    later = locks.released
    for key in range(3, 3 + _KeyedLock.RECENT - 1):
        async with locks.hold(key):
            pass
    assert not locks.released_since(1, later)  # still within the window: told apart
    async with locks.hold(9999):
        pass
    assert locks.released_since(1, later)  # the window passed: a conservative yes
    assert locks._locks == {}  # nobody holds or waits: every lock forgotten
