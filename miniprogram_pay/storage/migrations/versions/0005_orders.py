"""Orders: the host's order, and each payment as one attempt of it.

``mpp_order`` holds the order (reference, shopper, amount); ``mpp_payment`` rows are
its attempts, numbered ``(order_id, attempt)``, each with its own Adyen reference.
Every payment stored before this revision becomes the only attempt (number 1) of an
order with its reference, so its Adyen reference, webhooks and history are unchanged.
``mpp_payment.psp_confirmed`` says the pspReference came from Adyen's answer to our
own call (unknown for older rows: false, which only lets such an answer confirm it).
``mpp_outbox`` rows say which order and attempt changed, the order's state after the
change, and a conflict the change reports (null on older rows: payment changes).

Revision ID: 0005_orders
Revises: 0003_requeue
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_orders"
down_revision: str | Sequence[str] | None = "0004_refunds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_ORDER_PER_PAYMENT = """
INSERT INTO mpp_order (reference, openid, amount_value, currency, duplicates, created_at,
                       updated_at)
SELECT reference, openid, amount_value, currency, 0, created_at, updated_at FROM mpp_payment
"""
FIRST_ATTEMPT = """
UPDATE mpp_payment SET attempt = 1,
  order_id = (SELECT o.id FROM mpp_order o WHERE o.reference = mpp_payment.reference)
"""


def upgrade() -> None:
    op.create_table(
        "mpp_order",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=80), nullable=False),
        sa.Column("openid", sa.String(length=128), nullable=False),
        sa.Column("amount_value", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
    )
    op.add_column("mpp_payment", sa.Column("order_id", sa.Integer(), nullable=True))
    op.add_column("mpp_payment", sa.Column("attempt", sa.Integer(), nullable=True))
    op.add_column(
        "mpp_payment",
        sa.Column("psp_confirmed", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute(ONE_ORDER_PER_PAYMENT)
    op.execute(FIRST_ATTEMPT)
    # SQLite cannot add a constraint to a table: batch mode copies it into a new one.
    with op.batch_alter_table("mpp_payment") as batch:
        batch.alter_column("order_id", existing_type=sa.Integer(), nullable=False)
        batch.alter_column("attempt", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key("fk_mpp_payment_order_id", "mpp_order", ["order_id"], ["id"])
        batch.create_unique_constraint("uq_mpp_payment_attempt", ["order_id", "attempt"])
        batch.create_index(op.f("ix_mpp_payment_order_id"), ["order_id"], unique=False)
    op.add_column("mpp_outbox", sa.Column("order_reference", sa.String(length=80), nullable=True))
    op.add_column("mpp_outbox", sa.Column("attempt_number", sa.Integer(), nullable=True))
    op.add_column("mpp_outbox", sa.Column("order_state", sa.String(length=16), nullable=True))
    op.add_column("mpp_outbox", sa.Column("conflict", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mpp_outbox") as batch:
        batch.drop_column("conflict")
        batch.drop_column("order_state")
        batch.drop_column("attempt_number")
        batch.drop_column("order_reference")
    # The older schema has one payment per order: refuse rather than drop an attempt.
    later = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM mpp_payment WHERE attempt > 1"))
    if later.scalar_one():
        raise RuntimeError(
            "some orders have several payment attempts, which the older schema cannot hold; "
            "downgrading would lose them"
        )
    with op.batch_alter_table("mpp_payment") as batch:
        batch.drop_index(op.f("ix_mpp_payment_order_id"))
        batch.drop_constraint("uq_mpp_payment_attempt", type_="unique")
        batch.drop_constraint("fk_mpp_payment_order_id", type_="foreignkey")
        batch.drop_column("psp_confirmed")
        batch.drop_column("attempt")
        batch.drop_column("order_id")
    op.drop_table("mpp_order")
