"""The business database's one ``MetaData``; every wing's tables are defined against it.

The naming convention gives every constraint and index a predictable name, so an Alembic
migration can drop or alter it by name on PostgreSQL and on SQLite alike (SQLAlchemy documents
this as the way to make migrations portable). Times are stored as naive UTC (``utc_naive``):
SQLite has no time zone type, and one rule for both databases keeps comparisons exact.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utc_naive(moment: datetime) -> datetime:
    """``moment`` as the naive UTC value the columns hold (a naive input is taken as UTC already)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo is not None else moment


def utc_aware(stored: datetime) -> datetime:
    """A stored (naive UTC) value as an aware datetime."""
    return stored.replace(tzinfo=UTC) if stored.tzinfo is None else stored.astimezone(UTC)
