"""The invoice that charged a deposit (``ocs.billing.deposits``).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07

``deposits.invoice_id``: set with ``state = 'invoiced'`` in the invoice's transaction; the states
now also include ``credited`` (given back at termination) and ``cancelled`` (never invoiced).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

ID = 64  # balance account ids


def upgrade() -> None:
    with op.batch_alter_table("deposits") as batch:
        batch.add_column(sa.Column("invoice_id", sa.String(ID), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deposits") as batch:
        batch.drop_column("invoice_id")
