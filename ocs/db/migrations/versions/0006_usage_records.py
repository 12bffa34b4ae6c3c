"""Usage records (the spool) move into the business database, with the invoice that billed each.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07

Written out column by column, as 0001 and 0002 are: a migration is the schema at its revision.
The rows of an old spool file (``[spool] path``) are copied in by the server at startup
(``ocs.billing.spool_upgrade``), not here: a migration runs on the database alone.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID = 64  # balance account ids; invoice ids


def upgrade() -> None:
    op.create_table(
        "usage_records",
        # SQLite: INTEGER PRIMARY KEY is the rowid; PostgreSQL: a BIGINT identity.
        sa.Column(
            "record_number",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("record_id", sa.Text, nullable=False),
        sa.Column("account_id", sa.String(ID), nullable=False),
        sa.Column("session_id", sa.Text, nullable=False),
        sa.Column("request_number", sa.BigInteger, nullable=False),
        sa.Column("rating_group", sa.BigInteger, nullable=False),
        sa.Column("service", sa.Text, nullable=False),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("units", sa.BigInteger, nullable=False),
        sa.Column("micros", sa.BigInteger, nullable=False),
        sa.Column("payment_type", sa.String(16), nullable=False),
        sa.Column("at_seconds", sa.BigInteger, nullable=False),
        sa.Column("exported_at", sa.BigInteger, nullable=True),
        sa.Column("service_identifier", sa.BigInteger, nullable=True),
        sa.Column("invoice_id", sa.String(ID), nullable=True),
        sa.PrimaryKeyConstraint("record_number", name="pk_usage_records"),
        sa.UniqueConstraint("record_id", name="uq_usage_records_record_id"),
    )
    op.create_index("ix_usage_records_at_seconds", "usage_records", ["at_seconds", "record_number"])
    op.create_index("ix_usage_records_account_id", "usage_records", ["account_id", "invoice_id", "at_seconds"])
    op.create_index(
        "ix_usage_records_exported",
        "usage_records",
        ["at_seconds"],
        sqlite_where=sa.text("exported_at IS NOT NULL"),
        postgresql_where=sa.text("exported_at IS NOT NULL"),
    )
    op.create_index(
        "ix_usage_records_invoice_id",
        "usage_records",
        ["invoice_id"],
        sqlite_where=sa.text("invoice_id IS NOT NULL"),
        postgresql_where=sa.text("invoice_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("usage_records")
