"""Real servers for end-to-end tests: the merchant API and the sandbox under uvicorn on 127.0.0.1.

Each server pair runs in a background thread for the whole module; tests use
their own references, so they never see each other's payments.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from miniprogram_pay.sandbox.server import SandboxedServers


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxedServers]:
    """Sandbox in its default shape: wx parameters in ``action.data``, immediate webhooks."""
    yield from _serve(tmp_path_factory.mktemp("e2e"), style="sdk", delay=0.0)


@pytest.fixture(scope="module")
def slow_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxedServers]:
    """A v71 redirect action (no paymentData: the webhook alone settles), webhooks late."""
    yield from _serve(tmp_path_factory.mktemp("e2e-slow"), style="action", delay=0.3)


def _serve(directory: Path, *, style: str, delay: float) -> Iterator[SandboxedServers]:
    servers = SandboxedServers(
        environ={},
        database_url=f"sqlite+aiosqlite:///{directory / 'e2e.db'}",
        response_style=style,  # type: ignore[arg-type]
        webhook_delay_seconds=delay,
    )
    with servers:
        yield servers
