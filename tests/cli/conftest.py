"""Run the command line the way a person does: ``python -m miniprogram_pay ...`` in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from miniprogram_pay.sandbox.server import SandboxedServers

Run = Callable[..., subprocess.CompletedProcess[str]]
CLI_TIMEOUT_SECONDS = 60


def run_in(
    directory: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI with no MINIPROGRAM_PAY_* variables but ``env``, in ``directory``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MINIPROGRAM_PAY_")}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "miniprogram_pay", *args],
        capture_output=True,
        text=True,
        cwd=directory,
        env=clean,
        timeout=CLI_TIMEOUT_SECONDS,
        check=False,
    )


@pytest.fixture
def run_cli(tmp_path: Path) -> Run:
    """Run the CLI in an empty working directory."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run_in(tmp_path, *args, env=env)

    return run


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxedServers]:
    directory = tmp_path_factory.mktemp("cli")
    with SandboxedServers(
        environ={}, database_url=f"sqlite+aiosqlite:///{directory / 'cli.db'}"
    ) as servers:
        yield servers
