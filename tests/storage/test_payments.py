"""Payments: creating, reading, applying events (one by one and concurrently)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace

import pytest

from miniprogram_pay.domain.events import EventSource, PaymentEvent, result_event
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.reconcile import ConflictKind, Outcome
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import NotFoundError
from miniprogram_pay.storage import (
    ProviderAnswer,
    Storage,
)
from tests.storage.helpers import ALLOWED_MOVES, AMOUNT, PSP, create, details, webhook


async def test_create_then_get(storage: Storage) -> None:
    payment = await create(storage)
    assert payment.state is PaymentState.CREATED
    assert (payment.amount, payment.version, payment.conflicts) == (AMOUNT, 0, 0)
    assert payment.psp_reference is None
    assert await storage.payments.get("order-1") == payment
    assert await storage.payments.get("order-2") is None
    history = await storage.payments.history(payment.id)
    assert [(t.from_state, t.to_state) for t in history] == [(None, PaymentState.CREATED)]


async def test_duplicate_reference_returns_the_existing_payment(
    storage: Storage,
) -> None:
    first = await create(storage)
    again, created = await storage.payments.create(
        reference="order-1", openid="someone-else", amount=Amount(1, "JPY"), idempotency_key="x"
    )
    assert not created
    assert again == first


async def test_apply_unknown_reference_is_not_found(storage: Storage) -> None:
    with pytest.raises(NotFoundError):
        await storage.payments.apply("nope", details("Authorised"))


async def test_transitions_write_history_events_and_outbox(storage: Storage) -> None:
    payment = await create(storage)
    answer = ProviderAnswer(payment_data="pd-1", wechat_params={"package": "prepay_id=wx1"})
    pending = await storage.payments.apply(
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
    authorised = await storage.payments.apply("order-1", webhook("w1"))
    assert authorised.payment.state is PaymentState.AUTHORISED
    assert authorised.payment.result_code == "Authorised"
    assert await storage.payments.get("order-1") == authorised.payment

    history = await storage.payments.history(payment.id)
    assert [t.to_state for t in history] == [
        PaymentState.CREATED,
        PaymentState.PENDING,
        PaymentState.AUTHORISED,
    ]
    assert history[-1].source == "webhook"
    events = await storage.payments.events(payment.id)
    assert [(e.source, e.kind, e.outcome) for e in events] == [
        ("payments", "Pending", "transition"),
        ("webhook", "AUTHORISATION", "transition"),
    ]
    outbox = await storage.outbox.claim()
    assert [(o.from_state, o.to_state, o.event_id) for o in outbox] == [
        (PaymentState.CREATED, PaymentState.PENDING, f"mpp_{payment.id}_pending"),
        (PaymentState.PENDING, PaymentState.AUTHORISED, f"mpp_{payment.id}_authorised"),
    ]
    assert {o.reference for o in outbox} == {"order-1"}
    assert await storage.payments.count_by_state() == {"Authorised": 1}


async def test_duplicate_event_key_adds_nothing(storage: Storage) -> None:
    payment = await create(storage)
    event = details("Refused", reason="Not enough balance")
    first = await storage.payments.apply("order-1", event)
    second = await storage.payments.apply("order-1", event)
    assert first.payment.state is PaymentState.REFUSED
    assert first.payment.refusal_reason == "Not enough balance"
    assert (second.duplicate, second.decision, second.transition) == (True, None, None)
    assert second.payment == first.payment
    assert len(await storage.payments.events(payment.id)) == 1
    assert len(await storage.payments.history(payment.id)) == 2
    assert await storage.outbox.counts() == {"pending": 1}


async def test_a_duplicate_still_attaches_a_missing_answer(storage: Storage) -> None:
    await create(storage)
    event = result_event(EventSource.PAYMENTS, "Pending", psp_reference=PSP)
    await storage.payments.apply("order-1", event)
    again = await storage.payments.apply("order-1", event, answer=ProviderAnswer(payment_data="pd"))
    assert again.duplicate
    assert again.payment.payment_data == "pd"
    kept = await storage.payments.apply(
        "order-1", event, answer=ProviderAnswer(payment_data="other")
    )
    assert kept.payment.payment_data == "pd"


async def test_conflicts_are_counted_and_logged(storage: Storage) -> None:
    payment = await create(storage)
    await storage.payments.apply("order-1", details("Authorised"))
    late = await storage.payments.apply("order-1", webhook("w-fail", success=False))
    wrong = await storage.payments.apply("order-1", details("Authorised", amount_value=1))
    assert late.decision is not None
    assert late.decision.conflict is ConflictKind.FAILURE_AFTER_AUTHORISATION
    assert wrong.decision is not None and wrong.decision.outcome is Outcome.CONFLICT
    stored = await storage.payments.get("order-1")
    assert stored is not None
    assert (stored.state, stored.conflicts, stored.result_code) == (
        PaymentState.AUTHORISED,
        2,
        "Authorised",
    )
    conflicts = [e.conflict for e in await storage.payments.events(payment.id) if e.conflict]
    assert conflicts == ["failure_after_authorisation", "amount_mismatch"]


async def test_stale_payments(storage: Storage) -> None:
    await create(storage, "order-created")
    await create(storage, "order-pending")
    await create(storage, "order-done")
    await storage.payments.apply("order-pending", details("Pending"))
    await storage.payments.apply("order-done", details("Authorised"))
    stale = await storage.payments.stale(older_than_seconds=-60)
    assert sorted(p.reference for p in stale) == ["order-created", "order-pending"]
    assert await storage.payments.stale(older_than_seconds=3600) == []
    assert len(await storage.payments.stale(older_than_seconds=-60, limit=1)) == 1


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
    storage: Storage,
) -> None:
    payment = await create(storage)
    facts = fifty_events()
    assert len({e.key for e, _ in facts}) == 50
    results = await asyncio.gather(*(storage.payments.apply("order-1", e) for e, _ in facts))
    assert not any(r.duplicate for r in results)
    expected = max((state for _, state in facts), key=RANK.index)
    stored = await storage.payments.get("order-1")
    assert stored is not None and stored.state.value == expected == "Authorised"
    history = await storage.payments.history(payment.id)
    states = [t.to_state for t in history]
    assert len(states) == len(set(states))
    assert states[0] is PaymentState.CREATED and states[-1] is stored.state
    assert all((a.value, b.value) in ALLOWED_MOVES for a, b in itertools.pairwise(states))
    assert len(await storage.payments.events(payment.id)) == 50
    assert sum(r.transition is not None for r in results) == len(history) - 1
    assert await storage.outbox.counts() == {"pending": len(history) - 1}


async def test_concurrent_duplicates_apply_once(storage: Storage) -> None:
    payment = await create(storage)
    event = webhook("w1")
    results = await asyncio.gather(*(storage.payments.apply("order-1", event) for _ in range(20)))
    assert sum(not r.duplicate for r in results) == 1
    assert len(await storage.payments.events(payment.id)) == 1
    assert len(await storage.payments.history(payment.id)) == 2


async def test_concurrent_creates_of_one_reference_make_one_payment(
    storage: Storage,
) -> None:
    results = await asyncio.gather(
        *(
            storage.payments.create(
                reference="order-1", openid="o", amount=AMOUNT, idempotency_key=f"k{n}"
            )
            for n in range(10)
        )
    )
    assert sum(created for _, created in results) == 1
    assert len({p.id for p, _ in results}) == 1


async def test_a_payment_is_found_by_its_payment_data(storage: Storage) -> None:
    payment, _ = await storage.payments.create(
        reference="by-data", openid="o-data", amount=Amount(100, "CNY"), idempotency_key="k-data"
    )
    long_data = "Ab02b4c0!" + "x" * 4000  # paymentData can be kilobytes long
    await storage.payments.apply(
        "by-data",
        result_event(EventSource.PAYMENTS, "Pending", psp_reference="PSP-DATA"),
        answer=ProviderAnswer(payment_data=long_data),
    )
    found = await storage.payments.get_by_payment_data(long_data)
    assert found is not None and found.id == payment.id
    assert await storage.payments.get_by_payment_data(long_data + "y") is None


async def test_the_details_answer_for_our_payment_data_fixes_the_psp_reference(
    storage: Storage,
) -> None:
    """A failure never gives the pspReference; our own call's answer does, and is kept."""
    await create(storage, "order-psp")
    refused_elsewhere = replace(webhook("other", success=False), psp_reference="PSP-OTHER")
    await storage.payments.apply("order-psp", refused_elsewhere)
    found = await storage.payments.get("order-psp")
    assert found is not None and found.psp_reference is None
    heard = replace(webhook("heard"), psp_reference="PSP-HEARD")
    await storage.payments.apply("order-psp", heard)  # unconfirmed: a webhook cannot tell
    ours = details("Authorised", psp_reference="PSP-OURS")
    applied = await storage.payments.apply("order-psp", ours)
    assert applied.decision is not None and applied.decision.conflict is None
    found = await storage.payments.get("order-psp")
    assert found is not None
    assert (found.psp_reference, found.psp_confirmed) == ("PSP-OURS", True)
    # Confirmed, it is not replaced, not even by another authoritative answer.
    other = await storage.payments.apply("order-psp", details("Authorised", psp_reference="PSP-2"))
    assert other.decision is not None
    assert other.decision.conflict is ConflictKind.PSP_REFERENCE_MISMATCH
