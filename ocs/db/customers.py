"""The customer side's tables: parties, customers, billing accounts, company nodes, lines and
their identities (the queries are in ``ocs.customers.records``, which turns rows into values).

Theory of operation: who the customer is lives here, money lives in Redis (DESIGN.md "The
customer side"). A party (TMF632) is an individual or an organization; a customer (TMF629) is the
party that pays, with its status and credit profile. An organization's customer has a tree of
``customer_nodes`` (the company at the root, branches and departments below, ``parent_node_id``);
a node with money is also an engine account (``account_id``). A line (``lines``) is an engine
account whose id is ``line_id``. Its identities are rows of ``line_identities``, whose primary key
(kind, value) makes an MSISDN, IMSI or SIP URI belong to one line only.

Two columns make the database and Redis agree after a crash: ``lines.status`` is
``provisioning`` from the moment the row is written until its engine account exists, and
``customer_nodes.account_state`` likewise for a node's pool; the startup pass finishes every row
left so (``ocs.customers.service``). A lifecycle change is a ``lifecycle_steps`` row until every
line and engine account under it has its new status (``ocs.customers.lifecycle``); a line keeps
its own status (``own_status``) apart from the effective one (``status``). Money here is integer
micros; times are naive UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    false,
)

from ocs.db.schema import metadata

ID_LENGTH = 64  # balance account ids: at most 64 characters (balance.keys)

parties = Table(
    "parties",
    metadata,
    Column("party_id", String(ID_LENGTH), primary_key=True),
    Column("kind", String(16), nullable=False),  # individual | organization
    Column("given_name", String(256), nullable=True),
    Column("family_name", String(256), nullable=True),
    Column("birth_date", Date, nullable=True),
    Column("organization_name", String(256), nullable=True),
    Column("registration_number", String(64), nullable=True),
    Column("document_type", String(32), nullable=True),
    Column("document_number", String(32), nullable=True),
    Column("document_country", String(2), nullable=True),
    Column("contact_media", JSON, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("customer_id", String(ID_LENGTH), primary_key=True),
    Column("party_id", String(ID_LENGTH), ForeignKey("parties.party_id"), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("credit_score", Integer, nullable=True),
    Column("credit_class", String(8), nullable=True),
    Column("segment", String(32), nullable=True),  # free string (loyalty, operator): dunning exemptions (0009)
    # True: an operator set the segment by hand and the scoring leaves it (0017, ocs.loyalty.scoring)
    Column("segment_pinned", Boolean, nullable=False, server_default=false()),
    Column("created_at", DateTime, nullable=False, index=True),
)

customer_nodes = Table(
    "customer_nodes",
    metadata,
    Column("node_id", String(ID_LENGTH), primary_key=True),
    Column("customer_id", String(ID_LENGTH), ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("parent_node_id", String(ID_LENGTH), ForeignKey("customer_nodes.node_id"), nullable=True),
    Column("name", String(256), nullable=False),
    Column("kind", String(16), nullable=False),  # company | branch | department | cost_centre
    Column("account_id", String(ID_LENGTH), nullable=True, unique=True),
    Column("engine_parent_id", String(ID_LENGTH), nullable=True),
    Column("account_state", String(16), nullable=True),  # None (no money) | provisioning | active
    Column("payment_type", String(16), nullable=True),
    Column("currency", String(3), nullable=True),
    Column("credit_limit_micros", BigInteger, nullable=True),
    Column("cap_micros", BigInteger, nullable=True),
    Column("status", String(16), nullable=False, server_default="active"),  # the node's own (0005)
    Column("created_at", DateTime, nullable=False),
)

billing_accounts = Table(
    "billing_accounts",
    metadata,
    Column("billing_account_id", String(ID_LENGTH), primary_key=True),
    Column("customer_id", String(ID_LENGTH), ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("node_id", String(ID_LENGTH), ForeignKey("customer_nodes.node_id"), nullable=True, unique=True),
    Column("currency", String(3), nullable=False),
    Column("bill_cycle_day", Integer, nullable=False),
    Column("payment_method", String(32), nullable=False),
    Column("paid_by_parent", Boolean, nullable=False),
    Column("created_at", DateTime, nullable=False),
)

lines = Table(
    "lines",
    metadata,
    Column("line_id", String(ID_LENGTH), primary_key=True),  # the engine account id
    Column("customer_id", String(ID_LENGTH), ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("node_id", String(ID_LENGTH), ForeignKey("customer_nodes.node_id"), nullable=True, index=True),
    Column("name", String(256), nullable=False),
    Column("network", String(16), nullable=False),  # mobile | fixed
    Column("payment_type", String(16), nullable=False),  # prepaid | postpaid
    Column("plan", String(64), nullable=False),
    Column("credit_limit_micros", BigInteger, nullable=False),
    Column("cap_micros", BigInteger, nullable=False),
    Column("engine_parent_id", String(ID_LENGTH), nullable=True),
    Column("status", String(16), nullable=False, index=True),  # effective: what the engine applies
    Column("own_status", String(16), nullable=False, server_default="active"),  # the line's own (0005)
    Column("created_at", DateTime, nullable=False),
)

line_identities = Table(
    "line_identities",
    metadata,
    Column("kind", String(8), primary_key=True),  # msisdn | imsi | sip
    Column("value", String(256), primary_key=True),
    Column("line_id", String(ID_LENGTH), ForeignKey("lines.line_id"), nullable=False, index=True),
)

# A lifecycle change of a customer, a node or a line, recorded before any line or engine account
# is touched and marked finished after the last one (``ocs.customers.lifecycle``): the startup
# pass finishes every row left unfinished.
lifecycle_steps = Table(
    "lifecycle_steps",
    metadata,
    Column("step_id", Integer, primary_key=True, autoincrement=True),
    Column("entity_kind", String(16), nullable=False),  # customer | node | line
    Column("entity_id", String(ID_LENGTH), nullable=False),
    Column("customer_id", String(ID_LENGTH), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("reason", String(256), nullable=False),
    Column("reason_category", String(16), nullable=True),
    Column("author", String(256), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("finished_at", DateTime, nullable=True, index=True),
)

CUSTOMER_TABLES = (parties, customers, customer_nodes, billing_accounts, lines, line_identities, lifecycle_steps)
