"""The app's own OpenAPI 3.1 document, served at ``GET /openapi.json``."""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "pspReference": {"type": "string"},
                "retryable": {"type": "boolean"},
            },
        }
    },
}
_AMOUNT = {
    "type": "object",
    "required": ["currency", "value"],
    "properties": {
        "currency": {
            "type": "string",
            "enum": ["AUD", "CAD", "CNY", "EUR", "GBP", "HKD", "JPY", "NZD", "SGD", "USD"],
        },
        "value": {"type": "integer", "minimum": 1, "description": "Minor units (fen for CNY)."},
    },
}
_STATE = {"type": "string", "enum": ["Created", "Pending", "Authorised", "Refused", "Error"]}
_NULLABLE_STR = {"type": ["string", "null"]}
_WECHAT_PARAMS = {
    "type": "object",
    "description": "Pass to wx.requestPayment() as they are.",
    "properties": {
        k: {"type": "string"}
        for k in ("timeStamp", "package", "paySign", "appId", "signType", "nonceStr")
    },
}
_PAYMENT = {
    "type": "object",
    "required": ["reference", "state"],
    "properties": {
        "reference": {"type": "string"},
        "state": _STATE,
        "resultCode": _NULLABLE_STR,
        "pspReference": _NULLABLE_STR,
        "amount": _AMOUNT,
        "paymentData": _NULLABLE_STR,
        "redirect": {
            "type": ["object", "null"],
            "properties": {"data": _WECHAT_PARAMS},
        },
        "action": {"type": ["object", "null"]},
    },
}
_DETAILS_RESULT = {
    "type": "object",
    "required": ["reference", "state"],
    "properties": {
        "reference": {"type": "string"},
        "state": _STATE,
        "resultCode": _NULLABLE_STR,
        "pspReference": _NULLABLE_STR,
        "refusalReason": _NULLABLE_STR,
    },
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any] | None, *errors: int, ok_status: str = "200") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if ok is not None:
        out[ok_status] = {"description": "OK", "content": {"application/json": {"schema": ok}}}
    for status in errors:
        out[str(status)] = {
            "description": "Error",
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


def _paths() -> dict[str, Any]:
    return {
        "/session": {
            "post": {
                "summary": "Exchange a wx.login() jsCode for a shopper token",
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["code"],
                        "properties": {"code": {"type": "string", "maxLength": 128}},
                    }
                ),
                "responses": _responses(
                    {
                        "type": "object",
                        "properties": {
                            "token": {"type": "string"},
                            "expires_in": {"type": "integer"},
                        },
                    },
                    400,
                    403,
                    413,
                    415,
                    429,
                    502,
                    504,
                ),
            }
        },
        "/payments": {
            "post": {
                "summary": "Start a WeChat Pay payment; answers the wx.requestPayment parameters",
                "security": [{"shopper": []}],
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["paymentMethod"],
                        "properties": {
                            "paymentMethod": {
                                "type": "object",
                                "required": ["type"],
                                "properties": {
                                    "type": {"const": "wechatpayMiniProgram"},
                                    "openid": {"type": "string"},
                                },
                            },
                            "reference": {"type": "string", "maxLength": 80},
                            "amount": _AMOUNT,
                        },
                    }
                ),
                "responses": _responses(_PAYMENT, 400, 401, 409, 413, 415, 429, 502, 503, 504),
            }
        },
        "/payments/details": {
            "post": {
                "summary": "Submit wx.requestPayment's res.errMsg; answers the payment's state",
                "security": [{"shopper": []}],
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["details"],
                        "properties": {
                            "reference": {"type": "string"},
                            "paymentData": {"type": "string"},
                            "details": {
                                "type": "object",
                                "required": ["paymentStatus"],
                                "properties": {
                                    "paymentStatus": {
                                        "type": "string",
                                        "pattern": "^requestPayment:",
                                    }
                                },
                            },
                        },
                    }
                ),
                "responses": _responses(
                    _DETAILS_RESULT, 400, 401, 404, 409, 413, 415, 429, 502, 503, 504
                ),
            }
        },
        "/payments/{reference}": {
            "get": {
                "summary": "A payment's state, amount, conflicts and history",
                "security": [{"shopper": []}, {"admin": []}],
                "parameters": [
                    {
                        "name": "reference",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": _responses({"type": "object"}, 401, 404),
            }
        },
        "/webhooks/adyen": {
            "post": {
                "summary": "Adyen standard notifications (Basic auth + HMAC)",
                "security": [{"adyenBasic": []}],
                "requestBody": _json_body(
                    {
                        "type": "object",
                        "required": ["live", "notificationItems"],
                        "properties": {
                            "live": {"type": "string", "enum": ["true", "false"]},
                            "notificationItems": {"type": "array", "items": {"type": "object"}},
                        },
                    }
                ),
                "responses": {
                    "200": {
                        "description": "Stored; body is [accepted]",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_responses(None, 400, 401, 413),
                },
            }
        },
        "/admin/stale": {
            "get": {
                "summary": "Payments stuck in Created or Pending",
                "security": [{"admin": []}],
                "responses": _responses({"type": "object"}, 404),
            }
        },
        "/admin/notifications": {
            "get": {
                "summary": "Received webhook items and their processing status",
                "security": [{"admin": []}],
                "parameters": [{"name": "status", "in": "query", "schema": {"type": "string"}}],
                "responses": _responses({"type": "object"}, 404),
            }
        },
        "/health": {"get": {"summary": "Liveness", "responses": _responses({"type": "object"})}},
    }


def openapi_document(root_path: str = "") -> dict[str, Any]:
    """The document, with ``servers`` pointing at the mount prefix."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "miniprogram-pay", "version": "1"},
        "servers": [{"url": root_path or "/"}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "shopper": {"type": "http", "scheme": "bearer"},
                "admin": {"type": "apiKey", "in": "header", "name": "X-Admin-Key"},
                "adyenBasic": {"type": "http", "scheme": "basic"},
            }
        },
    }
