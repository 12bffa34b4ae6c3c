"""The first tables: API tokens and the audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-05-01

The columns are written out here, not taken from ``ocs.db`` tables: a migration describes the
schema as it was at its revision, whatever the tables become later.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("token_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("account_id", sa.String(256), nullable=True),
        sa.Column("adjust_limit_micros", sa.BigInteger, nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=True),
        sa.Column("revoked_at", sa.DateTime, nullable=True),
        sa.PrimaryKeyConstraint("token_id", name="pk_api_tokens"),
        sa.UniqueConstraint("token_sha256", name="uq_api_tokens_token_sha256"),
    )
    op.create_table(
        "audit_trail",
        sa.Column("record_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("occurred_at", sa.DateTime, nullable=False),
        sa.Column("token_id", sa.Integer, nullable=True),
        sa.Column("actor_name", sa.String(256), nullable=False),
        sa.Column("actor_role", sa.String(16), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("route", sa.String(256), nullable=False),
        sa.Column("resource_id", sa.String(256), nullable=True),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("record_id", name="pk_audit_trail"),
    )
    op.create_index("ix_audit_trail_occurred_at", "audit_trail", ["occurred_at"])
    op.create_index("ix_audit_trail_resource_id", "audit_trail", ["resource_id"])


def downgrade() -> None:
    op.drop_table("audit_trail")
    op.drop_table("api_tokens")
