"""Thin endpoints: parse, call a service, render; and each route's contract.

Every route is an ``ApiRoute``: a Starlette ``Route`` plus its ``Contract`` (the
request and answer models and the error codes the service can answer), which
``http/openapi.py`` turns into the OpenAPI document. Adding an endpoint: write
the endpoint, declare its models in ``http/schemas.py``, and add an ``ApiRoute``
to ``routes`` with the errors it raises; ``tests/http/test_openapi.py`` fails if
a code the package raises appears on no route.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from miniprogram_pay.adyen.webhooks import check_basic_auth, parse_notification_body, verify_batch
from miniprogram_pay.domain.orders import Step
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import (
    AuthenticationError,
    MiniProgramPayError,
    NotFoundError,
    NotInstalledError,
    RequestError,
    SignatureError,
    StorageError,
    WebhookAuthError,
    WorkersUnavailableError,
)
from miniprogram_pay.http import schemas
from miniprogram_pay.http.bodies import read_body, read_json
from miniprogram_pay.http.context import Plugin
from miniprogram_pay.observability.metrics import WebhookOutcome, WebhookReason
from miniprogram_pay.services import recovery
from miniprogram_pay.services.payments import DetailsInput, PaidAttempt, PaymentInput, mask
from miniprogram_pay.services.readiness import check_readiness
from miniprogram_pay.services.refunds import can_refund, ledger_of
from miniprogram_pay.storage.orders import AttemptStatus, OrderStatus
from miniprogram_pay.storage.records import (
    EventRecord,
    OutboxRecord,
    PaymentRecord,
    Refund,
    StoredNotification,
    TransitionRecord,
)

__all__ = ["ApiRoute", "Contract", "routes"]

logger = logging.getLogger("miniprogram_pay.http")

# A scrape must not hang on a slow database: the counters are served without fresh counts.
METRICS_COUNTS_TIMEOUT_SECONDS = 5.0
MISSING_PROMETHEUS = "metrics need prometheus-client: pip install 'miniprogram-pay[metrics]'"

Errors = Mapping[int, Sequence[str]]


@dataclass(frozen=True)
class Contract:
    """What a route takes and answers, for the OpenAPI document.

    ``errors`` lists, by HTTP status, the codes the endpoint's services raise;
    the request model's own refusals (400) are added from the model.
    """

    summary: str
    request: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    answer_text: str | None = None  # a text/plain answer instead of a model
    security: Sequence[str] = ()
    errors: Errors = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)  # name -> description


class ApiRoute(Route):
    """A Starlette route with its contract."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]],
        *,
        method: str,
        name: str,
        contract: Contract,
    ) -> None:
        super().__init__(path, endpoint, methods=[method], name=name)
        self.method = method
        self.contract = contract


# -- the error codes shared by several routes -----------------------------------------

JSON_BODY: Errors = {
    400: ("malformed_json",),
    413: ("payload_too_large",),
    415: ("unsupported_media_type",),
}
SHOPPER: Errors = {401: ("unauthenticated", "invalid_token", "session_expired")}
LIMITED: Errors = {429: ("rate_limited",)}
STORAGE: Errors = {503: ("storage_unavailable",)}
ADMIN: Errors = {404: ("not_found",)}
ADYEN: Errors = {
    409: ("adyen_conflict",),
    502: ("adyen_rejected", "adyen_auth_failed", "adyen_bad_response", "adyen_error"),
    503: ("adyen_unavailable",),
    504: ("adyen_timeout",),
}
WECHAT: Errors = {
    400: ("invalid_code", "wechat_invalid_code", "wechat_code_used"),
    403: ("wechat_user_blocked",),
    429: ("wechat_rate_limited",),
    502: ("wechat_busy", "wechat_unavailable", "wechat_bad_response", "wechat_error"),
    504: ("wechat_unavailable",),
}


def merged(*parts: Errors) -> dict[int, tuple[str, ...]]:
    """Error tables joined status by status (codes kept in order, once each)."""
    out: dict[int, tuple[str, ...]] = {}
    for part in parts:
        for status, codes in part.items():
            out[status] = tuple(dict.fromkeys((*out.get(status, ()), *codes)))
    return out


# -- who is asking ---------------------------------------------------------------------


def _plugin(request: Request) -> Plugin:
    plugin: Plugin = request.scope["miniprogram_pay"]
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


def _is_admin(request: Request, *, bearer: bool = False) -> bool:
    """The admin key in ``X-Admin-Key`` (or, with ``bearer``, as ``Authorization: Bearer``)."""
    key = _plugin(request).settings.admin_api_key
    given = request.headers.get("x-admin-key")
    if given is None and bearer:
        given = _bearer(request)
    return bool(key) and given is not None and key is not None and key.matches(given)


def _require_admin(request: Request) -> None:
    if not _is_admin(request):
        raise NotFoundError("not found", code="not_found")


def _json(answer: BaseModel) -> JSONResponse:
    return JSONResponse(schemas.render(answer))


# -- shopper endpoints -------------------------------------------------------------------


async def create_session(request: Request) -> Response:
    plugin = _plugin(request)
    plugin.limiter.check(request, "session")
    body = await read_json(request, plugin.settings.max_body_bytes)
    code = schemas.parse(schemas.SessionRequest, body).code
    shopper = await plugin.wechat.code_to_session(code)
    token, expires_in = plugin.tokens.issue(shopper.openid)
    logger.info("session opened for %s", mask(shopper.openid))
    return _json(schemas.SessionAnswer(token=token, expires_in=expires_in))


async def create_payment(request: Request) -> Response:
    plugin = _plugin(request)
    openid = _shopper(request)
    plugin.limiter.check(request, "payments")
    body = await read_json(request, plugin.settings.max_body_bytes)
    parsed = schemas.parse(schemas.PaymentRequest, body, openid=openid)
    amount = parsed.amount.to_amount() if parsed.amount is not None else None
    given = PaymentInput(body=body, reference=parsed.reference, amount=amount)
    return _json(payment_answer(await plugin.service.start_payment(openid, given)))


async def submit_details(request: Request) -> Response:
    plugin = _plugin(request)
    openid = _shopper(request)
    plugin.limiter.check(request, "payments")
    body = await read_json(request, plugin.settings.max_body_bytes)
    parsed = schemas.parse(schemas.DetailsRequest, body)
    given = DetailsInput(
        reference=parsed.reference,
        payment_data=parsed.payment_data,
        payment_status=parsed.details.payment_status,
    )
    return _json(details_answer(await plugin.service.submit_details(openid, given)))


async def payment_status(request: Request) -> Response:
    plugin = _plugin(request)
    admin = _is_admin(request)
    openid = None if admin else _shopper(request)
    reference = schemas.path_reference(request.path_params["reference"])
    found = await plugin.storage.orders.status(reference)
    if found is None or (openid is not None and found.order.openid != openid):
        raise NotFoundError("no such payment", code="payment_not_found")
    return _json(status_answer(found))


async def refund_payment(request: Request) -> Response:
    plugin = _plugin(request)
    _require_admin(request)
    reference = schemas.path_reference(request.path_params["reference"])
    body = await read_json(request, plugin.settings.max_body_bytes)
    parsed = schemas.parse(schemas.RefundRequest, body)
    refund = await plugin.refunds.refund(
        reference,
        parsed.amount.to_amount() if parsed.amount is not None else None,
        reason=parsed.reason,
        idempotency_key=parsed.idempotency_key,
    )
    # The refund is of the attempt that pays the order (the reference may be the order's).
    found = await plugin.storage.payments.status(refund.payment_reference)
    assert found is not None  # the refund was just made of it
    payment, _, _, refunds = found
    answer = schemas.RefundAnswer(
        payment_reference=refund.payment_reference,
        refund=refund_entry(next((r for r in refunds if r.id == refund.id), refund)),
        refunds=refunds_body(payment, refunds),
    )
    return JSONResponse(schemas.render(answer), status_code=201)


# -- Adyen -----------------------------------------------------------------------------


async def adyen_webhook(request: Request) -> Response:
    plugin = _plugin(request)
    arrived = time.perf_counter()
    try:
        stored = await _store_webhook(plugin, request)
    except MiniProgramPayError as exc:
        plugin.metrics.webhook_received(*_refusal(exc))
        raise
    plugin.metrics.webhook_accepted(time.perf_counter() - arrived)
    _count_items(plugin, stored)
    # New items are leased to this request. A redelivered item not yet applied is
    # tried too: on PostgreSQL this request's store held its row lock, so the first
    # request's apply may have skipped it (SKIP LOCKED). Failed items keep their backoff.
    waiting = sorted({note.id for note in stored if note.status == "received"})
    # The items are committed: acknowledge now, apply right after the answer is sent.
    # A crash in between leaves them in the inbox: a worker loop takes them when the
    # lease ends.
    return PlainTextResponse("[accepted]", background=BackgroundTask(plugin.apply_stored, waiting))


async def _store_webhook(plugin: Plugin, request: Request) -> list[StoredNotification]:
    """Read, authenticate, parse, verify and store one delivery; the items as stored."""
    settings = plugin.settings
    body = await read_body(request, settings.max_body_bytes)
    check_basic_auth(
        request.headers.get("authorization"),
        username=settings.webhook_username,
        password=settings.webhook_password,
    )
    batch = parse_notification_body(body)
    verify_batch(batch, plugin.hmac_keys)
    return await plugin.service.store_webhook(batch)


def _refusal(exc: MiniProgramPayError) -> tuple[WebhookOutcome, WebhookReason]:
    """How a refused or failed delivery counts (a whole request: none of its items is trusted)."""
    if isinstance(exc, WebhookAuthError):
        return WebhookOutcome.REJECTED, WebhookReason.BASIC_AUTH
    if isinstance(exc, SignatureError):
        return WebhookOutcome.REJECTED, WebhookReason.HMAC
    if isinstance(exc, RequestError):
        return WebhookOutcome.REJECTED, WebhookReason.BAD_BODY
    return WebhookOutcome.FAILED, WebhookReason.STORAGE


def _count_items(plugin: Plugin, stored: Sequence[StoredNotification]) -> None:
    new = [note for note in stored if note.new]
    foreign = sum(note.status == "ignored" for note in new)
    metrics = plugin.metrics
    metrics.webhook_received(WebhookOutcome.STORED, count=len(new) - foreign)
    metrics.webhook_received(WebhookOutcome.DUPLICATE, count=len(stored) - len(new))
    metrics.webhook_received(WebhookOutcome.REJECTED, WebhookReason.FOREIGN_MERCHANT, count=foreign)


# -- operations ------------------------------------------------------------------------


async def stale_payments(request: Request) -> Response:
    plugin = _plugin(request)
    _require_admin(request)
    older_than = plugin.settings.stale_after_seconds
    stale = await plugin.storage.payments.stale(older_than_seconds=older_than)
    payments = [
        schemas.StalePayment(
            reference=p.reference,
            state=p.state,
            psp_reference=p.psp_reference,
            updated_at=p.updated_at,
        )
        for p in stale
    ]
    return _json(schemas.StaleAnswer(older_than_seconds=older_than, payments=payments))


async def requeue_notifications(request: Request) -> Response:
    plugin = _plugin(request)
    _require_admin(request)
    body = await read_json(request, plugin.settings.max_body_bytes)
    parsed = schemas.parse(schemas.NotificationRequeueRequest, body)
    result = await recovery.requeue_notifications(
        plugin.storage,
        status=parsed.status,
        ids=parsed.ids,
        merchant_account=plugin.settings.adyen_merchant_account,
        live=plugin.settings.is_live,
    )
    plugin.workers.kick()
    kept = [schemas.KeptNotification(id=i, detail=detail) for i, detail in result.kept]
    return _json(schemas.NotificationRequeueAnswer(requeued=result.requeued, kept=kept))


async def requeue_outbox(request: Request) -> Response:
    plugin = _plugin(request)
    _require_admin(request)
    body = await read_json(request, plugin.settings.max_body_bytes)
    parsed = schemas.parse(schemas.OutboxRequeueRequest, body)
    rows = await recovery.requeue_outbox(plugin.storage, ids=parsed.ids)
    plugin.workers.kick()
    return _json(schemas.OutboxRequeueAnswer(requeued=[outbox_entry(row) for row in rows]))


async def health(request: Request) -> Response:
    """Liveness of the background loops for everyone; counts for monitoring with the key.

    A dead or stalled loop is a 503: the process answers requests, but stored
    webhooks or state changes would wait.
    """
    plugin = _plugin(request)
    loops = plugin.workers.loop_states()
    down = {name: state for name, state in loops.items() if state in ("stalled", "dead")}
    if down:
        listed = ", ".join(f"the {name} loop is {state}" for name, state in down.items())
        raise WorkersUnavailableError(f"background work is not running: {listed}")
    answer = schemas.HealthAnswer(status="ok", loops=loops)
    if _is_admin(request):
        answer = answer.model_copy(update=await _monitoring(plugin))
        answer = schemas.HealthAnswer.model_validate(schemas.render(answer))
    return _json(answer)


async def ready(request: Request) -> Response:
    """Readiness: the database answers, its schema is current, the loops are alive; else 503."""
    plugin = _plugin(request)
    found = await check_readiness(plugin.database, plugin.workers)
    return _json(
        schemas.ReadyAnswer(status="ready", schema_revision=found.schema, loops=found.loops)
    )


async def metrics(request: Request) -> Response:
    """Prometheus metrics; the storage counts are read from the database first."""
    plugin = _plugin(request)
    access = plugin.settings.metrics_access
    if access == "off" or (access == "admin" and not _is_admin(request, bearer=True)):
        raise NotFoundError("not found", code="not_found")
    if plugin.prometheus is None:
        raise NotInstalledError(MISSING_PROMETHEUS)
    try:
        async with asyncio.timeout(METRICS_COUNTS_TIMEOUT_SECONDS):
            await plugin.refresh_metrics()
    except (StorageError, TimeoutError):
        logger.warning("metrics served without fresh storage counts: the database did not answer")
    body, content_type = plugin.prometheus.exposition(request.headers.get("accept"))
    return Response(body, headers={"content-type": content_type})


async def _monitoring(plugin: Plugin) -> dict[str, Any]:
    storage = plugin.storage
    older_than = plugin.settings.stale_after_seconds
    return {
        "states": await storage.payments.count_by_state(),
        "outbox": await storage.outbox.counts(),
        "notifications": await storage.inbox.counts(),
        "stale_payments": await storage.payments.count_stale(older_than_seconds=older_than),
        "deliveries_in_flight": plugin.workers.deliveries_in_flight,
    }


# -- rendering answers -----------------------------------------------------------------


def payment_answer(paid: PaidAttempt) -> schemas.PaymentAnswer:
    """POST /payments: the seed's shape (``paymentData``, ``redirect.data``) plus ``action``."""
    payment = paid.payment
    can_pay = payment.wechat_params is not None and payment.state is not PaymentState.AUTHORISED
    redirect = schemas.Redirect.model_validate({"data": payment.wechat_params}) if can_pay else None
    return schemas.PaymentAnswer(
        reference=payment.reference,
        order_reference=paid.order.reference,
        attempt=payment.attempt,
        # A paid order answers with its kept attempt; any other with the attempt to pay.
        order_state=PaymentState.AUTHORISED if paid.step is Step.PAID else payment.state,
        state=payment.state,
        result_code=payment.result_code,
        psp_reference=payment.psp_reference,
        amount=schemas.AmountBody.of(payment.amount),
        payment_data=payment.payment_data,
        redirect=redirect,
        action=payment.action,
    )


def outbox_entry(row: OutboxRecord) -> schemas.OutboxEntry:
    return schemas.OutboxEntry.model_validate(
        {
            "id": row.id,
            "event_id": row.event_id,
            "reference": row.reference,
            "from": row.from_state,
            "to": row.to_state,
            "status": row.status,
            "attempts": row.attempts,
            "last_error": row.last_error,
            "created_at": row.created_at,
            "next_attempt_at": row.next_attempt_at,
            "delivered_at": row.delivered_at,
            "requeued_at": row.requeued_at,
            "kind": row.kind,
            "refund": row.refund.to_json() if row.refund else None,
        }
    )


def _details_fields(payment: PaymentRecord) -> dict[str, Any]:
    return {
        "reference": payment.reference,
        "state": payment.state,
        "result_code": payment.result_code,
        "psp_reference": payment.psp_reference,
        "refusal_reason": payment.refusal_reason,
    }


def details_answer(payment: PaymentRecord) -> schemas.DetailsAnswer:
    return schemas.DetailsAnswer(**_details_fields(payment))


def history_entry(t: TransitionRecord) -> schemas.HistoryEntry:
    return schemas.HistoryEntry.model_validate(
        {
            "from": t.from_state,
            "to": t.to_state,
            "source": t.source,
            "event": t.event_kind,
            "at": t.at,
        }
    )


def refund_entry(refund: Refund) -> schemas.RefundEntry:
    amount = refund.amount
    return schemas.RefundEntry(
        reference=refund.reference,
        psp_reference=refund.psp_reference,
        amount=schemas.MoneyBody.of(amount.value, amount.currency) if amount else None,
        state=refund.state,
        reason=refund.reason,
        refusal_reason=refund.refusal_reason,
        external=refund.external,
        disputed=refund.disputed,
        created_at=refund.created_at,
        updated_at=refund.updated_at,
        history=[
            schemas.RefundHistoryEntry.model_validate(
                {
                    "from": h.from_state,
                    "to": h.to_state,
                    "source": h.source,
                    "event": h.kind,
                    "success": h.success,
                    "outcome": h.outcome,
                    "conflict": h.conflict,
                    "at": h.at,
                }
            )
            for h in refund.history
        ],
    )


def refunds_body(payment: PaymentRecord, refunds: list[Refund]) -> schemas.RefundsBody:
    """The ledger of ``payment``'s refunds; nothing is refundable unless it is Authorised."""
    currency = payment.amount.currency
    ledger = ledger_of(payment, refunds)

    def money(value: int) -> schemas.MoneyBody:
        return schemas.MoneyBody.of(value, currency)

    return schemas.RefundsBody(
        refunded=money(ledger.refunded_value),
        pending=money(ledger.pending_value),
        returned=money(ledger.returned_value),
        refundable=money(ledger.refundable_value if can_refund(payment) else 0),
        disputed=ledger.disputed,
        items=[refund_entry(r) for r in refunds],
    )


def _conflicts(payment: PaymentRecord, events: list[EventRecord]) -> list[schemas.Conflict]:
    return [
        schemas.Conflict(
            kind=e.conflict,
            attempt=payment.reference,
            source=e.source,
            event=e.kind,
            success=e.success,
            at=e.at,
        )
        for e in events
        if e.conflict
    ]


def _event_entries(events: list[EventRecord]) -> list[schemas.EventEntry]:
    return [
        schemas.EventEntry(
            source=e.source, event=e.kind, success=e.success, outcome=e.outcome, at=e.at
        )
        for e in events
    ]


def attempt_entry(attempt: AttemptStatus, kept: bool) -> schemas.AttemptEntry:
    payment = attempt.payment
    return schemas.AttemptEntry(
        **_details_fields(payment),
        number=payment.attempt,
        kept=kept,
        created_at=payment.created_at,
        updated_at=payment.updated_at,
        conflicts=_conflicts(payment, attempt.events),
        history=[history_entry(t) for t in attempt.history],
        events=_event_entries(attempt.events),
        refunds=refunds_body(payment, attempt.refunds),
    )


def status_answer(found: OrderStatus) -> schemas.StatusAnswer:
    view, shown = found.view, found.shown
    kept = view.kept.number if view.kept else None
    return schemas.StatusAnswer(
        **{
            **_details_fields(shown.payment),
            "reference": found.order.reference,
            "state": view.state,
        },
        amount=schemas.AmountBody.of(found.order.amount),
        created_at=found.order.created_at,
        updated_at=max(a.payment.updated_at for a in found.attempts),
        conflicts=[c for a in found.attempts for c in _conflicts(a.payment, a.events)],
        history=[history_entry(t) for t in shown.history],
        events=_event_entries(shown.events),
        attempts=[attempt_entry(a, a.payment.attempt == kept) for a in found.attempts],
        refunds=refunds_body(shown.payment, shown.refunds),
    )


# -- the routes ------------------------------------------------------------------------

Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


def _admin_requeue(
    path: str,
    endpoint: Endpoint,
    *,
    summary: str,
    request: type[BaseModel],
    answer: type[BaseModel],
) -> ApiRoute:
    """An admin POST that puts parked work back in line; named after its endpoint."""
    return ApiRoute(
        path,
        endpoint,
        method="POST",
        name=endpoint.__name__,
        contract=Contract(
            summary=summary,
            request=request,
            answer=answer,
            security=("admin",),
            errors=merged(JSON_BODY, STORAGE, ADMIN),
        ),
    )


routes = [
    ApiRoute(
        "/session",
        create_session,
        method="POST",
        name="session",
        contract=Contract(
            summary="Exchange a wx.login() code for a shopper token",
            request=schemas.SessionRequest,
            answer=schemas.SessionAnswer,
            errors=merged(JSON_BODY, LIMITED, WECHAT),
        ),
    ),
    ApiRoute(
        "/payments",
        create_payment,
        method="POST",
        name="payments",
        contract=Contract(
            summary="Start a WeChat Pay payment; answers the wx.requestPayment parameters",
            request=schemas.PaymentRequest,
            answer=schemas.PaymentAnswer,
            security=("shopper",),
            errors=merged(
                JSON_BODY,
                SHOPPER,
                LIMITED,
                STORAGE,
                ADYEN,
                {
                    400: ("missing_amount", "amount_out_of_range", "client_amount_refused"),
                    409: ("reference_conflict",),
                    502: ("order_error",),
                },
            ),
        ),
    ),
    ApiRoute(
        "/payments/details",
        submit_details,
        method="POST",
        name="payment_details",
        contract=Contract(
            summary="Submit wx.requestPayment's res.errMsg; answers the payment's state",
            request=schemas.DetailsRequest,
            answer=schemas.DetailsAnswer,
            security=("shopper",),
            errors=merged(
                JSON_BODY,
                SHOPPER,
                LIMITED,
                STORAGE,
                ADYEN,
                {404: ("payment_not_found",), 409: ("payment_not_started",)},
            ),
        ),
    ),
    # ``path``: a reference may hold "/", sent as is or as %2F (encodeURIComponent).
    ApiRoute(
        "/payments/{reference:path}",
        payment_status,
        method="GET",
        name="payment_status",
        contract=Contract(
            summary="A payment's state, amount, conflicts and history",
            answer=schemas.StatusAnswer,
            security=("shopper", "admin"),
            errors=merged(
                SHOPPER,
                STORAGE,
                {400: ("invalid_reference",), 404: ("payment_not_found",)},
            ),
        ),
    ),
    ApiRoute(
        "/admin/payments/{reference:path}/refunds",
        refund_payment,
        method="POST",
        name="refund_payment",
        contract=Contract(
            summary="Refund a payment, in full or in part; answers the refund as Adyen took it",
            request=schemas.RefundRequest,
            answer=schemas.RefundAnswer,
            security=("admin",),
            errors=merged(
                JSON_BODY,
                STORAGE,
                ADMIN,
                ADYEN,
                {
                    400: (
                        "invalid_reference",
                        "refund_currency_mismatch",
                        "invalid_refund_amount",
                        "invalid_refund_reason",
                        "invalid_idempotency_key",
                    ),
                    404: ("payment_not_found",),
                    409: (
                        "payment_not_refundable",
                        "refund_exceeds_refundable",
                        "refund_limit_reached",
                        "refund_window_closed",
                        "refund_under_review",
                        "idempotency_key_reused",
                    ),
                },
            ),
        ),
    ),
    ApiRoute(
        "/webhooks/adyen",
        adyen_webhook,
        method="POST",
        name="adyen_webhook",
        contract=Contract(
            summary="Adyen standard notifications (Basic auth + HMAC); stored, then [accepted]",
            request=schemas.NotificationRequest,
            answer_text="[accepted]",
            security=("adyenBasic",),
            errors=merged(
                STORAGE,
                {
                    400: ("invalid_notification",),
                    401: ("webhook_auth_failed", "webhook_signature_invalid"),
                    413: ("payload_too_large",),
                },
            ),
        ),
    ),
    ApiRoute(
        "/admin/stale",
        stale_payments,
        method="GET",
        name="stale_payments",
        contract=Contract(
            summary="Payments stuck in Created or Pending",
            answer=schemas.StaleAnswer,
            security=("admin",),
            errors=merged(STORAGE, ADMIN),
        ),
    ),
    _admin_requeue(
        "/admin/notifications/requeue",
        requeue_notifications,
        summary="Apply parked webhook items again, or ignored ones that are ours now",
        request=schemas.NotificationRequeueRequest,
        answer=schemas.NotificationRequeueAnswer,
    ),
    _admin_requeue(
        "/admin/outbox/requeue",
        requeue_outbox,
        summary="Offer parked state changes to on_state_change again",
        request=schemas.OutboxRequeueRequest,
        answer=schemas.OutboxRequeueAnswer,
    ),
    ApiRoute(
        "/health",
        health,
        method="GET",
        name="health",
        contract=Contract(
            summary="Liveness of the background loops; with X-Admin-Key, counts for monitoring",
            answer=schemas.HealthAnswer,
            errors=merged(STORAGE, {503: ("workers_unavailable",)}),
        ),
    ),
    ApiRoute(
        "/ready",
        ready,
        method="GET",
        name="ready",
        contract=Contract(
            summary="Readiness: the database answers, its schema is current, the loops are alive",
            answer=schemas.ReadyAnswer,
            errors=merged(STORAGE, {503: ("schema_outdated", "workers_unavailable")}),
        ),
    ),
    ApiRoute(
        "/metrics",
        metrics,
        method="GET",
        name="metrics",
        contract=Contract(
            summary="Prometheus metrics (text exposition format); the admin key by default",
            answer_text="the Prometheus text format",
            security=("admin", "adminBearer"),
            errors=merged(ADMIN, {501: ("not_installed",)}),
        ),
    ),
]
