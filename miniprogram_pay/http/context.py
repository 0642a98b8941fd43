"""What an endpoint may use of the plugin, as a Protocol (the HTTP layer never imports the app)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from miniprogram_pay.config import Settings
from miniprogram_pay.http.ratelimit import RateLimiter
from miniprogram_pay.observability.metrics import Metrics
from miniprogram_pay.services.payments import PaymentService
from miniprogram_pay.services.refunds import RefundService
from miniprogram_pay.services.workers import Workers
from miniprogram_pay.storage.admin import AdminReads
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.stores import Storage
from miniprogram_pay.wechat.client import WeChatClient
from miniprogram_pay.wechat.sessions import SessionTokens

if TYPE_CHECKING:
    from miniprogram_pay.observability.prometheus import PrometheusMetrics

__all__ = ["Plugin"]


class Plugin(Protocol):
    """The running plugin as the routes see it (``MiniProgramPay`` implements it)."""

    settings: Settings
    tokens: SessionTokens
    limiter: RateLimiter
    hmac_keys: list[bytes]
    service: PaymentService
    storage: Storage
    admin: AdminReads
    database: Database
    refunds: RefundService
    wechat: WeChatClient
    workers: Workers
    metrics: Metrics
    prometheus: PrometheusMetrics | None

    async def apply_stored(self, notification_ids: Sequence[int]) -> None: ...

    async def refresh_metrics(self) -> None: ...
