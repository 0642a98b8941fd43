"""The stores of one database, one per aggregate, as the services use them."""

from __future__ import annotations

from dataclasses import dataclass

from miniprogram_pay.domain.machine import PaymentMachine
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.inbox import InboxStore
from miniprogram_pay.storage.orders import OrderStore
from miniprogram_pay.storage.outbox import OutboxStore
from miniprogram_pay.storage.payments import PaymentStore
from miniprogram_pay.storage.refunds import RefundStore

__all__ = ["Storage"]


@dataclass(frozen=True, slots=True)
class Storage:
    """Orders, payments (their attempts), the webhook inbox, the outbox and refunds over one
    ``Database``.

    Example::

        storage = Storage.over(Database("sqlite+aiosqlite:///./pay.db"))
        payment = await storage.payments.get("order-1")
    """

    database: Database
    orders: OrderStore
    payments: PaymentStore
    inbox: InboxStore
    outbox: OutboxStore
    refunds: RefundStore

    @classmethod
    def over(cls, database: Database, machine: PaymentMachine | None = None) -> Storage:
        machine = machine or PaymentMachine()
        return cls(
            database=database,
            orders=OrderStore(database),
            payments=PaymentStore(database, machine),
            inbox=InboxStore(database, machine),
            outbox=OutboxStore(database),
            refunds=RefundStore(database),
        )
