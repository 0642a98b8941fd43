"""Prometheus' multiprocess mode under ``uvicorn --workers 2``: any worker's scrape counts every
worker's calls (PROMETHEUS_MULTIPROC_DIR, as docs/operations.md says)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.multiworker.harness import Merchants
from tests.observability.helpers import scrape, value

pytestmark = pytest.mark.slow

SESSIONS = 12
CALLS = {"service": "wechat", "endpoint": "/sns/jscode2session", "outcome": "ok"}


async def test_a_scrape_of_any_worker_counts_every_workers_calls(
    merchants: Merchants, tmp_path: Path
) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    merchant = await merchants.start("metrics", workers=2, PROMETHEUS_MULTIPROC_DIR=str(folder))
    # A new connection each time, so the kernel spreads them over both workers.
    for n in range(SESSIONS):
        async with httpx.AsyncClient(base_url=merchant.url, timeout=20) as client:
            answer = await client.post("/pay/session", json={"code": f"alice.{n}"})
            assert answer.status_code == 200, answer.text
    seen = set()
    for _ in range(8):
        async with httpx.AsyncClient(base_url=merchant.url, timeout=20) as client:
            samples = await scrape(client)
        seen.add(value(samples, "upstream_calls_total", CALLS))
        assert value(samples, "payments", {"state": "Created"}) == 0  # the database's, once
    assert seen == {SESSIONS}
    assert len(list(folder.glob("counter_*.db"))) >= 2  # every worker's values, shared
