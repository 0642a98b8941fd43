"""SQLite durability: every commit is synced (``synchronous=FULL``) unless asked otherwise."""

from __future__ import annotations

from sqlalchemy import Integer, column, text

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
