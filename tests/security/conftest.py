"""Fixtures of the security suite: a fresh database and a world per test.

Every test runs on SQLite. A module that sets ``BOTH_BACKENDS = True`` (the fuzz
suites, the NUL cases) runs again on PostgreSQL when
``MINIPROGRAM_PAY_TEST_POSTGRES_URL`` is set: PostgreSQL refuses input SQLite takes
(a NUL in text), so a hostile input must be tried against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import backends, database_url
from tests.security.helpers import FUZZ_CASES, SecurityWorld, security_world


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if getattr(metafunc.module, "BOTH_BACKENDS", False) and "db_url" in metafunc.fixturenames:
        metafunc.parametrize("db_url", backends(), indirect=True)


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request, getattr(request, "param", "sqlite"), tmp_path)


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
