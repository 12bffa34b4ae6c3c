"""CDR export: the usage records of a period from the spool, as CSV or JSON lines.

Theory of operation: ``export`` opens the spool file read-only with the standard ``sqlite3``
module (a CLI command, no event loop; in WAL mode it reads a consistent snapshot while the
server keeps writing), selects the records committed in ``[since, until)`` (UTC; ``since``
inclusive, ``until`` exclusive, either may be open), optionally of one account, in commit-time
order, and streams them to ``out``. Both formats carry the same fields: money as integer
``micros`` and, for people and spreadsheets, ``amount``, the same value in units of the currency
as an exact decimal string made from the integer (``1234567`` micros is ``"1.234567"``), never a
float. Times are epoch seconds and ISO 8601 UTC. ``rating_group`` and ``service_identifier`` are
the MSCC's own values; a record of an MSCC without a Service-Identifier has an empty one (CSV) or
null (JSON). Each record written to a regular file is marked exported in the spool
(``ocs.spool.ExportMarker``, after the file is flushed and synced): the spool's retention
deletes only exported records, so an export to standard output (a terminal, a pipe, /dev/null)
marks nothing: write the copy to keep with ``--output``.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from balance.types import MICROS_PER_UNIT
from ocs.billing.spool import ExportMarker

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
# The table's columns; "amount" and "at" are derived from micros and at_seconds.
_STORED = tuple(name for name in FIELDS if name not in ("amount", "at"))
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


def _query(since: datetime | None, until: datetime | None, account_id: str | None) -> tuple[str, list[object]]:
    conditions: list[str] = []
    parameters: list[object] = []
    if account_id is not None:
        conditions.append("account_id = ?")
        parameters.append(account_id)
    if since is not None:
        conditions.append("at_seconds >= ?")
        parameters.append(epoch_seconds_ceiling(since))
    if until is not None:
        conditions.append("at_seconds < ?")
        parameters.append(epoch_seconds_ceiling(until))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # rowid breaks ties in spool order; both indexes (time; account, time) end in rowid.
    return f"SELECT {', '.join(_STORED)} FROM usage_records{where} ORDER BY at_seconds, rowid", parameters


def _records(
    connection: sqlite3.Connection, since: datetime | None, until: datetime | None, account_id: str | None
) -> Iterator[dict[str, object]]:
    sql, parameters = _query(since, until, account_id)
    for row in connection.execute(sql, parameters):
        stored = dict(zip(_STORED, row, strict=True))
        derived = {"amount": decimal_amount(int(stored["micros"])), "at": _iso(int(stored["at_seconds"]))}
        yield {name: stored[name] if name in stored else derived[name] for name in FIELDS}


def export(
    spool_path: Path,
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
    if not spool_path.is_file():
        raise FileNotFoundError(f"no spool database at {spool_path}")
    with ExportMarker(spool_path, out, int(time.time())) as marker:
        connection = sqlite3.connect(f"{spool_path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            records = _records(connection, since, until, account_id)
            written = 0
            writer = csv.DictWriter(out, fieldnames=FIELDS)  # CRLF line ends: RFC 4180 section 2
            if fmt == "csv":
                writer.writeheader()
            for record in records:
                if fmt == "csv":
                    writer.writerow(record)
                else:
                    out.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")
                marker.add(str(record["record_id"]))
                written += 1
            marker.finish()
            return written
        finally:
            connection.close()
