from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy.pool import QueuePool

from miniprogram_pay.domain.events import EventSource, PaymentEvent, result_event, webhook_event
from miniprogram_pay.domain.machine import TRANSITIONS
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.reconcile import ConflictKind, Outcome
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import NotFoundError
from miniprogram_pay.storage import (
    Database,
    InboxItem,
    PaymentRecord,
    PaymentRepository,
    ProviderAnswer,
)

AMOUNT = Amount(1130, "CNY")
PSP = "7914073381342284"
ALLOWED_MOVES = {(src, str(t["dest"])) for t in TRANSITIONS for src in t["source"]}


async def create(repository: PaymentRepository, reference: str = "order-1") -> PaymentRecord:
    payment, created = await repository.create_payment(
        reference=reference, openid="o-shopper", amount=AMOUNT, idempotency_key=f"idem-{reference}"
    )
    assert created
    return payment


def details(result_code: str, **overrides: Any) -> PaymentEvent:
    fields: dict[str, Any] = {"psp_reference": PSP, "amount_value": 1130, "amount_currency": "CNY"}
    return result_event(EventSource.DETAILS, result_code, **{**fields, **overrides})


def webhook(dedup_key: str, code: str = "AUTHORISATION", success: bool = True) -> PaymentEvent:
    return webhook_event(
        code,
        success,
        dedup_key=dedup_key,
        psp_reference=PSP,
        amount_value=AMOUNT.value,
        amount_currency=AMOUNT.currency,
    )


def inbox_item(dedup_key: str = "d" * 64, **overrides: Any) -> InboxItem:
    fields: dict[str, Any] = {
        "dedup_key": dedup_key,
        "psp_reference": PSP,
        "merchant_reference": "order-1",
        "event_code": "AUTHORISATION",
        "success": True,
        "amount_value": AMOUNT.value,
        "amount_currency": AMOUNT.currency,
        "reason": None,
        "raw_json": '{"eventCode":"AUTHORISATION"}',
    }
    return InboxItem(**{**fields, **overrides})


# -- payments ------------------------------------------------------------------------


async def test_create_then_get(repository: PaymentRepository) -> None:
    payment = await create(repository)
    assert payment.state is PaymentState.CREATED
    assert (payment.amount, payment.version, payment.conflicts) == (AMOUNT, 0, 0)
    assert payment.psp_reference is None
    assert await repository.get("order-1") == payment
    assert await repository.get("order-2") is None
    history = await repository.history(payment.id)
    assert [(t.from_state, t.to_state) for t in history] == [(None, PaymentState.CREATED)]


async def test_duplicate_reference_returns_the_existing_payment(
    repository: PaymentRepository,
) -> None:
    first = await create(repository)
    again, created = await repository.create_payment(
        reference="order-1", openid="someone-else", amount=Amount(1, "JPY"), idempotency_key="x"
    )
    assert not created
    assert again == first


async def test_apply_unknown_reference_is_not_found(repository: PaymentRepository) -> None:
    with pytest.raises(NotFoundError):
        await repository.apply("nope", details("Authorised"))


async def test_transitions_write_history_events_and_outbox(repository: PaymentRepository) -> None:
    payment = await create(repository)
    answer = ProviderAnswer(payment_data="pd-1", wechat_params={"package": "prepay_id=wx1"})
    pending = await repository.apply(
        "order-1", result_event(EventSource.PAYMENTS, "Pending", psp_reference=PSP), answer=answer
    )
    assert pending.decision is not None and pending.decision.moved
    assert pending.transition is not None
    assert (pending.transition.from_state, pending.transition.to_state) == (
        PaymentState.CREATED,
        PaymentState.PENDING,
    )
    assert pending.payment.psp_reference == PSP
    assert pending.payment.payment_data == "pd-1"
    assert pending.payment.wechat_params == {"package": "prepay_id=wx1"}
    authorised = await repository.apply("order-1", webhook("w1"))
    assert authorised.payment.state is PaymentState.AUTHORISED
    assert authorised.payment.result_code == "Authorised"
    assert await repository.get("order-1") == authorised.payment

    history = await repository.history(payment.id)
    assert [t.to_state for t in history] == [
        PaymentState.CREATED,
        PaymentState.PENDING,
        PaymentState.AUTHORISED,
    ]
    assert history[-1].source == "webhook"
    events = await repository.events(payment.id)
    assert [(e.source, e.kind, e.outcome) for e in events] == [
        ("payments", "Pending", "transition"),
        ("webhook", "AUTHORISATION", "transition"),
    ]
    outbox = await repository.claim_outbox()
    assert [(o.from_state, o.to_state, o.event_id) for o in outbox] == [
        (PaymentState.CREATED, PaymentState.PENDING, f"mpp_{payment.id}_pending"),
        (PaymentState.PENDING, PaymentState.AUTHORISED, f"mpp_{payment.id}_authorised"),
    ]
    assert {o.reference for o in outbox} == {"order-1"}
    assert await repository.count_by_state() == {"Authorised": 1}


async def test_duplicate_event_key_adds_nothing(repository: PaymentRepository) -> None:
    payment = await create(repository)
    event = details("Refused", reason="Not enough balance")
    first = await repository.apply("order-1", event)
    second = await repository.apply("order-1", event)
    assert first.payment.state is PaymentState.REFUSED
    assert first.payment.refusal_reason == "Not enough balance"
    assert (second.duplicate, second.decision, second.transition) == (True, None, None)
    assert second.payment == first.payment
    assert len(await repository.events(payment.id)) == 1
    assert len(await repository.history(payment.id)) == 2
    assert await repository.outbox_counts() == {"pending": 1}


async def test_a_duplicate_still_attaches_a_missing_answer(repository: PaymentRepository) -> None:
    await create(repository)
    event = result_event(EventSource.PAYMENTS, "Pending", psp_reference=PSP)
    await repository.apply("order-1", event)
    again = await repository.apply("order-1", event, answer=ProviderAnswer(payment_data="pd"))
    assert again.duplicate
    assert again.payment.payment_data == "pd"
    kept = await repository.apply("order-1", event, answer=ProviderAnswer(payment_data="other"))
    assert kept.payment.payment_data == "pd"


async def test_conflicts_are_counted_and_logged(repository: PaymentRepository) -> None:
    payment = await create(repository)
    await repository.apply("order-1", details("Authorised"))
    late = await repository.apply("order-1", webhook("w-fail", success=False))
    wrong = await repository.apply("order-1", details("Authorised", amount_value=1))
    assert late.decision is not None
    assert late.decision.conflict is ConflictKind.FAILURE_AFTER_AUTHORISATION
    assert wrong.decision is not None and wrong.decision.outcome is Outcome.CONFLICT
    stored = await repository.get("order-1")
    assert stored is not None
    assert (stored.state, stored.conflicts, stored.result_code) == (
        PaymentState.AUTHORISED,
        2,
        "Authorised",
    )
    conflicts = [e.conflict for e in await repository.events(payment.id) if e.conflict]
    assert conflicts == ["failure_after_authorisation", "amount_mismatch"]


async def test_stale_payments(repository: PaymentRepository) -> None:
    await create(repository, "order-created")
    await create(repository, "order-pending")
    await create(repository, "order-done")
    await repository.apply("order-pending", details("Pending"))
    await repository.apply("order-done", details("Authorised"))
    stale = await repository.stale_payments(older_than_seconds=-60)
    assert sorted(p.reference for p in stale) == ["order-created", "order-pending"]
    assert await repository.stale_payments(older_than_seconds=3600) == []
    assert len(await repository.stale_payments(older_than_seconds=-60, limit=1)) == 1


# -- inbox ---------------------------------------------------------------------------


async def test_store_notification_twice_is_one_row(repository: PaymentRepository) -> None:
    item = inbox_item()
    [first] = await repository.store_notifications([item])
    [second] = await repository.store_notifications([item])
    assert (first.id, first.new, first.status) == (second.id, True, "received")
    assert not second.new
    [stored] = await repository.notifications()
    assert (stored.id, stored.deliveries, stored.attempts) == (first.id, 2, 0)
    assert (stored.merchant_reference, stored.event_code, stored.success) == (
        "order-1",
        "AUTHORISATION",
        True,
    )


async def test_store_a_batch_with_a_repeat_inside(repository: PaymentRepository) -> None:
    a, b = inbox_item("a" * 64), inbox_item("b" * 64)
    stored = await repository.store_notifications([a, b, a])
    assert [s.new for s in stored] == [True, True, False]
    assert stored[0].id == stored[2].id != stored[1].id


async def test_a_large_batch_is_stored_in_chunks_with_its_repeats_counted(
    repository: PaymentRepository,
) -> None:
    # More rows than one INSERT carries, known and unknown keys, repeats inside the batch.
    [known] = await repository.store_notifications([inbox_item(f"{0:064d}")])
    keys = [f"{n:064d}" for n in range(1200)]
    batch = [inbox_item(key) for key in [*keys, keys[0], keys[700], keys[700]]]
    stored = await repository.store_notifications(batch)
    assert len(stored) == len(batch)
    assert stored[0].id == known.id and not stored[0].new
    assert all(s.new for s in stored[1:1200])
    assert not any(s.new for s in stored[1200:])
    assert stored[1201].id == stored[1202].id == stored[700].id
    assert len({s.id for s in stored}) == 1200
    deliveries = {n.id: n.deliveries for n in await repository.notifications(limit=5000)}
    assert (deliveries[known.id], deliveries[stored[700].id], deliveries[stored[1].id]) == (3, 3, 1)


async def test_ignored_items_are_stored_with_their_status(repository: PaymentRepository) -> None:
    item = inbox_item(status="ignored", detail="merchant account is not ours")
    [stored] = await repository.store_notifications([item])
    assert stored.status == "ignored"
    assert await repository.due_notifications() == []
    assert await repository.apply_notification(stored.id) is None


async def test_a_leased_item_is_left_to_its_owner_until_the_lease_ends(
    repository: PaymentRepository,
) -> None:
    await create(repository)
    [stored] = await repository.store_notifications([inbox_item()], lease_seconds=3600)
    assert await repository.due_notifications() == []
    assert await repository.due_notifications(include_leased=True) == [stored.id]
    # A redelivery neither renews nor ends the lease.
    [again] = await repository.store_notifications([inbox_item()], lease_seconds=0)
    assert (again.id, again.new) == (stored.id, False)
    assert await repository.due_notifications() == []
    # Its owner applies it regardless of the lease.
    record = await repository.apply_notification(stored.id)
    assert record is not None and record.status == "applied"
    assert await repository.due_notifications(include_leased=True) == []


async def test_a_failure_replaces_the_lease_with_the_backoff(
    repository: PaymentRepository,
) -> None:
    [stored] = await repository.store_notifications([inbox_item()], lease_seconds=3600)
    fail = repository.record_notification_failure
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=0) == "failed"
    assert await repository.due_notifications() == [stored.id]
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=3600) == "failed"
    # A failed item keeps its backoff even for a drain.
    assert await repository.due_notifications(include_leased=True) == []


async def test_apply_notification_applied_then_none(repository: PaymentRepository) -> None:
    payment = await create(repository)
    [stored] = await repository.store_notifications([inbox_item()])
    assert await repository.due_notifications() == [stored.id]
    record = await repository.apply_notification(stored.id)
    assert record is not None
    assert (record.status, record.detail) == ("applied", None)
    assert record.applied is not None
    assert record.applied.payment.state is PaymentState.AUTHORISED
    assert await repository.apply_notification(stored.id) is None
    assert await repository.due_notifications() == []
    [note] = await repository.notifications()
    assert (note.status, note.attempts) == ("applied", 1)
    [event] = await repository.events(payment.id)
    assert event.key == f"webhook:{stored.dedup_key}"


async def test_redelivery_after_applying_changes_nothing(repository: PaymentRepository) -> None:
    payment = await create(repository)
    [stored] = await repository.store_notifications([inbox_item()])
    await repository.apply_notification(stored.id)
    [again] = await repository.store_notifications([inbox_item()])
    assert (again.id, again.new, again.status) == (stored.id, False, "applied")
    assert await repository.apply_notification(again.id) is None
    assert len(await repository.events(payment.id)) == 1


async def test_apply_notification_for_unknown_reference_is_orphan(
    repository: PaymentRepository,
) -> None:
    [stored] = await repository.store_notifications([inbox_item(merchant_reference="ghost")])
    record = await repository.apply_notification(stored.id)
    assert record is not None
    assert (record.status, record.applied) == ("orphan", None)
    assert record.detail is not None
    assert await repository.apply_notification(stored.id) is None
    assert await repository.notifications(status="orphan") != []


async def test_apply_notification_of_missing_id_is_none(repository: PaymentRepository) -> None:
    assert await repository.apply_notification(12345) is None


async def test_record_notification_failure_then_parked(repository: PaymentRepository) -> None:
    [stored] = await repository.store_notifications([inbox_item()])
    fail = repository.record_notification_failure
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=0) == "failed"
    assert await repository.due_notifications() == [stored.id]
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=3600) == "failed"
    assert await repository.due_notifications() == []
    assert await fail(stored.id, error="Boom" * 100, max_attempts=3, backoff_seconds=0) == "parked"
    assert await repository.due_notifications() == []
    assert await fail(stored.id, error="Boom", max_attempts=3, backoff_seconds=0) == "parked"
    assert await repository.apply_notification(stored.id) is None
    [note] = await repository.notifications()
    assert (note.status, note.attempts) == ("parked", 3)
    assert note.detail is not None and len(note.detail) == 255
    assert await fail(999, error="x", max_attempts=3, backoff_seconds=0) == "missing"


async def test_a_failed_notification_can_still_be_applied(repository: PaymentRepository) -> None:
    await create(repository)
    [stored] = await repository.store_notifications([inbox_item()])
    await repository.record_notification_failure(
        stored.id, error="Boom", max_attempts=5, backoff_seconds=0
    )
    record = await repository.apply_notification(stored.id)
    assert record is not None and record.status == "applied"
    [note] = await repository.notifications()
    assert note.attempts == 2


# -- outbox --------------------------------------------------------------------------


async def _one_outbox_row(repository: PaymentRepository) -> None:
    await create(repository)
    await repository.apply("order-1", details("Authorised"))


async def test_claim_outbox_leases(repository: PaymentRepository) -> None:
    await _one_outbox_row(repository)
    [claimed] = await repository.claim_outbox()
    assert claimed.attempts == 1
    assert await repository.claim_outbox() == []
    await repository.outbox_delivered_many([claimed.id])
    assert await repository.outbox_counts() == {"delivered": 1}
    assert await repository.claim_outbox() == []


async def test_an_expired_lease_is_claimed_again(repository: PaymentRepository) -> None:
    await _one_outbox_row(repository)
    [first] = await repository.claim_outbox(lease_seconds=0)
    [second] = await repository.claim_outbox()
    assert (second.id, second.attempts) == (first.id, 2)


async def test_outbox_failed_retries_then_parks(repository: PaymentRepository) -> None:
    await _one_outbox_row(repository)
    [claimed] = await repository.claim_outbox()
    await repository.outbox_failed(claimed.id, error="503", retry_in_seconds=0, park=False)
    assert await repository.outbox_counts() == {"pending": 1}
    [again] = await repository.claim_outbox()
    assert again.attempts == 2
    await repository.outbox_failed(claimed.id, error="503", retry_in_seconds=3600, park=False)
    assert await repository.claim_outbox() == []
    await repository.outbox_failed(claimed.id, error="x" * 300, retry_in_seconds=0, park=True)
    assert await repository.outbox_counts() == {"parked": 1}
    assert await repository.claim_outbox() == []


async def test_claim_outbox_respects_the_limit(repository: PaymentRepository) -> None:
    for n in range(3):
        await create(repository, f"order-{n}")
        await repository.apply(f"order-{n}", details("Authorised"))
    first = await repository.claim_outbox(limit=2)
    rest = await repository.claim_outbox(limit=2)
    assert len(first) == 2 and len(rest) == 1
    assert {o.id for o in first}.isdisjoint(o.id for o in rest)


# -- concurrency ---------------------------------------------------------------------

RANK = ["Created", "Pending", "Error", "Refused", "Authorised"]


def fifty_events() -> list[tuple[PaymentEvent, str]]:
    """Fifty distinct facts, each with the state an independent reading gives it."""
    api = {"Pending": "Pending", "Received": "Pending", "Error": "Error", "Refused": "Refused"}
    api |= {"Cancelled": "Refused", "RedirectShopper": "Created"}
    events: list[tuple[PaymentEvent, str]] = []
    for n, (code, state) in zip(range(30), itertools.cycle(api.items()), strict=False):
        events.append((details(code, reason=f"r{n}"), state))
    for n in range(18):
        events.append((webhook(f"w{n}", success=False), "Refused"))
    events.append((webhook("w-ok"), "Authorised"))
    events.append((replace(webhook("w-other"), amount_value=1), "Created"))
    return events


async def test_fifty_concurrent_applies_end_in_the_model_state(
    repository: PaymentRepository,
) -> None:
    payment = await create(repository)
    facts = fifty_events()
    assert len({e.key for e, _ in facts}) == 50
    results = await asyncio.gather(*(repository.apply("order-1", e) for e, _ in facts))
    assert not any(r.duplicate for r in results)
    expected = max((state for _, state in facts), key=RANK.index)
    stored = await repository.get("order-1")
    assert stored is not None and stored.state.value == expected == "Authorised"
    history = await repository.history(payment.id)
    states = [t.to_state for t in history]
    assert len(states) == len(set(states))
    assert states[0] is PaymentState.CREATED and states[-1] is stored.state
    assert all((a.value, b.value) in ALLOWED_MOVES for a, b in itertools.pairwise(states))
    assert len(await repository.events(payment.id)) == 50
    assert sum(r.transition is not None for r in results) == len(history) - 1
    assert await repository.outbox_counts() == {"pending": len(history) - 1}


async def test_concurrent_duplicates_apply_once(repository: PaymentRepository) -> None:
    payment = await create(repository)
    event = webhook("w1")
    results = await asyncio.gather(*(repository.apply("order-1", event) for _ in range(20)))
    assert sum(not r.duplicate for r in results) == 1
    assert len(await repository.events(payment.id)) == 1
    assert len(await repository.history(payment.id)) == 2


async def test_concurrent_store_of_one_item_is_one_row(repository: PaymentRepository) -> None:
    item = inbox_item()
    results = await asyncio.gather(*(repository.store_notifications([item]) for _ in range(20)))
    stored = [s for batch in results for s in batch]
    assert len({s.id for s in stored}) == 1
    assert sum(s.new for s in stored) == 1
    [note] = await repository.notifications()
    assert note.deliveries == 20


async def test_concurrent_apply_of_one_notification_applies_once(
    repository: PaymentRepository,
) -> None:
    payment = await create(repository)
    [stored] = await repository.store_notifications([inbox_item()])
    results = await asyncio.gather(*(repository.apply_notification(stored.id) for _ in range(10)))
    assert sum(r is not None for r in results) == 1
    assert len(await repository.events(payment.id)) == 1


async def test_concurrent_creates_of_one_reference_make_one_payment(
    repository: PaymentRepository,
) -> None:
    results = await asyncio.gather(
        *(
            repository.create_payment(
                reference="order-1", openid="o", amount=AMOUNT, idempotency_key=f"k{n}"
            )
            for n in range(10)
        )
    )
    assert sum(created for _, created in results) == 1
    assert len({p.id for p, _ in results}) == 1


async def test_apply_notifications_applies_a_batch_in_one_transaction(
    repository: PaymentRepository,
) -> None:
    refs = [f"batch-{i}" for i in range(5)]
    for ref in refs:
        await repository.create_payment(
            reference=ref, openid="o-batch", amount=Amount(100, "CNY"), idempotency_key=ref
        )
    items = [
        InboxItem(f"k-{ref}", f"psp-{ref}", ref, "AUTHORISATION", True, 100, "CNY", None, "{}")
        for ref in [*refs, "unknown-ref"]
    ]
    stored = await repository.store_notifications(items)
    records = await repository.apply_notifications([s.id for s in stored])
    assert sorted(r.status for r in records) == ["applied"] * 5 + ["orphan"]
    for ref in refs:
        payment = await repository.get(ref)
        assert payment is not None and payment.state.value == "Authorised"
    # Nothing is waiting any more: a second batch applies nothing.
    assert await repository.apply_notifications([s.id for s in stored]) == []


async def test_a_payment_is_found_by_its_payment_data(repository: PaymentRepository) -> None:
    payment, _ = await repository.create_payment(
        reference="by-data", openid="o-data", amount=Amount(100, "CNY"), idempotency_key="k-data"
    )
    long_data = "Ab02b4c0!" + "x" * 4000  # paymentData can be kilobytes long
    await repository.apply(
        "by-data",
        result_event(EventSource.PAYMENTS, "Pending", psp_reference="PSP-DATA"),
        answer=ProviderAnswer(payment_data=long_data),
    )
    found = await repository.get_by_payment_data(long_data)
    assert found is not None and found.id == payment.id
    assert await repository.get_by_payment_data(long_data + "y") is None


def test_the_postgresql_pool_follows_the_configured_size() -> None:
    # Building an engine opens no connection, so no server is needed here.
    database = Database("postgresql+psycopg://app@127.0.0.1:9/app", pool_size=3)
    pool = database.writer.sync_engine.pool
    assert isinstance(pool, QueuePool)
    assert (pool.size(), pool._max_overflow) == (3, 3)  # no public getter for the overflow
    assert database.reader is database.writer
