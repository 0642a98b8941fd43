"""The console in Chromium against the example host: what the shopper, the timeline and the
host's database show after each story, clicked through as a developer would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from miniprogram_pay.sandbox.console.routes import client_module_source
from miniprogram_pay.sandbox.server import SandboxedServers
from tests.browser import BROWSER_TESTS, screenshot

pytestmark = [*BROWSER_TESTS, pytest.mark.slow]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxedServers]:
    """``miniprogram-pay serve --sandbox``: the example host with the plugin at /pay."""
    directory = tmp_path_factory.mktemp("console")
    with SandboxedServers(
        environ={}, database_url=f"sqlite+aiosqlite:///{directory / 'console.db'}"
    ) as running:
        yield running


async def open_console(page: Page, servers: SandboxedServers) -> str:
    """The console on a new order; its reference."""
    await page.goto(servers.sandbox_url + "/")
    await expect(page.locator("#api")).to_have_value(servers.api_url)
    reference = await page.locator("#reference").input_value()
    assert reference.startswith("console-")
    return reference


async def pay(page: Page, button: str) -> None:
    """The shopper taps Pay, then ``button`` in WeChat's pay sheet."""
    await page.click("#pay")
    await choose_in_sheet(page, button)


async def choose_in_sheet(page: Page, button: str) -> None:
    """The pay sheet is open (or opening): the shopper taps ``button`` in it."""
    sheet = page.locator("#sheet")
    await expect(sheet).to_be_visible()
    await expect(page.locator("#sheet-amount")).to_have_text("CNY 11.30")  # the host's amount
    await page.click(button)
    await expect(sheet).to_be_hidden()


async def admin_status(servers: SandboxedServers, reference: str) -> dict[str, Any]:
    """The host's database, through its admin status API."""
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{servers.api_url}/payments/{reference}",
            headers={"X-Admin-Key": servers.admin_api_key},
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def expect_entry(page: Page, lane: str, text: str) -> None:
    entries = page.locator(f'#entries .entry[data-lane="{lane}"]')
    await expect(entries.filter(has_text=text).first).to_be_visible()


async def expect_current_state(page: Page, state: str) -> None:
    await expect(page.locator("#payment-diagram .state.current")).to_have_attribute(
        "data-state", state
    )
    await expect(page.locator("#host-state")).to_have_text(state)


async def test_pay_is_authorised(page: Page, servers: SandboxedServers) -> None:
    reference = await open_console(page, servers)
    await pay(page, "#sheet-pay")
    await expect(page.locator("#result-state")).to_have_text("Authorised")
    await expect(page.locator("#result-message")).to_have_text("Payment successful")
    await expect_current_state(page, "Authorised")
    for lane, text in (
        ("shopper", "POST /session -> 200"),
        ("shopper", "POST /payments -> 200"),
        ("shopper", "wx.requestPayment -> requestPayment:ok"),
        ("shopper", "POST /payments/details -> 200"),
        ("adyen", "POST /payments/details -> 200"),
        ("webhook", "AUTHORISATION success=true -> 200"),
        ("state", "Pending -> Authorised"),
    ):
        await expect_entry(page, lane, text)
    await expect(page.locator("#payment-diagram .edge.taken")).to_have_count(
        2
    )  # Created, Pending, A.
    await screenshot(page, "console-authorised")
    stored = await admin_status(servers, reference)
    assert (stored["state"], stored["conflicts"]) == ("Authorised", [])
    await expect(page.locator("#host-psp")).to_have_text(stored["pspReference"])


async def test_cancel_is_refused(page: Page, servers: SandboxedServers) -> None:
    reference = await open_console(page, servers)
    await pay(page, "#sheet-cancel")
    await expect(page.locator("#result-state")).to_have_text("Refused")
    await expect(page.locator("#result-message")).to_have_text("Payment not completed")
    await expect(page.locator("#result-errmsg")).to_have_text("requestPayment:fail cancel")
    await expect_current_state(page, "Refused")
    await expect_entry(page, "webhook", "AUTHORISATION success=false -> 200")
    await screenshot(page, "console-cancelled")
    stored = await admin_status(servers, reference)
    assert (stored["state"], stored["conflicts"]) == ("Refused", [])
    assert [e["event"] for e in stored["events"] if e["source"] == "details"] == ["Cancelled"]


async def test_a_failure_after_the_success_is_a_conflict(
    page: Page, servers: SandboxedServers
) -> None:
    """AUTHORISATION twice, out of order: true, then false. The failure never downgrades."""
    reference = await open_console(page, servers)
    scenario = page.locator('[data-scenario="success-then-failure"]')
    await scenario.click()
    await expect(scenario).to_have_attribute("aria-pressed", "true")
    await pay(page, "#sheet-pay")
    await expect(page.locator("#result-state")).to_have_text("Authorised")
    await expect(page.locator("#host-conflicts")).to_have_text("failure_after_authorisation")
    await expect_entry(page, "conflict", "conflict: failure_after_authorisation")
    await expect_entry(page, "webhook", "AUTHORISATION success=false -> 200")
    await expect_current_state(page, "Authorised")
    await screenshot(page, "console-conflict")
    stored = await admin_status(servers, reference)
    assert stored["state"] == "Authorised"
    assert [c["kind"] for c in stored["conflicts"]] == ["failure_after_authorisation"]


async def test_a_refund_in_part_at_adyen_shows_on_the_timeline(
    page: Page, servers: SandboxedServers
) -> None:
    reference = await open_console(page, servers)
    await pay(page, "#sheet-pay")
    await expect_current_state(page, "Authorised")
    refund = page.locator("#refund-adyen")
    await expect(refund).to_be_enabled()
    await expect(page.locator('[data-refund-scenario="refunded"]')).to_have_attribute(
        "aria-pressed", "true"
    )  # the default
    await expect(page.locator("#refund-amount")).to_have_attribute(
        "placeholder", "everything left (CNY 11.30)"
    )
    await page.fill("#refund-amount", "500")
    await refund.click()
    await expect_entry(page, "refund", "refund CNY 5.00 at Adyen (Customer Area)")
    await expect_entry(page, "webhook", "REFUND success=true -> 200")
    await expect_entry(
        page, "host", "host recorded webhook REFUND success=true: refund (new) -> Refunded"
    )
    await screenshot(page, "console-refund")
    stored = await admin_status(servers, reference)
    assert stored["state"] == "Authorised"  # a refund is beside the payment's state, not one
    [item] = stored["refunds"]["items"]
    assert (item["external"], item["state"], item["amount"]["value"]) == (True, "Refunded", 500)
    assert stored["refunds"]["refundable"] == {"currency": "CNY", "value": 630}
    async with httpx.AsyncClient() as client:
        url = f"{servers.sandbox_url}/_sandbox/payments/{stored['pspReference']}"
        sandbox_payment = (await client.get(url)).json()
    assert sandbox_payment["refundableValue"] == 630
    assert re.fullmatch(r"\d{16}", sandbox_payment["refunds"][0]["pspReference"])


async def refund_through_the_host(page: Page, scenario: str, amount: str, reason: str) -> None:
    """The back office's refund, as the developer asks for it on the page."""
    chosen = page.locator(f'[data-refund-scenario="{scenario}"]')
    await chosen.click()
    await expect(chosen).to_have_attribute("aria-pressed", "true")
    await page.fill("#refund-amount", amount)
    await page.select_option("#refund-reason", reason)
    await page.click("#refund-host")


async def test_a_refund_in_part_through_the_host(page: Page, servers: SandboxedServers) -> None:
    reference = await open_console(page, servers)
    await pay(page, "#sheet-pay")
    await expect_current_state(page, "Authorised")
    await expect(page.locator("#refund-host")).to_be_enabled()
    await refund_through_the_host(page, "refunded", "500", "RETURN")
    await expect(page.locator("#psp-message")).to_contain_text(
        f"refund {reference}-refund-1 (CNY 5.00, refunded); refundable CNY 6.30"
    )
    path = f"/admin/payments/{reference}/refunds"
    await expect_entry(page, "merchant", f"back office -> host: POST {path} -> 201")
    await expect_entry(page, "adyen", "host -> Adyen: POST /refunds -> 201")
    await expect_entry(page, "refund", "refund CNY 5.00 at Adyen (POST /refunds)")
    await expect_entry(page, "webhook", "REFUND success=true -> 200")
    await expect_entry(page, "host", "refund Received -> Refunded")
    await expect(page.locator("#host-refunds")).to_have_text(
        f"{reference}-refund-1: CNY 5.00 Refunded"
    )
    await expect(page.locator("#host-refundable")).to_have_text("CNY 6.30")
    await expect_current_state(page, "Authorised")
    await page.evaluate("window.scrollTo(0, 0)")  # the docs show the page's top
    await screenshot(page, "console-refund-host", docs="sandbox-console.png")
    stored = await admin_status(servers, reference)
    [item] = stored["refunds"]["items"]
    assert (item["external"], item["state"], item["reason"]) == (False, "Refunded", "RETURN")
    assert item["amount"] == {"currency": "CNY", "value": 500}
    assert stored["refunds"]["refundable"] == {"currency": "CNY", "value": 630}
    assert stored["refunds"]["refunded"] == {"currency": "CNY", "value": 500}


async def test_a_refund_refused_by_adyen(page: Page, servers: SandboxedServers) -> None:
    reference = await open_console(page, servers)
    await pay(page, "#sheet-pay")
    await expect_current_state(page, "Authorised")
    await refund_through_the_host(page, "refused", "", "CUSTOMER REQUEST")  # everything left
    await expect_entry(page, "webhook", "REFUND success=false -> 200")
    await expect_entry(page, "host", "refund Received -> Refused")
    await expect(page.locator("#host-refunds")).to_have_text(
        f"{reference}-refund-1: CNY 11.30 Refused"
    )
    await expect(page.locator("#host-refundable")).to_have_text("CNY 11.30")  # all back
    await screenshot(page, "console-refund-refused")
    stored = await admin_status(servers, reference)
    [item] = stored["refunds"]["items"]
    assert (item["state"], item["amount"]["value"]) == ("Refused", 1130)
    assert stored["refunds"]["refundable"] == {"currency": "CNY", "value": 1130}


async def test_webhook_twice_and_out_of_order(page: Page, servers: SandboxedServers) -> None:
    """AUTHORISATION false, then true, each delivered twice at once: the success decides."""
    reference = await open_console(page, servers)
    await page.click('[data-scenario="webhook-twice-out-of-order"]')
    await pay(page, "#sheet-pay")
    await expect(page.locator("#result-state")).to_have_text("Authorised")
    for text in ("success=false -> 200", "success=false (copy 2) -> 200"):
        await expect_entry(page, "webhook", f"AUTHORISATION {text}")
    for text in ("success=true -> 200", "success=true (copy 2) -> 200"):
        await expect_entry(page, "webhook", f"AUTHORISATION {text}")
    await expect_entry(page, "state", "Pending -> Refused")
    await expect_entry(page, "state", "Refused -> Authorised")
    await expect_current_state(page, "Authorised")
    await expect(page.locator("#host-conflicts")).to_have_text("none")
    await screenshot(page, "console-webhook-twice-out-of-order")
    stored = await admin_status(servers, reference)
    assert (stored["state"], stored["conflicts"]) == ("Authorised", [])
    assert [change["to"] for change in stored["history"]] == [
        "Created", "Pending", "Refused", "Authorised"
    ]  # fmt: skip
    # Each notification once: its copy is the same event, acknowledged and not applied again.
    webhooks = [e["success"] for e in stored["events"] if e["source"] == "webhook"]
    assert webhooks == [False, True]


@pytest.mark.skipif(
    "canRetry" not in client_module_source(),
    reason="the Mini Program client module has no retry yet (orders paid in several attempts)",
)
async def test_cancel_then_pay_again(page: Page, servers: SandboxedServers) -> None:
    reference = await open_console(page, servers)
    await pay(page, "#sheet-cancel")
    await expect(page.locator("#result-state")).to_have_text("Refused")
    again = page.locator("#pay-again")
    await expect(again).to_be_visible()
    await again.click()  # the same order, paid again: the pay sheet opens for its next attempt
    await choose_in_sheet(page, "#sheet-pay")
    await expect(page.locator("#result-state")).to_have_text("Authorised")
    await expect(page.locator("#result-attempt")).to_have_text(f"attempt 2 ({reference}-2)")
    await expect(again).to_be_hidden()
    attempts = page.locator("#host-attempts .item")
    await expect(attempts).to_have_text(
        [f"1 {reference} Refused", f"2 {reference}-2 Authorised (kept)"]
    )
    await expect_entry(page, "shopper", "wx.requestPayment -> requestPayment:fail cancel")
    await expect_entry(page, "shopper", "wx.requestPayment -> requestPayment:ok")
    await expect_current_state(page, "Authorised")
    await screenshot(page, "console-pay-again")
    stored = await admin_status(servers, reference)
    assert stored["state"] == "Authorised"
    assert [(a["reference"], a["state"], a["kept"]) for a in stored["attempts"]] == [
        (reference, "Refused", False),
        (f"{reference}-2", "Authorised", True),
    ]
