"""The worker loops: inbox and outbox independent, supervised, and a host hook that fails,
hangs or raises anything holds up nothing but its own state change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NoReturn

import httpx
import pytest

from miniprogram_pay import StateChange, create_app
from miniprogram_pay.adyen.webhooks import NotificationBatch, parse_notification_body
from miniprogram_pay.services import delivery as delivery_module
from miniprogram_pay.services.workers import Workers
from miniprogram_pay.storage import InboxItem, Storage
from tests.world import (
    MERCHANT_BASE,
    World,
    default_config,
    eventually,
    notification_body,
    notification_item,
    settings_for,
    world,
)


def _item(dedup_key: str) -> InboxItem:
    return InboxItem(
        dedup_key=dedup_key,
        psp_reference="7914073381342284",
        merchant_reference="order-1",
        event_code="AUTHORISATION",
        success=True,
        amount_value=1130,
        amount_currency="CNY",
        reason=None,
        raw_json="{}",
    )


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[list[int]] = []

    async def __call__(self, notification_ids: Sequence[int]) -> None:
        self.calls.append(list(notification_ids))


async def test_the_loop_skips_leased_items_and_takes_due_ones(
    storage: Storage,
) -> None:
    [leased] = await storage.inbox.store([_item("a" * 64)], lease_seconds=3600)
    [due] = await storage.inbox.store([_item("b" * 64)], lease_seconds=0)
    applied = _Recorder()
    workers = Workers(apply_notifications=applied, storage=storage, on_state_change=None)

    assert await workers.run_once() == 1
    assert applied.calls == [[due.id]]
    assert await workers.run_once(include_leased=True) == 2
    assert applied.calls[-1] == [leased.id, due.id]


# -- the loops, in a running plugin --------------------------------------------------------

Hook = Callable[[StateChange], Awaitable[None]]


class HookGaveUp(BaseException):
    """What a host's hook might raise that is no ``Exception`` (like KeyboardInterrupt)."""


async def _pending_payment(w: World, reference: str) -> str:
    """Start a payment (it goes Pending, which the host is told of); its pspReference."""
    r = await w.pay_order(await w.login(), reference)
    assert r.status_code == 200, r.text
    psp: str = r.json()["pspReference"]
    return psp


def _authorisations(w: World, payments: dict[str, str]) -> NotificationBatch:
    items = [
        notification_item(
            psp_reference=psp, merchant_reference=reference, key_hex=w.config.hmac_keys[0]
        )
        for reference, psp in payments.items()
    ]
    return parse_notification_body(notification_body(*items))


async def _store_unapplied(w: World, payments: dict[str, str]) -> None:
    """Webhooks acknowledged by a process that died before applying them: due in the inbox.

    Storing and applying at once fails (so they are stored alone), and nothing applies
    them after the answer.
    """

    async def cannot_take(items: object, **_: object) -> NoReturn:
        raise RuntimeError("as if applying had failed")

    w.pay.service.apply_lease_seconds = 0
    w.pay.storage.inbox.take = cannot_take  # type: ignore[method-assign]
    try:
        await w.pay.service.store_webhook(_authorisations(w, payments))
    finally:
        del w.pay.storage.inbox.take


async def _states(w: World, references: Iterable[str]) -> list[str]:
    return [(await w.status(reference))["state"] for reference in references]


async def _delivered(w: World, reference: str) -> list[str]:
    rows = await w.pay.storage.outbox.listing(status="delivered")
    return [row.event_id for row in rows if row.reference == reference]


Behaviour = Callable[[StateChange, int], Awaitable[None]]


async def _returns(change: StateChange, call: int) -> None:
    return None


class HostHook:
    """A host's ``on_state_change``: ``behave(change, call number)``, then the change is taken."""

    def __init__(self, behave: Behaviour = _returns) -> None:
        self.behave = behave
        self.calls: list[StateChange] = []
        self.taken: list[StateChange] = []

    async def __call__(self, change: StateChange) -> None:
        self.calls.append(change)
        await self.behave(change, len(self.calls))
        self.taken.append(change)

    async def took(self, reference: str) -> list[int]:
        """The attempts at which the host took a change of ``reference``."""
        return [c.attempt for c in self.taken if c.reference == reference]


async def test_stored_webhooks_are_applied_while_the_hook_hangs(db_url: str) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def hangs(change: StateChange, call: int) -> None:
        entered.set()
        await release.wait()

    async with world(db_url, on_state_change=HostHook(hangs)) as w:
        references = [f"order-hang-{i}" for i in range(3)]
        payments = {reference: await _pending_payment(w, reference) for reference in references}
        await asyncio.wait_for(entered.wait(), 10)
        await _store_unapplied(w, payments)

        async def all_authorised() -> bool:
            return await _states(w, payments) == ["Authorised"] * 3

        # The inbox does not wait for the host: well before the hook's timeout (10 s).
        await eventually(all_authorised, seconds=8, what="the stored webhooks to be applied")
        release.set()


async def test_a_hanging_hook_holds_its_own_change_only(db_url: str) -> None:
    slow_entered, release = asyncio.Event(), asyncio.Event()

    async def slow_for_one(change: StateChange, call: int) -> None:
        if change.reference == "order-slow":
            slow_entered.set()
            await release.wait()

    host = HostHook(slow_for_one)
    async with world(db_url, on_state_change=host) as w:
        await _pending_payment(w, "order-slow")
        await asyncio.wait_for(slow_entered.wait(), 10)
        await _pending_payment(w, "order-fast")

        await eventually(lambda: host.took("order-fast"), seconds=8, what="the other change")
        assert await eventually(lambda: _delivered(w, "order-fast"), what="its row marked")
        assert await _delivered(w, "order-slow") == []  # still in its hook

        async def only_the_slow_one_in_flight() -> bool:
            return w.pay.workers.deliveries_in_flight == 1

        await eventually(only_the_slow_one_in_flight, what="the fast delivery's task to end")
        release.set()
        assert await eventually(lambda: _delivered(w, "order-slow"), what="the slow one")


async def test_a_hook_that_does_not_return_in_time_is_retried(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def hangs_once(change: StateChange, call: int) -> None:
        if call == 1:
            await asyncio.Event().wait()  # cancelled by the timeout

    host = HostHook(hangs_once)
    async with world(db_url, on_state_change=host, hook_timeout_seconds=0.2) as w:
        await _pending_payment(w, "order-timeout")
        assert await eventually(lambda: host.took("order-timeout"), what="the retry") == [2]
        assert await eventually(lambda: _delivered(w, "order-timeout"), what="its row marked")
    assert [c.attempt for c in host.calls] == [1, 2]
    assert any("did not return within 0.2 s" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("error", [asyncio.CancelledError, HookGaveUp])
async def test_a_hook_raising_what_is_no_exception_stops_nothing(
    db_url: str, error: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    async def raises_once(change: StateChange, call: int) -> None:
        if call == 1:
            raise error

    host = HostHook(raises_once)
    async with world(db_url, on_state_change=host) as w:
        await _pending_payment(w, "order-first")
        assert await eventually(lambda: host.took("order-first"), what="a retry") == [2]
        psp = await _pending_payment(w, "order-later")
        await _store_unapplied(w, {"order-later": psp})

        async def later_authorised() -> bool:
            return await _states(w, ["order-later"]) == ["Authorised"]

        await eventually(later_authorised, what="the inbox loop to apply the webhook")

        async def both_told() -> list[int]:
            took = await host.took("order-later")  # Pending, then Authorised
            return took if len(took) == 2 else []

        assert await eventually(both_told, what="later changes to reach the host") == [1, 1]
        assert w.pay.workers.loop_states() == {"inbox": "running", "outbox": "running"}
    assert any(error.__name__ in (r.exc_text or r.getMessage()) for r in caplog.records)


def _loop_task(name: str) -> asyncio.Task[Any]:
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == f"mpp-{name}"]
    return task


async def test_a_cancelled_error_inside_a_pass_does_not_end_the_loop(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with world(db_url) as w:
        await w.pay.start()
        reading = w.pay.storage.inbox.due
        raised: list[bool] = []

        async def once_cancelled(**options: Any) -> list[int]:
            if not raised:
                raised.append(True)
                raise asyncio.CancelledError  # raised, while nobody cancelled the loop
            return await reading(**options)

        w.pay.storage.inbox.due = once_cancelled  # type: ignore[method-assign]
        w.pay.workers.kick()
        await eventually(lambda: _true(raised), what="the pass to raise")
        psp = await _pending_payment(w, "order-after")
        await _store_unapplied(w, {"order-after": psp})

        async def authorised() -> bool:
            return await _states(w, ["order-after"]) == ["Authorised"]

        await eventually(authorised, what="the inbox loop to go on")
        assert w.pay.workers.loop_states() == {"inbox": "running", "outbox": "running"}
    assert any("a pass of the inbox loop failed" in r.getMessage() for r in caplog.records)


async def _true(values: list[bool]) -> bool:
    return bool(values)


async def test_a_loop_cancelled_outside_the_shutdown_is_reported_dead(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with world(db_url) as w:
        await w.pay.start()
        outbox = _loop_task("outbox")
        # As a host cancelling every task, or asyncio.run on its way out: the loop must
        # end then (or the process would never exit), and say so.
        outbox.cancel()
        await asyncio.wait([outbox])
        assert w.pay.workers.loop_states() == {"inbox": "running", "outbox": "dead"}
        r = await w.client.get("/pay/health")
        assert r.status_code == 503
        assert r.json()["error"]["message"] == (
            "background work is not running: the outbox loop is dead"
        )
        await w.pay.stop()
        assert w.pay.workers.loop_states() == {"inbox": "off", "outbox": "off"}
    assert any(
        "outbox loop was cancelled, not by the plugin's shutdown" in r.getMessage()
        for r in caplog.records
    )


async def test_the_loops_end_when_the_event_loop_does(db_url: str) -> None:
    # A plugin started lazily (no lifespan) and never stopped: asyncio.run's own
    # clean-up cancels its loops, and the process can exit.
    async def serve_one_request() -> None:
        pay = create_app(settings_for(default_config(), db_url))
        transport = httpx.ASGITransport(app=pay)
        async with httpx.AsyncClient(transport=transport, base_url=MERCHANT_BASE) as client:
            assert (await client.get("/health")).status_code == 200
        assert pay.workers.loop_states() == {"inbox": "running", "outbox": "running"}

    await asyncio.wait_for(asyncio.to_thread(asyncio.run, serve_one_request()), 30)


async def test_health_reports_a_stalled_loop(db_url: str) -> None:
    async with world(db_url) as w:
        await w.pay.start()
        release = asyncio.Event()
        reading = w.pay.storage.inbox.due

        async def stuck(**options: Any) -> list[int]:
            await release.wait()  # as a database that never answers
            return await reading(**options)

        w.pay.storage.inbox.due = stuck  # type: ignore[method-assign]
        w.pay.workers.stall_after_seconds = 0.2
        w.pay.workers.kick()

        async def health() -> httpx.Response:
            return await w.client.get("/pay/health")

        async def reports(status: int) -> httpx.Response | None:
            r = await health()
            return r if r.status_code == status else None

        stalled = await eventually(lambda: reports(503), what="/health to report the stall")
        assert stalled.json() == {
            "error": {
                "code": "workers_unavailable",
                "message": "background work is not running: the inbox loop is stalled",
                "retryable": True,
            }
        }
        assert w.pay.workers.loop_states() == {"inbox": "stalled", "outbox": "running"}
        release.set()
        await eventually(lambda: reports(200), what="/health to recover")


async def test_a_state_change_is_offered_to_the_host_far_beyond_a_dozen_attempts(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery_module, "outbox_backoff", lambda attempt: 0.01)

    async def down_for_a_while(change: StateChange, call: int) -> None:
        if call <= 15:
            raise ConnectionError("the host is down")

    host = HostHook(down_for_a_while)
    async with world(db_url, on_state_change=host) as w:
        await w.pay.start()
        w.pay.workers.poll_seconds = 0.02
        await _pending_payment(w, "order-outage")
        assert await eventually(lambda: host.took("order-outage"), what="the delivery") == [16]
    assert [c.attempt for c in host.calls] == list(range(1, 17))
