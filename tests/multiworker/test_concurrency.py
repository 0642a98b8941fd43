"""Many payments, three worker processes, one PostgreSQL: one truth.

Two uvicorn commands serve the same app on the same database: one with
``--workers 2``, one single process on another port. Every payment's calls and
webhooks (duplicated, shuffled, some batched) go concurrently to random workers.
Then: each final state is the reconciliation rule's (the highest state implied by
the facts that agree on the money), each history climbs without repeating a
state, each webhook fact took effect once, and every state change reached the
host exactly once after de-duplication by event id.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, func, select

from miniprogram_pay import PaymentState
from miniprogram_pay.domain.events import EventSource, implied_state, result_event
from miniprogram_pay.storage.tables import NotificationRow, OutboxRow
from tests.multiworker.conftest import Store
from tests.multiworker.harness import Merchants, SandboxServer, Shop, deliveries, wait_until
from tests.rows import select_rows
from tests.world import ADMIN_KEY

# More for a manual soak: MPP_TEST_PAYMENTS=400 pytest tests/multiworker -k many -s
PAYMENTS = int(os.environ.get("MPP_TEST_PAYMENTS", "40"))
CONCURRENT_PAYMENTS = 12
LOAD_SECONDS = 90.0
OK = "requestPayment:ok"
CANCEL = "requestPayment:fail cancel"
WEBHOOK_STATES = {("AUTHORISATION", True): "Authorised", ("AUTHORISATION", False): "Refused"}
WEBHOOK_STATES[("OFFER_CLOSED", True)] = "Refused"

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@dataclass(frozen=True)
class Webhook:
    code: str
    success: bool
    reason: str = ""
    wrong_amount: bool = False


@dataclass(frozen=True)
class Plan:
    scenario: str
    details: str | None
    webhooks: tuple[Webhook, ...]
    copies: int = 2
    batched: bool = False  # all items in one notification, in a random order per copy


AUTH_OK = Webhook("AUTHORISATION", True)
PLANS = (
    Plan("authorised", OK, (AUTH_OK,), copies=3),
    Plan("refused", OK, (Webhook("AUTHORISATION", False, "Not enough balance"),)),
    Plan(
        "authorised", CANCEL, (Webhook("AUTHORISATION", False, "Cancelled"), AUTH_OK), batched=True
    ),
    Plan("pending-then-webhook", OK, (AUTH_OK,)),
    Plan("authorised", OK, (AUTH_OK, Webhook("AUTHORISATION", False, "Refused")), batched=True),
    Plan("error", OK, (Webhook("AUTHORISATION", True, wrong_amount=True),)),
    Plan("authorised", None, (Webhook("OFFER_CLOSED", True),)),
    Plan("pending-then-webhook", OK, ()),
)


@dataclass
class Sent:
    reference: str
    plan: Plan
    psp: str = ""
    details_code: str | None = None


def _expected_state(sent: Sent) -> PaymentState:
    """The rule, from the facts alone: the highest implied state of agreeing events."""
    states = [PaymentState.PENDING]  # what /payments answered
    if sent.details_code is not None:
        implied = implied_state(result_event(EventSource.DETAILS, sent.details_code))
        states.append(implied or PaymentState.CREATED)
    for w in sent.plan.webhooks:
        if not w.wrong_amount:  # a different amount is a conflict: it moves nothing
            states.append(PaymentState(WEBHOOK_STATES[(w.code, w.success)]))
    return max(states, key=lambda s: s.rank)


async def _run_payment(
    i: int, shop: Shop, bases: list[str], rnd: random.Random, sandbox: SandboxServer
) -> Sent:
    plan = PLANS[i % len(PLANS)]
    sent = Sent(f"mw{i:03d}-sbx-{plan.scenario}", plan)
    headers = await shop.login(rnd.choice(bases), f"shopper{i}", i)
    answer = await shop.pay(rnd.choice(bases), headers, sent.reference)
    sent.psp = answer["pspReference"]
    jobs: list[Any] = []
    if plan.details is not None:
        jobs.append(_details(shop, rnd.choice(bases), headers, sent))
    items = [
        shop.item(sent.reference, sent.psp, w.code, w.success, reason=w.reason,
                  value=1131 if w.wrong_amount else 1130)
        for w in plan.webhooks
    ]  # fmt: skip
    for _ in range(plan.copies):
        if plan.batched and items:
            jobs.append(shop.webhook(rnd.choice(bases), *rnd.sample(items, len(items))))
        else:
            jobs += [shop.webhook(rnd.choice(bases), item) for item in items]
    rnd.shuffle(jobs)
    await asyncio.gather(*jobs)
    settled = sandbox.payment(sent.reference)
    if settled.settled:  # details reached Adyen (not skipped: the payment was already final)
        sent.details_code = settled.result_code
    return sent


async def _details(shop: Shop, base: str, headers: dict[str, str], sent: Sent) -> None:
    assert sent.plan.details is not None
    r = await shop.details(base, headers, sent.reference, sent.plan.details)
    assert r.status_code == 200, r.text


async def test_many_payments_across_worker_processes_converge_to_one_truth(
    merchants: Merchants,
    shop: Shop,
    store: Store,
    sandbox: SandboxServer,
    deliveries_dir: Path,
) -> None:
    pair = await merchants.start("pair", workers=2)
    single = await merchants.start("single")
    bases = [pair.url, single.url]
    rnd = random.Random(20261127)
    gate = asyncio.Semaphore(CONCURRENT_PAYMENTS)

    async def one(i: int) -> Sent:
        async with gate:
            return await _run_payment(i, shop, bases, rnd, sandbox)

    started = time.monotonic()
    async with asyncio.timeout(LOAD_SECONDS):
        sent = await asyncio.gather(*(one(i) for i in range(PAYMENTS)))
    load_seconds = time.monotonic() - started
    await wait_until(lambda: _settled(store), seconds=30, what="inbox and outbox to drain")
    settle_seconds = time.monotonic() - started - load_seconds

    expected_events: set[str] = set()
    for s in sent:
        expected_events |= await _check_payment(store, s)
    await _check_deliveries(deliveries_dir, expected_events, store)
    await _check_stale(shop, single.url, sent)
    print(  # the measurement, shown with -s
        f"\n{PAYMENTS} payments, {len(expected_events)} state changes, "
        f"{await _count(store, NotificationRow)} distinct webhook items: "
        f"load {load_seconds:.1f} s, "
        f"drain {settle_seconds:.1f} s, webhook retries {shop.webhook_retries}, "
        f"raw deliveries {len(deliveries(deliveries_dir))}"
    )


async def _settled(store: Store) -> bool:
    waiting = (
        select(func.count())
        .select_from(NotificationRow)
        .where(col(NotificationRow.status).in_(["received", "failed"]))
    )
    undelivered = select(func.count()).select_from(OutboxRow).where(OutboxRow.status != "delivered")
    return (await select_rows(store.database, waiting)) == [0] and (
        await select_rows(store.database, undelivered)
    ) == [0]


async def _count(store: Store, table: Any) -> int:
    [count] = await select_rows(store.database, select(func.count()).select_from(table))
    return int(count)


async def _check_payment(store: Store, sent: Sent) -> set[str]:
    payment = await store.storage.payments.get(sent.reference)
    assert payment is not None
    assert payment.state is _expected_state(sent), (sent, payment.state)
    history = await store.storage.payments.history(payment.id)
    states = [t.to_state for t in history]
    assert len(states) == len(set(states)), states  # no state entered twice
    assert [s.rank for s in states] == sorted(s.rank for s in states), states  # only upwards
    assert [t.from_state for t in history] == [None, *states[:-1]], history  # one unbroken chain
    assert states[-1] is payment.state
    events = await store.storage.payments.events(payment.id)
    webhook_facts = Counter(e.key for e in events if e.source == "webhook")
    assert len(webhook_facts) == len(sent.plan.webhooks), events  # each distinct item applied...
    assert set(webhook_facts.values()) <= {1}, webhook_facts  # ...exactly once
    conflicts = [e.conflict for e in events if e.outcome == "conflict"]
    if any(w.wrong_amount for w in sent.plan.webhooks):
        assert "amount_mismatch" in conflicts
    return {f"mpp_{payment.id}_{s.value.lower()}" for s in states[1:]}


async def _check_deliveries(folder: Path, expected: set[str], store: Store) -> None:
    seen = deliveries(folder)
    assert {d["event_id"] for d in seen} == expected  # every change reached the host
    by_event = {d["event_id"]: d for d in seen}
    for event_id, d in by_event.items():
        assert event_id.endswith("_" + d["state"].lower())
    processes = {d["pid"] for d in seen}
    assert len(processes) >= 2, processes  # the work was really shared
    assert await _count(store, OutboxRow) == len(expected)


async def _check_stale(shop: Shop, base: str, sent: list[Sent]) -> None:
    """Payments left Pending show up on GET /admin/stale once older than the bound."""
    await asyncio.sleep(1.1)
    r = await shop.client.get(f"{base}/pay/admin/stale", headers={"X-Admin-Key": ADMIN_KEY})
    assert r.status_code == 200, r.text
    stale = {p["reference"] for p in r.json()["payments"]}
    pending = {s.reference for s in sent if _expected_state(s) is PaymentState.PENDING}
    assert stale == pending and pending
