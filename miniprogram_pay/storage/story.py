"""One payment's whole story, read in one snapshot: what the admin API and the back office show.

The payment, its moves and events, the webhook items that speak of it (its own, and
its refunds'), its refunds with their histories, and the changes owed to the host.
Nothing here writes; ``storage.admin.AdminReads.story`` runs ``read_story`` as one
read unit of work.

Example::

    story = await AdminReads(database).story("order-1001")
    refunded = [r for r in story.refunds if r.state is RefundState.REFUNDED]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, or_, select

from miniprogram_pay.domain.refunds import REFUND_EVENT_CODES
from miniprogram_pay.storage import outbox, payments
from miniprogram_pay.storage.payment_rows import payment_record, stored_payment
from miniprogram_pay.storage.records import (
    EventRecord,
    OutboxRecord,
    PaymentRecord,
    Refund,
    TransitionRecord,
)
from miniprogram_pay.storage.refund_rows import read_refunds
from miniprogram_pay.storage.sql import Sql, Unit, among, any_of
from miniprogram_pay.storage.tables import (
    NotificationRow,
    OutboxRow,
    PaymentRow,
    aware,
    table,
)

__all__ = ["INBOX_COLUMNS", "InboxRecord", "PaymentStory", "inbox_record", "read_story"]

# A story lists at most this many webhook items and outbox rows (a payment has a handful).
MAX_STORY_ROWS = 500

P = table(PaymentRow)
N = table(NotificationRow)
OB = table(OutboxRow)
INBOX_FIELDS = (
    "id", "status", "detail", "psp_reference", "merchant_reference", "event_code", "success",
    "amount_value", "amount_currency", "deliveries", "attempts", "received_at",
    "next_attempt_at", "applied_at",
)  # fmt: skip
INBOX_COLUMNS = [N.c[name] for name in INBOX_FIELDS]


@dataclass(frozen=True, slots=True)
class InboxRecord:
    """A webhook item as operators see it."""

    id: int
    status: str
    detail: str | None
    psp_reference: str
    merchant_reference: str
    event_code: str
    success: bool
    # As Adyen sent them: a webhook may name any currency, or a zero amount.
    amount_value: int | None
    amount_currency: str | None
    deliveries: int
    attempts: int
    received_at: datetime
    next_attempt_at: datetime
    applied_at: datetime | None


@dataclass(frozen=True, slots=True)
class PaymentStory:
    """Everything stored about one payment, read in one snapshot.

    One payment is one attempt at Adyen today; ``transitions`` and ``events`` are
    that attempt's. Webhook items are those naming the payment's reference or its
    ``pspReference``, then its refunds' (a refund webhook names the refund's own
    pspReference and reference); ``deliveries`` are its changes for the host's hook,
    the refunds' included; ``refunds`` are oldest first, each with its history.
    """

    payment: PaymentRecord
    transitions: list[TransitionRecord]
    events: list[EventRecord]
    webhooks: list[InboxRecord]
    deliveries: list[OutboxRecord]
    refunds: list[Refund] = field(default_factory=list)


def _of_payment() -> Any:
    return select(P.c.id).where(P.c.reference == bindparam("reference")).scalar_subquery()


def _psp_of_payment() -> Any:
    psp = select(P.c.psp_reference).where(P.c.reference == bindparam("reference"))
    return psp.scalar_subquery()


# A story's first statements all name the payment by reference: on PostgreSQL they go out at once.
STORY_WEBHOOKS = Sql(
    select(*INBOX_COLUMNS)
    .where(
        or_(
            N.c.merchant_reference == bindparam("reference"), N.c.psp_reference == _psp_of_payment()
        )
    )
    .order_by(N.c.id)
    .limit(MAX_STORY_ROWS)
)
STORY_DELIVERIES = Sql(
    select(*outbox.COLUMNS)
    .where(OB.c.payment_id == _of_payment())
    .order_by(OB.c.id)
    .limit(MAX_STORY_ROWS)
)
# A refund's items, by the refund's pspReference or (before Adyen gave it one) our reference;
# each term is one indexed lookup per value.
REFUND_WEBHOOKS = Sql(
    lambda dialect: (
        select(*INBOX_COLUMNS)
        .where(
            or_(
                any_of(N.c.psp_reference, "psps", dialect),
                any_of(N.c.merchant_reference, "references", dialect),
            ),
            among(N.c.event_code, sorted(REFUND_EVENT_CODES)),
        )
        .order_by(N.c.id)
        .limit(MAX_STORY_ROWS)
    )
)


def read_story(unit: Unit, reference: str) -> PaymentStory | None:
    """The payment ``reference`` and everything that happened to it, inside ``unit``."""
    params = {"reference": reference}
    found = unit.run(payments.BY_REFERENCE, params)
    history = unit.run(payments.HISTORY_OF, params)
    events = unit.run(payments.EVENTS_OF, params)
    webhooks = unit.run(STORY_WEBHOOKS, params)
    deliveries = unit.run(STORY_DELIVERIES, params)
    rows = found.all()
    if not rows:
        return None
    payment = stored_payment(rows[0])
    items = [inbox_record(row) for row in webhooks.all()]
    refunds = read_refunds(unit, payment.id, payment.reference)
    return PaymentStory(
        payment=payment_record(payment),
        transitions=payments.history_records(history.all()),
        events=payments.event_records(events.all()),
        webhooks=_with_refund_webhooks(unit, items, refunds),
        deliveries=[outbox.outbox_record(row) for row in deliveries.all()],
        refunds=refunds,
    )


def _with_refund_webhooks(
    unit: Unit, items: list[InboxRecord], refunds: Sequence[Refund]
) -> list[InboxRecord]:
    """The payment's own items and its refunds', each once, in the order they arrived."""
    psps = [r.psp_reference for r in refunds if r.psp_reference]
    references = [r.reference for r in refunds if r.reference]
    if not psps and not references:
        return items
    found = unit.run(REFUND_WEBHOOKS, {"psps": psps, "references": references}).all()
    by_id = {item.id: item for item in items}
    by_id.update((item.id, item) for item in map(inbox_record, found))
    return [by_id[key] for key in sorted(by_id)]


def inbox_record(row: Sequence[Any]) -> InboxRecord:
    values = dict(zip(INBOX_FIELDS, row, strict=True))
    for moment in ("received_at", "next_attempt_at", "applied_at"):
        values[moment] = aware(values[moment])
    values["success"] = bool(values["success"])
    return InboxRecord(**values)
