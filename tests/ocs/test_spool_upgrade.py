"""The upgrade from an older server's spool file: its records copied into the business database
once, then the file renamed; refused offline while it waits.

The files are made as the old code made them: ``OLD_SCHEMA`` is the SCHEMA of ocs/billing/spool.py
before the records moved (schema 3), and ``old_spool`` writes the schemas 1 and 2 before it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.billing import spool_upgrade
from ocs.billing.spool import Spool
from ocs.billing.spool_upgrade import MIGRATED_SUFFIX, import_old_spool, pending_upgrade
from ocs.db import usage
from ocs.db.engine import DatabaseUnavailable, open_database, sqlite_url

NOW = 1_700_000_000

OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
    record_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    request_number INTEGER NOT NULL,
    rating_group INTEGER NOT NULL,
    service TEXT NOT NULL,
    unit TEXT NOT NULL,
    units INTEGER NOT NULL,
    micros INTEGER NOT NULL,
    payment_type TEXT NOT NULL,
    at_seconds INTEGER NOT NULL,
    exported_at INTEGER,
    service_identifier INTEGER
);
CREATE INDEX IF NOT EXISTS usage_records_by_time ON usage_records (at_seconds);
CREATE INDEX IF NOT EXISTS usage_records_by_account ON usage_records (account_id, at_seconds);
CREATE INDEX IF NOT EXISTS usage_records_exported ON usage_records (at_seconds) WHERE exported_at IS NOT NULL;
"""
OLD_INSERT = (
    "INSERT OR IGNORE INTO usage_records (record_id, account_id, session_id, request_number, rating_group,"
    " service, unit, units, micros, payment_type, at_seconds, service_identifier, exported_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def current_spool(path: Path, count: int) -> list[str]:
    """A schema-3 spool file (WAL, as the old server kept it) with ``count`` records; every
    third exported, every fifth naming a Service-Identifier; returns the record ids."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.executescript(OLD_SCHEMA + "PRAGMA user_version=3;")
    rows = [
        (
            f"s-{index}|0|1",
            f"acct-{index % 7}",
            f"s-{index}",
            0,
            1,
            "sms",
            "events",
            1,
            1_000 + index,
            "postpaid" if index % 2 else "prepaid",
            NOW + index,
            (index if index % 5 == 0 else None),
            (NOW if index % 3 == 0 else None),
        )
        for index in range(count)
    ]
    connection.executemany(OLD_INSERT, rows)
    connection.close()
    return [row[0] for row in rows]


def old_spool(path: Path, version: int) -> None:
    """A spool file with one record, as the version of schema ``version`` (1 or 2) left it."""
    exported_at = ", exported_at INTEGER" if version == 2 else ""
    with sqlite3.connect(path) as connection:
        connection.executescript(
            "CREATE TABLE usage_records (record_id TEXT PRIMARY KEY, account_id TEXT NOT NULL,"
            " session_id TEXT NOT NULL, request_number INTEGER NOT NULL, rating_group INTEGER NOT NULL,"
            " service TEXT NOT NULL, unit TEXT NOT NULL, units INTEGER NOT NULL, micros INTEGER NOT NULL,"
            f" payment_type TEXT NOT NULL, at_seconds INTEGER NOT NULL{exported_at});"
            "INSERT INTO usage_records (record_id, account_id, session_id, request_number, rating_group, service,"
            " unit, units, micros, payment_type, at_seconds)"
            f" VALUES ('s|0|1', 'kay', 's', 0, 1, 'sms', 'events', 1, 5, 'prepaid', {NOW});"
            f"PRAGMA user_version={version};"
        )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    made = await open_database(sqlite_url(tmp_path))
    try:
        yield made
    finally:
        await made.dispose()


async def stored(engine: AsyncEngine) -> dict[str, tuple[int, int | None, int | None]]:
    """record id -> (micros, exported_at, service_identifier) of every stored record."""
    async with engine.connect() as connection:
        page = await usage.export_page(
            connection, since_seconds=None, until_seconds=None, account_id=None, after=None, limit=1_000_000
        )
        marks = await _export_marks(connection)
    return {record.record_id: (record.micros, marks[record.record_id], record.service_identifier) for record, _ in page}


async def _export_marks(connection: AsyncConnection) -> dict[str, int | None]:
    table = usage.usage_records.c
    return {str(row[0]): row[1] for row in await connection.execute(select(table.record_id, table.exported_at))}


async def test_an_old_spool_file_is_copied_in_once_and_renamed(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spool.sqlite3"
    ids = current_spool(path, 23)
    monkeypatch.setattr(spool_upgrade, "COPY_BATCH", 5)  # several transactions

    assert await import_old_spool(engine, path) == 23

    records = await stored(engine)
    assert sorted(records) == sorted(ids)
    assert records["s-0|0|1"] == (1_000, NOW, 0) and records["s-1|0|1"] == (1_001, None, None)
    assert records["s-10|0|1"] == (1_010, None, 10) and records["s-9|0|1"] == (1_009, NOW, None)
    assert not path.exists() and not pending_upgrade(path)
    migrated = path.with_name(path.name + MIGRATED_SUFFIX)
    assert migrated.is_file() and not path.with_name(path.name + "-wal").exists()
    with sqlite3.connect(migrated) as connection:  # the old file is whole: kept for the operator
        assert connection.execute("SELECT COUNT(*) FROM usage_records").fetchone() == (23,)
    assert await import_old_spool(engine, path) == 0  # nothing left to copy
    assert await Spool(engine).totals_by_account() == {
        f"acct-{account}": sum(1_000 + index for index in range(23) if index % 7 == account) for account in range(7)
    }


async def test_a_copy_cut_short_is_finished_by_the_next_start_each_record_once(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "spool.sqlite3"
    ids = current_spool(path, 12)
    monkeypatch.setattr(spool_upgrade, "COPY_BATCH", 4)
    real_store = usage.store_records
    batches: list[int] = []

    async def disk_full_at_the_third_batch(connection: AsyncConnection, rows: list[dict[str, object]]) -> int:
        batches.append(len(rows))
        if len(batches) == 3:
            raise OSError("disk full")
        return await real_store(connection, rows)

    monkeypatch.setattr(usage, "store_records", disk_full_at_the_third_batch)
    with pytest.raises(DatabaseUnavailable, match=r"spool file .*disk full"):
        await import_old_spool(engine, path)
    assert len(await stored(engine)) == 8 and pending_upgrade(path)  # two batches in; the file stays

    monkeypatch.setattr(usage, "store_records", real_store)
    assert await import_old_spool(engine, path) == 4  # the first eight are skipped by record_id
    assert sorted(await stored(engine)) == sorted(ids)
    assert not pending_upgrade(path)


@pytest.mark.parametrize("version", [1, 2])
async def test_a_spool_file_of_an_older_schema_is_copied_with_its_missing_columns_null(
    engine: AsyncEngine, tmp_path: Path, version: int
) -> None:
    path = tmp_path / "spool.sqlite3"
    old_spool(path, version)
    assert await import_old_spool(engine, path) == 1
    assert await stored(engine) == {"s|0|1": (5, None, None)}


async def test_a_file_that_is_no_spool_stops_the_start_with_one_line(engine: AsyncEngine, tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    path.write_text("not a database, but long enough to be read as one" * 40)
    with pytest.raises(DatabaseUnavailable, match=r"spool file .*spool.sqlite3: DatabaseError"):
        await import_old_spool(engine, path)
    assert pending_upgrade(path)  # left as it was
