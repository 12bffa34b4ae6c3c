"""Whether the migrations make a wing's tables as its module defines them (Alembic's autogenerate
comparison, limited to the tables named)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db.schema import metadata


async def migration_differences(engine: AsyncEngine, table_names: Iterable[str]) -> list[Any]:
    """What differs between the migrated database and the table definitions, for these tables."""
    names = set(table_names)

    def ours(item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        return (name if kind == "table" else item.table.name) in names

    def differences(connection: Connection) -> list[Any]:
        options = {"compare_type": True, "include_object": ours}
        return list(compare_metadata(MigrationContext.configure(connection, opts=options), metadata))

    async with engine.connect() as connection:
        return await connection.run_sync(differences)
