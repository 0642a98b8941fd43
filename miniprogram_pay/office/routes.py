"""The back office's pages, under ``/admin/office`` of the plugin: server-rendered, no build step.

``GET /admin/office`` lists payments (the admin API's filters, its pages) beside
the inbox and outbox at a glance; ``/admin/office/payments/{reference}`` is one
payment's time line with its state diagram and its refunds; ``/admin/office/requeue``
asks to confirm, then requeues parked items; ``/admin/office/refund`` does the same
for a refund (``refunds.py``). Every page needs a signed-in session (``auth.py``);
without ``ADMIN_API_KEY`` configured there is no back office (404).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from miniprogram_pay.domain import TRANSITIONS, PaymentState
from miniprogram_pay.errors import (
    InvalidQueryError,
    MiniProgramPayError,
    NotFoundError,
    NotInstalledError,
)
from miniprogram_pay.http import schemas
from miniprogram_pay.http.bodies import read_body
from miniprogram_pay.http.context import Plugin
from miniprogram_pay.http.queries import PAGING, Query
from miniprogram_pay.http.routes import _is_admin, _plugin
from miniprogram_pay.office.auth import COOKIE, SESSION_SECONDS, OfficeSessions, same_site
from miniprogram_pay.office.refunds import RefundPages, refund_outcome, refunds_panel
from miniprogram_pay.office.timeline import path_taken, timeline
from miniprogram_pay.pages import SECURITY_HEADERS, Pages, state_diagram
from miniprogram_pay.pages.rendering import MISSING_JINJA2
from miniprogram_pay.services import recovery
from miniprogram_pay.storage.admin import PaymentFilter

__all__ = ["OFFICE_PATH", "Office"]

PACKAGE = "miniprogram_pay.office"
OFFICE_PATH = "/admin/office"
STATIC_PATH = OFFICE_PATH + "/static"
STATES = tuple(state.value for state in PaymentState)
FILTERS = ("state", "createdFrom", "createdBefore", "referencePrefix", "hasConflicts", "hasRefunds")
KINDS = {"outbox": "state changes for on_state_change", "inbox": "webhook items"}
MAX_FORM_BYTES = 16_384
PAGE_ROWS = 25


class Office:
    """The back office's pages and their shared parts (templates, the state diagram)."""

    def __init__(self) -> None:
        self.pages = Pages(PACKAGE, static_name="office-static", static_path=STATIC_PATH)
        self.diagram = state_diagram("payment", list(STATES), TRANSITIONS)

    def routes(self) -> list[BaseRoute]:
        return [
            Route(OFFICE_PATH, self.home, methods=["GET"]),
            Route(OFFICE_PATH + "/login", self.login_page, methods=["GET"]),
            Route(OFFICE_PATH + "/login", self.login, methods=["POST"]),
            Route(OFFICE_PATH + "/logout", self.logout, methods=["POST"]),
            Route(OFFICE_PATH + "/payments/{reference:path}", self.payment, methods=["GET"]),
            Route(OFFICE_PATH + "/requeue", self.confirm_requeue, methods=["GET"]),
            Route(OFFICE_PATH + "/requeue", self.requeue, methods=["POST"]),
            *RefundPages(self, OFFICE_PATH).routes(),
            self.pages.static_route(STATIC_PATH),
        ]

    # -- pages -----------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        plugin, csrf = self.visitor(request)
        if csrf is None:
            return _to_login(request)
        error: InvalidQueryError | None = None
        try:
            query = Query(request.query_params, (*FILTERS, *PAGING, "done"))
            where, shown = _filter(query)
            before_id = query.cursor()
        except InvalidQueryError as exc:
            error, where, shown, before_id = exc, PaymentFilter(), {}, None
        page = await plugin.admin.payments(where, before_id=before_id, limit=PAGE_ROWS)
        counts = await plugin.admin.counts(stale_after_seconds=plugin.settings.stale_after_seconds)
        older = None
        if page.next_before_id is not None:
            older = _base(request) + "?" + urlencode({**shown, "cursor": page.next_before_id})
        return self.render(
            request,
            "office_home.html",
            {
                "csrf": csrf,
                "payments": page.items,
                "shown": shown,
                "states": STATES,
                "older": older,
                "newest": _base(request) + ("?" + urlencode(shown) if shown else ""),
                "paged": before_id is not None,
                "counts": counts,
                "loops": plugin.workers.loop_states(),
                "error": error,
                "done": request.query_params.get("done"),
            },
        )

    async def payment(self, request: Request) -> Response:
        plugin, csrf = self.visitor(request)
        if csrf is None:
            return _to_login(request)
        reference = schemas.path_reference(request.path_params["reference"])
        number = request.query_params.get("refund", "")
        shown = int(number) if number.isascii() and number.isdigit() and len(number) < 4 else None
        return await self.payment_page(request, plugin, csrf, reference, refund_number=shown)

    async def payment_page(
        self,
        request: Request,
        plugin: Plugin,
        csrf: str,
        reference: str,
        *,
        refund_number: int | None = None,
        refusal: MiniProgramPayError | None = None,
    ) -> Response:
        """One payment's page; with the outcome of a refund asked for on it, if any."""
        story = await plugin.admin.story(reference)
        if story is None:
            context = {"csrf": csrf, "reference": reference}
            return self.render(request, "office_missing.html", context, status_code=404)
        moves = path_taken(story)
        return self.render(
            request,
            "office_payment.html",
            {
                "csrf": csrf,
                "story": story,
                "entries": timeline(story),
                "diagram": self.diagram,
                "visited": [to for _, to in moves],
                "taken": [f"{source}>{to}" for source, to in moves if source],
                "parked": [d for d in story.deliveries if d.status == "parked"],
                "parked_webhooks": [n for n in story.webhooks if n.status == "parked"],
                "refunds": refunds_panel(story),
                "outcome": refund_outcome(story, refund_number, refusal),
            },
            status_code=refusal.status if refusal is not None else 200,
        )

    async def confirm_requeue(self, request: Request) -> Response:
        plugin, csrf = self.visitor(request)
        if csrf is None:
            return _to_login(request)
        kind, ids = _requeue_query(request.query_params.get("kind"), request.query_params)
        rows = await _parked(plugin, kind, ids)
        return self.render(
            request,
            "office_confirm.html",
            {"csrf": csrf, "kind": kind, "what": KINDS[kind], "rows": rows, "ids": ids},
        )

    # -- actions ---------------------------------------------------------------------------

    async def requeue(self, request: Request) -> Response:
        allowed = await self.action(request)
        if allowed is None:
            return self.refused(request)
        plugin, form = allowed
        kind, ids = _requeue_query(form.get("kind"), form)
        if kind == "outbox":
            done = len(await recovery.requeue_outbox(plugin.storage, ids=ids))
        else:
            result = await recovery.requeue_notifications(
                plugin.storage,
                status="parked",
                ids=ids,
                merchant_account=plugin.settings.adyen_merchant_account,
                live=plugin.settings.is_live,
            )
            done = len(result.requeued)
        plugin.workers.kick()
        message = f"{done} parked {KINDS[kind]} requeued"
        return RedirectResponse(_base(request) + "?" + urlencode({"done": message}), 303)

    async def login_page(self, request: Request) -> Response:
        self._sessions(_plugin(request))
        return self.render(request, "office_login.html", {"csrf": None, "failed": False})

    async def login(self, request: Request) -> Response:
        plugin = _plugin(request)
        sessions = self._sessions(plugin)
        form = await _form(request, plugin)
        given = form.get("key", "")
        if not same_site(request) or not given or not sessions.key_matches(given):
            context = {"csrf": None, "failed": True}
            return self.render(request, "office_login.html", context, status_code=401)
        token, _ = sessions.issue()
        answer = RedirectResponse(_base(request), 303)
        answer.set_cookie(
            COOKIE,
            token,
            max_age=SESSION_SECONDS,
            path=_base(request),
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return answer

    async def logout(self, request: Request) -> Response:
        if await self.action(request) is None:
            return self.refused(request)
        answer = RedirectResponse(_base(request) + "/login", 303)
        answer.delete_cookie(COOKIE, path=_base(request))
        return answer

    # -- who is asking -----------------------------------------------------------------------

    def _sessions(self, plugin: Plugin) -> OfficeSessions:
        key = plugin.settings.admin_api_key
        if not key:
            raise NotFoundError("not found", code="not_found")
        return OfficeSessions(key)

    def visitor(self, request: Request) -> tuple[Plugin, str | None]:
        """The plugin, and the visitor's CSRF secret (``""`` by admin header; None: nobody)."""
        plugin = _plugin(request)
        sessions = self._sessions(plugin)
        if _is_admin(request):
            return plugin, ""
        session = sessions.read(request.cookies.get(COOKIE))
        return plugin, None if session is None else session.csrf

    async def action(self, request: Request) -> tuple[Plugin, dict[str, str]] | None:
        """A POST's form, if it comes from a signed-in person on this site; else None."""
        plugin = _plugin(request)
        sessions = self._sessions(plugin)
        form = await _form(request, plugin)
        session = sessions.read(request.cookies.get(COOKIE))
        by_session = session is not None and sessions.csrf_matches(session, form.get("csrf"))
        if not same_site(request) or not (by_session or _is_admin(request)):
            return None
        return plugin, form

    def refused(self, request: Request) -> Response:
        """A forged, stale or signed-out form: nothing done, and a way back."""
        return self.render(request, "office_refused.html", {"csrf": None}, status_code=403)

    def render(
        self,
        request: Request,
        name: str,
        context: Mapping[str, Any],
        *,
        status_code: int = 200,
    ) -> Response:
        if not self.pages.available:
            raise NotInstalledError(MISSING_JINJA2)
        base = _base(request)
        return self.pages.render(
            request,
            name,
            {**context, "office": base, "api": base.removesuffix(OFFICE_PATH)},
            status_code=status_code,
        )


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")) + OFFICE_PATH


def _to_login(request: Request) -> Response:
    return RedirectResponse(_base(request) + "/login", 303, headers=SECURITY_HEADERS)


def _filter(query: Query) -> tuple[PaymentFilter, dict[str, str]]:
    """The list's filter, and the filters as given (for the form and the page links)."""
    state = query.choice("state", STATES)
    where = PaymentFilter(
        state=PaymentState(state) if state else None,
        created_from=query.moment("createdFrom"),
        created_before=query.moment("createdBefore"),
        reference_prefix=query.prefix("referencePrefix"),
        has_conflicts=query.boolean("hasConflicts"),
        has_refunds=query.boolean("hasRefunds"),
    )
    shown = {name: value for name in FILTERS if (value := query.text(name)) is not None}
    return where, shown


def _requeue_query(kind: str | None, params: Mapping[str, str]) -> tuple[str, list[int] | None]:
    if kind not in KINDS:
        raise InvalidQueryError(
            "kind must be outbox or inbox", parameter="kind", allowed=tuple(KINDS)
        )
    given = params.get("id")
    if not given:
        return kind, None
    if not (given.isascii() and given.isdigit() and 0 < len(given) <= 10):
        raise InvalidQueryError("id must be a row id", parameter="id", code="invalid_page")
    return kind, [int(given)]


async def _parked(plugin: Plugin, kind: str, ids: list[int] | None) -> list[Any]:
    """The parked rows a requeue would take (at most 200 shown)."""
    if kind == "outbox":
        rows: list[Any] = (await plugin.admin.outbox(status="parked", limit=200)).items
    else:
        rows = (await plugin.admin.notifications(status="parked", limit=200)).items
    return [row for row in rows if ids is None or row.id in ids]


async def _form(request: Request, plugin: Plugin) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body, each field once (the first)."""
    body = await read_body(request, min(plugin.settings.max_body_bytes, MAX_FORM_BYTES))
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}
