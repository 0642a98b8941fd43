"""Real processes for the multi-worker tests: PostgreSQL access, the sandbox, uvicorn workers.

Everything listens on 127.0.0.1 only. Every process started here is killed (by its
own process group id) and waited for when its fixture ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from miniprogram_pay.sandbox import Sandbox, SandboxConfig, create_sandbox_app
from tests.world import (
    ADMIN_KEY,
    SESSION_SECRET,
    basic_auth,
    eventually,
    notification_body,
    notification_item,
)

POSTGRES_URL_ENV = "MINIPROGRAM_PAY_TEST_POSTGRES_URL"
ROOT = Path(__file__).resolve().parents[2]
APP_FACTORY = "tests.multiworker.app:create_app"
READY_SECONDS = 30.0


def postgres_url() -> str:
    """The test server's URL; fail on CI without one, skip elsewhere."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        return url
    message = (
        f"{POSTGRES_URL_ENV} is not set: these tests need a real PostgreSQL. "
        "Run scripts/test, or: d=$(mktemp -d); "
        f'export {POSTGRES_URL_ENV}=$(bash scripts/postgres start "$d")'
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the sandbox, served for real in a thread of the test process -------------------


@dataclass
class SandboxServer:
    config: SandboxConfig
    url: str
    sandbox: Sandbox

    def payment(self, reference: str) -> Any:
        return next(
            p for p in list(self.sandbox.payments.values()) if p.merchant_reference == reference
        )


@contextlib.contextmanager
def serve_sandbox() -> Iterator[SandboxServer]:
    """The sandbox on a loopback port. It sends no webhooks: the tests send their own."""
    config = SandboxConfig(webhook_url=None)
    app = create_sandbox_app(config)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="sandbox", daemon=True)
    thread.start()
    deadline = time.monotonic() + READY_SECONDS
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the sandbox did not start")
        time.sleep(0.02)
    try:
        yield SandboxServer(config, f"http://127.0.0.1:{port}", app.state.sandbox)
    finally:
        server.should_exit = True
        thread.join(10)


def merchant_env(
    sandbox: SandboxServer, database_url: str, schema: str, deliveries: Path
) -> dict[str, str]:
    """The environment of a merchant worker: MINIPROGRAM_PAY_* pointing at the sandbox."""
    c = sandbox.config
    values = {
        "ADYEN_API_KEY": c.api_key,
        "ADYEN_MERCHANT_ACCOUNT": c.merchant_account,
        "ADYEN_HMAC_KEYS": ",".join(c.hmac_keys),
        "ADYEN_RETURN_URL": "https://merchant.test/return",
        "ADYEN_CHECKOUT_URL": f"{sandbox.url}/adyen/v71",
        "WEBHOOK_USERNAME": c.webhook_username,
        "WEBHOOK_PASSWORD": c.webhook_password,
        "WECHAT_APP_ID": c.wechat_app_id,
        "WECHAT_APP_SECRET": c.wechat_app_secret,
        "WECHAT_API_URL": f"{sandbox.url}/wechat",
        "SESSION_SECRET": SESSION_SECRET,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ALLOW_CLIENT_AMOUNT": "true",
        "DATABASE_URL": database_url,
        "DATABASE_SCHEMA": schema,
        "STALE_AFTER_SECONDS": "1",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINIPROGRAM_PAY_")}
    env.update({f"MINIPROGRAM_PAY_{k}": v for k, v in values.items()})
    env["MPP_TEST_DELIVERIES_DIR"] = str(deliveries)
    env["PYTHONPATH"] = str(ROOT)
    return env


# -- merchant workers: uvicorn subprocesses ----------------------------------------


@dataclass
class Merchant:
    """One uvicorn command (``workers`` processes behind one port)."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group (a multi-worker uvicorn has children), then reap."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        # Children of a multi-worker uvicorn are in the group too: make sure they are gone.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@dataclass
class Merchants:
    """Starts merchant processes; ``close()`` kills and reaps every one of them."""

    env: dict[str, str]
    folder: Path
    started: list[Merchant] = field(default_factory=list)

    async def start(self, name: str, *, workers: int = 1, **extra_env: str) -> Merchant:
        port = free_port()
        command = [
            sys.executable, "-m", "uvicorn", "--factory", APP_FACTORY,
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        ]  # fmt: skip
        if workers > 1:
            command += ["--workers", str(workers)]
        log = self.folder / f"{name}.log"
        env = {**self.env, **extra_env}
        with log.open("ab") as out:
            process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        merchant = Merchant(name, port, process, log)
        self.started.append(merchant)
        await wait_ready(merchant)
        return merchant

    def close(self) -> None:
        for merchant in self.started:
            merchant.kill()


async def wait_ready(merchant: Merchant) -> None:
    deadline = time.monotonic() + READY_SECONDS
    async with httpx.AsyncClient(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if merchant.process.poll() is not None:
                raise RuntimeError(f"{merchant.name} exited:\n{merchant.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                r = await client.get(f"{merchant.url}/pay/health")
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{merchant.name} did not become ready:\n{merchant.log_tail()}")


# -- what the host was told ----------------------------------------------------------


def deliveries(folder: Path) -> list[dict[str, Any]]:
    """Every on_state_change call recorded by every merchant process."""
    lines: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


# -- a shopper and Adyen, over real HTTP ---------------------------------------------


class Shop:
    """Drives merchants over HTTP like a Mini Program and like Adyen."""

    def __init__(self, client: httpx.AsyncClient, sandbox: SandboxServer) -> None:
        self.client = client
        self.sandbox = sandbox
        self.webhook_retries = 0

    async def login(self, base: str, shopper: str, n: int) -> dict[str, str]:
        r = await self.client.post(f"{base}/pay/session", json={"code": f"{shopper}.{n}"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    async def pay(
        self, base: str, headers: dict[str, str], reference: str, value: int = 1130
    ) -> dict[str, Any]:
        body = {
            "paymentMethod": {"type": "wechatpayMiniProgram"},
            "reference": reference,
            "amount": {"currency": "CNY", "value": value},
        }
        r = await self.client.post(f"{base}/pay/payments", json=body, headers=headers)
        assert r.status_code == 200, r.text
        answer: dict[str, Any] = r.json()
        return answer

    async def details(
        self, base: str, headers: dict[str, str], reference: str, status: str
    ) -> httpx.Response:
        body = {"reference": reference, "details": {"paymentStatus": status}}
        return await self.client.post(f"{base}/pay/payments/details", json=body, headers=headers)

    def item(
        self,
        reference: str,
        psp: str,
        code: str,
        success: bool,
        *,
        value: int = 1130,
        reason: str = "",
    ) -> dict[str, Any]:
        return notification_item(
            psp_reference=psp,
            merchant_reference=reference,
            merchant_account=self.sandbox.config.merchant_account,
            value=value,
            event_code=code,
            success="true" if success else "false",
            reason=reason,
            key_hex=self.sandbox.config.hmac_keys[0],
        )

    async def webhook(self, base: str, *items: dict[str, Any], attempts: int = 4) -> None:
        """POST like Adyen: a 5xx or a dropped connection is retried."""
        c = self.sandbox.config
        headers = basic_auth(c.webhook_username, c.webhook_password)
        body = notification_body(*items)
        for attempt in range(attempts):
            try:
                r = await self.client.post(
                    f"{base}/pay/webhooks/adyen", content=body, headers=headers
                )
            except httpx.TransportError:
                r = None
            if r is not None and r.status_code == 200:
                assert r.text == "[accepted]", r.text
                return
            assert r is None or r.status_code >= 500, r.text
            self.webhook_retries += 1
            await asyncio.sleep(0.1 * 2**attempt)
        raise AssertionError(f"webhook not accepted after {attempts} attempts")


# Polls the async check until it is truthy, for at most ``seconds``.
wait_until = eventually
