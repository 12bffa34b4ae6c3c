"""Loyalty: counters per (rule, member, period), rule applications, budgets, events other than
usage, and discounts for a later invoice (ocs/db/loyalty.py).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

ID = 64  # rule, programme, customer and balance account ids


def _number() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "loyalty_counters",
        sa.Column("member_id", sa.String(ID), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("rule_id", sa.String(ID), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "period", "rule_id", name="pk_loyalty_counters"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "loyalty_applications",
        sa.Column("application_id", _number(), autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.String(ID), nullable=False),
        sa.Column("programme_id", sa.String(ID), nullable=False),
        sa.Column("member_id", sa.String(ID), nullable=False),
        sa.Column("line_id", sa.String(ID), nullable=False),
        sa.Column("trigger_id", sa.Text(), nullable=False),
        sa.Column("trigger_kind", sa.String(16), nullable=False),
        sa.Column("action", sa.String(24), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("unit_kind", sa.String(16), nullable=True),
        sa.Column("services", sa.Text(), nullable=False),
        sa.Column("valid_until", sa.BigInteger(), nullable=False),
        sa.Column("cost_micros", sa.BigInteger(), nullable=False),
        sa.Column("at_seconds", sa.BigInteger(), nullable=False),
        sa.Column("committed_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("credited_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("application_id", name="pk_loyalty_applications"),
        sa.UniqueConstraint("rule_id", "trigger_id", name="uq_loyalty_applications_rule_id"),
    )
    op.create_index(
        "ix_loyalty_applications_pending",
        "loyalty_applications",
        ["application_id"],
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_loyalty_applications_member_id", "loyalty_applications", ["member_id", "at_seconds"])
    op.create_table(
        "loyalty_budgets",
        sa.Column("programme_id", sa.String(ID), nullable=False),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("programme_id", name="pk_loyalty_budgets"),
    )
    op.create_table(
        "loyalty_events",
        sa.Column("trigger_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("member_id", sa.String(ID), nullable=False),
        sa.Column("amount_micros", sa.BigInteger(), nullable=False),
        sa.Column("at_seconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("trigger_id", name="pk_loyalty_events"),
    )
    op.create_table(
        "loyalty_invoice_discounts",
        sa.Column("discount_id", _number(), autoincrement=True, nullable=False),
        sa.Column("rule_id", sa.String(ID), nullable=False),
        sa.Column("trigger_id", sa.Text(), nullable=False),
        sa.Column("programme_id", sa.String(ID), nullable=False),
        sa.Column("member_id", sa.String(ID), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("percent_basis_points", sa.Integer(), nullable=False),
        sa.Column("applies_from", sa.BigInteger(), nullable=False),
        sa.Column("applies_until", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("invoice_id", sa.String(ID), nullable=True),
        sa.PrimaryKeyConstraint("discount_id", name="pk_loyalty_invoice_discounts"),
        sa.UniqueConstraint("rule_id", "trigger_id", name="uq_loyalty_invoice_discounts_rule_id"),
    )
    op.create_index(
        "ix_loyalty_invoice_discounts_member_id",
        "loyalty_invoice_discounts",
        ["member_id", "state", "applies_from"],
    )


def downgrade() -> None:
    op.drop_table("loyalty_invoice_discounts")
    op.drop_table("loyalty_events")
    op.drop_table("loyalty_budgets")
    op.drop_table("loyalty_applications")
    op.drop_table("loyalty_counters")
