"""The order tables: TMF622 product orders and their items, each with its own state.

Theory of operation: an order row and its item rows are written together when the order is
acknowledged. Fulfilment then moves each item to ``completed`` (or ``failed``) in one
transaction with whatever the item changed in this database (a line's status), which is what
makes a re-run after a crash do each item once (``ocs.customers.orders``). ``external_id`` is the
client's own key (TMF622 ``externalId``): unique, so a re-submitted order finds the first one.

``deposits`` is the outbox of deposits a credit class requires (``config/credit_classes.toml``
``deposit``): written with the order that first gives the customer a postpaid line (``order_id``),
or with the line row when the operator adds it directly (``line_id``, ``ocs.customers.offers``), ``pending``
until the billing wing invoices it (and marks it ``invoiced``, with the invoice's id), held then,
and ``credited`` back (or ``cancelled`` if never invoiced) at termination (``ocs.billing.deposits``).
One per customer and credit class, so a re-run or a second order never asks for it twice. Amounts
are integer micros.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Integer, String, Table, Text, UniqueConstraint

from ocs.db.schema import metadata

ID_LENGTH = 64  # balance account ids (ocs.db.customers)

product_orders = Table(
    "product_orders",
    metadata,
    Column("order_id", String(ID_LENGTH), primary_key=True),
    Column("external_id", String(ID_LENGTH), nullable=True, unique=True),
    Column("customer_id", String(ID_LENGTH), ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),  # TMF622 ProductOrderStateType
    Column("request", JSON, nullable=False),  # the order as submitted: a re-submission must match it
    Column("failure", Text, nullable=True),
    Column("created_at", DateTime, nullable=False),
    Column("completed_at", DateTime, nullable=True),
)

product_order_items = Table(
    "product_order_items",
    metadata,
    Column("order_id", String(ID_LENGTH), ForeignKey("product_orders.order_id"), primary_key=True),
    Column("item_id", String(16), primary_key=True),
    Column("position", Integer, nullable=False),  # fulfilment order
    Column("action", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("line_id", String(ID_LENGTH), nullable=True, index=True),  # the line it makes or acts on (bill facts)
    Column("payload", JSON, nullable=False),  # the item as submitted (its line ids assigned)
    Column("failure", Text, nullable=True),
    Column("completed_at", DateTime, nullable=True),
)

deposits = Table(
    "deposits",
    metadata,
    Column("deposit_id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String(ID_LENGTH), ForeignKey("customers.customer_id"), nullable=False),
    Column("order_id", String(ID_LENGTH), ForeignKey("product_orders.order_id"), nullable=True),
    Column("line_id", String(ID_LENGTH), nullable=True),  # a line added directly, not by an order
    Column("credit_class", String(8), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("state", String(16), nullable=False, index=True),  # pending | invoiced | credited | cancelled
    Column("invoice_id", String(ID_LENGTH), nullable=True),  # the invoice that charged it (ocs.billing.deposits)
    Column("created_at", DateTime, nullable=False),
    UniqueConstraint("customer_id", "credit_class"),
)

ORDER_TABLES = (product_orders, product_order_items, deposits)
