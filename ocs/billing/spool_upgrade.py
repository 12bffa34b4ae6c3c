"""The upgrade from the spool file of older servers into the business database.

Theory of operation: servers before migration 0006 kept the usage records in a SQLite file of
their own (``[spool] path``, ``data/spool.sqlite3`` by default). At startup, once the business
database is migrated, ``import_old_spool`` copies every record of that file, if there is one,
into ``usage_records`` (``ocs.db.usage``), ``COPY_BATCH`` rows per transaction in the file's own
order, with their export marks, each insert skipping a record already stored. Then it renames
the file to ``<name>.migrated`` (kept for the operator to delete), and logs what it did.

A crash (or a full disk) part way leaves the file where it was: the next start copies it again,
and the rows already copied are skipped by ``record_id``, so each record is stored once. The
file's schema may be any of the old spool's (1: no export mark; 2: no Service-Identifier; 3):
a column it lacks is copied as NULL. While a file waits to be copied, the offline commands that
read usage refuse to run (``pending_upgrade``): they would report from half the records.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db import usage
from ocs.db.engine import DatabaseUnavailable

log = structlog.get_logger("ocs.billing.spool_upgrade")

COPY_BATCH = 5_000  # rows per transaction: one page read from the file, one insert
MIGRATED_SUFFIX = ".migrated"
OPTIONAL_COLUMNS = ("exported_at", "service_identifier", "line_micros", "pools")  # old schemas 2, 3; the DB's 0008
_REQUIRED = tuple(name for name in usage.STORED_COLUMNS if name not in OPTIONAL_COLUMNS)


def pending_upgrade(path: Path) -> bool:
    """Whether an old spool file at ``path`` still waits to be copied in by a server start."""
    return path.is_file()


def _columns_of(connection: sqlite3.Connection) -> tuple[str, ...] | None:
    """The columns to copy from the old file (``None``: it has no usage table)."""
    present = {str(row[1]) for row in connection.execute("PRAGMA table_info(usage_records)")}
    if not present:
        return None
    missing = [name for name in _REQUIRED if name not in present]
    if missing:
        raise ValueError(f"spool file: usage_records lacks the column(s) {', '.join(missing)}")
    return (*_REQUIRED, *(name for name in OPTIONAL_COLUMNS if name in present))


def _page(connection: sqlite3.Connection, columns: tuple[str, ...], after: int) -> list[tuple[object, ...]]:
    sql = f"SELECT rowid, {', '.join(columns)} FROM usage_records WHERE rowid > ? ORDER BY rowid LIMIT ?"
    return connection.execute(sql, (after, COPY_BATCH)).fetchall()


async def import_old_spool(engine: AsyncEngine, path: Path) -> int:
    """Copy the records of the old spool file at ``path`` (if any) into ``engine``'s database,
    then rename the file; returns how many were new there. ``DatabaseUnavailable`` (one line: the
    server does not start) when the file cannot be read or the rows cannot be stored."""
    try:
        return await _import(engine, path)
    except (OSError, sqlite3.Error, ValueError, SQLAlchemyError) as error:
        raise DatabaseUnavailable(f"spool file {path}: {type(error).__name__}: {error}") from None


async def _import(engine: AsyncEngine, path: Path) -> int:
    if not pending_upgrade(path):
        return 0
    # Not read-only: closing the last connection checkpoints a WAL file left beside it into the
    # file itself, so the renamed file is whole.
    connection = await asyncio.to_thread(sqlite3.connect, path, check_same_thread=False)
    copied = read = 0
    try:
        columns = await asyncio.to_thread(_columns_of, connection)
        after = 0
        while columns is not None:
            page = await asyncio.to_thread(_page, connection, columns, after)
            if not page:
                break
            rows = [{name: row[1 + index] for index, name in enumerate(columns)} for row in page]
            for row in rows:
                for name in OPTIONAL_COLUMNS:
                    row.setdefault(name, None)
            async with engine.begin() as database:
                copied += await usage.store_records(database, rows)
            read += len(page)
            last_rowid = page[-1][0]
            assert isinstance(last_rowid, int)
            after = last_rowid
    finally:
        await asyncio.to_thread(connection.close)
    target = path.with_name(path.name + MIGRATED_SUFFIX)
    path.rename(target)
    for suffix in ("-wal", "-shm"):  # normally gone with the last connection
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).rename(target.with_name(target.name + suffix))
    log.info("spool_file_migrated", path=str(path), renamed_to=str(target), records=read, new_records=copied)
    return copied
