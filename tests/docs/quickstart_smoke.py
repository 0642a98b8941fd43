"""Run README.md's quickstart as a merchant would copy it, and check the host works.

Usage: ``python tests/docs/quickstart_smoke.py README.md`` (``scripts/package`` runs it
in a clean venv holding only the built wheel). Needs nothing beyond the wheel's dependencies.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from miniprogram_pay.sandbox import SandboxConfig


def quickstart(readme: Path) -> str:
    text = readme.read_text(encoding="utf-8").split("## Quickstart", 1)[1]
    found = re.search(r"```python\n(.*?)```", text, re.S)
    assert found, "README.md has no Python quickstart"
    return found.group(1)


async def check(app: Any) -> None:
    async with app.router.lifespan_context(app):
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop")
        async with client:
            health = await client.get("/pay/health")
            running = {"inbox": "running", "outbox": "running"}
            expected = {"status": "ok", "loops": running}
            assert health.status_code == 200 and health.json() == expected, health.text
            refused = await client.post("/pay/payments", json={"orderId": "A1001"})
            assert refused.status_code == 401, refused.text
            docs = await client.get("/pay/openapi.json")
            assert docs.status_code == 200 and "/payments" in docs.json()["paths"]


def variables(database_url: str) -> dict[str, str]:
    """The configuration quickstart's variables, with the sandbox's values (no uvicorn needed)."""
    sandbox = SandboxConfig()
    values = {
        "ADYEN_API_KEY": sandbox.api_key,
        "ADYEN_MERCHANT_ACCOUNT": sandbox.merchant_account,
        "ADYEN_HMAC_KEYS": ",".join(sandbox.hmac_keys),
        "ADYEN_RETURN_URL": "https://shop.example/return",
        "ADYEN_CHECKOUT_URL": "http://sandbox.test/adyen/v71",
        "WEBHOOK_USERNAME": sandbox.webhook_username,
        "WEBHOOK_PASSWORD": sandbox.webhook_password,
        "WECHAT_APP_ID": sandbox.wechat_app_id,
        "WECHAT_APP_SECRET": sandbox.wechat_app_secret,
        "WECHAT_API_URL": "http://sandbox.test/wechat",
        "SESSION_SECRETS": "quickstart-session-secret-0123456789",
        "DATABASE_URL": database_url,
    }
    return {"MINIPROGRAM_PAY_" + name: value for name, value in values.items()}


def main(readme: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'shop.db'}"
        os.environ.update(variables(url))
        namespace: dict[str, Any] = {"__name__": "quickstart"}
        exec(compile(quickstart(Path(readme)), "README.md quickstart", "exec"), namespace)
        asyncio.run(check(namespace["app"]))
    print("README quickstart: a working host")


if __name__ == "__main__":
    main(sys.argv[1])
