"""The sandbox as its own server: ``uvicorn --factory bench.sandbox_app:create``.

``BENCH_WEBHOOK_URL`` is where it delivers notifications (the plugin or the baseline).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from miniprogram_pay.sandbox import SandboxConfig, create_sandbox_app

__all__ = ["create"]


def create() -> Starlette:
    return create_sandbox_app(SandboxConfig(webhook_url=os.environ.get("BENCH_WEBHOOK_URL")))
