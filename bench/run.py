"""Run the benchmark: ``python -m bench [--quick] [--only import,webhook,durability,flow,...]``.

Every figure is paired with a baseline measured in the same run, on the same
database, so the ratios hold on a noisy shared machine even when the absolute
numbers do not. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvloop

from bench import seed
from bench.common import ADMIN_KEY, webhook_headers
from bench.loadgen import Conn, LoadResult, percentile, run_load, summarize
from bench.servers import ROOT, Server

RESULTS = ROOT / "bench" / "results"
PLUGIN = "bench.plugin_app:create"
BASELINE = "bench.baseline:create"
SANDBOX = "bench.sandbox_app:create"
DUPLICATE_EVERY = 5  # every 5th request re-sends an earlier item: 20% duplicates


@dataclass(frozen=True)
class Plan:
    """How big each workload is (the full run and ``--quick``)."""

    levels: tuple[int, ...]
    webhook_seconds: float
    webhook_max: int
    pg_levels: tuple[int, ...]
    flow_users: tuple[int, ...]
    flow_seconds: float
    flow_max: int
    status_sizes: tuple[int, int]
    status_seconds: float
    status_max: int
    memory_small: int
    memory_large: int
    postgres: bool


FULL = Plan(
    levels=(1, 8, 32, 64),
    webhook_seconds=8.0,
    webhook_max=2000,
    pg_levels=(1, 64),
    flow_users=(1, 8),
    flow_seconds=15.0,
    flow_max=1500,
    status_sizes=(10_000, 1_000_000),
    status_seconds=6.0,
    status_max=20_000,
    memory_small=1_000,
    # 100_000 takes ~14 min alone at today's ~120 webhooks/s: over the 15-min budget.
    # Run it on its own with --memory-webhooks 100000.
    memory_large=20_000,
    postgres=True,
)
QUICK = Plan(
    levels=(1, 64),
    webhook_seconds=1.5,
    webhook_max=200,
    pg_levels=(64,),
    flow_users=(1, 4),
    flow_seconds=1.5,
    flow_max=40,
    status_sizes=(10_000, 50_000),
    status_seconds=1.5,
    status_max=2_000,
    memory_small=100,
    memory_large=500,
    postgres=True,
)


class Report:
    """Collects results, prints one machine-readable line per measurement."""

    def __init__(self, plan: Plan, quick: bool) -> None:
        self.data: dict[str, Any] = {
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "quick": quick,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "load_avg_at_start": os.getloadavg(),
            },
            "plan": plan.__dict__,
            "results": [],
        }
        self._last = time.perf_counter()

    def add(
        self, workload: str, fields: dict[str, Any], extra: dict[str, Any] | None = None
    ) -> None:
        self.data["results"].append({"workload": workload, **fields, **(extra or {})})
        line = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        print(f"bench: {workload} {line}", flush=True)

    def mark(self, step: str) -> None:
        """Record the wall-clock time and the load average at the end of each step."""
        now = time.perf_counter()
        self.data.setdefault("step_seconds", {})[step] = round(now - self._last, 1)
        self.data.setdefault("step_load_avg", {})[step] = os.getloadavg()[0]
        self._last = now

    def write(self) -> Path:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.data["load_avg_at_end"] = os.getloadavg()
        name = "quick" if self.data["quick"] else "full"
        path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
        text = json.dumps(self.data, indent=2, default=str)
        path.write_text(text)
        (RESULTS / f"latest-{name}.json").write_text(text)
        return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


# -- databases -------------------------------------------------------------------------


class Databases:
    """SQLite files in a temp folder; PostgreSQL through scripts/postgres (one db per use)."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mpp-bench-"))
        self.tmp.chmod(0o755)  # the PostgreSQL server runs as user postgres
        self.pg_dir: Path | None = None
        self.pg_url: str | None = None

    def sqlite(self, name: str) -> str:
        return f"sqlite+aiosqlite:///{self.tmp / name}.db"

    def postgres(self, name: str) -> str:
        if self.pg_url is None:
            self.pg_dir = self.tmp / "pg"
            out = subprocess.run(
                ["bash", "scripts/postgres", "start", str(self.pg_dir)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            )
            self.pg_url = out.stdout.strip().splitlines()[-1]
        _pg_exec(self.pg_url, name)
        return self.pg_url.rsplit("/", 1)[0] + "/" + name

    def close(self) -> None:
        if self.pg_dir is not None:
            subprocess.run(["bash", "scripts/postgres", "stop", str(self.pg_dir)], cwd=ROOT)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _pg_exec(url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        conn.autocommit = True
        conn.execute(f'CREATE DATABASE "{name}"')


@contextmanager
def servers(*specs: tuple[str, dict[str, str], str, int, str]) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for factory, env, health, workers, name in specs:
            started.append(Server(factory, env, health=health, workers=workers, name=name).start())
        yield started
    finally:
        for s in reversed(started):
            s.stop()


# -- workload 1: webhook ingestion -------------------------------------------------------


class WebhookFeed:
    """Request ``i``: a signed AUTHORISATION for the next reference, or (20%) a repeat."""

    def __init__(self, path: str, references: list[str], seed_value: int) -> None:
        self.path = path
        self.bodies = {ref: seed.webhook_body(ref) for ref in references}
        self.fresh = iter(references)
        self.sent: list[str] = []
        self.rng = random.Random(seed_value)
        self.headers = webhook_headers()
        self.refs: dict[int, str] = {}

    def __call__(self, i: int) -> tuple[str, str, dict[str, str], bytes]:
        ref = None
        if i % DUPLICATE_EVERY != DUPLICATE_EVERY - 1 or not self.sent:
            ref = next(self.fresh, None)
            if ref is not None:
                self.sent.append(ref)
        if ref is None:
            ref = self.sent[self.rng.randrange(len(self.sent))]
        self.refs[i] = ref
        return "POST", self.path, self.headers, self.bodies[ref]


def _needed(plan_max: int) -> int:
    return plan_max * (DUPLICATE_EVERY - 1) // DUPLICATE_EVERY + 2


async def _webhook_load(
    server: Server, path: str, refs: list[str], c: int, plan: Plan
) -> tuple[LoadResult, WebhookFeed]:
    feed = WebhookFeed(path, refs, seed_value=c)
    cpu = server.loop_cpu_s() if server.workers == 1 else 0.0
    result = await run_load(
        server.port, feed, concurrency=c, max_requests=plan.webhook_max,
        max_seconds=plan.webhook_seconds,
        ok=lambda status, body: status == 200 and body == b"[accepted]",
        tag=lambda i: feed.refs[i],
    )  # fmt: skip
    if server.workers == 1:
        result.loop_cpu_s = server.loop_cpu_s() - cpu
    return result, feed


def loop_cpu_ms(result: LoadResult) -> float:
    """Event-loop CPU per answered request, ms (the serving process's main thread)."""
    answered = result.count
    return round(result.loop_cpu_s * 1000 / answered, 2) if answered else 0.0


def _wait_applied(url: str, timeout: float = 120.0) -> float:
    """Seconds until no stored webhook item waits to be applied."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        rows = seed.query(
            url, "SELECT count(*) FROM mpp_notification WHERE status IN ('received','failed')"
        )
        if rows[0][0] == 0:
            return time.perf_counter() - t0
        time.sleep(0.05)
    return -1.0


def _webhook_facts(url: str, prefix: str, result: LoadResult, feed: WebhookFeed) -> dict[str, Any]:
    """Lag acceptance -> state change, applied throughput, and exactly-once checks."""
    lo, hi = prefix, prefix + "~"
    received, applied = seed.epoch_sql(url, "received_at"), seed.epoch_sql(url, "applied_at")
    rows = seed.query(
        url,
        f"SELECT merchant_reference, {received}, {applied}, deliveries, status"
        " FROM mpp_notification WHERE merchant_reference >= ? AND merchant_reference < ?",
        (lo, hi),
    )
    lag_ms = [(a - r) * 1000 for _, r, a, _, _ in rows if a is not None]
    last_applied = max((a for _, _, a, _, _ in rows if a is not None), default=result.started)
    at = seed.epoch_sql(url, "t.at")
    moved = seed.query(
        url,
        f"SELECT p.reference, {at} FROM mpp_transition t JOIN mpp_payment p ON p.id = t.payment_id"
        " WHERE t.to_state = 'Authorised' AND p.reference >= ? AND p.reference < ?",
        (lo, hi),
    )
    first_answer: dict[str, float] = {}
    for ref, done, status in zip(result.tags, result.done_at, result.statuses, strict=True):
        if status == 200 and isinstance(ref, str):
            first_answer.setdefault(ref, done)
    client_lag = [(t - first_answer[ref]) * 1000 for ref, t in moved if ref in first_answer]
    accepted = sum(1 for s in result.statuses if s == 200)
    deliveries = sum(d for _, _, _, d, _ in rows)
    applied_n = sum(1 for *_, s in rows if s == "applied")
    return {
        "lag_p50_ms": round(percentile(lag_ms, 50), 1),
        "lag_p99_ms": round(percentile(lag_ms, 99), 1),
        "client_lag_p50_ms": round(percentile(client_lag, 50), 1),
        "applied_rps": round(applied_n / max(last_applied - result.started, 1e-3), 1),
        "distinct": len(feed.sent),
        "exactly_once": len(moved) == len(feed.sent) == applied_n and deliveries == accepted,
    }


async def webhook_workload(report: Report, plan: Plan, dbs: Databases, backend: str) -> None:
    workers_options = (1,) if backend == "sqlite" else (1, 2)
    levels = plan.levels if backend == "sqlite" else plan.pg_levels
    for workers in workers_options:
        url = (
            dbs.sqlite(f"webhook-{workers}")
            if backend == "sqlite"
            else dbs.postgres(f"webhook{workers}")
        )
        refs_by_level, seeded_s = await _seeded(url, levels, plan)
        env = {"BENCH_DB_URL": url}
        with servers(
            (BASELINE, env, "/base/health", workers, f"baseline-{backend}"),
            (PLUGIN, env, "/pay/health", workers, f"plugin-{backend}"),
        ) as (base, plugin):
            for c in levels:
                b = await _baseline_level(base, c, plan)
                fields, p = await _plugin_level(plugin, url, refs_by_level[c], c, plan, b)
                fields = {"db": backend, "workers": workers, "c": c, **fields}
                fields["baseline_peak_rss_mb"] = base.peak_rss_mb()
                report.add("webhook", fields, {"plugin": p, "baseline": b, "seed_s": seeded_s})


async def _seeded(
    url: str, levels: tuple[int, ...], plan: Plan
) -> tuple[dict[int, list[str]], float]:
    """A migrated database with Pending payments for every level's webhooks."""
    await seed.create_schema(url)
    refs_by_level = {
        c: [f"wh-{c:03d}-{i:06d}" for i in range(_needed(plan.webhook_max))] for c in levels
    }
    t0 = time.perf_counter()
    await seed.seed_pending(url, [r for refs in refs_by_level.values() for r in refs])
    return refs_by_level, time.perf_counter() - t0


async def _baseline_level(base: Server, c: int, plan: Plan) -> dict[str, Any]:
    b_refs = [f"bl-{c:03d}-{i:06d}" for i in range(_needed(plan.webhook_max))]
    b_res, _ = await _webhook_load(base, "/base/webhooks/adyen", b_refs, c, plan)
    return {**summarize(b_res), "loop_cpu_ms": loop_cpu_ms(b_res)}


async def _plugin_level(
    plugin: Server, url: str, refs: list[str], c: int, plan: Plan, b: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One level of webhook load on the plugin; its figures against the baseline's ``b``."""
    single = plugin.workers == 1
    cpu = plugin.loop_cpu_s() if single else 0.0
    p_res, feed = await _webhook_load(plugin, "/pay/webhooks/adyen", refs, c, plan)
    drain_s = _wait_applied(url)
    if single:  # after the drain: the deliveries and their marks are these requests' too
        await asyncio.sleep(0.2)  # the last delivered marks linger 50 ms
        p_res.loop_cpu_s = plugin.loop_cpu_s() - cpu
    facts = _webhook_facts(url, f"wh-{c:03d}-", p_res, feed)
    p = summarize(p_res)
    fields = {
        "rps": p["rps"], "p50_ms": p["p50_ms"], "p95_ms": p["p95_ms"],
        "p99_ms": p["p99_ms"], "errors": p["errors"],
        "baseline_rps": b["rps"], "baseline_p50_ms": b["p50_ms"],
        "baseline_p99_ms": b["p99_ms"], "baseline_errors": b["errors"],
        "ratio": _ratio(p["rps"], b["rps"]),
        "applied_rps": facts["applied_rps"],
        "applied_ratio": _ratio(facts["applied_rps"], b["rps"]),
        "lag_p50_ms": facts["lag_p50_ms"], "lag_p99_ms": facts["lag_p99_ms"],
        "client_lag_p50_ms": facts["client_lag_p50_ms"],
        "drain_s": round(drain_s, 2), "exactly_once": facts["exactly_once"],
        "loop_cpu_ms": loop_cpu_ms(p_res), "baseline_loop_cpu_ms": b["loop_cpu_ms"],
        "peak_rss_mb": plugin.peak_rss_mb(),
        "rss_per_worker_mb": plugin.peak_rss_per_worker_mb(),
    }  # fmt: skip
    return fields, p


# -- workload 1b: what synchronous=FULL costs on SQLite -----------------------------------

SYNCHRONOUS = ("normal", "full")


async def durability_workload(report: Report, plan: Plan, dbs: Databases) -> None:
    """Webhook ingestion with SQLite at synchronous=NORMAL and =FULL, level by level.

    Each setting has its own database file and server; the baseline (one INSERT per
    request, at the default FULL) runs before both at every level, so each level
    compares the two settings under the same machine load.
    """
    urls = {mode: dbs.sqlite(f"durability-{mode}") for mode in SYNCHRONOUS}
    refs = {mode: await _seeded(url, plan.levels, plan) for mode, url in urls.items()}
    specs = [(BASELINE, {"BENCH_DB_URL": urls["normal"]}, "/base/health", 1, "baseline")]
    specs += [
        (PLUGIN, {"BENCH_DB_URL": url, "BENCH_SQLITE_SYNCHRONOUS": mode}, "/pay/health", 1, mode)
        for mode, url in urls.items()
    ]
    with servers(*specs) as (base, *plugins):
        for c in plan.levels:
            b = await _baseline_level(base, c, plan)
            measured: dict[str, dict[str, Any]] = {}
            for mode, plugin in zip(SYNCHRONOUS, plugins, strict=True):
                fields, _ = await _plugin_level(plugin, urls[mode], refs[mode][0][c], c, plan, b)
                measured[mode] = fields
            normal, full = measured["normal"], measured["full"]
            fields = {
                "db": "sqlite", "c": c,
                "normal_ratio": normal["ratio"], "full_ratio": full["ratio"],
                "full_vs_normal_rps": _ratio(full["rps"], normal["rps"]),
                "full_vs_normal_p50": _ratio(full["p50_ms"], normal["p50_ms"]),
                "full_vs_normal_p99": _ratio(full["p99_ms"], normal["p99_ms"]),
                "exactly_once": normal["exactly_once"] and full["exactly_once"],
            }  # fmt: skip
            report.add("durability", fields, {"normal": normal, "full": full, "baseline": b})


# -- workload 2: the full payment flow ---------------------------------------------------


ENDPOINTS = ("session", "payments", "details")


async def _flows(
    port: int, prefix: str, plan: Plan, users: int, *, plugin: bool
) -> tuple[dict[str, list[float]], int, float, float, int]:
    base = "/pay" if plugin else "/base"
    lat: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
    counter = iter(range(plan.flow_max))
    deadline = time.perf_counter() + plan.flow_seconds
    done = 0
    errors = 0
    json_h = {"Content-Type": "application/json"}

    async def call(
        conn: Conn, name: str, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any] | None:
        nonlocal errors
        t0 = time.perf_counter()
        status, content = await conn.request(
            "POST", path, {**json_h, **headers}, json.dumps(body).encode()
        )
        lat[name].append(time.perf_counter() - t0)
        if status != 200:
            errors += 1
            return None
        answer: dict[str, Any] = json.loads(content)
        return answer

    async def user(u: int) -> None:
        nonlocal done
        conn = Conn(port)
        try:
            for n in counter:
                if time.perf_counter() >= deadline:
                    return
                ref = f"{prefix}{n:06d}"
                s = await call(
                    conn, "session", f"{base}/session", {"code": f"shopper{u}.{prefix}{n}"}, {}
                )
                if s is None:
                    continue
                auth = {"Authorization": f"Bearer {s['token']}"}
                body = {
                    "paymentMethod": {"type": "wechatpayMiniProgram"},
                    "reference": ref,
                    "amount": {"currency": "CNY", "value": 1130},
                }
                pay = await call(conn, "payments", f"{base}/payments", body, auth)
                if pay is None:
                    continue
                details: dict[str, Any] = {"details": {"paymentStatus": "requestPayment:ok"}}
                if plugin:
                    details["reference"] = ref
                else:
                    details["paymentData"] = pay.get("paymentData") or pay["action"]["paymentData"]
                result = await call(conn, "details", f"{base}/payments/details", details, auth)
                if result is not None and result.get("resultCode") == "Authorised":
                    done += 1
        finally:
            await conn.close()

    started = time.time()
    t0 = time.perf_counter()
    await asyncio.gather(*(user(u) for u in range(users)))
    return lat, done, time.perf_counter() - t0, started, errors


def _wait_webhooks(url: str, table_sql: str, expected: int, timeout: float = 60.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if seed.query(url, table_sql)[0][0] >= expected:
            return time.perf_counter() - t0
        time.sleep(0.05)
    return -1.0


async def flow_workload(report: Report, plan: Plan, dbs: Databases) -> None:
    url = dbs.sqlite("flow")
    await seed.create_schema(url)
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for kind in ("baseline", "plugin"):
        plugin = kind == "plugin"
        sandbox = Server(SANDBOX, {}, health="/_sandbox/scenarios", name=f"sandbox-{kind}")
        factory, health = (PLUGIN, "/pay/health") if plugin else (BASELINE, "/base/health")
        env = {"BENCH_DB_URL": url, "BENCH_SANDBOX_URL": sandbox.url}
        target = Server(factory, env, health=health, name=f"{kind}-flow")
        base = "/pay" if plugin else "/base"
        sandbox.env["BENCH_WEBHOOK_URL"] = f"{target.url}{base}/webhooks/adyen"
        if plugin:
            sql = "SELECT count(*) FROM mpp_notification WHERE status = 'applied'"
        else:
            sql = "SELECT count(*) FROM bench_webhook"
        total = 0
        with sandbox, target:
            for users in plan.flow_users:
                prefix = f"fl-{kind[0]}{users:02d}-"
                cpu = target.loop_cpu_s()
                lat, done, elapsed, _, errors = await _flows(
                    target.port, prefix, plan, users, plugin=plugin
                )
                total += done
                settle_s = _wait_webhooks(url, sql, total)
                await asyncio.sleep(0.2)  # the last delivered marks linger 50 ms
                flow_cpu_ms = (target.loop_cpu_s() - cpu) * 1000 / done if done else 0.0
                results[kind, users] = {
                    "lat": lat, "done": done, "elapsed": elapsed, "errors": errors,
                    "settle_s": settle_s, "loop_cpu_ms": round(flow_cpu_ms, 2),
                    "peak_rss_mb": target.peak_rss_mb(),
                    "rss_per_worker_mb": target.peak_rss_per_worker_mb(),
                }  # fmt: skip
    for users in plan.flow_users:
        _report_flow(report, users, results["baseline", users], results["plugin", users])


def _report_flow(report: Report, users: int, b: dict[str, Any], p: dict[str, Any]) -> None:
    b_rate = b["done"] / b["elapsed"]
    p_rate = p["done"] / p["elapsed"]
    fields: dict[str, Any] = {
        "users": users,
        "rps": round(p_rate, 1),
        "baseline_rps": round(b_rate, 1),
        "ratio": _ratio(p_rate, b_rate),
        "errors": p["errors"],
        "baseline_errors": b["errors"],
    }
    for e in ENDPOINTS:
        p50 = percentile(p["lat"][e], 50) * 1000
        b50 = percentile(b["lat"][e], 50) * 1000
        fields[f"{e}_p50_ms"] = round(p50, 2)
        fields[f"{e}_p99_ms"] = round(percentile(p["lat"][e], 99) * 1000, 2)
        fields[f"{e}_baseline_p50_ms"] = round(b50, 2)
        fields[f"{e}_added_ms"] = round(p50 - b50, 2)
    fields["webhooks_settled_s"] = round(p["settle_s"], 2)
    # Per completed flow (session, payments, details, its webhook, its deliveries).
    fields["loop_cpu_ms"] = p["loop_cpu_ms"]
    fields["baseline_loop_cpu_ms"] = b["loop_cpu_ms"]
    fields["peak_rss_mb"] = p["peak_rss_mb"]
    fields["rss_per_worker_mb"] = p["rss_per_worker_mb"]
    report.add("flow", fields, {"completed": p["done"], "baseline_completed": b["done"]})


# -- workload 3: status queries as the table grows ---------------------------------------


async def _status_load(
    server: Server, path: str, refs: list[str], plan: Plan, *, warm: bool = False
) -> dict[str, Any]:
    rng = random.Random(7)
    headers = {"X-Admin-Key": ADMIN_KEY}
    cpu = server.loop_cpu_s()

    def make(i: int) -> tuple[str, str, dict[str, str], bytes]:
        return "GET", path + refs[rng.randrange(len(refs))], headers, b""

    result = await run_load(
        server.port, make, concurrency=8,
        max_requests=200 if warm else plan.status_max,
        max_seconds=1.0 if warm else plan.status_seconds,
    )  # fmt: skip
    result.loop_cpu_s = server.loop_cpu_s() - cpu
    return {**summarize(result), "loop_cpu_ms": loop_cpu_ms(result)}


async def status_workload(report: Report, plan: Plan, dbs: Databases, backend: str) -> None:
    small, large = plan.status_sizes
    url = dbs.sqlite("status") if backend == "sqlite" else dbs.postgres("status")
    await seed.create_schema(url)
    seen: dict[int, dict[str, Any]] = {}
    loaded = 0
    for size in (small, large):
        t0 = time.perf_counter()
        seed.bulk_payments(url, size - loaded, f"st-{size:08d}-")
        seed_s = time.perf_counter() - t0
        loaded = size
        refs = seed.status_references(size, small)
        env = {"BENCH_DB_URL": url}
        with servers(
            (BASELINE, env, "/base/health", 1, f"baseline-status-{backend}"),
            (PLUGIN, env, "/pay/health", 1, f"plugin-status-{backend}"),
        ) as (base, plugin):
            await _status_load(base, "/base/payments/", refs[:200], plan, warm=True)
            await _status_load(plugin, "/pay/payments/", refs[:200], plan, warm=True)
            b = await _status_load(base, "/base/payments/", refs, plan)
            p = await _status_load(plugin, "/pay/payments/", refs, plan)
            rss, rss_worker = plugin.peak_rss_mb(), plugin.peak_rss_per_worker_mb()
        seen[size] = p
        fields: dict[str, Any] = {
            "db": backend, "rows": size,
            "rps": p["rps"], "p50_ms": p["p50_ms"], "p99_ms": p["p99_ms"], "errors": p["errors"],
            "baseline_rps": b["rps"], "baseline_p50_ms": b["p50_ms"],
            "ratio": _ratio(p["rps"], b["rps"]),
            "loop_cpu_ms": p["loop_cpu_ms"], "baseline_loop_cpu_ms": b["loop_cpu_ms"],
        }  # fmt: skip
        if size == large:
            fields["growth_p50"] = _ratio(p["p50_ms"], seen[small]["p50_ms"])
        fields["peak_rss_mb"] = rss
        fields["rss_per_worker_mb"] = rss_worker
        report.add("status", fields, {"seed_s": round(seed_s, 2)})


# -- workload 5: memory after many webhooks ----------------------------------------------


async def memory_workload(report: Report, plan: Plan, dbs: Databases) -> None:
    url = dbs.sqlite("memory")
    await seed.create_schema(url)
    seed.bulk_payments(url, plan.memory_large, "mem-")
    refs = [f"mem-{i:07d}" for i in range(plan.memory_large)]
    headers = webhook_headers()
    bodies: Callable[[int], bytes] = lambda i: seed.webhook_body(refs[i])  # noqa: E731
    env = {"BENCH_DB_URL": url}
    rss: dict[int, float] = {}
    with servers((PLUGIN, env, "/pay/health", 1, "plugin-memory")) as (plugin,):
        rss[0] = plugin.rss_mb()
        sent = 0
        t0 = time.perf_counter()
        for upto in (plan.memory_small, plan.memory_large):
            first = sent

            def make(i: int, first: int = first) -> tuple[str, str, dict[str, str], bytes]:
                return "POST", "/pay/webhooks/adyen", headers, bodies(first + i)

            result = await run_load(
                plugin.port, make, concurrency=32, max_requests=upto - sent, max_seconds=900
            )
            sent = upto
            _wait_applied(url)
            rss[upto] = plugin.rss_mb()
            errors = result.errors
        elapsed = time.perf_counter() - t0
        peak = plugin.peak_rss_mb()
    growth = rss[plan.memory_large] - rss[plan.memory_small]
    report.add(
        "memory",
        {
            "webhooks": plan.memory_large,
            "rss_start_mb": rss[0],
            f"rss_after_{plan.memory_small}_mb": rss[plan.memory_small],
            f"rss_after_{plan.memory_large}_mb": rss[plan.memory_large],
            "growth_mb": round(growth, 1),
            "peak_rss_mb": peak,
            "rps": round(plan.memory_large / elapsed, 1),
            "errors": errors,
        },
    )


# -- main ------------------------------------------------------------------------------


# -- workload 0: import time -------------------------------------------------------------

# VmHWM, not ru_maxrss: a forked child's ru_maxrss starts from its parent's size.
IMPORT_PROBE = """
import re, sys, time
t = time.perf_counter()
exec(sys.argv[1])
took = time.perf_counter() - t
status = open("/proc/self/status").read()
print(took, len(sys.modules), int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) / 1024)
"""
IMPORTS = {
    "baseline": "pass",
    "package": "import miniprogram_pay",
    "host": "from miniprogram_pay import Settings, create_app",
}


def import_workload(report: Report, runs: int = 5) -> None:
    """Seconds, modules and RSS of a fresh interpreter importing the package (median of runs)."""
    fields: dict[str, Any] = {}
    for label, statement in IMPORTS.items():
        samples = []
        for _ in range(runs):
            out = subprocess.run(
                [sys.executable, "-c", IMPORT_PROBE, statement],
                capture_output=True, text=True, check=True,
            ).stdout.split()  # fmt: skip
            samples.append((float(out[0]), int(out[1]), float(out[2])))
        samples.sort()
        seconds, modules, rss = samples[len(samples) // 2]
        fields[f"{label}_s"] = round(seconds, 3)
        fields[f"{label}_modules"] = modules
        fields[f"{label}_rss_mb"] = round(rss, 1)
    report.add("import", fields)


WORKLOADS = ("import", "webhook", "durability", "flow", "status", "memory")


async def run(
    report: Report, plan: Plan, quick: bool, only: set[str], postgres: bool, sqlite: bool = True
) -> None:
    dbs = Databases()
    t0 = time.perf_counter()
    try:
        if "import" in only:
            import_workload(report)
        report.mark("import")
        if sqlite and "webhook" in only:
            await webhook_workload(report, plan, dbs, "sqlite")
        report.mark("webhook-sqlite")
        if sqlite and "durability" in only:
            await durability_workload(report, plan, dbs)
        report.mark("durability")
        if sqlite and "flow" in only:
            await flow_workload(report, plan, dbs)
        report.mark("flow")
        if sqlite and "status" in only:
            await status_workload(report, plan, dbs, "sqlite")
        report.mark("status-sqlite")
        if postgres and "webhook" in only:
            await webhook_workload(report, plan, dbs, "postgresql")
        report.mark("webhook-postgresql")
        if postgres and "status" in only and not quick:
            await status_workload(report, plan, dbs, "postgresql")
        report.mark("status-postgresql")
        if "memory" in only:
            await memory_workload(report, plan, dbs)
        report.mark("memory")
    finally:
        dbs.close()
        report.data["total_seconds"] = round(time.perf_counter() - t0, 1)


QUIET_POLL_SECONDS = 5.0


def wait_for_quiet(below: float, max_seconds: float) -> dict[str, float]:
    """Wait (bounded) until the 1-minute load average drops below ``below``.

    The machine is shared: a run started while others' test suites run measures them too.
    """
    t0 = time.monotonic()
    while os.getloadavg()[0] >= below and time.monotonic() - t0 < max_seconds:
        time.sleep(QUIET_POLL_SECONDS)
    waited = round(time.monotonic() - t0, 1)
    load = os.getloadavg()[0]
    print(f"bench: quiet waited_s={waited} load_1min={load:.2f} below={below}", flush=True)
    return {"waited_s": waited, "load_1min": load, "below": below}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="miniprogram_pay load benchmark")
    parser.add_argument("--quick", action="store_true", help="every workload, small (< 60 s)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated workloads")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument(
        "--no-sqlite", action="store_true", help="PostgreSQL's steps alone (and memory)"
    )
    parser.add_argument("--memory-webhooks", type=int, help="webhooks for the memory workload")
    parser.add_argument(
        "--quiet-below", type=float, help="first wait until the 1-minute load is below this"
    )
    parser.add_argument(
        "--quiet-wait", type=float, default=600.0, help="wait at most this long (seconds)"
    )
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.memory_webhooks:
        plan = dataclasses.replace(plan, memory_large=args.memory_webhooks)
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = only - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {WORKLOADS}")
    quiet = wait_for_quiet(args.quiet_below, args.quiet_wait) if args.quiet_below else None
    report = Report(plan, args.quick)
    report.data["quiet"] = quiet
    try:
        uvloop.run(
            run(
                report,
                plan,
                args.quick,
                only,
                postgres=plan.postgres and not args.no_postgres,
                sqlite=not args.no_sqlite,
            )
        )
    finally:
        path = report.write()
    print(f"bench: done total_s={report.data['total_seconds']} results={path.relative_to(ROOT)}")
