"""Payments: create one, read them, apply an event (an Adyen answer) to one.

A payment's rows are ``mpp_payment``, its append-only history ``mpp_transition`` and its
event log ``mpp_payment_event``. Every method is one unit of work: one hop to a database
thread. Changing a payment goes through ``storage/changes.py``, as it does for webhooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from miniprogram_pay.domain.events import EventSource, PaymentEvent
from miniprogram_pay.domain.machine import PaymentMachine
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.errors import NotFoundError
from miniprogram_pay.storage.changes import Change, PaymentChanges, with_outbox
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.payment_rows import (
    PAYMENT_COLUMNS,
    digest,
    payment_record,
    stored_payment,
)
from miniprogram_pay.storage.records import (
    AppliedEvent,
    EventRecord,
    PaymentRecord,
    ProviderAnswer,
    Refund,
    TransitionRecord,
)
from miniprogram_pay.storage.refund_rows import read_refunds
from miniprogram_pay.storage.sql import Sql, Unit, among, bind_all, like_prefix
from miniprogram_pay.storage.tables import (
    OrderRow,
    PaymentEventRow,
    PaymentRow,
    TransitionRow,
    aware,
    table,
    utcnow,
)

__all__ = [
    "EVENTS_OF",
    "HISTORY_OF",
    "PaymentStatus",
    "PaymentStore",
    "event_records",
    "history_records",
    "upsert",
]

OR = table(OrderRow)
P = table(PaymentRow)
E = table(PaymentEventRow)
T = table(TransitionRow)
UNFINISHED = (PaymentState.CREATED.value, PaymentState.PENDING.value)
CREATE_COLUMNS = tuple(c.name for c in P.columns if c.name != "id")
HISTORY_COLUMNS = [
    T.c[n] for n in ("from_state", "to_state", "source", "event_kind", "event_key", "at")
]
EVENT_COLUMNS = [
    E.c[n]
    for n in (
        "key", "source", "kind", "success", "outcome", "conflict", "reason", "psp_reference",
        "amount_value", "amount_currency", "at",
    )
]  # fmt: skip

PaymentStatus = tuple[PaymentRecord, list[TransitionRecord], list[EventRecord], list[Refund]]


def upsert(dialect: str, table: Any) -> Any:
    """The dialect's ``INSERT`` with ``ON CONFLICT`` (both speak it)."""
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def _by_reference() -> Any:
    return select(P.c.id).where(P.c.reference == bindparam("reference")).scalar_subquery()


ORDER_COLUMNS = ("reference", "openid", "amount_value", "currency", "duplicates", "created_at",
                 "updated_at")  # fmt: skip
CREATE_ORDER = Sql(
    lambda dialect: (
        upsert(dialect, OR)
        .values(bind_all(OR, ORDER_COLUMNS))
        .on_conflict_do_nothing(index_elements=["reference"])
    )
)
CREATE = Sql(
    lambda dialect: (
        upsert(dialect, P)
        .values(
            {
                **bind_all(P, CREATE_COLUMNS),
                "order_id": select(OR.c.id)
                .where(OR.c.reference == bindparam("reference"))
                .scalar_subquery(),
            }
        )
        .on_conflict_do_nothing(index_elements=["reference"])
        .returning(P.c.id)
    )
)
# By reference, not by the id just made: on PostgreSQL it goes out with the insert.
CREATED = Sql(
    lambda dialect: (
        upsert(dialect, T)
        .from_select(
            ["payment_id", "from_state", "to_state", "source", "event_kind", "event_key", "at"],
            select(
                P.c.id,
                bindparam("from_state", None, type_=T.c.from_state.type),
                bindparam("to_state", type_=T.c.to_state.type),
                bindparam("source", type_=T.c.source.type),
                bindparam("event_kind", type_=T.c.event_kind.type),
                bindparam("event_key", type_=T.c.event_key.type),
                bindparam("at", type_=T.c.at.type),
            ).where(P.c.reference == bindparam("reference")),
        )
        .on_conflict_do_nothing(index_elements=["payment_id", "to_state"])
    )
)
BY_REFERENCE = Sql(select(*PAYMENT_COLUMNS).where(P.c.reference == bindparam("reference")))
BY_PAYMENT_DATA = Sql(
    select(*PAYMENT_COLUMNS).where(
        P.c.payment_data_hash == bindparam("hash"), P.c.payment_data == bindparam("data")
    )
)
HISTORY = Sql(select(*HISTORY_COLUMNS).where(T.c.payment_id == bindparam("id")).order_by(T.c.id))
EVENTS = Sql(select(*EVENT_COLUMNS).where(E.c.payment_id == bindparam("id")).order_by(E.c.id))
HISTORY_OF = Sql(select(*HISTORY_COLUMNS).where(T.c.payment_id == _by_reference()).order_by(T.c.id))
EVENTS_OF = Sql(select(*EVENT_COLUMNS).where(E.c.payment_id == _by_reference()).order_by(E.c.id))
HAS_EVENT = Sql(
    select(E.c.id)
    .where(E.c.payment_id == bindparam("id"), E.c.key.like(bindparam("pattern"), escape="/"))
    .limit(1)
)
_BY_PAYMENT_DATA_ID = (
    select(P.c.id)
    .where(P.c.payment_data_hash == bindparam("hash"), P.c.payment_data == bindparam("data"))
    .scalar_subquery()
)
# The same question asked by the payment's reference or paymentData: sent with the read
# of the payment itself, not after it (PostgreSQL: one round trip, not two).
HAS_EVENT_OF = {
    by: Sql(
        select(E.c.id)
        .where(E.c.payment_id == of, E.c.key.like(bindparam("pattern"), escape="/"))
        .limit(1)
    )
    for by, of in (("reference", _by_reference()), ("payment_data", _BY_PAYMENT_DATA_ID))
}
STALE = Sql(
    select(*PAYMENT_COLUMNS)
    .where(
        among(P.c.state, UNFINISHED),
        P.c.updated_at < bindparam("cutoff", type_=P.c.updated_at.type),
    )
    .order_by(P.c.updated_at)
    .limit(bindparam("limit"))
)
COUNT_STALE = Sql(
    select(func.count())
    .select_from(P)
    .where(
        among(P.c.state, UNFINISHED),
        P.c.updated_at < bindparam("cutoff", type_=P.c.updated_at.type),
    )
)
COUNT_BY_STATE = Sql(select(P.c.state, func.count()).group_by(P.c.state))


def _payment(rows: Sequence[Sequence[Any]]) -> PaymentRecord | None:
    return payment_record(stored_payment(rows[0])) if rows else None


def history_records(rows: Sequence[Sequence[Any]]) -> list[TransitionRecord]:
    return [
        TransitionRecord(
            from_state=PaymentState(was) if was else None,
            to_state=PaymentState(now),
            source=source,
            event_kind=kind,
            event_key=key,
            at=aware(at),
        )
        for was, now, source, kind, key, at in rows
    ]


def event_records(rows: Sequence[Sequence[Any]]) -> list[EventRecord]:
    return [
        EventRecord(
            key=key, source=source, kind=kind, success=success, outcome=outcome,
            conflict=conflict, reason=reason, psp_reference=psp, amount_value=value,
            amount_currency=currency, at=aware(at),
        )
        for key, source, kind, success, outcome, conflict, reason, psp, value, currency, at in rows
    ]  # fmt: skip


class PaymentStore:
    """Payments of one database. One per process; safe for concurrent use."""

    def __init__(self, database: Database, machine: PaymentMachine | None = None) -> None:
        self.db = database
        self.machine = machine or PaymentMachine()

    async def create(
        self, *, reference: str, openid: str, amount: Amount, idempotency_key: str
    ) -> tuple[PaymentRecord, bool]:
        """Record a payment as Created, the first attempt of an order of the same
        reference. Returns ``(payment, created)``.

        A reference that already exists returns the stored payment and ``False``:
        the unique constraint, not a prior read, decides who was first. (The HTTP flow
        goes through ``OrderStore.pay``, which also starts later attempts.)
        """

        def work(unit: Unit) -> tuple[PaymentRecord, bool]:
            now = utcnow()
            unit.run(
                CREATE_ORDER,
                dict(
                    reference=reference, openid=openid, amount_value=amount.value,
                    currency=amount.currency, duplicates=0, created_at=now, updated_at=now,
                ),
            )  # fmt: skip
            values = dict.fromkeys(CREATE_COLUMNS)
            values.update(
                reference=reference, openid=openid, amount_value=amount.value,
                currency=amount.currency, state=PaymentState.CREATED.value,
                idempotency_key=idempotency_key, details_attempts=0, conflicts=0, version=0,
                created_at=now, updated_at=now, attempt=1, psp_confirmed=False,
            )  # fmt: skip
            del values["order_id"]  # the order's, found by its reference
            inserted = unit.run(CREATE, values)
            unit.run(
                CREATED,
                {
                    "reference": reference, "from_state": None,
                    "to_state": PaymentState.CREATED.value, "source": EventSource.PAYMENTS.value,
                    "event_kind": "Created", "event_key": "created", "at": now,
                },
            )  # fmt: skip
            found = unit.run(BY_REFERENCE, {"reference": reference})
            payment = _payment(found.all())
            assert payment is not None  # made now, or by whoever was first
            return payment, bool(inserted.all())

        return await self.db.write(work, what="create payment")

    async def get(self, reference: str) -> PaymentRecord | None:
        return await self.db.read(
            lambda unit: _payment(unit.run(BY_REFERENCE, {"reference": reference}).all())
        )

    async def get_by_payment_data(self, payment_data: str) -> PaymentRecord | None:
        params = {"hash": digest(payment_data), "data": payment_data}
        return await self.db.read(lambda unit: _payment(unit.run(BY_PAYMENT_DATA, params).all()))

    async def history(self, payment_id: int) -> list[TransitionRecord]:
        return await self.db.read(
            lambda unit: history_records(unit.run(HISTORY, {"id": payment_id}).all())
        )

    async def events(self, payment_id: int) -> list[EventRecord]:
        return await self.db.read(
            lambda unit: event_records(unit.run(EVENTS, {"id": payment_id}).all())
        )

    async def has_event(self, payment_id: int, *, key_prefix: str) -> bool:
        """True when the payment's event log holds an event whose key starts so."""
        params = {"id": payment_id, "pattern": like_prefix(key_prefix)}
        return await self.db.read(lambda unit: bool(unit.run(HAS_EVENT, params).all()))

    async def for_details(
        self, *, reference: str | None, payment_data: str | None, key_prefix: str
    ) -> tuple[PaymentRecord, bool] | None:
        """A payment (by reference, else by paymentData) and whether its log has an event
        whose key starts with ``key_prefix``: what ``/payments/details`` needs, in one read."""

        pattern = like_prefix(key_prefix)

        def work(unit: Unit) -> tuple[PaymentRecord, bool] | None:
            if reference is not None:
                params: dict[str, Any] = {"reference": reference, "pattern": pattern}
                read, asked = BY_REFERENCE, HAS_EVENT_OF["reference"]
            elif payment_data is not None:
                params = {"hash": digest(payment_data), "data": payment_data, "pattern": pattern}
                read, asked = BY_PAYMENT_DATA, HAS_EVENT_OF["payment_data"]
            else:
                return None
            rows, found = unit.run(read, params), unit.run(asked, params)
            payment = _payment(rows.all())
            return None if payment is None else (payment, bool(found.all()))

        return await self.db.read(work)

    async def status(self, reference: str) -> PaymentStatus | None:
        """A payment with its history, event log and refunds, read in one snapshot."""

        def work(unit: Unit) -> PaymentStatus | None:
            params = {"reference": reference}
            payment, history, events = (
                unit.run(BY_REFERENCE, params),
                unit.run(HISTORY_OF, params),
                unit.run(EVENTS_OF, params),
            )  # on PostgreSQL the three go out together
            found = _payment(payment.all())
            if found is None:
                return None
            refunds = read_refunds(unit, found.id, found.reference)
            return found, history_records(history.all()), event_records(events.all()), refunds

        return await self.db.read(work)

    async def stale(self, *, older_than_seconds: int, limit: int = 100) -> list[PaymentRecord]:
        """Payments still Created or Pending whose last change is older than the bound."""
        params = {"cutoff": utcnow() - timedelta(seconds=older_than_seconds), "limit": limit}
        rows = await self.db.read(lambda unit: unit.run(STALE, params).all())
        return [payment_record(stored_payment(row)) for row in rows]

    async def count_stale(self, *, older_than_seconds: int) -> int:
        """How many payments ``stale`` would list, without a limit (for monitoring)."""
        params = {"cutoff": utcnow() - timedelta(seconds=older_than_seconds)}
        rows = await self.db.read(lambda unit: unit.run(COUNT_STALE, params).all())
        return int(rows[0][0])

    async def count_by_state(self) -> dict[str, int]:
        rows = await self.db.read(lambda unit: unit.run(COUNT_BY_STATE).all())
        return {str(state): int(n) for state, n in rows}

    async def apply(
        self,
        reference: str,
        event: PaymentEvent,
        *,
        answer: ProviderAnswer | None = None,
        lease_seconds: float | None = None,
    ) -> AppliedEvent:
        """Apply one event to the payment ``reference`` atomically; a repeat changes nothing.

        ``lease_seconds``: the outbox row of a state change is leased to this process
        for that long (it delivers the change itself); None leaves it to any process.
        """

        def work(unit: Unit) -> AppliedEvent:
            changes = PaymentChanges(unit, self.machine, utcnow(), lease_seconds)
            changes.lock([reference], [event.key])
            applied = changes.apply(Change(reference, event, answer))
            if applied is None:
                raise NotFoundError("no payment with this reference")
            written = changes.flush()
            unit.commit()
            return with_outbox(applied, written())

        return await self.db.write(work, what="apply event")
