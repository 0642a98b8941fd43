"""The console in Chromium against the example host: what the shopper, the timeline and the
host's database show after each story, clicked through as a developer would."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

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
    await screenshot(page, "console-authorised", docs="sandbox-console.png")
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
    refund = page.locator('[data-refund-scenario="refunded"]')
    await expect(refund).to_be_enabled()
    await expect(page.locator("#refund-amount")).to_have_value(
        "1130"
    )  # all that is left, by default
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
