"""Schema management: versioned Alembic migrations shipped inside the package.

The package owns a handful of ``mpp_`` tables in someone else's database, so it
keeps its own Alembic history (``storage/migrations``) and its own version table,
``mpp_alembic_version``, which never collides with the host's ``alembic_version``.

* ``upgrade(url, schema)`` brings a database to the newest revision. It is what
  ``miniprogram-pay db upgrade`` runs, and what start-up runs when auto-migration
  is on (the SQLite default). Concurrent upgrades are serialised by the database
  itself (``pg_advisory_xact_lock`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite),
  so several workers starting together run the migrations once.
* ``prepare(database, auto_migrate=...)`` is the start-up step: upgrade if asked,
  then refuse to start on a database that is behind the code.

Example::

    from miniprogram_pay.storage.schema import upgrade

    upgrade("postgresql+psycopg://app@db/shop", schema="payments")

A new revision, for maintainers (against a database at head)::

    from alembic import command
    command.revision(alembic_config(url), message="...", autogenerate=True)
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from miniprogram_pay.errors import ConfigurationError, StorageError
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.tables import metadata

# Alembic (and Mako) cost a third of the package's import time; they load on the
# first migration, not with the package.
if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

__all__ = [
    "BASELINE_REVISION",
    "MIGRATIONS_PATH",
    "VERSION_TABLE",
    "SchemaStatus",
    "alembic_config",
    "check",
    "create_all",
    "current_revision",
    "downgrade",
    "head_revision",
    "prepare",
    "schema_status",
    "stamp_head_if_unversioned",
    "upgrade",
]

logger = logging.getLogger("miniprogram_pay.storage.schema")

MIGRATIONS_PATH = Path(__file__).parent / "migrations"
VERSION_TABLE = "mpp_alembic_version"
# The revision that matches what ``metadata.create_all`` made before migrations existed.
BASELINE_REVISION = "0001_initial"
# Any 64-bit number that the host is unlikely to use for its own advisory locks.
ADVISORY_LOCK_KEY = 0x6D70705F736368  # "mpp_sch"
SQLITE_BUSY_TIMEOUT_MS = 60_000
UPGRADE_HINT = (
    "Run `miniprogram-pay db upgrade` with the same MINIPROGRAM_PAY_DATABASE_URL "
    "(and MINIPROGRAM_PAY_DATABASE_SCHEMA) before starting the app, or set "
    "MINIPROGRAM_PAY_AUTO_MIGRATE=true to migrate at start-up."
)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Alembic's ``context`` is a module global: two migrations in one process must take turns.
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(database_url: str, schema: str | None = None) -> Config:
    """An Alembic ``Config`` for the package's migrations (no ini file needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH))
    config.set_main_option(
        "sqlalchemy.url", _sync_url(database_url).render_as_string(hide_password=False)
    )
    config.attributes["schema"] = _checked_schema(database_url, schema)
    return config


def upgrade(database_url: str, schema: str | None = None, *, revision: str = "head") -> None:
    """Migrate the database at ``database_url`` (in ``schema``) up to ``revision``.

    Idempotent, and safe to run from several processes at once. Blocking: call it
    from a CLI, a deploy step, or ``asyncio.to_thread``.
    """
    from alembic import command

    _migrate(database_url, schema, lambda config: command.upgrade(config, revision))


def downgrade(database_url: str, schema: str | None, *, revision: str) -> None:
    """Migrate down to ``revision`` (``"base"`` drops every table of the package)."""
    from alembic import command

    _migrate(database_url, schema, lambda config: command.downgrade(config, revision))


def current_revision(database_url: str, schema: str | None = None) -> str | None:
    """The revision the database is at, or None when the package's tables are not there."""
    engine = _sync_engine(database_url)
    try:
        with engine.connect() as connection:
            return _current(connection, _checked_schema(database_url, schema))
    finally:
        engine.dispose()


def head_revision() -> str:
    """The newest revision this version of the package ships."""
    return _heads()[0]


async def prepare(database: Database, *, auto_migrate: bool | None = None) -> None:
    """The start-up step: migrate if asked (default: SQLite only), then ``check``.

    Migrations run in a thread so that start-up never blocks the event loop.
    """
    if auto_migrate is None:
        auto_migrate = database.is_sqlite
    try:
        if auto_migrate:
            await asyncio.to_thread(upgrade, database.url, database.schema)
        await check(database)
    except OperationalError as exc:
        raise StorageError("the database is unavailable; retry shortly") from exc


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where the database's schema stands against this release's migrations."""

    state: Literal["current", "newer", "behind", "missing"]
    found: str | None
    expected: str

    @property
    def usable(self) -> bool:
        """Current, or newer: a newer release migrated it (migrations only add)."""
        return self.state in ("current", "newer")

    def problem(self) -> str:
        """What is wrong, and what to do, for a schema that is not usable."""
        if self.state == "missing":
            return (
                f"The database has no miniprogram-pay tables (no {VERSION_TABLE} revision); "
                f"this version needs revision {self.expected}. {UPGRADE_HINT}"
            )
        return (
            f"The database schema is behind: it is at revision {self.found}, this version of "
            f"miniprogram-pay needs {self.expected}. {UPGRADE_HINT}"
        )


async def schema_status(database: Database) -> SchemaStatus:
    """Read the database's revision (one query) and judge it; ``OperationalError`` if it is down."""
    found = await database.run_sync(
        lambda connection: _current(connection, database.schema), write=False
    )
    return await asyncio.to_thread(_judge, found)


def _judge(found: str | None) -> SchemaStatus:
    expected = head_revision()
    if found == expected:
        return SchemaStatus("current", found, expected)
    if found is None:
        return SchemaStatus("missing", found, expected)
    return SchemaStatus("behind" if _is_known(found) else "newer", found, expected)


async def check(database: Database) -> None:
    """Raise ``ConfigurationError`` when the database is behind this version of the package."""
    status = await schema_status(database)
    if not status.usable:
        raise ConfigurationError(status.problem())
    if status.state == "newer":
        logger.warning(
            "database schema is at revision %s, newer than this release knows (%s)",
            status.found,
            status.expected,
        )


async def create_all(database: Database) -> None:
    """Create missing tables (development and tests; production uses migrations).

    A database made here is recorded as the newest migration revision, so the
    start-up schema check accepts it.
    """

    def create(connection: Connection) -> None:
        if database.schema:
            connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{database.schema}"')
        metadata.create_all(connection)
        stamp_head_if_unversioned(connection, database.schema)

    try:
        await database.run_sync(create)
    except OperationalError as exc:
        raise StorageError("the database is unavailable; retry shortly") from exc


def stamp_head_if_unversioned(connection: Connection, schema: str | None) -> None:
    """Record tables just made by ``metadata.create_all`` as the newest revision.

    Sound because the tests prove that ``tables.py`` and the head revision agree.
    """
    context = _context(connection, schema)
    if not context.get_current_heads():
        context.stamp(_script(), "head")


# -- running Alembic ----------------------------------------------------------------


def _migrate(database_url: str, schema: str | None, run: Any) -> None:
    config = alembic_config(database_url, schema)
    engine = _sync_engine(database_url)
    try:
        with _ALEMBIC_LOCK, engine.connect() as connection:
            _take_migration_lock(connection, config.attributes["schema"])
            _adopt_unversioned(connection, config)
            config.attributes["connection"] = connection
            run(config)
            connection.commit()
    finally:
        engine.dispose()


def _take_migration_lock(connection: Connection, schema: str | None) -> None:
    """Serialise migrators; the lock lasts until the migration transaction ends."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        if schema:
            connection.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            # Unqualified names in migrations (tables, raw SQL) land in the schema.
            connection.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
    else:
        # The engine's "begin" listener made this transaction BEGIN IMMEDIATE.
        connection.exec_driver_sql("SELECT 1")


def _adopt_unversioned(connection: Connection, config: Config) -> None:
    """Tables made by ``create_all`` before migrations existed are the baseline revision."""
    schema = config.attributes["schema"]
    tables = inspect(connection).get_table_names(schema=schema)
    if VERSION_TABLE in tables or "mpp_payment" not in tables:
        return
    from alembic import command

    logger.warning("adopting unversioned miniprogram-pay tables as revision %s", BASELINE_REVISION)
    config.attributes["connection"] = connection
    command.stamp(config, BASELINE_REVISION)


def _context(connection: Connection, schema: str | None) -> MigrationContext:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
    )


def _current(connection: Connection, schema: str | None) -> str | None:
    heads = _context(connection, schema).get_current_heads()
    return heads[0] if heads else None


@lru_cache(maxsize=1)
def _script() -> ScriptDirectory:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_PATH))
    return ScriptDirectory.from_config(config)


def _heads() -> tuple[str, ...]:
    heads = tuple(_script().get_heads())
    if len(heads) != 1:  # pragma: no cover - a packaging mistake, caught by the tests
        raise ConfigurationError(f"miniprogram-pay ships {len(heads)} migration heads; expected 1")
    return heads


def _is_known(revision: str) -> bool:
    return any(script.revision == revision for script in _script().walk_revisions())


# -- engines ------------------------------------------------------------------------


def _checked_schema(database_url: str, schema: str | None) -> str | None:
    if not schema:
        return None
    if make_url(database_url).get_backend_name() != "postgresql":
        raise ConfigurationError("MINIPROGRAM_PAY_DATABASE_SCHEMA is for PostgreSQL only.")
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ConfigurationError(
            f"MINIPROGRAM_PAY_DATABASE_SCHEMA: {schema!r} is not a plain schema name. "
            "Use lower-case letters, digits and underscores (at most 63)."
        )
    return schema


def _sync_url(database_url: str) -> URL:
    """The blocking twin of an async URL: aiosqlite -> pysqlite, asyncpg -> psycopg."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        return url.set(drivername="sqlite+pysqlite")
    if backend == "postgresql":
        return url.set(drivername="postgresql+psycopg")
    raise ConfigurationError(
        f"MINIPROGRAM_PAY_DATABASE_URL: unsupported database {backend!r}. "
        "Use sqlite+aiosqlite:///path.db or postgresql+psycopg://user@host/db."
    )


def _sync_engine(database_url: str) -> Engine:
    engine = create_engine(_sync_url(database_url), poolclass=NullPool)
    if engine.dialect.name == "sqlite":
        _sqlite_immediate(engine)
    return engine


def _sqlite_immediate(engine: Engine) -> None:
    # pysqlite's own transaction handling would commit before DDL; take over, and
    # start with the write lock so two migrators never interleave.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
