"""The usage records (CDRs) in the business database: the spool's table and its queries.

Theory of operation: every usage record the money engine commits reaches ``usage_records`` once,
through the spool writer (``ocs.billing.spool``), which calls ``store_records`` in one transaction
per batch and acknowledges the Redis outbox only after that commit. ``record_id`` is unique and
the insert skips a record already stored (SQLite ``INSERT ... ON CONFLICT DO NOTHING``, PostgreSQL
the same clause), so a batch read again after a lost acknowledgement stores nothing twice; the
rows it did store come back through ``RETURNING``, which counts them exactly on both databases.

``record_number`` is the spool's own order (SQLite's rowid, a PostgreSQL identity): ties in time
break on it, and the export pages on (``at_seconds``, ``record_number``) without holding a
transaction open for the whole export.

The bill run reads "the unbilled records of these accounts before the cut", summed per account
(``unbilled_usage``: what the invoice line says, the ids and numbers to mark, what the cut gives
back; ``unbilled_records`` lists the same records one by one), and marks them billed
(``mark_billed``, or the bill run's bulk update by number and id) in the transaction that writes
their invoice, so a record is billed by one invoice at most: the update only takes rows whose
``invoice_id`` is still NULL, and the count it returns tells the caller whether every record it
priced was still free. Marking is by record, not by (account, cut): the spool lags the engine
by up to a drain, so a record committed in Redis before the cut may reach this table after the
invoice was priced; marking by time would then bill it without pricing it. (The bill run should
also wait until the spool's lag is past the cut: ``SpoolStats.lag_seconds``.)

Indexes: by time (export of a period; the retention's partial index over exported rows only);
(``account_id``, ``invoice_id``, ``at_seconds``) for one account's unbilled records up to a cut
(``invoice_id IS NULL`` is an equality for the index), an account's export, and the newest usage
per account; a partial index over billed rows answers "the records of invoice I" and costs an
insert nothing, since a new record is never billed. Money is integer micros; times epoch seconds.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    String,
    Table,
    Text,
    cast,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement

from balance.types import PaymentType, PoolDraw, Unit, UsageRecord
from ocs.db.schema import metadata

ID_LENGTH = 64  # balance account ids; invoice ids (the bill run's) share the length
# Rows per statement where a list of ids becomes a list of parameters: far below SQLite's
# 32,766 host parameters (https://sqlite.org/limits.html #9) and PostgreSQL's 65,535.
IDS_PER_STATEMENT = 1_000
ACCOUNTS_PER_QUERY = 200  # unbilled_records: accounts read per query (memory: their records only)

usage_records = Table(
    "usage_records",
    metadata,
    # SQLite: INTEGER PRIMARY KEY is the rowid itself (the table's layout as the old spool file's).
    Column("record_number", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("record_id", Text, nullable=False, unique=True),  # "<session>|<request number>|<service key>"
    Column("account_id", String(ID_LENGTH), nullable=False),
    Column("session_id", Text, nullable=False),
    Column("request_number", BigInteger, nullable=False),  # CC-Request-Number: Unsigned32
    Column("rating_group", BigInteger, nullable=False),  # Rating-Group: Unsigned32
    Column("service", Text, nullable=False),  # a tariff's service name; unbounded: a batch never fails on it
    Column("unit", String(16), nullable=False),  # seconds | octets | events
    Column("units", BigInteger, nullable=False),
    Column("micros", BigInteger, nullable=False),  # money in micro-units of the account currency
    Column("payment_type", String(16), nullable=False),  # prepaid | postpaid
    Column("at_seconds", BigInteger, nullable=False),  # commit time, epoch seconds (UTC)
    Column("exported_at", BigInteger, nullable=True),  # first export, epoch seconds (NULL: never)
    Column("service_identifier", BigInteger, nullable=True),  # the MSCC's Service-Identifier (NULL: none)
    Column("invoice_id", String(ID_LENGTH), nullable=True),  # the invoice that billed it (NULL: unbilled)
    # Where the money came from (0008; NULL in older rows: see ``record_of``): the line's own
    # credit line, and per ancestor level "level:bucket micros:line micros", ";"-separated.
    Column("line_micros", BigInteger, nullable=True),
    Column("pools", Text, nullable=True),
    Index("ix_usage_records_at_seconds", "at_seconds", "record_number"),
    Index("ix_usage_records_account_id", "account_id", "invoice_id", "at_seconds"),
    Index(
        "ix_usage_records_exported",
        "at_seconds",
        sqlite_where=text("exported_at IS NOT NULL"),
        postgresql_where=text("exported_at IS NOT NULL"),
    ),
    Index(
        "ix_usage_records_invoice_id",
        "invoice_id",
        sqlite_where=text("invoice_id IS NOT NULL"),
        postgresql_where=text("invoice_id IS NOT NULL"),
    ),
)

USAGE_TABLES = (usage_records,)
STORED_COLUMNS = (
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
    "line_micros",
    "pools",
)
STORED = tuple(usage_records.c[name] for name in STORED_COLUMNS)  # the columns record_of reads
_COLUMNS = STORED


def row_of(record: UsageRecord) -> dict[str, object]:
    """The table row of a record (its values as stored: enums by value)."""
    return {
        "record_id": record.record_id,
        "account_id": record.account_id,
        "session_id": record.session_id,
        "request_number": record.request_number,
        "rating_group": record.rating_group,
        "service": record.service,
        "unit": record.unit.value,
        "units": record.units,
        "micros": record.micros,
        "payment_type": record.payment_type.value,
        "at_seconds": record.at_seconds,
        "service_identifier": record.service_identifier,
        "line_micros": record.line_micros,
        "pools": format_pools(record.pools),
    }


def format_pools(pools: Sequence[PoolDraw]) -> str:
    """Pool draws as stored: "level:bucket micros:line micros" per level, ";"-separated ("": none)."""
    return ";".join(f"{pool.level}:{pool.bucket_micros}:{pool.line_micros}" for pool in pools)


def parse_pools(stored: str | None) -> tuple[PoolDraw, ...]:
    """The inverse of ``format_pools`` (NULL or "": no pool drawn)."""
    if not stored:
        return ()
    draws = []
    for item in stored.split(";"):
        level, bucket, line = item.split(":")
        draws.append(PoolDraw(int(level), int(bucket), int(line)))
    return tuple(draws)


def record_of(row: Sequence[object]) -> UsageRecord:
    """A record from the values of ``STORED_COLUMNS`` in that order."""
    values = dict(zip(STORED_COLUMNS, row, strict=True))
    identifier = values["service_identifier"]
    payment_type = PaymentType(str(values["payment_type"]))
    micros = _integer(values["micros"])
    stored_line = values["line_micros"]
    if stored_line is None:
        # A row from before 0008: where its money came from was not kept. A postpaid record then
        # counts as drawn whole from the line's own credit line (every line without a paying
        # ancestor drew so); a prepaid one from its own buckets.
        line_micros = micros if payment_type is PaymentType.POSTPAID else 0
    else:
        line_micros = _integer(stored_line)
    pools = values["pools"]
    return UsageRecord(
        record_id=str(values["record_id"]),
        account_id=str(values["account_id"]),
        session_id=str(values["session_id"]),
        request_number=_integer(values["request_number"]),
        rating_group=_integer(values["rating_group"]),
        service=str(values["service"]),
        unit=Unit(str(values["unit"])),
        units=_integer(values["units"]),
        micros=micros,
        payment_type=payment_type,
        at_seconds=_integer(values["at_seconds"]),
        service_identifier=None if identifier is None else _integer(identifier),
        line_micros=line_micros,
        pools=parse_pools(None if pools is None else str(pools)),
    )


def _integer(value: object) -> int:
    assert isinstance(value, int), value  # the columns are integers on both databases
    return value


def _insert_ignoring_duplicates(dialect_name: str) -> Insert:
    """INSERT that skips a row whose ``record_id`` is stored already, returning those it stored."""
    if dialect_name == "postgresql":
        statement: Insert = postgresql_insert(usage_records).on_conflict_do_nothing(index_elements=["record_id"])
    elif dialect_name == "sqlite":
        statement = sqlite_insert(usage_records).on_conflict_do_nothing(index_elements=["record_id"])
    else:
        raise ValueError(f"usage records: unsupported database {dialect_name!r} (sqlite or postgresql)")
    return statement.returning(usage_records.c.record_number)


# -- the spool writer and its retention ------------------------------------------------------------


async def store_records(connection: AsyncConnection, rows: Sequence[dict[str, object]]) -> int:
    """Insert the rows (``row_of``; every row with the same keys) not already stored, in the
    caller's transaction; returns how many were new (a row whose ``record_id`` is stored is
    skipped, whatever its other values)."""
    if not rows:
        return 0
    names = tuple(rows[0])
    if connection.dialect.name == "sqlite":
        # The spool's hot path: the compiled statement run by the driver's executemany, whose
        # rowcount sums the rows inserted (a skipped row changes none). Through Core's own
        # parameter handling and RETURNING it ran at about 0.65 of the old spool's speed (bench/spool.py).
        result = await connection.exec_driver_sql(
            _sqlite_insert_sql(names), [tuple(row[name] for name in names) for row in rows]
        )
        return int(result.rowcount)
    statement = _insert_ignoring_duplicates(connection.dialect.name)
    return len((await connection.execute(statement, list(rows))).all())


async def store_new_records(
    connection: AsyncConnection, rows: Sequence[dict[str, object]]
) -> tuple[int, Sequence[dict[str, object]]]:
    """``store_records``, and which of the rows were new (what a hook evaluates: the spool's
    loyalty hook). SQLite: every row new is the common case and costs nothing more (the count
    says so); otherwise the new rows are the ``stored`` last numbered: SQLite numbers a new row
    past the largest number stored (an INTEGER PRIMARY KEY given no value), and the transaction
    holds the write lock (``BEGIN IMMEDIATE``), so no other row came in between. PostgreSQL:
    ``RETURNING`` names them."""
    if not rows:
        return 0, ()
    if connection.dialect.name == "sqlite":
        stored = await store_records(connection, rows)
        if stored == len(rows):
            return stored, rows
        table = usage_records.c
        newest = select(table.record_id).order_by(table.record_number.desc()).limit(stored)
        ids = set((await connection.execute(newest)).scalars())
        return stored, [row for row in rows if row["record_id"] in ids]
    statement = _insert_ignoring_duplicates(connection.dialect.name).returning(usage_records.c.record_id)
    ids = {str(record_id) for _, record_id in await connection.execute(statement, list(rows))}
    return len(ids), [row for row in rows if row["record_id"] in ids]


@functools.cache
def _sqlite_insert_sql(names: tuple[str, ...]) -> str:
    statement = sqlite_insert(usage_records).on_conflict_do_nothing(index_elements=["record_id"])
    return str(statement.compile(dialect=sqlite_dialect(), column_keys=list(names)))


def retention_condition(cut_seconds: int) -> ColumnElement[bool]:
    """Rows the retention may delete: exported, older than the cut, and, if postpaid, billed."""
    table = usage_records.c
    return (
        table.exported_at.isnot(None)
        & (table.at_seconds < cut_seconds)
        & ((table.payment_type != PaymentType.POSTPAID.value) | table.invoice_id.isnot(None))
    )


async def delete_retained(connection: AsyncConnection, cut_seconds: int, limit: int) -> int:
    """Delete at most ``limit`` rows past retention (``retention_condition``); returns how many."""
    chosen = select(usage_records.c.record_number).where(retention_condition(cut_seconds)).limit(limit)
    statement = delete(usage_records).where(usage_records.c.record_number.in_(chosen.scalar_subquery()))
    result = await connection.execute(statement)
    return int(result.rowcount)


async def mark_exported(connection: AsyncConnection, record_ids: Sequence[str], now_seconds: int) -> int:
    """Mark the records as exported at ``now_seconds`` unless marked before; returns how many."""
    marked = 0
    for start in range(0, len(record_ids), IDS_PER_STATEMENT):
        chunk = record_ids[start : start + IDS_PER_STATEMENT]
        statement = (
            update(usage_records)
            .where(usage_records.c.record_id.in_(chunk), usage_records.c.exported_at.is_(None))
            .values(exported_at=now_seconds)
        )
        marked += int((await connection.execute(statement)).rowcount)
    return marked


# -- readers ---------------------------------------------------------------------------------------


async def count_records(connection: AsyncConnection) -> int:
    return int((await connection.execute(select(func.count()).select_from(usage_records))).scalar_one())


async def totals_by_account(connection: AsyncConnection) -> dict[str, int]:
    """The sum of micros per account over every stored record (the audit's usage side)."""
    statement = select(usage_records.c.account_id, func.sum(usage_records.c.micros)).group_by(
        usage_records.c.account_id
    )
    return {str(account_id): int(total) for account_id, total in await connection.execute(statement)}


async def last_usage_by_account(connection: AsyncConnection) -> dict[str, int]:
    """The time of each account's newest record, epoch seconds (the customer base report's
    prepaid inactivity); the (account_id, invoice_id, at_seconds) index answers it without rows."""
    statement = select(usage_records.c.account_id, func.max(usage_records.c.at_seconds)).group_by(
        usage_records.c.account_id
    )
    return {str(account_id): int(newest) for account_id, newest in await connection.execute(statement)}


@dataclass(frozen=True, slots=True)
class ExportPosition:
    """Where an export page ends: the next page starts after (``at_seconds``, ``record_number``)."""

    at_seconds: int
    record_number: int


async def export_page(
    connection: AsyncConnection,
    *,
    since_seconds: int | None,
    until_seconds: int | None,
    account_id: str | None,
    after: ExportPosition | None,
    limit: int,
) -> list[tuple[UsageRecord, ExportPosition]]:
    """Up to ``limit`` records of ``[since, until)`` (and of one account), in commit-time order
    (ties in spool order), after ``after``; each with its position for the next page."""
    table = usage_records.c
    statement = select(*_COLUMNS, table.record_number).order_by(table.at_seconds, table.record_number).limit(limit)
    if account_id is not None:
        statement = statement.where(table.account_id == account_id)
    if since_seconds is not None:
        statement = statement.where(table.at_seconds >= since_seconds)
    if until_seconds is not None:
        statement = statement.where(table.at_seconds < until_seconds)
    if after is not None:
        statement = statement.where(
            tuple_(table.at_seconds, table.record_number) > tuple_(after.at_seconds, after.record_number)
        )
    page: list[tuple[UsageRecord, ExportPosition]] = []
    for row in await connection.execute(statement):
        record = record_of(row[:-1])
        page.append((record, ExportPosition(record.at_seconds, _integer(row[-1]))))
    return page


# -- the bill run ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountUsage:
    """One account's unbilled records before a cut, oldest first (``unbilled_records``)."""

    account_id: str
    records: tuple[UsageRecord, ...]


async def unbilled_records(
    connection: AsyncConnection,
    account_ids: Iterable[str],
    cut_at_seconds: int,
    *,
    payment_type: PaymentType = PaymentType.POSTPAID,
    accounts_per_query: int = ACCOUNTS_PER_QUERY,
) -> AsyncIterator[AccountUsage]:
    """The records of each of ``account_ids`` that no invoice billed yet, committed before
    ``cut_at_seconds`` (exclusive, as an export's ``until``), of ``payment_type`` (postpaid: a
    prepaid record was paid when it was used), one account at a time, in the order given; an
    account without such records is skipped.

    Streaming: ``accounts_per_query`` accounts are read per query and nothing more is held, so
    the memory is that of those accounts' records, whatever the number of accounts. No cursor
    stays open between two yields: the caller may write (``mark_billed``) on the same connection
    inside the same transaction while iterating."""
    if accounts_per_query < 1:
        raise ValueError(f"accounts_per_query must be at least 1, not {accounts_per_query}")
    table = usage_records.c
    pending: list[str] = []

    async def read(chunk: list[str]) -> AsyncIterator[AccountUsage]:
        statement = (
            select(*_COLUMNS)
            .where(
                table.account_id.in_(chunk),
                table.invoice_id.is_(None),
                table.at_seconds < cut_at_seconds,
                table.payment_type == payment_type.value,
            )
            .order_by(table.account_id, table.at_seconds, table.record_number)
        )
        by_account: dict[str, list[UsageRecord]] = {}
        for row in await connection.execute(statement):
            record = record_of(row)
            by_account.setdefault(record.account_id, []).append(record)
        for account_id in dict.fromkeys(chunk):  # the caller's order, each account once
            if account_id in by_account:
                yield AccountUsage(account_id, tuple(by_account.pop(account_id)))

    for account_id in account_ids:
        pending.append(account_id)
        if len(pending) == accounts_per_query:
            async for usage in read(pending):
                yield usage
            pending = []
    if pending:
        async for usage in read(pending):
            yield usage


@dataclass(frozen=True, slots=True)
class ServiceUsage:
    """One service's share of a ``LineUsage``."""

    service: str
    unit: str  # the unit of its first record
    records: int
    units: int
    micros: int


@dataclass(frozen=True, slots=True)
class LineUsage:
    """One account's unbilled postpaid records before a cut, summed (``unbilled_usage``): what
    its invoice line says, the records to mark billed, and what the cut gives back. The records'
    ids and numbers are kept as the JSON arrays the marks take (``ocs.billing.bill_run``), by
    service (by name), oldest first within each: read as text, never as a Python list a record."""

    account_id: str
    records: int
    record_ids: str  # JSON array of the records' ids (the docstring's order)
    record_numbers: str  # JSON array of their numbers, in the same order (the rowid: marking finds a row by it)
    first_record_number: int  # the smallest of them (the marks go in table order)
    micros: int
    services: tuple[ServiceUsage, ...]  # by service name
    line_micros: int  # drawn from the account's own credit line
    pools: tuple[PoolDraw, ...]  # per ancestor level, by level: drawn from its buckets and credit line

    def record_id_list(self) -> list[str]:
        return [str(record_id) for record_id in json.loads(self.record_ids)]

    def record_number_list(self) -> list[int]:
        return [int(number) for number in json.loads(self.record_numbers)]


# The bill run's reader: one row per (account, service), its records summed in SQL, their ids and
# numbers aggregated oldest first as JSON arrays, the unit of the oldest record, and the pools'
# draws concatenated (the ";"-separated format, summed per level in Python). On SQLite
# (3.40: no ORDER BY inside an aggregate) the records come from a subquery in the index's order
# (account, at_seconds, record number), and GROUP BY's sorter keeps that order within a group;
# a test holds it. The account ids are one JSON array (``json_each``): no list of parameters.
UNBILLED_USAGE_SQLITE = (
    "SELECT account_id, service, json_extract(json_group_array(unit), '$[0]'), count(*), sum(units), sum(micros),"
    " sum(coalesce(line_micros, micros)), group_concat(nullif(pools, ''), ';'),"
    " json_group_array(record_id), json_group_array(record_number), min(record_number)"
    " FROM (SELECT account_id, service, unit, units, micros, line_micros, pools, record_id, record_number"
    " FROM usage_records WHERE account_id IN (SELECT value FROM json_each(?)) AND invoice_id IS NULL"
    " AND at_seconds < ? AND payment_type = ? ORDER BY account_id, at_seconds, record_number)"
    " GROUP BY account_id, service ORDER BY account_id, service"
)


def _unbilled_usage_postgresql(account_ids: Sequence[str], cut_at_seconds: int) -> Executable:
    table = usage_records.c
    oldest_first = (table.at_seconds, table.record_number)
    return (
        select(
            table.account_id,
            table.service,
            func.array_agg(aggregate_order_by(table.unit, *oldest_first))[1],
            func.count(),
            func.sum(table.units),
            func.sum(table.micros),
            func.sum(func.coalesce(table.line_micros, table.micros)),
            func.string_agg(func.nullif(table.pools, ""), ";"),
            cast(func.json_agg(aggregate_order_by(table.record_id, *oldest_first)), Text),
            cast(func.json_agg(aggregate_order_by(table.record_number, *oldest_first)), Text),
            func.min(table.record_number),
        )
        .where(
            table.account_id.in_(account_ids),
            table.invoice_id.is_(None),
            table.at_seconds < cut_at_seconds,
            table.payment_type == PaymentType.POSTPAID.value,
        )
        .group_by(table.account_id, table.service)
    )


def _joined_arrays(arrays: Iterable[str]) -> str:
    """JSON arrays (as text) made one, in order."""
    return "[" + ",".join(array[1:-1] for array in arrays) + "]"


def _line_usage(account_id: str, rows: Sequence[Sequence[Any]]) -> LineUsage:
    """One account's rows of the reader (one per service) as its ``LineUsage``."""
    if len(rows) == 1:  # the common case, made directly
        _, service, unit, records, units, micros, line_micros, pools, ids, numbers, first = rows[0]
        return LineUsage(
            account_id,
            int(records),
            ids,
            numbers,
            int(first),
            int(micros),
            (ServiceUsage(str(service), str(unit), int(records), int(units), int(micros)),),
            int(line_micros),
            _summed_pools(parse_pools(pools)),
        )
    if len(rows) > 1:
        rows = sorted(rows, key=lambda row: str(row[1]))  # by name whatever the database's collation
    return LineUsage(
        account_id=account_id,
        records=sum(int(row[3]) for row in rows),
        record_ids=rows[0][8] if len(rows) == 1 else _joined_arrays(row[8] for row in rows),
        record_numbers=rows[0][9] if len(rows) == 1 else _joined_arrays(row[9] for row in rows),
        first_record_number=min(int(row[10]) for row in rows),
        micros=sum(int(row[5]) for row in rows),
        services=tuple(ServiceUsage(str(row[1]), str(row[2]), int(row[3]), int(row[4]), int(row[5])) for row in rows),
        line_micros=sum(int(row[6]) for row in rows),
        pools=_summed_pools([pool for row in rows for pool in parse_pools(row[7])]),
    )


def _summed_pools(draws: Sequence[PoolDraw]) -> tuple[PoolDraw, ...]:
    """Draws summed per ancestor level, by level."""
    if not draws:
        return ()
    pools: dict[int, list[int]] = {}
    for pool in draws:
        sums = pools.setdefault(pool.level, [0, 0])
        sums[0] += pool.bucket_micros
        sums[1] += pool.line_micros
    return tuple(PoolDraw(level, *pools[level]) for level in sorted(pools))


async def unbilled_usage(
    connection: AsyncConnection, account_ids: Sequence[str], cut_at_seconds: int
) -> dict[str, LineUsage]:
    """Per account of ``account_ids`` with any, its postpaid records that no invoice billed yet,
    committed before ``cut_at_seconds`` (exclusive), summed (the bill run's reader: the same
    records as ``unbilled_records``, summed in the database; a record from before 0008, whose
    source was not kept, drew from the account's own credit line)."""
    found: dict[str, LineUsage] = {}
    for start in range(0, len(account_ids), IDS_PER_STATEMENT):
        chunk = account_ids[start : start + IDS_PER_STATEMENT]
        if connection.dialect.name == "sqlite":
            parameters = (json.dumps(list(chunk)), cut_at_seconds, PaymentType.POSTPAID.value)
            rows = (await connection.exec_driver_sql(UNBILLED_USAGE_SQLITE, parameters)).all()
        else:
            rows = (await connection.execute(_unbilled_usage_postgresql(chunk, cut_at_seconds))).all()
        first = 0
        for index in range(1, len(rows) + 1):
            if index == len(rows) or rows[index][0] != rows[first][0]:
                account_id = str(rows[first][0])
                found[account_id] = _line_usage(account_id, rows[first:index])
                first = index
    return found


async def mark_billed(connection: AsyncConnection, record_ids: Sequence[str], invoice_id: str) -> int:
    """Mark the records as billed by ``invoice_id``, in the caller's transaction (the one that
    writes the invoice); returns how many were marked. A record billed already (by this invoice
    or another) is not marked again, so a count below ``len(record_ids)`` means some record was
    billed meanwhile (or is not stored): the caller should roll its invoice back."""
    if not invoice_id:
        raise ValueError("invoice_id must not be empty")
    marked = 0
    for start in range(0, len(record_ids), IDS_PER_STATEMENT):
        chunk = record_ids[start : start + IDS_PER_STATEMENT]
        statement = (
            update(usage_records)
            .where(usage_records.c.record_id.in_(chunk), usage_records.c.invoice_id.is_(None))
            .values(invoice_id=invoice_id)
        )
        marked += int((await connection.execute(statement)).rowcount)
    return marked


async def records_of_invoice(connection: AsyncConnection, invoice_id: str) -> list[UsageRecord]:
    """The records ``invoice_id`` billed, oldest first (an invoice line explains itself by them)."""
    table = usage_records.c
    statement = select(*_COLUMNS).where(table.invoice_id == invoice_id).order_by(table.at_seconds, table.record_number)
    return [record_of(row) for row in await connection.execute(statement)]
