"""The console's timeline: one payment from both sides, in time order, with the host's view."""

from __future__ import annotations

from typing import Any

import httpx

from miniprogram_pay.sandbox.calls import AdyenCall
from miniprogram_pay.sandbox.console import timeline
from miniprogram_pay.sandbox.console.relay import RelayRecord
from miniprogram_pay.sandbox.validation import PaymentRequest
from tests.sandbox.console.helpers import API, CONSOLE, Console, config
from tests.world import ADMIN_KEY, world


async def test_a_paid_payment_from_both_sides_in_order(console: Console) -> None:
    payment = await console.play("order-1")
    view = (await console.timeline("order-1")).json()
    assert (view["reference"], view["pspReference"]) == ("order-1", payment["data"]["pspReference"])
    titles = [(e["lane"], e["title"]) for e in view["entries"]]
    session, payments, details = (
        ("shopper", f"Mini Program -> host: POST {path} -> 200")
        for path in ("/session", "/payments", "/payments/details")
    )
    paid = ("shopper", "wx.requestPayment -> requestPayment:ok")
    created, pending, authorised = (
        ("state", f"state {change}")
        for change in ("(new) -> Created", "Created -> Pending", "Pending -> Authorised")
    )
    adyen_payments = ("adyen", "host -> Adyen: POST /payments -> 200")
    adyen_details = ("adyen", "host -> Adyen: POST /payments/details -> 200")
    webhook = ("webhook", "Adyen -> host: AUTHORISATION success=true -> 200")
    recorded = ("host", "host recorded webhook AUTHORISATION success=true")
    everything = [session, payments, paid, details, created, pending, authorised]
    assert sorted(titles) == sorted([*everything, adyen_payments, adyen_details, webhook, recorded])
    # The webhook may overtake the host's own record of the details answer; causes never do.
    for chain in (
        [session, payments, created, adyen_payments, pending, paid, details, adyen_details],
        [adyen_details, authorised],
        [adyen_details, webhook, recorded],
    ):
        assert [titles.index(step) for step in chain] == sorted(titles.index(s) for s in chain)
    assert "session token issued" in view["entries"][0]["detail"]
    assert view["state"] == "Authorised"
    assert view["visited"] == ["Created", "Pending", "Authorised"]
    assert view["taken"] == [["Created", "Pending"], ["Pending", "Authorised"]]
    assert view["host"]["state"] == "Authorised" and view["hostError"] is None
    assert view["sandbox"]["paymentStatus"] == "requestPayment:ok"


async def test_the_version_changes_only_when_something_happened(console: Console) -> None:
    payment = await console.play("order-1")
    first = (await console.timeline("order-1")).json()
    assert (await console.timeline("order-1")).json()["version"] == first["version"]
    psp = payment["data"]["pspReference"]
    refund = {"amount": {"currency": "CNY", "value": 300}}
    assert (await console.client.post(f"/_sandbox/payments/{psp}/refunds", json=refund)).is_success
    await console.world.settle()
    later = (await console.timeline("order-1")).json()
    assert later["version"] != first["version"]
    lanes = [(e["lane"], e["title"]) for e in later["entries"][len(first["entries"]) :]]
    assert lanes == [
        ("refund", "refund CNY 3.00 at Adyen (Customer Area)"),
        ("webhook", "Adyen -> host: REFUND success=true -> 200"),
        ("host", "host recorded webhook REFUND success=true: refund (new) -> Refunded"),
    ]


async def test_a_conflict_is_on_the_timeline_and_in_the_marks(console: Console) -> None:
    await console.client.post(
        "/_sandbox/scenarios", json={"reference": "order-2", "scenario": "success-then-failure"}
    )
    await console.play("order-2")
    view = (await console.timeline("order-2")).json()
    assert view["conflicts"] == ["failure_after_authorisation"]
    conflict = [e for e in view["entries"] if e["lane"] == "conflict"]
    assert [(e["title"], e["tone"]) for e in conflict] == [
        ("conflict: failure_after_authorisation", "bad")
    ]


async def test_the_host_view_needs_the_host_admin_key(sqlite_url: str) -> None:
    async with world(sqlite_url, config=config(merchant_admin_key=None)) as w:
        transport = httpx.ASGITransport(app=w.sandbox_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as c:
            console = Console(w, c)
            await console.play("order-3")
            without = (await console.timeline("order-3")).json()
            assert without["host"] is None
            assert "admin key" in without["hostError"]
            assert without["entries"]  # the sandbox's own side is there regardless
            wrong = (await console.timeline("order-3", **{"X-Merchant-Admin-Key": "nope"})).json()
            assert wrong["hostError"] == "the host refused the admin key"
            given = (
                await console.timeline("order-3", **{"X-Merchant-Admin-Key": ADMIN_KEY})
            ).json()
            assert given["host"]["state"] == "Authorised"


async def test_the_timeline_answers_the_console_page_only(console: Console) -> None:
    # Else any page could make the sandbox send the admin key to a URL of its choosing.
    query = {"run": "run-1", "reference": "order-1", "api": "http://elsewhere.test/pay"}
    answer = await console.client.get("/_sandbox/console/timeline", params=query)
    assert answer.status_code == 400
    bad_api = {**query, "api": "ftp://x"}
    answer = await console.client.get("/_sandbox/console/timeline", params=bad_api, headers=CONSOLE)
    assert answer.status_code == 400


# -- build, on its own ----------------------------------------------------------------------


def _record(at: str, **changes: Any) -> RelayRecord:
    values: dict[str, Any] = {
        "id": 1,
        "run": "r",
        "at": at,
        "method": "POST",
        "url": f"{API}/payments",
        "header": {},
        "data": {},
        "status_code": 200,
        "answer": {"state": "Pending"},
        **changes,
    }
    return RelayRecord(**values)


def test_entries_sort_by_instant_whatever_the_clock_wrote() -> None:
    created = {"from": None, "to": "Created", "source": "payments", "event": "x"}
    pending = {"source": "payments", "event": "Pending", "success": None, "outcome": "transition"}
    host = {
        "history": [{**created, "at": "2026-01-01T10:00:00.500000"}],
        "events": [{**pending, "at": "2026-01-01T10:00:00.600+00:00"}],
    }
    elsewhere = {"url": "http://x.test/other", "status_code": None, "answer": None}
    relayed = [
        _record("2026-01-01T11:00:00.100+01:00"),  # 10:00:00.100 UTC
        _record("2026-01-01T10:00:00.900+00:00", id=2, **elsewhere),
    ]
    entries = timeline.build(
        api_base=API, relayed=relayed, payments=(), calls=(), deliveries=(), host=host
    )
    assert [(e.lane, e.title) for e in entries] == [
        ("shopper", "Mini Program -> host: POST /payments -> 200"),
        ("state", "state (new) -> Created"),  # a naive host time is UTC
        ("shopper", "Mini Program -> host: POST /other -> ..."),  # not the API: its URL path
    ]
    assert entries[2].tone == "wait"  # and the transition event has the state entry's place


def test_entries_of_one_instant_go_cause_to_effect() -> None:
    at = "2026-01-01T10:00:00+00:00"
    call = AdyenCall(1, "details", at, None, status_code=None, fault="timeout")
    conflict = {"kind": "amount_mismatch", "source": "webhook", "event": "AUTHORISATION"}
    host = {"conflicts": [{**conflict, "at": at}]}
    entries = timeline.build(
        api_base=API, relayed=[_record(at)], payments=(), calls=[call], deliveries=(), host=host
    )
    assert [e.lane for e in entries] == ["shopper", "adyen", "conflict"]
    assert entries[1].title == "host -> Adyen: POST /payments/details -> no answer yet"
    assert (entries[1].detail, entries[1].tone) == ("injected fault: timeout", "warn")


def test_a_relay_error_and_an_error_answer_say_what_happened() -> None:
    failed = _record(
        "2026-01-01T10:00:00+00:00", status_code=None, error="request:fail ConnectError"
    )
    refused = _record(
        "2026-01-01T10:00:01+00:00",
        status_code=409,
        answer={"error": {"code": "reference_conflict", "message": "taken"}},
    )
    entries = timeline.build(
        api_base=API, relayed=[failed, refused], payments=(), calls=(), deliveries=(), host=None
    )
    assert [(e.detail, e.tone) for e in entries] == [
        ("request:fail ConnectError", "bad"),
        ("reference_conflict: taken", "bad"),
    ]


def test_repeats_in_a_row_are_one_entry() -> None:
    def poll(second: int) -> RelayRecord:
        at = f"2026-01-01T10:00:0{second}+00:00"
        return _record(at, id=second, method="GET", url=f"{API}/payments/o-1")

    relayed = [*map(poll, range(4)), _record("2026-01-01T10:00:05+00:00", id=9), poll(6)]
    entries = timeline.build(
        api_base=API, relayed=relayed, payments=(), calls=(), deliveries=(), host=None
    )
    assert [(e.at[17:19], e.title) for e in entries] == [
        ("00", "Mini Program -> host: GET /payments/o-1 -> 200 (x4)"),  # the first one's time
        ("05", "Mini Program -> host: POST /payments -> 200"),
        ("06", "Mini Program -> host: GET /payments/o-1 -> 200"),
    ]


def test_amounts_are_written_in_their_currency_s_minor_units() -> None:
    assert timeline._money({"currency": "CNY", "value": 1130}) == "CNY 11.30"
    assert timeline._money({"currency": "JPY", "value": 500}) == "JPY 500"
    assert timeline._money({"currency": "XXX", "value": 7}) == "XXX 7 (minor units)"


# -- an order paid in several attempts ----------------------------------------------------


def _attempt(number: int, reference: str, state: str, kept: bool) -> dict[str, Any]:
    at = f"2026-01-01T00:00:0{number}+00:00"
    return {
        "reference": reference,
        "number": number,
        "kept": kept,
        "state": state,
        "history": [{"from": "Pending", "to": state, "source": "webhook", "event": "X", "at": at}],
        "events": [],
    }


def test_each_attempt_s_moves_are_on_the_timeline() -> None:
    attempts = [_attempt(1, "o-1", "Refused", False), _attempt(2, "o-1-2", "Authorised", True)]
    host = {**attempts[1], "reference": "o-1", "attempts": attempts, "conflicts": []}
    entries = timeline.build(
        api_base=API, relayed=(), payments=(), calls=(), deliveries=(), host=host
    )
    assert [(e.title, e.detail) for e in entries] == [
        ("state Pending -> Refused", "attempt o-1, by webhook X"),
        ("state Pending -> Authorised", "attempt o-1-2, by webhook X"),
    ]
    alone = {**attempts[0], "attempts": attempts[:1], "conflicts": []}
    [entry] = timeline.build(
        api_base=API, relayed=(), payments=(), calls=(), deliveries=(), host=alone
    )
    assert entry.detail == "by webhook X"  # one attempt: no need to name it


async def test_the_timeline_follows_every_attempt_of_the_order(console: Console) -> None:
    """Attempts at Adyen carry the order's reference as merchantOrderReference."""
    sandbox = console.world.sandbox
    scenario = sandbox.scenario_for("o-7")
    first, second = (
        sandbox.create_payment(
            PaymentRequest(
                {"currency": "CNY", "value": 1130}, ref, "oShopper", "wxapp", "https://r", "o-7"
            ),
            scenario,
        )
        for ref in ("o-7", "o-7-2")
    )
    sandbox.create_payment(
        PaymentRequest({"currency": "CNY", "value": 1}, "o-8", "oShopper", "wxapp", "https://r"),
        scenario,
    )
    for payment in (first, second):
        await sandbox.settle(payment, "requestPayment:ok")
    await console.world.settle()
    for name in ("o-7", "o-7-2"):  # by the order's reference, or by one attempt's
        view = (await console.timeline(name)).json()
        assert view["attempts"] == ["o-7", "o-7-2"]
        assert view["pspReference"] == second.psp_reference
        webhooks = [e["detail"] for e in view["entries"] if e["lane"] == "webhook"]
        assert sorted(webhooks) == [  # each attempt's AUTHORISATION, none of o-8's
            f"for {attempt}, CNY 11.30, attempt 1, accepted" for attempt in ("o-7", "o-7-2")
        ]
