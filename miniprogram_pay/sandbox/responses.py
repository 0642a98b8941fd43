"""Adyen-shaped HTTP answers: ``ServiceError`` bodies and compact JSON."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from miniprogram_pay.sandbox.ids import new_psp_reference

__all__ = ["json_response", "service_error", "unauthorized"]


def json_bytes(body: Any) -> bytes:
    """Compact, stable JSON (the bytes an idempotent replay repeats exactly)."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def json_response(body: Any, status_code: int = 200) -> Response:
    return Response(json_bytes(body), status_code=status_code, media_type="application/json")


def service_error(
    status: int, error_code: str, message: str, error_type: str, *, psp: bool = True
) -> Response:
    """Adyen's ``ServiceError``; like Adyen, most errors carry a fresh pspReference."""
    body: dict[str, object] = {
        "status": status,
        "errorCode": error_code,
        "message": message,
        "errorType": error_type,
    }
    if psp:
        body["pspReference"] = new_psp_reference()
    return json_response(body, status)


def unauthorized() -> Response:
    """Adyen's answer to a missing or wrong ``X-API-Key`` (no pspReference)."""
    return service_error(401, "000", "HTTP Status Response - Unauthorized", "security", psp=False)
