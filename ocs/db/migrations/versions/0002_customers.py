"""The customer side: parties, customers, company nodes, billing accounts, lines, identities.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-20

Written out column by column, as 0001 is: a migration is the schema at its revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = 64  # balance account ids


def _parties() -> None:
    op.create_table(
        "parties",
        sa.Column("party_id", sa.String(ID), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("given_name", sa.String(256), nullable=True),
        sa.Column("family_name", sa.String(256), nullable=True),
        sa.Column("birth_date", sa.Date, nullable=True),
        sa.Column("organization_name", sa.String(256), nullable=True),
        sa.Column("registration_number", sa.String(64), nullable=True),
        sa.Column("document_type", sa.String(32), nullable=True),
        sa.Column("document_number", sa.String(32), nullable=True),
        sa.Column("document_country", sa.String(2), nullable=True),
        sa.Column("contact_media", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("party_id", name="pk_parties"),
    )
    op.create_table(
        "customers",
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("party_id", sa.String(ID), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("credit_score", sa.Integer, nullable=True),
        sa.Column("credit_class", sa.String(8), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_customers"),
        sa.ForeignKeyConstraint(["party_id"], ["parties.party_id"], name="fk_customers_party_id_parties"),
        sa.UniqueConstraint("party_id", name="uq_customers_party_id"),
    )
    op.create_index("ix_customers_created_at", "customers", ["created_at"])


def _nodes() -> None:
    op.create_table(
        "customer_nodes",
        sa.Column("node_id", sa.String(ID), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("parent_node_id", sa.String(ID), nullable=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(ID), nullable=True),
        sa.Column("engine_parent_id", sa.String(ID), nullable=True),
        sa.Column("account_state", sa.String(16), nullable=True),
        sa.Column("payment_type", sa.String(16), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("credit_limit_micros", sa.BigInteger, nullable=True),
        sa.Column("cap_micros", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("node_id", name="pk_customer_nodes"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_customer_nodes_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(
            ["parent_node_id"], ["customer_nodes.node_id"], name="fk_customer_nodes_parent_node_id_customer_nodes"
        ),
        sa.UniqueConstraint("account_id", name="uq_customer_nodes_account_id"),
    )
    op.create_index("ix_customer_nodes_customer_id", "customer_nodes", ["customer_id"])
    op.create_table(
        "billing_accounts",
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("node_id", sa.String(ID), nullable=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("bill_cycle_day", sa.Integer, nullable=False),
        sa.Column("payment_method", sa.String(32), nullable=False),
        sa.Column("paid_by_parent", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("billing_account_id", name="pk_billing_accounts"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_billing_accounts_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(
            ["node_id"], ["customer_nodes.node_id"], name="fk_billing_accounts_node_id_customer_nodes"
        ),
        sa.UniqueConstraint("node_id", name="uq_billing_accounts_node_id"),
    )
    op.create_index("ix_billing_accounts_customer_id", "billing_accounts", ["customer_id"])


def _lines() -> None:
    op.create_table(
        "lines",
        sa.Column("line_id", sa.String(ID), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("node_id", sa.String(ID), nullable=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("network", sa.String(16), nullable=False),
        sa.Column("payment_type", sa.String(16), nullable=False),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("credit_limit_micros", sa.BigInteger, nullable=False),
        sa.Column("cap_micros", sa.BigInteger, nullable=False),
        sa.Column("engine_parent_id", sa.String(ID), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("line_id", name="pk_lines"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.customer_id"], name="fk_lines_customer_id_customers"),
        sa.ForeignKeyConstraint(["node_id"], ["customer_nodes.node_id"], name="fk_lines_node_id_customer_nodes"),
    )
    op.create_index("ix_lines_customer_id", "lines", ["customer_id"])
    op.create_index("ix_lines_node_id", "lines", ["node_id"])
    op.create_index("ix_lines_status", "lines", ["status"])
    op.create_table(
        "line_identities",
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("line_id", sa.String(ID), nullable=False),
        sa.PrimaryKeyConstraint("kind", "value", name="pk_line_identities"),
        sa.ForeignKeyConstraint(["line_id"], ["lines.line_id"], name="fk_line_identities_line_id_lines"),
    )
    op.create_index("ix_line_identities_line_id", "line_identities", ["line_id"])


def upgrade() -> None:
    _parties()
    _nodes()
    _lines()


def downgrade() -> None:
    for table in ("line_identities", "lines", "billing_accounts", "customer_nodes", "customers", "parties"):
        op.drop_table(table)
