"""Dunning: the steps applied, promises to pay, exemptions, and the customer's segment
(``ocs.db.dunning``).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-20

Written out column by column, as the others are: a migration is the schema at its revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ID = 64  # balance account ids


def upgrade() -> None:
    with op.batch_alter_table("customers") as batch:
        batch.add_column(sa.Column("segment", sa.String(32), nullable=True))
    op.create_table(
        "dunning_steps",
        sa.Column("step_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("episode_due_date", sa.Date, nullable=False),
        sa.Column("ladder", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(ID), nullable=False),
        sa.Column("run_date", sa.Date, nullable=False),
        sa.Column("days_past_due", sa.Integer, nullable=False),
        sa.Column("overdue_micros", sa.BigInteger, nullable=False),
        sa.Column("invoice_id", sa.String(ID), nullable=True),
        sa.Column("template", sa.String(64), nullable=True),
        sa.Column("lifts_step_id", sa.Integer, nullable=True),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("step_id", name="pk_dunning_steps"),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.billing_account_id"],
            name="fk_dunning_steps_billing_account_id_billing_accounts",
        ),
        sa.UniqueConstraint(
            "billing_account_id", "episode_due_date", "position", name="uq_dunning_steps_episode_position"
        ),
    )
    op.create_index("ix_dunning_steps_billing_account_id", "dunning_steps", ["billing_account_id"])
    op.create_index("ix_dunning_steps_finished_at", "dunning_steps", ["finished_at"])
    op.create_table(
        "promises_to_pay",
        sa.Column("promise_id", sa.String(ID), nullable=False),
        sa.Column("billing_account_id", sa.String(ID), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("promised_date", sa.Date, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("promise_id", name="pk_promises_to_pay"),
        sa.ForeignKeyConstraint(
            ["billing_account_id"],
            ["billing_accounts.billing_account_id"],
            name="fk_promises_to_pay_billing_account_id_billing_accounts",
        ),
    )
    op.create_index("ix_promises_to_pay_billing_account_id", "promises_to_pay", ["billing_account_id"])
    op.create_table(
        "dunning_exemptions",
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.PrimaryKeyConstraint("customer_id", name="pk_dunning_exemptions"),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.customer_id"], name="fk_dunning_exemptions_customer_id_customers"
        ),
    )


def downgrade() -> None:
    op.drop_table("dunning_exemptions")
    op.drop_table("promises_to_pay")
    op.drop_table("dunning_steps")
    with op.batch_alter_table("customers") as batch:
        batch.drop_column("segment")
