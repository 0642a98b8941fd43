"""The plugin: ``create_app`` (a mountable ASGI app) and ``MiniProgramPayMiddleware``.

A mounted app's lifespan never runs in Starlette, so the plugin starts itself
on its first request (under a lock, once). Hosts that want the background
workers running before the first request, and resources closed on shutdown,
add one line: ``lifespan=pay.lifespan`` (or enter it from their own lifespan).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from miniprogram_pay.adyen.checkout import AdyenCheckoutClient
from miniprogram_pay.config import Settings
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.refunds import RefundReason
from miniprogram_pay.errors import ConfigurationError, MiniProgramPayError
from miniprogram_pay.http.errors import exception_handlers
from miniprogram_pay.http.openapi import add_to_openapi, all_routes
from miniprogram_pay.http.ratelimit import RateLimiter
from miniprogram_pay.observability.context import (
    REQUEST_ID_HEADER,
    ChangeOrigins,
    bound_request_id,
    request_id_from,
)
from miniprogram_pay.observability.logs import install_handler, remove_handler
from miniprogram_pay.observability.metrics import NO_METRICS, Metrics
from miniprogram_pay.office.routes import Office
from miniprogram_pay.services.hooks import OrderResolver, StateChangeHook
from miniprogram_pay.services.payments import PaymentService
from miniprogram_pay.services.refunds import RefundService
from miniprogram_pay.services.workers import Workers
from miniprogram_pay.storage.admin import AdminReads
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.records import Refund
from miniprogram_pay.storage.schema import prepare as prepare_schema
from miniprogram_pay.storage.stores import Storage
from miniprogram_pay.wechat.client import WeChatClient
from miniprogram_pay.wechat.sessions import SessionTokens

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from miniprogram_pay.observability.prometheus import PrometheusMetrics

__all__ = ["MiniProgramPay", "MiniProgramPayMiddleware", "create_app"]

logger = logging.getLogger("miniprogram_pay")

INTERNAL_ERROR = {"error": {"code": "internal_error", "message": "internal error"}}


class MiniProgramPay:
    """The plugin as an ASGI app. Build it with ``create_app``.

    Example::

        pay = create_app(Settings.from_env(), order_resolver=resolve_order)
        app = Starlette(routes=[Mount("/pay", app=pay)], lifespan=pay.lifespan)
    """

    def __init__(
        self,
        settings: Settings,
        *,
        order_resolver: OrderResolver | None = None,
        on_state_change: StateChangeHook | None = None,
        http_client: httpx.AsyncClient | None = None,
        database: Database | None = None,
        run_workers: bool = True,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        if order_resolver is None and not settings.allow_client_amount:
            raise ConfigurationError(
                "No order_resolver was given and MINIPROGRAM_PAY_ALLOW_CLIENT_AMOUNT is false: "
                "nothing could decide a payment's amount. Pass order_resolver= to create_app "
                "(production), or set ALLOW_CLIENT_AMOUNT=true (demos and the sandbox only)."
            )
        self.settings = settings
        self.order_resolver = order_resolver
        self.on_state_change = on_state_change
        self.run_workers = run_workers
        self.tokens = SessionTokens(
            settings.session_secrets, ttl_seconds=settings.session_ttl_seconds
        )
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        self.hmac_keys = settings.hmac_key_bytes()
        self._given_http = http_client
        self._given_db = database
        self._background: set[asyncio.Task[int]] = set()
        self._started = False
        self._lock = asyncio.Lock()
        # The JSON API (in the OpenAPI document), then the back office's pages.
        pages = Office().routes()
        self._router = Starlette(
            routes=[*all_routes(), *pages], exception_handlers=exception_handlers
        )
        self.prometheus = _prometheus(settings, metrics_registry)
        self.metrics: Metrics = self.prometheus or NO_METRICS
        # Which request caused each state change, for the hook's call (services note, workers read).
        self.origins = ChangeOrigins()
        self._log_handler: logging.Handler | None = None

    # Resources exist only after start(); these are set there.
    database: Database
    storage: Storage
    admin: AdminReads
    service: PaymentService
    refunds: RefundService
    workers: Workers
    wechat: WeChatClient
    adyen: AdyenCheckoutClient
    _http: httpx.AsyncClient

    @property
    def started(self) -> bool:
        """True between ``start()`` (or the first request) and ``stop()``."""
        return self._started

    async def start(self) -> None:
        """Open the database, the HTTP client and the workers. Idempotent."""
        async with self._lock:
            if self._started:
                return
            self._log_handler = install_handler(
                setting=self.settings.log_handler,
                log_format=self.settings.log_format,
                level=self.settings.log_level,
                on_dropped=self.metrics.log_line_dropped,
            )
            self.database = self._given_db or Database(
                self.settings.database_url,
                schema=self.settings.database_schema,
                pool_size=self.settings.database_pool_size,
                sqlite_synchronous=self.settings.sqlite_synchronous,
            )
            try:
                await prepare_schema(self.database, auto_migrate=self.settings.auto_migrate)
            except BaseException:
                if self._given_db is None:
                    await self.database.dispose()  # a failed start must not leak a pool
                raise
            self._http = self._given_http or httpx.AsyncClient(
                timeout=self.settings.adyen_timeout_seconds,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            )
            self._build_services()
            if self.run_workers:
                self.workers.start()
                self.workers.kick()  # pick up anything a previous process left behind
            self._started = True
            logger.info(
                "miniprogram-pay started (%s, %s)",
                self.database.dialect,
                self.settings.adyen_environment,
            )

    def _build_services(self) -> None:
        self.storage = Storage.over(self.database)
        self.admin = AdminReads(self.database)
        metrics = self.metrics
        self.adyen = AdyenCheckoutClient.from_settings(self.settings, self._http, metrics=metrics)
        self.wechat = WeChatClient.from_settings(self.settings, self._http, metrics=metrics)
        self.workers = Workers(
            apply_notifications=self._apply_notifications,
            storage=self.storage,
            on_state_change=self.on_state_change,
            stale_after_seconds=self.settings.stale_after_seconds,
            hook_timeout_seconds=self.settings.hook_timeout_seconds,
            park_after_seconds=self.settings.outbox_park_after_seconds,
            metrics=metrics,
            origins=self.origins,
            ask_again=self._ask_again,
        )
        self.service = PaymentService(
            settings=self.settings,
            storage=self.storage,
            adyen=self.adyen,
            order_resolver=self.order_resolver,
            changes=self.workers.deliveries,
            metrics=metrics,
            origins=self.origins,
            on_duplicate=self._refund_duplicates_soon,
        )
        self.refunds = RefundService(
            settings=self.settings,
            storage=self.storage,
            adyen=self.adyen,
            changes=self.workers.deliveries,
        )

    async def _ask_again(self) -> int:
        """The recovery pass's refunds: those Adyen never answered, and duplicates owed one."""
        return await self.refunds.ask_again() + await self.refunds.refund_duplicates()

    def _refund_duplicates_soon(self) -> None:
        # Refunded now, off the request that found the duplicate; should this fail or the
        # process die first, the recovery pass finds the duplicate still owed its refund.
        task = asyncio.get_running_loop().create_task(self.refunds.refund_duplicates())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def refund(
        self,
        reference: str,
        amount: Amount | int | None = None,
        *,
        reason: str | RefundReason | None = None,
        idempotency_key: str | None = None,
    ) -> Refund:
        """Refund the payment ``reference`` at Adyen: ``amount`` of it, or (None) all that is left.

        ``amount`` is minor units of the payment's currency (an ``int``) or an
        ``Amount``. ``reason`` is one of Adyen's ``merchantRefundReason`` values
        (``"CUSTOMER REQUEST"``, ``"customer_request"``, ...). With an
        ``idempotency_key``, asking again returns the same refund, and a refund whose
        answer from Adyen was lost is asked for again with the same Idempotency-Key.
        The answer is ``Received`` (Adyen has it); the outcome comes in a webhook and
        reaches ``on_state_change`` as a change of kind ``"refund"``.

        Example::

            refund = await pay.refund("order-17", 300, reason="customer request",
                                      idempotency_key="order-17-return-1")
        """
        await self.start()
        return await self.refunds.refund(
            reference, amount, reason=reason, idempotency_key=idempotency_key
        )

    async def _apply_notifications(self, notification_ids: Sequence[int]) -> None:
        await self.service.apply_notifications(notification_ids)

    async def stop(self) -> None:
        """Stop the workers and close what the plugin opened (not what the host passed in)."""
        async with self._lock:
            if not self._started:
                return
            await self.workers.stop()
            for task in list(self._background):  # the recovery pass finishes what they began
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            await self.service.close()
            if self._given_http is None:
                await self._http.aclose()
            if self._given_db is None:
                await self.database.dispose()
            if self.prometheus is not None:
                self.prometheus.process_exiting()
            if self._log_handler is not None:
                remove_handler(self._log_handler)
                self._log_handler = None
            self._started = False

    @contextlib.asynccontextmanager
    async def lifespan(self, app: object = None) -> AsyncIterator[None]:
        """Start on startup, stop on shutdown; pass as ``lifespan=`` or enter it in yours."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def add_to_openapi(self, document: dict[str, Any], *, prefix: str) -> dict[str, Any]:
        """A host's OpenAPI document (FastAPI's ``app.openapi()``) with the plugin's operations.

        Example (FastAPI, plugin mounted at ``/pay``)::

            def openapi() -> dict[str, Any]:
                if app.openapi_schema is None:
                    document = get_openapi(title="shop", version="1", routes=app.routes)
                    app.openapi_schema = pay.add_to_openapi(document, prefix="/pay")
                return app.openapi_schema

            app.openapi = openapi
        """
        return add_to_openapi(document, prefix=prefix)

    async def apply_stored(self, notification_ids: Sequence[int]) -> None:
        """Apply webhook items that were just stored (after the answer was sent)."""
        # Each state change it commits is handed to this process's delivery in memory.
        await self.service.apply_notifications(notification_ids)

    async def refresh_metrics(self) -> None:
        """Read the storage counts (payments by state, backlogs, parked rows) into the metrics.

        ``GET /metrics`` does it before every scrape; a host that serves the registry
        it passed as ``metrics_registry`` from a route of its own awaits this first.
        """
        if self.prometheus is None:
            return
        await self.start()
        counts = await self.admin.counts(stale_after_seconds=self.settings.stale_after_seconds)
        self.prometheus.update(counts)

    async def drain(self) -> None:
        """Apply every due webhook item and deliver every due state change now."""
        await self.start()
        await self.workers.drain()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            await self._serve(scope, receive, send)
            return
        request_id = request_id_from(_header(scope, b"x-request-id"))
        with bound_request_id(request_id):
            await self._serve_http(scope, receive, send, request_id)

    async def _serve_http(
        self, scope: Scope, receive: Receive, send: Send, request_id: str
    ) -> None:
        """Serve one request as ``request_id``; an unexpected error is logged here, once."""
        started = False

        async def answer(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._serve(scope, receive, answer)
        except Exception:
            # Starlette re-raises after its 500 answer, for the server to log; the server
            # would log it again, and a host's middleware a third time: it ends here.
            logger.exception(
                "unexpected error on %s %s",
                scope.get("method"),
                scope.get("path"),
                extra={"request_id": request_id},
            )
            if not started:
                await JSONResponse(INTERNAL_ERROR, status_code=500)(scope, receive, answer)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._started:
            try:
                await self.start()
            except MiniProgramPayError as exc:
                # Outside the router, whose handlers render every other error as JSON.
                response = JSONResponse(exc.to_dict(), status_code=exc.status)
                await response(scope, receive, send)
                return
        scope["miniprogram_pay"] = self
        await self._router(scope, receive, send)

    async def _serve_lifespan(self, receive: Receive, send: Send) -> None:
        # Only reached when the plugin is the top-level app (a Mount never forwards lifespan).
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(
    settings: Settings,
    *,
    order_resolver: OrderResolver | None = None,
    on_state_change: StateChangeHook | None = None,
    http_client: httpx.AsyncClient | None = None,
    database: Database | None = None,
    metrics_registry: CollectorRegistry | None = None,
) -> MiniProgramPay:
    """Build the plugin: an ASGI app to mount (``Mount("/pay", app=...)``) or to serve alone.

    ``order_resolver`` decides each payment's reference and amount from the host's
    orders. ``on_state_change`` is told of every committed state change, at least
    once, with a stable ``event_id``. ``metrics_registry`` is a prometheus-client
    registry of the host's to record the metrics in (default: one of the plugin's own).
    """
    return MiniProgramPay(
        settings,
        order_resolver=order_resolver,
        on_state_change=on_state_change,
        http_client=http_client,
        database=database,
        metrics_registry=metrics_registry,
    )


def _prometheus(settings: Settings, registry: CollectorRegistry | None) -> PrometheusMetrics | None:
    """Metrics in prometheus-client when it is installed and wanted, else None (none recorded)."""
    if importlib.util.find_spec("prometheus_client") is None:
        return None
    if settings.metrics_access == "off" and registry is None:
        return None
    from miniprogram_pay.observability.prometheus import PrometheusMetrics

    return PrometheusMetrics(registry)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class MiniProgramPayMiddleware:
    """The plugin as ASGI middleware: its routes under ``prefix``, everything else to the host.

    Example (FastAPI)::

        app = FastAPI()
        app.add_middleware(MiniProgramPayMiddleware, settings=settings, prefix="/pay",
                           order_resolver=resolve_order)

    It sees the host's lifespan events, so it starts and stops the plugin's
    resources with the host.
    """

    # The options are spelled out, not ``**options``: with a ``**kwargs`` catch-all,
    # mypy rejects the class in Starlette's typed ``add_middleware``.
    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        prefix: str = "/pay",
        order_resolver: OrderResolver | None = None,
        on_state_change: StateChangeHook | None = None,
        http_client: httpx.AsyncClient | None = None,
        database: Database | None = None,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        if not prefix.startswith("/") or prefix.endswith("/"):
            raise ConfigurationError("MiniProgramPayMiddleware prefix must look like '/pay'.")
        self.app = app
        self.prefix = prefix
        self.plugin = create_app(
            settings,
            order_resolver=order_resolver,
            on_state_change=on_state_change,
            http_client=http_client,
            database=database,
            metrics_registry=metrics_registry,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), self._lifespan_send(send))
            return
        path: str = scope.get("path", "")
        if scope["type"] == "http" and (path == self.prefix or path.startswith(self.prefix + "/")):
            child = dict(scope)
            child["root_path"] = scope.get("root_path", "") + self.prefix
            await self.plugin(child, receive, send)
            return
        await self.app(scope, receive, send)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Any:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.plugin.start()
            return message

        return wrapped

    def _lifespan_send(self, send: Send) -> Send:
        async def wrapped(message: Any) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.plugin.stop()
            await send(message)

        return wrapped
