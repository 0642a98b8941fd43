"""Alembic migrations for the package's tables; run them with ``storage.schema.upgrade``."""
