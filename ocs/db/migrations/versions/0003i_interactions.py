"""Interactions: notes on customers, trouble tickets and their history, status history.

Revision ID: 0003i
Revises: 0002
Create Date: 2026-06-10

Written out column by column, as 0001 and 0002 are: a migration is the schema at its revision.
Customers and lines made before this revision have no history rows; the customer base report
takes their ``created_at`` and current status as their one change (``ocs.customers.reports``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003i"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = 64  # balance account ids


def _notes_and_tickets() -> None:
    op.create_table(
        "customer_notes",
        sa.Column("note_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("note_id", name="pk_customer_notes"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_customer_notes_customer_id_customers"
        ),
    )
    op.create_index("ix_customer_notes_customer_id", "customer_notes", ["customer_id"])
    op.create_table(
        "trouble_tickets",
        sa.Column("ticket_id", sa.String(ID), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("line_id", sa.String(ID), nullable=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("ticket_type", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_by", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", name="pk_trouble_tickets"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_trouble_tickets_customer_id_customers"
        ),
        sa.ForeignKeyConstraint(["line_id"], ["lines.line_id"], name="fk_trouble_tickets_line_id_lines"),
    )
    op.create_index("ix_trouble_tickets_customer_id", "trouble_tickets", ["customer_id"])
    op.create_index("ix_trouble_tickets_status", "trouble_tickets", ["status"])
    op.create_table(
        "trouble_ticket_history",
        sa.Column("record_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("ticket_id", sa.String(ID), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("changed_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_trouble_ticket_history"),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["trouble_tickets.ticket_id"], name="fk_trouble_ticket_history_ticket_id_trouble_tickets"
        ),
    )
    op.create_index("ix_trouble_ticket_history_ticket_id", "trouble_ticket_history", ["ticket_id"])


def _status_changes() -> None:
    op.create_table(
        "status_changes",
        sa.Column("record_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("entity_kind", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.String(ID), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("reason_category", sa.String(16), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("changed_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_status_changes"),
    )
    op.create_index("ix_status_changes_entity_id", "status_changes", ["entity_id"])
    op.create_index("ix_status_changes_customer_id", "status_changes", ["customer_id"])
    op.create_index("ix_status_changes_changed_at", "status_changes", ["changed_at"])


def upgrade() -> None:
    _notes_and_tickets()
    _status_changes()


def downgrade() -> None:
    for table in ("status_changes", "trouble_ticket_history", "trouble_tickets", "customer_notes"):
        op.drop_table(table)
