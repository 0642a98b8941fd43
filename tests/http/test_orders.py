"""Orders with several attempts, through the mounted app: one reference per order, as a
merchant's order resolver gives it, can be paid again after a failure, and never twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from miniprogram_pay import StateChange, create_app
from miniprogram_pay.domain.orders import attempt_reference
from tests.http.helpers import error_code, host_world
from tests.world import World, connect, default_config, settings_for, wiring

PAID_LATE = "order-13-sbx-expired-paid-late"


def _age(db_url: str, reference: str, by: timedelta) -> None:
    """Make an attempt look older than it is (the prepay lifetime is counted from its start)."""
    engine = create_engine(db_url.replace("+aiosqlite", ""))
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE mpp_payment SET created_at = :at WHERE reference = :reference"),
                {"at": _started(connection, reference) - by, "reference": reference},
            )
    finally:
        engine.dispose()


def _started(connection: Any, reference: str) -> Any:
    from miniprogram_pay.storage.tables import aware

    found = connection.execute(
        text("SELECT created_at FROM mpp_payment WHERE reference = :r"), {"r": reference}
    ).scalar_one()
    if isinstance(found, str):  # SQLite without declared types hands back text
        from datetime import datetime

        found = datetime.fromisoformat(found)
    return aware(found)


async def test_refused_then_paid_on_retry_with_one_reference_per_order(db_url: str) -> None:
    order = "order-13-sbx-retry-after-refusal"
    async with host_world(db_url) as w:
        headers = await w.login()
        first = (await w.pay_order(headers, order)).json()
        assert (first["reference"], first["attempt"], first["orderReference"]) == (order, 1, order)
        refused = await w.details(headers, first["reference"], "requestPayment:fail")
        assert refused.json()["state"] == "Refused"
        await w.settle()
        again = await w.pay_order(headers, order)
        assert again.status_code == 200, again.text
        second = again.json()
        assert second["reference"] == attempt_reference(order, 2)
        assert (second["attempt"], second["orderReference"]) == (2, order)
        assert second["redirect"] is not None
        assert second["redirect"]["data"] != first["redirect"]["data"]
        paid = await w.details(headers, second["reference"])
        assert paid.json()["state"] == "Authorised"
        await w.settle()
        status = await w.status(order)
        assert (status["reference"], status["state"]) == (order, "Authorised")
        assert [(a["number"], a["state"], a["kept"]) for a in status["attempts"]] == [
            (1, "Refused", False),
            (2, "Authorised", True),
        ]
        assert status["pspReference"] == status["attempts"][1]["pspReference"]
        # Asked once more, the paid order starts nothing and hands out nothing to pay.
        calls = len(w.sandbox.payments)
        final = (await w.pay_order(headers, order)).json()
        assert (final["attempt"], final["orderState"], final["redirect"]) == (2, "Authorised", None)
        assert len(w.sandbox.payments) == calls
        # Each attempt went to Adyen under its own reference, linked by the order's.
        sent = sorted((p.merchant_reference, p.to_dict()["merchantOrderReference"])
                      for p in w.sandbox.payments.values())  # fmt: skip
        assert sent == [(order, order), (attempt_reference(order, 2), order)]
        # The host hears which attempt changed and what the order's state now is.
        told = [(c.reference, c.payment_attempt, c.state, c.order_state) for c in w.changes]
        assert (attempt_reference(order, 2), 2, "Authorised", "Authorised") in told
        assert (order, 1, "Refused", "Refused") in told
        assert {c.order_reference for c in w.changes} == {order}


async def test_an_adyen_rejection_can_be_paid_again(db_url: str) -> None:
    async with host_world(db_url, adyen_max_retries=0) as w:
        headers = await w.login()
        w.sandbox.inject_fault("422", target="payments", processed=False)
        rejected = await w.pay_order(headers, "order-13-rejected")
        assert rejected.status_code == 502
        assert (await w.status("order-13-rejected"))["state"] == "Error"
        again = await w.pay_order(headers, "order-13-rejected")
        assert again.status_code == 200, again.text
        assert again.json()["attempt"] == 2
        assert again.json()["state"] == "Pending"
        assert again.json()["redirect"] is not None


async def test_a_young_open_attempt_is_handed_out_again_and_an_old_one_is_not(
    db_url: str,
) -> None:
    order = "order-13-pending"
    async with host_world(db_url, prepay_lifetime_seconds=3600) as w:
        headers = await w.login()
        first = (await w.pay_order(headers, order)).json()
        assert (await w.pay_order(headers, order)).json() == first
        assert len(w.sandbox.payments) == 1
        _age(db_url, order, timedelta(seconds=3601))
        later = (await w.pay_order(headers, order)).json()
        assert later["attempt"] == 2
        assert later["redirect"]["data"] != first["redirect"]["data"]
        assert len(w.sandbox.payments) == 2
        status = await w.status(order)
        assert status["state"] == "Pending"
        assert [a["number"] for a in status["attempts"]] == [1, 2]


async def test_the_status_of_an_attempt_answers_for_its_order(db_url: str) -> None:
    order = "order-13-sbx-retry-after-refusal-st"
    async with host_world(db_url) as w:
        headers = await w.login()
        await w.details(headers, (await w.pay_order(headers, order)).json()["reference"])
        second = (await w.pay_order(headers, order)).json()
        # The sandbox's webhooks for both attempts are on their way: one applied between
        # the two reads would make them differ.
        await w.settle()
        by_attempt = await w.status(second["reference"])
        assert by_attempt["reference"] == order
        assert by_attempt == await w.status(order)
        r = await w.client.get(
            f"/pay/payments/{second['reference']}", headers=await w.login("mallory")
        )
        assert r.status_code == 404
        assert error_code(r) == "payment_not_found"


async def test_an_order_paid_twice_keeps_one_attempt_and_reports_the_other(db_url: str) -> None:
    """The expired attempt is authorised after the next one was: the first one is kept."""
    async with host_world(db_url, prepay_lifetime_seconds=3600) as w:
        headers = await w.login()
        first = (await w.pay_order(headers, PAID_LATE)).json()
        assert (await w.details(headers, first["reference"])).json()["state"] == "Pending"
        _age(db_url, PAID_LATE, timedelta(hours=2))
        second = (await w.pay_order(headers, PAID_LATE)).json()
        assert second["attempt"] == 2
        assert (await w.details(headers, second["reference"])).json()["state"] == "Authorised"
        await w.settle()
        status = await w.status(PAID_LATE)
        assert status["state"] == "Authorised"
        assert [(a["state"], a["kept"]) for a in status["attempts"]] == [
            ("Authorised", True),
            ("Authorised", False),
        ]
        duplicate = attempt_reference(PAID_LATE, 2)
        assert [(c["kind"], c["attempt"]) for c in status["conflicts"]] == [
            ("duplicate_authorisation", duplicate)
        ]
        told = [c for c in w.changes if c.conflict == "duplicate_authorisation"]
        assert [(c.reference, c.payment_attempt, c.order_state) for c in told] == [
            (duplicate, 2, "Authorised")
        ]
        # The duplicate is refunded in full, once: at once when it is found, and a later
        # pass (a restart, another worker) finds nothing more owed.
        await _refunds_settled(w)
        assert await w.pay.refunds.refund_duplicates() == 0
        status = await w.status(PAID_LATE)
        kept, second_attempt = status["attempts"]
        assert kept["refunds"]["items"] == [] and status["refunds"]["items"] == []
        [refund] = second_attempt["refunds"]["items"]
        assert (refund["state"], refund["amount"], refund["reason"]) == (
            "Refunded",
            status["amount"],  # the whole of it: an attempt is for the order's amount
            "DUPLICATE",
        )
        psp = second_attempt["pspReference"]
        assert len(w.sandbox.payments[psp].refunds) == 1
        refund_told = [c for c in w.changes if c.kind == "refund" and c.refund is not None]
        assert {c.reference for c in refund_told} == {duplicate}
        # A host keyed by order finds the duplicate's refund under the order it paid twice.
        assert {(c.order_reference, c.payment_attempt, c.order_state) for c in refund_told} == {
            (PAID_LATE, 2, "Authorised")
        }


async def _refunds_settled(w: Any) -> None:
    """Wait for the duplicate's refund the plugin began on its own, and its webhook."""
    for _ in range(100):
        status = await w.status(PAID_LATE)
        items = status["attempts"][1]["refunds"]["items"]
        if items and items[0]["state"] not in ("Requested", "Received"):
            return
        await w.settle()
        await asyncio.sleep(0.05)
    raise AssertionError(f"the duplicate's refund did not settle: {status['attempts'][1]}")


async def test_a_duplicate_is_only_reported_when_automatic_refunds_are_off(db_url: str) -> None:
    async with host_world(db_url, prepay_lifetime_seconds=3600, refund_duplicates=False) as w:
        headers = await w.login()
        first = (await w.pay_order(headers, PAID_LATE)).json()
        await w.details(headers, first["reference"])
        _age(db_url, PAID_LATE, timedelta(hours=2))
        second = (await w.pay_order(headers, PAID_LATE)).json()
        await w.details(headers, second["reference"])
        await w.settle()
        assert await w.pay.refunds.refund_duplicates() == 0
        status = await w.status(PAID_LATE)
        assert [c["kind"] for c in status["conflicts"]] == ["duplicate_authorisation"]
        assert all(a["refunds"]["items"] == [] for a in status["attempts"])


async def test_many_shoppers_retrying_at_once_start_one_attempt(db_url: str) -> None:
    import asyncio

    order = "order-13-sbx-retry-after-refusal-burst"
    async with host_world(db_url) as w:
        headers = await w.login()
        await w.details(headers, (await w.pay_order(headers, order)).json()["reference"])
        answers = await asyncio.gather(*(w.pay_order(headers, order) for _ in range(8)))
        assert {r.status_code for r in answers} == {200}
        assert {r.json()["attempt"] for r in answers} == {2}
        assert len(w.sandbox.payments) == 2


# -- /payments/details without paymentData (Checkout v71's redirect action) -----------------


class RedirectShapedAdyen(httpx.AsyncBaseTransport):
    """Adyen answering in v71's ``redirect`` shape (no paymentData anywhere); the rest of
    the traffic (WeChat) goes to the sandbox. Records the bodies sent to Adyen."""

    def __init__(self, app: ASGIApp) -> None:
        self.sandbox = httpx.ASGITransport(app=app)
        self.sent: dict[str, list[dict[str, Any]]] = {"payments": [], "details": []}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/payments/details"):
            return self._answer("details", request, self._details)
        if path.endswith("/payments"):
            return self._answer("payments", request, self._payments)
        return await self.sandbox.handle_async_request(request)

    def _answer(
        self, kind: str, request: httpx.Request, build: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> httpx.Response:
        body = json.loads(request.content)
        self.sent[kind].append(body)
        return httpx.Response(200, json=build(body))

    def _payments(self, body: dict[str, Any]) -> dict[str, Any]:
        wx = {"appId": "wx1", "timeStamp": "1", "nonceStr": "n", "package": "prepay_id=wx9",
              "signType": "RSA", "paySign": "s"}  # fmt: skip
        return {
            "resultCode": "Pending",
            "pspReference": "PSP0000000000001",
            "merchantReference": body["reference"],
            "action": {"type": "redirect", "paymentMethodType": "wechatpayMiniProgram",
                       "method": "GET", "data": wx},
        }  # fmt: skip

    def _details(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "resultCode": "Authorised",
            "pspReference": "PSP0000000000001",
            "merchantReference": self.sent["payments"][-1]["reference"],
            "amount": self.sent["payments"][-1]["amount"],
        }


@asynccontextmanager
async def redirect_world(db_url: str) -> AsyncIterator[tuple[World, RedirectShapedAdyen]]:
    config = default_config()
    made: list[RedirectShapedAdyen] = []

    def transport(app: ASGIApp) -> RedirectShapedAdyen:
        made.append(RedirectShapedAdyen(app))
        return made[0]

    changes: list[StateChange] = []

    async def record(change: StateChange) -> None:
        changes.append(change)

    async with wiring(config, outbound_transport=transport) as parts:
        settings = settings_for(config, db_url)
        pay = create_app(settings, on_state_change=record, http_client=parts.outbound)
        client = connect(parts, Starlette(routes=[Mount("/pay", app=pay)]))
        try:
            yield World(pay, parts.sandbox_app, client, settings, config, changes), made[0]
        finally:
            await pay.stop()


async def test_details_without_payment_data_are_sent_with_the_details_only(db_url: str) -> None:
    async with redirect_world(db_url) as (w, adyen):
        headers = await w.login()
        started = (await w.pay_order(headers, "order-13-v71")).json()
        assert started["paymentData"] is None
        assert started["redirect"]["data"]["package"] == "prepay_id=wx9"
        r = await w.details(headers, started["reference"])
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "Authorised"
        assert adyen.sent["details"] == [{"details": {"paymentStatus": "requestPayment:ok"}}]
