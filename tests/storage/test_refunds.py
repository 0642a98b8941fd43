"""The refunds store on SQLite and PostgreSQL: which refund a webhook names, and merges."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta

import pytest

from miniprogram_pay.domain.refunds import (
    RefundState,
    refund_received_event,
    refund_rejected_event,
)
from miniprogram_pay.errors import RefundNotAllowedError
from miniprogram_pay.services.refunds import ledger_of
from miniprogram_pay.storage import InboxItem, Storage
from miniprogram_pay.storage.refunds import RefundAsk
from tests.storage.helpers import PSP, create, details, inbox_item

WINDOW = timedelta(days=365)


async def _authorised(storage: Storage) -> None:
    await create(storage)
    await storage.payments.apply("order-1", details("Authorised"))


def _refund_item(key: str, psp: str, merchant_reference: str, code: str = "REFUND") -> InboxItem:
    return inbox_item(
        key * 64,
        psp_reference=psp,
        merchant_reference=merchant_reference,
        event_code=code,
        amount_value=300,
        raw_json=json.dumps({"originalReference": PSP}),
    )


async def test_a_webhook_before_the_answer_finds_our_refund_by_its_reference(
    storage: Storage,
) -> None:
    await _authorised(storage)
    ours, created, owed = await storage.refunds.begin(
        "order-1", RefundAsk(300, None, None, None), window=WINDOW, limit=50
    )
    assert created and [e.refund.state for e in owed if e.refund] == [RefundState.REQUESTED]
    [stored] = await storage.inbox.store([_refund_item("a", "R1", "order-1-refund-1")])
    record = await storage.inbox.apply_one(stored.id)
    assert record is not None and record.refund is not None
    assert record.refund.refund.id == ours.id and record.refund.moved == (
        RefundState.REQUESTED,
        RefundState.REFUNDED,
    )
    late = await storage.refunds.answer("order-1", ours.id, refund_received_event("R1"))
    assert late.moved is None and late.refund.state is RefundState.REFUNDED
    [refund] = await storage.refunds.of("order-1")
    assert (refund.psp_reference, refund.external) == ("R1", False)


async def test_a_refund_reported_done_after_adyen_rejected_it_admits_nothing_more(
    storage: Storage,
) -> None:
    """Adyen's API rejected the first refund, so the second was admitted for everything;
    then a webhook said the first was made after all (found by the property test).

    The webhook is the source of truth, so the first is Refunded, and with the second still
    pending the two hold more than the payment. Nothing more is admitted: the second is
    Adyen's to refuse, and refundable reads zero until it does.
    """
    await _authorised(storage)
    ask = RefundAsk(None, None, None, None)
    first, _, _ = await storage.refunds.begin("order-1", ask, window=WINDOW, limit=50)
    await storage.refunds.answer("order-1", first.id, refund_rejected_event("422 Unprocessable"))
    second, created, _ = await storage.refunds.begin("order-1", ask, window=WINDOW, limit=50)
    assert created and second.amount is not None and second.amount.value == 1130
    item = inbox_item(
        "e" * 64, psp_reference="R5", merchant_reference=first.reference, event_code="REFUND",
        raw_json=json.dumps({"originalReference": PSP}),
    )  # fmt: skip
    [stored] = await storage.inbox.store([item])
    record = await storage.inbox.apply_one(stored.id)
    assert record is not None and record.refund is not None
    assert record.refund.moved == (RefundState.REFUSED, RefundState.REFUNDED)

    payment = await storage.payments.get("order-1")
    assert payment is not None
    ledger = ledger_of(payment, await storage.refunds.of("order-1"))
    assert (ledger.refunded_value, ledger.pending_value, ledger.refundable_value) == (1130, 1130, 0)
    with pytest.raises(RefundNotAllowedError) as refused:
        one = RefundAsk(1, None, None, None)
        await storage.refunds.begin("order-1", one, window=WINDOW, limit=50)
    assert refused.value.code == "refund_exceeds_refundable"


async def test_an_external_refund_that_is_ours_is_merged_into_ours(storage: Storage) -> None:
    """The webhook named the payment's reference, not ours: it was taken for a Customer Area
    refund until Adyen's answer gave our refund the same pspReference."""
    await _authorised(storage)
    ours, _, _ = await storage.refunds.begin(
        "order-1", RefundAsk(300, None, None, None), window=WINDOW, limit=50
    )
    [stored] = await storage.inbox.store([_refund_item("b", "R2", "order-1")])
    await storage.inbox.apply_one(stored.id)
    assert [(r.external, r.state) for r in await storage.refunds.of("order-1")] == [
        (False, RefundState.REQUESTED),
        (True, RefundState.REFUNDED),
    ]
    merged = await storage.refunds.answer("order-1", ours.id, refund_received_event("R2"))
    assert merged.refund.state is RefundState.REFUNDED
    [refund] = await storage.refunds.of("order-1")
    assert (refund.id, refund.psp_reference, refund.external) == (ours.id, "R2", False)
    assert [h.to_state for h in refund.history if h.to_state] == [
        RefundState.REQUESTED,
        RefundState.RECEIVED,
        RefundState.REFUNDED,
    ]


async def test_a_refund_webhook_for_no_known_payment_is_an_orphan(storage: Storage) -> None:
    await _authorised(storage)
    item = inbox_item(
        "c" * 64,
        psp_reference="R3",
        merchant_reference="nobody",
        event_code="REFUND_FAILED",
        raw_json=json.dumps({"originalReference": "0000000000000000"}),
    )
    [stored] = await storage.inbox.store([item])
    record = await storage.inbox.apply_one(stored.id)
    assert record is not None and record.status == "orphan"
    assert await storage.refunds.of("order-1") == []


async def test_crossed_refund_batches_take_their_locks_in_one_order(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    """Batch one holds payment A's item and B's refund, batch two B's item and A's refund.

    Locking each batch's refund owners after its payments deadlocks the two on
    PostgreSQL (one is aborted and retried); in one global order, neither waits long.
    """
    pairs = 6
    for n in range(2 * pairs):
        reference = f"order-{n}"
        await create(storage, reference)
        await storage.payments.apply(reference, details("Authorised", psp_reference=f"P{n:015}"))

    def payment_item(key: str, n: int) -> InboxItem:
        # A REPORT_AVAILABLE names the payment and moves nothing: it only takes its lock.
        return inbox_item(
            key, merchant_reference=f"order-{n}", event_code="REPORT_AVAILABLE",
            psp_reference=f"P{n:015}",
        )  # fmt: skip

    def refund_item(key: str, n: int) -> InboxItem:
        return inbox_item(
            key, merchant_reference=f"order-{n}-refund-x", event_code="REFUND",
            psp_reference=f"R{n:015}", amount_value=100,
            raw_json=json.dumps({"originalReference": f"P{n:015}"}),
        )  # fmt: skip

    caplog.set_level(logging.INFO, logger="miniprogram_pay")
    for round_ in range(pairs):
        a, b = 2 * round_, 2 * round_ + 1
        one = await storage.inbox.store([payment_item(f"{a:064}", a), refund_item(f"{b:064}", b)])
        two = await storage.inbox.store(
            [payment_item(f"{b + 50:064}", b), refund_item(f"{a + 50:064}", a)]
        )
        applied = await asyncio.gather(
            storage.inbox.apply([s.id for s in one]), storage.inbox.apply([s.id for s in two])
        )
        assert [r.status for batch in applied for r in batch] == ["applied"] * 4
    retried = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert retried == []
    for n in range(2 * pairs):
        [refund] = await storage.refunds.of(f"order-{n}")
        assert (refund.external, refund.state) == (True, RefundState.REFUNDED)
