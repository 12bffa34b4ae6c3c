"""How fast the spool writer moves usage records from Redis into the database, before and after
the spool moved into the business database (issue 14's prerequisite).

Theory of operation: one private embedded Redis (append-only file on, as in production) and
SQLite files in a temporary directory. Each round charges ``RECORDS`` SMS events (one usage record
each) spread over ``HIERARCHIES`` prepaid accounts, then times one ``Spool.drain_once`` of them
all with the server's batch size (``[spool] batch_size``, 500). Rounds alternate between:

- baseline: the old spool, as ``git show main:ocs/billing/spool.py`` wrote it: its own SQLite file,
  raw aiosqlite, ``INSERT OR IGNORE`` by ``executemany`` in ``BEGIN IMMEDIATE``/``COMMIT``,
  ``synchronous=FULL``, the old table and indexes;
- new: the business database through SQLAlchemy Core (``ocs.db.usage.store_records``: ``INSERT
  ... ON CONFLICT DO NOTHING RETURNING``), the table of migration 0006, ``synchronous=FULL``.

Both go through the same ``drain_once`` (the Redis reads and acknowledgements are the same code);
only the insert differs. The median of ``ROUNDS`` rounds of each is reported (the machine's two
cores are shared, and a commit's fsync time varies). Then the cost of ``synchronous=FULL`` for
the business database's other writers: small one-row transactions per second with FULL and with NORMAL, in WAL mode.

Target: the new writer at least 0.8 times the baseline's records per second. The last line is
``RESULT records_per_s=<n> baseline_records_per_s=<n> ratio=<x> small_commits_per_s_full=<n>
small_commits_per_s_normal=<n>``.

Run from the project root: ``.venv/bin/python bench/spool.py`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this directory comes first on sys.path, and bench/balance.py would then shadow
# the balance package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import aiosqlite
from sqlalchemy import text

from balance.embedded import EmbeddedRedis
from balance.store import BalanceStore
from balance.types import Account, Bucket, BucketKind, ChargeItem, ChargeRequest, Outcome, Tariff, Unit
from ocs.billing.spool import Spool
from ocs.db.engine import make_engine, open_database, sqlite_url

RECORDS = 20_000
HIERARCHIES = 40
ROUNDS = 5
BATCH_SIZE = 500  # [spool] batch_size's default (ocs.config)
SMALL_COMMITS = 300
NOW = 1_700_000_000
SMS = Tariff(price_micros=1_000)

OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
    record_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, session_id TEXT NOT NULL,
    request_number INTEGER NOT NULL, rating_group INTEGER NOT NULL, service TEXT NOT NULL,
    unit TEXT NOT NULL, units INTEGER NOT NULL, micros INTEGER NOT NULL, payment_type TEXT NOT NULL,
    at_seconds INTEGER NOT NULL, exported_at INTEGER, service_identifier INTEGER
);
CREATE INDEX IF NOT EXISTS usage_records_by_time ON usage_records (at_seconds);
CREATE INDEX IF NOT EXISTS usage_records_by_account ON usage_records (account_id, at_seconds);
CREATE INDEX IF NOT EXISTS usage_records_exported ON usage_records (at_seconds) WHERE exported_at IS NOT NULL;
"""
OLD_INSERT = (
    "INSERT OR IGNORE INTO usage_records (record_id, account_id, session_id, request_number, rating_group,"
    " service, unit, units, micros, payment_type, at_seconds, service_identifier)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
COLUMNS = (
    "record_id",
    "account_id",
    "session_id",
    "request_number",
    "rating_group",
    "service",
    "unit",
    "units",
    "micros",
    "payment_type",
    "at_seconds",
    "service_identifier",
)


class OldSpool(Spool):
    """The same writer with the old insert: raw aiosqlite on the old spool file."""

    def __init__(self, connection: aiosqlite.Connection, spool: Spool) -> None:
        super().__init__(spool.engine)
        self._old = connection

    async def _insert(self, rows: list[dict[str, object]]) -> int:
        connection = self._old
        await connection.execute("BEGIN IMMEDIATE")
        cursor = await connection.executemany(OLD_INSERT, [tuple(row[name] for name in COLUMNS) for row in rows])
        changed = cursor.rowcount
        await cursor.close()
        await connection.execute("COMMIT")
        return changed


async def open_old(path: Path) -> aiosqlite.Connection:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.executescript(OLD_SCHEMA)
    connection = await aiosqlite.connect(path, isolation_level=None)
    await connection.execute("PRAGMA synchronous=FULL")
    return connection


async def charge_round(store: BalanceStore, round_number: int) -> None:
    item = ChargeItem(1, "sms", Unit.EVENTS, SMS, used_units=1)
    for start in range(0, RECORDS, 500):
        requests = [
            ChargeRequest(
                f"bench-{number % HIERARCHIES}", f"r{round_number}-{number}", 0, (item,), now_seconds=NOW, event=True
            )
            for number in range(start, min(start + 500, RECORDS))
        ]
        results = await asyncio.gather(*(store.charge(request) for request in requests))
        assert all(result.outcome is Outcome.OK for result in results)


async def timed_drain(spool: Spool, store: BalanceStore) -> float:
    started = time.perf_counter()
    stored = await spool.drain_once(store, batch_size=BATCH_SIZE)
    elapsed = time.perf_counter() - started
    assert stored == RECORDS, stored
    return RECORDS / elapsed


async def small_commits_per_second(directory: Path, synchronous: str) -> float:
    engine = make_engine(sqlite_url(directory))
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT)"))
        started = time.perf_counter()
        for number in range(SMALL_COMMITS):
            async with engine.begin() as connection:
                await connection.execute(text(f"PRAGMA synchronous={synchronous}"))
                await connection.execute(text("INSERT INTO notes (body) VALUES (:body)"), {"body": f"note {number}"})
        return SMALL_COMMITS / (time.perf_counter() - started)
    finally:
        await engine.dispose()


async def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as directory, EmbeddedRedis(Path(directory) / "redis", port=0) as server:
        print(f"redis-server {server.server_version} (private), {RECORDS} records in {HIERARCHIES} hierarchies")
        store = await BalanceStore.connect(server.url, pipelined=True)
        engine = await open_database(sqlite_url(Path(directory) / "new"))
        old = await open_old(Path(directory) / "spool.sqlite3")
        try:
            for index in range(HIERARCHIES):
                account = Account(f"bench-{index}", buckets=(Bucket(1, BucketKind.MAIN, 10**15),))
                assert (await store.provision(account)).outcome is Outcome.OK
            new_spool = Spool(engine)
            old_spool = OldSpool(old, new_spool)
            baseline: list[float] = []
            new: list[float] = []
            for round_number in range(2 * ROUNDS):
                await charge_round(store, round_number)
                spool, figures = (old_spool, baseline) if round_number % 2 == 0 else (new_spool, new)
                figures.append(await timed_drain(spool, store))
                print(
                    f"round {round_number}: {'baseline' if spool is old_spool else 'new'} {figures[-1]:,.0f} records/s"
                )
        finally:
            await old.close()
            await engine.dispose()
            await store.close()
        full = await small_commits_per_second(Path(directory) / "small", "FULL")
        normal = await small_commits_per_second(Path(directory) / "small", "NORMAL")
    best_new, best_baseline = statistics.median(new), statistics.median(baseline)
    print(f"one-row transactions: {full:,.0f}/s with synchronous=FULL, {normal:,.0f}/s with NORMAL")
    print(
        f"RESULT records_per_s={best_new:.0f} baseline_records_per_s={best_baseline:.0f}"
        f" ratio={best_new / best_baseline:.2f} small_commits_per_s_full={full:.0f}"
        f" small_commits_per_s_normal={normal:.0f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
