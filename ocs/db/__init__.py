"""The business database: SQLAlchemy Core tables, Alembic migrations, the engine from configuration.

Theory of operation: money lives in Redis; who may do what, and what was done, lives here (DESIGN.md
"The customer side"). One schema runs on SQLite (the default: one file in the data directory, no
server to run) and on PostgreSQL (several OCS hosts sharing one database), through SQLAlchemy Core
on its asyncio drivers (aiosqlite, asyncpg): no ORM and no session state, each query a function
beside its table, one transaction per business step.

- ``schema``: the one ``MetaData`` every table belongs to, with the constraint naming convention.
- ``tokens``: the API's bearer tokens (``api_tokens``), stored hashed.
- ``audit``: the audit trail of state-changing calls (``audit_trail``).
- ``engine``: the URL from ``[database] url`` (or the default file), the engine, and ``migrate``,
  which brings the schema to the newest Alembic revision (``migrations/``, shipped as package
  data); the server runs it at startup and the offline CLI before it touches the database.
"""
