"""``Pages``: templates and static files from package folders, served with a strict CSP."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from miniprogram_pay.domain import TRANSITIONS, PaymentState
from miniprogram_pay.errors import ConfigurationError
from miniprogram_pay.pages import CONTENT_SECURITY_POLICY, SECURITY_HEADERS, Pages, state_diagram

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "miniprogram_pay"


def sample_app(pages: Pages, template: str = "sample.html") -> Starlette:
    diagram = state_diagram("sample", [s.value for s in PaymentState], TRANSITIONS)

    async def index(request: Request) -> Response:
        return pages.render(request, template, {"title": "A sample page", "diagram": diagram})

    return Starlette(routes=[Route("/", index), pages.static_route("/static")])


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    pages = Pages("tests.pages.sample", static_name="sample-static")
    # Mounted under a prefix in a host, as a feature of the plugin would be.
    host = Starlette(routes=[Mount("/admin", app=sample_app(pages))])
    transport = httpx.ASGITransport(app=host)
    async with httpx.AsyncClient(transport=transport, base_url="http://host.test") as c:
        yield c


async def test_a_page_has_the_security_headers_and_static_urls_under_its_mount(
    client: httpx.AsyncClient,
) -> None:
    page = await client.get("/admin/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    # Paths, not absolute URLs, and below the host's mount.
    sources = re.findall(r'(?:src|href)="(/[^"]+)"', page.text)
    assert sources == [
        "/admin/static/pages.css",
        "/admin/static/sample.css",
        "/admin/static/pages.js",
    ]
    assert "<title>A sample page</title>" in page.text


async def test_static_files_come_from_the_feature_first_then_the_shared_folder(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/admin/static/sample.css")).text.startswith("/* a feature's")
    assert (await client.get("/admin/static/pages.css")).text.startswith("/* shadows")
    shared = await client.get("/admin/static/pages.js")
    assert shared.status_code == 200
    assert "window.Pages" in shared.text
    assert (await client.get("/admin/static/nothing.js")).status_code == 404


async def test_the_diagram_macro_draws_every_move_of_the_table(client: httpx.AsyncClient) -> None:
    page = (await client.get("/admin/")).text
    drawn = set(re.findall(r'class="edge"[^>]*data-from="(\w+)" data-to="(\w+)"', page))
    allowed = {(source, t["dest"]) for t in TRANSITIONS for source in t["source"]}
    assert drawn == allowed
    assert re.findall(r'<g class="state" data-state="(\w+)"', page) == [
        s.value for s in PaymentState
    ]


async def test_a_misspelt_name_in_a_template_fails_loudly() -> None:
    import jinja2

    pages = Pages("tests.pages.sample", static_name="sample-static")
    transport = httpx.ASGITransport(app=sample_app(pages, "typo.html"), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://host.test") as c:
        with pytest.raises(jinja2.UndefinedError):
            await c.get("/")


def test_without_jinja2_a_page_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jinja2" else real(name, *a)
    )
    pages = Pages("tests.pages.sample", static_name="sample-static")
    assert not pages.available
    with pytest.raises(ConfigurationError, match=r"pip install 'miniprogram-pay\[pages\]'"):
        _ = pages.templates
    pages.static_route("/static")  # static files need no Jinja2


def _package_files(suffix: str) -> list[Path]:
    return sorted(p for p in PACKAGE_ROOT.rglob(f"*{suffix}") if "templates" in p.parts)


@pytest.mark.parametrize("template", _package_files(".html"), ids=lambda p: p.name)
def test_templates_carry_no_inline_script_handler_or_style(template: Path) -> None:
    """What the CSP would block: a page must work without any of it."""
    text = template.read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), "inline <script>"
    assert not re.search(r"\son[a-z]+\s*=", text), "inline event handler"
    assert not re.search(r"\sstyle\s*=", text), "style attribute"
    assert "<style" not in text
    assert "javascript:" not in text


def test_the_package_has_templates_to_check() -> None:
    assert {p.name for p in _package_files(".html")} >= {
        "base.html",
        "diagram.html",
        "console.html",
    }
