"""Alembic's environment for the business database: migrations run on the connection the caller
gives (``ocs.db.engine.migrate``), inside its transaction; never from a URL of their own."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from ocs.db import audit, customers, interactions, tokens
from ocs.db import bill_run as bill_run_tables
from ocs.db import billing as billing_tables
from ocs.db import dunning as dunning_tables
from ocs.db import loyalty as loyalty_tables
from ocs.db import loyalty_scores as loyalty_score_tables
from ocs.db import orders as order_tables
from ocs.db import usage as usage_tables
from ocs.db.schema import metadata

# Any number that is ours alone: PostgreSQL advisory locks are one namespace per database.
MIGRATION_LOCK_KEY = 0x0C5_D8_01


def run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":  # servers starting together migrate one at a time
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


assert audit.audit_trail.metadata is tokens.api_tokens.metadata is metadata  # every table is known
assert all(table.metadata is metadata for table in customers.CUSTOMER_TABLES)
assert all(table.metadata is metadata for table in interactions.INTERACTION_TABLES)
assert all(table.metadata is metadata for table in order_tables.ORDER_TABLES)
assert all(table.metadata is metadata for table in usage_tables.USAGE_TABLES)
assert all(table.metadata is metadata for table in billing_tables.BILLING_TABLES)
assert all(table.metadata is metadata for table in bill_run_tables.BILL_RUN_TABLES)
assert all(table.metadata is metadata for table in dunning_tables.DUNNING_TABLES)
assert all(table.metadata is metadata for table in loyalty_tables.LOYALTY_TABLES)
assert all(table.metadata is metadata for table in loyalty_score_tables.LOYALTY_SCORE_TABLES)
run(context.config.attributes["connection"])
