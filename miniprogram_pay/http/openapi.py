"""The OpenAPI 3.1 document, generated from the routes' contracts and the pydantic models.

Nothing here is written by hand per endpoint: paths, parameters and security
come from the ``ApiRoute`` list, bodies and answers from the models (their
enums from the code: currencies, states), and error answers from each
contract's codes plus the request model's refusals. ``add_to_openapi`` puts the
same operations into a host's own document (FastAPI's ``/docs``).
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from miniprogram_pay._version import __version__
from miniprogram_pay.http import schemas
from miniprogram_pay.http.admin import admin_routes
from miniprogram_pay.http.routes import ApiRoute, Contract, Errors, merged, routes

__all__ = ["add_to_openapi", "openapi_document", "openapi_route"]

REF_PREFIX = "#/components/schemas/"
# Any endpoint may fail unexpectedly (a bug), or, started lazily, on a bad database setting.
EVERY_ROUTE: Errors = {500: ("internal_error", "configuration_error", "invalid_transition")}
# Answered by the router itself, outside any operation.
ROUTER_ERRORS: dict[str, tuple[int, str]] = {
    "NotFound": (404, "not_found"),
    "MethodNotAllowed": (405, "method_not_allowed"),
}
SECURITY_SCHEMES = {
    "shopper": {"type": "http", "scheme": "bearer", "description": "Token from POST /session."},
    "admin": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"},
    "adminBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "The admin key as a bearer token (what Prometheus sends).",
    },
    "adyenBasic": {"type": "http", "scheme": "basic"},
}
_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


async def _serve(request: Request) -> Response:
    return JSONResponse(openapi_document(request.scope.get("root_path", "")))


openapi_route = ApiRoute(
    "/openapi.json",
    _serve,
    method="GET",
    name="openapi",
    contract=Contract(summary="This document"),
)


def all_routes() -> list[ApiRoute]:
    return [*routes, *admin_routes, openapi_route]


def openapi_document(root_path: str = "") -> dict[str, Any]:
    """The document, with ``servers`` pointing at the mount prefix."""
    document = copy.deepcopy(_document())
    document["servers"] = [{"url": root_path or "/"}]
    return document


def add_to_openapi(document: dict[str, Any], *, prefix: str) -> dict[str, Any]:
    """``document`` (a host's own, e.g. FastAPI's ``app.openapi()``) with the plugin's operations.

    Paths get ``prefix`` (where the plugin is mounted); the plugin's schemas are
    added as ``miniprogram_pay.<Name>`` so they never clash with the host's.

    Example (FastAPI)::

        def openapi() -> dict[str, Any]:
            if app.openapi_schema is None:
                app.openapi_schema = add_to_openapi(get_openapi(...), prefix="/pay")
            return app.openapi_schema

        app.openapi = openapi
    """
    ours = _renamed(copy.deepcopy(_document()))
    paths = document.setdefault("paths", {})
    for path, item in ours["paths"].items():
        paths[prefix.rstrip("/") + path] = item
    components = document.setdefault("components", {})
    for kind in ("schemas", "securitySchemes", "responses"):
        components.setdefault(kind, {}).update(ours["components"][kind])
    return document


# -- building ----------------------------------------------------------------------------


@functools.cache
def _document() -> dict[str, Any]:
    listed = all_routes()
    refs, definitions = _schemas(listed)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "miniprogram-pay",
            "version": __version__,
            "description": "WeChat Pay in Mini Programs through Adyen Checkout. Every error is "
            '`{"error": {"code", "message"}}` with a stable `code`.',
        },
        "paths": _paths(listed, refs),
        "components": {
            "schemas": definitions,
            "securitySchemes": SECURITY_SCHEMES,
            "responses": {
                name: _error_response(status, [code])
                for name, (status, code) in ROUTER_ERRORS.items()
            },
        },
    }


def _schemas(
    listed: Sequence[ApiRoute],
) -> tuple[dict[tuple[type[BaseModel], JsonSchemaMode], Any], dict[str, Any]]:
    wanted: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {
        (schemas.ErrorResponse, "serialization"): None
    }
    for route in listed:
        if route.contract.request is not None:
            wanted[(route.contract.request, "validation")] = None
        if route.contract.answer is not None:
            wanted[(route.contract.answer, "serialization")] = None
    refs, top = models_json_schema(list(wanted), ref_template=REF_PREFIX + "{model}")
    return {(model, mode): refs[(model, mode)] for model, mode in wanted}, top.get("$defs", {})


def _paths(
    listed: Sequence[ApiRoute], refs: dict[tuple[type[BaseModel], JsonSchemaMode], Any]
) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in listed:
        path = _PARAM.sub(r"{\1}", route.path)
        paths.setdefault(path, {})[route.method.lower()] = _operation(route, refs)
    return paths


def _operation(
    route: ApiRoute, refs: dict[tuple[type[BaseModel], JsonSchemaMode], Any]
) -> dict[str, Any]:
    contract = route.contract
    operation: dict[str, Any] = {"operationId": route.name, "summary": contract.summary}
    if contract.security:
        operation["security"] = [{name: []} for name in contract.security]
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in route.param_convertors
    ]
    parameters += [
        {"name": name, "in": "query", "description": text, "schema": {"type": "string"}}
        for name, text in contract.query.items()
    ]
    if parameters:
        operation["parameters"] = parameters
    if contract.request is not None:
        schema = refs[(contract.request, "validation")]
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    operation["responses"] = _responses(contract, refs)
    return operation


def _responses(
    contract: Contract, refs: dict[tuple[type[BaseModel], JsonSchemaMode], Any]
) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    if contract.answer is not None:
        schema = refs[(contract.answer, "serialization")]
        answers["200"] = {"description": "OK", "content": {"application/json": {"schema": schema}}}
    elif contract.answer_text is not None:
        answers["200"] = {
            "description": f"OK; the body is {contract.answer_text}",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    else:
        answers["200"] = {"description": "OK", "content": {"application/json": {}}}
    errors = merged(_refusals(contract), contract.errors, EVERY_ROUTE)
    for status in sorted(errors):
        answers[str(status)] = _error_response(status, errors[status])
    return answers


def _refusals(contract: Contract) -> Errors:
    model = contract.request
    if model is None or not hasattr(model, "refusal"):
        return {}  # described, not parsed by a model (the webhook)
    return {400: tuple(sorted(schemas.request_refusals(model)))}


def _error_response(status: int, codes: Sequence[str]) -> dict[str, Any]:
    listed = ", ".join(f"`{code}`" for code in codes)
    schema = {
        "allOf": [
            {"$ref": REF_PREFIX + "ErrorResponse"},
            {"properties": {"error": {"properties": {"code": {"enum": list(codes)}}}}},
        ]
    }
    return {
        "description": f"Error {status}: {listed}",
        "content": {"application/json": {"schema": schema}},
    }


def _renamed(document: dict[str, Any]) -> dict[str, Any]:
    """Every schema component and reference under ``miniprogram_pay.``."""

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                key: (
                    REF_PREFIX + "miniprogram_pay." + item.removeprefix(REF_PREFIX)
                    if key == "$ref" and isinstance(item, str) and item.startswith(REF_PREFIX)
                    else walk(item)
                )
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [walk(item) for item in value]
        return value

    renamed: dict[str, Any] = walk(document)
    components = renamed["components"]
    components["schemas"] = {
        "miniprogram_pay." + name: schema for name, schema in components["schemas"].items()
    }
    return renamed
