"""Thin endpoints: parse, call a service, render."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from miniprogram_pay.adyen.webhooks import check_basic_auth, parse_notification_body, verify_batch
from miniprogram_pay.errors import AuthenticationError, NotFoundError
from miniprogram_pay.http import schemas
from miniprogram_pay.http.openapi import openapi_document
from miniprogram_pay.services.payments import mask
from miniprogram_pay.storage.records import NotificationRecord

if TYPE_CHECKING:
    from miniprogram_pay.app import MiniProgramPay

__all__ = ["routes"]

logger = logging.getLogger("miniprogram_pay.http")


def _plugin(request: Request) -> MiniProgramPay:
    plugin: MiniProgramPay = request.scope["miniprogram_pay"]
    return plugin


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _shopper(request: Request) -> str:
    token = _bearer(request)
    if token is None:
        raise AuthenticationError(
            "send Authorization: Bearer <token> from POST /session", code="unauthenticated"
        )
    return _plugin(request).tokens.verify(token).openid


def _is_admin(request: Request) -> bool:
    key = _plugin(request).settings.admin_api_key
    given = request.headers.get("x-admin-key")
    return bool(key) and given is not None and key is not None and key.matches(given)


async def create_session(request: Request) -> Response:
    plugin = _plugin(request)
    plugin.limiter.check(request, "session")
    code = schemas.parse_session(await schemas.read_json(request, plugin.settings.max_body_bytes))
    shopper = await plugin.wechat.code_to_session(code)
    token, expires_in = plugin.tokens.issue(shopper.openid)
    logger.info("session opened for %s", mask(shopper.openid))
    return JSONResponse({"token": token, "expires_in": expires_in})


async def create_payment(request: Request) -> Response:
    plugin = _plugin(request)
    openid = _shopper(request)
    plugin.limiter.check(request, "payments")
    body = await schemas.read_json(request, plugin.settings.max_body_bytes)
    payment = await plugin.service.start_payment(openid, schemas.parse_payment(body, openid))
    return JSONResponse(schemas.payment_response(payment))


async def submit_details(request: Request) -> Response:
    plugin = _plugin(request)
    openid = _shopper(request)
    plugin.limiter.check(request, "payments")
    body = await schemas.read_json(request, plugin.settings.max_body_bytes)
    payment = await plugin.service.submit_details(openid, schemas.parse_details(body))
    return JSONResponse(schemas.details_response(payment))


async def payment_status(request: Request) -> Response:
    plugin = _plugin(request)
    admin = _is_admin(request)
    openid = None if admin else _shopper(request)
    found = await plugin.repository.status(request.path_params["reference"])
    if found is None or (openid is not None and found[0].openid != openid):
        raise NotFoundError("no such payment", code="payment_not_found")
    return JSONResponse(schemas.status_response(*found))


async def adyen_webhook(request: Request) -> Response:
    plugin = _plugin(request)
    settings = plugin.settings
    body = await schemas.read_body(request, settings.max_body_bytes)
    check_basic_auth(
        request.headers.get("authorization"),
        username=settings.webhook_username,
        password=settings.webhook_password,
    )
    batch = parse_notification_body(body)
    verify_batch(batch, plugin.hmac_keys)
    stored = await plugin.service.store_webhook(batch)
    # New items are leased to this request. A redelivered item not yet applied is
    # tried too: on PostgreSQL this request's store held its row lock, so the first
    # request's apply may have skipped it (SKIP LOCKED). Failed items keep their backoff.
    waiting = sorted({note.id for note in stored if note.status == "received"})
    # The items are committed: acknowledge now, apply right after the answer is sent.
    # A crash in between leaves them in the inbox: a worker loop takes them when the
    # lease ends.
    return PlainTextResponse("[accepted]", background=BackgroundTask(plugin.apply_stored, waiting))


async def stale_payments(request: Request) -> Response:
    plugin = _plugin(request)
    _require_admin(request)
    stale = await plugin.repository.stale_payments(
        older_than_seconds=plugin.settings.stale_after_seconds
    )
    return JSONResponse(
        {
            "olderThanSeconds": plugin.settings.stale_after_seconds,
            "payments": [
                {
                    "reference": p.reference,
                    "state": p.state.value,
                    "pspReference": p.psp_reference,
                    "updatedAt": p.updated_at.isoformat(),
                }
                for p in stale
            ],
        }
    )


async def notifications(request: Request) -> Response:
    plugin = _plugin(request)
    _require_admin(request)
    status = request.query_params.get("status")
    rows = await plugin.repository.notifications(status=status)
    return JSONResponse({"notifications": [_notification_json(n) for n in rows]})


def _notification_json(n: NotificationRecord) -> dict[str, Any]:
    return {
        "id": n.id,
        "status": n.status,
        "detail": n.detail,
        "merchantReference": n.merchant_reference,
        "eventCode": n.event_code,
        "success": n.success,
        "deliveries": n.deliveries,
        "attempts": n.attempts,
    }


def _require_admin(request: Request) -> None:
    if not _is_admin(request):
        raise NotFoundError("not found", code="not_found")


async def health(request: Request) -> Response:
    plugin = _plugin(request)
    body: dict[str, Any] = {"status": "ok"}
    if _is_admin(request):
        body["states"] = await plugin.repository.count_by_state()
        body["outbox"] = await plugin.repository.outbox_counts()
    return JSONResponse(body)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(request.scope.get("root_path", "")))


routes = [
    Route("/session", create_session, methods=["POST"], name="session"),
    Route("/payments", create_payment, methods=["POST"], name="payments"),
    Route("/payments/details", submit_details, methods=["POST"], name="payment_details"),
    Route("/payments/{reference:str}", payment_status, methods=["GET"], name="payment_status"),
    Route("/webhooks/adyen", adyen_webhook, methods=["POST"], name="adyen_webhook"),
    Route("/admin/stale", stale_payments, methods=["GET"], name="stale_payments"),
    Route("/admin/notifications", notifications, methods=["GET"], name="notifications"),
    Route("/health", health, methods=["GET"], name="health"),
    Route("/openapi.json", openapi, methods=["GET"], name="openapi"),
]
