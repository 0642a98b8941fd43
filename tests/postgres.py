"""Throwaway PostgreSQL databases for the HTTP-level suites, cloned from a migrated template.

``CREATE DATABASE ... TEMPLATE`` takes milliseconds, so each test gets a fresh,
migrated database of its own. The template is made once per session (the
``postgres_template`` fixture in ``tests/conftest.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from sqlalchemy.engine import make_url

from miniprogram_pay.storage.schema import upgrade

POSTGRES_URL_ENV = "MINIPROGRAM_PAY_TEST_POSTGRES_URL"


def admin_dsn(url: str) -> str:
    """A libpq DSN for the server's maintenance database."""
    parsed = make_url(url).set(drivername="postgresql", database="postgres")
    return parsed.render_as_string(hide_password=False)


def libpq_dsn(url: str) -> str:
    """The SQLAlchemy URL as psycopg takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _run(sql: str) -> None:
    with psycopg.connect(admin_dsn(os.environ[POSTGRES_URL_ENV]), autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def migrated_template() -> Iterator[str]:
    """A migrated, empty database to clone; dropped on exit."""
    name = f"mpp_template_{uuid.uuid4().hex[:8]}"
    _run(f'CREATE DATABASE "{name}"')
    try:
        upgrade(with_database(os.environ[POSTGRES_URL_ENV], name))
        yield name
    finally:
        _run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def cloned_database(template: str) -> Iterator[str]:
    """A fresh database cloned from ``template``; its URL, dropped on exit."""
    name = f"mpp_test_{uuid.uuid4().hex[:12]}"
    _run(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield with_database(os.environ[POSTGRES_URL_ENV], name)
    finally:
        _run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
