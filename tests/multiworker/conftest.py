"""Fixtures for the multi-worker tests: a PostgreSQL schema at head, the sandbox, merchants."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from miniprogram_pay.storage import Database, Storage
from miniprogram_pay.storage.schema import upgrade
from tests.multiworker.harness import (
    Merchants,
    SandboxServer,
    Shop,
    merchant_env,
    postgres_url,
    serve_sandbox,
)
from tests.rows import drop_schema


@pytest.fixture
def pg_url() -> str:
    return postgres_url()


def _admin_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
async def fresh_pg_database(pg_url: str) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database (for tests that need the public schema)."""
    name = f"mpp_mw_{uuid.uuid4().hex[:12]}"

    def run(sql: str) -> None:
        with psycopg.connect(_admin_dsn(pg_url), autocommit=True) as conn:
            conn.execute(sql)

    await asyncio.to_thread(run, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await asyncio.to_thread(run, f'DROP DATABASE "{name}" WITH (FORCE)')


@dataclass
class Store:
    url: str
    schema: str
    database: Database
    storage: Storage


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[Store]:
    """A schema of its own, migrated with ``upgrade`` like an operator would, dropped after."""
    schema = f"mpp_mw_{uuid.uuid4().hex[:12]}"
    await asyncio.to_thread(upgrade, pg_url, schema)
    database = Database(pg_url, schema=schema)
    try:
        yield Store(pg_url, schema, database, Storage.over(database))
    finally:
        await drop_schema(database, schema)
        await database.dispose()


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with serve_sandbox() as server:
        yield server


@pytest.fixture
def deliveries_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "deliveries"
    folder.mkdir()
    return folder


@pytest.fixture
def merchants(
    sandbox: SandboxServer, store: Store, deliveries_dir: Path, tmp_path: Path
) -> Iterator[Merchants]:
    started = Merchants(merchant_env(sandbox, store.url, store.schema, deliveries_dir), tmp_path)
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
async def shop(sandbox: SandboxServer) -> AsyncIterator[Shop]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    async with httpx.AsyncClient(timeout=20.0, limits=limits) as client:
        yield Shop(client, sandbox)
