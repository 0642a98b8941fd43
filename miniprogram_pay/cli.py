"""The ``miniprogram-pay`` command (also ``python -m miniprogram_pay``).

```
miniprogram-pay serve [--sandbox] [--host H] [--port P] [--workers N] [--order-resolver M:F]
miniprogram-pay demo [--scenario NAME | --all] [--action ok|cancel|fail] [--style S] [--stay]
miniprogram-pay sandbox [--port P] [--webhook-url URL] [--scenario NAME]
miniprogram-pay shopper --api URL [--sandbox URL] [--scenario NAME] [--action ok|cancel|fail]
miniprogram-pay webhook send --event AUTHORISATION --success false --reference R
miniprogram-pay refund REFERENCE [--amount N] [--reason R] [--idempotency-key K] [--api URL]
miniprogram-pay db upgrade | current | downgrade REVISION
miniprogram-pay outbox requeue [--id N ...]
miniprogram-pay notifications requeue --status parked|ignored [--id N ...]
```

Errors are one line on stderr (``error: <message>``) and a non-zero exit code:
1 for a failure (or a demo payment that did not end as expected), 2 for bad
usage, 130 when interrupted. See ``docs/cli.md``.

Adding a command: write ``cmd_<name>(args, out) -> int`` (raise ``CommandError``
or any ``MiniProgramPayError`` for a failure: it becomes the one ``error:`` line),
and ``_add_<name>(commands)`` that registers its parser with a ``help`` for the
command and for every option (``tests/cli/test_help.py`` checks that); import
what the command needs inside it, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import functools
import importlib
import importlib.util
import inspect
import logging
import os
import re
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from miniprogram_pay._version import __version__
from miniprogram_pay.config import DEFAULT_DATABASE_URL, ENV_PREFIX
from miniprogram_pay.errors import MiniProgramPayError

__all__ = ["main"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
SANDBOX_PORT = 8100
DEFAULT_WEBHOOK_URL = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/pay/webhooks/adyen"
SCHEMA_MODULE = "miniprogram_pay.storage.schema"
EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
LABEL_WIDTH = 26


class CommandError(MiniProgramPayError):
    """A command cannot do what was asked; the message says why and what to do."""

    code = "command_failed"


# -- output ------------------------------------------------------------------------------


class Printer:
    """Short aligned lines on stdout, safe to call from the servers' thread."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self._lock = threading.Lock()

    def line(self, label: str, text: str = "") -> None:
        if self.quiet:
            return
        # A label as wide as the column still gets a gap before its text.
        width = max(LABEL_WIDTH, len(label) + 2)
        with self._lock:
            print(f"  {label:<{width}}{text}".rstrip(), flush=True)

    def plain(self, text: str = "") -> None:
        with self._lock:
            print(text, flush=True)


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name) or None


def _redact_url(url: str) -> str:
    """A database URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


# -- serve -------------------------------------------------------------------------------


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the package's own logger on the same handler."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["miniprogram_pay"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def _create_tables(database_url: str, schema: str | None) -> None:
    """Create missing tables once, before several workers race to do it."""
    from miniprogram_pay.storage.engine import Database
    from miniprogram_pay.storage.schema import create_all

    async def create() -> None:
        database = Database(database_url, schema=schema)
        try:
            await create_all(database)
        finally:
            await database.dispose()

    asyncio.run(create())


def _need_uvicorn(command: str) -> None:
    if importlib.util.find_spec("uvicorn") is None:
        raise CommandError(
            f"`miniprogram-pay {command}` runs uvicorn, which is not installed: "
            "pip install 'miniprogram-pay[serve]'"
        )


def cmd_serve(args: argparse.Namespace, out: Printer) -> int:
    if args.workers < 1:
        raise CommandError("--workers must be at least 1")
    _need_uvicorn("serve")
    if args.sandbox:
        if args.order_resolver or args.on_state_change:
            raise CommandError(
                "--order-resolver and --on-state-change are for serve without --sandbox"
            )
        return _serve_sandboxed(args, out)
    return _serve_plain(args, out)


def _preflight(settings: Any) -> None:
    """Open the database and check its schema once, so a bad URL is one line, not a traceback."""
    from miniprogram_pay.storage.engine import Database
    from miniprogram_pay.storage.schema import prepare

    async def check() -> None:
        database = Database(settings.database_url, schema=settings.database_schema, pool_size=1)
        try:
            await prepare(database, auto_migrate=settings.auto_migrate)
        finally:
            await database.dispose()

    asyncio.run(check())


def _serve_plain(args: argparse.Namespace, out: Printer) -> int:
    import uvicorn

    from miniprogram_pay.app import create_app
    from miniprogram_pay.config import Settings
    from miniprogram_pay.host import (
        ON_STATE_CHANGE_VARIABLE,
        ORDER_RESOLVER_VARIABLE,
        create_host_app,
        load_callable,
    )

    settings = Settings.from_env()  # a bad configuration fails here, in one line
    resolver = (
        load_callable(args.order_resolver, option="--order-resolver")
        if args.order_resolver
        else None
    )
    hook = (
        load_callable(args.on_state_change, option="--on-state-change")
        if args.on_state_change
        else None
    )
    plugin = create_app(settings, order_resolver=resolver, on_state_change=hook)  # checks the hooks
    _preflight(settings)
    log_config = _log_config(args.log_level)
    out.plain(f"miniprogram-pay: API at http://{args.host}:{args.port}/pay")
    if args.workers == 1:
        uvicorn.run(create_host_app(plugin), host=args.host, port=args.port, log_config=log_config)
        return 0
    for variable, spec in (
        (ORDER_RESOLVER_VARIABLE, args.order_resolver),
        (ON_STATE_CHANGE_VARIABLE, args.on_state_change),
    ):
        if spec:
            os.environ[variable] = spec  # the workers are new processes: they import it again
    uvicorn.run(
        "miniprogram_pay.host:create_host_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_config=log_config,
    )
    return 0


def _serve_sandboxed(args: argparse.Namespace, out: Printer) -> int:
    from miniprogram_pay.sandbox.server import SandboxedServers, free_port

    port = args.port
    if args.workers > 1 and port == 0:
        port = free_port(args.host)  # uvicorn's workers bind the port themselves
    sandbox_port = args.sandbox_port
    if sandbox_port is None:
        sandbox_port = port + 1 if port else 0
    servers = SandboxedServers(
        host=args.host,
        port=port,
        sandbox_port=sandbox_port,
        response_style=args.style,
        merchant=args.workers == 1,
        log_config=_log_config(args.log_level),
        log_level=args.log_level,
    )
    try:
        _preflight(servers.settings)
    except BaseException:
        servers.close()
        raise
    ready = _banner(servers, args, out)
    if args.workers == 1:
        servers.run(on_ready=ready)
        return EXIT_INTERRUPTED if servers.interrupted else 0
    return _serve_sandboxed_workers(servers, args, port, ready)


def _serve_sandboxed_workers(
    servers: Any, args: argparse.Namespace, port: int, ready: Callable[[], None]
) -> int:
    import uvicorn

    # The workers are new processes: they read the same settings (one session secret) from here.
    os.environ.update(servers.environment)
    _create_tables(servers.settings.database_url, servers.settings.database_schema)
    servers.start_in_thread()
    ready()
    try:
        uvicorn.run(
            "miniprogram_pay.sandbox.server:create_sandboxed_app",
            factory=True,
            host=args.host,
            port=port,
            workers=args.workers,
            log_config=_log_config(args.log_level),
        )
    finally:
        servers.close()
    return 0


def _banner(servers: Any, args: argparse.Namespace, out: Printer) -> Callable[[], None]:
    def ready() -> None:
        out.plain("miniprogram-pay serve --sandbox")
        out.line("console", f"{servers.sandbox_url}/ (open it in a browser)")
        out.line("api", servers.api_url)
        out.line("sandbox", f"{servers.sandbox_url} (Adyen /adyen/v71, WeChat /wechat, /_sandbox)")
        out.line("webhooks", servers.api_url + "/webhooks/adyen")
        out.line("database", _redact_url(servers.database_url) + _left_behind(servers))
        out.line("workers", str(args.workers))
        if servers.admin_api_key == _sandbox_admin_key():
            out.line("admin key", f"{servers.admin_api_key} (header X-Admin-Key)")
        out.plain("ready (Ctrl-C to stop)")

    return ready


def _left_behind(servers: Any) -> str:
    if servers.database_url == DEFAULT_DATABASE_URL:
        return " (a file in this directory; it stays after the server stops)"
    return ""


def _sandbox_admin_key() -> str:
    from miniprogram_pay.sandbox.server import ADMIN_API_KEY

    return ADMIN_API_KEY


# -- demo --------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace, out: Printer) -> int:
    _need_uvicorn("demo")
    _quiet_package_logs()
    with tempfile.TemporaryDirectory(prefix="miniprogram-pay-demo-") as tmp:
        database_url = args.database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'demo.db'}"
        return _demo_with_database(args, out, database_url)


def _quiet_package_logs() -> None:
    """The demo tells its own story: only the package's errors reach stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    package = logging.getLogger("miniprogram_pay")
    package.addHandler(handler)
    package.propagate = False


def _demo_with_database(args: argparse.Namespace, out: Printer, database_url: str) -> int:
    from miniprogram_pay.sandbox.server import SandboxedServers

    watch = _StateWatcher(out)
    # The demo ignores MINIPROGRAM_PAY_* variables: it always plays against fresh sandbox values.
    servers = SandboxedServers(
        environ={},
        database_url=database_url,
        response_style=args.style,
        on_state_change=watch.hook,
    )
    with servers:
        out.plain("miniprogram-pay demo: a shopper pays in a Mini Program, against the sandbox")
        out.line("merchant API", servers.api_url)
        out.line("sandbox", f"{servers.sandbox_url} (responses in {args.style!r} style)")
        out.line("database", _redact_url(database_url))
        play = _play_all if args.all else _play_one
        code = asyncio.run(play(args, out, servers, watch))
        _print_metrics(out, servers)
        if args.stay:
            _stay(out, servers)
        return code


# The figures the demo prints after its payment: (metric, labels to show, what it is).
DEMO_FIGURES = (
    ("miniprogram_pay_payments", ("state",), "payments"),
    ("miniprogram_pay_refunds", ("state",), "refunds"),
    ("miniprogram_pay_webhooks_received_total", ("outcome", "reason"), "webhooks"),
    ("miniprogram_pay_upstream_calls_total", ("service", "endpoint", "outcome"), "calls"),
    ("miniprogram_pay_hook_calls_total", ("outcome",), "hook calls"),
)


def _print_metrics(out: Printer, servers: Any) -> None:
    """The non-zero figures of the plugin's own ``/pay/metrics``, as Prometheus scrapes them."""
    import httpx

    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ModuleNotFoundError:
        out.line("metrics", "off (pip install 'miniprogram-pay[metrics]')")
        return
    answer = httpx.get(
        servers.api_url + "/metrics",
        headers={"Authorization": f"Bearer {servers.admin_api_key}"},
        timeout=10,
    )
    if answer.status_code != 200:
        out.line("metrics", f"GET /pay/metrics answered {answer.status_code}")
        return
    samples = [s for f in text_string_to_metric_families(answer.text) for s in f.samples]
    out.plain()
    out.line("metrics", f"GET {servers.api_url}/metrics (the non-zero series)")
    for name, labels, title in DEMO_FIGURES:
        for sample in samples:
            if sample.name == name and sample.value:
                shown = ",".join(sample.labels[k] for k in labels if sample.labels.get(k))
                out.line(f"  {title}", f"{shown} {sample.value:g}")


def _stay(out: Printer, servers: Any) -> None:
    """Keep serving until Ctrl-C, for a look at the back office and the metrics."""
    out.plain()
    out.line("back office", f"{servers.api_url}/admin/office")
    out.line("metrics", f"{servers.api_url}/metrics")
    out.line("admin key", f"{servers.admin_api_key} (X-Admin-Key, or Bearer for /metrics)")
    out.plain("serving until Ctrl-C")
    stopped = threading.Event()
    # Handlers of our own: a shell starts a background job with SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    while not stopped.wait(1.0):
        pass
    out.plain()


class _StateWatcher:
    """``on_state_change`` for the demo: prints the changes of the payment being played."""

    def __init__(self, out: Printer) -> None:
        self.out = out
        self.prefix: str | None = None
        # A refund's changes reach the hook while its request is still printing:
        # they are held, then printed under the refund they belong to.
        self.refund_changes: dict[str, list[str]] = {}
        self.heard = asyncio.Event()

    async def hook(self, change: Any) -> None:
        if self.prefix is None or not change.reference.startswith(self.prefix):
            return
        if change.kind == "refund":
            refund = change.refund
            previous = refund.previous.value if refund.previous else "(new)"
            self.refund_changes.setdefault(refund.reference, []).append(
                f"{previous} -> {refund.state.value}"
            )
            self.heard.set()
            return
        previous = change.previous.value if change.previous else "(new)"
        self.out.line("   state", f"{previous} -> {change.state.value} ({change.source})")


def _shopper(client: Any, servers: Any, say: Callable[[str, str], None]) -> Any:
    from miniprogram_pay.sandbox.shopper import Shopper

    return Shopper(
        client,
        api_url=servers.api_url,
        sandbox_url=servers.sandbox_url,
        admin_api_key=servers.admin_api_key,
        say=say,
    )


async def _play_one(
    args: argparse.Namespace, out: Printer, servers: Any, watch: _StateWatcher
) -> int:
    import httpx

    from miniprogram_pay.sandbox.scenarios import SCENARIOS

    out.line("scenario", f"{args.scenario}: {SCENARIOS[args.scenario].summary}")
    out.line("shopper", f"requestPayment answers {args.action!r}")
    out.plain()
    watch.prefix = f"demo-sbx-{args.scenario}-"
    scenario = SCENARIOS[args.scenario]
    async with httpx.AsyncClient(timeout=30) as client:
        shopper = _shopper(client, servers, out.line)
        result = await shopper.pay(args.scenario, action=args.action)
        if scenario.retry is not None and result.state in ("Refused", "Error"):
            # The order's first attempt failed: the shopper taps "try again", and the
            # same order is paid by its next attempt.
            out.line("result", f"{result.state}; the shopper tries the same order again")
            out.plain()
            result = await shopper.pay(scenario.retry, action="ok", reference=result.reference)
        verdict = _verdict(out, result)
        if result.state == "Authorised" and not args.no_refund:
            await _refund_step(client, out, servers, watch, result.reference)
    return verdict


async def _refund_step(
    client: Any, out: Printer, servers: Any, watch: _StateWatcher, reference: str
) -> None:
    """The back office gives the money back: a third of it, then the rest."""
    out.plain()
    out.plain(
        "the back office refunds it: a part, then the rest (POST /admin/payments/.../refunds)"
    )
    status = await client.get(
        f"{servers.api_url}/payments/{reference}", headers={"X-Admin-Key": servers.admin_api_key}
    )
    amount = status.json()["amount"]
    part = {"currency": amount["currency"], "value": max(1, int(amount["value"]) // 3)}
    for body in ({"amount": part, "reason": "customer request"}, {"reason": "return"}):
        await refund_over_http(
            client,
            api=servers.api_url,
            admin_key=servers.admin_api_key,
            reference=reference,
            body=body,
            say=out.line,
            wait_seconds=15.0,
            outcome=functools.partial(_print_host_told, out, watch),
        )


async def _print_host_told(out: Printer, watch: _StateWatcher, reference: str, state: str) -> None:
    """The changes the host heard of one refund, once it heard the last one (or after 5 s)."""
    deadline = time.monotonic() + 5.0
    while not any(c.endswith(f"-> {state}") for c in watch.refund_changes.get(reference, [])):
        watch.heard.clear()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watch.heard.wait(), remaining)
    for change in watch.refund_changes.pop(reference, []):
        out.line("   host told", f"refund {reference}: {change}")


def _verdict(out: Printer, result: Any) -> int:
    verdict = "OK" if result.ok else "MISMATCH"
    out.plain()
    out.line(
        "result",
        f"{result.state}, expected {result.expected}: {verdict} ({result.seconds:.2f} s)",
    )
    return 0 if result.ok else EXIT_FAILURE


async def _play_all(
    args: argparse.Namespace, out: Printer, servers: Any, watch: _StateWatcher
) -> int:
    import httpx

    from miniprogram_pay.sandbox.scenarios import SCENARIOS

    plays: list[tuple[str, str]] = [(name, "ok") for name in SCENARIOS]
    plays.append(("authorised", "cancel"))
    started = time.monotonic()
    out.plain(f"\nplaying {len(plays)} payments at once, one shopper each")
    async with httpx.AsyncClient(timeout=30) as client:
        shopper = _shopper(client, servers, lambda label, text: None)
        done = 0

        async def play(index: int, scenario: str, action: str) -> Any:
            nonlocal done
            result = await shopper.pay(scenario, action=action, name=f"shopper{index}")
            done += 1
            name = f"{scenario:<{_scenario_width()}}"
            out.plain(f"  [{done:>2}/{len(plays)}] {name}{action:<8}{result.state}")
            return result

        results = await asyncio.gather(
            *(play(i, name, action) for i, (name, action) in enumerate(plays))
        )
    _print_table(out, results)
    matched = sum(result.ok for result in results)
    elapsed = time.monotonic() - started
    out.plain(f"{matched} of {len(results)} as expected ({elapsed:.1f} s)")
    return 0 if matched == len(results) else EXIT_FAILURE


def _scenario_width() -> int:
    """The scenario column: the longest name and two spaces."""
    from miniprogram_pay.sandbox.scenarios import SCENARIOS

    return max(len(name) for name in SCENARIOS) + 2


def _print_table(out: Printer, results: Sequence[Any]) -> None:
    width = _scenario_width()
    out.plain()
    out.plain(f"{'scenario':<{width}}{'shopper':<9}{'expected':<12}{'actual':<12}conflicts")
    for r in results:
        conflicts = ",".join(r.conflicts) or "-"
        verdict = "ok" if r.ok else "MISMATCH"
        out.plain(
            f"{r.scenario:<{width}}{r.action:<9}{r.expected:<12}{r.state:<12}{conflicts:<30}"
            f"{verdict}"
        )
    out.plain()


# -- shopper ---------------------------------------------------------------------------


def _order(text: str | None) -> dict[str, Any] | None:
    import json

    if text is None:
        return None
    try:
        order = json.loads(text)
    except ValueError:
        order = None
    if not isinstance(order, dict):
        raise CommandError('--order must be a JSON object, e.g. \'{"orderId": "A1001"}\'')
    return order


def cmd_shopper(args: argparse.Namespace, out: Printer) -> int:
    import httpx

    from miniprogram_pay.domain.money import Amount
    from miniprogram_pay.sandbox.scenarios import SCENARIOS
    from miniprogram_pay.sandbox.shopper import Shopper

    order = _order(args.order)
    try:
        amount = Amount(args.amount, args.currency)
    except ValueError as exc:
        raise CommandError(f"invalid amount: {exc}") from None
    admin_key = args.admin_key or _env("ADMIN_API_KEY") or _sandbox_admin_key()
    out.plain(f"miniprogram-pay shopper: a Mini Program pays at {args.api}")
    out.line("sandbox", f"{args.sandbox} (WeChat and Adyen)")
    out.line("scenario", f"{args.scenario}: {SCENARIOS[args.scenario].summary}")
    out.line("shopper", f"{args.name}, requestPayment answers {args.action!r}")
    out.plain()

    async def play() -> Any:
        async with httpx.AsyncClient(timeout=30) as client:
            shopper = Shopper(
                client,
                api_url=args.api,
                sandbox_url=args.sandbox,
                admin_api_key=admin_key,
                say=out.line,
            )
            return await shopper.pay(
                args.scenario,
                action=args.action,
                amount=amount,
                name=args.name,
                order=order,
                prefix="shopper",
            )

    try:
        result = asyncio.run(play())
    except httpx.HTTPError as exc:
        raise CommandError(
            f"could not reach {args.api} or {args.sandbox} ({type(exc).__name__}); "
            "is the server running?"
        ) from None
    return _verdict(out, result)


# -- refund ----------------------------------------------------------------------------

# How often the refund command looks at the payment while it waits for Adyen's webhook.
REFUND_POLL_SECONDS = 0.2


def _money(amount: dict[str, Any]) -> str:
    from miniprogram_pay.domain.money import SUPPORTED_CURRENCIES

    value, currency = int(amount["value"]), str(amount["currency"])
    exponent = SUPPORTED_CURRENCIES.get(currency, 0)
    if exponent == 0:
        return f"{currency} {value}"
    whole, minor = divmod(value, 10**exponent)
    return f"{currency} {whole}.{minor:0{exponent}d}"


def _ledger_text(refunds: dict[str, Any]) -> str:
    return ", ".join(
        f"{name} {_money(refunds[name])}"
        for name in ("refunded", "pending", "returned", "refundable")
    )


async def refund_over_http(
    client: Any,
    *,
    api: str,
    admin_key: str,
    reference: str,
    body: dict[str, Any],
    say: Callable[[str, str], None],
    wait_seconds: float,
    outcome: Callable[[str, str], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """``POST /admin/payments/{reference}/refunds``, then wait for the refund's outcome.

    Returns the refund as the status answer shows it last. ``outcome`` (if given)
    hears the refund's reference and last state before the payment's ledger is said.
    """
    from urllib.parse import quote

    headers = {"X-Admin-Key": admin_key}
    path = quote(reference, safe="")
    r = await client.post(f"{api}/admin/payments/{path}/refunds", json=body, headers=headers)
    if r.status_code != 201:
        error = (r.json().get("error") if _is_json(r) else None) or {}
        detail = f"{error.get('code', r.status_code)}: {error.get('message', r.text[:200])}"
        raise CommandError(f"the refund was refused ({detail})")
    answer: dict[str, Any] = r.json()
    refund: dict[str, Any] = answer["refund"]
    amount = _money(refund["amount"]) if refund.get("amount") else "?"
    say(
        "refund",
        f"{refund['reference']}, {amount}" + (f" ({refund['reason']})" * bool(refund["reason"])),
    )
    say("   state", f"{refund['state']} (pspReference {refund['pspReference']})")
    said = refund["state"]
    deadline = time.monotonic() + wait_seconds
    refunds: dict[str, Any] = answer["refunds"]
    while refund["state"] in ("Requested", "Received") and time.monotonic() < deadline:
        await asyncio.sleep(REFUND_POLL_SECONDS)
        status = await client.get(f"{api}/payments/{path}", headers=headers)
        refunds = status.json()["refunds"]
        refund = next(i for i in refunds["items"] if i["reference"] == refund["reference"])
    if refund["state"] in ("Requested", "Received"):
        say("   state", f"{refund['state']}: Adyen's webhook has not come yet")
    elif refund["state"] != said or refund.get("refusalReason"):  # not said already
        reason = f" ({refund['refusalReason']})" if refund.get("refusalReason") else ""
        say("   state", f"{refund['state']}{reason}")
    if outcome is not None:
        await outcome(refund["reference"], refund["state"])
    say("payment", _ledger_text(refunds))
    return refund


def _is_json(response: Any) -> bool:
    return "json" in response.headers.get("content-type", "")


def cmd_refund(args: argparse.Namespace, out: Printer) -> int:
    import httpx

    body: dict[str, Any] = {}
    if args.amount is not None:
        body["amount"] = {"currency": args.currency, "value": args.amount}
    if args.reason:
        body["reason"] = args.reason
    if args.idempotency_key:
        body["idempotencyKey"] = args.idempotency_key
    admin_key = args.admin_key or _env("ADMIN_API_KEY") or _sandbox_admin_key()
    what = "everything refundable" if args.amount is None else f"{args.amount} minor units"
    out.plain(f"miniprogram-pay refund: {what} of {args.reference} at {args.api}")

    async def run() -> Any:
        async with httpx.AsyncClient(timeout=args.timeout) as client:
            return await refund_over_http(
                client,
                api=args.api.rstrip("/"),
                admin_key=admin_key,
                reference=args.reference,
                body=body,
                say=out.line,
                wait_seconds=args.wait,
            )

    try:
        refund = asyncio.run(run())
    except httpx.HTTPError as exc:
        raise CommandError(
            f"could not reach {args.api} ({type(exc).__name__}); is the server running?"
        ) from None
    return EXIT_FAILURE if refund["state"] == "Refused" else 0


# -- webhook send ------------------------------------------------------------------------


def _webhook_credentials(args: argparse.Namespace) -> tuple[bytes, str, str, str]:
    from miniprogram_pay.sandbox.config import SandboxConfig

    sandbox = SandboxConfig()
    keys = _env("ADYEN_HMAC_KEYS")
    key_hex = args.hmac_key or (keys.split(",")[0].strip() if keys else sandbox.hmac_keys[0])
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise CommandError("the HMAC key is not a hex string; check --hmac-key") from None
    return (
        key,
        _env("WEBHOOK_USERNAME") or sandbox.webhook_username,
        _env("WEBHOOK_PASSWORD") or sandbox.webhook_password,
        args.merchant_account or _env("ADYEN_MERCHANT_ACCOUNT") or sandbox.merchant_account,
    )


def notification_body(args: argparse.Namespace, key: bytes, merchant_account: str) -> bytes:
    """A one-item Adyen notification, signed like Adyen signs it."""
    import json

    from miniprogram_pay.adyen.hmac import sign_item

    item: dict[str, Any] = {
        "pspReference": args.psp or "".join(secrets.choice("0123456789") for _ in range(16)),
        "merchantAccountCode": merchant_account,
        "merchantReference": args.reference,
        "amount": {"currency": args.currency, "value": args.amount},
        "eventCode": args.event,
        "eventDate": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "success": args.success,
        "reason": args.reason,
        "paymentMethod": "wechatpayMiniProgram",
    }
    if args.original_reference:
        item["originalReference"] = args.original_reference
    item["additionalData"] = {"hmacSignature": sign_item(item, key)}
    live = args.live or _env("ADYEN_ENVIRONMENT") == "live"
    body = {
        "live": "true" if live else "false",
        "notificationItems": [{"NotificationRequestItem": item}],
    }
    return json.dumps(body).encode()


def cmd_webhook_send(args: argparse.Namespace, out: Printer) -> int:
    import httpx

    from miniprogram_pay.domain.money import Amount

    key, username, password, merchant_account = _webhook_credentials(args)
    body = notification_body(args, key, merchant_account)
    try:
        amount = str(Amount(args.amount, args.currency))
    except ValueError as exc:
        raise CommandError(f"invalid amount: {exc}") from None
    out.plain(f"POST {args.url}")
    out.line(f"{args.event} success={args.success}", f"{args.reference}, {amount}")
    try:
        response = httpx.post(
            args.url,
            content=body,
            headers={"Content-Type": "application/json"},
            auth=(username, password),
            timeout=args.timeout,
        )
    except httpx.HTTPError as exc:
        raise CommandError(f"could not reach {args.url} ({type(exc).__name__})") from None
    out.plain(f"-> {response.status_code} {response.text.strip()[:500]}")
    return 0 if response.is_success else EXIT_FAILURE


# -- sandbox ---------------------------------------------------------------------------


def cmd_sandbox(args: argparse.Namespace, out: Printer) -> int:
    _need_uvicorn("sandbox")
    import uvicorn

    from miniprogram_pay.sandbox import SandboxConfig, create_sandbox_app
    from miniprogram_pay.sandbox.console import default_api_url

    config = SandboxConfig(
        webhook_url=args.webhook_url,
        response_style=args.style,
        default_scenario=args.scenario,
        webhook_delay_seconds=args.webhook_delay,
        merchant_api_url=args.api_url,
        merchant_admin_key=args.admin_key or _env("ADMIN_API_KEY") or _sandbox_admin_key(),
    )
    console_api = default_api_url(config.merchant_api_url, config.webhook_url)
    out.plain(f"sandbox at http://{args.host}:{args.port} (Adyen /adyen/v71, WeChat /wechat)")
    out.line("console", f"http://{args.host}:{args.port}/ (drives {console_api})")
    out.line("webhooks", args.webhook_url or "off (no --webhook-url)")
    uvicorn.run(create_sandbox_app(config), host=args.host, port=args.port, log_level="warning")
    return 0


# -- db --------------------------------------------------------------------------------


def _database(args: argparse.Namespace) -> tuple[str, str | None, str]:
    """The URL, schema and a printable description (password masked, where it came from)."""
    if args.database_url:
        url, source = args.database_url, "--database-url"
    elif _env("DATABASE_URL"):
        url, source = str(_env("DATABASE_URL")), f"{ENV_PREFIX}DATABASE_URL"
    else:
        url, source = DEFAULT_DATABASE_URL, f"the default; {ENV_PREFIX}DATABASE_URL is not set"
    schema = args.schema or _env("DATABASE_SCHEMA")
    where = _redact_url(url) + (f" (schema {schema})" if schema else "") + f" [{source}]"
    return url, schema, where


def _schema_call(name: str, *call_args: Any, **call_kwargs: Any) -> Any:
    function = getattr(_schema_module(), name, None)
    if not callable(function):
        raise CommandError(f"{SCHEMA_MODULE} has no {name}() function")
    try:
        result = function(*call_args, **call_kwargs)
        if inspect.isawaitable(result):
            return asyncio.run(_await(result))
        return result
    except MiniProgramPayError:
        raise
    except ModuleNotFoundError as exc:
        raise CommandError(
            f"the database driver {exc.name!r} is missing; for PostgreSQL: "
            "pip install 'miniprogram-pay[postgres]'"
        ) from None
    except Exception as exc:
        raise CommandError(f"the {name} failed: {type(exc).__name__}: {exc}") from None


def cmd_db_upgrade(args: argparse.Namespace, out: Printer) -> int:
    url, schema, where = _database(args)
    out.plain(f"upgrading {where} ...")
    started = time.monotonic()
    _schema_call("upgrade", url, schema)
    out.plain(f"done ({time.monotonic() - started:.1f} s)")
    return 0


def cmd_db_current(args: argparse.Namespace, out: Printer) -> int:
    url, schema, where = _database(args)
    current = _schema_call("current_revision", url, schema)
    head = _schema_call("head_revision")
    out.plain(where)
    out.line("revision", current or "none (no miniprogram-pay tables)")
    out.line("this version needs", head)
    return 0


def cmd_db_downgrade(args: argparse.Namespace, out: Printer) -> int:
    url, schema, where = _database(args)
    out.plain(f"downgrading {where} to {args.revision} ...")
    started = time.monotonic()
    _schema_call("downgrade", url, schema, revision=args.revision)
    out.plain(f"done ({time.monotonic() - started:.1f} s)")
    return 0


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _schema_module() -> Any:
    try:
        return importlib.import_module(SCHEMA_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != SCHEMA_MODULE:
            raise
        raise CommandError(
            "database migrations are not available in this version "
            f"({SCHEMA_MODULE} is missing); tables are created on start-up"
        ) from None


# -- outbox requeue, notifications requeue ----------------------------------------------


def _with_storage(args: argparse.Namespace, work: Callable[[Any], Any]) -> Any:
    """Run ``work(storage)`` against the configured database, once its schema is current."""
    from miniprogram_pay.storage import Database, Storage
    from miniprogram_pay.storage.schema import prepare

    url, schema, _ = _database(args)

    async def run() -> Any:
        database = Database(url, schema=schema)
        try:
            await prepare(database, auto_migrate=False)
            return await work(Storage.over(database))
        finally:
            await database.dispose()

    return asyncio.run(run())


def cmd_outbox_requeue(args: argparse.Namespace, out: Printer) -> int:
    from miniprogram_pay.services.recovery import requeue_outbox

    rows = _with_storage(args, lambda storage: requeue_outbox(storage, ids=args.id))
    out.plain(f"requeued {len(rows)} parked state change(s)")
    for row in rows:
        out.line(row.event_id, f"{row.reference} -> {row.to_state.value}, {row.attempts} attempts")
    if rows:
        out.plain("running workers offer them to on_state_change within a second")
    return 0


def cmd_notifications_requeue(args: argparse.Namespace, out: Printer) -> int:
    from miniprogram_pay.services.recovery import requeue_notifications

    merchant_account = args.merchant_account or _env("ADYEN_MERCHANT_ACCOUNT")
    if args.status == "ignored" and not merchant_account:
        raise CommandError(
            "deciding again whether ignored items are ours needs the merchant account: "
            f"set {ENV_PREFIX}ADYEN_MERCHANT_ACCOUNT (and {ENV_PREFIX}ADYEN_ENVIRONMENT) "
            "as the server has them, or pass --merchant-account"
        )
    live = (_env("ADYEN_ENVIRONMENT") or "test").strip().lower() == "live"
    result = _with_storage(
        args,
        lambda storage: requeue_notifications(
            storage,
            status=args.status,
            ids=args.id,
            merchant_account=merchant_account or "",
            live=live,
        ),
    )
    out.plain(f"requeued {len(result.requeued)} {args.status} webhook item(s)")
    for notification_id in result.requeued:
        out.line(f"#{notification_id}", "due now")
    for notification_id, detail in result.kept:
        out.line(f"#{notification_id}", f"kept ignored: {detail}")
    return 0


# -- parser ------------------------------------------------------------------------------


def _scenario_names() -> list[str]:
    from miniprogram_pay.sandbox.scenarios import SCENARIOS

    return list(SCENARIOS)


STYLES = ("sdk", "action", "redirect")
STYLE_HELP = "where the sandbox puts the wx.requestPayment parameters (default: %(default)s)"


def build_parser(prog: str = "miniprogram-pay") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="WeChat Pay in Mini Programs through Adyen: serve, demo, sandbox, test "
        "webhooks, migrate the database.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands)
    _add_demo(commands)
    _add_sandbox(commands)
    _add_shopper(commands)
    _add_webhook(commands)
    _add_refund(commands)
    _add_db(commands)
    _add_outbox(commands)
    _add_notifications(commands)
    return parser


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the merchant API (mounted at /pay) with uvicorn",
        description="Run the merchant API at http://HOST:PORT/pay, configured by MINIPROGRAM_PAY_* "
        "variables and your --order-resolver; with --sandbox, also the simulated Adyen and "
        "WeChat, with working defaults.",
    )
    serve.add_argument("--sandbox", action="store_true", help="also run the sandbox, on PORT+1")
    serve.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="port (default: %(default)s; 0 picks one)"
    )
    serve.add_argument(
        "--sandbox-port", type=int, default=None, help="the sandbox's port (default: PORT+1)"
    )
    serve.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (default: %(default)s)"
    )
    serve.add_argument(
        "--order-resolver",
        metavar="MODULE:FUNCTION",
        default=None,
        help="your async order resolver, e.g. myshop.payments:resolve_order (without --sandbox)",
    )
    serve.add_argument(
        "--on-state-change",
        metavar="MODULE:FUNCTION",
        default=None,
        help="your async state-change hook, e.g. myshop.payments:order_changed",
    )
    serve.add_argument("--style", choices=STYLES, default="sdk", help=STYLE_HELP)
    serve.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level (default: %(default)s)",
    )
    serve.set_defaults(handler=cmd_serve)


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="play a shopper through the whole flow against the sandbox",
        description="Start the API and the sandbox on free ports, play a payment over HTTP, "
        "print each step, and exit 0 when it ends in the expected state.",
    )
    _add_scenario(demo, "the sandbox scenario to play")
    demo.add_argument("--all", action="store_true", help="play every scenario, print a table")
    _add_action(demo)
    demo.add_argument("--style", choices=STYLES, default="sdk", help=STYLE_HELP)
    demo.add_argument("--database-url", default=None, help="default: a temporary SQLite file")
    demo.add_argument(
        "--stay",
        action="store_true",
        help="keep serving after the payment (the back office, /pay/metrics) until Ctrl-C",
    )
    demo.add_argument(
        "--no-refund",
        action="store_true",
        help="stop at the payment (by default an authorised one is refunded: part, then the rest)",
    )
    demo.set_defaults(handler=cmd_demo)


def _add_action(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--action",
        choices=("ok", "cancel", "fail"),
        default="ok",
        help="the shopper's answer to wx.requestPayment (default: %(default)s)",
    )


def _add_scenario(parser: argparse.ArgumentParser, text: str) -> None:
    names = _scenario_names()
    parser.add_argument(
        "--scenario",
        default="authorised",
        choices=names,
        metavar="NAME",
        help=f"{text}: {', '.join(names)} (default: %(default)s)",
    )


def _add_sandbox(commands: Any) -> None:
    sandbox = commands.add_parser(
        "sandbox",
        help="run the simulated Adyen Checkout and WeChat alone",
        description="Serve the sandbox (docs/sandbox.md) until Ctrl-C; point your server's "
        "Adyen and WeChat URLs at it and give it your webhook URL.",
    )
    sandbox.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)"
    )
    sandbox.add_argument(
        "--port", type=int, default=SANDBOX_PORT, help="port (default: %(default)s)"
    )
    sandbox.add_argument(
        "--webhook-url",
        default=None,
        help="your POST /webhooks/adyen URL, e.g. http://127.0.0.1:8000/pay/webhooks/adyen "
        "(default: no webhooks)",
    )
    sandbox.add_argument(
        "--response-style",
        "--style",
        dest="style",
        choices=STYLES,
        default="sdk",
        help=STYLE_HELP,
    )
    _add_scenario(sandbox, "the scenario of payments whose reference names none")
    sandbox.add_argument(
        "--api-url",
        default=None,
        help="the plugin the console drives (default: --webhook-url without /webhooks/adyen, "
        f"else http://{DEFAULT_HOST}:{DEFAULT_PORT}/pay)",
    )
    sandbox.add_argument(
        "--admin-key",
        default=None,
        help="the X-Admin-Key the console reads your host's view with "
        "(default: MINIPROGRAM_PAY_ADMIN_API_KEY, else sandbox-admin-key)",
    )
    sandbox.add_argument(
        "--webhook-delay",
        type=float,
        default=0.0,
        help="seconds before each notification (default: %(default)s)",
    )
    sandbox.set_defaults(handler=cmd_sandbox)


def _add_shopper(commands: Any) -> None:
    shopper = commands.add_parser(
        "shopper",
        help="play a Mini Program's payment against any running host",
        description="Log in, pay and report the result like a Mini Program, against the plugin at "
        "--api, with the sandbox at --sandbox standing in for WeChat and Adyen; exit 0 when the "
        "payment ends in the scenario's expected state.",
    )
    shopper.add_argument(
        "--api",
        default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/pay",
        help="the plugin's base URL in your host (default: %(default)s)",
    )
    shopper.add_argument(
        "--sandbox",
        default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT + 1}",
        help="the sandbox your host talks to (default: %(default)s, as serve --sandbox)",
    )
    _add_scenario(shopper, "what Adyen does once the shopper pays")
    _add_action(shopper)
    shopper.add_argument(
        "--order",
        metavar="JSON",
        default=None,
        help='the POST /payments body for your order resolver, e.g. \'{"orderId": "A1001"}\' '
        "(default: a reference naming the scenario and --amount)",
    )
    shopper.add_argument(
        "--amount",
        type=int,
        default=1130,
        help="minor units, without --order (default: %(default)s)",
    )
    shopper.add_argument("--currency", default="CNY", help="(default: %(default)s)")
    shopper.add_argument(
        "--admin-key",
        default=None,
        help="your host's X-Admin-Key, to wait until it applied the webhooks "
        "(default: MINIPROGRAM_PAY_ADMIN_API_KEY, else the sandbox's)",
    )
    shopper.add_argument(
        "--name", default="alice", help="the shopper (the sandbox derives the openid from it)"
    )
    shopper.set_defaults(handler=cmd_shopper)


def _add_webhook(commands: Any) -> None:
    webhook = commands.add_parser("webhook", help="send test notifications")
    actions = webhook.add_subparsers(dest="action", required=True, metavar="ACTION")
    send = actions.add_parser(
        "send",
        help="send one signed Adyen notification to a running server",
        description="Sign with the first of MINIPROGRAM_PAY_ADYEN_HMAC_KEYS, authenticate with "
        "MINIPROGRAM_PAY_WEBHOOK_USERNAME/PASSWORD (sandbox values when unset).",
    )
    send.add_argument(
        "--event",
        default="AUTHORISATION",
        help="eventCode: AUTHORISATION, or a refund's REFUND, REFUND_FAILED, REFUNDED_REVERSED, "
        "CANCEL_OR_REFUND (with --original-reference, the payment's pspReference; --psp is then "
        "the refund's) (default: %(default)s)",
    )
    send.add_argument(
        "--success", choices=("true", "false"), default="true", help="(default: %(default)s)"
    )
    send.add_argument("--reference", required=True, help="merchantReference")
    send.add_argument("--psp", default=None, help="pspReference (default: random)")
    send.add_argument("--original-reference", default=None, help="originalReference (refunds)")
    send.add_argument("--amount", type=int, default=1130, help="minor units (default: %(default)s)")
    send.add_argument("--currency", default="CNY", help="(default: %(default)s)")
    send.add_argument("--reason", default="", help="reason (default: empty)")
    send.add_argument(
        "--merchant-account", default=None, help="default: MINIPROGRAM_PAY_ADYEN_MERCHANT_ACCOUNT"
    )
    send.add_argument("--hmac-key", default=None, help="hex key (default from the environment)")
    send.add_argument("--live", action="store_true", help='send live="true"')
    send.add_argument("--url", default=DEFAULT_WEBHOOK_URL, help="(default: %(default)s)")
    send.add_argument("--timeout", type=float, default=15.0, help="seconds (default: %(default)s)")
    send.set_defaults(handler=cmd_webhook_send)


def _add_refund(commands: Any) -> None:
    refund = commands.add_parser(
        "refund",
        help="refund a payment, in full or in part, through a running server",
        description="Ask the server at --api (POST /admin/payments/{reference}/refunds, with the "
        "admin key) to refund the payment, then wait for Adyen's webhook and print the outcome "
        "and what is left to refund. Exit 1 when the refund was refused.",
    )
    refund.add_argument("reference", help="the payment's reference")
    refund.add_argument(
        "--amount", type=int, default=None, help="minor units (default: everything refundable)"
    )
    refund.add_argument(
        "--currency",
        default="CNY",
        help="the payment's currency, with --amount (default: %(default)s)",
    )
    refund.add_argument(
        "--reason", default=None, help="FRAUD, CUSTOMER REQUEST, RETURN, DUPLICATE or OTHER"
    )
    refund.add_argument(
        "--idempotency-key", default=None, help="yours: the same key returns the same refund"
    )
    refund.add_argument(
        "--api",
        default=f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/pay",
        help="the plugin's base URL in your host (default: %(default)s)",
    )
    refund.add_argument(
        "--admin-key",
        default=None,
        help="your host's X-Admin-Key (default: MINIPROGRAM_PAY_ADMIN_API_KEY, else the sandbox's)",
    )
    refund.add_argument(
        "--wait",
        type=float,
        default=15.0,
        help="seconds to wait for the refund's outcome (default: %(default)s)",
    )
    refund.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default: %(default)s)"
    )
    refund.set_defaults(handler=cmd_refund)


def _add_database_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"default: MINIPROGRAM_PAY_DATABASE_URL, else {DEFAULT_DATABASE_URL}",
    )
    parser.add_argument(
        "--schema",
        default=None,
        help="PostgreSQL schema (default: MINIPROGRAM_PAY_DATABASE_SCHEMA)",
    )


def _add_db(commands: Any) -> None:
    db = commands.add_parser("db", help="database maintenance")
    actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    upgrade = actions.add_parser("upgrade", help="migrate the database schema to this version")
    _add_database_options(upgrade)
    upgrade.set_defaults(handler=cmd_db_upgrade)
    current = actions.add_parser("current", help="show the schema revision of the database")
    _add_database_options(current)
    current.set_defaults(handler=cmd_db_current)
    downgrade = actions.add_parser("downgrade", help="migrate the schema down to REVISION")
    downgrade.add_argument("revision", help="a revision id, or base to drop every table")
    _add_database_options(downgrade)
    downgrade.set_defaults(handler=cmd_db_downgrade)


def _requeue_parser(
    commands: Any, noun: str, *, noun_help: str, help: str, description: str, item: str
) -> argparse.ArgumentParser:
    """``miniprogram-pay <noun> requeue`` with ``--id`` and the database options."""
    group = commands.add_parser(noun, help=noun_help)
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")
    requeue: argparse.ArgumentParser = actions.add_parser(
        "requeue", help=help, description=description
    )
    requeue.add_argument(
        "--id", type=int, action="append", help=f"{item} (repeatable; default: all)"
    )
    _add_database_options(requeue)
    return requeue


def _add_outbox(commands: Any) -> None:
    requeue = _requeue_parser(
        commands,
        "outbox",
        noun_help="state changes waiting for the host",
        help="offer parked state changes to on_state_change again",
        description="Parked state changes (all, or those of --id) become due now, with a "
        "fresh retry window. The running workers deliver them.",
        item="an outbox row id",
    )
    requeue.set_defaults(handler=cmd_outbox_requeue)


def _add_notifications(commands: Any) -> None:
    requeue = _requeue_parser(
        commands,
        "notifications",
        noun_help="stored webhook items",
        help="apply parked or ignored webhook items again",
        description="Parked items (all, or those of --id) are retried with fresh attempts. "
        "Ignored items are judged again against MINIPROGRAM_PAY_ADYEN_MERCHANT_ACCOUNT and "
        "MINIPROGRAM_PAY_ADYEN_ENVIRONMENT; the ones that are ours now are applied.",
        item="an item id",
    )
    requeue.add_argument(
        "--status", choices=("parked", "ignored"), required=True, help="which items to requeue"
    )
    requeue.add_argument(
        "--merchant-account",
        default=None,
        help="for --status ignored (default: MINIPROGRAM_PAY_ADYEN_MERCHANT_ACCOUNT)",
    )
    requeue.set_defaults(handler=cmd_notifications_requeue)


def main(argv: Sequence[str] | None = None, *, prog: str = "miniprogram-pay") -> int:
    """Run the command line; returns the exit code (``sys.exit(main())``)."""
    args = build_parser(prog).parse_args(argv)
    out = Printer()
    try:
        code: int = args.handler(args, out)
    except MiniProgramPayError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code
