"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

SQLite has one writer at a time. Writes therefore go through a dedicated
single-connection engine whose transactions start with ``BEGIN IMMEDIATE``:
the write lock is taken up front, so two writers never both read and then fail
to upgrade (SQLITE_BUSY), and writers of other processes wait on
``busy_timeout``. Reads use a separate pool and, with WAL, never block writers.
PostgreSQL uses one pool; per-payment serialisation there is ``SELECT ... FOR
UPDATE`` in the repository.

SQLite runs with ``synchronous=FULL`` unless asked otherwise: in WAL mode, NORMAL
syncs only at checkpoints, so a commit (an acknowledged webhook) can be lost to a
power failure or an OS crash. FULL syncs the log on every commit; group commit
(``services/batching.py``) shares that sync between the requests of a batch.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from miniprogram_pay.errors import ConfigurationError

__all__ = ["Database"]

SQLITE_BUSY_TIMEOUT_MS = 10_000
SqliteSynchronous = Literal["full", "normal"]


class Database:
    """The package's connection to its database. Create once; ``dispose()`` on shutdown."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 10,
        echo: bool = False,
        sqlite_synchronous: SqliteSynchronous = "full",
    ) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        self.schema = schema
        self.sqlite_synchronous = sqlite_synchronous
        if self.dialect == "sqlite":
            self._init_sqlite(parsed.database, echo)
        elif self.dialect == "postgresql":
            self._init_postgres(pool_size, echo)
        else:
            raise ConfigurationError(
                f"MINIPROGRAM_PAY_DATABASE_URL: unsupported database {self.dialect!r}. "
                "Use sqlite+aiosqlite:///path.db or postgresql+psycopg://user@host/db."
            )
        self._writes = async_sessionmaker(self.writer, class_=AsyncSession, expire_on_commit=False)
        self._reads = async_sessionmaker(self.reader, class_=AsyncSession, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def _options(self) -> dict[str, Any]:
        if self.schema:
            # Tables are declared without a schema; the map places them at run time.
            return {"schema_translate_map": {None: self.schema}}
        return {}

    def _init_sqlite(self, database: str | None, echo: bool) -> None:
        if not database or database == ":memory:":
            raise ConfigurationError(
                "MINIPROGRAM_PAY_DATABASE_URL: an in-memory SQLite database cannot be shared "
                "between connections. Use a file, e.g. sqlite+aiosqlite:///./miniprogram_pay.db"
            )
        if self.schema:
            raise ConfigurationError("MINIPROGRAM_PAY_DATABASE_SCHEMA is for PostgreSQL only.")
        self.writer = create_async_engine(
            self.url, echo=echo, pool_size=1, max_overflow=0, pool_timeout=60
        )
        self.reader = create_async_engine(self.url, echo=echo, pool_size=8, max_overflow=8)
        _sqlite_pragmas(self.writer, immediate=True, synchronous=self.sqlite_synchronous)
        _sqlite_pragmas(self.reader, immediate=False, synchronous=self.sqlite_synchronous)

    def _init_postgres(self, pool_size: int, echo: bool) -> None:
        try:
            import psycopg  # noqa: F401 - the driver of postgresql+psycopg, an optional extra
        except ModuleNotFoundError:
            raise ConfigurationError(
                "MINIPROGRAM_PAY_DATABASE_URL: PostgreSQL needs the psycopg driver. "
                "Install it with: pip install 'miniprogram-pay[postgres]'."
            ) from None
        self.writer = create_async_engine(
            self.url,
            echo=echo,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            execution_options=self._options(),
        )
        self.reader = self.writer

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in a write transaction, committed on success, rolled back on error."""
        async with self._writes() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._reads() as session:
            yield session

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


def _sqlite_pragmas(
    engine: AsyncEngine, *, immediate: bool, synchronous: SqliteSynchronous
) -> None:
    if synchronous not in ("full", "normal"):
        raise ConfigurationError("MINIPROGRAM_PAY_SQLITE_SYNCHRONOUS must be 'full' or 'normal'.")

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event, not the driver, decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
