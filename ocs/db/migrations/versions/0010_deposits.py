"""Deposits a credit class requires, pending until the billing wing invoices them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08

Written out column by column, as 0001 to 0004 are: a migration is the schema at its revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ID = 64  # balance account ids


def upgrade() -> None:
    op.create_table(
        "deposits",
        sa.Column("deposit_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("order_id", sa.String(ID), nullable=False),
        sa.Column("credit_class", sa.String(8), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("deposit_id", name="pk_deposits"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.customer_id"], name="fk_deposits_customer_id_customers"),
        sa.ForeignKeyConstraint(["order_id"], ["product_orders.order_id"], name="fk_deposits_order_id_product_orders"),
        sa.UniqueConstraint("customer_id", "credit_class", name="uq_deposits_customer_id_credit_class"),
    )
    op.create_index("ix_deposits_state", "deposits", ["state"])


def downgrade() -> None:
    op.drop_index("ix_deposits_state", "deposits")
    op.drop_table("deposits")
