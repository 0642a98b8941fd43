"""The refund ledger of one payment, and the rule that admits a new refund (pure).

What each refund state counts for (docs/refunds.md explains why):

=============  ==========================  ====================================
State          Shown as                    Counts against the refundable amount
=============  ==========================  ====================================
Requested      pending                     yes: Adyen may be making it now
Received       pending                     yes: Adyen has it, outcome unknown
Refunded       refunded                    yes: the money went to the shopper
Refused        (nothing)                   no: no money moved
Failed         returned                    no: the money came back
Reversed       returned                    no: the money came back
=============  ==========================  ====================================

A disputed refund (its facts contradict each other) freezes the payment's
refunds: nobody can tell what is left, so nothing more is admitted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from miniprogram_pay.domain.money import MAX_MINOR_UNITS, Amount
from miniprogram_pay.domain.refunds import RefundState, RefundView
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import InvalidRefundError, RefundNotAllowedError

__all__ = [
    "DEFAULT_REFUND_WINDOW",
    "MAX_REFUNDS_PER_PAYMENT",
    "RefundLedger",
    "RefundRefusal",
    "RefundablePayment",
    "admit_refund",
    "refund_ledger",
]

# WeChat Pay: at most 50 refunds per payment, within a year of it.
MAX_REFUNDS_PER_PAYMENT = 50
DEFAULT_REFUND_WINDOW = timedelta(days=365)


class RefundRefusal(StrEnum):
    """Why a refund was refused before Adyen was called: the error's stable ``code``."""

    PAYMENT_NOT_REFUNDABLE = "payment_not_refundable"
    EXCEEDS_REFUNDABLE = "refund_exceeds_refundable"
    LIMIT_REACHED = "refund_limit_reached"
    WINDOW_CLOSED = "refund_window_closed"
    UNDER_REVIEW = "refund_under_review"
    CURRENCY_MISMATCH = "refund_currency_mismatch"
    INVALID_AMOUNT = "invalid_refund_amount"


@dataclass(frozen=True, slots=True)
class RefundLedger:
    """A payment's refunds summed up, in the payment's currency (minor units)."""

    authorised: Amount
    refunded_value: int = 0
    """Refunds Adyen reported done (Refunded)."""
    pending_value: int = 0
    """Refunds asked for whose outcome is not known yet (Requested, Received)."""
    returned_value: int = 0
    """Refunds carried out whose money came back to the merchant (Failed, Reversed)."""
    refund_count: int = 0
    """Refunds that count toward the per-payment limit: every one but the Refused."""
    disputed: bool = False
    """A refund's facts contradict each other: no further refund is admitted."""

    @property
    def committed_value(self) -> int:
        """What counts against the authorised amount: refunded plus pending."""
        return self.refunded_value + self.pending_value

    @property
    def refundable_value(self) -> int:
        """What a new refund may take: never negative, zero while disputed."""
        if self.disputed:
            return 0
        return max(0, self.authorised.value - self.committed_value)


def refund_ledger(authorised: Amount, refunds: Iterable[RefundView]) -> RefundLedger:
    """Sum up a payment's refunds.

    Example::

        ledger = refund_ledger(Amount(1130, "CNY"), [RefundView.new(Amount(300, "CNY"))])
        assert (ledger.pending_value, ledger.refundable_value) == (300, 830)
    """
    refunded = pending = returned = count = 0
    disputed = False
    for refund in refunds:
        # A refund in another currency cannot be summed with the payment: nobody can
        # tell what is left, which is what a dispute means.
        disputed = disputed or refund.disputed or refund.currency != authorised.currency
        if refund.state is None or refund.value is None:
            continue
        count += refund.state is not RefundState.REFUSED
        if refund.state is RefundState.REFUNDED:
            refunded += refund.value
        elif refund.state.is_pending:
            pending += refund.value
        elif refund.state.returned:
            returned += refund.value
    return RefundLedger(authorised, refunded, pending, returned, count, disputed)


@dataclass(frozen=True, slots=True)
class RefundablePayment:
    """What admission needs to know of the payment."""

    state: PaymentState
    amount: Amount
    psp_reference: str | None
    authorised_at: datetime | None
    """When the payment became Authorised: the refund window is measured from it."""


def admit_refund(
    payment: RefundablePayment,
    refunds: Iterable[RefundView],
    value: int | None = None,
    currency: str | None = None,
    *,
    now: datetime,
    window: timedelta = DEFAULT_REFUND_WINDOW,
    limit: int = MAX_REFUNDS_PER_PAYMENT,
) -> Amount:
    """The amount of a new refund of ``payment``, or the reason it is refused.

    ``value`` None refunds everything still refundable; ``currency`` None means
    the payment's. Raises ``InvalidRefundError`` for a wrong amount or currency
    and ``RefundNotAllowedError`` when the payment cannot take the refund, each
    with its ``RefundRefusal`` code. Refusals come before any call to Adyen, so
    the caller must hold the payment's lock from here until the refund is stored.

    Example::

        amount = admit_refund(payment, refunds, 300, now=datetime.now(UTC))
    """
    ledger = refund_ledger(payment.amount, refunds)
    psp_reference, authorised_at = _refundable(payment)
    _check_request(payment.amount, value, currency)
    if now > authorised_at + window:
        raise RefundNotAllowedError(
            f"the refund window closed {window.days} days after the authorisation",
            code=RefundRefusal.WINDOW_CLOSED.value,
            psp_reference=psp_reference,
        )
    _check_ledger(ledger, limit, psp_reference)
    wanted = ledger.refundable_value if value is None else value
    if wanted == 0 or wanted > ledger.refundable_value:
        message = _exceeds_message(ledger, wanted)
        raise _refused(RefundRefusal.EXCEEDS_REFUNDABLE, message, psp_reference, ledger)
    return Amount(wanted, payment.amount.currency)


def _exceeds_message(ledger: RefundLedger, wanted: int) -> str:
    currency = ledger.authorised.currency
    if ledger.refundable_value == 0:
        return f"nothing is left to refund of {ledger.authorised}"
    left = Amount(ledger.refundable_value, currency)
    return f"{Amount(wanted, currency)} asked, {left} is left to refund of {ledger.authorised}"


def _refused(
    refusal: RefundRefusal, message: str, psp_reference: str | None, ledger: RefundLedger
) -> RefundNotAllowedError:
    return RefundNotAllowedError(
        message,
        code=refusal.value,
        psp_reference=psp_reference,
        refundable=(ledger.refundable_value, ledger.authorised.currency),
    )


def _refundable(payment: RefundablePayment) -> tuple[str, datetime]:
    """The payment's pspReference and authorisation time, if it can be refunded at all."""
    if (
        payment.state is PaymentState.AUTHORISED
        and payment.psp_reference
        and payment.authorised_at is not None
    ):
        return payment.psp_reference, payment.authorised_at
    raise RefundNotAllowedError(
        f"only an Authorised payment known to Adyen can be refunded (this one is {payment.state})",
        code=RefundRefusal.PAYMENT_NOT_REFUNDABLE.value,
        psp_reference=payment.psp_reference,
    )


def _check_request(authorised: Amount, value: int | None, currency: str | None) -> None:
    if currency is not None and currency != authorised.currency:
        raise InvalidRefundError(
            f"a refund is in the payment's currency ({authorised.currency})",
            code=RefundRefusal.CURRENCY_MISMATCH.value,
        )
    # bool is an int in Python, but True is not an amount.
    if value is not None and (type(value) is not int or not 0 < value <= MAX_MINOR_UNITS):
        raise InvalidRefundError(
            "a refund amount is a positive integer number of minor units",
            code=RefundRefusal.INVALID_AMOUNT.value,
        )


def _check_ledger(ledger: RefundLedger, limit: int, psp_reference: str) -> None:
    if ledger.disputed:
        raise _refused(
            RefundRefusal.UNDER_REVIEW,
            "a refund of this payment states contradicting amounts, so what is left is unknown; "
            "check it in Adyen's Customer Area",
            psp_reference,
            ledger,
        )
    if ledger.refund_count >= limit:
        raise _refused(
            RefundRefusal.LIMIT_REACHED,
            f"this payment already has {ledger.refund_count} refunds (at most {limit})",
            psp_reference,
            ledger,
        )
