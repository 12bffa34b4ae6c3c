"""The bill run: where a usage record's money came from, the pending usage cuts, the prepaid
rentals debited and the prepaid statements.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-21

Written out column by column, as 0001 and 0002 are: a migration is the schema at its revision.
``usage_records.line_micros`` and ``pools`` say what of a record's money came from the line's own
credit line and from each ancestor's pool (balance RULES.md "Where money came from"). Rows stored
before this revision have both NULL: the bill run takes such a postpaid record as drawn whole
from the line's own credit line (``ocs.db.usage.record_of``), which is what every record of a
line without a paying ancestor was.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = 64  # balance account ids; invoice ids
CUT_ID = 160  # "<invoice id>|<account id>"


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("line_micros", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("pools", sa.Text, nullable=True))
    op.create_table(
        "bill_cuts",
        sa.Column("cut_id", sa.String(CUT_ID), nullable=False),
        sa.Column("invoice_id", sa.String(ID), nullable=False),
        sa.Column("account_id", sa.String(ID), nullable=False),
        sa.Column("line_micros", sa.BigInteger, nullable=False),
        sa.Column("pools", sa.Text, nullable=False),
        sa.Column("records", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("done_at", sa.DateTime, nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("cut_id", name="pk_bill_cuts"),
    )
    op.create_index("ix_bill_cuts_invoice_id", "bill_cuts", ["invoice_id"])
    op.create_index(
        "ix_bill_cuts_pending",
        "bill_cuts",
        ["created_at"],
        sqlite_where=sa.text("done_at IS NULL"),
        postgresql_where=sa.text("done_at IS NULL"),
    )
    op.create_table(
        "prepaid_rentals",
        sa.Column("line_id", sa.String(ID), nullable=False),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("product", sa.String(64), nullable=False),
        sa.Column("micros", sa.BigInteger, nullable=False),
        sa.Column("policy", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("debited_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("line_id", "period_start", name="pk_prepaid_rentals"),
    )
    op.create_index("ix_prepaid_rentals_billing_account_id", "prepaid_rentals", ["billing_account_id"])
    op.create_table(
        "statements",
        sa.Column("statement_id", sa.String(ID), nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("content", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("statement_id", name="pk_statements"),
        sa.UniqueConstraint("billing_account_id", "period_start", name="uq_statements_account_period"),
    )


def downgrade() -> None:
    op.drop_table("statements")
    op.drop_table("prepaid_rentals")
    op.drop_table("bill_cuts")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("pools")
        batch.drop_column("line_micros")
