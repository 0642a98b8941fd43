"""Alembic environment for miniprogram-pay's own tables.

Run through ``miniprogram_pay.storage.schema`` (``upgrade``/``downgrade``), which
hands over a connection that already holds the migration lock and, for a
PostgreSQL schema, has ``search_path`` set to it. Without a connection (a
maintainer running ``command.revision(..., autogenerate=True)``), an engine is
made from ``sqlalchemy.url``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

from miniprogram_pay.storage.schema import VERSION_TABLE
from miniprogram_pay.storage.tables import metadata

config = context.config
schema: str | None = config.attributes.get("schema")


def _include_name(name: str | None, type_: str, _parent: object) -> bool:
    # The host's tables share the database: autogenerate must never touch them.
    return type_ != "table" or (name or "").startswith("mpp_")


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        transactional_ddl=True,
        include_name=_include_name,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    given: Connection | None = config.attributes.get("connection")
    if given is not None:
        _configure(given)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(str(config.get_main_option("sqlalchemy.url")), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
