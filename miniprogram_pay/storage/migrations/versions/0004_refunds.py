"""Refunds: each refund of a payment, its event log, and refund changes in the outbox.

``mpp_refund`` holds one row per refund, ours or made in Adyen's Customer Area
(``external``). Three unique keys do the guarding: ``(payment_id, number)`` numbers
a payment's refunds, ``(payment_id, caller_key)`` makes the caller's idempotency key
return the same refund, ``(payment_id, psp_reference)`` keeps one row per Adyen
refund. ``mpp_refund_event`` logs each fact once per refund (``(refund_id, key)``),
with the move it made. ``mpp_outbox.kind`` says what changed: every row stored
before this revision is a payment's change, hence the server default.

Revision ID: 0004_refunds
Revises: 0003_requeue
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_refunds"
down_revision: str | Sequence[str] | None = "0003_requeue"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mpp_refund",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=255), nullable=True),
        sa.Column("psp_reference", sa.String(length=64), nullable=True),
        sa.Column("amount_value", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("refusal_reason", sa.String(length=255), nullable=True),
        sa.Column("external", sa.Boolean(), nullable=False),
        sa.Column("disputed", sa.Boolean(), nullable=False),
        sa.Column("decisive_rank", sa.Integer(), nullable=True),
        sa.Column("decisive_weight", sa.Integer(), nullable=True),
        sa.Column("decisive_key", sa.String(length=80), nullable=True),
        sa.Column("idempotency_key", sa.String(length=64), nullable=True),
        sa.Column("caller_key", sa.String(length=64), nullable=True),
        sa.Column("conflicts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["payment_id"], ["mpp_payment.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("payment_id", "number", name="uq_mpp_refund_number"),
        sa.UniqueConstraint("payment_id", "caller_key", name="uq_mpp_refund_caller_key"),
        sa.UniqueConstraint("payment_id", "psp_reference", name="uq_mpp_refund_psp_reference"),
    )
    op.create_index(op.f("ix_mpp_refund_payment_id"), "mpp_refund", ["payment_id"], unique=False)
    op.create_index(op.f("ix_mpp_refund_reference"), "mpp_refund", ["reference"], unique=False)
    op.create_index(
        op.f("ix_mpp_refund_psp_reference"), "mpp_refund", ["psp_reference"], unique=False
    )
    op.create_index(
        "ix_mpp_refund_state_updated_at", "mpp_refund", ["state", "updated_at"], unique=False
    )
    op.create_table(
        "mpp_refund_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("refund_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("conflict", sa.String(length=40), nullable=True),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("psp_reference", sa.String(length=64), nullable=True),
        sa.Column("amount_value", sa.BigInteger(), nullable=True),
        sa.Column("amount_currency", sa.String(length=8), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["refund_id"], ["mpp_refund.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("refund_id", "key", name="uq_mpp_refund_event_key"),
    )
    op.create_index(
        op.f("ix_mpp_refund_event_refund_id"), "mpp_refund_event", ["refund_id"], unique=False
    )
    op.add_column(
        "mpp_outbox",
        sa.Column("kind", sa.String(length=16), nullable=False, server_default="payment"),
    )
    op.add_column("mpp_outbox", sa.Column("refund", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mpp_outbox") as batch:
        batch.drop_column("refund")
        batch.drop_column("kind")
    op.drop_index(op.f("ix_mpp_refund_event_refund_id"), table_name="mpp_refund_event")
    op.drop_table("mpp_refund_event")
    op.drop_index("ix_mpp_refund_state_updated_at", table_name="mpp_refund")
    op.drop_index(op.f("ix_mpp_refund_psp_reference"), table_name="mpp_refund")
    op.drop_index(op.f("ix_mpp_refund_reference"), table_name="mpp_refund")
    op.drop_index(op.f("ix_mpp_refund_payment_id"), table_name="mpp_refund")
    op.drop_table("mpp_refund")
