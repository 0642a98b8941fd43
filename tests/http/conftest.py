"""The HTTP suite runs every test on a fresh SQLite file and, when
``MINIPROGRAM_PAY_TEST_POSTGRES_URL`` is set, again on a fresh PostgreSQL database
(the ``db_url`` fixture of ``tests/conftest.py``).
"""
