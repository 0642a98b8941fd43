"""The merchant API and the sandbox running together on real sockets.

``miniprogram-pay serve --sandbox`` and ``miniprogram-pay demo`` use this. Two
uvicorn servers share one event loop: the merchant API (the plugin mounted at
``/pay`` in a small host app) on one port and the sandbox on another. They talk
over real HTTP: the merchant calls the simulated Adyen and WeChat, the sandbox
delivers webhooks to ``/pay/webhooks/adyen``.

The sandbox keeps its state in memory, so it must be one process even when the
merchant API runs several workers: then the workers are uvicorn's and import
``create_sandboxed_app`` (a factory reading the ``MINIPROGRAM_PAY_*`` variables
that ``sandbox_environment`` filled in), and the sandbox runs beside them.

Example (a test)::

    with SandboxedServers(database_url="sqlite+aiosqlite:///" + str(tmp / "t.db")) as servers:
        httpx.post(servers.api_url + "/session", json={"code": "alice.1"})
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from miniprogram_pay.app import create_app
from miniprogram_pay.config import DEFAULT_DATABASE_URL, ENV_PREFIX, Settings
from miniprogram_pay.errors import ConfigurationError, MiniProgramPayError
from miniprogram_pay.host import API_PREFIX, create_host_app
from miniprogram_pay.sandbox.app import create_sandbox_app
from miniprogram_pay.sandbox.config import ResponseStyle, SandboxConfig
from miniprogram_pay.services.hooks import StateChangeHook

__all__ = [
    "ADMIN_API_KEY",
    "SECOND_HMAC_KEY",
    "SandboxedServers",
    "create_sandboxed_app",
    "mirror_config",
    "sandbox_environment",
    "sandboxed_settings",
]

logger = logging.getLogger("miniprogram_pay.sandbox.server")

# Well-known sandbox values, like the sandbox's own credentials: never use them for real money.
ADMIN_API_KEY = "sandbox-admin-key"
# A second HMAC key, so that the rotated-key scenario has a key to rotate to.
SECOND_HMAC_KEY = "280F1B655A1E730E7480B0DAEFAC8B84208D57C9059C78C670BBD00F762662EB"
RETURN_URL = "https://merchant.example/return"
# The sandbox answers in milliseconds; a short client timeout keeps the
# adyen-timeout-once scenario quick, and the simulated hang outlasts it.
ADYEN_TIMEOUT_SECONDS = 1.0
TIMEOUT_FAULT_SECONDS = 2.0
GRACEFUL_SHUTDOWN_SECONDS = 3
START_TIMEOUT_SECONDS = 15.0

# Settings that must point at the sandbox whatever the environment says.
_FORCED = ("ADYEN_CHECKOUT_URL", "WECHAT_API_URL", "ALLOW_CLIENT_AMOUNT")


def sandbox_environment(
    sandbox_url: str,
    environ: Mapping[str, str] | None = None,
    *,
    database_url: str | None = None,
) -> dict[str, str]:
    """Every ``MINIPROGRAM_PAY_*`` variable a merchant needs to use the sandbox at ``sandbox_url``.

    Values already in ``environ`` win (a database URL, an admin key, your own
    test credentials, which the sandbox then mirrors), except the Adyen and
    WeChat URLs, which point at the sandbox, and ``ALLOW_CLIENT_AMOUNT``: there
    is no order resolver, so the client's amount is used.
    """
    defaults = SandboxConfig()
    values = {
        "ADYEN_API_KEY": defaults.api_key,
        "ADYEN_MERCHANT_ACCOUNT": defaults.merchant_account,
        "ADYEN_HMAC_KEYS": ",".join((*defaults.hmac_keys, SECOND_HMAC_KEY)),
        "ADYEN_RETURN_URL": RETURN_URL,
        "WEBHOOK_USERNAME": defaults.webhook_username,
        "WEBHOOK_PASSWORD": defaults.webhook_password,
        "WECHAT_APP_ID": defaults.wechat_app_id,
        "WECHAT_APP_SECRET": defaults.wechat_app_secret,
        "SESSION_SECRET": secrets.token_urlsafe(32),
        "ADMIN_API_KEY": ADMIN_API_KEY,
        "DATABASE_URL": DEFAULT_DATABASE_URL,
    }
    source = os.environ if environ is None else environ
    merged = {k: v for k, v in source.items() if k.startswith(ENV_PREFIX) and v != ""}
    if ENV_PREFIX + "SESSION_SECRETS" in merged:
        del values["SESSION_SECRET"]  # the host's own list of secrets stands alone
    for name, value in values.items():
        merged.setdefault(ENV_PREFIX + name, value)
    if database_url is not None:
        merged[ENV_PREFIX + "DATABASE_URL"] = database_url
    forced = dict(
        zip(_FORCED, (f"{sandbox_url}/adyen/v71", f"{sandbox_url}/wechat", "true"), strict=True)
    )
    merged.update({ENV_PREFIX + name: value for name, value in forced.items()})
    return merged


def sandboxed_settings(environ: Mapping[str, str]) -> Settings:
    """Settings from a ``sandbox_environment``, with timeouts suited to a local simulator."""
    return Settings.from_env(environ, adyen_timeout_seconds=ADYEN_TIMEOUT_SECONDS)


def mirror_config(
    settings: Settings,
    *,
    webhook_url: str,
    response_style: ResponseStyle = "sdk",
    webhook_delay_seconds: float = 0.0,
) -> SandboxConfig:
    """A sandbox that accepts exactly the credentials ``settings`` uses, and signs with its keys.

    Its console drives the plugin whose webhooks are at ``webhook_url`` and reads
    the host's view with ``settings``' admin key.
    """
    return SandboxConfig(
        api_key=settings.adyen_api_key.reveal(),
        merchant_account=settings.adyen_merchant_account,
        hmac_keys=tuple(key.reveal() for key in settings.adyen_hmac_keys),
        webhook_url=webhook_url,
        webhook_username=settings.webhook_username.reveal(),
        webhook_password=settings.webhook_password.reveal(),
        wechat_app_id=settings.wechat_app_id,
        wechat_app_secret=settings.wechat_app_secret.reveal(),
        response_style=response_style,
        live=settings.is_live,
        webhook_delay_seconds=webhook_delay_seconds,
        timeout_fault_seconds=TIMEOUT_FAULT_SECONDS,
        merchant_api_url=webhook_url.removesuffix("/webhooks/adyen"),
        merchant_admin_key=settings.admin_api_key.reveal() if settings.admin_api_key else None,
    )


def create_sandboxed_app() -> Starlette:
    """uvicorn factory for the merchant API's workers under ``serve --sandbox --workers N``.

    Reads the ``MINIPROGRAM_PAY_*`` variables that ``serve --sandbox`` set
    before it spawned the workers (all workers must share the session secret).
    """
    if not os.environ.get(ENV_PREFIX + "ADYEN_CHECKOUT_URL"):
        raise ConfigurationError(
            "create_sandboxed_app reads the environment prepared by "
            "`miniprogram-pay serve --sandbox`; start the server with that command."
        )
    plugin = create_app(sandboxed_settings(os.environ))
    return create_host_app(plugin)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket; port 0 picks a free port, known before serving starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigurationError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    return sock


def free_port(host: str) -> int:
    """A port that was free a moment ago (for servers that bind by themselves)."""
    with contextlib.closing(bind_socket(host, 0)) as sock:
        port: int = sock.getsockname()[1]
        return port


def _local(host: str) -> str:
    """The address to reach a server listening on ``host`` from this machine."""
    if host in ("0.0.0.0", ""):  # noqa: S104 - we map the wildcard to loopback, not bind it
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, listen_socket: socket.socket) -> None:
        super().__init__(config)
        self.listen_socket = listen_socket

    async def serve_socket(self) -> None:
        await self.serve(sockets=[self.listen_socket])

    # Two servers share one loop: signals are handled once, by SandboxedServers.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SandboxedServers:
    """The merchant API (plugin at ``/pay``) and the sandbox, each on a uvicorn server.

    Ports of 0 pick free ports; the URLs are known as soon as this object
    exists. ``run()`` serves in the foreground until SIGINT/SIGTERM;
    ``start_in_thread()`` (or ``with``) serves in a background thread.
    ``merchant=False`` runs the sandbox alone, for a merchant API served by
    uvicorn's own workers on ``port``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        sandbox_port: int = 0,
        environ: Mapping[str, str] | None = None,
        database_url: str | None = None,
        response_style: ResponseStyle = "sdk",
        webhook_delay_seconds: float = 0.0,
        on_state_change: StateChangeHook | None = None,
        merchant: bool = True,
        log_config: dict[str, Any] | None = None,
        log_level: str = "warning",
    ) -> None:
        self._log_config = log_config
        self._log_level = log_level
        self._sockets: list[socket.socket] = []
        self._servers: list[_Server] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.interrupted = False  # stopped by SIGINT/SIGTERM (the CLI exits 130)
        try:
            self._build(host, port, sandbox_port, environ, database_url, merchant, on_state_change)
            self.sandbox_config = mirror_config(
                self.settings,
                webhook_url=self.api_url + "/webhooks/adyen",
                response_style=response_style,
                webhook_delay_seconds=webhook_delay_seconds,
            )
            self.sandbox_app = create_sandbox_app(self.sandbox_config)
            self._add_server(self.sandbox_app, self._sandbox_socket)
        except BaseException:
            self._close_sockets()
            raise

    def _build(
        self,
        host: str,
        port: int,
        sandbox_port: int,
        environ: Mapping[str, str] | None,
        database_url: str | None,
        merchant: bool,
        on_state_change: StateChangeHook | None,
    ) -> None:
        local = _local(host)
        merchant_socket = None
        if merchant:
            merchant_socket = bind_socket(host, port)
            self._sockets.append(merchant_socket)
            port = merchant_socket.getsockname()[1]
        self._sandbox_socket = bind_socket(host, sandbox_port)
        self._sockets.append(self._sandbox_socket)
        self.port = port
        self.sandbox_port = int(self._sandbox_socket.getsockname()[1])
        self.base_url = f"http://{local}:{port}"
        self.api_url = self.base_url + API_PREFIX
        self.sandbox_url = f"http://{local}:{self.sandbox_port}"
        self.environment = sandbox_environment(self.sandbox_url, environ, database_url=database_url)
        self.settings = sandboxed_settings(self.environment)
        self.admin_api_key = self.environment[ENV_PREFIX + "ADMIN_API_KEY"]
        if merchant_socket is not None:
            plugin = create_app(self.settings, on_state_change=on_state_change)
            self._add_server(create_host_app(plugin), merchant_socket)

    def _add_server(self, app: ASGIApp, sock: socket.socket) -> None:
        config = uvicorn.Config(
            app,
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
            log_config=self._log_config,
            log_level=self._log_level,
        )
        self._servers.append(_Server(config, sock))

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    @property
    def started(self) -> bool:
        return all(server.started for server in self._servers)

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until ``stop()``; call ``on_ready`` once every server accepts connections."""
        watcher = asyncio.create_task(self._announce(on_ready))
        try:
            await asyncio.gather(*(server.serve_socket() for server in self._servers))
        finally:
            watcher.cancel()
            self._close_sockets()

    async def _announce(self, on_ready: Callable[[], None] | None) -> None:
        # uvicorn only exposes a ``started`` flag, no event to wait on.
        while not self.started:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if on_ready is not None:
            on_ready()

    def stop(self) -> None:
        """Ask every server to shut down (safe from any thread); a second call forces it."""
        for server in self._servers:
            if self._stopping:
                server.force_exit = True
            server.should_exit = True
        self._stopping = True

    def _interrupt(self) -> None:
        self.interrupted = True
        self.stop()

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve in the foreground until SIGINT or SIGTERM."""
        asyncio.run(self._serve_with_signals(on_ready))

    async def _serve_with_signals(self, on_ready: Callable[[], None] | None) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._interrupt)
        await self.serve(on_ready)

    def start_in_thread(self, timeout: float = START_TIMEOUT_SECONDS) -> SandboxedServers:
        """Serve in a daemon thread; return once every server accepts connections."""
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self.serve()), name="miniprogram-pay-servers", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.close()
                raise MiniProgramPayError("the servers did not start; see the log above")
            time.sleep(0.02)
        return self

    def close(self, timeout: float = GRACEFUL_SHUTDOWN_SECONDS + 5) -> None:
        """Stop the servers and wait for the thread ``start_in_thread`` started."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.stop()  # force
                self._thread.join(timeout)
            self._thread = None
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> SandboxedServers:
        return self.start_in_thread()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
