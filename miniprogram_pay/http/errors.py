"""One place that turns every error into ``{"error": {"code", "message"}}`` JSON."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from miniprogram_pay.errors import MiniProgramPayError

__all__ = ["exception_handlers"]

logger = logging.getLogger("miniprogram_pay.http")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


async def package_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MiniProgramPayError)
    if exc.status >= 500:
        logger.warning("%s %s failed: %s", request.method, request.url.path, exc.code)
    headers = {}
    if exc.retry_after_seconds is not None:
        headers["Retry-After"] = str(exc.retry_after_seconds)
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    body = {"error": {"code": code, "message": exc.detail or code}}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    # Not logged here: Starlette raises the error again after this answer, and the
    # plugin logs it once, with its traceback and the request's id (app.py).
    body = {"error": {"code": "internal_error", "message": "internal error"}}
    return JSONResponse(body, status_code=500)


exception_handlers = {
    MiniProgramPayError: package_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
