"""SQLite durability: every commit is synced (``synchronous=FULL``) unless asked otherwise."""

from __future__ import annotations

from miniprogram_pay.storage import Database
from miniprogram_pay.storage.schema import create_all
from tests.world import default_config, settings_for

# PRAGMA synchronous answers a number: 1 is NORMAL, 2 is FULL.
SYNCHRONOUS = {"normal": 1, "full": 2}


async def _synchronous(database: Database) -> tuple[int, int]:
    """The setting on a writer and on a reader connection."""
    async with database.write() as session:
        writer = (await session.connection()).exec_driver_sql("PRAGMA synchronous")
        written = (await writer).scalar_one()
    async with database.read() as session:
        reader = (await session.connection()).exec_driver_sql("PRAGMA synchronous")
        read = (await reader).scalar_one()
    return int(written), int(read)


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
