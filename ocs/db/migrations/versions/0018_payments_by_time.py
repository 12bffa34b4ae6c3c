"""An index on ``payments.recorded_at``: loyalty's catch-up of payments its listener missed reads
the payments of the last days (``ocs.db.loyalty_feeds.unfed_payments``), which was a scan of every
payment every pass.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_payments_recorded_at", "payments", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_payments_recorded_at", "payments")
