"""The inbox: storing webhook items, leases, applying them, failures."""

from __future__ import annotations

import asyncio

from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.storage import (
    InboxItem,
    Storage,
)
from miniprogram_pay.storage.admin import AdminReads
from miniprogram_pay.storage.tables import utcnow
from tests.storage.helpers import create, inbox_item


async def test_store_notification_twice_is_one_row(storage: Storage) -> None:
    item = inbox_item()
    [first] = await storage.inbox.store([item])
    [second] = await storage.inbox.store([item])
    assert (first.id, first.new, first.status) == (second.id, True, "received")
    assert not second.new
    [stored] = await storage.inbox.listing()
    assert (stored.id, stored.deliveries, stored.attempts) == (first.id, 2, 0)
    assert (stored.merchant_reference, stored.event_code, stored.success) == (
        "order-1",
        "AUTHORISATION",
        True,
    )


async def test_store_a_batch_with_a_repeat_inside(storage: Storage) -> None:
    a, b = inbox_item("a" * 64), inbox_item("b" * 64)
    stored = await storage.inbox.store([a, b, a])
    assert [s.new for s in stored] == [True, True, False]
    assert stored[0].id == stored[2].id != stored[1].id


async def test_a_large_batch_is_stored_in_chunks_with_its_repeats_counted(
    storage: Storage,
) -> None:
    # More rows than one INSERT carries, known and unknown keys, repeats inside the batch.
    [known] = await storage.inbox.store([inbox_item(f"{0:064d}")])
    keys = [f"{n:064d}" for n in range(1200)]
    batch = [inbox_item(key) for key in [*keys, keys[0], keys[700], keys[700]]]
    stored = await storage.inbox.store(batch)
    assert len(stored) == len(batch)
    assert stored[0].id == known.id and not stored[0].new
    assert all(s.new for s in stored[1:1200])
    assert not any(s.new for s in stored[1200:])
    assert stored[1201].id == stored[1202].id == stored[700].id
    assert len({s.id for s in stored}) == 1200
    deliveries = {n.id: n.deliveries for n in await storage.inbox.listing(limit=5000)}
    assert (deliveries[known.id], deliveries[stored[700].id], deliveries[stored[1].id]) == (3, 3, 1)


async def test_ignored_items_are_stored_with_their_status(storage: Storage) -> None:
    item = inbox_item(status="ignored", detail="merchant account is not ours")
    [stored] = await storage.inbox.store([item])
    assert stored.status == "ignored"
    assert await storage.inbox.due() == []
    assert await storage.inbox.apply_one(stored.id) is None


async def test_a_leased_item_is_left_to_its_owner_until_the_lease_ends(
    storage: Storage,
) -> None:
    await create(storage)
    [stored] = await storage.inbox.store([inbox_item()], lease_seconds=3600)
    assert await storage.inbox.due() == []
    assert await storage.inbox.due(include_leased=True) == [stored.id]
    # A redelivery neither renews nor ends the lease.
    [again] = await storage.inbox.store([inbox_item()], lease_seconds=0)
    assert (again.id, again.new) == (stored.id, False)
    assert await storage.inbox.due() == []
    # Its owner applies it regardless of the lease.
    record = await storage.inbox.apply_one(stored.id)
    assert record is not None and record.status == "applied"
    assert await storage.inbox.due(include_leased=True) == []


async def test_a_failure_replaces_the_lease_with_the_backoff(
    storage: Storage,
) -> None:
    [stored] = await storage.inbox.store([inbox_item()], lease_seconds=3600)
    fail = storage.inbox.record_failure
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=0) == "failed"
    assert await storage.inbox.due() == [stored.id]
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=3600) == "failed"
    # A failed item keeps its backoff even for a drain.
    assert await storage.inbox.due(include_leased=True) == []


async def test_apply_notification_applied_then_none(storage: Storage) -> None:
    payment = await create(storage)
    [stored] = await storage.inbox.store([inbox_item()])
    assert await storage.inbox.due() == [stored.id]
    record = await storage.inbox.apply_one(stored.id)
    assert record is not None
    assert (record.status, record.detail) == ("applied", None)
    assert record.applied is not None
    assert record.applied.payment.state is PaymentState.AUTHORISED
    assert await storage.inbox.apply_one(stored.id) is None
    assert await storage.inbox.due() == []
    [note] = await storage.inbox.listing()
    assert (note.status, note.attempts) == ("applied", 1)
    [event] = await storage.payments.events(payment.id)
    assert event.key == f"webhook:{stored.dedup_key}"


async def test_redelivery_after_applying_changes_nothing(storage: Storage) -> None:
    payment = await create(storage)
    [stored] = await storage.inbox.store([inbox_item()])
    await storage.inbox.apply_one(stored.id)
    [again] = await storage.inbox.store([inbox_item()])
    assert (again.id, again.new, again.status) == (stored.id, False, "applied")
    assert await storage.inbox.apply_one(again.id) is None
    assert len(await storage.payments.events(payment.id)) == 1


async def test_apply_notification_for_unknown_reference_is_orphan(
    storage: Storage,
) -> None:
    [stored] = await storage.inbox.store([inbox_item(merchant_reference="ghost")])
    record = await storage.inbox.apply_one(stored.id)
    assert record is not None
    assert (record.status, record.applied) == ("orphan", None)
    assert record.detail is not None
    assert await storage.inbox.apply_one(stored.id) is None
    assert await storage.inbox.listing(status="orphan") != []


async def test_apply_notification_of_missing_id_is_none(storage: Storage) -> None:
    assert await storage.inbox.apply_one(12345) is None


async def test_record_notification_failure_then_parked(storage: Storage) -> None:
    [stored] = await storage.inbox.store([inbox_item()])
    fail = storage.inbox.record_failure
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=0) == "failed"
    assert await storage.inbox.due() == [stored.id]
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=3600) == "failed"
    assert await storage.inbox.due() == []
    assert await fail(stored.id, error="Boom" * 100, max_attempts=3, backoff_seconds=0) == "parked"
    assert await storage.inbox.due() == []
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=0) == "parked"
    assert await storage.inbox.apply_one(stored.id) is None
    [note] = await storage.inbox.listing()
    assert (note.status, note.attempts) == ("parked", 3)
    assert note.detail is not None and len(note.detail) == 255
    assert await fail(999, error="x", max_attempts=3, backoff_seconds=0) == "missing"


async def test_a_failed_notification_can_still_be_applied(storage: Storage) -> None:
    await create(storage)
    [stored] = await storage.inbox.store([inbox_item()])
    await storage.inbox.record_failure(stored.id, error="Boom", max_attempts=5, backoff_seconds=0)
    record = await storage.inbox.apply_one(stored.id)
    assert record is not None and record.status == "applied"
    [note] = await storage.inbox.listing()
    assert note.attempts == 2


async def test_concurrent_store_of_one_item_is_one_row(storage: Storage) -> None:
    item = inbox_item()
    results = await asyncio.gather(*(storage.inbox.store([item]) for _ in range(20)))
    stored = [s for batch in results for s in batch]
    assert len({s.id for s in stored}) == 1
    assert sum(s.new for s in stored) == 1
    [note] = await storage.inbox.listing()
    assert note.deliveries == 20


async def test_concurrent_apply_of_one_notification_applies_once(
    storage: Storage,
) -> None:
    payment = await create(storage)
    [stored] = await storage.inbox.store([inbox_item()])
    results = await asyncio.gather(*(storage.inbox.apply_one(stored.id) for _ in range(10)))
    assert sum(r is not None for r in results) == 1
    assert len(await storage.payments.events(payment.id)) == 1


async def test_apply_notifications_applies_a_batch_in_one_transaction(
    storage: Storage,
) -> None:
    refs = [f"batch-{i}" for i in range(5)]
    for ref in refs:
        await storage.payments.create(
            reference=ref, openid="o-batch", amount=Amount(100, "CNY"), idempotency_key=ref
        )
    items = [
        InboxItem(f"k-{ref}", f"psp-{ref}", ref, "AUTHORISATION", True, 100, "CNY", None, "{}")
        for ref in [*refs, "unknown-ref"]
    ]
    stored = await storage.inbox.store(items)
    records = await storage.inbox.apply([s.id for s in stored])
    assert sorted(r.status for r in records) == ["applied"] * 5 + ["orphan"]
    for ref in refs:
        payment = await storage.payments.get(ref)
        assert payment is not None and payment.state.value == "Authorised"
    # Nothing is waiting any more: a second batch applies nothing.
    assert await storage.inbox.apply([s.id for s in stored]) == []


# -- storing and applying in one transaction ---------------------------------------------


async def test_take_stores_and_applies_under_one_commit(storage: Storage) -> None:
    payment = await create(storage)
    before = storage.database.counts()
    intake = await storage.inbox.take([inbox_item(), inbox_item()])
    after = storage.database.counts()
    assert (after.writes - before.writes, after.reads - before.reads) == (1, 0)
    [first, again] = intake.stored
    assert (first.id, first.new, first.status) == (again.id, True, "applied")
    assert not again.new
    [record] = intake.applied
    assert record.applied is not None and record.applied.payment.state is PaymentState.AUTHORISED
    [note] = await storage.inbox.listing()
    assert (note.status, note.deliveries, note.attempts) == ("applied", 2, 1)
    assert len(await storage.payments.events(payment.id)) == 1
    # Written for any process to deliver (no lease asked for): due at once.
    assert [o.event_id for o in await storage.outbox.claim()] == [f"mpp_{payment.id}_authorised"]


async def test_take_leaves_ignored_failed_and_applied_items_as_they_are(
    storage: Storage,
) -> None:
    await create(storage)
    ignored = inbox_item("i" * 64, status="ignored", detail="merchant account is not ours")
    [failed] = await storage.inbox.store([inbox_item("f" * 64)])
    await storage.inbox.record_failure(failed.id, error="Boom", max_attempts=5, backoff_seconds=0)
    [applied] = (await storage.inbox.take([inbox_item("a" * 64)])).stored
    intake = await storage.inbox.take(
        [
            ignored,
            inbox_item("f" * 64),
            inbox_item("a" * 64),
            inbox_item("o" * 64, merchant_reference="ghost"),
        ]
    )
    # A failed item keeps its backoff; an applied one is a redelivery; an unknown
    # reference is an orphan at once.
    assert [(s.status, s.new) for s in intake.stored] == [
        ("ignored", True),
        ("failed", False),
        ("applied", False),
        ("orphan", True),
    ]
    assert intake.stored[2].id == applied.id
    assert [r.status for r in intake.applied] == ["orphan"]


async def test_take_of_a_redelivery_still_waiting_applies_it(storage: Storage) -> None:
    # Stored by a request that died before applying it: the redelivery does it.
    await create(storage)
    [stored] = await storage.inbox.store([inbox_item()], lease_seconds=3600)
    intake = await storage.inbox.take([inbox_item()])
    assert [(s.id, s.new, s.status) for s in intake.stored] == [(stored.id, False, "applied")]
    assert await storage.inbox.due(include_leased=True) == []


async def test_applied_records_carry_when_their_item_was_first_received(storage: Storage) -> None:
    """The acceptance-to-apply lag starts at the first delivery, on either path."""
    await create(storage)
    await create(storage, "order-2")
    reads = AdminReads(storage.database)
    started = utcnow()
    [taken] = (await storage.inbox.take([inbox_item("t" * 64)])).applied
    [waiting] = await storage.inbox.store(
        [inbox_item(merchant_reference="order-2")], lease_seconds=3600
    )
    # Redelivered later: the row keeps its first received_at, and so does the record.
    [redelivered] = (await storage.inbox.take([inbox_item(merchant_reference="order-2")])).applied
    [orphan] = await storage.inbox.store([inbox_item("o" * 64, merchant_reference="ghost")])
    [orphaned] = await storage.inbox.apply([orphan.id])
    stored = {n.id: n.received_at for n in (await reads.notifications()).items}
    assert redelivered.id == waiting.id and orphaned.status == "orphan"
    for record in (taken, redelivered, orphaned):
        assert record.received_at is not None and record.received_at >= started
        assert record.received_at == stored[record.id]
