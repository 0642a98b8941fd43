"""The admin API a back office is built on: payments, one payment's story, paged inbox and outbox.

Every route needs the admin key (``X-Admin-Key``) and answers 404 without it, as
the other admin routes do. Lists are newest first, in keyset pages (``limit``,
then ``cursor`` = the previous page's ``nextCursor``); a filter value the list
does not know is a 400 naming the values it takes. The reads are
``storage.admin.AdminReads``: one snapshot each, nothing written.

Example::

    GET /admin/payments?state=Pending&createdFrom=2026-12-01&limit=20
    GET /admin/payments?hasRefunds=true        (those with a refund)
    GET /admin/payments?cursor=1234            (the next page)
    GET /admin/payments/order-1001             (everything about one payment)
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import NotFoundError
from miniprogram_pay.http import schemas
from miniprogram_pay.http.queries import PAGING, Query, cursor_of
from miniprogram_pay.http.routes import (
    ADMIN,
    STORAGE,
    ApiRoute,
    Contract,
    Endpoint,
    Errors,
    _json,
    _plugin,
    _require_admin,
    history_entry,
    merged,
    outbox_entry,
    refunds_body,
)
from miniprogram_pay.storage.admin import (
    InboxRecord,
    PaymentFilter,
    PaymentStory,
    PaymentSummary,
)
from miniprogram_pay.storage.records import PaymentRecord

__all__ = ["admin_routes"]

STATES = tuple(state.value for state in PaymentState)
PAYMENT_FILTERS = {
    "state": "One of " + ", ".join(STATES) + ".",
    "createdFrom": "Created at or after (ISO 8601 date or date-time; UTC unless an offset).",
    "createdBefore": "Created before (ISO 8601 date or date-time; UTC unless an offset).",
    "referencePrefix": "The reference starts with it (case-sensitive).",
    "hasConflicts": "true: only payments with conflicting events; false: only without.",
    "hasRefunds": "true: only payments with a refund (any state, the Customer Area's too); "
    "false: only without.",
}
PAGE_QUERY = {
    "limit": "Rows per page, 1-200 (default 50).",
    "cursor": "The nextCursor of the previous page.",
}
LIST_ERRORS = merged(STORAGE, ADMIN, {400: ("invalid_filter", "invalid_page")})


async def admin_payments(request: Request) -> Response:
    plugin = _plugin(request)
    _require_admin(request)
    query = Query(request.query_params, (*PAYMENT_FILTERS, *PAGING))
    state = query.choice("state", STATES)
    where = PaymentFilter(
        state=PaymentState(state) if state is not None else None,
        created_from=query.moment("createdFrom"),
        created_before=query.moment("createdBefore"),
        reference_prefix=query.prefix("referencePrefix"),
        has_conflicts=query.boolean("hasConflicts"),
        has_refunds=query.boolean("hasRefunds"),
    )
    page = await plugin.admin.payments(where, before_id=query.cursor(), limit=query.limit())
    return _json(
        schemas.PaymentsAnswer(
            payments=[payment_summary(p) for p in page.items],
            next_cursor=cursor_of(page.next_before_id),
        )
    )


async def admin_payment_story(request: Request) -> Response:
    plugin = _plugin(request)
    _require_admin(request)
    reference = schemas.path_reference(request.path_params["reference"])
    story = await plugin.admin.story(reference)
    if story is None:
        raise NotFoundError("no such payment", code="payment_not_found")
    return _json(story_answer(story))


def _listing(request: Request, statuses: tuple[str, ...]) -> tuple[Query, str | None, str | None]:
    """An inbox or outbox list's query: ``status``, ``reference`` and the page."""
    _require_admin(request)
    query = Query(request.query_params, ("status", "reference", *PAGING))
    status = schemas.query_status(query.text("status"), statuses)
    reference = query.text("reference")
    if reference is not None:
        reference = schemas.path_reference(reference)
    return query, status, reference


async def notifications(request: Request) -> Response:
    plugin = _plugin(request)
    query, status, reference = _listing(request, schemas.NOTIFICATION_STATUSES)
    page = await plugin.admin.notifications(
        status=status, reference=reference, before_id=query.cursor(), limit=query.limit()
    )
    return _json(
        schemas.NotificationsAnswer(
            notifications=[notification_entry(n) for n in page.items],
            next_cursor=cursor_of(page.next_before_id),
        )
    )


async def outbox(request: Request) -> Response:
    plugin = _plugin(request)
    query, status, reference = _listing(request, schemas.OUTBOX_STATUSES)
    page = await plugin.admin.outbox(
        status=status, reference=reference, before_id=query.cursor(), limit=query.limit()
    )
    return _json(
        schemas.OutboxAnswer(
            outbox=[outbox_entry(row) for row in page.items],
            next_cursor=cursor_of(page.next_before_id),
        )
    )


# -- rendering answers -----------------------------------------------------------------


def _summary_fields(p: PaymentSummary | PaymentRecord) -> dict[str, object]:
    return {
        "reference": p.reference,
        "state": p.state,
        "amount": schemas.AmountBody.of(p.amount),
        "psp_reference": p.psp_reference,
        "result_code": p.result_code,
        "conflicts": p.conflicts,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    }


def payment_summary(p: PaymentSummary) -> schemas.PaymentSummary:
    return schemas.PaymentSummary.model_validate(_summary_fields(p))


def _amount(value: int | None, currency: str | None) -> schemas.WebhookAmount | None:
    if value is None and currency is None:
        return None
    return schemas.WebhookAmount(value=value, currency=currency)


def notification_entry(n: InboxRecord) -> schemas.StoredNotification:
    return schemas.StoredNotification(
        id=n.id,
        status=n.status,
        detail=n.detail,
        merchant_reference=n.merchant_reference,
        event_code=n.event_code,
        success=n.success,
        deliveries=n.deliveries,
        attempts=n.attempts,
        psp_reference=n.psp_reference,
        amount=_amount(n.amount_value, n.amount_currency),
        received_at=n.received_at,
        next_attempt_at=n.next_attempt_at,
        applied_at=n.applied_at,
    )


def story_answer(story: PaymentStory) -> schemas.PaymentStoryAnswer:
    p = story.payment
    payment = schemas.StoryPayment.model_validate(
        {
            **_summary_fields(p),
            "refusal_reason": p.refusal_reason,
        }
    )
    events = [
        schemas.StoryEvent(
            key=e.key,
            source=e.source,
            event=e.kind,
            success=e.success,
            outcome=e.outcome,
            conflict=e.conflict,
            reason=e.reason,
            psp_reference=e.psp_reference,
            amount=_amount(e.amount_value, e.amount_currency),
            at=e.at,
        )
        for e in story.events
    ]
    return schemas.PaymentStoryAnswer(
        payment=payment,
        transitions=[history_entry(t) for t in story.transitions],
        events=events,
        webhooks=[notification_entry(n) for n in story.webhooks],
        deliveries=[outbox_entry(row) for row in story.deliveries],
        refunds=refunds_body(p, story.refunds),
    )


# -- the routes ------------------------------------------------------------------------


def _admin_get(
    path: str,
    endpoint: Endpoint,
    *,
    summary: str,
    answer: type[BaseModel],
    errors: Errors,
    query: Mapping[str, str] | None = None,
) -> ApiRoute:
    """A GET under the admin key, named after its endpoint."""
    contract = Contract(
        summary=summary, answer=answer, security=("admin",), errors=errors, query=query or {}
    )
    return ApiRoute(path, endpoint, method="GET", name=endpoint.__name__, contract=contract)


LIST_QUERY = {
    "reference": "Only those of this payment reference.",
    **PAGE_QUERY,
}

admin_routes = [
    _admin_get(
        "/admin/payments",
        admin_payments,
        summary="Payments, newest first, by state, creation date, reference prefix, conflicts, "
        "refunds",
        answer=schemas.PaymentsAnswer,
        errors=LIST_ERRORS,
        query={**PAYMENT_FILTERS, **PAGE_QUERY},
    ),
    _admin_get(
        "/admin/payments/{reference:path}",
        admin_payment_story,
        summary="One payment's whole story: transitions, events, webhook items, refunds, "
        "deliveries",
        answer=schemas.PaymentStoryAnswer,
        errors=merged(STORAGE, ADMIN, {400: ("invalid_reference",), 404: ("payment_not_found",)}),
    ),
    _admin_get(
        "/admin/notifications",
        notifications,
        summary="Received webhook items and their processing status, newest first",
        answer=schemas.NotificationsAnswer,
        errors=merged(LIST_ERRORS, {400: ("invalid_status", "invalid_reference")}),
        query={"status": ", ".join(schemas.NOTIFICATION_STATUSES), **LIST_QUERY},
    ),
    _admin_get(
        "/admin/outbox",
        outbox,
        summary="State changes for the host (on_state_change) and their delivery, newest first",
        answer=schemas.OutboxAnswer,
        errors=merged(LIST_ERRORS, {400: ("invalid_status", "invalid_reference")}),
        query={"status": ", ".join(schemas.OUTBOX_STATUSES), **LIST_QUERY},
    ),
]
