"""The usage spool: every committed usage record (CDR), moved from the Redis outboxes to the
business database's ``usage_records`` table (``ocs.db.usage``).

Theory of operation: the money engine writes each usage record into its hierarchy's outbox (a
Redis list) in the same atomic call as the debit, and marks the hierarchy in ``ocs:outbox``.
One writer task (``Spool.run``) drains the outboxes: it reads the oldest records of each marked
hierarchy, inserts them into the table in one transaction per batch, commits, and only then
acknowledges (trims) exactly the records it read. So:

- a crash before the commit loses nothing: the records are still in Redis and are read again;
- a crash after the commit and before the acknowledgement re-reads records already stored;
  ``record_id`` is unique and the insert skips a stored one (``ON CONFLICT DO NOTHING``), so
  each record is stored exactly once whatever the number of retries;
- a restart finds the table where the migrations made it (``ocs.db.engine``);
- a cancelled drain (shutdown) lets the batch in progress finish its commit and trims first.

A hook (``StoredRecordsHook``, given by the process: the loyalty engine, ocs/loyalty/engine.py)
runs inside each batch's transaction with the rows that batch newly stored, so what it writes
(counters, rule applications) commits or rolls back with the records, and a batch read again
stores nothing new and so shows the hook nothing twice. It returns what to run after the commit
(the credits), which runs as soon as the batch has committed, before the acknowledgement; a
failure there is logged, not the writer's (the hook keeps its own record of what is left to do).
ocs/billing never imports the loyalty wing: the hook is a callable handed in.

The records live in the business database, SQLite by default or PostgreSQL, so the bill run can
mark them billed in the transaction that writes their invoice (``ocs.db.usage.mark_billed``). A
spool file of an older server (``[spool] path``) is copied in at startup
(``ocs.billing.spool_upgrade``).

A hierarchy whose outbox is found empty leaves the work list (the next charge with usage puts it
back), so a drain costs round trips per active hierarchy, not per hierarchy that ever had usage.

The acknowledgement trims the ``count`` oldest entries of a list that producers only append to,
so it removes exactly what was read, provided nobody else trims the same outbox: there must be
one writer per Redis (a lock keeps one ``Spool`` from draining twice at once; several
server processes must not each run a writer against the same Redis).

Durability: the acknowledgement deletes the only other copy of a record, so a commit must survive
a power loss. In WAL mode SQLite's ``synchronous=NORMAL`` "might roll back" a committed
transaction after a power loss; ``FULL`` syncs the WAL at every commit (https://sqlite.org/
pragma.html#pragma_synchronous), and the business database's engine sets it on every connection
(``ocs.db.engine``: a commit there is as often followed by something outside the database, an
acknowledgement, a Redis cut, a RAR). Batching makes that one sync per batch, not per record.
PostgreSQL's default ``synchronous_commit=on`` flushes the WAL before a commit returns.

Money stays integer micros in the database; amounts in decimal are made on export (ocs/billing/cdr.py).

Retention: the spool grows by every record (about 0.87 MB/s in the soak of issue 17), so records
are deleted once they are old (``at_seconds`` before now minus ``[spool] retention_seconds``),
exported, and, if postpaid, billed (``invoice_id`` set: the invoice is then their other copy):
``ocs cdr export`` marks each record it wrote (``exported_at``, epoch seconds of its first
export; ``ExportMarker``) when its output is a regular file, after flushing and syncing it; an
export to standard output (a terminal, a pipe, /dev/null) marks nothing, since no copy it made
can be vouched for. The server runs ``Spool.delete_exported`` every
``retention_interval_seconds``, in transactions of ``retention_batch_size`` rows through a
partial index over exported records only (so the records never exported are never scanned),
with the writer's batches free to run between them (one transaction at a time per ``Spool``).
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from balance.store import BalanceStore
from balance.types import UsageRecord
from ocs.db import usage

log = structlog.get_logger("ocs.billing.spool")

# Outboxes read (or trimmed) at once: one hierarchy's round trip is mostly waiting. The reads share
# the pipelined charging connection (balance/store.py), so a bounded number keeps a drain from
# putting hundreds of large replies between two charges.
CONCURRENT_REDIS_CALLS = 16
CLOSE_WAIT_SECONDS = 5.0  # how long close waits for the batch in progress (its Redis may be gone)
MARK_BATCH = 1_000  # records an export marks per transaction, each after flushing its output

R = TypeVar("R")
AfterCommit = Callable[[], Awaitable[None]]


class StoredRecordsHook(Protocol):
    """Called in a batch's transaction with the rows (``usage.row_of``) it newly stored; returns
    what to run after the commit, or None."""

    def __call__(
        self, connection: AsyncConnection, rows: Sequence[dict[str, object]], /
    ) -> Awaitable[AfterCommit | None]: ...


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
    """The spool of usage records in the business database (``engine``); ``run`` one writer
    task, ``close`` it before disposing of the engine."""

    def __init__(self, engine: AsyncEngine, on_stored: StoredRecordsHook | None = None) -> None:
        self.engine = engine
        self.on_stored = on_stored
        self._drain_lock = asyncio.Lock()  # two drains at once would trim the same records twice
        # One transaction at a time from this spool: the writer's batches, retention's. (SQLite
        # would serialize them anyway, but by sleeping in its busy handler.)
        self._transaction_lock = asyncio.Lock()
        self._batch: asyncio.Future[int] | None = None  # the batch being committed and acknowledged
        self._opened_at = time.time()
        self._caught_up_at = 0.0  # start of the last drain that emptied every outbox
        self._records_written = 0
        self._duplicates_ignored = 0
        self._backlog_records = 0
        self._last_drain_at = 0.0
        self._last_drain_seconds = 0.0

    async def close(self) -> None:
        """Wait for the batch in progress (if any) to finish, or time out; the engine stays open."""
        if self._batch is not None and not self._batch.done():
            await asyncio.wait({self._batch}, timeout=CLOSE_WAIT_SECONDS)

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
        rows = [usage.row_of(record) for _, records in batch for record in records]
        stored, after_commit = await self._insert(rows)
        self._records_written += stored
        self._duplicates_ignored += len(rows) - stored
        if after_commit is not None:  # committed: its work does not wait for Redis to forget the rows
            try:
                await after_commit()
            except Exception:  # the hook's own business: it keeps what is left to do
                log.exception("spool_hook_after_commit_failed")
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

    async def _insert(self, rows: list[dict[str, object]]) -> tuple[int, AfterCommit | None]:
        """One transaction: insert the rows not already stored, and run the hook on those;
        returns how many were new and the hook's after-commit work."""
        # A failure before COMMIT returned leaves the rows only in Redis (_transaction). (If the
        # COMMIT itself went through, the rows are stored; they were not acknowledged, so the
        # next drain finds them and the insert skips them.)
        hook = self.on_stored
        if hook is None:
            return await self._transaction(lambda connection: usage.store_records(connection, rows)), None

        async def store_and_evaluate(connection: AsyncConnection) -> tuple[int, AfterCommit | None]:
            stored, new = await usage.store_new_records(connection, rows)
            return stored, (await hook(connection, new) if new else None)

        return await self._transaction(store_and_evaluate)

    async def _transaction(self, work: Callable[[AsyncConnection], Awaitable[R]]) -> R:
        """``work`` in one transaction; rolled back if anything fails before COMMIT returns."""
        async with self._transaction_lock, self.engine.begin() as connection:
            return await work(connection)

    # -- retention (module docstring) -----------------------------------------------------------

    async def delete_exported(self, *, older_than_seconds: int, batch_size: int, now: float | None = None) -> int:
        """Delete the records past retention (exported, committed more than
        ``older_than_seconds`` ago, and billed if postpaid), in transactions of at most
        ``batch_size`` rows; returns how many were deleted."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        cut = int(time.time() if now is None else now) - older_than_seconds
        deleted = 0
        while True:
            changed = await self._transaction(lambda connection: usage.delete_retained(connection, cut, batch_size))
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
        async with self.engine.connect() as connection:
            return await usage.totals_by_account(connection)

    async def last_usage_by_account(self) -> dict[str, int]:
        """The time of each account's newest usage record, epoch seconds (the customer base
        report's prepaid inactivity, ocs/customers/reports.py)."""
        async with self.engine.connect() as connection:
            return await usage.last_usage_by_account(connection)

    async def count(self) -> int:
        async with self.engine.connect() as connection:
            return await usage.count_records(connection)

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


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ExportMarker:
    """Marks the records an export writes as exported (``exported_at``), ``MARK_BATCH`` at a
    time, each batch only once ``out`` has been flushed and synced to disk, so a record is
    marked only once it is stored in the export. Only an ``out`` that is a regular file counts:
    a terminal, /dev/null, a pipe or a socket (standard output, mostly) keeps no copy we can
    vouch for, and marking would let the retention delete the only copy of a record; an export
    there marks nothing. ``finish`` marks the last batch; an export that fails before it marks
    nothing more."""

    def __init__(self, engine: AsyncEngine, out: TextIO, now_seconds: int) -> None:
        self._engine = engine
        self._out = out
        self._now_seconds = now_seconds
        self._pending: list[str] = []
        self.marking = _is_regular_file(out)

    async def add(self, record_id: str) -> None:
        if not self.marking:
            return
        self._pending.append(record_id)
        if len(self._pending) >= MARK_BATCH:
            await self._mark()

    async def finish(self) -> None:
        await self._mark()

    async def _mark(self) -> None:
        if not self._pending:
            return
        self._out.flush()
        os.fsync(self._out.fileno())  # a failure raises: the batch stays unmarked
        async with self._engine.begin() as connection:
            await usage.mark_exported(connection, self._pending, self._now_seconds)
        self._pending.clear()


def _is_regular_file(out: TextIO) -> bool:
    """Whether ``out`` writes to a regular file (``ExportMarker``): not a terminal, device, pipe,
    socket, or an in-memory stream without a descriptor."""
    try:
        return stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):  # io.UnsupportedOperation is both of the first two
        return False
