"""Shared fixtures: a fresh database per test, on SQLite and (optionally) PostgreSQL.

Storage tests ask for ``database`` or ``storage``. They always run on a fresh
SQLite file under ``tmp_path``; when ``MINIPROGRAM_PAY_TEST_POSTGRES_URL`` is set
(e.g. ``postgresql+psycopg://postgres@localhost/postgres``) they run a second
time on PostgreSQL, each test in a schema of its own that is dropped afterwards.

Tests of a whole plugin ask for ``db_url``: a fresh SQLite file, and with PostgreSQL
a fresh database cloned from a template migrated once for the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from miniprogram_pay.storage import Database, Storage
from miniprogram_pay.storage.schema import create_all
from tests.postgres import POSTGRES_URL_ENV, cloned_database, migrated_template
from tests.rows import drop_schema

# No timed assertions: on a loaded 2-core machine a correct example can take longer than
# hypothesis's 200 ms deadline, and generating data longer than its too_slow check allows.
# The properties are what the tests check, not the speed of one example.
settings.register_profile(
    "miniprogram-pay", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("miniprogram-pay")
# Page tests' fixtures (browser, page): a real headless Chromium.
pytest_plugins = ["tests.browser"]


def backends() -> list[object]:
    backends: list[object] = [pytest.param("sqlite", id="sqlite")]
    if os.environ.get(POSTGRES_URL_ENV):
        backends.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
    return backends


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A URL for a SQLite file that does not exist yet."""
    return f"sqlite+aiosqlite:///{tmp_path / 'miniprogram_pay.db'}"


@pytest.fixture(params=backends())
async def database(request: pytest.FixtureRequest, sqlite_url: str) -> AsyncIterator[Database]:
    """A database with every table created and nothing in it."""
    if request.param == "sqlite":
        db = Database(sqlite_url)
        await create_all(db)
        try:
            yield db
        finally:
            await db.dispose()
        return
    schema = f"mpp_test_{uuid.uuid4().hex[:12]}"
    db = Database(os.environ[POSTGRES_URL_ENV], schema=schema)
    await create_all(db)
    try:
        yield db
    finally:
        await drop_schema(db, schema)
        await db.dispose()


@pytest.fixture
def storage(database: Database) -> Storage:
    return Storage.over(database)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated, empty PostgreSQL database to clone; dropped at the end of the session."""
    with migrated_template() as name:
        yield name


def database_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh database of ``backend`` for one test: its URL until the test ends."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/pay.db"
        return
    with cloned_database(request.getfixturevalue("postgres_template")) as url:
        yield url


@pytest.fixture(params=backends())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from database_url(request, request.param, tmp_path)
