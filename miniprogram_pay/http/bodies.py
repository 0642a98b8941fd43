"""Reading request bodies: size, content type, encoding and depth, before any model sees them."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from miniprogram_pay.errors import InvalidRequestError, PayloadTooLargeError, RequestError

__all__ = ["JSON_MAX_DEPTH", "UnsupportedMediaTypeError", "decode_object", "read_body", "read_json"]

JSON_MAX_DEPTH = 16


class UnsupportedMediaTypeError(RequestError):
    code = "unsupported_media_type"
    status = 415


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing anything over ``max_bytes`` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(f"the body is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLargeError(f"the body is larger than {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, with the content type, size, encoding and depth checked."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaTypeError("send the body as application/json")
    raw = await read_body(request, max_bytes)
    return decode_object(raw)


def decode_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequestError(
            "the body is not valid UTF-8 JSON", code="malformed_json"
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequestError("the body must be a JSON object", code="malformed_json")
    if _depth(value) > JSON_MAX_DEPTH:
        raise InvalidRequestError("the body is nested too deeply", code="malformed_json")
    if not _encodable(value):
        raise InvalidRequestError("the body is not valid UTF-8 JSON", code="malformed_json")
    return value


def _encodable(value: object) -> bool:
    # A "\ud800" escape decodes to a lone surrogate that no UTF-8 column can store.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _reject_constant(_name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _depth(value: object, level: int = 0) -> int:
    if level > JSON_MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level
