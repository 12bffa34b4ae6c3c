"""``ocs.db.bulk.execute_many`` on SQLite (the driver's executemany) and PostgreSQL (Core): rows
written with dates, times and JSON read back through Core as they went in (the shared JSON object
of several rows too), and the rows an update changed summed."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db.bill_run import prepaid_rentals, statements
from ocs.db.bulk import day_of, execute_many, insert_of, rows_of_ids
from ocs.db.engine import DATABASE_FILE_NAME
from tests.ocs.postgres_support import business_database, postgresql_url

__all__ = ["postgresql_url"]


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, ("statements", "prepaid_rentals")) as made:
        yield made


def statement_row(index: int, content: object, created_at: datetime) -> dict[str, object]:
    return {
        "statement_id": f"ST-{index}",
        "billing_account_id": f"B{index}",
        "period_start": date(2026, 2, 1),
        "period_end": date(2026, 2, 28),
        "content": content,
        "created_at": created_at,
    }


async def test_rows_go_in_as_core_would_write_them_and_updates_count(engine: AsyncEngine) -> None:
    shared = {"lines": {"L1": {"usage": {}, "rentals": [1, 2]}}, "text": "ä €"}
    made = datetime(2026, 3, 1, 3, 0, 0)
    rows = [
        statement_row(index, shared if index < 2 else {"other": index}, made.replace(microsecond=index))
        for index in range(3)
    ]
    async with engine.begin() as connection:
        await execute_many(connection, insert_of(statements), rows)
        await execute_many(connection, insert_of(statements), [])
    async with engine.connect() as connection:
        found = [dict(row._mapping) for row in await connection.execute(select(statements).order_by("statement_id"))]
        later = await connection.execute(select(statements.c.statement_id).where(statements.c.created_at > made))
        assert sorted(row[0] for row in later) == ["ST-1", "ST-2"]  # times compare as Core writes them
    assert found == rows
    rental = {
        "line_id": "L1",
        "period_start": date(2026, 3, 1),
        "billing_account_id": "B1",
        "product": "p",
        "micros": 1,
        "policy": "restrict",
        "outcome": "ok",
        "debited_at": made,
    }
    renamed = (
        update(prepaid_rentals)
        .where(prepaid_rentals.c.line_id == bindparam("line"), prepaid_rentals.c.outcome == "ok")
        .values(outcome=bindparam("new"))
    )
    async with engine.begin() as connection:
        await execute_many(connection, insert_of(prepaid_rentals), [rental, {**rental, "line_id": "L2"}])
        changed = await execute_many(
            connection, renamed, [{"line": "L1", "new": "x"}, {"line": "L2", "new": "y"}, {"line": "L1", "new": "z"}]
        )
        if connection.dialect.name == "sqlite":
            assert changed == 2  # the third found L1 no longer "ok"
        outcomes = dict((await connection.execute(select(prepaid_rentals.c.line_id, prepaid_rentals.c.outcome))).all())
    assert outcomes == {"L1": "x", "L2": "y"}


STATEMENT_IDS = select(statements.c.statement_id, statements.c.created_at).order_by(statements.c.statement_id)


async def test_rows_of_ids_reads_the_rows_of_the_ids_as_a_reader(engine: AsyncEngine, tmp_path: Path) -> None:
    made = datetime(2026, 3, 1, 3, 0, 0)
    rows = [statement_row(index, {}, made) for index in range(3)]
    async with engine.begin() as connection:
        await execute_many(connection, insert_of(statements), rows)
    async with engine.connect() as connection:  # the read opens the transaction: a reader's
        found = await rows_of_ids(connection, STATEMENT_IDS, statements.c.billing_account_id, ["B2", "B0", "B9"])
        assert [row[0] for row in found] == ["ST-0", "ST-2"]
        assert {day_of(row[1]) for row in found} == {date(2026, 3, 1)}
        assert await rows_of_ids(connection, STATEMENT_IDS, statements.c.billing_account_id, []) == []
        if engine.dialect.name == "sqlite":  # another writer gets the lock at once: the read holds none
            other = sqlite3.connect(tmp_path / "business" / DATABASE_FILE_NAME, timeout=0)
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
            other.close()
