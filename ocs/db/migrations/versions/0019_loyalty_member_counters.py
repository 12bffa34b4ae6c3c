"""Loyalty counters: one row per (member, period) holding every rule's counter as a JSON object
(``loyalty_member_counters``), instead of a row per (rule, member, period): a usage record moves
about five counters of its member, which were five rows to write (ocs/db/loyalty.py). The
counters stored are carried over, grouped by member and period; the downgrade unpacks them.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

ID = 64  # rule and customer ids

_PACK = {
    "sqlite": "json_group_object(rule_id, value)",
    "postgresql": "CAST(json_object_agg(rule_id, value) AS TEXT)",
}
_UNPACK = {
    "sqlite": (
        "SELECT counters.member_id, counters.period, item.key, item.value"
        " FROM loyalty_member_counters AS counters, json_each(counters.counters) AS item"
    ),
    "postgresql": (
        "SELECT counters.member_id, counters.period, item.key, CAST(item.value AS BIGINT)"
        " FROM loyalty_member_counters AS counters, jsonb_each_text(CAST(counters.counters AS JSONB)) AS item"
    ),
}


def upgrade() -> None:
    op.create_table(
        "loyalty_member_counters",
        sa.Column("member_id", sa.String(ID), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("counters", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "period", name="pk_loyalty_member_counters"),
        sqlite_with_rowid=False,
    )
    pack = _PACK[op.get_bind().dialect.name]
    op.execute(
        "INSERT INTO loyalty_member_counters (member_id, period, counters)"
        f" SELECT member_id, period, {pack} FROM loyalty_counters GROUP BY member_id, period"
    )
    op.drop_table("loyalty_counters")


def downgrade() -> None:
    op.create_table(
        "loyalty_counters",
        sa.Column("member_id", sa.String(ID), nullable=False),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("rule_id", sa.String(ID), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("member_id", "period", "rule_id", name="pk_loyalty_counters"),
        sqlite_with_rowid=False,
    )
    unpack = _UNPACK[op.get_bind().dialect.name]
    op.execute(f"INSERT INTO loyalty_counters (member_id, period, rule_id, value) {unpack}")
    op.drop_table("loyalty_member_counters")
