"""The OpenAPI document: valid, generated from the routes and models, every error code in it."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from openapi_spec_validator import validate

import miniprogram_pay
from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.http.openapi import all_routes, openapi_document
from miniprogram_pay.wechat.client import _ERRCODES
from tests.world import MERCHANT_BASE, world

PACKAGE = Path(miniprogram_pay.__file__).parent
API_DOC = PACKAGE.parent / "docs" / "api.md"
# Parts that never answer the HTTP API: the sandbox (its own contract) and the CLI.
NOT_HTTP = ("sandbox", "cli.py")
# Defaults of abstract bases, never raised as they are (each subclass has its own).
BASE_DEFAULTS = {
    "invalid_request",
    "conflict",
    "webhook_rejected",
    "upstream_error",
    "http_error",
    "invalid_refund",
    "refund_not_allowed",
}


def raised_codes() -> set[str]:
    """Every error code literal in the package: ``code="..."`` and ``code = "..."``."""
    codes: set[str] = {code for code, _, _ in _ERRCODES.values()}
    for path in PACKAGE.rglob("*.py"):
        if any(part in path.relative_to(PACKAGE).parts for part in NOT_HTTP):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            keyword = isinstance(node, ast.keyword) and node.arg == "code"
            attribute = isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "code" for t in node.targets
            )
            value = getattr(node, "value", None)
            if (keyword or attribute) and isinstance(value, ast.Constant):
                codes.add(str(value.value))
    return codes - BASE_DEFAULTS


def document_codes(document: dict[str, Any]) -> set[str]:
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            code = value.get("properties", {}).get("error", {}).get("properties", {}).get("code")
            if isinstance(code, dict) and "enum" in code:
                found.update(code["enum"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(document)
    return found


async def test_the_served_document_is_valid_openapi_and_names_the_package_version(
    sqlite_url: str,
) -> None:
    async with world(sqlite_url) as w:
        served = (await w.client.get("/pay/openapi.json")).json()
    validate(served)
    assert served["info"]["version"] == miniprogram_pay.__version__
    assert served["servers"] == [{"url": "/pay"}]


def test_every_route_is_in_the_document() -> None:
    paths = openapi_document()["paths"]
    for route in all_routes():
        path = re.sub(r"{([^}:]+)(:[^}]+)?}", r"{\1}", route.path)
        assert route.method.lower() in paths.get(path, {}), route.path
    assert sum(len(item) for item in paths.values()) == len(all_routes())


def test_every_error_code_the_package_raises_is_in_the_document() -> None:
    documented = document_codes(openapi_document())
    missing = raised_codes() - documented
    assert not missing, f"codes raised but in no route's contract: {sorted(missing)}"


def test_every_documented_code_is_explained_in_the_api_guide() -> None:
    guide = API_DOC.read_text(encoding="utf-8")
    unexplained = {c for c in document_codes(openapi_document()) if f"`{c}`" not in guide}
    assert not unexplained, sorted(unexplained)


def test_enums_come_from_the_code() -> None:
    schemas = openapi_document()["components"]["schemas"]
    body = schemas.get("AmountBody-Input", schemas.get("AmountBody"))
    assert body["properties"]["currency"]["enum"] == sorted(SUPPORTED_CURRENCIES)
    assert schemas["PaymentState"]["enum"] == [s.value for s in PaymentState]
    payment = schemas["PaymentRequest"]["properties"]
    assert {"paymentMethod", "orderId", "reference", "amount"} <= set(payment)


def test_answers_are_typed_not_bare_objects() -> None:
    paths = openapi_document()["paths"]
    for path in ("/payments/{reference}", "/admin/stale", "/admin/notifications", "/health"):
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in schema, path


async def test_a_fastapi_host_shows_the_plugin_in_its_own_docs(sqlite_url: str) -> None:
    async with world(sqlite_url) as w:
        app = FastAPI()

        @app.get("/hello")
        async def hello() -> dict[str, str]:
            return {"hello": "world"}

        app.mount("/pay", w.pay)

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                document = get_openapi(title="shop", version="1", routes=app.routes)
                app.openapi_schema = w.pay.add_to_openapi(document, prefix="/pay")
            return app.openapi_schema

        app.openapi = openapi  # type: ignore[method-assign]
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=MERCHANT_BASE
        ) as client:
            document = (await client.get("/openapi.json")).json()
            assert (await client.get("/docs")).status_code == 200
    validate(document)
    assert {"/hello", "/pay/session", "/pay/payments", "/pay/webhooks/adyen"} <= set(
        document["paths"]
    )
    assert "miniprogram_pay.ErrorResponse" in document["components"]["schemas"]
