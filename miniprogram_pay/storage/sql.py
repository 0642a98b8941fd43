"""Statements compiled once, and the unit of work that runs them.

A statement is a SQLAlchemy Core construct (over the SQLModel tables, the schema of
record), wrapped in ``Sql``: built once per dialect, compiled once per dialect, and
from then on executed as its SQL text on the driver's cursor, with the parameter and
result conversions of the statement's own SQLAlchemy types. A unit of work is a plain
function ``work(unit) -> result`` that runs statements through the ``Unit`` it is
given; ``Database.write``/``read`` run it whole in a database thread (one hop from the
event loop), a write between ``BEGIN`` and ``COMMIT`` (or ``Unit.commit``).

Example (a read of one's own, in the shape every store uses)::

    from sqlalchemy import bindparam, select
    from miniprogram_pay.storage.sql import Sql, Unit
    from miniprogram_pay.storage.tables import PaymentRow, table

    P = table(PaymentRow)
    STATE = Sql(select(P.c.state).where(P.c.reference == bindparam("reference")))

    def state_of(unit: Unit, reference: str) -> str | None:
        rows = unit.run(STATE, {"reference": reference}).all()
        return rows[0][0] if rows else None

    state = await database.read(lambda unit: state_of(unit, "order-1"))

Two units exist. ``DriverUnit`` is the one the package runs: the DB-API cursor and the
compiled SQL, and on PostgreSQL psycopg's pipeline mode, so the statements of a unit
travel together and the unit waits for the server only where it reads a result.
``CoreUnit`` runs the same constructs through ``sqlalchemy.Connection.execute``: the
reference the driver path is held to (``tests/storage/test_batch_apply.py``).

A list parameter (``any_of``) is one parameter whatever its length (``json_each`` on
SQLite, ``= ANY`` of an array on PostgreSQL), so a statement compiles once; a statement
of many rows (``RowsSql``) compiles once per row count (64, 32, ..., 1).

On PostgreSQL the SQL is compiled with the server's own placeholders (``$1``) and run
on psycopg's raw cursor (``server_placeholders``), so the driver sends it as it is.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import (
    Integer,
    Text,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import Executable
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = [
    "CoreUnit",
    "DriverUnit",
    "Result",
    "RowsSql",
    "Sql",
    "StaleRowError",
    "Unit",
    "among",
    "any_of",
    "bind_all",
    "checked_update",
    "like_prefix",
    "row_binds",
    "server_placeholders",
]

Row = tuple[Any, ...]
Processor = Callable[[Any], Any] | None
# Rows in one multi-row statement, at most: 16 columns each stays far below the drivers'
# limits on bound parameters (SQLite 32,766; PostgreSQL 65,535). A statement is compiled
# once per row count, and a compiled 64-row upsert holds about half a megabyte: rows are
# sent in statements of 64, 32, ..., 1 rows, so each multi-row statement has 7 forms.
MAX_ROWS_PER_STATEMENT = 64


class StaleRowError(Exception):
    """A row changed under the unit of work (its version moved): run the whole unit again."""


# What a checked update's failure says (see ``checked_update``); the driver's error that
# carries it becomes a ``StaleRowError``.
STALE_MARKER = "mpp stale row"


def checked_update(statement: Any, dialect: str) -> Executable:
    """``statement`` (a versioned ``UPDATE`` of one row), failing when it matches no row.

    On PostgreSQL the check runs in the server: the update is a CTE, and a ``SELECT``
    over it casts a text naming ``STALE_MARKER`` to an integer when the row count is not
    1, which fails the statement, hence the unit. So a pipelined unit learns of a moved
    version with its commit, and need not wait for the row count before it. (The text
    depends on the count, so the planner cannot fold the cast into an error of its own.)
    Elsewhere the statement is returned as it is; the caller checks the row count.
    """
    if not checks_itself(dialect):
        return statement  # type: ignore[no-any-return]
    changed = statement.returning(literal(1)).cte("changed")
    count = func.count()
    failed = cast(literal(STALE_MARKER + " ") + cast(count, Text), Integer)
    return select(case((count == 1, literal(1)), else_=failed)).select_from(changed)


def checks_itself(dialect: str) -> bool:
    """True where ``checked_update`` fails in the server (no row count to read)."""
    return dialect == "postgresql"


def is_stale(exc: BaseException) -> bool:
    """True for the driver's error of a checked update that matched no row."""
    return STALE_MARKER in str(exc)


def server_placeholders(dialect: Dialect) -> Dialect:
    """``dialect`` (PostgreSQL's, initialised), compiling to ``$1`` placeholders.

    psycopg turns a query's ``%(name)s`` placeholders into ``$n`` on every execution,
    in Python, and keeps the result only for queries under 4 kB and 50 parameters: a
    batch's multi-row upsert (16 parameters a row) was split anew each time, about a
    fifth of the writer threads' time with 64 webhook senders. Compiled to ``$n`` once
    here, a statement goes through psycopg's ``RawCursor`` untouched, its parameters
    a tuple in the order of ``positiontup``. A fresh identifier preparer, as the
    dialect's own ``__init__`` would make it: only percent styles double a literal ``%``.
    """
    positional = copy.copy(dialect)
    positional.paramstyle = "numeric_dollar"
    positional.positional = True
    positional.identifier_preparer = positional.preparer(positional)
    return positional


class _JsonList(TypeDecorator[Any]):
    """A list sent to SQLite as one JSON text, for ``json_each``."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else json.dumps(list(value))


def any_of(column: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """``column IN (the values of the list parameter name)``, one parameter for any length."""
    if dialect == "postgresql":
        array: TypeEngine[Any] = ARRAY(column.type)
        return column == any_(cast(bindparam(name, type_=array), array))
    values: Any = select(literal_column("value")).select_from(
        func.json_each(bindparam(name, type_=_JsonList))
    )
    return column.in_(values.scalar_subquery())


def among(column: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """``column IN (...)`` of constants, one plain parameter each (no expanding list)."""
    return column.in_([literal(value, column.type) for value in values])


def like_prefix(prefix: str) -> str:
    """A ``LIKE`` pattern (with ``escape="/"``) for the values that start with ``prefix``."""
    escaped = prefix.replace("/", "//").replace("%", "/%").replace("_", "/_")
    return escaped + "%"


def bind_all(table: Any, columns: Sequence[str], suffix: str = "") -> dict[str, Any]:
    """``{column: bindparam(column + suffix)}``: every value named, none left to defaults."""
    return {name: bindparam(name + suffix, type_=table.c[name].type) for name in columns}


def row_binds(table: Any, columns: Sequence[str], count: int) -> list[dict[str, Any]]:
    """The VALUES of ``count`` rows, the i-th row's parameters suffixed ``_r<i>``.

    Not ``_<i>``: SQLAlchemy names a literal's parameter ``<column>_<n>`` itself.
    """
    return [bind_all(table, columns, _row_suffix(i)) for i in range(count)]


def _row_suffix(i: int) -> str:
    """What the i-th row's parameter names end with, in a statement of many rows."""
    return f"_r{i}"


@dataclass(frozen=True, slots=True)
class _Compiled:
    """A statement as the driver runs it."""

    sql: str
    # The parameters in the driver's order with their conversions (qmark, $n); None:
    # named, converted by ``binds``.
    positional: tuple[tuple[str, Processor], ...] | None
    defaults: dict[str, Any]  # values written into the construct (literals)
    binds: dict[str, Processor]
    results: tuple[Processor, ...] | None  # None: the statement returns no rows

    def params(self, given: Mapping[str, Any] | None) -> Any:
        values: Mapping[str, Any] = self.defaults
        if given:
            values = {**self.defaults, **given} if self.defaults else given
        if self.positional is None:
            return {
                name: value if (process := self.binds.get(name)) is None else process(value)
                for name, value in values.items()
            }
        # Straight into the driver's order: no dictionary of converted values in between
        # (a batch's multi-row statement has hundreds of parameters).
        return tuple(
            values[name] if process is None else process(values[name])
            for name, process in self.positional
        )

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Row]:
        processors = self.results or ()
        if not any(processors):
            return [tuple(row) for row in raw]
        return [
            tuple(
                value if p is None else p(value) for p, value in zip(processors, row, strict=True)
            )
            for row in raw
        ]


def _compile(statement: Executable, dialect: Dialect) -> _Compiled:
    # As for an executemany: no implicit RETURNING of the primary key. PostgreSQL's
    # dialect adds one to a single-row INSERT, which the server then answers and the
    # driver reads for nothing (SQLite's adds none); a statement that needs a value
    # back says so with ``.returning()``, kept either way.
    compiled: Any = statement.compile(dialect=dialect, for_executemany=True)  # type: ignore[attr-defined]
    if compiled.post_compile_params or compiled.literal_execute_params:
        raise TypeError("a list parameter must use any_of(), not in_([...])")
    names: dict[Any, str] = compiled.bind_names
    defaults = {name: bind.effective_value for bind, name in names.items() if not bind.required}
    binds = {
        name: bind.type.dialect_impl(dialect).bind_processor(dialect)
        for bind, name in names.items()
    }
    results = None
    if getattr(statement, "is_select", False) or compiled.effective_returning:
        results = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.exported_columns  # type: ignore[attr-defined]
        )
    positional = None
    if dialect.positional:
        positional = tuple((name, binds.get(name)) for name in compiled.positiontup)
    return _Compiled(compiled.string, positional, defaults, binds, results)


class Sql:
    """One statement: a Core construct, or a function of the dialect's name that builds it."""

    def __init__(self, build: Executable | Callable[[str], Executable]) -> None:
        self._build = build
        self._statements: dict[str, Executable] = {}
        self._compiled: dict[tuple[str, str], _Compiled] = {}

    def statement(self, dialect: str) -> Executable:
        found = self._statements.get(dialect)
        if found is None:
            found = self._build(dialect) if callable(self._build) else self._build
            self._statements[dialect] = found
        return found

    def compiled(self, dialect: Dialect) -> _Compiled:
        key = (dialect.name, dialect.paramstyle)
        found = self._compiled.get(key)
        if found is None:
            # The construct is not kept: the driver path needs only its SQL and conversions.
            statement = self._statements.get(dialect.name)
            if statement is None:  # a construct has no truth value: no `or` here
                statement = self._build(dialect.name) if callable(self._build) else self._build
            found = self._compiled[key] = _compile(statement, dialect)
        return found


class RowsSql:
    """A statement over many rows at once (``INSERT ... VALUES (...), (...)``).

    ``build(dialect, count)`` makes it for ``count`` rows with ``row_binds``; each row
    count compiles once. Rows are sent in statements of 64, 32, ..., 1 rows.
    """

    def __init__(self, columns: Sequence[str], build: Callable[[str, int], Executable]) -> None:
        self.columns = tuple(columns)
        self._build = build
        self._by_count: dict[int, Sql] = {}
        # Row i's (parameter, column) names, made once: a statement holds at most 64 rows.
        self._names = tuple(
            tuple((name + _row_suffix(i), name) for name in self.columns)
            for i in range(MAX_ROWS_PER_STATEMENT)
        )

    def sql(self, count: int) -> Sql:
        found = self._by_count.get(count)
        if found is None:
            found = self._by_count[count] = Sql(lambda dialect: self._build(dialect, count))
        return found

    def params(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if len(rows) > MAX_ROWS_PER_STATEMENT:
            raise ValueError(f"at most {MAX_ROWS_PER_STATEMENT} rows in one statement")
        names = self._names
        return {key: row[name] for i, row in enumerate(rows) for key, name in names[i]}


class Result(Protocol):
    """What one statement gave back."""

    def all(self) -> list[Row]: ...

    @property
    def rowcount(self) -> int: ...


class _Joined:
    """The results of one statement sent in several chunks, as one."""

    def __init__(self, parts: Sequence[Result]) -> None:
        self._parts = parts

    def all(self) -> list[Row]:
        return [row for part in self._parts for row in part.all()]

    @property
    def rowcount(self) -> int:
        return sum(part.rowcount for part in self._parts)


class Unit(Protocol):
    """A transaction in progress, as a unit of work sees it."""

    dialect: str

    def run(self, sql: Sql, params: Mapping[str, Any] | None = None) -> Result:
        """Run one statement."""
        ...

    def run_many(self, sql: Sql, rows: Sequence[Mapping[str, Any]]) -> Result:
        """Run one statement for each parameter set (no rows back; rowcount is the sum)."""
        ...

    def run_rows(self, sql: RowsSql, rows: Sequence[Mapping[str, Any]]) -> Result:
        """Run a multi-row statement for ``rows`` (in chunks); what they return, joined."""
        ...

    def commit(self) -> None:
        """Commit the unit here: no statement may follow; what it sent can still be read.

        On PostgreSQL the ``COMMIT`` goes out behind the statements sent, and the next
        read (an insert's ``RETURNING``) comes back with it, in one round trip: a unit
        that reads what it wrote needs no wait of its own for the commit. A unit that
        does not call it is committed after its work returns. Either way a failed
        commit fails the unit, and what the unit does after its commit cannot undo it.
        """
        ...


# -- the driver path ------------------------------------------------------------------


@dataclass(slots=True)
class _Rows:
    """A finished statement's outcome (SQLite, and anything already fetched)."""

    fetched: list[Row]
    count: int

    def all(self) -> list[Row]:
        return self.fetched

    @property
    def rowcount(self) -> int:
        return self.count


class _Pending:
    """A statement sent in a PostgreSQL pipeline: its outcome is read when first asked for."""

    def __init__(self, unit: DriverUnit, cursor: Any, compiled: _Compiled) -> None:
        self._unit, self._cursor, self._compiled = unit, cursor, compiled
        self._fetched: list[Row] | None = None

    def all(self) -> list[Row]:
        if self._fetched is None:
            self._unit.sync()  # every result sent so far comes back in this one wait
            raw = self._unit.guard(self._compiled.sql, self._cursor.fetchall)
            self._fetched = self._compiled.rows(raw)
        return self._fetched

    @property
    def rowcount(self) -> int:
        self._unit.sync()
        count: int = self._cursor.rowcount
        return count


class DriverUnit:
    """Statements on the DB-API connection: compiled SQL, the types' own conversions.

    On PostgreSQL the connection stays in pipeline mode: ``run`` sends and returns at
    once; reading a result waits for it and for everything sent before it (one
    ``Sync``, counted in ``waits``). A write unit's transaction is explicit (``BEGIN``
    sent with its first statement, ``COMMIT`` by ``commit`` or ``end``); a read unit
    has none of its own: what it sends up to a ``Sync`` runs as one implicit
    transaction, as reads under READ COMMITTED, each statement with its own snapshot.
    """

    def __init__(
        self, connection: Any, dialect: Dialect, *, pipeline: Any = None, write: bool = True
    ) -> None:
        self.connection = connection
        self.sqla_dialect = dialect
        self.dialect = dialect.name
        self.pipeline = pipeline
        self.write = write
        self.statements = 0
        self.waits = 0
        self.committed = False
        self._unsynced = False

    def guard(self, sql: str, call: Callable[[], Any]) -> Any:
        """Run a driver call; its error becomes SQLAlchemy's (IntegrityError, ...)."""
        dbapi = self.sqla_dialect.loaded_dbapi
        try:
            return call()
        except dbapi.Error as exc:
            if is_stale(exc):
                raise StaleRowError from exc
            raise DBAPIError.instance(
                sql, None, exc, dbapi.Error, dialect=self.sqla_dialect
            ) from exc

    def sync(self) -> None:
        """Wait for everything sent (PostgreSQL: one round trip); nothing to do elsewhere."""
        if self.pipeline is not None and self._unsynced:
            self._unsynced = False
            self.waits += 1
            self.guard("SYNC", self.pipeline.sync)

    def send(self, sql: str) -> None:
        """Send a statement of the transaction's own (``BEGIN``, ``SET LOCAL``, ``COMMIT``)."""
        self._unsynced = True
        self.guard(sql, lambda: self.connection.execute(sql))

    def commit(self) -> None:
        if self.committed:
            return
        self.committed = True
        if self.pipeline is None:
            self.guard("COMMIT", lambda: self.connection.execute("COMMIT"))
        elif self.write:
            self.send("COMMIT")

    def end(self) -> None:
        """The unit's work is done: commit it, and wait for what is still on its way."""
        self.commit()
        self.sync()

    def run(self, sql: Sql, params: Mapping[str, Any] | None = None) -> Result:
        compiled = sql.compiled(self.sqla_dialect)
        return self._execute(
            compiled, lambda cursor: cursor.execute(compiled.sql, compiled.params(params))
        )

    def run_many(self, sql: Sql, rows: Sequence[Mapping[str, Any]]) -> Result:
        if not rows:
            return _Rows([], 0)
        compiled = sql.compiled(self.sqla_dialect)
        values = [compiled.params(row) for row in rows]
        return self._execute(compiled, lambda cursor: cursor.executemany(compiled.sql, values))

    def run_rows(self, sql: RowsSql, rows: Sequence[Mapping[str, Any]]) -> Result:
        return _Joined(
            [self.run(sql.sql(len(chunk)), sql.params(chunk)) for chunk in _chunks(rows)]
        )

    def _execute(self, compiled: _Compiled, call: Callable[[Any], Any]) -> Result:
        if self.committed:
            raise RuntimeError("a statement after the unit's commit()")
        self.statements += 1
        cursor = self.connection.cursor()
        if self.pipeline is not None:
            self._unsynced = True
            self.guard(compiled.sql, lambda: call(cursor))
            return _Pending(self, cursor, compiled)
        self.guard(compiled.sql, lambda: call(cursor))
        raw = cursor.fetchall() if compiled.results is not None else []
        outcome = _Rows(compiled.rows(raw), cursor.rowcount)
        cursor.close()
        return outcome


# -- the reference path ---------------------------------------------------------------


class CoreUnit:
    """The same statements through ``Connection.execute``: SQLAlchemy does every conversion."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        self.statements = 0
        self.committed = False

    def run(self, sql: Sql, params: Mapping[str, Any] | None = None) -> Result:
        return self._execute(sql, dict(params or {}))

    def run_many(self, sql: Sql, rows: Sequence[Mapping[str, Any]]) -> Result:
        if not rows:
            return _Rows([], 0)
        return self._execute(sql, [dict(r) for r in rows])

    def commit(self) -> None:
        if not self.committed:
            self.committed = True
            self.connection.commit()

    def _execute(self, sql: Sql, params: Any) -> Result:
        if self.committed:
            raise RuntimeError("a statement after the unit's commit()")
        self.statements += 1
        try:
            return self._outcome(self.connection.execute(sql.statement(self.dialect), params))
        except DBAPIError as exc:
            if is_stale(exc):
                raise StaleRowError from exc
            raise

    def run_rows(self, sql: RowsSql, rows: Sequence[Mapping[str, Any]]) -> Result:
        return _Joined(
            [self.run(sql.sql(len(chunk)), sql.params(chunk)) for chunk in _chunks(rows)]
        )

    @staticmethod
    def _outcome(result: Any) -> Result:
        fetched = [tuple(row) for row in result.all()] if result.returns_rows else []
        return _Rows(fetched, result.rowcount)


def _chunks(rows: Sequence[Mapping[str, Any]]) -> list[Sequence[Mapping[str, Any]]]:
    """``rows`` in pieces of 64 rows, then of the powers of two that make up the rest."""
    pieces: list[Sequence[Mapping[str, Any]]] = []
    start, size = 0, MAX_ROWS_PER_STATEMENT
    while start < len(rows):
        while size > len(rows) - start:
            size //= 2
        pieces.append(rows[start : start + size])
        start += size
    return pieces
