"""How fast the daily scoring run scores every customer, and that a rerun stores nothing (issue 15
"Scoring and segments": set-based, a handful of grouped queries, not one per customer).

Theory of operation: a fresh SQLite business database (the default: one file, ``synchronous=FULL``)
migrated to the newest revision, then, not timed, written with sqlite3 ``executemany``: N
individual customers (default 100,000), each with a billing account, one prepaid line, an invoice
in each of the three window months (one in ten unpaid and overdue), two usage records a month
(voice and SMS), and for one in ten a dunning letter and a trouble ticket. Timed: ``Scoring.run``
(the facts read in grouped queries, every score computed, the history and segments written), then
the same run again (the same facts: nothing stored). ``facts_s`` is the read alone, measured by a
separate ``compute`` after the runs. The last line is ``RESULT customers=<n> run_s=<x>
customers_per_s=<x> facts_s=<x> rerun_s=<x> rerun_stored=<n>``.

Run from the project root: ``.venv/bin/python bench/scoring.py [--customers N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from ocs.db.engine import DATABASE_FILE_NAME, open_database, sqlite_url
from ocs.loyalty.scoring import Scoring
from ocs.loyalty.scoring_load import load_scoring_rules

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 5, 10)  # the window: February, March, April 2026
MONTHS = (2, 3, 4)
UNIT = 1_000_000


def _epoch(month: int, day: int) -> int:
    return int(datetime(2026, month, day, 12, tzinfo=UTC).timestamp())


def write_rows(path: Path, count: int) -> None:
    database = sqlite3.connect(path)
    created = "2024-06-01 00:00:00.000000"
    ids = [f"C{index:07d}" for index in range(count)]
    with database:
        database.executemany(
            "INSERT INTO parties (party_id, kind, given_name, family_name, contact_media, created_at)"
            " VALUES (?, 'individual', 'Ana', 'Lima', '[]', ?)",
            [(f"P{customer}", created) for customer in ids],
        )
        database.executemany(
            "INSERT INTO customers (customer_id, party_id, kind, status, created_at)"
            " VALUES (?, ?, 'individual', 'active', ?)",
            [(customer, f"P{customer}", created) for customer in ids],
        )
        database.executemany(
            "INSERT INTO billing_accounts (billing_account_id, customer_id, currency, bill_cycle_day, payment_method,"
            " paid_by_parent, created_at) VALUES (?, ?, 'EUR', 1, 'bank_transfer', 0, ?)",
            [(f"B{customer}", customer, created) for customer in ids],
        )
        database.executemany(
            "INSERT INTO lines (line_id, customer_id, name, network, payment_type, plan, credit_limit_micros,"
            " cap_micros, status, own_status, created_at)"
            " VALUES (?, ?, 'line', 'mobile', 'prepaid', 'mobile_prepaid', 0, 0, 'active', 'active', ?)",
            [(f"L{customer}", customer, created) for customer in ids],
        )
        invoices = []
        for index, customer in enumerate(ids):
            for month in MONTHS:
                unpaid = index % 10 == 0 and month == 3
                invoices.append(
                    (
                        f"I{customer}-{month}",
                        index * 3 + month,
                        f"main-{index * 3 + month}",
                        customer,
                        f"B{customer}",
                        f"2026-{month:02d}-01",
                        f"2026-{month:02d}-28",
                        f"2026-{month:02d}-01 00:00:00.000000",
                        f"2026-{month:02d}-20",
                        (10 + index % 50) * UNIT,
                        (10 + index % 50) * UNIT if unpaid else 0,
                        "sent" if unpaid else "settled",
                    )
                )
        database.executemany(
            "INSERT INTO invoices (invoice_id, legal_entity, sequence, number, customer_id, billing_account_id,"
            " period_start, period_end, issued_at, due_date, currency, subtotal_micros, discount_micros, tax_micros,"
            " total_micros, remaining_micros, state, catalog_version)"
            " VALUES (?, 'main', ?, ?, ?, ?, ?, ?, ?, ?, 'EUR', 0, 0, 0, ?, ?, ?, '2026-01')",
            invoices,
        )
        records = []
        for customer in ids:
            for month in MONTHS:
                for unit, units in (("seconds", 600), ("events", 20)):
                    record = f"{customer}|{month}|{unit}"
                    records.append((record, f"L{customer}", record, unit, unit, units, UNIT, _epoch(month, 5)))
        database.executemany(
            "INSERT INTO usage_records (record_id, account_id, session_id, request_number, rating_group, service,"
            " unit, units, micros, payment_type, at_seconds) VALUES (?, ?, ?, 1, 1, ?, ?, ?, ?, 'prepaid', ?)",
            records,
        )
        dunned = ids[::10]
        database.executemany(
            "INSERT INTO dunning_steps (billing_account_id, customer_id, episode_due_date, ladder, position, action,"
            " target_kind, target_id, run_date, days_past_due, overdue_micros, created_at)"
            " VALUES (?, ?, '2026-03-20', 'default', 1, 'letter', 'customer', ?, '2026-03-23', 3, 1, ?)",
            [(f"B{customer}", customer, customer, created) for customer in dunned],
        )
        database.executemany(
            "INSERT INTO trouble_tickets (ticket_id, customer_id, name, description, ticket_type, severity, status,"
            " created_by, created_at, updated_at)"
            " VALUES (?, ?, 'x', 'x', 'network', 'minor', 'acknowledged', 'care', ?, ?)",
            [
                (f"T{customer}", customer, "2026-04-01 00:00:00.000000", "2026-04-01 00:00:00.000000")
                for customer in dunned
            ],
        )
    database.close()


async def measure(directory: Path, count: int) -> None:
    engine = await open_database(sqlite_url(directory))
    started = time.perf_counter()
    write_rows(directory / DATABASE_FILE_NAME, count)
    print(f"setup: {count:,} customers written in {time.perf_counter() - started:.1f} s")
    clock = datetime(2026, 5, 10, 4, 0, tzinfo=UTC).timestamp()
    scoring = Scoring(engine, load_scoring_rules(ROOT / "config" / "scoring.toml"), clock=lambda: clock)
    started = time.perf_counter()
    first = await scoring.run(DAY)
    run_seconds = time.perf_counter() - started
    print(
        f"run:   {first.scored:,} scored, {first.stored:,} stored, {first.moved:,} segments set in {run_seconds:.2f} s"
    )
    started = time.perf_counter()
    again = await scoring.run(DAY)
    rerun_seconds = time.perf_counter() - started
    print(f"rerun: {again.scored:,} scored, {again.stored:,} stored in {rerun_seconds:.2f} s")
    started = time.perf_counter()
    scores = await scoring.compute(None, DAY)
    facts_and_scores = time.perf_counter() - started
    segments: dict[str, int] = {}
    for found in scores:
        segments[found.segment] = segments.get(found.segment, 0) + 1
    print(f"compute alone (facts and scores): {facts_and_scores:.2f} s; segments {segments}")
    await engine.dispose()
    print(
        f"RESULT customers={count} run_s={run_seconds:.2f} customers_per_s={count / run_seconds:.0f}"
        f" facts_s={facts_and_scores:.2f} rerun_s={rerun_seconds:.2f} rerun_stored={again.stored}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as directory:
        asyncio.run(measure(Path(directory), arguments.customers))


if __name__ == "__main__":
    main()
