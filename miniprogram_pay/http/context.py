"""What an endpoint may use of the plugin, as a Protocol (the HTTP layer never imports the app)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from miniprogram_pay.config import Settings
from miniprogram_pay.http.ratelimit import RateLimiter
from miniprogram_pay.services.payments import PaymentService
from miniprogram_pay.services.workers import Workers
from miniprogram_pay.storage.repository import PaymentRepository
from miniprogram_pay.wechat.client import WeChatClient
from miniprogram_pay.wechat.sessions import SessionTokens

__all__ = ["Plugin"]


class Plugin(Protocol):
    """The running plugin as the routes see it (``MiniProgramPay`` implements it)."""

    settings: Settings
    tokens: SessionTokens
    limiter: RateLimiter
    hmac_keys: list[bytes]
    service: PaymentService
    repository: PaymentRepository
    wechat: WeChatClient
    workers: Workers

    async def apply_stored(self, notification_ids: Sequence[int]) -> None: ...
