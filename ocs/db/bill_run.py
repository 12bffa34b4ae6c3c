"""The bill run's own tables: the usage cuts still to apply in Redis, the prepaid rentals debited,
and the prepaid statements (the queries are in ``ocs.billing.bill_run`` and its helpers).

Theory of operation: an invoice and the records it billed are committed in one transaction; the
Redis cut that gives the line its credit back cannot be part of it. So that transaction also
writes one ``bill_cuts`` row per consuming account (the cut id, the amounts its records drew from
the line's own credit line and from each ancestor's pool), with ``done_at`` NULL. After the
commit the run applies each cut (idempotent in Redis by its id) and sets ``done_at``; a run killed
in between leaves rows with ``done_at`` NULL, which the server's startup pass and the next run
apply: each cut happens exactly once whatever the crash.

``prepaid_rentals`` records each prepaid rental debit asked of the engine, one row per (line,
period start) with the engine's outcome; the engine call is idempotent by the same key, so a
rerun asks again and gets ``replayed``. ``statements`` holds the monthly statements of prepaid
billing accounts: a document apart from invoices (no number of the invoice series, nothing owed),
one per (billing account, period start). Money is integer micros; times naive UTC; days ``Date``.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Date, DateTime, Index, String, Table, Text, UniqueConstraint, text

from ocs.db.customers import ID_LENGTH
from ocs.db.schema import metadata

CUT_ID_LENGTH = 160  # "<invoice id>|<account id>": an invoice number (80) and an account id (64)

bill_cuts = Table(
    "bill_cuts",
    metadata,
    Column("cut_id", String(CUT_ID_LENGTH), primary_key=True),
    Column("invoice_id", String(ID_LENGTH), nullable=False, index=True),
    Column("account_id", String(ID_LENGTH), nullable=False),  # the consuming engine account
    Column("line_micros", BigInteger, nullable=False),  # drawn from its own credit line
    Column("pools", Text, nullable=False),  # "level:bucket:line" per ancestor level, ";"-separated
    Column("records", BigInteger, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("done_at", DateTime, nullable=True),  # NULL: still to apply in Redis
    Column("outcome", String(32), nullable=True),  # the engine's answer (ok, or why not)
    Index(
        "ix_bill_cuts_pending",
        "created_at",
        sqlite_where=text("done_at IS NULL"),
        postgresql_where=text("done_at IS NULL"),
    ),
)

prepaid_rentals = Table(
    "prepaid_rentals",
    metadata,
    Column("line_id", String(ID_LENGTH), primary_key=True),
    Column("period_start", Date, primary_key=True),
    Column("billing_account_id", String(ID_LENGTH), nullable=False, index=True),
    Column("product", String(64), nullable=False),
    Column("micros", BigInteger, nullable=False),
    Column("policy", String(16), nullable=False),  # restrict | allow_negative
    Column("outcome", String(32), nullable=False),  # ok | insufficient_funds | ...
    Column("debited_at", DateTime, nullable=False),
)

statements = Table(
    "statements",
    metadata,
    Column("statement_id", String(ID_LENGTH), primary_key=True),
    Column("billing_account_id", String(ID_LENGTH), nullable=False),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),  # the last day included
    Column("content", JSON, nullable=False),  # usage per line, rentals, top-ups
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("billing_account_id", "period_start", name="uq_statements_account_period"),
)

BILL_RUN_TABLES = (bill_cuts, prepaid_rentals, statements)
