"""The three documented shapes of the Mini Program's ``res.errMsg``."""

from __future__ import annotations

import pytest

from miniprogram_pay.services.payments import payment_status_shape


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
