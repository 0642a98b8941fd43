"""The console's "refund through the host": the host's admin refund endpoint, called by the sandbox
with the admin key it never shows, and what Adyen then does with the refund."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from miniprogram_pay.sandbox import REFUND_SCENARIOS
from miniprogram_pay.sandbox.console.refunds import parse_refund_order
from miniprogram_pay.sandbox.console.relay import RelayRecord
from tests.sandbox.console.helpers import API, CONSOLE, Console, config
from tests.world import ADMIN_KEY, world


async def refund(
    console: Console, reference: str, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    """What the page's "Refund through the host" sends the sandbox."""
    body = {"run": "run-1", "api": API, "reference": reference, "scenario": "refunded", **extra}
    return await console.client.post(
        "/_sandbox/console/refund", json=body, headers={**CONSOLE, **(headers or {})}
    )


def merchant_records(console: Console) -> list[RelayRecord]:
    relay = console.world.sandbox_app.state.console.relay
    return [record for record in relay.records if record.origin == "merchant"]


async def host_refunds(console: Console, reference: str) -> dict[str, Any]:
    view = (await console.timeline(reference)).json()
    refunds: dict[str, Any] = view["host"]["refunds"]
    return refunds


async def test_a_refund_in_part_reaches_the_host_as_its_back_office_sends_it(
    console: Console,
) -> None:
    await console.play("order-r1")
    amount = {"currency": "CNY", "value": 300}
    answer = await refund(console, "order-r1", amount=amount, reason="RETURN", idempotencyKey="k1")
    assert answer.status_code == 200, answer.text
    sent = answer.json()
    assert (sent["statusCode"], sent["errMsg"]) == (201, "request:ok")
    assert sent["data"]["refund"]["amount"] == amount
    assert sent["data"]["refunds"]["refundable"] == {"currency": "CNY", "value": 830}
    assert ADMIN_KEY not in answer.text and "header" not in sent
    await console.world.settle()
    refunds = await host_refunds(console, "order-r1")
    [item] = refunds["items"]
    assert (item["state"], item["external"], item["reason"]) == ("Refunded", False, "RETURN")
    assert refunds["refundable"] == {"currency": "CNY", "value": 830}
    # The back office's request is on the timeline; the key is in no record.
    [record] = merchant_records(console)
    assert record.url == f"{API}/admin/payments/order-r1/refunds"
    assert ADMIN_KEY not in str(record.to_dict())
    assert record.data == {"amount": amount, "reason": "RETURN", "idempotencyKey": "k1"}
    view = (await console.timeline("order-r1")).json()
    merchant = [e for e in view["entries"] if e["lane"] == "merchant"]
    assert [e["title"] for e in merchant] == [
        "back office -> host: POST /admin/payments/order-r1/refunds -> 201"
    ]
    # The answer's own state: Received, or Refunded when the sandbox's REFUND webhook (sent
    # at once here) was applied before the answer was written.
    told = sent["data"]["refund"]["state"]
    assert told in ("Received", "Refunded")
    assert merchant[0]["detail"] == (
        f"refund order-r1-refund-1 of CNY 3.00 {told}; refundable CNY 8.30"
    )
    assert ADMIN_KEY not in str(view)


@pytest.mark.parametrize(
    ("scenario", "state", "refundable"),
    [("refused", "Refused", 1130), ("failed", "Failed", 1130), ("reversed", "Reversed", 1130)],
)
async def test_the_refund_scenario_chosen_is_what_adyen_does(
    console: Console, scenario: str, state: str, refundable: int
) -> None:
    await console.play("order-r2")
    answer = await refund(console, "order-r2", amount=None, scenario=scenario)
    assert answer.json()["statusCode"] == 201
    await console.world.settle()
    refunds = await host_refunds(console, "order-r2")
    assert [item["state"] for item in refunds["items"]] == [state]
    assert refunds["refundable"]["value"] == refundable
    [sandbox_refund] = next(iter(console.world.sandbox.payments.values())).refunds
    assert (sandbox_refund.scenario, sandbox_refund.amount["value"]) == (scenario, 1130)


async def test_the_host_s_refusal_is_handed_back_as_it_answered(console: Console) -> None:
    await console.play("order-r3")
    too_much = {"currency": "CNY", "value": 99_999}
    sent = (await refund(console, "order-r3", amount=too_much)).json()
    assert sent["statusCode"] == 409
    assert sent["data"]["error"]["code"] == "refund_exceeds_refundable"
    assert not next(iter(console.world.sandbox.payments.values())).refunds


async def test_without_an_admin_key_nothing_is_sent(sqlite_url: str) -> None:
    async with world(sqlite_url, config=config(merchant_admin_key=None)) as w:
        transport = httpx.ASGITransport(app=w.sandbox_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as c:
            console = Console(w, c)
            await console.play("order-r4")
            answer = await refund(console, "order-r4")
            assert answer.status_code == 400
            assert "admin key" in answer.json()["error"]
            assert not merchant_records(console)
            given = await refund(console, "order-r4", headers={"X-Merchant-Admin-Key": ADMIN_KEY})
            assert given.json()["statusCode"] == 201


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scenario": "nope"}, "scenario must be one of"),
        ({"amount": 300}, "amount must be an object"),
        ({"reason": 3}, "reason must be a string"),
        ({"reference": ""}, "reference must be a string"),
        ({"run": None}, "run must be a string"),
        ({"api": "ftp://x"}, "api must be an http"),
    ],
)
async def test_what_the_page_could_not_have_sent_is_refused(
    console: Console, change: dict[str, Any], message: str
) -> None:
    answer = await refund(console, **{"reference": "order-r5", **change})
    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert not merchant_records(console)


async def test_only_the_console_page_may_refund(console: Console) -> None:
    # Else any page could make the sandbox send the admin key where it likes.
    body = {
        "run": "r",
        "api": "http://elsewhere.test/pay",
        "reference": "x",
        "scenario": "refunded",
    }
    answer = await console.client.post("/_sandbox/console/refund", json=body)
    assert answer.status_code == 400
    not_json = await console.client.post("/_sandbox/console/refund", content=b"{", headers=CONSOLE)
    assert (not_json.status_code, not_json.json()["error"]) == (400, "the body must be JSON")


def test_every_refund_scenario_can_be_chosen() -> None:
    for name in REFUND_SCENARIOS:
        order = parse_refund_order({"run": "r", "reference": "x", "scenario": name})
        assert (order.scenario, order.body) == (name, {})
