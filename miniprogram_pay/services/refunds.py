"""Refunds: admit, store, then ask Adyen; one service behind Python, HTTP and the CLI.

The order is what makes a refund safe:

1. Under the payment's row lock, the refund is admitted (``admit_refund``: the
   payment is Authorised, the amount fits what is left, fewer than 50 refunds,
   inside the refund window) and stored as ``Requested`` with the Idempotency-Key
   Adyen will be sent. The commit comes before Adyen is called.
2. Adyen is asked, with that key. Its ``received`` answer moves the refund to
   ``Received`` (a 400/422 to ``Refused``); the outcome comes later, in a webhook.

If the process dies between 1 and 2, or Adyen's answer is lost, the refund stays
``Requested`` and keeps holding its amount. Asking again with the same caller
idempotency key finds the stored refund and calls Adyen with the stored key:
Adyen answers what it answered the first time, so there is never a second refund.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from miniprogram_pay.adyen.checkout import AdyenCheckoutClient
from miniprogram_pay.config import Settings
from miniprogram_pay.domain.ledger import (
    MAX_REFUNDS_PER_PAYMENT,
    RefundablePayment,
    RefundLedger,
    admit_refund,
    refund_ledger,
)
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import (
    RefundEvent,
    RefundReason,
    RefundState,
    RefundView,
    parse_refund_reason,
    refund_received_event,
    refund_rejected_event,
)
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import AdyenError, InvalidRefundError, MiniProgramPayError
from miniprogram_pay.services.payments import ChangeHandOff, NoHandOff
from miniprogram_pay.storage.records import PaymentRecord, Refund
from miniprogram_pay.storage.refunds import RefundAsk
from miniprogram_pay.storage.stores import Storage

__all__ = [
    "MAX_CALLER_KEY_CHARS",
    "RefundService",
    "can_refund",
    "check_caller_key",
    "ledger_of",
    "refund_views",
]

logger = logging.getLogger("miniprogram_pay.refunds")

MAX_CALLER_KEY_CHARS = 64
# A refund is Requested while its call to Adyen runs (retries included, well under a
# minute); one still Requested after this long was left behind, and is asked again.
RESEND_AFTER_SECONDS = 120.0
# The caller key of the refund of a duplicate authorisation: one per attempt, ever.
DUPLICATE_REFUND_KEY = "mpp-duplicate-authorisation"


def check_caller_key(key: str | None) -> str | None:
    """The caller's idempotency key, or ``InvalidRefundError`` (``invalid_idempotency_key``)."""
    if key is None:
        return None
    if not (0 < len(key) <= MAX_CALLER_KEY_CHARS and key.isascii() and key.isprintable()):
        raise InvalidRefundError(
            f"an idempotency key is 1 to {MAX_CALLER_KEY_CHARS} printable ASCII characters",
            code="invalid_idempotency_key",
        )
    return key


def refund_views(payment: PaymentRecord, refunds: Sequence[Refund]) -> list[RefundView]:
    """``payment``'s stored refunds as the ledger and the admission rule see them."""
    currency = payment.amount.currency
    return [
        RefundView(
            r.state,
            r.amount.currency if r.amount else currency,
            r.amount.value if r.amount else None,
            external=r.external,
            psp_reference=r.psp_reference,
            disputed=r.disputed,
        )
        for r in refunds
    ]


def ledger_of(payment: PaymentRecord, refunds: Sequence[Refund]) -> RefundLedger:
    """The refund ledger of ``payment`` from its stored refunds (docs/refunds.md, the ledger)."""
    return refund_ledger(payment.amount, refund_views(payment, refunds))


def can_refund(payment: PaymentRecord) -> bool:
    """Whether ``payment`` can take a refund at all: Authorised, and known to Adyen."""
    return payment.state is PaymentState.AUTHORISED and payment.psp_reference is not None


def _ask(
    amount: Amount | int | None, reason: str | RefundReason | None, caller_key: str | None
) -> RefundAsk:
    value: int | None = amount.value if isinstance(amount, Amount) else amount
    currency = amount.currency if isinstance(amount, Amount) else None
    parsed = reason if isinstance(reason, RefundReason) else parse_refund_reason(reason)
    return RefundAsk(value, currency, parsed, check_caller_key(caller_key))


class RefundService:
    """Refunds payments at Adyen against one database."""

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        adyen: AdyenCheckoutClient,
        limit: int = MAX_REFUNDS_PER_PAYMENT,
        changes: ChangeHandOff | None = None,
    ) -> None:
        self.settings = settings
        # Each refund change's outbox row is leased to this process and handed to its
        # delivery in memory, as a payment's is.
        self.changes: ChangeHandOff = changes or NoHandOff()
        self.storage = storage
        self.adyen = adyen
        self.window = timedelta(days=settings.refund_window_days)
        self.limit = limit

    async def refund(
        self,
        reference: str,
        amount: Amount | int | None = None,
        *,
        reason: str | RefundReason | None = None,
        idempotency_key: str | None = None,
    ) -> Refund:
        """Refund ``amount`` of the payment ``reference`` (None: everything refundable); an
        order's reference refunds the attempt that paid it.

        Raises ``InvalidRefundError`` (400), ``NotFoundError`` (404),
        ``RefundNotAllowedError`` (409, with what is left) before Adyen is called,
        and ``AdyenError`` when Adyen could not be asked (the refund then stays
        ``Requested``: ask again with the same ``idempotency_key``).
        """
        ask = _ask(amount, reason, idempotency_key)
        # An order's reference refunds the attempt that paid it (a first attempt has the
        # order's reference, so without this a refused first attempt would be refunded).
        reference = await self.storage.orders.kept_attempt(reference) or reference
        refund, created, owed = await self.storage.refunds.begin(
            reference,
            ask,
            window=self.window,
            limit=self.limit,
            lease_seconds=self.changes.hand_off_lease(),
        )
        self.changes.hand_off(owed)
        if created:
            logger.info("refund %s of %s stored (%s)", refund.reference, reference, refund.amount)
        elif refund.state is not RefundState.REQUESTED or refund.external:
            return refund  # Adyen answered this one already
        return await self._ask_adyen(reference, refund)

    def preview(
        self,
        payment: PaymentRecord,
        authorised_at: datetime | None,
        refunds: Sequence[Refund],
        value: int | None = None,
    ) -> Amount:
        """What ``refund`` would refund of ``payment`` now, or the refusal it would raise.

        The same rule ``refund`` applies under the payment's lock, applied to a read
        of it: for a confirmation to show. Only ``refund`` decides.
        """
        return admit_refund(
            RefundablePayment(payment.state, payment.amount, payment.psp_reference, authorised_at),
            refund_views(payment, refunds),
            value,
            now=datetime.now(UTC),
            window=self.window,
            limit=self.limit,
        )

    async def refund_duplicates(self) -> int:
        """Refund in full each attempt authorised although its order was paid by another
        (``duplicate_authorisation``), once: the refund's key is fixed, so a second pass, a
        second worker or a crash between two passes asks Adyen for the same refund."""
        if not self.settings.refund_duplicates:
            return 0
        owed = await self.storage.orders.duplicates_owed(refund_key=DUPLICATE_REFUND_KEY)
        for reference in owed:
            try:
                refund = await self.refund(
                    reference, reason=RefundReason.DUPLICATE, idempotency_key=DUPLICATE_REFUND_KEY
                )
            except Exception as exc:  # one attempt's failure must not hold back the others
                logger.warning(
                    "duplicate %s: its refund failed (%s); the next pass asks again",
                    reference,
                    exc,
                    exc_info=not isinstance(exc, MiniProgramPayError),
                )
                continue
            logger.warning(
                "duplicate %s: refunded in full (%s, %s)", reference, refund.reference, refund.state
            )
        return len(owed)

    async def ask_again(self, *, older_than_seconds: float = RESEND_AFTER_SECONDS) -> int:
        """Ask Adyen again, each with its own Idempotency-Key, for our refunds it never
        answered (a crash or an outage between storing one and hearing Adyen); returns
        how many were asked. The same key makes a second ask harmless: Adyen answers
        it with the refund it made the first time, or makes it now."""
        asked = 0
        for refund in await self.storage.refunds.unanswered(older_than_seconds=older_than_seconds):
            asked += 1
            logger.warning(
                "refund %s of %s was never answered by Adyen; asking again with its key",
                refund.reference,
                refund.payment_reference,
            )
            try:
                await self._ask_adyen(refund.payment_reference, refund)
            except Exception as exc:  # one refund's failure must not hold back the others
                # Still Requested (or rejected, and recorded so): the next pass asks again.
                logger.warning(
                    "refund %s: asking again failed (%s)",
                    refund.reference,
                    exc,
                    exc_info=not isinstance(exc, MiniProgramPayError),
                )
        return asked

    async def _ask_adyen(self, reference: str, refund: Refund) -> Refund:
        payment = await self.storage.payments.get(reference)
        assert payment is not None and payment.psp_reference is not None
        assert refund.amount is not None and refund.reference and refund.idempotency_key
        try:
            received = await self.adyen.refund_payment(
                payment.psp_reference,
                merchant_account=self.settings.adyen_merchant_account,
                amount=refund.amount,
                reference=refund.reference,
                idempotency_key=refund.idempotency_key,
                reason=RefundReason(refund.reason) if refund.reason else None,
            )
        except AdyenError as exc:
            if exc.code == "adyen_rejected":
                # Adyen refused the request itself: no refund exists, none will.
                event = refund_rejected_event(exc.message[:255])
                await self._record(reference, refund, event)
            logger.warning("refund %s: Adyen could not take it (%s)", refund.reference, exc.code)
            raise
        event = refund_received_event(
            received.psp_reference,
            amount_value=received.amount_value,
            amount_currency=received.amount_currency,
        )
        recorded = await self._record(reference, refund, event)
        logger.info("refund %s received by Adyen as %s", refund.reference, recorded.psp_reference)
        return recorded

    async def _record(self, reference: str, refund: Refund, event: RefundEvent) -> Refund:
        applied = await self.storage.refunds.answer(
            reference, refund.id, event, lease_seconds=self.changes.hand_off_lease()
        )
        if applied.outbox is not None:
            self.changes.hand_off([applied.outbox])
        return applied.refund
