"""The payment flows: start a payment, submit the Mini Program's result, take webhooks.

Each public method reads as its steps. HTTP is not known here: the edge parses
requests into the small input types below and renders what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from miniprogram_pay.adyen.checkout import (
    AdyenCheckoutClient,
    details_request_body,
    payment_request_body,
)
from miniprogram_pay.adyen.responses import PaymentResult, parse_payment_result
from miniprogram_pay.adyen.webhooks import NotificationBatch, NotificationItem
from miniprogram_pay.config import Settings
from miniprogram_pay.domain.events import (
    EventSource,
    PaymentEvent,
    result_event,
    result_key_prefix,
)
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.orders import Step
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import (
    AdyenError,
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    UpstreamError,
)
from miniprogram_pay.observability.context import ChangeOrigins
from miniprogram_pay.observability.metrics import NO_METRICS, Metrics
from miniprogram_pay.services.batching import GroupCommitter
from miniprogram_pay.services.hooks import Order, OrderRequest, OrderResolver
from miniprogram_pay.storage.orders import OrderRecord, OrderStep
from miniprogram_pay.storage.records import (
    AppliedEvent,
    AppliedRefund,
    InboxItem,
    NotificationRecord,
    OutboxEvent,
    PaymentRecord,
    ProviderAnswer,
    StoredNotification,
)
from miniprogram_pay.storage.stores import Storage
from miniprogram_pay.storage.tables import utcnow

__all__ = [
    "ChangeHandOff",
    "DetailsInput",
    "NoHandOff",
    "PaidAttempt",
    "PaymentInput",
    "PaymentService",
    "ignore_reason",
    "mask",
    "payment_status_shape",
]

# How long the request that stored a webhook item has it to itself (see store_webhook).
# Long enough for the background task that runs just after the answer, even under load.
APPLY_LEASE_SECONDS = 10.0

logger = logging.getLogger("miniprogram_pay.payments")

# The three shapes of the Mini Program's res.errMsg, and what Adyen is sent for each.
# One shape is one kind of /payments/details call: the detail after "fail" is the
# client's prose, and a new wording must not buy another call to Adyen.
OK_STATUS = "requestPayment:ok"
CANCEL_STATUS = "requestPayment:fail cancel"
FAIL_STATUS = "requestPayment:fail"
PAYMENT_STATUS_SHAPES = {"ok": OK_STATUS, "cancel": CANCEL_STATUS, "fail": FAIL_STATUS}


def mask(openid: str) -> str:
    """An openid as it may appear in logs."""
    return openid[:4] + "…" + openid[-2:] if len(openid) > 8 else "…"


@dataclass(frozen=True, slots=True)
class PaymentInput:
    """A validated POST /payments body."""

    body: Mapping[str, Any]
    reference: str | None
    amount: Amount | None


@dataclass(frozen=True, slots=True)
class DetailsInput:
    """A validated POST /payments/details body."""

    reference: str | None
    payment_data: str | None
    payment_status: str


@dataclass(frozen=True, slots=True)
class PaidAttempt:
    """What ``POST /payments`` answers with: the order, and the attempt that answers it."""

    order: OrderRecord
    payment: PaymentRecord
    step: Step


class ChangeHandOff(Protocol):
    """Where committed state changes go (``services/delivery.Deliveries``)."""

    def hand_off_lease(self) -> float | None: ...

    def hand_off(self, events: Iterable[OutboxEvent]) -> None: ...


class NoHandOff:
    """No delivery in this process: outbox rows are left to any process's poll."""

    def hand_off_lease(self) -> float | None:
        return None

    def hand_off(self, events: Iterable[OutboxEvent]) -> None:
        return None


class PaymentService:
    """Starts payments, submits details and ingests webhooks against one database."""

    apply_lease_seconds: float = APPLY_LEASE_SECONDS

    def __init__(
        self,
        *,
        settings: Settings,
        storage: Storage,
        adyen: AdyenCheckoutClient,
        order_resolver: OrderResolver | None,
        changes: ChangeHandOff | None = None,
        metrics: Metrics = NO_METRICS,
        origins: ChangeOrigins | None = None,
        on_duplicate: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.storage = storage
        self.adyen = adyen
        self.order_resolver = order_resolver
        # Told (at once, without waiting) when a change reports a duplicate authorisation.
        self.on_duplicate = on_duplicate
        # A committed change's outbox row is written leased to this process and handed
        # to its delivery in memory: no poll, no claim on the happy path.
        self.changes: ChangeHandOff = changes or NoHandOff()
        self.metrics = metrics
        self.origins = origins or ChangeOrigins()
        # Concurrent webhooks share commits: one transaction stores (then applies)
        # everything that arrived meanwhile, instead of one transaction each.
        self._inbox: GroupCommitter[InboxItem, _Taken] = GroupCommitter(
            self._store_batch, name="inbox"
        )
        self._applier: GroupCommitter[int, NotificationRecord | None] = GroupCommitter(
            self._apply_batch, name="apply"
        )
        self._details_calls = _KeyedLock()

    async def close(self) -> None:
        """Finish queued writes and stop the batching tasks."""
        await self._inbox.stop()
        await self._applier.stop()

    # -- POST /payments --------------------------------------------------------------

    async def start_payment(self, openid: str, request: PaymentInput) -> PaidAttempt:
        """Apply the attempt rule to the order; ask Adyen once for an attempt it starts.

        A paid order answers with its kept attempt, an open one (Created or Pending,
        younger than the prepay lifetime) with the same ``wx.requestPayment``
        parameters, a failed or expired one with a new attempt (``storage/orders.py``).
        """
        order = await self._resolve_order(openid, request)
        found = await self._record(openid, order)
        attempt = found.attempt
        assert attempt is not None  # _record refuses an order that is not this one
        if found.step is not Step.START and (
            attempt.wechat_params is not None or attempt.state.is_final
        ):
            # Adyen already answered for this attempt: hand back what it said rather
            # than pay twice.
            return PaidAttempt(found.order, attempt, found.step)
        result = await self._call_adyen_payments(found.order, attempt)
        applied = await self._apply_result(attempt.reference, EventSource.PAYMENTS, result)
        return PaidAttempt(found.order, applied.payment, found.step)

    async def _resolve_order(self, openid: str, request: PaymentInput) -> Order:
        if self.order_resolver is not None:
            order = await self.order_resolver(OrderRequest(body=request.body, openid=openid))
            if request.amount is not None and request.amount != order.amount:
                raise InvalidRequestError(
                    "the amount is decided by the merchant's order, not by the client",
                    code="client_amount_refused",
                )
            _check_reference(order.reference)
            return order
        if request.amount is None:
            raise InvalidRequestError("amount is required", code="missing_amount")
        return Order(reference=request.reference or _new_reference(), amount=request.amount)

    async def _record(self, openid: str, order: Order) -> OrderStep:
        self._check_limits(order.amount)
        found = await self.storage.orders.pay(
            reference=order.reference,
            openid=openid,
            amount=order.amount,
            idempotency_key=str(uuid.uuid4()),
            lifetime=timedelta(seconds=self.settings.prepay_lifetime_seconds),
        )
        if not found.matches:
            raise ConflictError(
                "this reference is already used by another payment", code="reference_conflict"
            )
        attempt = found.attempt
        if found.step is Step.START and attempt is not None:
            logger.info(
                "order %s: attempt %d (%s) started for %s (%s)",
                order.reference,
                attempt.attempt,
                attempt.reference,
                mask(openid),
                order.amount,
            )
        return found

    def _check_limits(self, amount: Amount) -> None:
        low, high = self.settings.amount_limit(amount.currency)
        if not low <= amount.value <= high:
            raise InvalidRequestError(
                f"amount must be between {low} and {high} minor units of {amount.currency}",
                code="amount_out_of_range",
            )

    async def _call_adyen_payments(
        self, order: OrderRecord, payment: PaymentRecord
    ) -> PaymentResult:
        body = payment_request_body(
            merchant_account=self.settings.adyen_merchant_account,
            amount=payment.amount,
            reference=payment.reference,
            merchant_order_reference=order.reference,
            return_url=self.settings.adyen_return_url,
            country_code=self.settings.adyen_country_code,
            openid=payment.openid,
            app_id=self.settings.wechat_app_id,
        )
        try:
            answer = await self.adyen.create_payment(body, idempotency_key=payment.idempotency_key)
        except AdyenError as exc:
            await self._record_rejection(payment, exc)
            raise
        return parse_payment_result(answer)

    async def _record_rejection(self, payment: PaymentRecord, exc: AdyenError) -> None:
        """Only Adyen refusing the payment request itself (400/422) makes the payment an Error.

        A timeout or 5xx tells nothing yet, and a refused API key (401/403) is the
        merchant's configuration, not this payment: both leave it Created, so a
        retry (with the same Idempotency-Key) can still pay it once that is fixed.
        """
        if exc.code != "adyen_rejected":
            return
        event = result_event(EventSource.PAYMENTS, "Error", reason=exc.message[:255])
        self._note(await self._apply(payment.reference, event))

    async def _apply_result(
        self,
        reference: str,
        source: EventSource,
        result: PaymentResult,
        *,
        request: str | None = None,
        authoritative: bool = True,
    ) -> AppliedEvent:
        if result.result_code is None:
            raise AdyenError("Adyen's answer has no resultCode", code="adyen_bad_response")
        event = result_event(
            source,
            result.result_code,
            psp_reference=result.psp_reference,
            reason=result.refusal_reason,
            amount_value=result.amount_value,
            amount_currency=result.amount_currency,
            request=request,
            authoritative=authoritative,
        )
        answer = ProviderAnswer(
            payment_data=result.payment_data,
            wechat_params=result.wechat_params,
            action=result.action,
        )
        applied = await self._apply(reference, event, answer=answer)
        self._note(applied)
        return applied

    async def _apply(
        self, reference: str, event: PaymentEvent, *, answer: ProviderAnswer | None = None
    ) -> AppliedEvent:
        return await self.storage.payments.apply(
            reference, event, answer=answer, lease_seconds=self.changes.hand_off_lease()
        )

    def _note(self, applied: AppliedEvent) -> None:
        decision = applied.decision
        if applied.transition is not None:
            t = applied.transition
            self.origins.note(applied.payment.reference, t.to_state.value)
            logger.info(
                "payment %s: %s -> %s (%s %s)",
                applied.payment.reference,
                t.from_state,
                t.to_state,
                t.source,
                t.event_kind,
            )
            if applied.outbox is not None:
                self.changes.hand_off([applied.outbox])
            for reported in applied.reported:
                logger.warning(
                    "order %s: attempt %s (%s) is a duplicate authorisation, owed a refund",
                    reported.order_reference,
                    reported.attempt_number,
                    reported.reference,
                )
            self.changes.hand_off(applied.reported)
            if applied.reported and self.on_duplicate is not None:
                self.on_duplicate()
        elif decision is not None and decision.conflict is not None:
            logger.warning(
                "payment %s: conflict %s (the event implies %s); state stays %s",
                applied.payment.reference,
                decision.conflict,
                decision.implied,
                applied.payment.state,
            )

    def _note_refund(self, applied: AppliedRefund) -> None:
        refund = applied.refund
        if applied.moved is not None:
            logger.info(
                "refund %s of %s: %s -> %s",
                refund.reference,
                refund.payment_reference,
                applied.moved[0],
                applied.moved[1],
            )
            if applied.outbox is not None:
                self.changes.hand_off([applied.outbox])
        elif applied.decision is not None and applied.decision.conflict is not None:
            logger.warning(
                "refund %s of %s: conflict %s; state stays %s",
                refund.reference,
                refund.payment_reference,
                applied.decision.conflict,
                refund.state,
            )

    # -- POST /payments/details -------------------------------------------------------

    async def submit_details(self, openid: str, request: DetailsInput) -> PaymentRecord:
        """Send the Mini Program's ``res.errMsg`` to Adyen with the stored paymentData.

        Adyen is asked once per shape of ``res.errMsg`` (ok, cancel, other failure),
        and a final payment only for ``ok`` (a failure report cannot move it): any
        other call answers with the payment as stored.
        """
        shape = payment_status_shape(request.payment_status)
        prefix = result_key_prefix(EventSource.DETAILS, shape)
        seen = self._details_calls.released
        payment, asked = await self._owned_payment(openid, request, prefix)
        if not _answered(payment):
            raise ConflictError(
                "this payment has not been started at Adyen yet", code="payment_not_started"
            )
        # One call at a time per payment in this process: concurrent reports wait, then
        # find the first one's answer recorded instead of asking Adyen again. A report
        # whose read came before another's call ended (it waited, or that call ended
        # between its read and here) reads again: its read may predate that answer.
        async with self._details_calls.hold(payment.id) as waited:
            if waited or self._details_calls.released_since(payment.id, seen):
                payment, asked = await self._owned_payment(openid, request, prefix)
            if not self._needs_details_call(payment, shape, asked=asked):
                return payment
            return await self._call_adyen_details(payment, shape)

    async def _call_adyen_details(self, payment: PaymentRecord, shape: str) -> PaymentRecord:
        status = PAYMENT_STATUS_SHAPES[shape]
        # An sdk action carries paymentData; a v71 redirect action has none, and
        # /payments/details needs only the details then.
        body = details_request_body(status, payment.payment_data)
        key = _details_key(payment.idempotency_key, status)
        try:
            answer = await self.adyen.submit_details(body, idempotency_key=key)
        except AdyenError as exc:
            if payment.payment_data is not None or exc.code != "adyen_rejected":
                raise
            # Without paymentData the details may name no payment at Adyen, which then
            # refuses the call; the shopper's choice reaches Adyen through WeChat, and
            # the webhook settles the payment. The shopper gets the payment as it is.
            logger.info(
                "details for %s (no paymentData) not taken by Adyen (%s); the webhook decides",
                payment.reference,
                exc.error_code or exc.http_status,
            )
            return payment
        applied = await self._apply_result(
            payment.reference,
            EventSource.DETAILS,
            parse_payment_result(answer),
            request=shape,
            # Adyen's answer for the paymentData we stored names our payment; without
            # paymentData it was matched otherwise, and says no more than a webhook.
            authoritative=payment.payment_data is not None,
        )
        return applied.payment

    def _needs_details_call(self, payment: PaymentRecord, shape: str, *, asked: bool) -> bool:
        """``asked``: the payment's event log already holds an answer for this shape."""
        if payment.state is PaymentState.AUTHORISED:
            return False  # the webhook already settled it; nothing can lower it
        if payment.state.is_final and shape != "ok":
            return False
        # Asked before: the same Idempotency-Key would only replay Adyen's answer.
        return not asked

    async def _owned_payment(
        self, openid: str, request: DetailsInput, key_prefix: str
    ) -> tuple[PaymentRecord, bool]:
        """The shopper's payment, and whether it was asked of Adyen in this shape (one read)."""
        found = await self.storage.payments.for_details(
            reference=request.reference, payment_data=request.payment_data, key_prefix=key_prefix
        )
        if found is None or found[0].openid != openid:
            # Someone else's payment looks exactly like a missing one.
            raise NotFoundError("no such payment", code="payment_not_found")
        return found

    # -- POST /webhooks/adyen ---------------------------------------------------------

    async def store_webhook(self, batch: NotificationBatch) -> list[StoredNotification]:
        """Store every (already verified) item durably; applying them comes after.

        New items are stored leased to the caller for ``apply_lease_seconds``: the
        request applies them right after answering, and no worker loop (in this
        process or another) takes them meanwhile. Two appliers would not apply an
        item twice (the database decides that), but a failing item would spend two
        of its attempts at once. If the request never applies them (the process
        died), the loops take them when the lease ends.
        """
        items = [self._inbox_item(batch, item) for item in batch.items]
        taken = await self._inbox.submit(items)
        stored = [note for note, _ in taken]
        # Reported here, in this request's context (its request id), not the batch's.
        for _, record in taken:
            if record is not None:
                self._report_notification(record)
        for note, item in zip(stored, batch.items, strict=True):
            logger.info(
                "webhook %s %s success=%s for %s stored as #%d (%s)",
                item.event_code,
                item.psp_reference,
                item.success,
                item.merchant_reference,
                note.id,
                "new" if note.new else "redelivery",
            )
        return stored

    async def _store_batch(self, items: list[InboxItem]) -> list[_Taken]:
        """Store and apply the batch under one commit; else store it, to apply after.

        Taking the batch whole costs one transaction (one sync of SQLite's log) for
        storing and applying. If anything in it fails, nothing of it was written: the
        items are stored on their own, leased to this request, and applied after the
        answer, item by item if need be, so a failure lands on the item that caused it.
        """
        try:
            intake = await self.storage.inbox.take(
                items, outbox_lease_seconds=self.changes.hand_off_lease()
            )
        except Exception:
            logger.warning(
                "storing and applying %d webhook item(s) at once failed; storing them first",
                len(items),
                exc_info=True,
            )
            stored = await self.storage.inbox.store(items, lease_seconds=self.apply_lease_seconds)
            return [(note, None) for note in stored]
        applied = {record.id: record for record in intake.applied}
        # An item in two callers' batches is reported once, to the first.
        return [(note, applied.pop(note.id, None)) for note in intake.stored]

    def _inbox_item(self, batch: NotificationBatch, item: NotificationItem) -> InboxItem:
        detail = ignore_reason(
            merchant_account=item.merchant_account,
            live=batch.live,
            our_merchant_account=self.settings.adyen_merchant_account,
            our_live=self.settings.is_live,
        )
        return InboxItem(
            dedup_key=item.dedup_key,
            psp_reference=item.psp_reference,
            merchant_reference=item.merchant_reference,
            event_code=item.event_code,
            success=item.success,
            amount_value=item.amount_value,
            amount_currency=item.amount_currency,
            reason=item.reason[:255] if item.reason else None,
            raw_json=json.dumps(item.raw, sort_keys=True, separators=(",", ":")),
            status="ignored" if detail else "received",
            detail=detail,
            live=batch.live,
        )

    async def apply_notifications(self, notification_ids: Sequence[int]) -> None:
        """Apply stored items, sharing one transaction with other callers' items.

        If the shared transaction fails, each item is applied on its own, so a
        failure is recorded against the one item that caused it.
        """
        try:
            records = await self._applier.submit(notification_ids)
        except Exception:
            logger.warning(
                "batch apply failed; applying %d item(s) one by one", len(notification_ids)
            )
            for notification_id in notification_ids:
                await self.apply_notification(notification_id)
            return
        # Reported here, in the caller's context (a webhook request's, with its request id),
        # not in the batch's, which serves many callers at once.
        for record in records:
            if record is not None:
                self._report_notification(record)

    async def _apply_batch(self, notification_ids: list[int]) -> list[NotificationRecord | None]:
        lease = self.changes.hand_off_lease()
        records = await self.storage.inbox.apply(notification_ids, outbox_lease_seconds=lease)
        applied = {r.id: r for r in records}
        # An id two callers both submitted is reported once, to the first.
        return [applied.pop(notification_id, None) for notification_id in notification_ids]

    def _report_notification(self, record: NotificationRecord) -> None:
        if record.received_at is not None:
            self.metrics.webhook_applied((utcnow() - record.received_at).total_seconds())
        if record.applied is not None:
            self._note(record.applied)
        elif record.refund is not None:
            self._note_refund(record.refund)
        else:
            logger.warning("webhook #%d is %s: %s", record.id, record.status, record.detail)

    async def apply_notification(self, notification_id: int) -> None:
        """Apply one stored item; a failure is recorded outside the failed transaction."""
        try:
            record = await self.storage.inbox.apply_one(
                notification_id, outbox_lease_seconds=self.changes.hand_off_lease()
            )
        except Exception as exc:
            status = await self.storage.inbox.record_failure(
                notification_id,
                error=type(exc).__name__,
                max_attempts=self.settings.inbox_max_attempts,
            )
            logger.exception("webhook #%d could not be applied (%s)", notification_id, status)
            return
        if record is not None:
            self._report_notification(record)


# One stored webhook item, and what applying it at once did (None: it waits to be applied).
_Taken = tuple[StoredNotification, NotificationRecord | None]


class _KeyedLock:
    """One ``asyncio.Lock`` per key, forgotten when nobody holds or waits for it."""

    # How many recent releases are remembered by key; past that, any release counts.
    RECENT = 1024

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}
        # Releases of any key, numbered; and the number of each key's latest release,
        # for the ``RECENT`` keys released last.
        self.released = 0
        self._recent: OrderedDict[int, int] = OrderedDict()

    def released_since(self, key: int, seen: int) -> bool:
        """Whether ``key`` was released after release number ``seen`` (``released`` then).

        A holder that read before such a release may hold a stale read. Within the last
        ``RECENT`` releases the key's own entry is still there; past them, the answer is
        a conservative yes.
        """
        if self.released - seen >= self.RECENT:
            return True
        return self._recent.get(key, 0) > seen

    @contextlib.asynccontextmanager
    async def hold(self, key: int) -> AsyncIterator[bool]:
        """Hold the key's lock; yields True when another holder had to be waited for."""
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            waited = lock.locked()
            async with lock:
                yield waited
        finally:
            self._note_release(key)
            users = self._locks[key][1] - 1
            if users:
                self._locks[key] = (lock, users)
            else:
                del self._locks[key]

    def _note_release(self, key: int) -> None:
        self.released += 1
        self._recent[key] = self.released
        self._recent.move_to_end(key)
        if len(self._recent) > self.RECENT:
            self._recent.popitem(last=False)


def ignore_reason(
    *, merchant_account: str | None, live: bool | None, our_merchant_account: str, our_live: bool
) -> str | None:
    """Why a webhook item is not ours to apply, or None when it is.

    ``live`` is None for an item stored before its delivery's flag was kept: it
    cannot be shown to be ours.
    """
    if merchant_account != our_merchant_account:
        return "merchant account is not ours"
    if live is None:
        return "live flag unknown (stored by an older version); ask Adyen to resend it"
    if live != our_live:
        return "live flag does not match this environment"
    return None


def payment_status_shape(payment_status: str) -> str:
    """Which of the three documented shapes of ``res.errMsg`` this is: ok, cancel or fail."""
    if payment_status == OK_STATUS:
        return "ok"
    if payment_status == CANCEL_STATUS:
        return "cancel"
    return "fail"


def _answered(payment: PaymentRecord) -> bool:
    """Adyen answered ``/payments`` for this attempt (a timeout or 5xx leaves it Created)."""
    return payment.state is not PaymentState.CREATED or (
        payment.action is not None or payment.wechat_params is not None
    )


def _new_reference() -> str:
    return "mpp-" + secrets.token_hex(10)


def _check_reference(reference: str) -> None:
    # A NUL would reach the database (PostgreSQL refuses it in text) and Adyen.
    if not 1 <= len(reference) <= 80 or "\x00" in reference:
        raise UpstreamError("the order resolver returned an invalid reference", code="order_error")


def _details_key(payment_key: str, payment_status: str) -> str:
    # One key per (payment, Mini Program outcome): a retry of the same outcome
    # reuses it, a later different outcome (cancel, then pay) gets its own.
    digest = hashlib.sha256(payment_status.encode("utf-8")).hexdigest()[:16]
    return f"{payment_key}-{digest}"
