"""How fast the bill run invoices postpaid billing accounts, how its memory grows with their number,
and that a rerun makes nothing (issue 14 "What must be shown").

Theory of operation: for each of N/10 and N accounts (default N = 100,000), a fresh SQLite
business database (the default: one file, ``synchronous=FULL``) and an emptied embedded Redis:
1. setup, not timed, in its own child process: N - 1,000 individual customers, each with a
   billing account (cycle day 1) and one postpaid line on ``fixed_postpaid`` (a rental, a usage
   discount, taxes), and one company of 1,000 lines in three levels (the company, 10
   departments, 100 lines each; one billing account at the company, the lines roll into it with
   subtotals per department). Rows are written with sqlite3 ``executemany``. Each line gets
   ``RECORDS_PER_LINE`` usage records in February 2026, written to ``usage_records`` as the spool
   writer would (``line_micros`` = their micros: drawn from the line's own credit line); its
   engine account is provisioned postpaid and charged ONE real charge of exactly the records'
   total (an event priced at that total), so its unbilled counter in Redis is what the records
   say, made by the engine itself (the charge's own outbox record is dropped: the ten records
   stand for it). This fast path is faithful for the bill run: it reads the records and cuts
   their ``line_micros``.
2. the run, timed, in a fresh child process: ``BillRun.run(2026-03-01)``, then the same run again;
   the child reports its peak RSS (``ru_maxrss``) and the one-ledger audit without the per-line
   Redis check (the cuts' outcomes are checked instead, and a sample of 1,000 lines' unbilled
   counters are 0 in Redis).
``rss_growth`` = the peak RSS of the run at N over that at N/10. A ``CPU`` line gives what the run
at N cost in CPU (this process, its SQLite thread included, and redis-server), a figure that a
shared machine's load does not move as it moves the wall time. The last line is
``RESULT accounts=<n> accounts_per_s=<x> peak_rss_mb=<x> rss_growth=<x> rerun_new_invoices=<n>
tie_out=<ok|fail>``.

Run from the project root: ``.venv/bin/python bench/bill_run.py [--accounts N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from balance.embedded import EmbeddedRedis
from balance.store import BalanceStore
from balance.types import Account, ChargeItem, ChargeRequest, Outcome, PaymentType, Tariff, Unit
from ocs.billing.bill_run import BillRun
from ocs.billing.catalog_load import load_catalog
from ocs.billing.ledger_audit import ledger_audit
from ocs.db.engine import DATABASE_FILE_NAME, open_database, sqlite_url
from ocs.rating.rate import load_book

ROOT = Path(__file__).resolve().parents[1]
RECORDS_PER_LINE = 10
COMPANY_LINES = 1_000
DEPARTMENTS = 10
RUN_DAY = date(2026, 3, 1)
FEBRUARY_SECONDS = int(datetime(2026, 2, 2, tzinfo=UTC).timestamp())
CREATED = "2026-01-01 00:00:00"
SETUP_BATCH = 2_000  # lines per Redis batch and DB transaction in the setup
SAMPLE = 1_000  # lines whose Redis unbilled counter is checked after the run


def line_ids(accounts: int) -> list[tuple[str, str, str | None]]:
    """(line id, customer id, node id) of every line: individuals first, then the company's."""
    individuals = accounts - 1
    made: list[tuple[str, str, str | None]] = [(f"L{index:07d}", f"C{index:07d}", None) for index in range(individuals)]
    for index in range(COMPANY_LINES):
        made.append((f"LCO{index:05d}", "CO", f"co-d{index % DEPARTMENTS:02d}"))
    return made


def write_rows(path: Path, accounts: int) -> None:
    database = sqlite3.connect(path)
    database.execute("PRAGMA journal_mode=WAL")
    individuals = accounts - 1
    with database:
        database.executemany(
            "INSERT INTO parties (party_id, kind, contact_media, created_at) VALUES (?, ?, '[]', ?)",
            [(f"P{index:07d}", "individual", CREATED) for index in range(individuals)]
            + [("PCO", "organization", CREATED)],
        )
        database.executemany(
            "INSERT INTO customers (customer_id, party_id, kind, status, created_at) VALUES (?, ?, ?, 'active', ?)",
            [(f"C{index:07d}", f"P{index:07d}", "individual", CREATED) for index in range(individuals)]
            + [("CO", "PCO", "organization", CREATED)],
        )
        nodes = [("co", "CO", None, "company")] + [
            (f"co-d{d:02d}", "CO", "co", "department") for d in range(DEPARTMENTS)
        ]
        database.executemany(
            "INSERT INTO customer_nodes (node_id, customer_id, parent_node_id, name, kind, status, created_at)"
            " VALUES (?, ?, ?, ?, ?, 'active', ?)",
            [(node, customer, parent, node, kind, CREATED) for node, customer, parent, kind in nodes],
        )
        database.executemany(
            "INSERT INTO billing_accounts (billing_account_id, customer_id, node_id, currency, bill_cycle_day,"
            " payment_method, paid_by_parent, created_at) VALUES (?, ?, ?, 'EUR', 1, 'bank_transfer', 0, ?)",
            [(f"B{index:07d}", f"C{index:07d}", None, CREATED) for index in range(individuals)]
            + [("BCO", "CO", "co", CREATED)],
        )
    for start in range(0, accounts - 1 + COMPANY_LINES, SETUP_BATCH):
        batch = line_ids(accounts)[start : start + SETUP_BATCH]
        with database:
            database.executemany(
                "INSERT INTO lines (line_id, customer_id, node_id, name, network, payment_type, plan,"
                " credit_limit_micros, cap_micros, status, own_status, created_at)"
                " VALUES (?, ?, ?, ?, 'fixed', 'postpaid', 'fixed_postpaid', 100000000, 0, 'active', 'active', ?)",
                [(line, customer, node, line, CREATED) for line, customer, node in batch],
            )
            database.executemany(
                "INSERT INTO status_changes (entity_kind, entity_id, customer_id, from_status, to_status, reason,"
                " author, changed_at) VALUES ('line', ?, ?, 'provisioning', 'active', 'bench', 'bench', ?)",
                [(line, customer, CREATED) for line, customer, _ in batch],
            )
            database.executemany(
                "INSERT INTO usage_records (record_id, account_id, session_id, request_number, rating_group, service,"
                " unit, units, micros, payment_type, at_seconds, line_micros, pools)"
                " VALUES (?, ?, ?, 0, 1, 'sms', 'events', 1, ?, 'postpaid', ?, ?, '')",
                [
                    (
                        f"{line}-{number}|0|1",
                        line,
                        f"{line}-{number}",
                        micros(number),
                        FEBRUARY_SECONDS + number,
                        micros(number),
                    )
                    for line, _, _ in batch
                    for number in range(RECORDS_PER_LINE)
                ],
            )
    database.close()


def micros(number: int) -> int:
    return 100_000 + 1_000 * number  # 0.10 to 0.109 an event


LINE_TOTAL = sum(micros(number) for number in range(RECORDS_PER_LINE))


async def charge_lines(redis_url: str, accounts: int) -> None:
    store = await BalanceStore.connect(redis_url, pipelined=True)
    tariff = Tariff(price_micros=LINE_TOTAL)
    await store.flush_all()  # each size starts from an empty Redis
    try:
        for start in range(0, accounts - 1 + COMPANY_LINES, SETUP_BATCH):
            batch = [line for line, _, _ in line_ids(accounts)[start : start + SETUP_BATCH]]
            account = [
                Account(line, payment_type=PaymentType.POSTPAID, credit_limit_micros=100 * 1_000_000) for line in batch
            ]
            await asyncio.gather(*(store.provision(item) for item in account))
            requests = [
                ChargeRequest(
                    line,
                    f"{line}-setup",
                    0,
                    (ChargeItem(1, "sms", Unit.EVENTS, tariff, used_units=1),),
                    FEBRUARY_SECONDS,
                    event=True,
                )
                for line in batch
            ]
            answers = await asyncio.gather(*(store.charge(request) for request in requests))
            assert all(answer.items[0].outcome is Outcome.OK for answer in answers)
        for root in await store.outbox_roots():  # the ten DB records stand for the one charge
            await store.acknowledge_outbox(root, await store.read_outbox(root, limit=100))
    finally:
        await store.close()


async def setup(directory: Path, redis_url: str, accounts: int) -> None:
    engine = await open_database(sqlite_url(directory))
    await engine.dispose()
    write_rows(directory / DATABASE_FILE_NAME, accounts)
    await charge_lines(redis_url, accounts)


async def run(directory: Path, redis_url: str) -> dict[str, object]:
    engine = await open_database(sqlite_url(directory))
    store = await BalanceStore.connect(redis_url, pipelined=True)
    catalog = load_catalog(ROOT / "config" / "catalog.toml", load_book(ROOT / "config" / "tariffs.toml"))
    clock = datetime(2026, 3, 1, 3, tzinfo=UTC).timestamp
    try:
        bill_run = BillRun(engine, store, catalog, clock=clock)
        redis_before = await redis_cpu_seconds(store)
        started, cpu_started = time.perf_counter(), time.process_time()
        first = await bill_run.run(RUN_DAY)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        redis_seconds = await redis_cpu_seconds(store) - redis_before
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        second = await bill_run.run(RUN_DAY)
        problems = await ledger_audit(engine)
        sample = [line for line, _, _ in line_ids(first.accounts)[:: max(1, first.accounts // SAMPLE)]]
        views = [await store.balance(line, FEBRUARY_SECONDS) for line in sample]
        unbilled_left = sum(1 for view in views if view is None or view.unbilled_micros != 0)
    finally:
        await store.close()
        await engine.dispose()
    tie_out = not problems and unbilled_left == 0 and first.cuts_refused == 0 and not first.problems
    return {
        "accounts": first.accounts,
        "invoices": first.invoices,
        "records": first.records,
        "cuts": first.cuts,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,  # this process's (its SQLite thread's included)
        "redis_cpu_seconds": redis_seconds,
        "peak_rss_mb": peak_kb / 1024,
        "rerun_new_invoices": second.invoices,
        "rerun_cuts": second.cuts,
        "tie_out": tie_out,
        "problems": (problems + first.problems)[:5],
    }


async def redis_cpu_seconds(store: BalanceStore) -> float:
    """redis-server's CPU so far (INFO cpu: used_cpu_sys + used_cpu_user)."""
    reply = await store.admin.execute("INFO", "cpu")  # redis-py parses it: name, value, name, value, ...
    assert isinstance(reply, list), reply
    fields = dict(zip(reply[::2], reply[1::2], strict=True))
    return float(str(fields["used_cpu_sys"])) + float(str(fields["used_cpu_user"]))


def child(step: str, directory: Path, redis_url: str, accounts: int) -> dict[str, object]:
    command = [sys.executable, __file__, "--child", step, "--directory", str(directory), "--redis", redis_url]
    command += ["--accounts", str(accounts)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--child", choices=["setup", "run"])
    parser.add_argument("--directory")
    parser.add_argument("--redis")
    arguments = parser.parse_args()
    if arguments.child == "setup":
        asyncio.run(setup(Path(arguments.directory), arguments.redis, arguments.accounts))
        print(json.dumps({}))
        return
    if arguments.child == "run":
        print(json.dumps(asyncio.run(run(Path(arguments.directory), arguments.redis))))
        return
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-bill-run-") as temporary,
        EmbeddedRedis(Path(temporary) / "redis") as redis_server,
    ):
        for size in (max(arguments.accounts // 10, COMPANY_LINES + 1), arguments.accounts):
            directory = Path(temporary) / f"db-{size}"
            directory.mkdir()
            started = time.perf_counter()
            child("setup", directory, redis_server.url, size)
            setup_seconds = time.perf_counter() - started
            found = child("run", directory, redis_server.url, size)
            found["setup_seconds"] = setup_seconds
            results.append(found)
            print(json.dumps(found))
    small, large = results
    rate = float(str(large["accounts"])) / float(str(large["seconds"]))
    growth = float(str(large["peak_rss_mb"])) / float(str(small["peak_rss_mb"]))
    rerun = int(str(small["rerun_new_invoices"])) + int(str(large["rerun_new_invoices"]))
    tie_out = "ok" if small["tie_out"] and large["tie_out"] else "fail"
    peak = float(str(large["peak_rss_mb"]))
    cpu = float(str(large["cpu_seconds"]))
    redis_cpu = float(str(large["redis_cpu_seconds"]))
    accounts = float(str(large["accounts"]))
    print(  # what the run cost whatever else the machine was doing (a shared machine's wall time is not)
        f"CPU run_cpu_seconds={cpu:.1f} accounts_per_cpu_s={accounts / cpu:.0f} redis_cpu_seconds={redis_cpu:.1f}"
        f" accounts_per_cpu_s_with_redis={accounts / (cpu + redis_cpu):.0f}"
    )
    print(
        f"RESULT accounts={large['accounts']} accounts_per_s={rate:.0f} peak_rss_mb={peak:.1f}"
        f" rss_growth={growth:.2f} rerun_new_invoices={rerun} tie_out={tie_out}"
    )


if __name__ == "__main__":
    main()
