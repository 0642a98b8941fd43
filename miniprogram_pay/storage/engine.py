"""The database, and the threads where its units of work run.

Every read and every write of the package is a *unit of work*: a plain function of a
``Unit`` (``storage/sql.py``) that ``Database.write`` or ``Database.read`` runs whole in
a database thread, between ``BEGIN`` and ``COMMIT``. A unit crosses from the event loop
once, however many statements it runs, and the event loop never waits on the database.
Each thread owns one connection:

- **SQLite**: one writer thread (the database has one write lock). Its transactions
  start with ``BEGIN IMMEDIATE``: the lock is taken up front, so two writers never both
  read and then fail to upgrade (SQLITE_BUSY), and writers of other processes wait on
  ``busy_timeout``. The units that queued while it committed run next in one
  transaction, each under a savepoint, and share its commit (``transact_group``).
  Readers have threads of their own and, with WAL, never block it.
- **PostgreSQL**: ``pool_size`` writer threads and up to four readers. Per-payment
  serialisation is ``SELECT ... FOR UPDATE`` in the stores. Each connection stays in
  psycopg's pipeline mode: a unit's statements go out together and it waits for the
  server only where it reads a result, and at its commit (``UnitCounts`` counts the
  waits).

SQLite runs with ``synchronous=FULL`` unless asked otherwise: in WAL mode, NORMAL
syncs only at checkpoints, so a commit (an acknowledged webhook) can be lost to a
power failure or an OS crash. FULL syncs the log on every commit; group commit
(``services/batching.py``) shares that sync between the requests of a batch, and a
webhook that can be applied at once is stored and applied under one commit.

Example::

    database = Database("sqlite+aiosqlite:///./pay.db")
    state = await database.read(lambda unit: unit.run(STATE, {"reference": "o-1"}).all())
    await database.dispose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, Dialect, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from miniprogram_pay.errors import ConfigurationError, StorageError
from miniprogram_pay.retrying import Backoff, retrying
from miniprogram_pay.storage.lanes import Lanes, Outcome
from miniprogram_pay.storage.sql import (
    CoreUnit,
    DriverUnit,
    StaleRowError,
    Unit,
    server_placeholders,
)

__all__ = ["Database", "UnitCounts"]

logger = logging.getLogger("miniprogram_pay.storage")

T = TypeVar("T")
SQLITE_BUSY_TIMEOUT_MS = 10_000
SqliteSynchronous = Literal["full", "normal"]
Executor = Literal["driver", "core"]
SQLITE_READERS = 2
MAX_POSTGRES_READERS = 4
WRITE_ATTEMPTS = 6
READ_ATTEMPTS = 3
# Lock waits, version conflicts and a reconnect clear within milliseconds.
UNIT_BACKOFF = Backoff(base_seconds=0.005, cap_seconds=0.5)
# A write that need not wait for the disk (``Database.write(durable=False)``), and back.
SQLITE_LAZY = "PRAGMA synchronous=NORMAL"
SQLITE_DURABLE = "PRAGMA synchronous=FULL"
POSTGRES_LAZY = "SET LOCAL synchronous_commit = off"
# libpq's TCP keepalives: the first probe after 30 idle seconds, then every 10 s, and
# the connection counts as lost after 3 unanswered (the next unit then opens another).
POSTGRES_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}


@dataclass(frozen=True, slots=True)
class UnitCounts:
    """What this process asked of its database so far (for profiles and monitoring).

    Each unit is one hop from the event loop to a database thread and back;
    ``unsynced`` counts the writes committed without waiting for the disk;
    ``write_waits`` and ``read_waits`` the units' waits for a PostgreSQL server (its
    round trips; none on SQLite, where each statement runs as it is given);
    ``shared`` the writes committed in a transaction begun for an earlier one (SQLite:
    they queued behind a commit, and shared the next).
    """

    writes: int
    reads: int
    statements: int
    unsynced: int = 0
    write_waits: int = 0
    read_waits: int = 0
    shared: int = 0


class Database:
    """The package's connection to its database. Create once; ``dispose()`` on shutdown.

    ``writer_threads`` and ``reader_threads`` say how many threads (each with one
    connection) run its units of work: 1 and 2 on SQLite, ``pool_size`` and up to 4
    on PostgreSQL.

    ``executor="core"`` runs every statement through SQLAlchemy's ``Connection.execute``
    instead of the driver: the reference the tests hold the driver path to.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 10,
        echo: bool = False,
        sqlite_synchronous: SqliteSynchronous = "full",
        executor: Executor = "driver",
    ) -> None:
        parsed = make_url(url)
        self.url = url
        self.dialect = parsed.get_backend_name()
        self.schema = schema
        self.sqlite_synchronous = sqlite_synchronous
        self.executor = executor
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(parsed, echo)
            writers, readers = 1, SQLITE_READERS
        elif self.dialect == "postgresql":
            self.engine = self._postgres_engine(parsed, echo)
            writers, readers = pool_size, min(pool_size, MAX_POSTGRES_READERS)
        else:
            raise ConfigurationError(
                f"MINIPROGRAM_PAY_DATABASE_URL: unsupported database {self.dialect!r}. "
                "Use sqlite+aiosqlite:///path.db or postgresql+psycopg://user@host/db."
            )
        self.writer_threads, self.reader_threads = writers, readers
        self._driver_dialect: Dialect | None = None
        self._driver_dialect_lock = threading.Lock()
        # SQLite's one writer: the units that queued behind a commit share the next one.
        shared = self.is_sqlite and executor == "driver"
        self._writers = Lanes(
            "mpp-db-writer",
            writers,
            lambda: _Session(self, write=True),
            run_group=_run_group if shared else None,
        )
        self._readers = Lanes("mpp-db-reader", readers, lambda: _Session(self, write=False))

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def driver_dialect(self) -> Dialect:
        """The dialect the driver path compiles with (PostgreSQL: ``$n`` placeholders).

        Read from a database thread once its connection exists: the engine's dialect is
        initialised (server version, types) by its first connection.
        """
        if self._driver_dialect is not None:  # every unit asks: no lock once it is known
            return self._driver_dialect
        with self._driver_dialect_lock:
            if self._driver_dialect is None:
                dialect = self.engine.dialect
                self._driver_dialect = dialect if self.is_sqlite else server_placeholders(dialect)
            return self._driver_dialect

    # -- units of work -----------------------------------------------------------------

    async def write(
        self, work: Callable[[Unit], T], *, what: str = "write transaction", durable: bool = True
    ) -> T:
        """Run ``work`` in a write transaction in a writer thread: committed, or rolled back.

        A lock wait, a deadlock, a dropped connection or a ``StaleRowError`` runs the
        whole unit again (a few times, with backoff); what still fails is a
        ``StorageError`` (503), except an ``IntegrityError``, which is the caller's.

        ``durable=False`` commits without waiting for the disk (SQLite: the log is not
        synced for this commit; PostgreSQL: ``synchronous_commit`` off for it). Only for
        a unit that nobody is told of on its own: the log is one sequence, so the next
        durable commit of any unit makes this one durable too, and until then a power
        failure may take it back. A payment created before Adyen is asked (its answer's
        commit is durable, and only that one is told to the shopper) and a "delivered"
        mark (lost, the change is told again) are such units.
        """
        return await self._run(self._writers, work, WRITE_ATTEMPTS, what, durable)

    async def read(self, work: Callable[[Unit], T]) -> T:
        """Run ``work`` in a read transaction in a reader thread (one snapshot on SQLite)."""
        return await self._run(self._readers, work, READ_ATTEMPTS, "read", True)

    async def _run(
        self,
        lanes: Lanes[_Session],
        work: Callable[[Unit], T],
        attempts: int,
        what: str,
        durable: bool,
    ) -> T:
        job = _Part(work, durable)
        try:
            # The first attempt outside the retry loop: it nearly always succeeds, and
            # setting the loop up costs the event loop more than the hop itself.
            try:
                return await lanes.submit(job)
            except Exception as exc:
                if not _is_retryable(exc):
                    raise
                pause = UNIT_BACKOFF.delay(1)
                logger.info("%s failed (attempt 1); retrying in %.3f s", what, pause)
                await asyncio.sleep(pause)
            async for attempt in retrying(
                attempts=attempts - 1,
                backoff=UNIT_BACKOFF,
                retry_on=_is_retryable,
                logger=logger,
                what=what,
            ):
                with attempt:
                    return await lanes.submit(job)
        except StaleRowError:
            raise StorageError("the database is busy; retry shortly") from None
        except OperationalError as exc:
            raise StorageError("the database is unavailable; retry shortly") from exc
        except DBAPIError as exc:
            if isinstance(exc, IntegrityError) or not _is_transient(exc):
                raise
            raise StorageError("the database is busy; retry shortly") from exc
        raise AssertionError("unreachable: the retry loop returns or raises")

    async def run_sync(self, work: Callable[[Connection], T], *, write: bool = True) -> T:
        """Run ``work`` on a SQLAlchemy connection in one transaction, in a thread of its own.

        For what units of work do not do: DDL, Alembic, a test's own inspection.
        ``write=False`` reads only (rolled back, and on SQLite without the write lock,
        so a readiness probe never waits behind the writer).
        """
        return await asyncio.to_thread(self._admin, work, write)

    def _admin(self, work: Callable[[Connection], T], write: bool) -> T:
        with self.engine.connect() as connection:
            if self.is_sqlite and write:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            result = work(connection)
            if write:
                connection.commit()
            else:
                connection.rollback()
            return result

    def counts(self) -> UnitCounts:
        writes, reads = self._writers.sessions, self._readers.sessions
        return UnitCounts(
            writes=sum(s.units for s in writes),
            reads=sum(s.units for s in reads),
            statements=sum(s.statements for s in (*writes, *reads)),
            unsynced=sum(s.unsynced for s in writes),
            write_waits=sum(s.waits for s in writes),
            read_waits=sum(s.waits for s in reads),
            shared=sum(s.shared for s in writes),
        )

    async def dispose(self) -> None:
        """Finish the units in flight, close every connection and stop the threads."""
        await asyncio.to_thread(self._writers.close)
        await asyncio.to_thread(self._readers.close)
        self.engine.dispose()

    # -- engines -----------------------------------------------------------------------

    def _sqlite_engine(self, url: URL, echo: bool) -> Engine:
        if not url.database or url.database == ":memory:":
            raise ConfigurationError(
                "MINIPROGRAM_PAY_DATABASE_URL: an in-memory SQLite database cannot be shared "
                "between connections. Use a file, e.g. sqlite+aiosqlite:///./miniprogram_pay.db"
            )
        if self.schema:
            raise ConfigurationError("MINIPROGRAM_PAY_DATABASE_SCHEMA is for PostgreSQL only.")
        synchronous = self.sqlite_synchronous
        if synchronous not in ("full", "normal"):
            raise ConfigurationError(
                "MINIPROGRAM_PAY_SQLITE_SYNCHRONOUS must be 'full' or 'normal'."
            )
        # The blocking driver whatever the URL names: units run in threads.
        engine = create_engine(url.set(drivername="sqlite+pysqlite"), poolclass=NullPool, echo=echo)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Transactions are begun explicitly (BEGIN IMMEDIATE for writers), not by the driver.
            dbapi_connection.isolation_level = None
            for pragma in (
                "journal_mode=WAL",
                f"synchronous={synchronous.upper()}",
                f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
                "foreign_keys=ON",
            ):
                dbapi_connection.execute(f"PRAGMA {pragma}")

        return engine

    def _postgres_engine(self, url: URL, echo: bool) -> Engine:
        try:
            import psycopg  # noqa: F401 - the driver of postgresql+psycopg, an optional extra
        except ModuleNotFoundError:
            raise ConfigurationError(
                "MINIPROGRAM_PAY_DATABASE_URL: PostgreSQL needs the psycopg driver. "
                "Install it with: pip install 'miniprogram-pay[postgres]'."
            ) from None
        # Each thread keeps its connection, and at low concurrency most of them sit idle
        # for long (the lanes hand work to the most recently idle thread): TCP
        # keepalives stop a firewall or NAT in between from dropping them silently.
        # Whatever the URL sets itself is kept.
        connect_args: dict[str, Any] = {
            name: value for name, value in POSTGRES_KEEPALIVES.items() if name not in url.query
        }
        if self.schema:
            # Tables are declared without a schema; the connection's search_path places them.
            connect_args["options"] = f"-c search_path={self.schema}"
        return create_engine(
            url.set(drivername="postgresql+psycopg"),
            poolclass=NullPool,
            echo=echo,
            connect_args=connect_args,
        )


# -- a thread's connection --------------------------------------------------------------


class _Session:
    """One database thread's connection, and how a transaction starts and ends on it."""

    def __init__(self, database: Database, *, write: bool) -> None:
        self.database = database
        self.write = write
        self.units = 0
        self.statements = 0
        self.unsynced = 0
        self.waits = 0
        self.shared = 0
        self._core: Connection | None = None
        self._raw: Any = None
        self._pipeline: Any = None
        if database.executor == "core":
            self._core = database.engine.connect()
        else:
            self._raw = database.engine.raw_connection()
        if not write and database.is_sqlite:
            self._sqlite_execute("PRAGMA query_only=ON")
        if self._raw is not None and not database.is_sqlite:
            self._enter_pipeline()

    def _enter_pipeline(self) -> None:
        """Put the PostgreSQL connection in pipeline mode for its whole life.

        Entered and left per unit, pipeline mode costs a round trip of its own (its
        ``Sync`` on the way out). Kept, a unit waits only where it reads and at its
        commit. Transactions are the units' own (explicit ``BEGIN``; autocommit for
        the driver), so psycopg never adds a ``BEGIN`` or waits for one.
        """
        from psycopg import RawCursor  # an optional extra: imported only on PostgreSQL

        connection = self._driver
        connection.rollback()  # out of whatever SQLAlchemy's connect left open
        connection.autocommit = True
        # The statements are compiled to $n placeholders (sql.server_placeholders).
        connection.cursor_factory = RawCursor
        self._pipeline_mode = connection.pipeline()
        self._pipeline = self._pipeline_mode.__enter__()

    @property
    def _driver(self) -> Any:
        return self._raw.driver_connection

    def _sqlite_execute(self, sql: str) -> None:
        if self._core is not None:
            self._core.exec_driver_sql(sql)
            self._core.commit()  # end the transaction SQLAlchemy began for it
        else:
            self._driver.execute(sql)

    def transact(self, work: Callable[[Unit], T], *, durable: bool = True) -> T:
        self.units += 1
        # Only a write can skip the sync.
        lazy = self.write and not durable
        self.unsynced += lazy
        if self._core is not None:
            return self._transact_core(self._core, work, lazy)
        if self.database.is_sqlite:
            return self._transact_sqlite(work, lazy and self.database.sqlite_synchronous == "full")
        return self._transact_postgres(work, lazy)

    def _transact_core(self, connection: Connection, work: Callable[[Unit], T], lazy: bool) -> T:
        unit = CoreUnit(connection)
        sqlite = self.database.is_sqlite
        lazy_sqlite = lazy and sqlite and self.database.sqlite_synchronous == "full"
        if lazy_sqlite:
            connection.exec_driver_sql(SQLITE_LAZY)
            connection.commit()  # end the transaction SQLAlchemy began for it
        transaction = connection.begin()
        try:
            if sqlite:
                connection.exec_driver_sql("BEGIN IMMEDIATE" if self.write else "BEGIN")
            elif lazy:
                connection.exec_driver_sql(POSTGRES_LAZY)
            result = work(unit)
            unit.commit()
            return result
        except BaseException:
            if transaction.is_active:
                transaction.rollback()
            raise
        finally:
            self.statements += unit.statements
            if lazy_sqlite:
                connection.exec_driver_sql(SQLITE_DURABLE)
                connection.commit()

    def _transact_sqlite(self, work: Callable[[Unit], T], lazy: bool) -> T:
        connection = self._driver
        unit = DriverUnit(connection, self.database.engine.dialect)
        begin = "BEGIN IMMEDIATE" if self.write else "BEGIN"
        if lazy:  # outside a transaction: the setting applies to the next commit
            unit.guard(SQLITE_LAZY, lambda: connection.execute(SQLITE_LAZY))
        try:
            unit.guard(begin, lambda: connection.execute(begin))
            result = work(unit)
            unit.end()
            return result
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            self.statements += unit.statements
            if lazy:
                connection.execute(SQLITE_DURABLE)

    def transact_group(self, parts: Sequence[_Part[Any]]) -> list[Outcome]:
        """SQLite's writer: units that waited, one after another in one transaction.

        Each runs under a savepoint, so one that fails is rolled back alone and its
        caller gets its error, as if it had run by itself; the others see each other's
        writes in order, as they would have one after another. One ``COMMIT`` (one sync
        of the log, unless none of them is durable) then answers them all: none is told
        before the commit that holds it. When the transaction itself fails (``BEGIN``,
        a savepoint, the ``COMMIT``), it is rolled back and each unit runs again alone.
        """
        connection = self._driver
        lazy = not any(part.durable for part in parts)
        switch = lazy and self.database.sqlite_synchronous == "full"
        units = [_PartUnit(connection, self.database.engine.dialect) for _ in parts]
        outcomes: list[Outcome] = []
        if switch:  # outside a transaction: the setting applies to the next commit
            connection.execute(SQLITE_LAZY)
        try:
            units[0].guard("BEGIN IMMEDIATE", lambda: connection.execute("BEGIN IMMEDIATE"))
            for part, unit in zip(parts, units, strict=True):
                outcomes.append(unit.savepoint(part.work))
            units[0].guard("COMMIT", lambda: connection.execute("COMMIT"))
        except BaseException as exc:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if not isinstance(exc, Exception):
                raise
            logger.info("%d units' shared transaction failed; each runs alone", len(parts))
            return [_alone(self, part) for part in parts]
        finally:
            if switch:
                connection.execute(SQLITE_DURABLE)
        self.units += len(parts)
        self.shared += len(parts) - 1
        self.unsynced += len(parts) if lazy else 0
        self.statements += sum(unit.statements for unit in units)
        return outcomes

    def _transact_postgres(self, work: Callable[[Unit], T], lazy: bool) -> T:
        unit = DriverUnit(
            self._driver, self.database.driver_dialect, pipeline=self._pipeline, write=self.write
        )
        try:
            if self.write:  # sent with the unit's first statement: no round trip of their own
                unit.send("BEGIN")
                if lazy:
                    unit.send(POSTGRES_LAZY)
            result = work(unit)
            unit.end()
            return result
        except BaseException:
            self._recover()
            raise
        finally:
            self.statements += unit.statements
            self.waits += unit.waits

    def _recover(self) -> None:
        """After a failed unit: collect what it sent, then roll its transaction back."""
        connection = self._driver
        if connection.closed or connection.broken:
            return  # the server rolled back; the next unit opens another connection
        try:
            with contextlib.suppress(self.database.engine.dialect.loaded_dbapi.Error):
                self._pipeline.sync()  # the failed unit's own error, raised again: known
            if self.write:
                connection.execute("ROLLBACK")  # a warning only, if COMMIT already ended it
                self._pipeline.sync()
        except Exception:  # the connection is gone; the server rolled back
            logger.debug("rollback failed", exc_info=True)

    @property
    def broken(self) -> bool:
        """True when the connection cannot be used again (the next unit opens another)."""
        if self._core is not None:
            return bool(self._core.invalidated or self._core.closed)
        driver = self._driver
        if self.database.is_sqlite:
            return False
        return bool(driver.closed or driver.broken)

    def close(self) -> None:
        try:
            if self._pipeline is not None and not self._driver.closed:
                self._pipeline_mode.__exit__(None, None, None)
            if self._core is not None:
                self._core.close()
            elif self._raw is not None:
                self._raw.close()
        except Exception:  # closing a connection the server already dropped
            logger.debug("closing a database connection failed", exc_info=True)


@dataclass(frozen=True, slots=True)
class _Part(Generic[T]):
    """A unit of work as a lane's job: run alone, or with others (``transact_group``)."""

    work: Callable[[Unit], T]
    durable: bool

    def __call__(self, session: _Session) -> T:
        return session.transact(self.work, durable=self.durable)


def _run_group(session: _Session, jobs: Sequence[Callable[[_Session], Any]]) -> list[Outcome]:
    # Every job of the database's lanes is a _Part (Database._run makes them).
    return session.transact_group(cast("Sequence[_Part[Any]]", jobs))


def _alone(session: _Session, job: Callable[[_Session], Any]) -> Outcome:
    try:
        return job(session), None
    except Exception as exc:
        return None, exc


class _PartUnit(DriverUnit):
    """One unit of a shared transaction (SQLite). Its ``commit`` only ends its
    statements: its savepoint is released after it, and the group commits."""

    def savepoint(self, work: Callable[[Unit], Any]) -> Outcome:
        """Run ``work`` under a savepoint: kept, or rolled back alone with its error."""
        connection = self.connection
        self.guard("SAVEPOINT unit", lambda: connection.execute("SAVEPOINT unit"))
        try:
            result = work(self)
        except Exception as exc:
            if not self.committed:  # alone, what it committed before failing would stand
                self.guard("ROLLBACK TO unit", lambda: connection.execute("ROLLBACK TO unit"))
            self.guard("RELEASE unit", lambda: connection.execute("RELEASE unit"))
            return None, exc
        self.guard("RELEASE unit", lambda: connection.execute("RELEASE unit"))
        return result, None

    def commit(self) -> None:
        self.committed = True  # later statements are refused; the group commits


def _is_retryable(exc: BaseException) -> bool:
    """A version conflict, or a lock wait, deadlock or dropped connection, may pass."""
    if isinstance(exc, StaleRowError):
        return True
    return (
        isinstance(exc, DBAPIError) and not isinstance(exc, IntegrityError) and _is_transient(exc)
    )


def _is_transient(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    markers = ("locked", "busy", "deadlock", "could not serialize", "connection", "timeout")
    return any(m in text for m in markers) or bool(exc.connection_invalidated)
