"""The customer lifecycle: a node's own status, a line's own status, the lifecycle steps.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-14

Written out column by column, as 0001 and 0002 are: a migration is the schema at its revision.
A line made before this revision takes its current status as its own (a line still provisioning:
active, what it will be once made); every node is active, as no API changed a node's status in
the business database before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = 64  # balance account ids


def upgrade() -> None:
    with op.batch_alter_table("customer_nodes") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="active"))
    with op.batch_alter_table("lines") as batch:
        batch.add_column(sa.Column("own_status", sa.String(16), nullable=False, server_default="active"))
    op.execute("UPDATE lines SET own_status = status WHERE status <> 'provisioning'")
    op.create_table(
        "lifecycle_steps",
        sa.Column("step_id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("entity_kind", sa.String(16), nullable=False),
        sa.Column("entity_id", sa.String(ID), nullable=False),
        sa.Column("customer_id", sa.String(ID), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("reason_category", sa.String(16), nullable=True),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("step_id", name="pk_lifecycle_steps"),
    )
    op.create_index("ix_lifecycle_steps_customer_id", "lifecycle_steps", ["customer_id"])
    op.create_index("ix_lifecycle_steps_finished_at", "lifecycle_steps", ["finished_at"])


def downgrade() -> None:
    op.drop_table("lifecycle_steps")
    with op.batch_alter_table("lines") as batch:
        batch.drop_column("own_status")
    with op.batch_alter_table("customer_nodes") as batch:
        batch.drop_column("status")
