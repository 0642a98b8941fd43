"""The plugin as a merchant mounts it: ``uvicorn --factory bench.plugin_app:create``.

Settings come from the environment (``BENCH_DB_URL``, ``BENCH_SANDBOX_URL``,
``BENCH_SQLITE_SYNCHRONOUS``) and point at the sandbox's well-known test credentials.
``BENCH_TRACE=<file>`` records where each request's time goes (``bench/trace.py``).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from bench.common import ADMIN_KEY, CONFIG, SESSION_SECRET, db_url, sandbox_url, sqlite_synchronous
from miniprogram_pay import Secret, Settings, StateChange, create_app

__all__ = ["create"]

TRACE_ENV = "BENCH_TRACE"


async def _on_state_change(change: StateChange) -> None:
    """A host hook that does nothing: the outbox still runs, the host adds no cost."""


def settings() -> Settings:
    base = sandbox_url()
    return Settings(
        adyen_api_key=Secret(CONFIG.api_key),
        adyen_merchant_account=CONFIG.merchant_account,
        adyen_hmac_keys=tuple(Secret(k) for k in CONFIG.hmac_keys),
        adyen_return_url="https://merchant.example/return",
        adyen_checkout_url=f"{base}/adyen/v71",
        webhook_username=Secret(CONFIG.webhook_username),
        webhook_password=Secret(CONFIG.webhook_password),
        wechat_app_id=CONFIG.wechat_app_id,
        wechat_app_secret=Secret(CONFIG.wechat_app_secret),
        wechat_api_url=f"{base}/wechat",
        session_secret=Secret(SESSION_SECRET),
        admin_api_key=Secret(ADMIN_KEY),
        allow_client_amount=True,
        database_url=db_url(),
        adyen_timeout_seconds=10.0,
        # The durability workload runs the plugin at both; everything else at the default.
        sqlite_synchronous="normal" if sqlite_synchronous() == "normal" else "full",
    )


def create() -> ASGIApp:
    pay = create_app(settings(), on_state_change=_on_state_change)
    app = Starlette(routes=[Mount("/pay", app=pay)], lifespan=pay.lifespan)
    trace = os.environ.get(TRACE_ENV)
    if not trace:
        return app
    from bench import trace as tracing  # profiles only: never in a measured run

    tracing.install(trace)
    return tracing.traced(app)
