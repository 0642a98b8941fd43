"""Find a payment by its paymentData through an indexed SHA-256.

A Mini Program may send back only ``paymentData`` (the seed's client does), and
paymentData is too long to index as it is: without this, that lookup scanned
every payment.

Revision ID: 0002_payment_data_hash
Revises: 0001_initial
Create Date: 2026-11-27
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_payment_data_hash"
down_revision: str | Sequence[str] | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BACKFILL_BATCH_ROWS = 1000


def upgrade() -> None:
    op.add_column(
        "mpp_payment", sa.Column("payment_data_hash", sa.String(length=64), nullable=True)
    )
    _backfill()
    op.create_index(
        op.f("ix_mpp_payment_payment_data_hash"), "mpp_payment", ["payment_data_hash"], unique=False
    )


def _backfill() -> None:
    payments = sa.table(
        "mpp_payment",
        sa.column("id", sa.Integer()),
        sa.column("payment_data", sa.Text()),
        sa.column("payment_data_hash", sa.String(64)),
    )
    connection = op.get_bind()
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(payments.c.id, payments.c.payment_data)
            .where(payments.c.id > last_id, payments.c.payment_data.is_not(None))
            .order_by(payments.c.id)
            .limit(BACKFILL_BATCH_ROWS)
        ).all()
        if not rows:
            return
        for payment_id, payment_data in rows:
            digest = hashlib.sha256(payment_data.encode("utf-8")).hexdigest()
            connection.execute(
                payments.update()
                .where(payments.c.id == payment_id)
                .values(payment_data_hash=digest)
            )
        last_id = rows[-1][0]


def downgrade() -> None:
    op.drop_index(op.f("ix_mpp_payment_payment_data_hash"), table_name="mpp_payment")
    op.drop_column("mpp_payment", "payment_data_hash")
