"""Storage: the only package that imports sqlmodel/SQLAlchemy."""

from __future__ import annotations

from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.records import (
    AppliedEvent,
    EventRecord,
    InboxItem,
    NotificationRecord,
    OutboxEvent,
    PaymentRecord,
    ProviderAnswer,
    StoredNotification,
    TransitionRecord,
)
from miniprogram_pay.storage.repository import PaymentRepository

__all__ = [
    "AppliedEvent",
    "Database",
    "EventRecord",
    "InboxItem",
    "NotificationRecord",
    "OutboxEvent",
    "PaymentRecord",
    "PaymentRepository",
    "ProviderAnswer",
    "StoredNotification",
    "TransitionRecord",
]
