"""A deposit recorded with a line added directly (``POST /customers/{id}/lines``), not by an order.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09

``deposits.order_id`` becomes optional and ``deposits.line_id`` names the line whose addition made
the deposit due (``ocs.customers.offers``): exactly one of the two is set.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

ID = 64  # balance account ids


def upgrade() -> None:
    with op.batch_alter_table("deposits") as batch:
        batch.alter_column("order_id", existing_type=sa.String(ID), nullable=True)
        batch.add_column(sa.Column("line_id", sa.String(ID), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM deposits WHERE order_id IS NULL")
    with op.batch_alter_table("deposits") as batch:
        batch.drop_column("line_id")
        batch.alter_column("order_id", existing_type=sa.String(ID), nullable=False)
