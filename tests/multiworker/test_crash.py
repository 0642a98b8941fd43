"""SIGKILL at the two dangerous moments: after storing a webhook, after committing a change.

A restarted worker must finish the job: the stored item applied exactly once, every
committed state change told to the host, at least once, under a stable event id.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import col, select

from miniprogram_pay import PaymentState
from miniprogram_pay.storage.tables import NotificationRow, OutboxRow
from tests.multiworker.conftest import Store
from tests.multiworker.harness import Merchants, Shop, deliveries, wait_until
from tests.rows import select_rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


async def _outbox(store: Store) -> list[OutboxRow]:
    return await select_rows(store.database, select(OutboxRow).order_by(col(OutboxRow.id)))


async def _notifications(store: Store) -> list[NotificationRow]:
    stmt = select(NotificationRow).order_by(col(NotificationRow.id))
    return await select_rows(store.database, stmt)


async def _expected_event_ids(store: Store, reference: str) -> set[str]:
    payment = await store.storage.payments.get(reference)
    assert payment is not None
    history = await store.storage.payments.history(payment.id)
    return {f"mpp_{payment.id}_{t.to_state.value.lower()}" for t in history if t.from_state}


async def test_webhook_stored_then_worker_killed_is_applied_once_after_restart(
    merchants: Merchants, shop: Shop, store: Store, deliveries_dir: Path
) -> None:
    reference = "crash-inbox-1"
    # The item is leased to the request that stored it; the lease is short here so
    # the next process does not wait the default 10 s for it.
    first = await merchants.start("first", MPP_TEST_NO_APPLY="1", MPP_TEST_APPLY_LEASE_SECONDS="2")
    headers = await shop.login(first.url, "carol", 1)
    answer = await shop.pay(first.url, headers, reference)
    assert answer["state"] == "Pending"
    item = shop.item(reference, answer["pspReference"], "AUTHORISATION", True)
    await shop.webhook(first.url, item)

    # [accepted] came after the commit: another connection sees the item right away.
    stored = await _notifications(store)
    assert [(n.status, n.merchant_reference) for n in stored] == [("received", reference)]
    await asyncio.to_thread(first.kill)
    assert first.process.returncode == -9
    payment = await store.storage.payments.get(reference)
    assert payment is not None and payment.state is PaymentState.PENDING

    second = await merchants.start("second")

    async def applied() -> bool:
        return [n.status for n in await _notifications(store)] == ["applied"]

    await wait_until(applied, seconds=15, what="the stored item to be applied")
    await shop.webhook(second.url, item)  # Adyen redelivers: recognised, changes nothing

    payment = await store.storage.payments.get(reference)
    assert payment is not None and payment.state is PaymentState.AUTHORISED
    events = await store.storage.payments.events(payment.id)
    assert [e.outcome for e in events if e.source == "webhook"] == ["transition"]
    [note] = await _notifications(store)
    assert (note.status, note.attempts, note.deliveries) == ("applied", 1, 2)
    history = await store.storage.payments.history(payment.id)
    assert [t.to_state for t in history] == [
        PaymentState.CREATED,
        PaymentState.PENDING,
        PaymentState.AUTHORISED,
    ]
    expected = await _expected_event_ids(store, reference)

    async def delivered() -> bool:
        return {d["event_id"] for d in deliveries(deliveries_dir)} == expected

    await wait_until(delivered, seconds=15, what="both state changes to reach the host")


async def test_change_committed_then_worker_killed_is_delivered_after_restart(
    merchants: Merchants, shop: Shop, store: Store, deliveries_dir: Path
) -> None:
    reference = "crash-outbox-1"
    # The first process's host hook never returns for Pending (and would not time out
    # before the kill); its outbox lease is short, so the restarted process need not
    # wait long for the row.
    first = await merchants.start(
        "first",
        MPP_TEST_HOOK_BLOCKS="Pending",
        MPP_TEST_LEASE_SECONDS="2",
        MINIPROGRAM_PAY_HOOK_TIMEOUT_SECONDS="120",
    )
    headers = await shop.login(first.url, "dave", 1)
    answer = await shop.pay(first.url, headers, reference)

    async def hook_entered() -> bool:
        return any(d["state"] == "Pending" for d in deliveries(deliveries_dir))

    await wait_until(hook_entered, seconds=15, what="the hook to be called for Pending")
    r = await shop.details(first.url, headers, reference, "requestPayment:ok")
    assert r.status_code == 200 and r.json()["state"] == "Authorised", r.text
    await shop.webhook(
        first.url, shop.item(reference, answer["pspReference"], "AUTHORISATION", True)
    )

    async def applied() -> bool:
        return [n.status for n in await _notifications(store)] == ["applied"]

    await wait_until(applied, seconds=15, what="the webhook to be applied")

    async def authorised_delivered() -> bool:
        return [o.status for o in await _outbox(store)] == ["pending", "delivered"]

    # The hanging Pending delivery holds its own row only: Authorised reaches the host.
    await wait_until(authorised_delivered, seconds=15, what="Authorised to reach the host")
    await asyncio.to_thread(first.kill)
    assert first.process.returncode == -9
    assert [(o.to_state, o.status) for o in await _outbox(store)] == [
        ("Pending", "pending"),  # leased by the dead process, hook entered, never returned
        ("Authorised", "delivered"),
    ]

    await merchants.start("second")
    expected = await _expected_event_ids(store, reference)

    async def all_delivered() -> bool:
        return all(o.status == "delivered" for o in await _outbox(store))

    await wait_until(all_delivered, seconds=20, what="the outbox to drain after the restart")
    seen = deliveries(deliveries_dir)
    assert {d["event_id"] for d in seen} == expected  # nothing lost, nothing invented
    counts = Counter(d["event_id"] for d in seen)
    pending_id = next(e for e in expected if e.endswith("_pending"))
    authorised_id = next(e for e in expected if e.endswith("_authorised"))
    # At least once: the change whose delivery was cut short is told again (attempt 2).
    assert counts == {pending_id: 2, authorised_id: 1}
    assert sorted(d["attempt"] for d in seen if d["event_id"] == pending_id) == [1, 2]
    assert len({d["pid"] for d in seen if d["event_id"] == pending_id}) == 2
