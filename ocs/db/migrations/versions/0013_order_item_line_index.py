"""An index on ``product_order_items.line_id``: the bill run's facts find each line's plan history
by it (``ocs.billing.bill_facts``), which was a scan of every order item.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_product_order_items_line_id", "product_order_items", ["line_id"])


def downgrade() -> None:
    op.drop_index("ix_product_order_items_line_id", "product_order_items")
