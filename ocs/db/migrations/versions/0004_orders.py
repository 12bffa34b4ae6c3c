"""Product orders (TMF622) and their items.

Revision ID: 0004
Revises: 0003i
Create Date: 2026-12-07

Written out column by column, as 0001 and 0002 are: a migration is the schema at its revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003i"
branch_labels = None
depends_on = None

ID = 64  # balance account ids


def upgrade() -> None:
    op.create_table(
        "product_orders",
        sa.Column("order_id", sa.String(ID), nullable=False),
        sa.Column("external_id", sa.String(ID), nullable=True),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("request", sa.JSON, nullable=False),
        sa.Column("failure", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("completed_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("order_id", name="pk_product_orders"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_product_orders_customer_id_customers"
        ),
        sa.UniqueConstraint("external_id", name="uq_product_orders_external_id"),
    )
    op.create_index("ix_product_orders_customer_id", "product_orders", ["customer_id"])
    op.create_index("ix_product_orders_state", "product_orders", ["state"])
    op.create_table(
        "product_order_items",
        sa.Column("order_id", sa.String(ID), nullable=False),
        sa.Column("item_id", sa.String(16), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("line_id", sa.String(ID), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("failure", sa.Text, nullable=True),
        sa.Column("completed_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("order_id", "item_id", name="pk_product_order_items"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["product_orders.order_id"], name="fk_product_order_items_order_id_product_orders"
        ),
    )


def downgrade() -> None:
    op.drop_table("product_order_items")
    op.drop_table("product_orders")
