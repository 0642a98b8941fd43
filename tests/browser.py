"""Pages in a real headless Chromium: Debian's ``chromium``, driven by Playwright for Python.

One browser per test process, reused; a fresh context and page per test. A page
test fails when its page logs an error, throws, fails to load a resource or
violates its Content-Security-Policy. ``scripts/bootstrap`` installs Chromium
and the driver.

The fixtures ``browser`` and ``page`` are everywhere (``tests/conftest.py`` loads
this module as a plugin). Playwright's async API, on one event loop for the
whole session: its sync API would leave its loop marked running in the main
thread, which breaks every asyncio test after it. A page test module::

    from playwright.async_api import Page, expect

    from tests.browser import BROWSER_TESTS, screenshot

    pytestmark = BROWSER_TESTS

    async def test_the_page(page: Page) -> None:
        await page.goto(url)
        await expect(page.locator("h1")).to_have_text("...")
        await screenshot(page, "my-page", docs="my-page.png")

``BROWSER_TESTS`` runs the tests on the session's loop and keeps them on one
xdist worker (``--dist loadgroup``), so the browser starts once. ``screenshot``
always writes ``screenshots/NAME.png`` (git-ignored); with
``MINIPROGRAM_PAY_DOCS_SCREENSHOTS=1`` it also writes the ``docs`` name under
``docs/img/``, the only way tests change tracked files.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

__all__ = ["BROWSER_TESTS", "DOCS_SCREENSHOTS", "browser", "page", "screenshot"]

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "screenshots"
DOCS_IMAGES = ROOT / "docs" / "img"
DOCS_SCREENSHOTS = "MINIPROGRAM_PAY_DOCS_SCREENSHOTS"
CHROMIUM = os.environ.get("MINIPROGRAM_PAY_TEST_CHROMIUM", "/usr/bin/chromium")
HAVE_CHROMIUM = Path(CHROMIUM).exists()
# Headless, and nothing that phones home: this machine's network is closed.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT: ViewportSize = {"width": 1440, "height": 1000}
TIMEOUT_MS = 15_000
BROWSER_TESTS = [pytest.mark.xdist_group("chromium"), pytest.mark.asyncio(loop_scope="session")]

# Recorded in the page before any of its scripts run; CSP blocks never reach a page's own code.
_WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || 'inline'}`);
});
"""

expect.set_options(timeout=TIMEOUT_MS)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.fail(
            f"no Chromium at {CHROMIUM}: run scripts/bootstrap (it installs Debian's chromium) "
            "or set MINIPROGRAM_PAY_TEST_CHROMIUM"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=list(FLAGS))
        try:
            yield launched
        finally:
            await launched.close()


def _describe(message: ConsoleMessage) -> str:
    return f"console {message.type}: {message.text} ({message.location.get('url', '')})"


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A new page; the test fails if the page reported a problem by the end."""
    context = await browser.new_context(viewport=VIEWPORT)
    await context.add_init_script(_WATCH_CSP)
    opened = await context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    opened.on("console", lambda m: problems.append(_describe(m)) if m.type == "error" else None)
    opened.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    opened.on("requestfailed", lambda r: problems.append(f"failed: {r.method} {r.url}"))
    try:
        yield opened
        # Read before closing: closing aborts the page's pending requests, which is no problem.
        found = [*problems, *await opened.evaluate("window.__cspViolations || []")]
    finally:
        await context.close()
    assert found == [], "\n".join(found)


async def screenshot(page: Page, name: str, *, docs: str | None = None) -> Path:
    """Save the whole page as ``screenshots/NAME.png`` (and ``docs/img/DOCS`` when asked)."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    if docs is not None and os.environ.get(DOCS_SCREENSHOTS) == "1":
        await page.screenshot(path=str(DOCS_IMAGES / docs), full_page=False)
    return path
