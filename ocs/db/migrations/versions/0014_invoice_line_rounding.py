"""Invoice lines rounded to the currency's minor unit keep their amounts as priced.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

``invoice_lines.priced_amount_micros`` and ``priced_tax_micros``: the line's amount and tax
before rounding (``ocs.billing.minor_units``); NULL on the lines issued before, which were
stored as priced.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("invoice_lines") as batch:
        batch.add_column(sa.Column("priced_amount_micros", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("priced_tax_micros", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("invoice_lines") as batch:
        batch.drop_column("priced_tax_micros")
        batch.drop_column("priced_amount_micros")
