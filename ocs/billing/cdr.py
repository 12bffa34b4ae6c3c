"""CDR export: the usage records of a period from the spool, as CSV or JSON lines.

Theory of operation: ``export`` reads the business database's ``usage_records`` (``ocs.db.usage``;
SQLite in a data directory or PostgreSQL, the server running or not), the records committed in
``[since, until)`` (UTC; ``since`` inclusive, ``until`` exclusive, either may be open), optionally
of one account, in commit-time order (ties in spool order), and streams them to ``out``, a page
of ``MARK_BATCH`` records per query, so no transaction stays open for the whole export. Both
formats carry the same fields: money as integer ``micros`` and, for people and spreadsheets,
``amount``, the same value in units of the currency as an exact decimal string made from the
integer (``1234567`` micros is ``"1.234567"``), never a float. Times are epoch seconds and ISO
8601 UTC. ``rating_group`` and ``service_identifier`` are the MSCC's own values; a record of an
MSCC without a Service-Identifier has an empty one (CSV) or null (JSON). Each record written to a
regular file is marked exported in the spool (``ocs.billing.spool.ExportMarker``, after the file
is flushed and synced): the spool's retention deletes only exported records, so an export to
standard output (a terminal, a pipe, /dev/null) marks nothing: write the copy to keep with
``--output``.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TextIO

from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import MICROS_PER_UNIT, UsageRecord
from ocs.billing.spool import MARK_BATCH, ExportMarker
from ocs.db import usage

FORMATS = ("csv", "jsonl")
FIELDS = (
    "record_id",
    "account_id",
    "session_id",
    "request_number",
    "rating_group",
    "service_identifier",
    "service",
    "unit",
    "units",
    "micros",
    "amount",
    "payment_type",
    "at_seconds",
    "at",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def decimal_amount(micros: int) -> str:
    """Micros as an exact decimal string in units of the currency: 1500000 -> "1.500000"."""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    return f"{'-' if micros < 0 else ''}{whole}.{fraction:06d}"


def epoch_seconds_ceiling(moment: datetime) -> int:
    """The first whole epoch second at or after ``moment`` (naive datetimes are taken as UTC).

    Records carry whole seconds, so ``at >= moment`` is ``at >= ceiling(moment)`` and
    ``at < moment`` is ``at < ceiling(moment)``; computed in integers, with no float rounding.
    """
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    delta = aware - _EPOCH
    microseconds = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return -(-microseconds // 1_000_000)


def _iso(at_seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=at_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fields(record: UsageRecord) -> dict[str, object]:
    return {
        "record_id": record.record_id,
        "account_id": record.account_id,
        "session_id": record.session_id,
        "request_number": record.request_number,
        "rating_group": record.rating_group,
        "service_identifier": record.service_identifier,
        "service": record.service,
        "unit": record.unit.value,
        "units": record.units,
        "micros": record.micros,
        "amount": decimal_amount(record.micros),
        "payment_type": record.payment_type.value,
        "at_seconds": record.at_seconds,
        "at": _iso(record.at_seconds),
    }


async def _records(
    engine: AsyncEngine, since: datetime | None, until: datetime | None, account_id: str | None
) -> AsyncIterator[UsageRecord]:
    since_seconds = None if since is None else epoch_seconds_ceiling(since)
    until_seconds = None if until is None else epoch_seconds_ceiling(until)
    after: usage.ExportPosition | None = None
    while True:
        async with engine.connect() as connection:
            page = await usage.export_page(
                connection,
                since_seconds=since_seconds,
                until_seconds=until_seconds,
                account_id=account_id,
                after=after,
                limit=MARK_BATCH,
            )
        for record, _ in page:
            yield record
        if len(page) < MARK_BATCH:
            return
        after = page[-1][1]


async def export(
    engine: AsyncEngine,
    *,
    since: datetime | None,
    until: datetime | None,
    fmt: str,
    out: TextIO,
    account_id: str | None = None,
) -> int:
    """Write the records of ``[since, until)`` (UTC) to ``out`` as ``fmt`` ("csv" or "jsonl");
    returns the number of records written. CSV starts with a header line, even when empty;
    open a CSV ``out`` with ``newline=""`` (the csv module writes its own line ends)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown CDR format {fmt!r}: expected one of {', '.join(FORMATS)}")
    marker = ExportMarker(engine, out, int(time.time()))
    written = 0
    writer = csv.DictWriter(out, fieldnames=FIELDS)  # CRLF line ends: RFC 4180 section 2
    if fmt == "csv":
        writer.writeheader()
    async for record in _records(engine, since, until, account_id):
        fields = _fields(record)
        if fmt == "csv":
            writer.writerow(fields)
        else:
            out.write(json.dumps(fields, separators=(",", ":"), ensure_ascii=False) + "\n")
        await marker.add(record.record_id)
        written += 1
    await marker.finish()
    return written
