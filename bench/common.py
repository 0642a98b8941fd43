"""Values shared by the bench's servers and its driver (all sandbox test credentials)."""

from __future__ import annotations

import base64
import os

from miniprogram_pay.sandbox.config import SandboxConfig

__all__ = [
    "ADMIN_KEY",
    "CONFIG",
    "SESSION_SECRET",
    "db_url",
    "sandbox_url",
    "sqlite_synchronous",
    "webhook_headers",
]

CONFIG = SandboxConfig()
ADMIN_KEY = "bench-admin-key-0123456789"
SESSION_SECRET = "bench-session-secret-0123456789abcdef"


def db_url() -> str:
    return os.environ["BENCH_DB_URL"]


def sandbox_url() -> str:
    return os.environ.get("BENCH_SANDBOX_URL", "http://127.0.0.1:9")


SYNCHRONOUS_ENV = "BENCH_SQLITE_SYNCHRONOUS"


def sqlite_synchronous() -> str:
    """SQLite's durability for the plugin and the baseline alike: "full" unless told "normal"."""
    return "normal" if os.environ.get(SYNCHRONOUS_ENV) == "normal" else "full"


def webhook_headers() -> dict[str, str]:
    token = base64.b64encode(
        f"{CONFIG.webhook_username}:{CONFIG.webhook_password}".encode()
    ).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
