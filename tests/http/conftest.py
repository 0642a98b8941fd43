"""Fixtures of the HTTP suite: a fresh database per test, on SQLite and PostgreSQL.

Every HTTP test runs on a fresh SQLite file; when ``MINIPROGRAM_PAY_TEST_POSTGRES_URL``
is set it runs again on a fresh PostgreSQL database, cloned from a template that was
migrated once for the session (``CREATE DATABASE ... TEMPLATE`` takes milliseconds).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from miniprogram_pay.storage.schema import upgrade
from tests.conftest import POSTGRES_URL_ENV


def _backends() -> list[object]:
    backends: list[object] = [pytest.param("sqlite", id="sqlite")]
    if os.environ.get(POSTGRES_URL_ENV):
        backends.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
    return backends


def _admin_dsn(url: str) -> str:
    """A libpq DSN for the server's maintenance database."""
    parsed = make_url(url).set(drivername="postgresql", database="postgres")
    return parsed.render_as_string(hide_password=False)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated, empty database to clone; dropped at the end of the session."""
    base = os.environ[POSTGRES_URL_ENV]
    name = f"mpp_http_template_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(_admin_dsn(base), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    upgrade(_with_database(base, name))
    yield name
    with psycopg.connect(_admin_dsn(base), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=_backends())
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/pay.db"
        return
    template = request.getfixturevalue("postgres_template")
    base = os.environ[POSTGRES_URL_ENV]
    name = f"mpp_http_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_admin_dsn(base), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield _with_database(base, name)
    finally:
        with psycopg.connect(_admin_dsn(base), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
