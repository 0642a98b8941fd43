"""Logs: request ids from the request into the services and the host's hook, one 500 logged once,
text by default and JSON as an option, visible under plain uvicorn."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from miniprogram_pay import Order, OrderRequest, StateChange
from miniprogram_pay.observability.context import (
    bound_request_id,
    current_request_id,
    request_id_from,
)
from miniprogram_pay.observability.logs import (
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    install_handler,
    remove_handler,
)
from miniprogram_pay.sandbox import DEFAULT_HMAC_KEY
from tests.docs.snippets import sandbox_variables
from tests.http.helpers import base_url, build_host, serving
from tests.observability.helpers import scrape, value
from tests.world import (
    basic_auth,
    connect,
    default_config,
    eventually,
    notification_body,
    notification_item,
    settings_for,
    wiring,
    world,
)

PACKAGE = logging.getLogger("miniprogram_pay")


@contextmanager
def captured(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """The package's log lines as ``formatter`` writes them, at DEBUG."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    level = PACKAGE.level
    PACKAGE.addHandler(handler)
    PACKAGE.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        PACKAGE.removeHandler(handler)
        PACKAGE.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def the_line(lines: list[dict[str, Any]], message: str) -> dict[str, Any]:
    [found] = [line for line in lines if line["message"] == message]
    return found


async def test_a_request_id_follows_the_request_into_the_services_and_the_hook(
    db_url: str,
) -> None:
    heard: list[tuple[str, str | None, str | None]] = []

    async def hook(change: StateChange) -> None:
        heard.append((change.state.value, change.request_id, current_request_id()))
        logging.getLogger("miniprogram_pay.test.host").info("host took %s", change.state)

    with captured(JsonFormatter()) as stream:
        async with world(db_url, on_state_change=hook) as w:
            headers = await w.login("alice")
            body = {
                "paymentMethod": {"type": "wechatpayMiniProgram"},
                "reference": "order-traced",
                "amount": {"currency": "CNY", "value": 1130},
            }
            paid = await w.client.post(
                "/pay/payments", json=body, headers={**headers, "X-Request-ID": "pay-1"}
            )
            assert paid.headers["x-request-id"] == "pay-1"
            await w.details(headers, "order-traced")
            await w.settle()
    lines = json_lines(stream)
    created = [
        line
        for line in lines
        if line["message"].startswith("order order-traced: attempt 1 (order-traced) started")
    ]
    assert [line["request_id"] for line in created] == ["pay-1"]
    adyen = [line for line in lines if line["message"].startswith("adyen POST /payments ")]
    assert [line["request_id"] for line in adyen] == ["pay-1"]
    pending = the_line(lines, "payment order-traced: Created -> Pending (payments Pending)")
    authorised = next(
        line for line in lines if line["message"].startswith("payment order-traced: Pending -> ")
    )
    assert pending["request_id"] == "pay-1"
    assert re.fullmatch(r"[0-9a-f]{32}", authorised["request_id"])  # the request that said so
    assert heard == [
        ("Pending", "pay-1", "pay-1"),
        ("Authorised", authorised["request_id"], authorised["request_id"]),
    ]
    took = [line for line in lines if line["message"].startswith("host took")]
    assert [line["request_id"] for line in took] == ["pay-1", authorised["request_id"]]
    [started] = [line for line in lines if line["message"].startswith("miniprogram-pay started")]
    assert "request_id" in started  # started by the first request, so it is that request's


async def test_each_webhook_request_is_the_origin_of_the_change_it_applied(db_url: str) -> None:
    """Webhooks share commits; what each one changed is still told under its own request id."""
    heard: dict[str, tuple[str | None, str | None]] = {}

    async def hook(change: StateChange) -> None:
        if change.state.value == "Authorised":
            heard[change.reference] = (change.request_id, current_request_id())

    async with world(db_url, on_state_change=hook) as w:
        headers = await w.login("alice")
        for reference in ("order-one", "order-two"):
            assert (await w.pay_order(headers, reference)).status_code == 200
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        for n, reference in enumerate(("order-one", "order-two"), start=1):
            [payment] = [
                p for p in w.sandbox.payments.values() if p.merchant_reference == reference
            ]
            item = notification_item(
                psp_reference=payment.psp_reference,
                merchant_reference=reference,
                key_hex=DEFAULT_HMAC_KEY,
            )
            answer = await w.client.post(
                "/pay/webhooks/adyen",
                content=notification_body(item),
                headers={**auth, "X-Request-ID": f"webhook-{n}"},
            )
            assert answer.text == "[accepted]"
        await w.pay.drain()

        async def both_told() -> bool:
            return len(heard) == 2

        await eventually(both_told, what="both changes told")
    assert heard == {
        "order-one": ("webhook-1", "webhook-1"),
        "order-two": ("webhook-2", "webhook-2"),
    }


@pytest.mark.parametrize("given", ["", "has spaces", "x" * 129, "ünïcode", "a\r\nInjected: 1"])
async def test_an_unusable_request_id_is_replaced(db_url: str, given: str) -> None:
    async with world(db_url) as w:
        headers = [(b"x-request-id", given.encode())]
        answer = await w.client.get("/pay/health", headers=headers)
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])


def test_a_new_request_id_makes_no_system_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """os.urandom gives up the interpreter lock; the event loop would then wait for a
    database thread to hand it back before it could answer (once per request)."""

    def urandom(n: int) -> bytes:
        raise AssertionError("a request id read os.urandom")

    monkeypatch.setattr(os, "urandom", urandom)
    ids = {request_id_from(None) for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", i) for i in ids)
    assert request_id_from("given-1") == "given-1"


async def resolver_that_breaks(request: OrderRequest) -> Order:
    raise RuntimeError("the order table is locked")


async def test_a_500_is_logged_once_with_its_traceback_over_real_uvicorn(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = default_config()
    settings = settings_for(config, db_url, allow_client_amount=False)
    async with wiring(config) as parts:
        host, pay = build_host(
            "starlette",
            settings=settings,
            order_resolver=resolver_that_breaks,
            http_client=parts.outbound,
        )
        connect(parts, host)
        # log_config=None: uvicorn's records reach the root logger, and so caplog.
        async with serving(host, log_config=None, log_level="info") as server:
            sock = server.servers[0].sockets[0]
            async with httpx.AsyncClient(base_url=base_url(sock)) as client:
                token = (await client.post("/pay/session", json={"code": "alice.1"})).json()
                answer = await client.post(
                    "/pay/payments",
                    json={"paymentMethod": {"type": "wechatpayMiniProgram"}, "orderId": "A1"},
                    headers={"Authorization": f"Bearer {token['token']}", "X-Request-ID": "r-500"},
                )
        await pay.stop()
    assert answer.status_code == 500
    assert answer.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    assert answer.headers["x-request-id"] == "r-500"
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert [r.name for r in tracebacks] == ["miniprogram_pay"], [r.getMessage() for r in tracebacks]
    [record] = tracebacks
    assert record.getMessage() == "unexpected error on POST /pay/payments"
    entry = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: the order table is locked" in entry["exception"]
    assert entry["request_id"] == "r-500"
    assert not [r for r in caplog.records if "Exception in ASGI application" in r.getMessage()]


def test_text_lines_name_the_request_and_json_lines_are_objects() -> None:
    logger = logging.getLogger("miniprogram_pay.test.format")
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "a %s", ("b",), None)
    record.request_id = "req-7"
    text = TextFormatter().format(record)
    assert text.endswith("WARNING miniprogram_pay.test.format: a b [request req-7]")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "x", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(failed))
    assert entry["level"] == "ERROR" and entry["message"] == "x" and "request_id" not in entry
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("+00:00") and entry["pid"] == os.getpid()
    RequestIdFilter().filter(failed)
    assert getattr(failed, "request_id", None) == "-"


@contextmanager
def no_root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers.clear()
    try:
        yield
    finally:
        root.handlers[:] = saved


def test_the_handler_is_added_only_when_nothing_else_shows_the_lines() -> None:
    with no_root_handlers():
        handler = install_handler(setting="auto", log_format="json", level="info")
        assert handler is not None and isinstance(handler.formatter, JsonFormatter)
        assert PACKAGE.level == logging.INFO and PACKAGE.propagate
        assert install_handler(setting="always", log_format="text", level="info") is None  # once
        remove_handler(handler)
        assert install_handler(setting="never", log_format="text", level="info") is None
        forced = install_handler(setting="always", log_format="text", level="debug")
        assert forced is not None and not PACKAGE.propagate
        remove_handler(forced)
        assert PACKAGE.propagate and PACKAGE.level == logging.NOTSET and not PACKAGE.handlers
    # pytest's own handlers are on the root logger: the host "configured logging".
    assert install_handler(setting="auto", log_format="text", level="info") is None


class StalledStream(io.StringIO):
    """stderr behind a full pipe: a write waits until ``flowing`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.flowing = threading.Event()

    def write(self, text: str) -> int:
        self.flowing.wait()
        return super().write(text)


def test_a_stalled_stderr_blocks_no_caller_and_the_dropped_lines_are_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = StalledStream()
    monkeypatch.setattr(sys, "stderr", stream)
    lines = 10_050  # more than the handler queues
    with no_root_handlers():
        handler = install_handler(setting="always", log_format="text", level="info")
    assert handler is not None
    logger = logging.getLogger("miniprogram_pay.test.stalled")

    def log_all() -> None:
        for i in range(lines):
            logger.warning("line %d", i)

    caller = threading.Thread(target=log_all)
    try:
        caller.start()
        caller.join(timeout=60)
        assert not caller.is_alive(), "a log call waited for stderr"
    finally:
        stream.flowing.set()
        caller.join()
    remove_handler(handler)  # writes what is queued, and the count
    written = [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()]
    kept = [line for line in written if line.startswith("line ")]
    assert kept == [f"line {i}" for i in range(len(kept))] and len(kept) < lines
    [notice] = [line for line in written if "dropped" in line]
    assert notice == f"{lines - len(kept)} log lines were dropped: stderr was not being read"
    assert written[-1] == notice


async def test_the_plugins_metrics_count_the_lines_a_stalled_stderr_dropped(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = StalledStream()
    monkeypatch.setattr(sys, "stderr", stream)
    lines = 10_050
    async with world(db_url, log_handler="always") as w:
        try:
            assert (await w.client.get("/pay/health")).status_code == 200  # the plugin started
            logger = logging.getLogger("miniprogram_pay.test.metric")
            for i in range(lines):  # the writer holds one line, 10,000 queue, the rest drop
                logger.warning("line %d", i)
            samples = await scrape(w.client)
        finally:
            stream.flowing.set()  # else stopping the plugin waits for stderr
    dropped = value(samples, "log_lines_dropped_total")
    assert lines - 10_001 <= dropped <= lines - 10_000
    [notice] = [line for line in stream.getvalue().splitlines() if "were dropped" in line]
    assert f": {int(dropped)} log lines were dropped" in notice


def test_a_line_keeps_its_request_and_its_traceback_on_the_way_to_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    with no_root_handlers():
        handler = install_handler(setting="always", log_format="json", level="info")
    assert handler is not None
    logger = logging.getLogger("miniprogram_pay.test.hop")
    with bound_request_id("req-9"):
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed %s", "here")
    logger.info("outside")
    remove_handler(handler)
    failed, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (failed["message"], failed["request_id"]) == ("failed here", "req-9")
    assert "ValueError: boom" in failed["exception"]
    assert outside["message"] == "outside" and "request_id" not in outside


def test_lines_still_queued_are_written_when_the_interpreter_exits(tmp_path: Path) -> None:
    """A host that never stops the plugin: ``logging.shutdown`` (at exit) writes them."""
    script = (
        "import logging\n"
        "from miniprogram_pay.observability.logs import install_handler\n"
        "install_handler(setting='always', log_format='text', level='info')\n"
        "for i in range(500):\n"
        "    logging.getLogger('miniprogram_pay.exit').info('line %d', i)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    written = [line.split(": ", 1)[1] for line in done.stderr.splitlines()]
    assert written == [f"line {i}" for i in range(500)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def plain_uvicorn(tmp_path: Path, **variables: str) -> str:
    """``uvicorn --factory miniprogram_pay.host:create_host_app_from_env``, one failing
    request sent, then stopped; what it wrote to stderr."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPROGRAM_PAY_")}
    env.update(sandbox_variables(f"sqlite+aiosqlite:///{tmp_path / 'plain.db'}"))
    # Nothing listens there: POST /session fails upstream and logs a warning.
    env.update(
        MINIPROGRAM_PAY_WECHAT_API_URL="http://127.0.0.1:9/wechat",
        MINIPROGRAM_PAY_ALLOW_CLIENT_AMOUNT="true",  # no order resolver here
        **variables,
    )
    command = [sys.executable, "-m", "uvicorn", "--factory", "--port", str(port)]
    command.append("miniprogram_pay.host:create_host_app_from_env")
    server = subprocess.Popen(
        command, cwd=tmp_path, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        url = f"http://127.0.0.1:{port}/pay"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, (
                    "uvicorn did not start"
                )
                time.sleep(0.05)
        answer = httpx.post(
            url + "/session", json={"code": "alice.1"}, headers={"X-Request-ID": "plain-1"}
        )
        assert answer.status_code == 502, answer.text
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    return stderr


@pytest.mark.slow
def test_plain_uvicorn_shows_the_packages_lines_as_text(tmp_path: Path) -> None:
    stderr = plain_uvicorn(tmp_path)
    assert re.search(r"INFO +miniprogram_pay: miniprogram-pay started \(sqlite, test\)\n", stderr)
    assert re.search(
        r"WARNING +miniprogram_pay\.http: POST /pay/session failed: wechat_unavailable "
        r"\[request plain-1\]",
        stderr,
    )


@pytest.mark.slow
def test_plain_uvicorn_writes_json_lines_when_asked(tmp_path: Path) -> None:
    stderr = plain_uvicorn(tmp_path, MINIPROGRAM_PAY_LOG_FORMAT="json")
    ours = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = {entry["message"]: entry for entry in ours}
    started = messages["miniprogram-pay started (sqlite, test)"]
    assert started["level"] == "INFO" and "request_id" not in started  # the lifespan's
    failed = messages["POST /pay/session failed: wechat_unavailable"]
    assert (failed["level"], failed["request_id"]) == ("WARNING", "plain-1")
    assert all(entry["logger"].startswith("miniprogram_pay") for entry in ours)
