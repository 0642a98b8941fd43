"""Parked rows can be requeued, ignored webhook items judged again.

``mpp_outbox.requeued_at`` starts a requeued state change's retry window again
(without it, the window counts from the change itself). ``mpp_notification.live``
keeps the delivery's ``live`` flag, so an item ignored under a wrong setting can be
re-evaluated once the setting is fixed. Both are nullable: existing rows keep
their meaning (an item stored before this revision has no known flag).

Revision ID: 0003_requeue
Revises: 0002_payment_data_hash
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_requeue"
down_revision: str | Sequence[str] | None = "0002_payment_data_hash"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("mpp_outbox", sa.Column("requeued_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("mpp_notification", sa.Column("live", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("mpp_notification", "live")
    op.drop_column("mpp_outbox", "requeued_at")
