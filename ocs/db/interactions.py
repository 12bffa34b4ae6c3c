"""The interactions' tables: notes on a customer, trouble tickets with their history, and the
history of every customer and line status (the queries are in ``ocs.customers.interactions`` and
``ocs.customers.reports``).

Theory of operation: rows here are only ever inserted, except a ticket's current ``status`` (and
``updated_at``), which changes in the same transaction as the history row that records the
change, so the history and the ticket never disagree. ``status_changes`` holds one row per
status a customer or a line entered (the first one included: ``from_status`` NULL), with its
time, who made it and why (``reason_category``: ``voluntary``, ``collections``, ``fraud``,
``other``); the customer base report replays it. Times are naive UTC (``ocs.db.schema``).
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, ForeignKey, Integer, String, Table, Text

from ocs.db.customers import ID_LENGTH
from ocs.db.schema import metadata

customer_notes = Table(
    "customer_notes",
    metadata,
    Column("note_id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String(ID_LENGTH), ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("channel", String(16), nullable=False),  # phone | email | shop | web | other
    Column("text", Text, nullable=False),
    Column("author", String(256), nullable=False),  # the token's name
    Column("created_at", DateTime, nullable=False),
)

trouble_tickets = Table(
    "trouble_tickets",
    metadata,
    Column("ticket_id", String(ID_LENGTH), primary_key=True),
    Column("customer_id", String(ID_LENGTH), ForeignKey("customers.customer_id"), nullable=False, index=True),
    Column("line_id", String(ID_LENGTH), ForeignKey("lines.line_id"), nullable=True),
    Column("name", String(256), nullable=False),
    Column("description", Text, nullable=False),
    Column("ticket_type", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("created_by", String(256), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
)

trouble_ticket_history = Table(
    "trouble_ticket_history",
    metadata,
    Column("record_id", Integer, primary_key=True, autoincrement=True),
    Column("ticket_id", String(ID_LENGTH), ForeignKey("trouble_tickets.ticket_id"), nullable=False, index=True),
    Column("from_status", String(16), nullable=True),  # NULL: the ticket was opened
    Column("to_status", String(16), nullable=False),
    Column("author", String(256), nullable=False),
    Column("reason", Text, nullable=False),
    Column("changed_at", DateTime, nullable=False),
)

status_changes = Table(
    "status_changes",
    metadata,
    Column("record_id", Integer, primary_key=True, autoincrement=True),
    Column("entity_kind", String(16), nullable=False),  # customer | node | line | line_own
    Column("entity_id", String(ID_LENGTH), nullable=False, index=True),
    Column("customer_id", String(ID_LENGTH), nullable=False, index=True),
    Column("from_status", String(16), nullable=True),  # NULL: the entity was made with to_status
    Column("to_status", String(16), nullable=False),
    Column("reason_category", String(16), nullable=True),
    Column("reason", Text, nullable=False),
    Column("author", String(256), nullable=False),
    Column("changed_at", DateTime, nullable=False, index=True),
)

INTERACTION_TABLES = (customer_notes, trouble_tickets, trouble_ticket_history, status_changes)
