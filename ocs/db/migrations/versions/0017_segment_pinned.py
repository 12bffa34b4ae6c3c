"""``customers.segment_pinned``: a segment an operator set by hand (``PUT /loyalty/members/{id}/
segment``) stands over the scoring's, which rewrites only the segments it made
(``ocs.loyalty.scoring``).

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("customers") as table:
        table.add_column(sa.Column("segment_pinned", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("customers") as table:
        table.drop_column("segment_pinned")
