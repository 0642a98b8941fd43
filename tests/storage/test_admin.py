"""The operators' reads on SQLite and PostgreSQL: payments with or without refunds, one payment's
story with its refunds and their webhook items, and refunds by state in the counts."""

from __future__ import annotations

import json
from datetime import timedelta

from miniprogram_pay.domain.refunds import RefundState, refund_received_event
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.storage import InboxItem, Storage
from miniprogram_pay.storage.admin import AdminReads, PaymentFilter
from miniprogram_pay.storage.refunds import RefundAsk
from tests.storage.helpers import create, details, inbox_item

WINDOW = timedelta(days=365)


async def authorised(storage: Storage, reference: str) -> str:
    """``reference`` created and Authorised, with a pspReference of its own; that pspReference."""
    psp = "PSP-" + reference
    await create(storage, reference)
    await storage.payments.apply(reference, details("Authorised", psp_reference=psp))
    return psp


async def refund(storage: Storage, reference: str, value: int) -> int:
    made, created, _ = await storage.refunds.begin(
        reference, RefundAsk(value, None, None, None), window=WINDOW, limit=50
    )
    assert created
    return made.id


def refund_item(
    key: str, value: int, *, psp: str, merchant_reference: str, original: str
) -> InboxItem:
    return inbox_item(
        key * 64,
        psp_reference=psp,
        merchant_reference=merchant_reference,
        event_code="REFUND",
        amount_value=value,
        raw_json=json.dumps({"originalReference": original}),
    )


async def listed(reads: AdminReads, where: PaymentFilter, limit: int = 50) -> list[str]:
    """Every page of the list, newest first."""
    found: list[str] = []
    before: int | None = None
    while True:
        page = await reads.payments(where, before_id=before, limit=limit)
        found += [p.reference for p in page.items]
        if page.next_before_id is None:
            return found
        before = page.next_before_id


async def test_payments_with_and_without_refunds(storage: Storage) -> None:
    reads = AdminReads(storage.database)
    for reference in ("p-1", "p-2", "p-3", "p-4"):
        await authorised(storage, reference)
    await create(storage, "p-5")  # Created, never refundable
    first = await refund(storage, "p-1", 300)
    await storage.refunds.answer("p-1", first, refund_received_event("R-1"))
    await refund(storage, "p-3", 1130)  # Requested: asked for, not answered

    assert await listed(reads, PaymentFilter(has_refunds=True)) == ["p-3", "p-1"]
    assert await listed(reads, PaymentFilter(has_refunds=False)) == ["p-5", "p-4", "p-2"]
    assert await listed(reads, PaymentFilter(has_refunds=True), limit=1) == ["p-3", "p-1"]
    both = PaymentFilter(has_refunds=False, state=PaymentState.AUTHORISED, reference_prefix="p-")
    assert await listed(reads, both) == ["p-4", "p-2"]
    assert await listed(reads, PaymentFilter(has_refunds=True, has_conflicts=True)) == []
    assert len(await listed(reads, PaymentFilter())) == 5


async def test_the_story_has_the_refunds_and_their_webhook_items_once(storage: Storage) -> None:
    reads = AdminReads(storage.database)
    psp = await authorised(storage, "order-1")
    other_psp = await authorised(storage, "order-2")
    mine = await refund(storage, "order-1", 300)
    await refund(storage, "order-1", 200)
    await refund(storage, "order-2", 100)
    # Refund 1: its webhook came before Adyen's answer (it names our reference only), and
    # Adyen sent it again later; refund 2's too; order-2's belongs to another story.
    items = [
        refund_item("a", 300, psp="R-1", merchant_reference="order-1-refund-1", original=psp),
        refund_item("b", 200, psp="R-2", merchant_reference="order-1-refund-2", original=psp),
        refund_item("c", 100, psp="R-3", merchant_reference="order-2-refund-1", original=other_psp),
        # A Customer Area refund naming the payment's reference: found by both reads.
        refund_item("d", 100, psp="R-9", merchant_reference="order-1", original=psp),
    ]
    stored = await storage.inbox.store(items)
    await storage.inbox.store(items[:1])
    for note in stored:
        await storage.inbox.apply_one(note.id)
    await storage.refunds.answer("order-1", mine, refund_received_event("R-1"))

    story = await reads.story("order-1")
    assert story is not None
    assert [(r.reference, r.psp_reference, r.state) for r in story.refunds] == [
        ("order-1-refund-1", "R-1", RefundState.REFUNDED),
        ("order-1-refund-2", "R-2", RefundState.REFUNDED),
        ("order-1", "R-9", RefundState.REFUNDED),
    ]
    assert [r.external for r in story.refunds] == [False, False, True]
    assert [h.to_state for h in story.refunds[0].history if h.to_state] == [
        RefundState.REQUESTED,
        RefundState.REFUNDED,
    ]
    # Found by the refunds' pspReferences (or references): each item once, as it arrived.
    assert [(n.event_code, n.psp_reference, n.deliveries) for n in story.webhooks] == [
        ("REFUND", "R-1", 2),
        ("REFUND", "R-2", 1),
        ("REFUND", "R-9", 1),
    ]
    refund_changes = [d for d in story.deliveries if d.kind == "refund"]
    assert {d.refund.reference for d in refund_changes if d.refund} == {
        "order-1-refund-1",
        "order-1-refund-2",
        "order-1",
    }
    other = await reads.story("order-2")
    assert other is not None and [r.psp_reference for r in other.refunds] == ["R-3"]
    assert [n.psp_reference for n in other.webhooks if n.event_code == "REFUND"] == ["R-3"]


async def test_a_payment_without_refunds_has_an_empty_list(storage: Storage) -> None:
    await authorised(storage, "order-1")
    story = await AdminReads(storage.database).story("order-1")
    assert story is not None and story.refunds == []


async def test_the_counts_have_refunds_by_state_and_the_oldest_pending(storage: Storage) -> None:
    reads = AdminReads(storage.database)
    await authorised(storage, "order-1")
    received = await refund(storage, "order-1", 300)
    await storage.refunds.answer("order-1", received, refund_received_event("R-1"))
    await refund(storage, "order-1", 200)
    await refund(storage, "order-1", 100)
    counts = await reads.counts(stale_after_seconds=3600)
    assert counts.refunds == {"Requested": 2, "Received": 1}
    assert set(counts.oldest_pending_refund_seconds) == {"Requested", "Received"}
    assert all(0 <= age < 600 for age in counts.oldest_pending_refund_seconds.values())
