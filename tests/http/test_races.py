"""Reconciliation races, driven through HTTP: the webhook and the details answer in any order,
duplicates, concurrent deliveries, contradictions, and the host hook's delivery guarantees."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from miniprogram_pay import PaymentState, StateChange
from miniprogram_pay.sandbox import DEFAULT_HMAC_KEY
from tests.http.helpers import host_world, start_payment
from tests.world import World, basic_auth, notification_body, notification_item

URL = "/pay/webhooks/adyen"


def states(history: list[dict[str, object]]) -> list[object]:
    return [h["to"] for h in history]


def webhook_events(status: dict[str, object]) -> list[dict[str, object]]:
    events = status["events"]
    assert isinstance(events, list)
    return [e for e in events if e["source"] == "webhook"]


def changes_by_state(w: World) -> Counter[PaymentState]:
    return Counter(c.state for c in w.changes)


async def signed_body(w: World, reference: str, **overrides: object) -> bytes:
    payment = next(p for p in w.sandbox.payments.values() if p.merchant_reference == reference)
    item = notification_item(
        psp_reference=payment.psp_reference,
        merchant_reference=reference,
        key_hex=DEFAULT_HMAC_KEY,
        **overrides,  # type: ignore[arg-type]
    )
    return notification_body(item)


async def test_webhook_before_details(db_url: str) -> None:
    reference = "order-sbx-webhook-before-details"
    async with host_world(db_url) as w:
        headers = await start_payment(w, reference)
        r = await w.details(headers, reference)
        assert r.status_code == 200
        assert r.json()["state"] == "Authorised"
        await w.settle()
        status = await w.status(reference)
        assert states(status["history"]) == ["Created", "Pending", "Authorised"]
        assert status["history"][-1]["source"] == "webhook"  # the webhook won the race
        assert status["conflicts"] == []
        assert changes_by_state(w) == {PaymentState.PENDING: 1, PaymentState.AUTHORISED: 1}


async def test_details_after_the_webhook_settled_it(db_url: str) -> None:
    async with host_world(db_url) as w:
        headers = await start_payment(w, "order-late")
        (payment,) = w.sandbox.payments.values()
        await w.sandbox.settle(payment, "requestPayment:ok")  # shopper paid, app closed
        await w.settle()
        assert (await w.status("order-late"))["state"] == "Authorised"
        r = await w.details(headers, "order-late")
        assert r.status_code == 200
        assert r.json()["state"] == "Authorised"
        assert payment.details_calls == 0  # nothing can lower it: Adyen is not asked again
        assert changes_by_state(w) == {PaymentState.PENDING: 1, PaymentState.AUTHORISED: 1}


async def test_duplicate_webhooks_scenario(db_url: str) -> None:
    reference = "order-sbx-duplicate-webhooks"
    async with host_world(db_url) as w:
        headers = await start_payment(w, reference)
        await w.details(headers, reference)
        await w.settle()
        assert len(w.sandbox.deliveries) == 3
        assert all(d.accepted for d in w.sandbox.deliveries)
        status = await w.status(reference)
        assert len(webhook_events(status)) == 1
        assert states(status["history"]) == ["Created", "Pending", "Authorised"]
        assert changes_by_state(w) == {PaymentState.PENDING: 1, PaymentState.AUTHORISED: 1}


async def test_ten_concurrent_identical_webhooks_make_one_event_and_one_transition(
    db_url: str,
) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-burst")
        body = await signed_body(w, "order-burst")
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        answers = await asyncio.gather(
            *(w.client.post(URL, content=body, headers=auth) for _ in range(10))
        )
        assert [(r.status_code, r.text) for r in answers] == [(200, "[accepted]")] * 10
        await w.pay.drain()
        notes = (
            await w.client.get(
                "/pay/admin/notifications", headers={"X-Admin-Key": "test-admin-key-0123456789"}
            )
        ).json()["notifications"]
        assert len(notes) == 1
        assert notes[0]["deliveries"] == 10
        assert notes[0]["status"] == "applied"
        status = await w.status("order-burst")
        assert len(webhook_events(status)) == 1
        assert states(status["history"]) == ["Created", "Pending", "Authorised"]
        assert changes_by_state(w) == {PaymentState.PENDING: 1, PaymentState.AUTHORISED: 1}


async def test_failure_then_success_upgrades(db_url: str) -> None:
    reference = "order-sbx-failure-then-success"
    async with host_world(db_url) as w:
        headers = await start_payment(w, reference)
        answer = (await w.details(headers, reference)).json()["state"]
        # Details says Pending; the sandbox's webhooks (false, then true) may land first.
        assert answer in ("Pending", "Refused", "Authorised")
        await w.settle()
        status = await w.status(reference)
        assert status["state"] == "Authorised"
        assert states(status["history"]) == ["Created", "Pending", "Refused", "Authorised"]
        assert status["conflicts"] == []
        assert status["refusalReason"] is None
        assert [c.state for c in w.changes] == [
            PaymentState.PENDING,
            PaymentState.REFUSED,
            PaymentState.AUTHORISED,
        ]


async def test_success_then_failure_is_a_visible_conflict(db_url: str) -> None:
    reference = "order-sbx-success-then-failure"
    async with host_world(db_url) as w:
        headers = await start_payment(w, reference)
        assert (await w.details(headers, reference)).json()["state"] == "Authorised"
        await w.settle()
        status = await w.status(reference)
        assert status["state"] == "Authorised"
        assert states(status["history"]) == ["Created", "Pending", "Authorised"]
        (conflict,) = status["conflicts"]
        assert conflict["kind"] == "failure_after_authorisation"
        assert (conflict["source"], conflict["event"], conflict["success"]) == (
            "webhook",
            "AUTHORISATION",
            False,
        )
        # The shopper sees the conflict-free summary; only the host's view has conflicts.
        r = await w.client.get(f"/pay/payments/{reference}", headers=headers)
        assert r.json()["conflicts"] == status["conflicts"]
        assert PaymentState.REFUSED not in changes_by_state(w)


async def test_an_amount_mismatch_is_a_conflict_and_moves_nothing(db_url: str) -> None:
    async with host_world(db_url) as w:
        await start_payment(w, "order-amount")
        body = await signed_body(w, "order-amount", value=1)
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        r = await w.client.post(URL, content=body, headers=auth)
        assert r.status_code == 200
        await w.pay.drain()
        status = await w.status("order-amount")
        assert status["state"] == "Pending"
        assert [c["kind"] for c in status["conflicts"]] == ["amount_mismatch"]
        assert changes_by_state(w) == {PaymentState.PENDING: 1}


async def test_the_hook_hears_each_change_once_with_stable_ids(db_url: str) -> None:
    async with host_world(db_url) as w:
        headers = await start_payment(w, "order-hook")
        await w.details(headers, "order-hook")
        await w.settle()
        body = await signed_body(w, "order-hook")  # and a late duplicate, by hand
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        assert (await w.client.post(URL, content=body, headers=auth)).status_code == 200
        await w.pay.drain()
        ids = [c.event_id for c in w.changes]
        assert len(ids) == len(set(ids)) == 2
        assert [(c.previous, c.state) for c in w.changes] == [
            (PaymentState.CREATED, PaymentState.PENDING),
            (PaymentState.PENDING, PaymentState.AUTHORISED),
        ]
        assert all(c.reference == "order-hook" and c.attempt == 1 for c in w.changes)


async def test_a_failing_hook_is_retried_and_the_change_is_not_lost(db_url: str) -> None:
    calls: list[StateChange] = []

    async def flaky(change: StateChange) -> None:
        calls.append(change)
        if change.state is PaymentState.AUTHORISED and change.attempt == 1:
            raise RuntimeError("the host's database is down")

    async with host_world(db_url, on_state_change=flaky) as w:
        headers = await start_payment(w, "order-flaky")
        r = await w.details(headers, "order-flaky")
        assert r.json()["state"] == "Authorised"  # committed whatever the hook does
        await w.settle()
        assert (await w.status("order-flaky"))["state"] == "Authorised"
        for _ in range(50):  # the retry comes after a short backoff
            if any(c.state is PaymentState.AUTHORISED for c in w.changes):
                break
            await asyncio.sleep(0.1)
            await w.pay.drain()
        authorised = [c for c in calls if c.state is PaymentState.AUTHORISED]
        assert [c.attempt for c in authorised] == [1, 2]
        assert authorised[0].event_id == authorised[1].event_id
        assert [c.state for c in w.changes] == [PaymentState.PENDING, PaymentState.AUTHORISED]
        await w.pay.drain()
        assert len([c for c in calls if c.state is PaymentState.AUTHORISED]) == 2


async def b_between_as_read_and_its_lock(
    w: World, a: tuple[dict[str, str], str], b: tuple[dict[str, str], str]
) -> tuple[httpx.Response, httpx.Response, list[object]]:
    """Report A reads its payment, then waits there until report B has been answered
    whole; then A goes on. The two answers, and the references read, in order."""
    payments = w.pay.storage.payments
    real = payments.for_details
    a_has_read, b_is_done = asyncio.Event(), asyncio.Event()
    reads: list[object] = []

    async def paused_first_read(**kwargs: object) -> object:
        reads.append(kwargs["reference"])
        found = await real(**kwargs)  # type: ignore[arg-type]
        if len(reads) == 1:  # A: hold its read until B has asked Adyen and let go
            a_has_read.set()
            await b_is_done.wait()
        return found

    payments.for_details = paused_first_read  # type: ignore[method-assign,assignment]
    answer_a = asyncio.create_task(w.details(*a))
    await a_has_read.wait()
    answer_b = await w.details(*b)
    b_is_done.set()
    return await answer_a, answer_b, reads


def details_calls(w: World) -> int:
    return len([c for c in w.sandbox.calls.calls if c.endpoint == "details"])


async def test_a_report_whose_read_predates_anothers_answer_asks_adyen_no_second_time(
    db_url: str,
) -> None:
    """Report A reads the payment (no answer yet), then report B asks Adyen, records the
    answer and releases the payment's lock before A takes it: A must read again instead
    of acting on its stale read and asking Adyen for the same shape once more."""
    async with host_world(db_url) as w:
        headers = await start_payment(w, "order-stale")
        mine = (headers, "order-stale")
        a, b, reads = await b_between_as_read_and_its_lock(w, mine, mine)
        assert (b.status_code, a.status_code) == (200, 200)
        assert a.json()["state"] == b.json()["state"] == "Authorised"
        assert details_calls(w) == 1
        assert reads == ["order-stale"] * 3  # A, B, and A again under the lock


async def test_another_payments_answer_does_not_make_a_report_read_again(db_url: str) -> None:
    """The read-again test is per payment: B's answer for its own payment, landing
    between A's read and A's lock, costs A nothing."""
    async with host_world(db_url) as w:
        mine = (await start_payment(w, "order-mine", "alice"), "order-mine")
        theirs = (await start_payment(w, "order-theirs", "bob"), "order-theirs")
        a, b, reads = await b_between_as_read_and_its_lock(w, mine, theirs)
        assert (a.json()["state"], b.json()["state"]) == ("Authorised", "Authorised")
        assert reads == ["order-mine", "order-theirs"]  # A read once
        assert details_calls(w) == 2  # one per payment
