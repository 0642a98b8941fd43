"""The metrics the package records, as one small interface (no prometheus-client here).

Services, workers and the Adyen and WeChat clients call a ``Metrics`` object that
the plugin injects; ``prometheus.PrometheusMetrics`` records into a
prometheus-client registry, ``NO_METRICS`` records nothing (prometheus-client not
installed, or a test that does not look). Counts that the database knows better
than any process (payments by state, backlogs, parked rows) are not recorded
here: they are read from storage when the metrics are scraped.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

__all__ = [
    "NO_METRICS",
    "CallOutcome",
    "HookOutcome",
    "Metrics",
    "NoMetrics",
    "WebhookOutcome",
    "WebhookReason",
]


class WebhookOutcome(StrEnum):
    STORED = "stored"
    """A new item, committed to the inbox."""
    DUPLICATE = "duplicate"
    """An item already in the inbox (Adyen delivered it again)."""
    REJECTED = "rejected"
    """Refused (a whole request), or stored as not ours (an item): see ``WebhookReason``."""
    FAILED = "failed"
    """Could not be stored (the database): Adyen delivers it again."""


class WebhookReason(StrEnum):
    NONE = ""
    BASIC_AUTH = "basic_auth"
    HMAC = "hmac"
    FOREIGN_MERCHANT = "foreign_merchant"
    """Another merchant account, or the other environment (``live``): stored as ignored."""
    BAD_BODY = "bad_body"
    STORAGE = "storage"


class CallOutcome(StrEnum):
    """How one attempt of a call to Adyen or WeChat ended."""

    OK = "ok"
    REJECTED = "rejected"
    """4xx from Adyen; a WeChat errcode other than busy."""
    SERVER_ERROR = "server_error"
    """5xx; WeChat's ``-1`` (busy)."""
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    BAD_RESPONSE = "bad_response"
    """An answer that is not the JSON object the API promises."""


class HookOutcome(StrEnum):
    """How one call of the host's ``on_state_change`` ended."""

    DELIVERED = "delivered"
    FAILED = "failed"
    TIMEOUT = "timeout"


class Metrics(Protocol):
    """What the package records as it runs. Every method is cheap and never raises."""

    def webhook_received(
        self, outcome: WebhookOutcome, reason: WebhookReason = WebhookReason.NONE, count: int = 1
    ) -> None:
        """Webhook items (stored, duplicate, not ours) or whole requests (refused, failed)."""

    def webhook_accepted(self, seconds: float) -> None:
        """From a webhook request's arrival to its items committed (before ``[accepted]``)."""

    def webhook_applied(self, lag_seconds: float) -> None:
        """From an item's commit to the inbox to its being applied to its payment."""

    def upstream_call(
        self, service: str, endpoint: str, outcome: CallOutcome, seconds: float
    ) -> None:
        """One attempt of a call to Adyen or WeChat (each retry is an attempt)."""

    def hook_called(self, outcome: HookOutcome, seconds: float) -> None:
        """One call of the host's ``on_state_change``."""

    def loop_passed(self, loop: str) -> None:
        """A pass of a background loop (inbox, outbox) ended."""

    def log_line_dropped(self) -> None:
        """The package's stderr handler dropped a line: its queue was full (stderr not read)."""


class NoMetrics:
    """Records nothing."""

    def webhook_received(
        self, outcome: WebhookOutcome, reason: WebhookReason = WebhookReason.NONE, count: int = 1
    ) -> None:
        return None

    def webhook_accepted(self, seconds: float) -> None:
        return None

    def webhook_applied(self, lag_seconds: float) -> None:
        return None

    def upstream_call(
        self, service: str, endpoint: str, outcome: CallOutcome, seconds: float
    ) -> None:
        return None

    def hook_called(self, outcome: HookOutcome, seconds: float) -> None:
        return None

    def loop_passed(self, loop: str) -> None:
        return None

    def log_line_dropped(self) -> None:
        return None


NO_METRICS: Metrics = NoMetrics()
