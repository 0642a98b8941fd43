"""The console's page and its three endpoints, served by the sandbox app.

``GET /`` is the page; ``/_sandbox/console/pay.js`` the Mini Program client
module as a browser script; ``POST /_sandbox/console/relay`` the page's
``wx.request``; ``POST /_sandbox/console/refund`` the merchant's refund through
the host's admin API; ``GET /_sandbox/console/timeline`` one order's timeline
(every attempt) with the host's view of it. The PSP controls on the page use
the control API.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from miniprogram_pay.domain import TRANSITIONS, PaymentState, RefundReason
from miniprogram_pay.pages import SECURITY_HEADERS, Pages, state_diagram
from miniprogram_pay.pages.rendering import MISSING_JINJA2
from miniprogram_pay.sandbox.console import timeline
from miniprogram_pay.sandbox.console.refunds import RefundOrderError, parse_refund_order
from miniprogram_pay.sandbox.console.relay import CONSOLE_HEADER, Relay, RelayError, parse_request
from miniprogram_pay.sandbox.faults import FAULT_KINDS
from miniprogram_pay.sandbox.responses import json_response
from miniprogram_pay.sandbox.scenarios import (
    DEFAULT_REFUND_SCENARIO,
    REFUND_SCENARIOS,
    SCENARIOS,
    refund_scenario_steps,
    scenario_steps,
)
from miniprogram_pay.sandbox.state import Sandbox, SandboxPayment

__all__ = ["ADMIN_KEY_HEADER", "Console", "default_api_url"]

PACKAGE = "miniprogram_pay.sandbox.console"
STATIC_NAME = "sandbox-static"
# The merchant's admin key, when the page gives one; otherwise the sandbox's configured one.
ADMIN_KEY_HEADER = "X-Merchant-Admin-Key"
WEBHOOK_PATH = "/webhooks/adyen"
FALLBACK_API_URL = "http://127.0.0.1:8000/pay"
NO_ADMIN_KEY = "no admin key: give the host's X-Admin-Key to see its view and refund"
REFUND_REASONS = tuple(reason.value for reason in RefundReason)
# The faults the page offers for "the next call to Adyen".
PAGE_FAULTS = tuple(kind for kind in FAULT_KINDS if kind in ("timeout", "500", "503"))
_MODULE_HEAD = "// The Mini Program client module, loaded as a Mini Program loads it: CommonJS.\n"
_MODULE_OPEN = "window.MiniProgramPay = (function (module, exports) {\n"
_MODULE_CLOSE = "\nreturn module.exports;\n})({ exports: {} });\n"


def default_api_url(merchant_api_url: str | None, webhook_url: str | None) -> str:
    """The plugin's base URL: as configured, else the webhook URL's base, else ``:8000/pay``."""
    if merchant_api_url:
        return merchant_api_url.rstrip("/")
    if webhook_url and webhook_url.rstrip("/").endswith(WEBHOOK_PATH):
        return webhook_url.rstrip("/").removesuffix(WEBHOOK_PATH)
    return FALLBACK_API_URL


def client_module_source() -> str:
    """The package's copy of ``examples/miniprogram/lib/pay.js``."""
    return resources.files(PACKAGE).joinpath("client", "pay.js").read_text(encoding="utf-8")


class BadConsoleRequest(ValueError):
    pass


def _from_console(request: Request) -> None:
    # A custom header cannot cross origins without a CORS preflight, which nothing here grants.
    if request.headers.get(CONSOLE_HEADER) != "1":
        raise BadConsoleRequest(f"only the console page may call this (header {CONSOLE_HEADER})")
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise BadConsoleRequest("only the console page may call this (same origin)")


def _http_url(value: str | None, name: str) -> str:
    if not value or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc:
        raise BadConsoleRequest(f"{name} must be an http:// or https:// URL")
    return value.rstrip("/")


def _version(answer: dict[str, Any]) -> str:
    canonical = json.dumps(answer, sort_keys=True, default=str).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


class Console:
    """The console bound to one ``Sandbox``; ``client`` reaches the merchant (tests inject one)."""

    def __init__(self, sandbox: Sandbox, *, client: httpx.AsyncClient | None = None) -> None:
        self.sandbox = sandbox
        self.relay = Relay(app_id=sandbox.config.wechat_app_id, client=client)
        self.pages = Pages(PACKAGE, static_name=STATIC_NAME)
        self.diagram = state_diagram("payment", [s.value for s in PaymentState], TRANSITIONS)

    @property
    def api_url(self) -> str:
        config = self.sandbox.config
        return default_api_url(config.merchant_api_url, config.webhook_url)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page, methods=["GET"], name="console"),
            Route(
                "/_sandbox/console/pay.js",
                self.client_module,
                methods=["GET"],
                name="console-client-module",
            ),
            Route("/_sandbox/console/relay", self.relay_request, methods=["POST"]),
            Route("/_sandbox/console/refund", self.refund, methods=["POST"]),
            Route("/_sandbox/console/timeline", self.timeline, methods=["GET"]),
            self.pages.static_route("/_sandbox/static"),
        ]

    async def page(self, request: Request) -> Response:
        if not self.pages.available:
            return PlainTextResponse(MISSING_JINJA2, status_code=501)
        config = self.sandbox.config
        return self.pages.render(
            request,
            "console.html",
            {
                "api_url": self.api_url,
                "app_id": config.wechat_app_id,
                "admin_key_configured": config.merchant_admin_key is not None,
                "default_scenario": config.default_scenario,
                "scenarios": [(s, scenario_steps(s)) for s in SCENARIOS.values()],
                "refund_scenarios": [
                    (s, refund_scenario_steps(s)) for s in REFUND_SCENARIOS.values()
                ],
                "default_refund_scenario": DEFAULT_REFUND_SCENARIO,
                "refund_reasons": REFUND_REASONS,
                "faults": PAGE_FAULTS,
                "diagram": self.diagram,
            },
        )

    async def client_module(self, request: Request) -> Response:
        source = _MODULE_HEAD + _MODULE_OPEN + client_module_source() + _MODULE_CLOSE
        return Response(source, media_type="text/javascript", headers=SECURITY_HEADERS)

    async def relay_request(self, request: Request) -> Response:
        try:
            _from_console(request)
            wx_request = parse_request(json.loads(await request.body() or b"null"))
        except (BadConsoleRequest, RelayError) as exc:
            return json_response({"error": str(exc)}, 400)
        except ValueError:
            return json_response({"error": "the body must be JSON"}, 400)
        return json_response(await self.relay.send(wx_request))

    async def refund(self, request: Request) -> Response:
        """The back office's refund: the scenario set for the payment's attempts, then the host."""
        try:
            _from_console(request)
            body = json.loads(await request.body() or b"null")
            api = _http_url(body.get("api") if isinstance(body, dict) else None, "api")
            order = parse_refund_order(body)
        except (BadConsoleRequest, RefundOrderError) as exc:
            return json_response({"error": str(exc)}, 400)
        except ValueError:
            return json_response({"error": "the body must be JSON"}, 400)
        key = self._admin_key(request)
        if not key:
            return json_response({"error": NO_ADMIN_KEY}, 400)
        for payment in self._attempts(None, order.reference):
            self.sandbox.set_refund_scenario(payment.merchant_reference, order.scenario)
        answer = await self.relay.send(
            order.request(api), origin="merchant", secret_headers={"X-Admin-Key": key}
        )
        return json_response({k: v for k, v in answer.items() if k != "header"})

    async def timeline(self, request: Request) -> Response:
        query = request.query_params
        try:
            _from_console(request)
            api = _http_url(query.get("api"), "api")
        except BadConsoleRequest as exc:
            return json_response({"error": str(exc)}, 400)
        reference, run = query.get("reference") or "", query.get("run") or ""
        attempts = self._attempts(query.get("pspReference"), reference)
        payment = attempts[-1] if attempts else None
        psp = payment.psp_reference if payment is not None else None
        psps = {p.psp_reference for p in attempts}
        references = {p.merchant_reference for p in attempts} | ({reference} - {""})
        host, host_error = await self._host_view(request, api, reference)
        answer = {
            "reference": reference,
            "pspReference": psp,
            "sandbox": payment.to_dict() if payment is not None else None,
            "attempts": [p.merchant_reference for p in attempts],
            "host": host,
            "hostError": host_error,
            **_state_marks(host),
            "faults": [fault.to_dict() for fault in self.sandbox.faults.pending()],
            "entries": [
                entry.to_dict()
                for entry in timeline.build(
                    api_base=api,
                    relayed=self.relay.of_run(run),
                    payments=attempts,
                    calls=[
                        call
                        for call in self.sandbox.calls.calls
                        if call.psp_reference in psps or call.merchant_reference in references
                    ],
                    deliveries=[
                        d
                        for d in self.sandbox.deliveries
                        if psps & {d.psp_reference, d.original_reference}
                    ],
                    host=host,
                )
            ],
        }
        return json_response({**answer, "version": _version(answer)})

    def _attempts(self, psp_reference: str | None, reference: str) -> list[SandboxPayment]:
        """The order's payments at Adyen, oldest first: ``reference`` names the order or one of
        its attempts (linked by their merchantOrderReference), as ``psp_reference`` may."""
        payments = self.sandbox.payments.values()
        named = self.sandbox.payments.get(psp_reference or "")
        names = ({reference} - {""}) | ({named.merchant_reference} if named else set())
        names |= {
            p.order_reference
            for p in payments
            if p.order_reference and p.merchant_reference in names
        }
        return [p for p in payments if names & {p.merchant_reference, p.order_reference}]

    def _admin_key(self, request: Request) -> str | None:
        return request.headers.get(ADMIN_KEY_HEADER) or self.sandbox.config.merchant_admin_key

    async def _host_view(
        self, request: Request, api: str, reference: str
    ) -> tuple[dict[str, Any] | None, str | None]:
        """The host's ``GET /payments/{reference}`` for an admin: its database's word."""
        if not reference:
            return None, None
        key = self._admin_key(request)
        if not key:
            return None, NO_ADMIN_KEY
        url = f"{api}/payments/{quote(reference, safe='')}"
        status, body = await self.relay.get_json(url, {"X-Admin-Key": key})
        if status == 200 and isinstance(body, dict):
            return body, None
        if status in (401, 403):
            return None, "the host refused the admin key"
        if status == 404:
            return None, "the host has no such payment (yet)"
        return None, f"the host answered {status}" if status is not None else str(body)

    async def aclose(self) -> None:
        await self.relay.aclose()


def _state_marks(host: dict[str, Any] | None) -> dict[str, Any]:
    """What the state diagram shows: the state, the states visited, the moves taken."""
    if host is None:
        return {"state": None, "visited": [], "taken": [], "conflicts": []}
    history = host.get("history", [])
    return {
        "state": host.get("state"),
        "visited": [change.get("to") for change in history],
        "taken": [[c.get("from"), c.get("to")] for c in history if c.get("from")],
        "conflicts": [conflict.get("kind") for conflict in host.get("conflicts", [])],
    }
