"""Every Python snippet of README.md and docs/*.md runs as written.

Each snippet runs on its own, in an empty directory, with the ``MINIPROGRAM_PAY_*``
variables of the configuration quickstart set to sandbox values (the docs tell
merchants to set them), in a namespace holding only what the reader writes
themselves (``tests/docs/reader.py``: their order resolver and hooks). Anything
else a snippet uses it must import. A snippet that builds an ``app`` (or a
``build()`` factory) must answer ``GET /pay/health``. A snippet that names a
PostgreSQL server runs against the test server, and is skipped without one.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docs.reader import reader_namespace
from tests.docs.snippets import Snippet, all_snippets, sandbox_variables
from tests.postgres import POSTGRES_URL_ENV

# The placeholder database of the deployment docs, replaced by the test server.
DOCS_POSTGRES_URL = "postgresql+psycopg://shop@db.internal/shop"
SNIPPETS = all_snippets()


def test_the_docs_have_snippets() -> None:
    assert len(SNIPPETS) >= 8


def _params() -> list[Any]:
    return [pytest.param(snippet, id=snippet.name) for snippet in SNIPPETS]


def _source(snippet: Snippet) -> str:
    if DOCS_POSTGRES_URL not in snippet.code:
        return snippet.code
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.skip(f"needs {POSTGRES_URL_ENV}")
    return snippet.code.replace(DOCS_POSTGRES_URL, url)


async def _run(snippet: Snippet) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "snippet", **reader_namespace()}
    code = compile(
        _source(snippet),
        snippet.name,
        "exec",
        flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT,
        dont_inherit=True,
    )
    result = eval(code, namespace)
    if inspect.isawaitable(result):
        await result
    return namespace


async def _answers_health(app: Any) -> None:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            response = await client.get("/pay/health")
            assert response.status_code == 200, response.text


@pytest.mark.parametrize("snippet", _params())
def test_snippet_runs(snippet: Snippet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in sandbox_variables(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}").items():
        monkeypatch.setenv(name, value)

    async def run() -> None:
        namespace = await _run(snippet)
        app = namespace.get("app")
        if app is None and callable(namespace.get("build")):
            app = namespace["build"]()
        if app is not None and hasattr(app, "router"):
            await _answers_health(app)

    asyncio.run(run())


def test_the_readme_quickstart_gives_a_working_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.docs import quickstart_smoke

    monkeypatch.chdir(tmp_path)
    # main() sets the quickstart's variables in os.environ: patched here first, so that
    # teardown removes them and no later test in this process sees them.
    for name in [n for n in os.environ if n.startswith("MINIPROGRAM_PAY_")]:
        monkeypatch.delenv(name)
    for name in quickstart_smoke.variables("sqlite+aiosqlite:///unused.db"):
        monkeypatch.setenv(name, "")
    quickstart_smoke.main(str(Path(__file__).resolve().parents[2] / "README.md"))
