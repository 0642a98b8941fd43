"""Orders: the host's order (``mpp_order``) and its attempts (``mpp_payment`` rows).

Whether a request to pay an order starts an attempt is decided here, in one unit of
work under the order's row lock (``SELECT ... FOR UPDATE`` on PostgreSQL, SQLite's
single writer), with the pure rule of ``domain.orders``: concurrent requests on
several workers queue on that lock, so exactly one of them starts the new attempt and
the others find it. Changes to an attempt take the same lock (``storage/changes.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, bindparam, exists, select

from miniprogram_pay.domain.events import EventSource
from miniprogram_pay.domain.money import Amount
from miniprogram_pay.domain.orders import AttemptView, OrderView, Step, attempt_reference
from miniprogram_pay.domain.states import PaymentState
from miniprogram_pay.storage.engine import Database
from miniprogram_pay.storage.json_reads import JsonRead, JsonReads
from miniprogram_pay.storage.payment_rows import PAYMENT_COLUMNS, StoredPayment, payment_record
from miniprogram_pay.storage.payments import event_records, history_records, upsert
from miniprogram_pay.storage.records import EventRecord, PaymentRecord, Refund, TransitionRecord
from miniprogram_pay.storage.refund_rows import refund_reads, refunds_by_payment
from miniprogram_pay.storage.sql import Sql, Unit, bind_all
from miniprogram_pay.storage.tables import (
    OrderRow,
    PaymentEventRow,
    PaymentRow,
    RefundEventRow,
    RefundRow,
    TransitionRow,
    aware,
    table,
    utcnow,
)

__all__ = [
    "AttemptStatus",
    "OrderRecord",
    "OrderStatus",
    "OrderStep",
    "OrderStore",
    "adyen_reference",
]

OR = table(OrderRow)
P = table(PaymentRow)
R = table(RefundRow)
RE = table(RefundEventRow)
E = table(PaymentEventRow)
T = table(TransitionRow)
ORDER_COLUMNS = [OR.c[n] for n in ("id", "reference", "openid", "amount_value", "currency",
                                  "duplicates", "created_at", "updated_at")]  # fmt: skip
ATTEMPT_COLUMNS = tuple(c.name for c in P.columns if c.name != "id")
# How many taken references a new attempt steps over. ``adyen_reference`` can meet one
# only across orders (order ``A``'s attempt 2 is ``A-2``, the first attempt of an order
# ``A-2`` too): the attempt then takes the next number.
REFERENCE_TRIES = 20


NEW_ORDER = Sql(
    lambda dialect: (
        upsert(dialect, OR)
        .values(bind_all(OR, [c.name for c in ORDER_COLUMNS if c.name != "id"]))
        .on_conflict_do_nothing(index_elements=["reference"])
    )
)
LOCK_ORDER = Sql(
    select(*ORDER_COLUMNS).where(OR.c.reference == bindparam("reference")).with_for_update()
)
# By the order's reference: sent with the order's lock and run after it (PostgreSQL runs
# a unit's statements in order), so the attempts are read under the lock, in one wait.
ATTEMPTS = Sql(
    select(*PAYMENT_COLUMNS)
    .where(
        P.c.order_id
        == select(OR.c.id).where(OR.c.reference == bindparam("reference")).scalar_subquery()
    )
    .order_by(P.c.attempt)
)
AUTHORISED = PaymentState.AUTHORISED.value
_KEPT = P.alias("kept")
DUPLICATES_OWED = Sql(
    select(P.c.reference)
    .where(
        P.c.state == AUTHORISED,
        exists().where(
            and_(
                _KEPT.c.order_id == P.c.order_id,
                _KEPT.c.attempt < P.c.attempt,
                _KEPT.c.state == AUTHORISED,
            )
        ),
        ~exists().where(and_(R.c.payment_id == P.c.id, R.c.caller_key == bindparam("key"))),
    )
    .order_by(P.c.id)
    .limit(bindparam("limit"))
)
KEPT_ATTEMPT = Sql(
    select(P.c.reference)
    .select_from(P.join(OR, OR.c.id == P.c.order_id))
    .where(OR.c.reference == bindparam("reference"), P.c.state == AUTHORISED)
    .order_by(P.c.attempt)
    .limit(1)
)
NEW_ATTEMPT = Sql(
    lambda dialect: (
        upsert(dialect, P)
        .values(bind_all(P, ATTEMPT_COLUMNS))
        .on_conflict_do_nothing(index_elements=["reference"])
        .returning(P.c.id)
    )
)
CREATED = Sql(
    TransitionRow.__table__.insert().values(  # type: ignore[attr-defined]
        bind_all(
            T, ["payment_id", "from_state", "to_state", "source", "event_kind", "event_key", "at"]
        )
    )
)
# The order a status read is for: the order ``reference`` names, else the order of the
# attempt it names (an order's own reference wins). Every statement of the read finds it
# by itself, so none waits for another's result: on PostgreSQL they go out together.
_IS_ORDERS = OR.c.reference == bindparam("reference")
_READ_ORDER = (
    select(OR.c.id)
    .where(
        _IS_ORDERS
        | (
            OR.c.id
            == select(P.c.order_id).where(P.c.reference == bindparam("reference")).scalar_subquery()
        )
    )
    .order_by(_IS_ORDERS.desc())
    .limit(1)
    .scalar_subquery()
)


def _status_reads(order_id: Any, payment_ids: Any) -> tuple[Sql, ...]:
    """The six reads of a status, for the order ``order_id`` is and the attempts
    ``payment_ids`` selects: an order, its attempts, their histories and event logs,
    their refunds and the refunds' histories."""
    history = (
        select(T.c.payment_id, T.c.from_state, T.c.to_state, T.c.source, T.c.event_kind,
               T.c.event_key, T.c.at)
        .where(T.c.payment_id.in_(payment_ids))
        .order_by(T.c.id)
    )  # fmt: skip
    events = (
        select(E.c.payment_id, E.c.key, E.c.source, E.c.kind, E.c.success, E.c.outcome,
               E.c.conflict, E.c.reason, E.c.psp_reference, E.c.amount_value,
               E.c.amount_currency, E.c.at)
        .where(E.c.payment_id.in_(payment_ids))
        .order_by(E.c.id)
    )  # fmt: skip
    return (
        Sql(select(*ORDER_COLUMNS).where(OR.c.id == order_id)),
        Sql(select(*PAYMENT_COLUMNS).where(P.c.order_id == order_id).order_by(P.c.attempt)),
        Sql(history),
        Sql(events),
        *refund_reads(payment_ids),
    )


# Six statements, each finding the order by itself, so none waits for another: the
# reference the two paths below are held to (tests/storage/test_json_reads.py).
STATUS_STATEMENTS = _status_reads(_READ_ORDER, select(P.c.id).where(P.c.order_id == _READ_ORDER))
# SQLite runs statements one at a time, in one read transaction (one snapshot): the
# first finds the order, and the other five take its id, so the order is found once,
# not six times (each find searches two unique indexes, reads an attempt's row and
# sorts: 15-20 % of the statements' time, `bench.units --growth`).
_BY_ID = bindparam("order_id", type_=Integer)
STATUS_BY_ORDER = _status_reads(_BY_ID, select(P.c.id).where(P.c.order_id == _BY_ID))[1:]
# One statement (PostgreSQL, storage/json_reads.py): one snapshot, and the order and its
# attempts are found once, as two CTEs the six reads share, not once in each read.
_ORDER = select(_READ_ORDER.label("id")).cte("status_order")
_ORDER_ID = select(_ORDER.c.id).scalar_subquery()
_ATTEMPTS = select(P.c.id).where(P.c.order_id == _ORDER_ID).cte("status_attempts")
STATUS_READS = JsonReads(
    [
        JsonRead(read, order)
        for read, order in zip(
            _status_reads(_ORDER_ID, select(_ATTEMPTS.c.id)),
            [(), (P.c.attempt,), (T.c.id,), (E.c.id,), (R.c.id,), (RE.c.id,)],
            strict=True,
        )
    ]
)


@dataclass(frozen=True, slots=True)
class OrderRecord:
    id: int
    reference: str
    openid: str
    amount: Amount
    duplicates: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OrderStep:
    """What a request to pay an order found or did, under the order's lock.

    ``attempt`` is the attempt to answer with: the kept one (``Step.PAID``), the open
    one (``REUSE``), or the one just started (``START``). None when the order's
    reference is another shopper's or another amount's (``matches`` is False).
    """

    order: OrderRecord
    step: Step
    attempt: PaymentRecord | None
    created: bool

    @property
    def matches(self) -> bool:
        return self.attempt is not None


@dataclass(frozen=True, slots=True)
class AttemptStatus:
    payment: PaymentRecord
    history: list[TransitionRecord]
    events: list[EventRecord]
    refunds: list[Refund] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class OrderStatus:
    """An order with every attempt, its history and event log, read in one snapshot."""

    order: OrderRecord
    attempts: list[AttemptStatus]

    @property
    def view(self) -> OrderView:
        return order_view(self.order.reference, [a.payment for a in self.attempts])

    @property
    def shown(self) -> AttemptStatus:
        """The attempt the order's summary shows: the kept one, else the current one."""
        view = self.view
        chosen = view.kept or view.current
        assert chosen is not None  # an order is made with its first attempt
        return next(a for a in self.attempts if a.payment.attempt == chosen.number)


def order_view(reference: str, attempts: Sequence[PaymentRecord]) -> OrderView:
    return OrderView(
        reference,
        tuple(
            AttemptView(p.attempt, p.reference, p.state, p.amount, p.created_at) for p in attempts
        ),
    )


def _order(row: Sequence[Any]) -> OrderRecord:
    oid, reference, openid, value, currency, duplicates, created, updated = row
    return OrderRecord(
        id=int(oid), reference=reference, openid=openid, amount=Amount(value, currency),
        duplicates=int(duplicates), created_at=aware(created), updated_at=aware(updated),
    )  # fmt: skip


def _attempts(rows: Sequence[Sequence[Any]]) -> list[PaymentRecord]:
    return [payment_record(StoredPayment(*row)) for row in rows]


class OrderStore:
    """Orders of one database. One per process; safe for concurrent use."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def pay(
        self,
        *,
        reference: str,
        openid: str,
        amount: Amount,
        idempotency_key: str,
        lifetime: timedelta,
    ) -> OrderStep:
        """Find or make the order, and apply the attempt rule to it under its lock.

        The order is made with the first request (``created``). ``idempotency_key`` is
        the Adyen Idempotency-Key of an attempt started now.
        """

        def work(unit: Unit) -> OrderStep:
            now = utcnow()
            unit.run(NEW_ORDER, _order_values(reference, openid, amount, now))
            locked = unit.run(LOCK_ORDER, {"reference": reference})
            read = unit.run(ATTEMPTS, {"reference": reference})
            order, attempts = _order(locked.all()[0]), _attempts(read.all())
            created = not attempts
            view = order_view(reference, attempts)
            step = view.next_step(now, lifetime)
            if order.openid != openid or order.amount != amount:
                return OrderStep(order, step, None, created)
            if step is Step.START:
                number = view.current.number + 1 if view.current else 1
                started = _start(unit, order, number, idempotency_key, now)
                return OrderStep(order, step, started, created)
            chosen = view.kept if step is Step.PAID else view.current
            assert chosen is not None  # PAID has a kept attempt, REUSE a current one
            return OrderStep(order, step, attempts[_index(attempts, chosen.number)], created)

        # Not synced on its own: nobody is told of a new attempt before Adyen's answer is
        # recorded, and that synced commit comes after this one in the log. A power failure
        # in between takes back an attempt whose wx.requestPayment parameters nobody got;
        # the shopper's retry starts it again.
        return await self.db.write(work, what="pay order", durable=False)

    async def kept_attempt(self, order_reference: str) -> str | None:
        """The reference of the attempt that pays the order (its lowest-numbered Authorised
        one), or None: no such order, or none of its attempts is Authorised."""
        params = {"reference": order_reference}
        rows = await self.db.read(lambda unit: unit.run(KEPT_ATTEMPT, params).all())
        return str(rows[0][0]) if rows else None

    async def duplicates_owed(self, *, refund_key: str, limit: int = 100) -> list[str]:
        """Attempts authorised although an earlier attempt of their order is (the one kept),
        with no refund asked for under ``refund_key`` yet: their references, oldest first."""
        params = {"key": refund_key, "limit": limit}
        rows = await self.db.read(lambda unit: unit.run(DUPLICATES_OWED, params).all())
        return [str(row[0]) for row in rows]

    async def status(self, reference: str) -> OrderStatus | None:
        """The order ``reference`` (or the order of the attempt ``reference``), whole."""

        def work(unit: Unit) -> OrderStatus | None:
            order_rows, attempt_rows, history, events, refunds, refund_history = status_rows(
                unit, reference
            )
            if not order_rows:
                return None
            attempts = _attempts(attempt_rows)
            found = _status(_order(order_rows[0]), attempts, history, events)
            references = {a.id: a.reference for a in attempts}
            by_payment = refunds_by_payment(refunds, refund_history, references)
            for attempt in found.attempts:
                attempt.refunds.extend(by_payment.get(attempt.payment.id, ()))
            return found

        return await self.db.read(work)


def status_rows(unit: Unit, reference: str) -> list[list[Any]]:
    """The rows of the six reads of a status; on PostgreSQL one statement."""
    params = {"reference": reference}
    if unit.dialect == "postgresql":
        return STATUS_READS.rows(unit, params)
    order = unit.run(STATUS_STATEMENTS[0], params).all()
    if not order:
        return [order, *([] for _ in STATUS_BY_ORDER)]
    found = {"order_id": order[0][0]}
    return [order, *(unit.run(sql, found).all() for sql in STATUS_BY_ORDER)]


def adyen_reference(order_reference: str, number: int) -> str:
    """The Adyen ``reference`` of an order's attempt ``number``.

    The first attempt keeps the order's own reference, so an order paid at the first
    try looks in Adyen's Customer Area and in webhooks exactly as it always did (and as
    payments stored before orders existed do); attempt 2 on is ``attempt_reference``
    (``order-17-2``).
    """
    return order_reference if number == 1 else attempt_reference(order_reference, number)


def _index(attempts: Sequence[PaymentRecord], number: int) -> int:
    return next(i for i, a in enumerate(attempts) if a.attempt == number)


def _order_values(reference: str, openid: str, amount: Amount, now: datetime) -> dict[str, Any]:
    return dict(
        reference=reference, openid=openid, amount_value=amount.value, currency=amount.currency,
        duplicates=0, created_at=now, updated_at=now,
    )  # fmt: skip


def _start(
    unit: Unit,
    order: OrderRecord,
    number: int,
    idempotency_key: str,
    now: datetime,
) -> PaymentRecord:
    """Insert attempt ``number`` (Created) with its history's first entry."""
    values: dict[str, Any] = dict.fromkeys(ATTEMPT_COLUMNS)
    values.update(
        order_id=order.id, openid=order.openid, amount_value=order.amount.value,
        currency=order.amount.currency, state=PaymentState.CREATED.value, psp_confirmed=False,
        idempotency_key=idempotency_key, details_attempts=0, conflicts=0, version=0,
        created_at=now, updated_at=now,
    )  # fmt: skip
    for tried in range(REFERENCE_TRIES):
        n = number + tried
        values.update(reference=adyen_reference(order.reference, n), attempt=n)
        inserted = unit.run(NEW_ATTEMPT, values).all()
        if inserted:
            payment_id = int(inserted[0][0])
            unit.run(
                CREATED,
                {
                    "payment_id": payment_id, "from_state": None,
                    "to_state": PaymentState.CREATED.value, "source": EventSource.PAYMENTS.value,
                    "event_kind": "Created", "event_key": "created", "at": now,
                },
            )  # fmt: skip
            return payment_record(StoredPayment(payment_id, **values))
    raise RuntimeError(f"no free Adyen reference for attempt {number} of {order.reference!r}")


def _status(
    order: OrderRecord,
    attempts: list[PaymentRecord],
    history: Sequence[Sequence[Any]],
    events: Sequence[Sequence[Any]],
) -> OrderStatus:
    by_id: dict[int, AttemptStatus] = {a.id: AttemptStatus(a, [], []) for a in attempts}
    for row in history:
        by_id[int(row[0])].history.extend(history_records([row[1:]]))
    for row in events:
        by_id[int(row[0])].events.extend(event_records([row[1:]]))
    return OrderStatus(order, list(by_id.values()))
