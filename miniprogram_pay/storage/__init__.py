"""Storage: the only package that imports sqlmodel/SQLAlchemy.

One module per aggregate, each with its store: ``payments`` (payments, their history
and event log; ``changes`` is how an event changes one, under its lock), ``orders``
(an order and its attempts), ``refunds``, ``inbox`` (webhook items) and ``outbox``
(state changes owed to the host). The statements and rows of the larger ones live
beside them (``payment_rows``, ``refund_rows``, ``inbox_rows``). ``tables`` is the
schema of record (SQLModel; Alembic migrations in ``migrations``), ``records`` the
plain snapshots the stores hand out, ``sql`` the statements compiled once and the unit
of work that runs them, ``engine`` the ``Database``, and ``lanes`` its threads.
"""

from __future__ import annotations

from miniprogram_pay.storage.engine import Database, UnitCounts
from miniprogram_pay.storage.inbox import InboxStore
from miniprogram_pay.storage.outbox import OutboxStore
from miniprogram_pay.storage.payments import PaymentStore
from miniprogram_pay.storage.records import (
    AppliedEvent,
    EventRecord,
    InboxItem,
    Intake,
    NotificationRecord,
    OutboxEvent,
    PaymentRecord,
    ProviderAnswer,
    StoredNotification,
    TransitionRecord,
)
from miniprogram_pay.storage.stores import Storage

__all__ = [
    "AppliedEvent",
    "Database",
    "EventRecord",
    "InboxItem",
    "InboxStore",
    "Intake",
    "NotificationRecord",
    "OutboxEvent",
    "OutboxStore",
    "PaymentRecord",
    "PaymentStore",
    "ProviderAnswer",
    "Storage",
    "StoredNotification",
    "TransitionRecord",
    "UnitCounts",
]
