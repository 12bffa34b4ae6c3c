"""The usage spool: every committed usage record (CDR), moved from the Redis outboxes to SQLite.

Theory of operation: the money engine writes each usage record into its hierarchy's outbox (a
Redis list) in the same atomic call as the debit, and marks the hierarchy in ``ocs:outbox``.
One writer task (``Spool.run``) drains the outboxes: it reads the oldest records of each marked
hierarchy, inserts them into one SQLite table in one transaction per batch, commits, and only
then acknowledges (trims) exactly the records it read. So:

- a crash before the commit loses nothing: the records are still in Redis and are read again;
- a crash after the commit and before the acknowledgement re-reads records already stored;
  ``record_id`` is the table's primary key and the insert is ``INSERT OR IGNORE``, so each
  record is stored exactly once whatever the number of retries;
- a restart reopens the same file; the schema is created only if missing;
- a cancelled drain (shutdown) lets the batch in progress finish its commit and trims first.

A hierarchy whose outbox is found empty leaves the work list (the next charge with usage puts it
back), so a drain costs round trips per active hierarchy, not per hierarchy that ever had usage.

The acknowledgement trims the ``count`` oldest entries of a list that producers only append to,
so it removes exactly what was read, provided nobody else trims the same outbox: there must be
one writer per Redis (a lock keeps one ``Spool`` from draining twice at once; several
server processes must not each run a writer against the same Redis).

Durability: the acknowledgement deletes the only other copy of a record, so a commit must survive
a power loss. In WAL mode SQLite's ``synchronous=NORMAL`` "might roll back" a committed
transaction after a power loss; ``FULL`` syncs the WAL at every commit (https://sqlite.org/
pragma.html#pragma_synchronous). Batching makes that one sync per batch, not per record.

Money stays integer micros in the database; amounts in decimal are made on export (ocs/billing/cdr.py).

Retention: the spool grows by every record (about 0.87 MB/s in the soak of issue 17), so records
are deleted once they are both old (``at_seconds`` before now minus ``[spool] retention_seconds``)
and exported: ``ocs cdr export`` marks each record it wrote (``exported_at``, epoch seconds of its
first export; ``ExportMarker``) when its output is a regular file, after flushing and syncing
it; an export to standard output (a terminal, a pipe, /dev/null) marks nothing, since no copy it
made can be vouched for. Only exported records are ever
deleted: an export is the one other copy of a record. No bill run exists yet; when one does,
postpaid records must also wait until billed, and this condition gains that term. The server runs
``Spool.delete_exported`` every ``retention_interval_seconds``, in transactions of
``retention_batch_size`` rows through a partial index over exported records only (so the
records never exported are never scanned), each taking the spool's connection for milliseconds,
with the writer's batches free to run between them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, TypeVar

import aiosqlite
import structlog

from balance.store import BalanceStore
from balance.types import UsageRecord

log = structlog.get_logger("ocs.billing.spool")

SCHEMA_VERSION = 3  # PRAGMA user_version: bump with a migration when the table changes
# Wait this long for a lock held by another connection (an export reading while we write needs
# none in WAL mode; a checkpoint or a second writer might) before failing the batch.
BUSY_TIMEOUT_MILLISECONDS = 5_000
# Outboxes read (or trimmed) at once: one hierarchy's round trip is mostly waiting. The reads share
# the pipelined charging connection (balance/store.py), so a bounded number keeps a drain from
# putting hundreds of large replies between two charges.
CONCURRENT_REDIS_CALLS = 16
CLOSE_WAIT_SECONDS = 5.0  # how long close waits for the batch in progress (its Redis may be gone)

SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
    record_id TEXT PRIMARY KEY,          -- "<session>|<request number>|<service key>" (balance/keys.py)
    account_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    request_number INTEGER NOT NULL,
    rating_group INTEGER NOT NULL,
    service TEXT NOT NULL,
    unit TEXT NOT NULL,                  -- seconds | octets | events
    units INTEGER NOT NULL,
    micros INTEGER NOT NULL,             -- money in micro-units of the account currency
    payment_type TEXT NOT NULL,          -- prepaid | postpaid
    at_seconds INTEGER NOT NULL,         -- commit time, epoch seconds (UTC)
    exported_at INTEGER,                 -- first export, epoch seconds (NULL: never exported)
    service_identifier INTEGER           -- the MSCC's Service-Identifier (NULL: none named)
);
CREATE INDEX IF NOT EXISTS usage_records_by_time ON usage_records (at_seconds);
CREATE INDEX IF NOT EXISTS usage_records_by_account ON usage_records (account_id, at_seconds);
CREATE INDEX IF NOT EXISTS usage_records_exported ON usage_records (at_seconds) WHERE exported_at IS NOT NULL;
"""
# Schema 1 (before exports were marked) to 2; SCHEMA then adds the new index. Schema 2 to 3: records
# name their Service-Identifier apart (before, a pair was packed into rating_group); older rows
# keep NULL. ALTER TABLE ... ADD COLUMN changes no row (https://sqlite.org/lang_altertable.html).
MIGRATE_FROM_1 = "ALTER TABLE usage_records ADD COLUMN exported_at INTEGER"
MIGRATE_FROM_2 = "ALTER TABLE usage_records ADD COLUMN service_identifier INTEGER"
MARK_EXPORTED = "UPDATE usage_records SET exported_at = ? WHERE record_id = ? AND exported_at IS NULL"
# Exported and older than the cut: the partial index's rows only.
DELETE_EXPORTED = (
    "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records"
    " WHERE exported_at IS NOT NULL AND at_seconds < ? LIMIT ?)"
)
# The newest record per account; the (account_id, at_seconds) index answers it without the rows.
LAST_USAGE_QUERY = "SELECT account_id, MAX(at_seconds) FROM usage_records GROUP BY account_id"
MARK_BATCH = 1_000  # records an export marks per transaction, each after flushing its output

INSERT = (
    "INSERT OR IGNORE INTO usage_records (record_id, account_id, session_id, request_number, rating_group,"
    " service, unit, units, micros, payment_type, at_seconds, service_identifier)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)

Row = tuple[str, str, str, int, int, str, str, int, int, str, int, int | None]


def _row(record: UsageRecord) -> Row:
    return (
        record.record_id,
        record.account_id,
        record.session_id,
        record.request_number,
        record.rating_group,
        record.service,
        record.unit.value,
        record.units,
        record.micros,
        record.payment_type.value,
        record.at_seconds,
        record.service_identifier,
    )


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """What the metrics report about the writer (``Spool.stats``).

    ``lag_seconds`` bounds the age of any record not yet in the spool: every record committed
    to Redis before the start of the last drain that emptied every outbox is in the spool. Before
    the first such drain it counts from when the spool was opened, so a writer that never
    catches up (Redis down, disk full) shows a growing lag.
    """

    records_written: int  # new rows committed by this Spool since it was opened
    duplicates_ignored: int  # records read again after a lost acknowledgement, already stored
    backlog_records: int  # records the last drain found waiting in the outboxes
    last_drain_at: float  # epoch seconds when the last successful drain ended (0: none yet)
    last_drain_seconds: float  # how long it took
    lag_seconds: float


class Spool:
    """The SQLite spool of usage records; ``open`` it, ``run`` one writer task, ``close`` it."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._connection = connection
        self.path = path
        self._drain_lock = asyncio.Lock()  # two drains at once would trim the same records twice
        # One transaction at a time on the one connection: the writer's batches, retention's.
        self._transaction_lock = asyncio.Lock()
        self._batch: asyncio.Future[int] | None = None  # the batch being committed and acknowledged
        self._opened_at = time.time()
        self._caught_up_at = 0.0  # start of the last drain that emptied every outbox
        self._records_written = 0
        self._duplicates_ignored = 0
        self._backlog_records = 0
        self._last_drain_at = 0.0
        self._last_drain_seconds = 0.0

    @classmethod
    async def open(cls, path: Path) -> Spool:
        """Open (or create) the spool file; creating or upgrading the schema is idempotent."""
        path.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(prepare_file, path)
        # isolation_level=None: no implicit transactions; each batch says BEGIN and COMMIT itself.
        connection = await aiosqlite.connect(path, isolation_level=None)
        try:
            await connection.execute("PRAGMA synchronous=FULL")  # see the module docstring
            await connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MILLISECONDS}")
        except BaseException:
            await connection.close()
            raise
        return cls(connection, path)

    async def close(self) -> None:
        """Close the file, once the batch in progress (if any) has finished or timed out."""
        if self._batch is not None and not self._batch.done():
            await asyncio.wait({self._batch}, timeout=CLOSE_WAIT_SECONDS)
        await self._connection.close()

    # -- the writer --------------------------------------------------------------------------

    async def drain_once(self, store: BalanceStore, *, batch_size: int = 500) -> int:
        """Move every record now in the outboxes into the spool; returns how many were new.

        Each pass reads up to ``batch_size`` records from every hierarchy that still had a full
        batch; rows are committed (and then acknowledged) whenever ``batch_size`` of them are
        pending and at the end of each pass, so a hierarchy is never read again before what was
        read from it is acknowledged. Hierarchies found empty leave the work list.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        async with self._drain_lock:
            if self._batch is not None and not self._batch.done():
                await asyncio.wait({self._batch})  # left running by a cancelled drain
            started = time.time()
            roots = await store.outbox_roots()
            stored = read = 0
            pending: list[tuple[str, list[UsageRecord]]] = []
            empty: list[str] = []
            while roots:
                full: list[str] = []
                for chunk in _chunks(roots, CONCURRENT_REDIS_CALLS):
                    reads = await asyncio.gather(*(store.read_outbox(root, batch_size) for root in chunk))
                    for root, records in zip(chunk, reads, strict=True):
                        if not records:
                            empty.append(root)
                            continue
                        read += len(records)
                        pending.append((root, records))
                        if len(records) == batch_size:
                            full.append(root)
                    if sum(len(records) for _, records in pending) >= batch_size:
                        stored += await self._commit_batch(store, pending)
                        pending = []
                stored += await self._commit_batch(store, pending)
                pending = []
                roots = full
            for chunk in _chunks(empty, CONCURRENT_REDIS_CALLS):
                await asyncio.gather(*(store.prune_outbox_root(root) for root in chunk))
            finished = time.time()
            self._caught_up_at = started
            self._backlog_records = read
            self._last_drain_at = finished
            self._last_drain_seconds = finished - started
            return stored

    async def _commit_batch(self, store: BalanceStore, batch: list[tuple[str, list[UsageRecord]]]) -> int:
        if not batch:
            return 0
        # A batch runs to its end even when the drain is cancelled (at shutdown): an
        # acknowledgement abandoned in flight could land after the next drain has read the same
        # records, and two trims of one read would drop records that were never stored. The next
        # drain (and close) waits for it.
        self._batch = asyncio.ensure_future(self._store_and_acknowledge(store, batch))
        return await asyncio.shield(self._batch)

    async def _store_and_acknowledge(self, store: BalanceStore, batch: list[tuple[str, list[UsageRecord]]]) -> int:
        rows = [_row(record) for _, records in batch for record in records]
        stored = await self._insert(rows)
        self._records_written += stored
        self._duplicates_ignored += len(rows) - stored
        # Only now, with the rows committed, may Redis forget them. A failure here (Redis gone)
        # leaves them in the outbox: the next drain reads them again and the insert ignores them.
        for chunk in _chunks(batch, CONCURRENT_REDIS_CALLS):
            outcomes = await asyncio.gather(
                *(store.acknowledge_outbox(root, records) for root, records in chunk), return_exceptions=True
            )
            failure = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
            if failure is not None:
                raise failure
        return stored

    async def _insert(self, rows: list[Row]) -> int:
        """One transaction: insert the rows not already stored; returns how many were new."""
        # For executemany, rowcount sums the changes of every row; an ignored row changes none.
        # A failure before COMMIT returned leaves the rows only in Redis (_transaction). (If the
        # COMMIT itself went through, the rows are stored; they were not acknowledged, so the
        # next drain finds them and the insert ignores them.)
        return await self._transaction(INSERT, rows)

    async def _transaction(self, sql: str, rows: Sequence[Sequence[object]]) -> int:
        """``sql`` for each of ``rows`` in one transaction; returns the rows changed. Undone
        (ROLLBACK) if anything fails before COMMIT returns."""
        connection = self._connection
        async with self._transaction_lock:
            await connection.execute("BEGIN IMMEDIATE")
            try:
                cursor = await connection.executemany(sql, rows)
                changed = cursor.rowcount
                await cursor.close()
                await connection.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await connection.execute("ROLLBACK")
                raise
        return changed

    # -- retention (module docstring) -----------------------------------------------------------

    async def delete_exported(self, *, older_than_seconds: int, batch_size: int, now: float | None = None) -> int:
        """Delete the exported records committed more than ``older_than_seconds`` ago, in
        transactions of at most ``batch_size`` rows; returns how many were deleted."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        cut = int(time.time() if now is None else now) - older_than_seconds
        deleted = 0
        while True:
            changed = await self._transaction(DELETE_EXPORTED, [(cut, batch_size)])
            deleted += changed
            if changed < batch_size:
                return deleted
            await asyncio.sleep(0)  # the writer's batch, if one waits, goes next

    async def run(self, store: BalanceStore, *, batch_size: int, interval_seconds: float) -> None:
        """Drain every ``interval_seconds``, for ever; cancel the task to stop.

        A failed drain (Redis or the disk unavailable) is logged and retried at the next tick:
        nothing was acknowledged that is not committed, so retrying is always safe.
        """
        while True:
            try:
                await self.drain_once(store, batch_size=batch_size)  # progress: stats() and metrics
            except Exception:
                log.exception("spool_drain_failed")
            await asyncio.sleep(interval_seconds)

    # -- reading -------------------------------------------------------------------------------

    async def totals_by_account(self) -> dict[str, int]:
        """The sum of micros per account over every stored record (the audit's usage side)."""
        async with self._connection.execute(
            "SELECT account_id, SUM(micros) FROM usage_records GROUP BY account_id"
        ) as cursor:
            return {str(account_id): int(total) for account_id, total in await cursor.fetchall()}

    async def last_usage_by_account(self) -> dict[str, int]:
        """The time of each account's newest usage record, epoch seconds (the customer base
        report's prepaid inactivity, ocs/customers/reports.py); the (account_id, at_seconds)
        index answers it without reading the rows."""
        async with self._connection.execute(LAST_USAGE_QUERY) as cursor:
            return {str(account_id): int(newest) for account_id, newest in await cursor.fetchall()}

    async def count(self) -> int:
        async with self._connection.execute("SELECT COUNT(*) FROM usage_records") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row is not None else 0

    def stats(self, now: float | None = None) -> SpoolStats:
        now = time.time() if now is None else now
        since = self._caught_up_at or self._opened_at
        return SpoolStats(
            records_written=self._records_written,
            duplicates_ignored=self._duplicates_ignored,
            backlog_records=self._backlog_records,
            last_drain_at=self._last_drain_at,
            last_drain_seconds=self._last_drain_seconds,
            lag_seconds=max(0.0, now - since),
        )


T = TypeVar("T")


def read_last_usage(path: Path) -> dict[str, int]:
    """``Spool.last_usage_by_account`` of the spool file at ``path``, opened read-only with no
    server (``ocs report customers --data``); FileNotFoundError when there is none."""
    if not path.is_file():
        raise FileNotFoundError(f"no spool database at {path}")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = connection.execute(LAST_USAGE_QUERY).fetchall()
    finally:
        connection.close()
    return {str(account_id): int(newest) for account_id, newest in rows}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prepare_file(path: Path) -> None:
    """Create the spool's schema in ``path``, or upgrade an older one (``Spool.open`` and
    ``ExportMarker``); in WAL mode, so exports read while the writer writes."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MILLISECONDS / 1000)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        # The version is read inside the write transaction: a server and an export preparing the
        # same file at once upgrade it once. SCHEMA's statements carry no ";" but their ends.
        connection.execute("BEGIN IMMEDIATE")
        try:
            version = int(connection.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"spool schema version {version} is newer than this server's {SCHEMA_VERSION}")
            if version == 1:
                connection.execute(MIGRATE_FROM_1)
            if version in (1, 2):
                connection.execute(MIGRATE_FROM_2)
            for statement in SCHEMA.split(";") if version < SCHEMA_VERSION else ():
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    finally:
        connection.close()


class ExportMarker:
    """Marks the records an export writes as exported (``exported_at``), ``MARK_BATCH`` at a
    time, each batch only once ``out`` has been flushed and synced to disk, so a record is
    marked only once it is stored in the export. Only an ``out`` that is a regular file counts:
    a terminal, /dev/null, a pipe or a socket (standard output, mostly) keeps no copy we can
    vouch for, and marking would let the retention delete the only copy of a record; an export
    there marks nothing. Use as a context manager; ``finish`` marks the last batch, and leaving
    without it (the export failed) marks nothing more."""

    def __init__(self, path: Path, out: TextIO, now_seconds: int) -> None:
        prepare_file(path)  # a spool written before marking existed gains its column here
        self._connection = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MILLISECONDS / 1000)
        self._out = out
        self._now_seconds = now_seconds
        self._pending: list[tuple[int, str]] = []
        self.marking = _is_regular_file(out)

    def __enter__(self) -> ExportMarker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._connection.close()

    def add(self, record_id: str) -> None:
        if not self.marking:
            return
        self._pending.append((self._now_seconds, record_id))
        if len(self._pending) >= MARK_BATCH:
            self._mark()

    def finish(self) -> None:
        self._mark()

    def _mark(self) -> None:
        if not self._pending:
            return
        self._out.flush()
        os.fsync(self._out.fileno())  # a failure raises: the batch stays unmarked
        connection = self._connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.executemany(MARK_EXPORTED, self._pending)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        self._pending.clear()


def _is_regular_file(out: TextIO) -> bool:
    """Whether ``out`` writes to a regular file (``ExportMarker``): not a terminal, device, pipe,
    socket, or an in-memory stream without a descriptor."""
    try:
        return stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both of the first two
        return False
