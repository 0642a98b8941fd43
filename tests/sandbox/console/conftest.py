"""The ``console`` fixture: the page's side of the sandbox app, with the host in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.sandbox.console.helpers import Console, config
from tests.world import world


@pytest.fixture
async def console(sqlite_url: str) -> AsyncIterator[Console]:
    async with world(sqlite_url, config=config()) as w:
        transport = httpx.ASGITransport(app=w.sandbox_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sandbox.test") as c:
            yield Console(w, c)
