"""The initial tables: payments, their history and event log, the inbox and the outbox.

Exactly what ``storage/tables.py`` declared when migrations were introduced (a
database made by ``create_all`` before then is adopted as this revision). Written
out in full, never imported from ``tables.py``: a revision is a frozen snapshot.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mpp_notification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dedup_key", sa.String(length=64), nullable=False),
        sa.Column("psp_reference", sa.String(length=64), nullable=False),
        sa.Column("merchant_reference", sa.String(length=255), nullable=False),
        sa.Column("event_code", sa.String(length=64), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("amount_value", sa.BigInteger(), nullable=True),
        sa.Column("amount_currency", sa.String(length=8), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("deliveries", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("dedup_key"),
    )
    op.create_index(
        "ix_mpp_notification_due", "mpp_notification", ["status", "next_attempt_at"], unique=False
    )
    op.create_index(
        op.f("ix_mpp_notification_merchant_reference"),
        "mpp_notification",
        ["merchant_reference"],
        unique=False,
    )
    op.create_index(
        op.f("ix_mpp_notification_psp_reference"),
        "mpp_notification",
        ["psp_reference"],
        unique=False,
    )
    op.create_table(
        "mpp_payment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=80), nullable=False),
        sa.Column("openid", sa.String(length=128), nullable=False),
        sa.Column("amount_value", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("psp_reference", sa.String(length=64), nullable=True),
        sa.Column("result_code", sa.String(length=32), nullable=True),
        sa.Column("refusal_reason", sa.String(length=255), nullable=True),
        sa.Column("decisive_rank", sa.Integer(), nullable=True),
        sa.Column("decisive_weight", sa.Integer(), nullable=True),
        sa.Column("decisive_key", sa.String(length=80), nullable=True),
        sa.Column("decisive_source", sa.String(length=16), nullable=True),
        sa.Column("payment_data", sa.Text(), nullable=True),
        sa.Column("wechat_params", sa.Text(), nullable=True),
        sa.Column("action", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("details_attempts", sa.Integer(), nullable=False),
        sa.Column("conflicts", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
    )
    op.create_index(op.f("ix_mpp_payment_openid"), "mpp_payment", ["openid"], unique=False)
    op.create_index(
        op.f("ix_mpp_payment_psp_reference"), "mpp_payment", ["psp_reference"], unique=False
    )
    op.create_index(
        "ix_mpp_payment_state_updated", "mpp_payment", ["state", "updated_at"], unique=False
    )
    op.create_table(
        "mpp_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=80), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["mpp_payment.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_mpp_outbox_due", "mpp_outbox", ["status", "next_attempt_at"], unique=False)
    op.create_index(op.f("ix_mpp_outbox_payment_id"), "mpp_outbox", ["payment_id"], unique=False)
    op.create_table(
        "mpp_payment_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("conflict", sa.String(length=40), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("psp_reference", sa.String(length=64), nullable=True),
        sa.Column("amount_value", sa.BigInteger(), nullable=True),
        sa.Column("amount_currency", sa.String(length=8), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["mpp_payment.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("payment_id", "key", name="uq_mpp_payment_event_key"),
    )
    op.create_index(
        op.f("ix_mpp_payment_event_payment_id"), "mpp_payment_event", ["payment_id"], unique=False
    )
    op.create_table(
        "mpp_transition",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payment_id", sa.Integer(), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("event_kind", sa.String(length=64), nullable=False),
        sa.Column("event_key", sa.String(length=80), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["mpp_payment.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("payment_id", "to_state", name="uq_mpp_transition_state"),
    )
    op.create_index(
        op.f("ix_mpp_transition_payment_id"), "mpp_transition", ["payment_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_mpp_transition_payment_id"), table_name="mpp_transition")
    op.drop_table("mpp_transition")
    op.drop_index(op.f("ix_mpp_payment_event_payment_id"), table_name="mpp_payment_event")
    op.drop_table("mpp_payment_event")
    op.drop_index(op.f("ix_mpp_outbox_payment_id"), table_name="mpp_outbox")
    op.drop_index("ix_mpp_outbox_due", table_name="mpp_outbox")
    op.drop_table("mpp_outbox")
    op.drop_index("ix_mpp_payment_state_updated", table_name="mpp_payment")
    op.drop_index(op.f("ix_mpp_payment_psp_reference"), table_name="mpp_payment")
    op.drop_index(op.f("ix_mpp_payment_openid"), table_name="mpp_payment")
    op.drop_table("mpp_payment")
    op.drop_index(op.f("ix_mpp_notification_psp_reference"), table_name="mpp_notification")
    op.drop_index(op.f("ix_mpp_notification_merchant_reference"), table_name="mpp_notification")
    op.drop_index("ix_mpp_notification_due", table_name="mpp_notification")
    op.drop_table("mpp_notification")
