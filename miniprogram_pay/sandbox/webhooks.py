"""Delivering notifications to the merchant like Adyen: Basic auth, retries, records.

Every delivery runs as an asyncio task owned by ``WebhookSender``; every attempt
is recorded so tests and the control API can see exactly what the merchant got.
A delivery is accepted on any 2xx; otherwise it is retried after each of
``webhook_retry_delays`` and then marked failed (Adyen would keep queueing it).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_chain,
    wait_fixed,
)

from miniprogram_pay.retrying import RetryAfter
from miniprogram_pay.sandbox.config import SandboxConfig
from miniprogram_pay.sandbox.notifications import build_notification, notification_item
from miniprogram_pay.sandbox.responses import json_bytes
from miniprogram_pay.sandbox.scenarios import Signing, WebhookStep

__all__ = ["DeliveryAttempt", "DeliveryPlan", "WebhookDelivery", "WebhookSender"]

DeliveryState = Literal["pending", "accepted", "failed", "cancelled"]
# Duplicates: this many copies race each other, the rest follow one by one.
CONCURRENT_COPIES = 2
USER_AGENT = "Adyen HttpClient 1.0 (miniprogram-pay sandbox)"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(slots=True)
class DeliveryAttempt:
    """One POST to the merchant, sent ``at``: its HTTP status, or the transport error."""

    number: int
    at: str
    status_code: int | None
    error: str | None
    accepted: bool


@dataclass(slots=True)
class WebhookDelivery:
    """One notification and every attempt to deliver it."""

    id: int
    psp_reference: str
    original_reference: str | None
    event_code: str
    success: str
    reason: str
    copy: int
    signing: Signing
    notification: dict[str, Any]
    attempts: list[DeliveryAttempt] = field(default_factory=list)
    state: DeliveryState = "pending"

    @property
    def accepted(self) -> bool:
        return self.state == "accepted"

    @property
    def item(self) -> dict[str, Any]:
        """The ``NotificationRequestItem`` as sent (signature included)."""
        item: dict[str, Any] = self.notification["notificationItems"][0]["NotificationRequestItem"]
        return item

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "pspReference": self.psp_reference,
            "originalReference": self.original_reference,
            "eventCode": self.event_code,
            "success": self.success,
            "reason": self.reason,
            "copy": self.copy,
            "signing": self.signing,
            "state": self.state,
            "attempts": [
                {
                    "number": a.number,
                    "at": a.at,
                    "statusCode": a.status_code,
                    "error": a.error,
                    "accepted": a.accepted,
                }
                for a in self.attempts
            ],
            "notification": self.notification,
        }


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """The webhooks one payment or refund produces, sent in order, each after the previous ends.

    For a refund, ``psp_reference`` is the refund's and ``original_reference`` the payment's.
    """

    psp_reference: str
    merchant_reference: str
    amount: dict[str, Any]
    steps: tuple[WebhookStep, ...]
    signing: Signing = "primary"
    copies: int = 1
    original_reference: str | None = None


class WebhookSender:
    """Runs delivery plans as tasks; ``drain`` waits for them, ``aclose`` cancels them."""

    def __init__(self, config: SandboxConfig, client: httpx.AsyncClient | None = None) -> None:
        self._config = config
        self._client = client
        # Only a client we created is ours to close; an injected one belongs to the caller.
        self._owns_client = client is None
        self._tasks: set[asyncio.Task[None]] = set()
        self.deliveries: list[WebhookDelivery] = []

    @property
    def enabled(self) -> bool:
        return self._config.webhook_url is not None

    def start(self, plan: DeliveryPlan) -> asyncio.Task[None] | None:
        """Schedule a plan; None when webhooks are off (no ``webhook_url``)."""
        if not self.enabled or not plan.steps:
            return None
        task = asyncio.create_task(self._run(plan), name=f"sandbox-webhooks-{plan.psp_reference}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - see Sandbox.drain
        """Wait until every scheduled delivery has finished; TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending := {task for task in self._tasks if not task.done()}:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"{len(pending)} webhook plan(s) still running after {timeout}s")
            await asyncio.wait(pending, timeout=remaining)

    async def cancel_all(self) -> None:
        """Cancel running deliveries and wait for them to stop."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for delivery in self.deliveries:
            if delivery.state == "pending":
                delivery.state = "cancelled"

    async def aclose(self) -> None:
        """Cancel deliveries and close the HTTP client if the sender created it."""
        await self.cancel_all()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def reset(self) -> None:
        await self.cancel_all()
        self.deliveries.clear()

    def _http(self) -> httpx.AsyncClient:
        # Lazy: a mounted sub-app's lifespan never runs, so the first delivery creates it.
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def _run(self, plan: DeliveryPlan) -> None:
        for step in plan.steps:
            if self._config.webhook_delay_seconds:
                await asyncio.sleep(self._config.webhook_delay_seconds)
            await self._send_copies(plan, step)

    async def _send_copies(self, plan: DeliveryPlan, step: WebhookStep) -> None:
        # One item for all copies: duplicates are byte-identical, as Adyen's are.
        item = notification_item(
            psp_reference=plan.psp_reference,
            merchant_reference=plan.merchant_reference,
            merchant_account=self._config.merchant_account,
            amount=plan.amount,
            step=step,
            original_reference=plan.original_reference,
        )
        notification = build_notification(self._config, item, plan.signing)
        deliveries = [self._record(plan, step, notification, n) for n in range(1, plan.copies + 1)]
        head, tail = deliveries[:CONCURRENT_COPIES], deliveries[CONCURRENT_COPIES:]
        await asyncio.gather(*(self._deliver(d) for d in head))
        for delivery in tail:
            await self._deliver(delivery)

    def _record(
        self, plan: DeliveryPlan, step: WebhookStep, notification: dict[str, Any], copy: int
    ) -> WebhookDelivery:
        delivery = WebhookDelivery(
            id=len(self.deliveries) + 1,
            psp_reference=plan.psp_reference,
            original_reference=plan.original_reference,
            event_code=step.event_code,
            success="true" if step.success else "false",
            reason=step.reason,
            copy=copy,
            signing=plan.signing,
            notification=notification,
        )
        self.deliveries.append(delivery)
        return delivery

    async def _deliver(self, delivery: WebhookDelivery) -> None:
        # Adyen retries on a fixed schedule, not a backoff: the configured delays, in turn.
        delays = self._config.webhook_retry_delays
        try:
            async for retry in AsyncRetrying(
                stop=stop_after_attempt(len(delays) + 1),
                wait=wait_chain(*(wait_fixed(delay) for delay in delays)),
                retry=retry_if_exception_type(RetryAfter),
                reraise=True,
            ):
                with retry:
                    attempt = await self._attempt(delivery, retry.retry_state.attempt_number)
                    delivery.attempts.append(attempt)
                    if not attempt.accepted:
                        raise RetryAfter(attempt)
            delivery.state = "accepted"
        except RetryAfter:
            delivery.state = "failed"

    async def _attempt(self, delivery: WebhookDelivery, number: int) -> DeliveryAttempt:
        url = self._config.webhook_url
        if url is None:  # start() only runs plans when webhooks are on
            return DeliveryAttempt(number, _now(), None, "webhooks are off", False)
        sent = (
            _now()
        )  # an attempt's time is when it left: the merchant acts on it before it answers
        try:
            response = await self._http().post(
                url,
                content=json_bytes(delivery.notification),
                headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
                auth=httpx.BasicAuth(self._config.webhook_username, self._config.webhook_password),
                timeout=self._config.webhook_timeout_seconds,
            )
        except httpx.HTTPError as exc:
            # The merchant was unreachable or too slow: like Adyen, that is "not accepted".
            return DeliveryAttempt(number, sent, None, f"{type(exc).__name__}: {exc}", False)
        accepted = 200 <= response.status_code < 300
        return DeliveryAttempt(number, sent, response.status_code, None, accepted)
