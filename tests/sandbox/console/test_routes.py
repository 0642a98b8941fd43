"""The console's page and client module as the sandbox serves them (in-process)."""

from __future__ import annotations

import html
import importlib.util
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from miniprogram_pay.domain import TRANSITIONS
from miniprogram_pay.pages import SECURITY_HEADERS
from miniprogram_pay.sandbox import REFUND_SCENARIOS, SCENARIOS, SandboxConfig, create_sandbox_app
from miniprogram_pay.sandbox.console import default_api_url
from miniprogram_pay.sandbox.console.routes import client_module_source
from miniprogram_pay.sandbox.scenarios import refund_scenario_steps, scenario_steps

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    config = SandboxConfig(webhook_url="http://shop.test:8000/pay/webhooks/adyen")
    app = create_sandbox_app(config)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://sandbox.test"
    ) as c:
        yield c
    await app.state.sandbox.aclose()
    await app.state.console.aclose()


def test_the_page_loads_the_same_client_module_as_the_example_mini_program() -> None:
    """One source of truth: a Mini Program can only require files of its own folder, and the
    wheel has no examples/, so each keeps a copy and this test holds them byte for byte."""
    example = (ROOT / "examples" / "miniprogram" / "lib" / "pay.js").read_bytes()
    assert client_module_source().encode() == example


async def test_the_client_module_is_served_as_commonjs_is_loaded(client: httpx.AsyncClient) -> None:
    answer = await client.get("/_sandbox/console/pay.js")
    assert answer.headers["content-type"].startswith("text/javascript")
    assert answer.headers["x-content-type-options"] == "nosniff"
    opening, rest = answer.text.split("(function (module, exports) {\n", 1)
    assert opening.startswith("//") and opening.endswith("window.MiniProgramPay = ")
    assert rest == client_module_source() + "\nreturn module.exports;\n})({ exports: {} });\n"


async def test_the_page_offers_every_scenario_with_its_steps(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    text = page.text
    assert re.findall(r'data-scenario="([\w-]+)"', text) == list(SCENARIOS)
    assert re.findall(r'data-refund-scenario="([\w-]+)"', text) == list(REFUND_SCENARIOS)
    every_step = [
        *(step for s in SCENARIOS.values() for step in scenario_steps(s)),
        *(step for s in REFUND_SCENARIOS.values() for step in refund_scenario_steps(s)),
    ]
    for step in every_step:
        assert "<li>" + html.escape(step, quote=True).replace("&quot;", "&#34;") + "</li>" in text
    assert 'data-scenario="authorised" title="Details Authorised' in text
    assert 'aria-pressed="true">authorised<' in text  # the default
    edges = set(re.findall(r'data-from="(\w+)" data-to="(\w+)"', text))
    assert edges == {(s, t["dest"]) for t in TRANSITIONS for s in t["source"]}
    assert 'data-api="http://shop.test:8000/pay"' in text  # the webhook URL's base
    for script in (
        "/_sandbox/console/pay.js",
        "/_sandbox/static/wx.js",
        "/_sandbox/static/console.js",
    ):
        assert f'<script src="{script}"></script>' in text
        assert (await client.get(script)).status_code == 200


@pytest.mark.parametrize(
    ("configured", "webhook_url", "expected"),
    [
        ("http://api.test/shop/pay/", None, "http://api.test/shop/pay"),
        (None, "http://h.test:9/pay/webhooks/adyen", "http://h.test:9/pay"),
        (None, "http://h.test/hooks/adyen-in", "http://127.0.0.1:8000/pay"),
        (None, None, "http://127.0.0.1:8000/pay"),
    ],
)
def test_the_default_api_url(
    configured: str | None, webhook_url: str | None, expected: str
) -> None:
    assert default_api_url(configured, webhook_url) == expected


async def test_without_jinja2_the_page_says_what_to_install(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jinja2" else real(name, *a)
    )
    answer = await client.get("/")
    assert answer.status_code == 501
    assert "pip install 'miniprogram-pay[pages]'" in answer.text
