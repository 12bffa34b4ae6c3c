"""How fast the loyalty engine evaluates usage records, and how soon its credits are spendable
(issue 15: at least 20,000 records per second evaluated by the rule engine; commit-to-credit p99 at most
1 s).

Theory of operation: one private embedded Redis (append-only file on, as in production) and the
business database on SQLite in a temporary directory. A population of ``MEMBERS`` customers (one
in ``COMPANY_EVERY`` an organization with two lines, the others individuals with one; segments
ideal / average / bad / none), each line a prepaid account in Redis, and 20 rules: the shipped
``config/loyalty.toml`` and generated ones (every Nth event, spend thresholds, cashback by
segment, allowances, discounts) over SMS, voice and data.

Each batch of ``BATCH_SIZE`` usage records (the spool's batch size) runs the spool's own path:
in one transaction ``ocs.db.usage.store_new_records`` then ``LoyaltyEngine.usage_stored`` (the
hook), commit, then the hook's after-commit work (the credits into Redis, the applications
marked). Records are made directly as rows (a real charge per record would measure the charging
path, which bench/throughput.py does); their lines are random over the population, so the
counters of many members are read and written per batch.

Reported:
- ``records_per_s``, the figure of issue 15's target: records evaluated per second by the rule
  engine, that is the records over the hook's own time (``usage_stored``: members, counters read
  and written, evaluation, applications and budgets written; the credits of the previous batch,
  started after its commit, run beside it in the event loop). The usage insert
  (``store_new_records``), the commit and the credits are not the engine's: the spool writer
  does the first two without loyalty.
- ``whole_path_records_per_s``: records per second over the whole path (stored, evaluated,
  committed, credited), and the rate of the transactions alone;
- ``credit_latency_p99_ms``: commit-to-credit latency of every credited application over the
  whole path (its ``committed_at_ms``, taken in the transaction, to its ``credited_at_ms``); p50
  printed beside it;
- ``records_per_cpu_s``: the records over the CPU seconds of this process (the event loop and
  SQLite's thread; the private Redis apart) for the whole path, and ``engine_cpu_s`` the part of
  them spent while the hook ran: on a shared machine the wall clock moves with the neighbours'
  load, the CPU time much less.

The last line is ``RESULT records_per_s=<n> credit_latency_p99_ms=<n> whole_path_records_per_s=<n>
records_per_cpu_s=<n> engine_cpu_s=<n>``.

Run from the project root: ``.venv/bin/python bench/loyalty.py`` (a few minutes: provisioning
the population in Redis takes most of it); ``--members`` and ``--records`` change the sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script, this directory comes first on sys.path, and bench/balance.py would then shadow
# the balance package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from balance.embedded import EmbeddedRedis
from balance.store import BalanceStore
from balance.types import Account, Bucket, BucketKind, Outcome
from ocs.db import loyalty as tables
from ocs.db import usage
from ocs.db.customers import customers, lines, parties
from ocs.db.engine import open_database, sqlite_url
from ocs.loyalty.engine import AfterCommit, LoyaltyEngine
from ocs.loyalty.rules_load import parse_loyalty_rules

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = 100_000
RECORDS = 200_000
BATCH_SIZE = 500  # [spool] batch_size's default (ocs.config)
COMPANY_EVERY = 20
SEGMENTS = ("ideal", "average", "average", "bad", None)
START = int(datetime(2026, 12, 7, 18, 0, tzinfo=UTC).timestamp())  # a busy hour
SERVICES = (("sms", "events", 1, 90_000), ("voice", "seconds", 120, 300_000), ("data", "octets", 5_000_000, 50_000))
PROVISION_CHUNK = 500

GENERATED = """
[[programmes]]
id = "bench_{n}"
name = "generated {n}"
valid_from = 2026-01-01
budget = "1000000.00"

[[programmes.rules]]
id = "bench_rule_{n}"
event = "usage"
filters = {{ services = ["{service}"]{segments} }}
counter = {{ period = "{period}", measure = "{measure}" }}
condition = {{ {condition} }}
action = {action}
"""

ACTIONS = (
    '{ kind = "bonus_money", amount = "0.05", expiry_days = 30 }',
    '{ kind = "unit_allowance", unit = "seconds", units = 60, services = ["voice"], expiry_days = 7, cost = "0.10" }',
    '{ kind = "bonus_money", percent = "2", percent_of = "trigger_spend" }',
    '{ kind = "invoice_discount", percent = "5", target = "service", service = "data" }',
)


def bench_rules_text(count: int) -> str:
    """The shipped programmes and generated ones, ``count`` rules in all."""
    text = (ROOT / "config" / "loyalty.toml").read_text()
    shipped = text.count("[[programmes.rules]]")
    for number in range(count - shipped):
        service = SERVICES[number % 3][0]
        measure = ("events", "units", "spend")[number % 3]
        condition = {
            "events": f"every = {5 + number}",
            "units": f"threshold = {SERVICES[number % 3][2] * (10 + number)}",
            "spend": f'threshold = "{2 + number}.00"',
        }[measure]
        action = ACTIONS[number % len(ACTIONS)]
        period = "month" if "invoice_discount" in action else ("day", "month")[number % 2]
        segments = ', segments = ["ideal", "average"]' if number % 4 == 1 else ""
        text += GENERATED.format(
            n=number,
            service=service,
            segments=segments,
            period=period,
            measure=measure,
            condition=condition,
            action=action,
        )
    return text


async def populate(database: AsyncEngine, store: BalanceStore, members: int) -> list[str]:
    """The customers and their lines in the database and in Redis; returns the line ids."""
    moment = datetime(2026, 1, 1)
    party_rows, customer_rows, line_rows = [], [], []
    for number in range(members):
        organization = number % COMPANY_EVERY == 0
        kind = "organization" if organization else "individual"
        customer_id = f"C{number}"
        party_rows.append({"party_id": f"P{number}", "kind": kind, "contact_media": [], "created_at": moment})
        customer_rows.append(
            {
                "customer_id": customer_id,
                "party_id": f"P{number}",
                "kind": kind,
                "status": "active",
                "segment": SEGMENTS[number % len(SEGMENTS)],
                "created_at": moment,
            }
        )
        for suffix in ("a", "b") if organization else ("a",):
            line_rows.append(
                {
                    "line_id": f"L{number}{suffix}",
                    "customer_id": customer_id,
                    "name": "line",
                    "network": "mobile",
                    "payment_type": "prepaid",
                    "plan": "mobile_prepaid",
                    "credit_limit_micros": 0,
                    "cap_micros": 0,
                    "status": "active",
                    "created_at": moment,
                }
            )
    async with database.begin() as connection:
        for table, rows in ((parties, party_rows), (customers, customer_rows), (lines, line_rows)):
            for start in range(0, len(rows), 5_000):
                await connection.execute(insert(table), rows[start : start + 5_000])
    line_ids = [str(row["line_id"]) for row in line_rows]
    for start in range(0, len(line_ids), PROVISION_CHUNK):
        accounts = [
            Account(line_id, buckets=(Bucket(1, BucketKind.MAIN, 10**9),))
            for line_id in line_ids[start : start + PROVISION_CHUNK]
        ]
        results = await asyncio.gather(*(store.provision(account) for account in accounts))
        assert all(result.outcome is Outcome.OK for result in results)
    return line_ids


def record_rows(line_ids: list[str], count: int, seed: int = 15) -> list[dict[str, object]]:
    """Usage rows as the spool stores them (``usage.row_of``), over an hour, on random lines."""
    chooser = random.Random(seed)
    rows = []
    for number in range(count):
        service, unit, units, micros = SERVICES[chooser.randrange(3)]
        rows.append(
            {
                "record_id": f"bench-{number}|0|1",
                "account_id": chooser.choice(line_ids),
                "session_id": f"bench-{number}",
                "request_number": 0,
                "rating_group": 1,
                "service": service,
                "unit": unit,
                "units": units,
                "micros": micros,
                "payment_type": "prepaid",
                "at_seconds": START + number * 3_600 // count,
                "service_identifier": None,
                "line_micros": 0,
                "pools": "",
            }
        )
    return rows


async def run(
    database: AsyncEngine, loyalty: LoyaltyEngine, rows: list[dict[str, object]]
) -> tuple[float, float, float]:
    """The spool's path per batch; returns (seconds in all, seconds in the transactions, CPU
    seconds of this process: its event loop and SQLite's thread, not Redis)."""
    in_transactions = 0.0
    cpu_started = time.process_time()
    started = time.perf_counter()
    for start in range(0, len(rows), BATCH_SIZE):
        batch = rows[start : start + BATCH_SIZE]
        opened = time.perf_counter()
        async with database.begin() as connection:
            _, new = await usage.store_new_records(connection, batch)
            after_commit = await loyalty.usage_stored(connection, new)
        in_transactions += time.perf_counter() - opened
        if after_commit is not None:
            await after_commit()
    await loyalty.settle()
    return time.perf_counter() - started, in_transactions, time.process_time() - cpu_started


def percentile(values: list[int], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(share * len(ordered)))])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=MEMBERS)
    parser.add_argument("--records", type=int, default=RECORDS)
    parser.add_argument("--rules", type=int, default=20)
    arguments = parser.parse_args()
    rules = parse_loyalty_rules(bench_rules_text(arguments.rules), "bench rules")
    with tempfile.TemporaryDirectory() as directory, EmbeddedRedis(Path(directory) / "redis", port=0) as server:
        store = await BalanceStore.connect(server.url, pipelined=True)
        database = await open_database(sqlite_url(Path(directory) / "data"))
        try:
            began = time.perf_counter()
            line_ids = await populate(database, store, arguments.members)
            print(
                f"redis-server {server.server_version} (private); {arguments.members:,} members, {len(line_ids):,}"
                f" lines in {time.perf_counter() - began:.0f} s; {len(rules.rules)} rules"
            )
            loyalty = LoyaltyEngine(database, rules, store)
            preloaded = time.perf_counter()
            await loyalty.preload_members()
            print(f"members preloaded in {time.perf_counter() - preloaded:.2f} s (the server does it at startup)")
            hook = loyalty.usage_stored
            evaluating = [0.0, 0.0]  # the hook's seconds, wall and CPU of this process

            async def timed_hook(connection: AsyncConnection, new: Sequence[Mapping[str, Any]]) -> AfterCommit | None:
                started, cpu_started = time.perf_counter(), time.process_time()
                try:
                    return await hook(connection, new)
                finally:
                    evaluating[0] += time.perf_counter() - started
                    evaluating[1] += time.process_time() - cpu_started

            loyalty.usage_stored = timed_hook  # type: ignore[method-assign,assignment]
            rows = record_rows(line_ids, arguments.records)
            elapsed, in_transactions, cpu_seconds = await run(database, loyalty, rows)
            async with database.connect() as connection:
                latencies = await tables.credit_latencies_ms(connection)
                counts = await tables.application_counts(connection)
        finally:
            await database.dispose()
            await store.close()
    whole_path_per_second = len(rows) / elapsed
    engine_per_second = len(rows) / evaluating[0]
    by_state: dict[str, int] = {}
    for (_, state), count in counts.items():
        by_state[state] = by_state.get(state, 0) + count
    print(
        f"{engine_per_second:,.0f} records/s evaluated by the rule engine (the hook's {evaluating[0]:.1f} s:"
        f" members, counters, evaluation, writes; {evaluating[1]:.1f} CPU seconds of the process meanwhile)"
    )
    print(
        f"{len(rows):,} records in {elapsed:.1f} s: {whole_path_per_second:,.0f} records/s through store, evaluate,"
        f" commit and credit; {len(rows) / in_transactions:,.0f} records/s in the transactions alone"
    )
    print(
        f"{cpu_seconds:.1f} CPU seconds in this process (event loop and SQLite's thread; Redis apart):"
        f" {len(rows) / cpu_seconds:,.0f} records per CPU second (the figure a busy machine moves least)"
    )
    print(f"applications: {', '.join(f'{state} {count:,}' for state, count in sorted(by_state.items()))}")
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    print(f"commit to credit: p50 {p50:.0f} ms, p99 {p99:.0f} ms over {len(latencies):,} credits")
    if latencies:
        print(f"  mean {statistics.fmean(latencies):.1f} ms, max {max(latencies)} ms")
    print(
        f"RESULT records_per_s={engine_per_second:.0f} credit_latency_p99_ms={p99:.0f}"
        f" whole_path_records_per_s={whole_path_per_second:.0f} records_per_cpu_s={len(rows) / cpu_seconds:.0f}"
        f" engine_cpu_s={evaluating[1]:.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
