"""GET /pay/metrics: the figures move as a sandbox flow runs, and agree with the database."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.routing import Mount

from miniprogram_pay import AdyenError, MiniProgramPay, RefundState, StateChange, create_app
from miniprogram_pay.sandbox import DEFAULT_HMAC_KEY
from tests.observability.helpers import moved, parse, scrape, value
from tests.world import (
    ADMIN_KEY,
    World,
    basic_auth,
    connect,
    default_config,
    eventually,
    notification_body,
    notification_item,
    settings_for,
    wiring,
    world,
)

ADMIN = {"X-Admin-Key": ADMIN_KEY}
STATE_NAMES = [state.value for state in RefundState]


async def pay_through(w: World, reference: str) -> None:
    """A shopper pays ``reference`` (ok), and Adyen's webhooks are applied and delivered."""
    headers = await w.login("alice")
    assert (await w.pay_order(headers, reference)).status_code == 200
    assert (await w.details(headers, reference)).status_code == 200
    await w.settle()


async def send_webhooks(w: World, reference: str) -> None:
    """One of each delivery a webhook endpoint meets: new, again, refused four ways, not ours."""
    auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
    ours = notification_body(
        notification_item(
            merchant_reference=reference, psp_reference="8815000000000099", key_hex=DEFAULT_HMAC_KEY
        )
    )
    for body, headers, status in (
        (ours, auth, 200),
        (ours, auth, 200),  # Adyen delivers the same item again
        (ours, basic_auth(w.config.webhook_username, "wrong"), 401),
        (notification_body(notification_item(signature="AAAA")), auth, 401),
        (b"{not json", auth, 400),
        (
            notification_body(
                notification_item(merchant_account="SomeoneElseCN", key_hex=DEFAULT_HMAC_KEY)
            ),
            auth,
            200,
        ),
    ):
        answer = await w.client.post("/pay/webhooks/adyen", content=body, headers=headers)
        assert answer.status_code == status, answer.text
    await w.pay.drain()


async def inbox_rows(w: World) -> list[dict[str, Any]]:
    answer = await w.client.get("/pay/admin/notifications?limit=200", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    rows: list[dict[str, Any]] = answer.json()["notifications"]
    return rows


async def test_a_sandbox_flow_moves_the_figures_as_it_should(db_url: str) -> None:
    async with world(db_url) as w:
        before = await scrape(w.client)
        assert value(before, "payments", {"state": "Authorised"}) == 0
        assert value(before, "webhooks_received_total", {"outcome": "stored", "reason": ""}) == 0
        await pay_through(w, "order-metrics")
        await send_webhooks(w, "order-metrics")
        after = await scrape(w.client)
        rows = await inbox_rows(w)

    def grew(name: str, **labels: str) -> float:
        return moved(before, after, name, labels)

    # Webhooks, item by item, as the inbox holds them.
    ignored = [r for r in rows if r["status"] == "ignored"]
    assert grew("webhooks_received_total", outcome="stored", reason="") == len(rows) - len(ignored)
    assert grew("webhooks_received_total", outcome="duplicate", reason="") == sum(
        r["deliveries"] - 1 for r in rows
    )
    assert grew("webhooks_received_total", outcome="rejected", reason="foreign_merchant") == 1
    for reason in ("basic_auth", "hmac", "bad_body"):
        assert grew("webhooks_received_total", outcome="rejected", reason=reason) == 1, reason
    assert grew("webhook_acceptance_seconds_count") == sum(r["deliveries"] for r in rows)
    applied = [r for r in rows if r["status"] in ("applied", "orphan")]
    assert grew("webhook_apply_lag_seconds_count") == len(applied) >= 2
    # One call of each kind to Adyen and WeChat, each answered.
    for service, endpoint in (
        ("adyen", "/payments"),
        ("adyen", "/payments/details"),
        ("wechat", "/sns/jscode2session"),
    ):
        labels = {"service": service, "endpoint": endpoint}
        assert grew("upstream_calls_total", **labels, outcome="ok") == 1, endpoint
        assert grew("upstream_calls_total", **labels, outcome="server_error") == 0
        assert grew("upstream_call_seconds_count", **labels) == 1
    # The host heard of both changes (Pending, Authorised).
    assert grew("hook_calls_total", outcome="delivered") == len(w.changes) == 2
    assert grew("hook_call_seconds_count") == 2
    # What the database holds, read at the scrape.
    assert value(after, "payments", {"state": "Authorised"}) == 1
    assert value(after, "payments", {"state": "Pending"}) == 0
    assert value(after, "outbox_rows", {"status": "delivered"}) == 2
    assert value(after, "outbox_rows", {"status": "parked"}) == 0
    for status in ("applied", "ignored", "orphan", "parked"):
        expected = sum(r["status"] == status for r in rows)
        assert value(after, "inbox_items", {"status": status}) == expected, status
    assert value(after, "stale_payments") == 0
    # send_webhooks' item names another pspReference for the payment: a conflict.
    assert value(after, "conflicted_payments") == 1
    assert value(after, "outbox_oldest_pending_seconds") == 0
    for loop in ("inbox", "outbox"):
        assert value(after, "loop_last_pass_timestamp_seconds", {"loop": loop}) > 0
    assert value(after, "build_info", {"version": __import__("miniprogram_pay").__version__}) == 1


async def test_a_conflict_shows(db_url: str) -> None:
    async with world(db_url) as w:
        await pay_through(w, "order-sbx-success-then-failure")  # a failure after Authorised
        after = await scrape(w.client)
    assert value(after, "conflicted_payments") == 1
    assert value(after, "payments", {"state": "Authorised"}) == 1


async def test_a_retried_call_counts_each_attempt(db_url: str) -> None:
    async with world(db_url) as w:
        before = await scrape(w.client)
        w.sandbox.inject_fault("500", count=1, target="payments")
        headers = await w.login("alice")
        assert (await w.pay_order(headers, "order-retried")).status_code == 200
        after = await scrape(w.client)
    labels = {"service": "adyen", "endpoint": "/payments"}
    assert moved(before, after, "upstream_calls_total", {**labels, "outcome": "server_error"}) == 1
    assert moved(before, after, "upstream_calls_total", {**labels, "outcome": "ok"}) == 1


async def test_a_failing_hook_and_a_stale_payment_show(db_url: str) -> None:
    calls: list[StateChange] = []

    async def refuses_once(change: StateChange) -> None:
        calls.append(change)
        if len(calls) == 1:
            raise RuntimeError("the host's database is down")

    async with world(db_url, on_state_change=refuses_once, stale_after_seconds=0) as w:
        headers = await w.login("alice")
        assert (await w.pay_order(headers, "order-stale")).status_code == 200
        await eventually(lambda: _delivered(w), what="the change delivered on a retry")
        after = await scrape(w.client)
    assert value(after, "hook_calls_total", {"outcome": "failed"}) == 1
    assert value(after, "hook_calls_total", {"outcome": "delivered"}) == 1
    assert value(after, "stale_payments") == 1  # Pending, and STALE_AFTER_SECONDS is 0
    assert value(after, "payments", {"state": "Pending"}) == 1


async def _delivered(w: World) -> bool:
    answer = await w.client.get("/pay/admin/outbox?status=delivered", headers=ADMIN)
    return bool(answer.json()["outbox"])


async def test_the_admin_key_guards_the_route_by_default(db_url: str) -> None:
    async with world(db_url) as w:
        assert (await w.client.get("/pay/metrics")).status_code == 404
        assert (await w.client.get("/pay/metrics", headers=ADMIN)).status_code == 200
        wrong = {"Authorization": f"Bearer {ADMIN_KEY}x"}
        assert (await w.client.get("/pay/metrics", headers=wrong)).status_code == 404
        await scrape(w.client)  # Authorization: Bearer <key>, as Prometheus sends it
        openmetrics = await w.client.get(
            "/pay/metrics", headers={**ADMIN, "Accept": "application/openmetrics-text"}
        )
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")


@pytest.mark.parametrize(("access", "anonymous", "admin"), [("open", 200, 200), ("off", 404, 404)])
async def test_metrics_access(db_url: str, access: str, anonymous: int, admin: int) -> None:
    async with world(db_url, metrics_access=access) as w:
        assert (await w.client.get("/pay/metrics")).status_code == anonymous
        assert (await w.client.get("/pay/metrics", headers=ADMIN)).status_code == admin


@asynccontextmanager
async def plugin_with(db_url: str, **options: Any) -> AsyncIterator[tuple[MiniProgramPay, World]]:
    """A world whose plugin gets ``options`` (create_app's keyword arguments)."""
    config = default_config()
    settings = settings_for(config, db_url)
    async with wiring(config) as parts:
        pay = create_app(settings, http_client=parts.outbound, **options)
        client = connect(parts, Starlette(routes=[Mount("/pay", app=pay)]))
        try:
            yield pay, World(pay, parts.sandbox_app, client, settings, config)
        finally:
            await pay.stop()


async def test_a_host_registry_holds_the_metrics_beside_its_own(db_url: str) -> None:
    registry = CollectorRegistry()
    orders = Counter("shop_orders", "The host's own metric.", registry=registry)
    orders.inc(3)
    async with plugin_with(db_url, metrics_registry=registry) as (pay, w):
        await w.login("alice")
        await pay.refresh_metrics()  # what a host serving the registry itself calls first
        hosts = parse(generate_latest(registry).decode())
        served = await scrape(w.client)
    labels = {"service": "wechat", "endpoint": "/sns/jscode2session", "outcome": "ok"}
    for samples in (hosts, served):
        assert value(samples, "upstream_calls_total", labels) == 1
        assert value(samples, "payments", {"state": "Created"}) == 0
        assert samples[("shop_orders_total", frozenset())] == 3


async def test_two_plugins_in_one_process_keep_their_own_figures(db_url: str) -> None:
    async with world(db_url) as first, world(db_url.replace("pay.db", "other.db")) as second:
        await first.login("alice")
        a, b = await scrape(first.client), await scrape(second.client)
    labels = {"service": "wechat", "endpoint": "/sns/jscode2session", "outcome": "ok"}
    assert (value(a, "upstream_calls_total", labels), value(b, "upstream_calls_total", labels)) == (
        1,
        0,
    )


async def test_without_prometheus_client_the_route_says_what_to_install(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "prometheus_client" else real(name, *a),
    )
    async with plugin_with(db_url) as (pay, w):
        assert pay.prometheus is None
        await w.login("alice")  # payments work; nothing is recorded
        answer = await w.client.get("/pay/metrics", headers=ADMIN)
    assert answer.status_code == 501
    assert answer.json()["error"]["code"] == "not_installed"
    assert "pip install 'miniprogram-pay[metrics]'" in answer.json()["error"]["message"]


async def test_refunds_by_state_and_refund_webhooks_show(db_url: str) -> None:
    async with world(db_url, adyen_max_retries=0) as w:
        await pay_through(w, "order-refunds")
        psp = (await w.status("order-refunds"))["pspReference"]
        before = await scrape(w.client)
        assert value(before, "refunds", {"state": "Refunded"}) == 0
        assert value(before, "refunds_oldest_pending_seconds", {"state": "Requested"}) == 0
        first = await w.pay.refund("order-refunds", 300)
        await w.settle()  # the sandbox's REFUND webhook: Refunded
        # The refund fails later; Adyen sends that twice, and someone forges one.
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        failed = notification_body(
            notification_item(
                psp_reference=first.psp_reference or "",
                merchant_reference=first.reference or "",
                value=300,
                event_code="REFUND_FAILED",
                originalReference=psp,
                key_hex=DEFAULT_HMAC_KEY,
            )
        )
        forged = notification_body(
            notification_item(event_code="REFUND", originalReference=psp, signature="AAAA")
        )
        for body, status in ((failed, 200), (failed, 200), (forged, 401)):
            answer = await w.client.post("/pay/webhooks/adyen", content=body, headers=auth)
            assert answer.status_code == status, answer.text
        # Adyen is down for the next one (it never makes it): it stays Requested.
        w.sandbox.inject_fault("503", target="refunds", processed=False)
        with pytest.raises(AdyenError):
            await w.pay.refund("order-refunds", 200)
        await w.pay.drain()
        after = await scrape(w.client)

    def grew(name: str, **labels: str) -> float:
        return moved(before, after, name, labels)

    # The REFUND and the REFUND_FAILED, once each; the second REFUND_FAILED; the forgery.
    assert grew("webhooks_received_total", outcome="stored", reason="") == 2
    assert grew("webhooks_received_total", outcome="duplicate", reason="") == 1
    assert grew("webhooks_received_total", outcome="rejected", reason="hmac") == 1
    assert grew("webhook_apply_lag_seconds_count") == 2
    refunds = {"service": "adyen", "endpoint": "/payments/{pspReference}/refunds"}
    assert grew("upstream_calls_total", **refunds, outcome="ok") == 1
    assert grew("upstream_calls_total", **refunds, outcome="server_error") == 1
    states = {state: value(after, "refunds", {"state": state}) for state in STATE_NAMES}
    assert states == {**dict.fromkeys(STATE_NAMES, 0.0), "Failed": 1.0, "Requested": 1.0}
    assert value(after, "refunds_oldest_pending_seconds", {"state": "Requested"}) > 0
    assert value(after, "refunds_oldest_pending_seconds", {"state": "Received"}) == 0
