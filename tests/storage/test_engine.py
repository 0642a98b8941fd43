"""Durability: every commit is synced (SQLite ``synchronous=FULL``) unless asked otherwise,
and a write nobody is told of on its own may skip the sync (``durable=False``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Integer, String, column, text

from miniprogram_pay.storage import Database
from miniprogram_pay.storage.schema import create_all
from miniprogram_pay.storage.sql import Sql, Unit
from tests.world import default_config, settings_for

# PRAGMA synchronous answers a number: 1 is NORMAL, 2 is FULL.
SYNCHRONOUS = {"normal": 1, "full": 2}


SETTING = Sql(text("PRAGMA synchronous").columns(column("synchronous", Integer)))


def _setting(unit: Unit) -> int:
    [(value,)] = unit.run(SETTING).all()
    return int(value)


async def _synchronous(database: Database) -> tuple[int, int]:
    """The setting on a writer and on a reader connection (each thread has its own)."""
    return await database.write(_setting), await database.read(_setting)


async def test_an_acknowledged_commit_survives_a_power_failure_by_default(
    sqlite_url: str,
) -> None:
    database = Database(sqlite_url)
    try:
        await create_all(database)
        assert await _synchronous(database) == (SYNCHRONOUS["full"], SYNCHRONOUS["full"])
    finally:
        await database.dispose()


async def test_normal_is_an_explicit_choice(sqlite_url: str) -> None:
    database = Database(sqlite_url, sqlite_synchronous="normal")
    try:
        await create_all(database)
        assert await _synchronous(database) == (SYNCHRONOUS["normal"], SYNCHRONOUS["normal"])
    finally:
        await database.dispose()


def test_the_plugin_asks_for_full_unless_told_otherwise() -> None:
    settings = settings_for(default_config(), "sqlite+aiosqlite:///./x.db")
    assert settings.sqlite_synchronous == "full"


def test_the_postgresql_threads_follow_the_configured_pool_size() -> None:
    # Threads and their connections start with the first unit: no server is needed here.
    database = Database("postgresql+psycopg://app@127.0.0.1:9/app", pool_size=3)
    assert (database.writer_threads, database.reader_threads) == (3, 3)
    assert Database("postgresql+psycopg://app@127.0.0.1:9/app", pool_size=10).reader_threads == 4


COMMIT_WAITS = {
    # SQLite: the log is synced at commit (FULL); PostgreSQL: the commit waits for its flush.
    "sqlite": Sql(text("PRAGMA synchronous").columns(column("setting", Integer))),
    "postgresql": Sql(text("SHOW synchronous_commit").columns(column("setting", String))),
}
WAITS = {"sqlite": (2, 1), "postgresql": ("on", "off")}  # (synced, not synced)


def _commit_setting(unit: Unit) -> object:
    [(value,)] = unit.run(COMMIT_WAITS[unit.dialect]).all()
    return value


async def test_a_write_that_nobody_is_told_of_alone_skips_the_sync_and_only_it(
    database: Database,
) -> None:
    synced, lazy = WAITS[database.dialect]
    assert await database.write(_commit_setting) == synced
    assert await database.write(_commit_setting, durable=False) == lazy
    assert await database.write(_commit_setting) == synced  # the next one syncs again

    def fails(unit: Unit) -> None:
        _commit_setting(unit)
        raise ValueError("the unit's own error")

    with pytest.raises(ValueError):
        await database.write(fails, durable=False)
    assert await database.write(_commit_setting) == synced
    assert await database.read(_commit_setting) == synced
    assert database.counts().unsynced == 2


async def test_the_reference_executor_skips_the_sync_alike(sqlite_url: str) -> None:
    database = Database(sqlite_url, executor="core")
    try:
        await create_all(database)
        assert await database.write(_commit_setting, durable=False) == 1
        assert await database.write(_commit_setting) == 2
    finally:
        await database.dispose()


async def test_normal_stays_normal_for_every_write(sqlite_url: str) -> None:
    database = Database(sqlite_url, sqlite_synchronous="normal")
    try:
        await create_all(database)
        assert await database.write(_commit_setting, durable=False) == 1
        assert await database.write(_commit_setting) == 1
    finally:
        await database.dispose()


def test_the_aiosqlite_url_spelling_needs_no_aiosqlite(tmp_path: Path) -> None:
    # A fresh interpreter in which aiosqlite cannot be imported: migrate, write, read.
    script = f"""
import asyncio, sys
sys.modules["aiosqlite"] = None  # import aiosqlite raises ImportError
from miniprogram_pay.storage import Database
from miniprogram_pay.storage.schema import prepare
from miniprogram_pay.storage.stores import Storage
from miniprogram_pay.domain.money import Amount

async def main():
    db = Database("sqlite+aiosqlite:///{tmp_path / "pay.db"}")
    try:
        await prepare(db, auto_migrate=True)
        store = Storage.over(db).payments
        await store.create(reference="o-1", openid="oid", amount=Amount(100, "CNY"),
                           idempotency_key="k-1")
        print((await store.get("o-1")).state.value)
    finally:
        await db.dispose()

asyncio.run(main())
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Created"
