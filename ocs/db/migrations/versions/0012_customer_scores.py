"""Loyalty: the customers' score history (``ocs.db.loyalty_scores``).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07

Written out column by column, as the others are: a migration is the schema at its revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

ID = 64  # balance account ids


def upgrade() -> None:
    op.create_table(
        "customer_scores",
        sa.Column("score_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("scored_at", sa.DateTime, nullable=False),
        sa.Column("points", sa.Integer, nullable=False),
        sa.Column("segment", sa.String(32), nullable=False),
        sa.Column("factors", sa.JSON, nullable=False),
        sa.Column("cause", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("score_id", name="pk_customer_scores"),
    )
    op.create_index("ix_customer_scores_customer_id", "customer_scores", ["customer_id", "score_id"])
    op.create_index("ix_customer_scores_scored_at", "customer_scores", ["scored_at"])


def downgrade() -> None:
    op.drop_table("customer_scores")
