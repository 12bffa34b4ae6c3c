"""The billing wing's tables: invoices and their lines, gapless number series, payments and their
allocations, refunds, credit notes, disputes, adjustments and the bill delivery outbox (the
queries are in ``ocs.billing``).

Theory of operation: an invoice is written once, with its lines and its delivery event, in one
transaction (``ocs.billing.invoices``); afterwards only ``remaining_micros`` and ``state`` change,
each time in the transaction that writes the allocation or credit note that changed them, so
``total = allocations + credit notes + remaining`` holds row by row (the ledger check,
``ocs.billing.receivables``, verifies it). A line's amount and tax are rounded to the currency's
minor unit (``ocs.billing.minor_units``); ``priced_amount_micros`` and ``priced_tax_micros`` keep
them as priced, so the rounding of each line is explicit (NULL on lines issued before rounding,
which were stored as priced). ``(billing_account_id, period_start)`` is unique: a
period is invoiced once, whoever races. ``number_series`` holds one counter row per series (a
legal entity's invoices, and its credit notes): the counter moves in the transaction that inserts
the document, so a rolled-back issue consumes no number and concurrent issuers queue on the row.

A payment keeps what it has not yet paid off in ``unallocated_micros`` (the account credit is the
sum over an account's payments); allocations and refunds take from it, oldest payment first.
Payment references are unique per billing account (``uq_payments_account_reference``): a bank
reference or a client's key, which is also the idempotency key. Money is integer micros (signed
only where a line or an adjustment may be negative); times naive UTC; days are ``Date``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from ocs.db.customers import ID_LENGTH
from ocs.db.schema import metadata

NUMBER_LENGTH = 80  # a series name (legal entity) and a zero-padded sequence

number_series = Table(
    "number_series",
    metadata,
    Column("series", String(NUMBER_LENGTH), primary_key=True),  # "<legal entity>" or "<legal entity>/CN"
    Column("last_sequence", BigInteger, nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", String(ID_LENGTH), primary_key=True),
    Column("legal_entity", String(ID_LENGTH), nullable=False),  # the issuer: its number series
    Column("sequence", BigInteger, nullable=False),
    Column("number", String(NUMBER_LENGTH), nullable=False, unique=True),
    Column("customer_id", String(ID_LENGTH), ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column(
        "billing_account_id",
        String(ID_LENGTH),
        ForeignKey("billing_accounts.billing_account_id"),
        nullable=False,
        index=True,
    ),
    Column("period_start", Date, nullable=False),
    Column("period_end", Date, nullable=False),  # the last day included
    Column("issued_at", DateTime, nullable=False),
    Column("due_date", Date, nullable=False, index=True),
    Column("currency", String(3), nullable=False),
    Column("subtotal_micros", BigInteger, nullable=False),
    Column("discount_micros", BigInteger, nullable=False),
    Column("tax_micros", BigInteger, nullable=False),
    Column("total_micros", BigInteger, nullable=False),
    Column("remaining_micros", BigInteger, nullable=False),
    Column("state", String(16), nullable=False, index=True),  # TMF678: sent | partiallyPaid | settled
    Column("catalog_version", String(64), nullable=False),
    UniqueConstraint("billing_account_id", "period_start", name="uq_invoices_account_period"),
    UniqueConstraint("legal_entity", "sequence", name="uq_invoices_entity_sequence"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("invoice_id", String(ID_LENGTH), ForeignKey("invoices.invoice_id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("node_id", String(ID_LENGTH), nullable=True),  # the node whose subtotal holds it
    Column("line_id", String(ID_LENGTH), nullable=True),  # the subscription it is for
    Column("kind", String(16), nullable=False),  # usage | rental | one_off | discount | tax | adjustment | bundle
    Column("description", Text, nullable=False),
    Column("explanation", JSON, nullable=False),  # records, units, rate, period, discount applied
    Column("amount_micros", BigInteger, nullable=False),  # signed: a discount is negative; in minor units
    Column("tax_micros", BigInteger, nullable=False),  # in minor units
    Column("priced_amount_micros", BigInteger, nullable=True),  # before rounding (NULL: issued unrounded)
    Column("priced_tax_micros", BigInteger, nullable=True),
)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", String(ID_LENGTH), primary_key=True),
    Column(
        "billing_account_id",
        String(ID_LENGTH),
        ForeignKey("billing_accounts.billing_account_id"),
        nullable=False,
        index=True,
    ),
    Column("reference", String(128), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("unallocated_micros", BigInteger, nullable=False),  # the part that is account credit
    Column("method", String(32), nullable=False),
    Column("source", String(16), nullable=False),  # api | cli | bank_file
    Column("received_at", DateTime, nullable=False),
    Column("recorded_by", String(256), nullable=False),
    # indexed (0018): loyalty's catch-up reads the payments of the last days (ocs.db.loyalty_feeds)
    Column("recorded_at", DateTime, nullable=False, index=True),
    UniqueConstraint("billing_account_id", "reference", name="uq_payments_account_reference"),
)

payment_allocations = Table(
    "payment_allocations",
    metadata,
    Column("allocation_id", Integer, primary_key=True, autoincrement=True),
    Column("payment_id", String(ID_LENGTH), ForeignKey("payments.payment_id"), nullable=False, index=True),
    Column("invoice_id", String(ID_LENGTH), ForeignKey("invoices.invoice_id"), nullable=False, index=True),
    Column("amount_micros", BigInteger, nullable=False),
    Column("allocated_at", DateTime, nullable=False),
)

refunds = Table(
    "refunds",
    metadata,
    Column("refund_id", String(ID_LENGTH), primary_key=True),
    Column(
        "billing_account_id",
        String(ID_LENGTH),
        ForeignKey("billing_accounts.billing_account_id"),
        nullable=False,
        index=True,
    ),
    Column("reference", String(128), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("author", String(256), nullable=False),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("billing_account_id", "reference", name="uq_refunds_account_reference"),
)

disputes = Table(
    "disputes",
    metadata,
    Column("dispute_id", String(ID_LENGTH), primary_key=True),
    Column("invoice_id", String(ID_LENGTH), ForeignKey("invoices.invoice_id"), nullable=False, index=True),
    Column("billing_account_id", String(ID_LENGTH), nullable=False, index=True),
    Column("amount_micros", BigInteger, nullable=False),
    Column("state", String(16), nullable=False, index=True),  # open | credited | rejected
    Column("ticket_id", String(ID_LENGTH), ForeignKey("trouble_tickets.ticket_id"), nullable=True),
    Column("reason", Text, nullable=False),
    Column("opened_by", String(256), nullable=False),
    Column("opened_at", DateTime, nullable=False),
    Column("resolved_by", String(256), nullable=True),
    Column("resolved_at", DateTime, nullable=True),
    Column("resolution", Text, nullable=True),
)

credit_notes = Table(
    "credit_notes",
    metadata,
    Column("credit_note_id", String(ID_LENGTH), primary_key=True),
    Column("series", String(NUMBER_LENGTH), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("number", String(NUMBER_LENGTH), nullable=False, unique=True),
    Column("invoice_id", String(ID_LENGTH), ForeignKey("invoices.invoice_id"), nullable=False, index=True),
    Column("billing_account_id", String(ID_LENGTH), nullable=False, index=True),
    Column("amount_micros", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("author", String(256), nullable=False),
    Column("dispute_id", String(ID_LENGTH), ForeignKey("disputes.dispute_id"), nullable=True),
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("series", "sequence", name="uq_credit_notes_series_sequence"),
)

adjustments = Table(
    "billing_adjustments",
    metadata,
    Column("adjustment_id", String(ID_LENGTH), primary_key=True),
    Column(
        "billing_account_id",
        String(ID_LENGTH),
        ForeignKey("billing_accounts.billing_account_id"),
        nullable=False,
        index=True,
    ),
    Column("amount_micros", BigInteger, nullable=False),  # signed: a charge (+) or a rebate (-)
    Column("reason", Text, nullable=False),
    Column("author", String(256), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("invoice_id", String(ID_LENGTH), ForeignKey("invoices.invoice_id"), nullable=True),  # NULL: unbilled
)

delivery_outbox = Table(
    "delivery_outbox",
    metadata,
    Column("event_id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),  # invoice_issued | reminder | ...
    Column("invoice_id", String(ID_LENGTH), ForeignKey("invoices.invoice_id"), nullable=True, index=True),
    Column("payload", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("delivered_at", DateTime, nullable=True, index=True),
)

BILLING_TABLES = (
    number_series,
    invoices,
    invoice_lines,
    payments,
    payment_allocations,
    refunds,
    disputes,
    credit_notes,
    adjustments,
    delivery_outbox,
)
