"""The inbox: an item that cannot be applied is retried with backoff, then parked for a human."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from miniprogram_pay.storage import Database
from miniprogram_pay.storage.schema import upgrade
from tests.multiworker.harness import postgres_url
from tests.rows import drop_schema
from tests.world import ADMIN_KEY, basic_auth, notification_body, notification_item, world

MAX_ATTEMPTS = 3


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """World settings for a fresh database: a SQLite file, or a migrated PostgreSQL schema."""
    if request.param == "sqlite":
        yield {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'inbox.db'}"}
        return
    url, schema = postgres_url(), f"mpp_mw_{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(upgrade, url, schema)
    try:
        yield {"database_url": url, "database_schema": schema}
    finally:
        database = Database(url, schema=schema)
        await drop_schema(database, schema)
        await database.dispose()


async def test_a_failing_item_is_retried_with_backoff_then_parked(backend: dict[str, Any]) -> None:
    url = backend.pop("database_url")
    async with world(url, inbox_max_attempts=MAX_ATTEMPTS, **backend) as w:
        await w.pay.start()
        attempts: list[float] = []

        async def broken(notification_id: int, **_: object) -> None:
            attempts.append(time.monotonic())
            raise RuntimeError("the database said no")

        async def broken_batch(notification_ids: Sequence[int], **_: object) -> None:
            raise RuntimeError("the database said no")

        # Storing and applying at once fails, so the item is stored alone; the shared
        # (batch) apply fails, then the item alone fails and is recorded.
        inbox = w.pay.storage.inbox
        inbox.take = broken_batch  # type: ignore[method-assign,assignment]
        inbox.apply = broken_batch  # type: ignore[method-assign,assignment]
        inbox.apply_one = broken  # type: ignore[method-assign]
        item = notification_item(merchant_reference="order-p", key_hex=w.config.hmac_keys[0])
        auth = basic_auth(w.config.webhook_username, w.config.webhook_password)
        r = await w.client.post(
            "/pay/webhooks/adyen", content=notification_body(item), headers=auth
        )
        assert r.text == "[accepted]"

        parked = await _wait_parked(w.client, seconds=15.0)
        assert len(attempts) == MAX_ATTEMPTS
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.9 and gaps[1] >= 1.9, gaps  # 1 s, then 2 s (doubling)
        shown = ("id", "status", "detail", "merchantReference", "eventCode", "success")
        assert [{k: row[k] for k in (*shown, "deliveries", "attempts")} for row in parked] == [
            {
                "id": parked[0]["id"],
                "status": "parked",
                "detail": "RuntimeError",
                "merchantReference": "order-p",
                "eventCode": "AUTHORISATION",
                "success": True,
                "deliveries": 1,
                "attempts": MAX_ATTEMPTS,
            }
        ]
        hidden = await w.client.get("/pay/admin/notifications", params={"status": "parked"})
        assert hidden.status_code == 404  # admin only

        await asyncio.sleep(1.5)
        assert len(attempts) == MAX_ATTEMPTS  # parked means no more retries


async def _wait_parked(client: Any, *, seconds: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        r = await client.get(
            "/pay/admin/notifications",
            params={"status": "parked"},
            headers={"X-Admin-Key": ADMIN_KEY},
        )
        assert r.status_code == 200, r.text
        found: list[dict[str, Any]] = r.json()["notifications"]
        if found:
            return found
        await asyncio.sleep(0.1)
    raise AssertionError("the item was never parked")
