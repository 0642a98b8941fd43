"""The back office in Chromium over real uvicorn: signed in with the keyboard, payments
filtered, a timeline read, a parked change requeued after its confirmation; focus visible and
text readable."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from miniprogram_pay import StateChange
from miniprogram_pay.sandbox.server import SandboxedServers
from miniprogram_pay.sandbox.shopper import Shopper
from tests.browser import BROWSER_TESTS, screenshot

pytestmark = BROWSER_TESTS

# WCAG 2.x AA: 4.5:1 for text, 3:1 for large text (18.66 px bold or 24 px).
CONTRAST = """
() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    const text = walker.currentNode.textContent.trim();
    if (!text || !el.getClientRects().length) continue;
    if (el.closest('svg, .visually-hidden, .skip')) continue;
    const style = getComputedStyle(el);
    const a = lum(rgb(style.color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const needed = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < needed) low.push(`${text.slice(0, 40)}: ${ratio.toFixed(2)}`);
  }
  return low;
}
"""
FOCUS = """
() => {
  const el = document.activeElement;
  const style = getComputedStyle(el);
  return {tag: el.tagName, id: el.id, text: (el.textContent || el.value || '').trim().slice(0, 40),
          outline: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2};
}
"""

hook_fails = {"on": False}


async def host_hook(change: StateChange) -> None:
    if hook_fails["on"] and "parked" in change.reference:
        raise RuntimeError("the host's order table is locked")


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxedServers]:
    directory = tmp_path_factory.mktemp("office")
    with SandboxedServers(
        environ={"MINIPROGRAM_PAY_OUTBOX_PARK_AFTER_SECONDS": "1"},
        database_url=f"sqlite+aiosqlite:///{directory / 'office.db'}",
        on_state_change=host_hook,
    ) as running:
        yield running


async def shop(servers: SandboxedServers, scenario: str, prefix: str) -> str:
    async with httpx.AsyncClient(timeout=30) as client:
        shopper = Shopper(
            client,
            api_url=servers.api_url,
            sandbox_url=servers.sandbox_url,
            admin_api_key=servers.admin_api_key,
            say=lambda label, text: None,
        )
        result = await shopper.pay(scenario, prefix=prefix)
    reference: str = result.reference
    return reference


async def outbox(servers: SandboxedServers, status: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{servers.api_url}/admin/outbox",
            params={"status": status},
            headers={"X-Admin-Key": servers.admin_api_key},
        )
    rows: list[dict[str, Any]] = answer.json()["outbox"]
    return rows


async def sign_in_with_the_keyboard(page: Page, servers: SandboxedServers) -> None:
    await page.goto(servers.api_url + "/admin/office")
    await expect(page).to_have_url(servers.api_url + "/admin/office/login")
    await expect(page.locator("#key")).to_be_focused()  # autofocus: type at once
    await page.keyboard.type(servers.admin_api_key)
    await page.keyboard.press("Enter")
    await expect(page.locator("#payments-title")).to_have_text("Payments")


async def test_find_a_payment_and_read_its_timeline(page: Page, servers: SandboxedServers) -> None:
    plain = await shop(servers, "authorised", "office")
    conflicted = await shop(servers, "success-then-failure", "office")
    await sign_in_with_the_keyboard(page, servers)
    rows = page.locator("#payments tbody tr")
    await expect(rows.first).to_contain_text(conflicted)
    await expect(page.locator("#payments tr.conflicted")).to_contain_text(conflicted)
    await expect(page.locator("#loop-inbox")).to_have_text("running")
    await screenshot(page, "office-payments")

    await page.select_option("#f-conflicts", "true")
    await page.get_by_role("button", name="Filter").press("Enter")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text(conflicted)
    await page.select_option("#f-conflicts", "")
    await page.fill("#f-prefix", plain)
    await page.locator("#f-prefix").press("Enter")
    await expect(rows).to_have_count(1)

    await page.goto(servers.api_url + "/admin/office?state=Paid")
    await expect(page.locator("#filter-error")).to_contain_text("allowed: Created, Pending")

    await page.goto(servers.api_url + "/admin/office")
    await page.click(f"text={conflicted}")
    await expect(page.locator("#state")).to_have_text("Authorised")
    await expect(page.locator("#conflicts")).to_have_text("1")
    timeline = page.locator("#timeline .entry")
    conflict = page.locator("#timeline .entry.conflict")
    await expect(conflict).to_have_count(1)
    await expect(conflict).to_contain_text("failure_after_authorisation")
    for lane, text in (
        ("webhook", "Webhook AUTHORISATION success=true received"),
        ("state", "Pending → Authorised"),
        ("delivery", "on_state_change(Authorised) delivered"),
    ):
        await expect(
            timeline.filter(has_text=text).and_(page.locator(f'[data-lane="{lane}"]'))
        ).to_have_count(1)
    diagram = page.locator("#payment-diagram")
    await expect(diagram.locator(".state.current")).to_have_attribute("data-state", "Authorised")
    await expect(diagram.locator(".edge.taken")).to_have_count(2)  # Created, Pending, Authorised
    times = await page.locator("#timeline time").evaluate_all(
        "(els) => els.map((e) => e.getAttribute('datetime'))"
    )
    assert times == sorted(times)
    await screenshot(page, "office-timeline")


async def test_requeue_a_parked_change_after_confirming(
    page: Page, servers: SandboxedServers
) -> None:
    hook_fails["on"] = True
    reference = await shop(servers, "webhook-never", "parked")
    for _ in range(300):
        if await outbox(servers, "parked"):
            break
        await asyncio.sleep(0.05)
    hook_fails["on"] = False
    await sign_in_with_the_keyboard(page, servers)
    await expect(page.locator("#outbox-parked")).to_have_text("1")
    await page.click("text=Requeue parked changes…")
    await expect(page.locator("#confirm-title")).to_have_text(
        "Requeue 1 parked state changes for on_state_change?"
    )
    await expect(page.locator("main table")).to_contain_text(reference)
    await expect(page.locator("main table")).to_contain_text("RuntimeError")  # its last error
    await screenshot(page, "office-requeue-confirm")
    await page.locator("#confirm").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".notice")).to_have_text(
        "1 parked state changes for on_state_change requeued"
    )
    for _ in range(300):
        if not await outbox(servers, "parked") and not await outbox(servers, "pending"):
            break
        await asyncio.sleep(0.05)
    await page.reload()
    await expect(page.locator("#outbox-parked")).to_have_text("0")


async def test_every_control_shows_its_focus_and_every_text_is_readable(
    page: Page, servers: SandboxedServers
) -> None:
    await shop(servers, "authorised", "contrast")
    await sign_in_with_the_keyboard(page, servers)
    reached: list[dict[str, Any]] = []
    for _ in range(40):
        await page.keyboard.press("Tab")
        reached.append(await page.evaluate(FOCUS))
    assert reached[0]["text"] == "Skip to content"
    unmarked = [step for step in reached if step["tag"] != "BODY" and not step["outline"]]
    assert unmarked == [], unmarked
    names = [step["text"] for step in reached]
    assert "Filter" in names and any(name.startswith("contrast-") for name in names), names
    for path in ("/admin/office", "/admin/office/login"):
        await page.goto(servers.api_url + path)
        assert await page.evaluate(CONTRAST) == [], path
    await page.goto(servers.api_url + "/admin/office")
    await page.click("#payments tbody tr a >> nth=0")
    assert await page.evaluate(CONTRAST) == []


async def refund_states(servers: SandboxedServers, reference: str) -> list[str]:
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"{servers.api_url}/payments/{reference}",
            headers={"X-Admin-Key": servers.admin_api_key},
        )
    return [item["state"] for item in answer.json()["refunds"]["items"]]


async def test_refund_part_of_a_payment_after_confirming(
    page: Page, servers: SandboxedServers
) -> None:
    reference = await shop(servers, "authorised", "refund")
    await sign_in_with_the_keyboard(page, servers)
    await page.click(f"text={reference}")
    await expect(page.locator("#ledger-refundable")).to_have_text("CNY 11.30")
    # With the keyboard: the amount in yuan, a reason, then Enter.
    await page.locator("#r-amount").focus()
    await page.keyboard.type("3.76")
    await page.keyboard.press("Tab")
    await expect(page.locator("#r-reason")).to_be_focused()
    await page.select_option("#r-reason", "RETURN")
    await page.locator("#r-amount").press("Enter")

    await expect(page.locator("#confirm-title")).to_have_text(f"Refund CNY 3.76 of {reference}?")
    await expect(page.locator("#refund-amount")).to_have_text("CNY 3.76")
    await expect(page.locator("#refund-left")).to_have_text("CNY 7.54")
    await expect(page.locator("#refund-reason")).to_have_text("RETURN")
    assert await page.evaluate(CONTRAST) == []
    await screenshot(page, "office-refund-confirm", docs="office-refund-confirm.png")
    await page.locator("#confirm").focus()
    assert (await page.evaluate(FOCUS))["outline"]
    await page.keyboard.press("Enter")

    await expect(page.locator("#refund-outcome")).to_contain_text(
        f"Refund {reference}-refund-1 of CNY 3.76"
    )
    for _ in range(300):
        if await refund_states(servers, reference) == ["Refunded"]:
            break
        await asyncio.sleep(0.05)
    await page.reload()
    await expect(page.locator("#ledger-refunded")).to_have_text("CNY 3.76")
    await expect(page.locator("#ledger-refundable")).to_have_text("CNY 7.54")
    await expect(page.locator("#refunds tbody tr")).to_have_count(1)
    await expect(page.locator("#refunds tbody tr")).to_contain_text("Refunded")
    refund_lane = page.locator('#timeline [data-lane="refund"]')
    for move in ("(new) → Requested", "Requested → Received", "Received → Refunded"):
        await expect(refund_lane.filter(has_text=move)).to_have_count(1)
    await expect(
        page.locator('#timeline [data-lane="webhook"]').filter(has_text="Webhook REFUND")
    ).to_have_count(1)
    await expect(
        page.locator('#timeline [data-lane="delivery"]').filter(has_text="Refunded) delivered")
    ).to_have_count(1)
    times = await page.locator("#timeline time").evaluate_all(
        "(els) => els.map((e) => e.getAttribute('datetime'))"
    )
    assert times == sorted(times)
    assert await page.evaluate(CONTRAST) == []
    await screenshot(page, "office-refunds")

    await page.goto(servers.api_url + "/admin/office?hasRefunds=true")
    await expect(page.locator("#f-refunds")).to_have_value("true")
    await expect(page.locator("#payments tbody tr")).to_have_count(1)
    await expect(page.locator("#payments tbody tr")).to_contain_text(reference)
