"""``PrometheusMetrics``: the package's metrics in a prometheus-client registry (an extra).

Events (webhooks, calls to Adyen and WeChat, hook calls, loop passes) are counters
and histograms recorded as they happen. What the database knows (payments and
refunds by state, inbox and outbox by status, stale payments, the oldest backlog,
the oldest refund waiting for its outcome) is read
from storage when the plugin's ``GET /metrics`` is scraped (``update``), and
served from that snapshot by a collector of its own.

The registry is the plugin's own unless the host passes one, so two plugins (or a
host's metrics of the same names) never meet in a global registry by accident.

Several worker processes (``uvicorn --workers N``, gunicorn): set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory shared by the workers before
they start. Each process then writes its counters there, and a scrape of any
worker reads them all (prometheus-client's multiprocess mode); the storage counts
are the database's, the same from every worker.

Example (a host that serves its own registry)::

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    pay = create_app(settings, metrics_registry=registry)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from miniprogram_pay._version import __version__
from miniprogram_pay.domain.refunds import RefundState
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.observability.metrics import (
    CallOutcome,
    HookOutcome,
    WebhookOutcome,
    WebhookReason,
)
from miniprogram_pay.storage.admin import (
    INBOX_STATUSES,
    OUTBOX_STATUSES,
    PENDING_REFUND_STATES,
    StoredCounts,
)

__all__ = ["MULTIPROCESS_VARIABLE", "NAMESPACE", "PrometheusMetrics"]

NAMESPACE = "miniprogram_pay"
MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
ACCEPTANCE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# From milliseconds (applied right after the answer) to hours (a retried or parked item).
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0, 21600.0)
CALL_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HOOK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)
# The series that exist from the start, at 0, so that rate() and absent() work at once.
WEBHOOK_SERIES = (
    (WebhookOutcome.STORED, WebhookReason.NONE),
    (WebhookOutcome.DUPLICATE, WebhookReason.NONE),
    (WebhookOutcome.REJECTED, WebhookReason.BASIC_AUTH),
    (WebhookOutcome.REJECTED, WebhookReason.HMAC),
    (WebhookOutcome.REJECTED, WebhookReason.FOREIGN_MERCHANT),
    (WebhookOutcome.REJECTED, WebhookReason.BAD_BODY),
    (WebhookOutcome.FAILED, WebhookReason.STORAGE),
)
UPSTREAM_ENDPOINTS = (
    ("adyen", "/payments"),
    ("adyen", "/payments/details"),
    ("adyen", "/payments/{pspReference}/refunds"),
    ("wechat", "/sns/jscode2session"),
)


def multiprocess_mode() -> bool:
    """Whether prometheus-client writes this process's values to ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get(MULTIPROCESS_VARIABLE))


class PrometheusMetrics:
    """The package's ``Metrics`` in ``registry`` (a new one of its own when None)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.multiprocess = multiprocess_mode()
        self._build(self.registry)
        self.stored = StoredCountsCollector()
        self.registry.register(self.stored)

    def _build(self, registry: CollectorRegistry) -> None:
        self._webhooks = Counter(
            "webhooks_received",
            "Webhook items stored, duplicate or not ours; webhook requests refused or failed.",
            ["outcome", "reason"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._acceptance = Histogram(
            "webhook_acceptance_seconds",
            "From a webhook request's arrival to its items committed, before [accepted].",
            buckets=ACCEPTANCE_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self._lag = Histogram(
            "webhook_apply_lag_seconds",
            "From a webhook item's commit to the inbox to its being applied to its payment.",
            buckets=LAG_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self._calls = Counter(
            "upstream_calls",
            "Attempts of calls to Adyen and WeChat, by endpoint and outcome.",
            ["service", "endpoint", "outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._call_seconds = Histogram(
            "upstream_call_seconds",
            "Duration of one attempt of a call to Adyen or WeChat.",
            ["service", "endpoint"],
            buckets=CALL_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self._hooks = Counter(
            "hook_calls",
            "Calls of the host's on_state_change, by outcome.",
            ["outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self._hook_seconds = Histogram(
            "hook_call_seconds",
            "Duration of one call of the host's on_state_change.",
            buckets=HOOK_BUCKETS,
            namespace=NAMESPACE,
            registry=registry,
        )
        self._dropped_lines = Counter(
            "log_lines_dropped",
            "Log lines the package's stderr handler dropped while stderr was not being read.",
            namespace=NAMESPACE,
            registry=registry,
        )
        # The oldest of the live processes' last passes: a stuck loop in any worker shows.
        self._loops = Gauge(
            "loop_last_pass_timestamp_seconds",
            "Unix time at which a pass of each background loop last ended.",
            ["loop"],
            multiprocess_mode="livemin",
            namespace=NAMESPACE,
            registry=registry,
        )
        self._start_series()

    def _start_series(self) -> None:
        for outcome, reason in WEBHOOK_SERIES:
            self._webhooks.labels(outcome.value, reason.value)
        for service, endpoint in UPSTREAM_ENDPOINTS:
            self._call_seconds.labels(service, endpoint)
            for call in CallOutcome:
                self._calls.labels(service, endpoint, call.value)
        for hook in HookOutcome:
            self._hooks.labels(hook.value)

    # -- Metrics ---------------------------------------------------------------------------

    def webhook_received(
        self, outcome: WebhookOutcome, reason: WebhookReason = WebhookReason.NONE, count: int = 1
    ) -> None:
        if count > 0:
            self._webhooks.labels(outcome.value, reason.value).inc(count)

    def webhook_accepted(self, seconds: float) -> None:
        self._acceptance.observe(seconds)

    def webhook_applied(self, lag_seconds: float) -> None:
        self._lag.observe(max(lag_seconds, 0.0))

    def upstream_call(
        self, service: str, endpoint: str, outcome: CallOutcome, seconds: float
    ) -> None:
        self._calls.labels(service, endpoint, outcome.value).inc()
        self._call_seconds.labels(service, endpoint).observe(seconds)

    def hook_called(self, outcome: HookOutcome, seconds: float) -> None:
        self._hooks.labels(outcome.value).inc()
        self._hook_seconds.observe(seconds)

    def loop_passed(self, loop: str) -> None:
        self._loops.labels(loop).set_to_current_time()

    def log_line_dropped(self) -> None:
        self._dropped_lines.inc()

    # -- scraping ----------------------------------------------------------------------

    def update(self, counts: StoredCounts) -> None:
        """Serve ``counts`` (read from storage just now) at the next scrape."""
        self.stored.counts = counts

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The metrics in the text format ``accept`` asks for (Prometheus' or OpenMetrics)."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._scraped()), content_type

    def _scraped(self) -> CollectorRegistry:
        if not self.multiprocess:
            return self.registry
        from prometheus_client import multiprocess

        # Every process's files, and the storage counts (the database's, not a process's).
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        merged.register(self.stored)
        return merged

    def process_exiting(self) -> None:
        """Forget this process's live gauges (multiprocess mode), so a gone worker cannot page."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class StoredCountsCollector(Collector):
    """The last ``StoredCounts`` read, as gauges; nothing but the version before the first read.

    Every known state and status is listed, at 0 when there is none, so an alert on
    ``parked > 0`` has a series to watch before the first parked row.
    """

    def __init__(self) -> None:
        self.counts: StoredCounts | None = None

    def describe(self) -> Iterable[Metric]:
        # Registering must not read an empty snapshot: the families are known by name only.
        return []

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            f"{NAMESPACE}_build_info", "The miniprogram-pay version running.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        counts = self.counts
        if counts is None:
            return
        yield _by(
            "payments",
            "Payments by state.",
            "state",
            [s.value for s in PaymentState],
            counts.payments,
        )
        yield _by("inbox_items", "Webhook items by status.", "status", INBOX_STATUSES, counts.inbox)
        yield _by(
            "outbox_rows",
            "State changes for the host's on_state_change, by delivery status.",
            "status",
            OUTBOX_STATUSES,
            counts.outbox,
        )
        yield _by(
            "refunds",
            "Refunds by state (Requested, Received: outcome not known yet).",
            "state",
            [s.value for s in RefundState],
            counts.refunds,
        )
        oldest = GaugeMetricFamily(
            f"{NAMESPACE}_refunds_oldest_pending_seconds",
            "Time since the oldest refund in Requested or Received last moved; 0 when none.",
            labels=["state"],
        )
        for state in PENDING_REFUND_STATES:
            oldest.add_metric([state], counts.oldest_pending_refund_seconds.get(state, 0.0))
        yield oldest
        yield GaugeMetricFamily(
            f"{NAMESPACE}_stale_payments",
            "Payments still Created or Pending STALE_AFTER_SECONDS after their last change.",
            value=counts.stale_payments,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_conflicted_payments",
            "Payments with at least one event that contradicted them (a person should look).",
            value=counts.conflicted_payments,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_inbox_oldest_waiting_seconds",
            "Age of the oldest webhook item not applied yet (received or failed); 0 when none.",
            value=counts.oldest_waiting_inbox_seconds or 0.0,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_outbox_oldest_pending_seconds",
            "Age of the oldest state change not delivered to the host yet; 0 when none.",
            value=counts.oldest_pending_outbox_seconds or 0.0,
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_stored_counts_timestamp_seconds",
            "Unix time at which the counts above were read from the database.",
            value=counts.at.timestamp(),
        )


def _by(
    name: str, text: str, label: str, known: Iterable[str], found: dict[str, int]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{NAMESPACE}_{name}", text, labels=[label])
    for key in dict.fromkeys([*known, *sorted(found)]):
        family.add_metric([key], found.get(key, 0))
    return family
