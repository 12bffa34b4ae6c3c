"""Invoices, number series, payments, allocations, refunds, credit notes, disputes, adjustments
and the bill delivery outbox (the billing wing: ``ocs.db.billing``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-08

Written out column by column, as 0001 to 0004 are: a migration is the schema at its revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = 64  # balance account ids
NUMBER = 80  # a number series and its documents' numbers


def upgrade() -> None:
    op.create_table(
        "number_series",
        sa.Column("series", sa.String(NUMBER), nullable=False),
        sa.Column("last_sequence", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("series", name="pk_number_series"),
    )
    op.create_table(
        "invoices",
        sa.Column("invoice_id", sa.String(ID), nullable=False),
        sa.Column("legal_entity", sa.String(ID), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("number", sa.String(NUMBER), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("period_start", sa.Date, nullable=False),
        sa.Column("period_end", sa.Date, nullable=False),
        sa.Column("issued_at", sa.DateTime, nullable=False),
        sa.Column("due_date", sa.Date, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("subtotal_micros", sa.BigInteger, nullable=False),
        sa.Column("discount_micros", sa.BigInteger, nullable=False),
        sa.Column("tax_micros", sa.BigInteger, nullable=False),
        sa.Column("total_micros", sa.BigInteger, nullable=False),
        sa.Column("remaining_micros", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("catalog_version", sa.String(ID), nullable=False),
        sa.PrimaryKeyConstraint("invoice_id", name="pk_invoices"),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.billing_account_id"],
            name="fk_invoices_billing_account_id_billing_accounts",
        ),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.customer_id"], name="fk_invoices_customer_id_customers"),
        sa.UniqueConstraint("billing_account_id", "period_start", name="uq_invoices_account_period"),
        sa.UniqueConstraint("legal_entity", "sequence", name="uq_invoices_entity_sequence"),
        sa.UniqueConstraint("number", name="uq_invoices_number"),
    )
    op.create_index("ix_invoices_billing_account_id", "invoices", ["billing_account_id"])
    op.create_index("ix_invoices_customer_id", "invoices", ["customer_id"])
    op.create_index("ix_invoices_due_date", "invoices", ["due_date"])
    op.create_index("ix_invoices_state", "invoices", ["state"])
    op.create_table(
        "invoice_lines",
        sa.Column("invoice_id", sa.String(ID), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("node_id", sa.String(ID), nullable=True),
        sa.Column("line_id", sa.String(ID), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("explanation", sa.JSON, nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("tax_micros", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("invoice_id", "position", name="pk_invoice_lines"),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.invoice_id"], name="fk_invoice_lines_invoice_id_invoices"),
    )
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.String(ID), nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("unallocated_micros", sa.BigInteger, nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("recorded_by", sa.String(256), nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name="pk_payments"),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.billing_account_id"],
            name="fk_payments_billing_account_id_billing_accounts",
        ),
        sa.UniqueConstraint("billing_account_id", "reference", name="uq_payments_account_reference"),
    )
    op.create_index("ix_payments_billing_account_id", "payments", ["billing_account_id"])
    op.create_table(
        "payment_allocations",
        sa.Column("allocation_id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("payment_id", sa.String(ID), nullable=False),
        sa.Column("invoice_id", sa.String(ID), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("allocated_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("allocation_id", name="pk_payment_allocations"),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.invoice_id"], name="fk_payment_allocations_invoice_id_invoices"
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.payment_id"], name="fk_payment_allocations_payment_id_payments"
        ),
    )
    op.create_index("ix_payment_allocations_invoice_id", "payment_allocations", ["invoice_id"])
    op.create_index("ix_payment_allocations_payment_id", "payment_allocations", ["payment_id"])
    op.create_table(
        "refunds",
        sa.Column("refund_id", sa.String(ID), nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("refund_id", name="pk_refunds"),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.billing_account_id"],
            name="fk_refunds_billing_account_id_billing_accounts",
        ),
        sa.UniqueConstraint("billing_account_id", "reference", name="uq_refunds_account_reference"),
    )
    op.create_index("ix_refunds_billing_account_id", "refunds", ["billing_account_id"])
    op.create_table(
        "disputes",
        sa.Column("dispute_id", sa.String(ID), nullable=False),
        sa.Column("invoice_id", sa.String(ID), nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("ticket_id", sa.String(ID), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("opened_by", sa.String(256), nullable=False),
        sa.Column("opened_at", sa.DateTime, nullable=False),
        sa.Column("resolved_by", sa.String(256), nullable=True),
        sa.Column("resolved_at", sa.DateTime, nullable=True),
        sa.Column("resolution", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("dispute_id", name="pk_disputes"),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.invoice_id"], name="fk_disputes_invoice_id_invoices"),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["trouble_tickets.ticket_id"], name="fk_disputes_ticket_id_trouble_tickets"
        ),
    )
    op.create_index("ix_disputes_billing_account_id", "disputes", ["billing_account_id"])
    op.create_index("ix_disputes_invoice_id", "disputes", ["invoice_id"])
    op.create_index("ix_disputes_state", "disputes", ["state"])
    op.create_table(
        "credit_notes",
        sa.Column("credit_note_id", sa.String(ID), nullable=False),
        sa.Column("series", sa.String(NUMBER), nullable=False),
        sa.Column("sequence", sa.BigInteger, nullable=False),
        sa.Column("number", sa.String(NUMBER), nullable=False),
        sa.Column("invoice_id", sa.String(ID), nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("dispute_id", sa.String(ID), nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("credit_note_id", name="pk_credit_notes"),
        sa.ForeignKeyConstraint(["dispute_id"], ["disputes.dispute_id"], name="fk_credit_notes_dispute_id_disputes"),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.invoice_id"], name="fk_credit_notes_invoice_id_invoices"),
        sa.UniqueConstraint("number", name="uq_credit_notes_number"),
        sa.UniqueConstraint("series", "sequence", name="uq_credit_notes_series_sequence"),
    )
    op.create_index("ix_credit_notes_billing_account_id", "credit_notes", ["billing_account_id"])
    op.create_index("ix_credit_notes_invoice_id", "credit_notes", ["invoice_id"])
    op.create_table(
        "billing_adjustments",
        sa.Column("adjustment_id", sa.String(ID), nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("invoice_id", sa.String(ID), nullable=True),
        sa.PrimaryKeyConstraint("adjustment_id", name="pk_billing_adjustments"),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.billing_account_id"],
            name="fk_billing_adjustments_billing_account_id_billing_accounts",
        ),
        sa.ForeignKeyConstraint(
            ["invoice_id"], ["invoices.invoice_id"], name="fk_billing_adjustments_invoice_id_invoices"
        ),
    )
    op.create_index("ix_billing_adjustments_billing_account_id", "billing_adjustments", ["billing_account_id"])
    op.create_table(
        "delivery_outbox",
        sa.Column("event_id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("invoice_id", sa.String(ID), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("delivered_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("event_id", name="pk_delivery_outbox"),
        sa.ForeignKeyConstraint(["invoice_id"], ["invoices.invoice_id"], name="fk_delivery_outbox_invoice_id_invoices"),
    )
    op.create_index("ix_delivery_outbox_delivered_at", "delivery_outbox", ["delivered_at"])
    op.create_index("ix_delivery_outbox_invoice_id", "delivery_outbox", ["invoice_id"])


def downgrade() -> None:
    op.drop_table("delivery_outbox")
    op.drop_table("billing_adjustments")
    op.drop_table("credit_notes")
    op.drop_table("disputes")
    op.drop_table("refunds")
    op.drop_table("payment_allocations")
    op.drop_table("payments")
    op.drop_table("invoice_lines")
    op.drop_table("invoices")
    op.drop_table("number_series")
