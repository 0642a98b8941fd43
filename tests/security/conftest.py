"""Fixtures of the security suite: a fresh SQLite file and a world per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.helpers import FUZZ_CASES, SecurityWorld, security_world


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'pay.db'}"


@pytest.fixture
async def world(db_url: str) -> AsyncIterator[SecurityWorld]:
    async with security_world(db_url) as w:
        yield w


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not FUZZ_CASES:
        return
    terminalreporter.section("security fuzzing")
    for name, statuses in sorted(FUZZ_CASES.items()):
        spread = " ".join(f"{status}x{n}" for status, n in sorted(statuses.items()))
        terminalreporter.write_line(f"{statuses.total():6d}  {name}: {spread}")
    total = sum(statuses.total() for statuses in FUZZ_CASES.values())
    terminalreporter.write_line(f"{total:6d}  fuzz cases in total")
