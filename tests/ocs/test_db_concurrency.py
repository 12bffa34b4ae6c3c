"""Concurrent transactions on the business database (ocs/db/engine.py "Transactions"): writers on
SQLite take the write lock at BEGIN, so what they read stays true until they commit; readers are
not held up by a writer; a savepoint is part of its transaction; and several writers at once
(customers made, payments recorded, usage records stored) all get through, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing.payments import Payments
from ocs.billing.values import NewPayment
from ocs.customers.service import Customers, EngineAccount, EngineAnswer
from ocs.db import usage
from ocs.db.customers import customers, parties
from ocs.db.usage import usage_records
from tests.ocs.bill_run_support import database, sqlite_database
from tests.ocs.billing_support import add_account
from tests.ocs.postgres_support import postgresql_url
from tests.ocs.test_customers import ana

__all__ = ["database", "postgresql_url", "sqlite_database"]

MOMENT = datetime(2026, 3, 1, 12, 0)  # naive UTC, as the tables store it

WRITERS = 16  # the concurrent customer creates of the report (issue 16)


class NoEngineAccounts:
    """Individuals with no lines: the customer wing asks the balance engine for nothing."""

    default_plan = "mobile_prepaid"

    async def ensure(self, account: EngineAccount) -> EngineAnswer:
        raise AssertionError(f"no engine account expected, asked for {account.account_id}")


async def _count(engine: AsyncEngine, table: Table) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(table))).scalar_one())


async def test_a_writer_on_sqlite_reads_nothing_another_writer_changes_before_it_commits(
    sqlite_database: AsyncEngine,
) -> None:
    """Read, then write what was read plus one: with the write lock taken at BEGIN, no writer's
    commit falls between the read and the write, so no increment is lost."""
    async with sqlite_database.begin() as connection:
        await connection.execute(text("INSERT INTO number_series (series, last_sequence) VALUES ('t', 0)"))

    async def increment() -> None:
        async with sqlite_database.begin() as connection:
            read = (await connection.execute(text("SELECT last_sequence FROM number_series"))).scalar_one()
            await asyncio.sleep(0)  # the other writers run here, as any await of a request lets them
            await connection.execute(text("UPDATE number_series SET last_sequence = :value"), {"value": read + 1})

    await asyncio.gather(*(increment() for _ in range(WRITERS)))
    async with sqlite_database.connect() as connection:
        assert (await connection.execute(text("SELECT last_sequence FROM number_series"))).scalar_one() == WRITERS


async def test_a_reader_on_sqlite_goes_on_while_a_writer_holds_the_lock(sqlite_database: AsyncEngine) -> None:
    """WAL: a reader sees the last commit while a writer's transaction is open; it does not wait
    for the writer (were it to, it would fail with 'database is locked' after the busy timeout)."""
    written, read = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with sqlite_database.begin() as connection:
            await connection.execute(
                insert(parties).values(party_id="P-w", kind="individual", contact_media=[], created_at=MOMENT)
            )
            written.set()
            await read.wait()

    async def reader() -> int:
        await written.wait()
        try:
            return await _count(sqlite_database, parties)
        finally:
            read.set()

    _, seen = await asyncio.gather(writer(), reader())
    assert seen == 0 and await _count(sqlite_database, parties) == 1


async def test_a_savepoint_is_undone_with_its_transaction(database: AsyncEngine) -> None:
    """A transaction that only read before its savepoint (as the dunning run's step record does):
    the savepoint's insert goes when the transaction is rolled back."""
    with pytest.raises(RuntimeError, match="rolled back"):
        async with database.begin() as connection:
            await connection.execute(select(func.count()).select_from(parties))
            async with connection.begin_nested():
                await connection.execute(
                    insert(parties).values(party_id="P-s", kind="individual", contact_media=[], created_at=MOMENT)
                )
            raise RuntimeError("rolled back")
    assert await _count(database, parties) == 0


async def test_sixteen_customers_made_at_once_with_payments_and_usage_all_get_through(database: AsyncEngine) -> None:
    """The report's load: customers made through the wing while payments are recorded and the
    spool stores usage records, all at once; every one gets through, none 'database is locked'."""
    wing = Customers(database, NoEngineAccounts())
    accounts = [await add_account(database, f"B-{number}") for number in range(4)]
    payments = Payments(database)

    async def pay(number: int) -> None:
        account = f"B-{number % len(accounts)}"
        await payments.record_payment(
            NewPayment(billing_account_id=account, reference=f"R-{number}", amount_micros=1_000_000), "tests"
        )

    async def store(number: int) -> None:
        async with database.begin() as connection:
            rows = [_usage_row(number * 10 + index) for index in range(10)]
            assert await usage.store_records(connection, rows) == len(rows)

    made = await asyncio.gather(
        *(wing.create_customer(ana(customer_id=f"C-{number}")) for number in range(WRITERS)),
        *(pay(number) for number in range(WRITERS)),
        *(store(number) for number in range(WRITERS)),
    )
    assert len(made) == 3 * WRITERS
    assert await _count(database, customers) == WRITERS + len(accounts)
    assert await _count(database, usage_records) == 10 * WRITERS


def _usage_row(number: int) -> dict[str, object]:
    return {
        "record_id": f"S-{number}|0|1",
        "account_id": f"L-{number % 4}",
        "session_id": f"S-{number}",
        "request_number": 0,
        "rating_group": 1,
        "service": "sms",
        "unit": "events",
        "units": 1,
        "micros": 100_000,
        "payment_type": "postpaid",
        "at_seconds": 1_770_000_000,
        "service_identifier": None,
        "line_micros": None,
        "pools": "",
    }
