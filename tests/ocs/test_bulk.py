"""``ocs.db.bulk.execute_many`` on SQLite (the driver's executemany) and PostgreSQL (Core): rows
written with dates, times and JSON read back through Core as they went in (the shared JSON object
of several rows too), and the rows an update changed summed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime
from pathlib import Path

import pytest
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db.bill_run import prepaid_rentals, statements
from ocs.db.bulk import execute_many, insert_of
from tests.ocs.postgres_support import business_database, postgresql_url

__all__ = ["postgresql_url"]


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, ("statements", "prepaid_rentals")) as made:
        yield made


async def test_rows_go_in_as_core_would_write_them_and_updates_count(engine: AsyncEngine) -> None:
    shared = {"lines": {"L1": {"usage": {}, "rentals": [1, 2]}}, "text": "ä €"}
    made = datetime(2026, 3, 1, 3, 0, 0)
    rows = [
        {
            "statement_id": f"ST-{index}",
            "billing_account_id": f"B{index}",
            "period_start": date(2026, 2, 1),
            "period_end": date(2026, 2, 28),
            "content": shared if index < 2 else {"other": index},
            "created_at": made.replace(microsecond=index),
        }
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
