"""The usage records' table and the bill run's queries (ocs/db/usage.py), on SQLite and on a
private PostgreSQL: the migration makes the table the code defines; ``unbilled_records`` streams
one account at a time; ``mark_billed`` bills a record once, inside the caller's transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import PaymentType, PoolDraw, Unit, UsageRecord
from ocs.db import usage
from tests.ocs.postgres_support import business_database, postgresql_url

__all__ = ["postgresql_url"]

NOW = 1_700_000_000
CUT = NOW + 1_000


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, ("usage_records",)) as made:
        yield made


def record(
    account_id: str, number: int, at_seconds: int, payment_type: PaymentType = PaymentType.POSTPAID
) -> UsageRecord:
    return UsageRecord(
        record_id=f"{account_id}-{number}|0|1",
        account_id=account_id,
        session_id=f"{account_id}-{number}",
        request_number=4_294_967_295,  # CC-Request-Number is Unsigned32: beyond a 32-bit signed column
        rating_group=number,
        service="data",
        unit=Unit.OCTETS,
        units=10**12,  # a terabyte: octets need 64 bits
        micros=1_000 + number,
        payment_type=payment_type,
        at_seconds=at_seconds,
        service_identifier=number if number % 2 else None,
    )


async def stored(engine: AsyncEngine, *records: UsageRecord) -> None:
    async with engine.begin() as connection:
        assert await usage.store_records(connection, [usage.row_of(item) for item in records]) == len(records)


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection)
    only_usage = MetaData()
    usage.usage_records.to_metadata(only_usage)
    return [
        difference
        for difference in compare_metadata(context, only_usage)
        if "usage_records" in repr(difference) and difference[0] != "remove_table"
    ]


async def test_the_migration_makes_the_table_the_code_defines(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.run_sync(_differences) == []


async def test_a_record_is_stored_once_and_read_back_as_it_was(engine: AsyncEngine) -> None:
    first = record("ana", 1, NOW)
    await stored(engine, first)
    async with engine.begin() as connection:  # read again after a lost acknowledgement
        assert await usage.store_records(connection, [usage.row_of(first), usage.row_of(record("ana", 2, NOW))]) == 1
        assert await usage.count_records(connection) == 2
        page = await usage.export_page(
            connection, since_seconds=None, until_seconds=None, account_id="ana", after=None, limit=10
        )
    assert [item for item, _ in page] == [first, record("ana", 2, NOW)]


async def test_a_batch_partly_stored_before_names_only_its_new_rows(engine: AsyncEngine) -> None:
    await stored(engine, record("ana", 2, NOW), record("bob", 1, NOW))
    batch = [usage.row_of(record(account, number, NOW)) for account, number in [("ana", 1), ("ana", 2), ("bob", 2)]]
    async with engine.begin() as connection:  # the spool's batch read again, with records new since
        count, new = await usage.store_new_records(connection, batch)
    assert (count, [row["record_id"] for row in new]) == (2, ["ana-1|0|1", "bob-2|0|1"])
    async with engine.begin() as connection:
        assert await usage.store_new_records(connection, batch) == (0, [])


async def test_unbilled_records_of_the_accounts_before_the_cut_one_account_at_a_time(engine: AsyncEngine) -> None:
    ana = [record("ana", number, NOW + number) for number in (3, 1, 2)]
    bo = [record("bo", 1, NOW), record("bo", 2, CUT)]  # the second at the cut: after it (exclusive)
    prepaid = record("cy", 1, NOW, PaymentType.PREPAID)  # paid when used: never on an invoice
    other = record("dee", 1, NOW)  # not asked for
    await stored(engine, *ana, *bo, prepaid, other)

    async with engine.connect() as connection:
        found = [
            (item.account_id, [each.record_id for each in item.records])
            async for item in usage.unbilled_records(
                connection, ["bo", "cy", "ana", "nobody"], CUT, accounts_per_query=2
            )
        ]
    assert found == [("bo", ["bo-1|0|1"]), ("ana", ["ana-1|0|1", "ana-2|0|1", "ana-3|0|1"])]  # asked order; by time
    async with engine.connect() as connection:
        (prepaid_usage,) = [
            item async for item in usage.unbilled_records(connection, ["cy"], CUT, payment_type=PaymentType.PREPAID)
        ]
    assert prepaid_usage.records == (prepaid,)
    with pytest.raises(ValueError, match="accounts_per_query"):
        async with engine.connect() as connection:
            _ = [item async for item in usage.unbilled_records(connection, ["ana"], CUT, accounts_per_query=0)]


async def test_mark_billed_bills_each_record_once_in_the_callers_transaction(engine: AsyncEngine) -> None:
    records = [record("ana", number, NOW + number) for number in range(3)]
    await stored(engine, *records)
    ids = [item.record_id for item in records]

    async with engine.connect() as connection:  # an invoice that fails after marking: nothing stays
        transaction = await connection.begin()
        assert await usage.mark_billed(connection, ids[:2], "inv-0") == 2
        await transaction.rollback()
    async with engine.begin() as connection:
        usages = [item async for item in usage.unbilled_records(connection, ["ana"], CUT)]
        assert [item.record_id for item in usages[0].records] == ids  # the rollback left them unbilled
        assert await usage.mark_billed(connection, ids[:2], "inv-1") == 2
        assert await usage.records_of_invoice(connection, "inv-1") == records[:2]
    async with engine.begin() as connection:
        # A second invoice over the same records (a rerun, a concurrent run) bills only what is free.
        assert await usage.mark_billed(connection, ids, "inv-2") == 1
        assert await usage.records_of_invoice(connection, "inv-2") == records[2:]
        assert [item async for item in usage.unbilled_records(connection, ["ana"], CUT)] == []
        assert await usage.mark_billed(connection, ["unknown|0|1"], "inv-3") == 0
    with pytest.raises(ValueError, match="invoice_id"):
        async with engine.begin() as connection:
            await usage.mark_billed(connection, ids, "")


async def test_many_records_are_marked_across_statements(engine: AsyncEngine) -> None:
    records = [record("big", number, NOW) for number in range(usage.IDS_PER_STATEMENT + 5)]
    await stored(engine, *records)
    async with engine.begin() as connection:
        assert await usage.mark_billed(connection, [item.record_id for item in records], "inv-big") == len(records)
        assert len(await usage.records_of_invoice(connection, "inv-big")) == len(records)


async def test_where_the_money_came_from_is_kept_and_an_older_row_counts_as_the_lines_own(engine: AsyncEngine) -> None:
    drawn = dataclasses.replace(
        record("dept-line", 1, NOW), line_micros=400, pools=(PoolDraw(1, 300, 0), PoolDraw(2, 0, 301))
    )
    older = record("ana", 2, NOW)
    await stored(engine, drawn, older)
    async with engine.begin() as connection:  # a row the spool wrote before 0008: no source kept
        await connection.execute(
            update(usage.usage_records)
            .where(usage.usage_records.c.record_id == older.record_id)
            .values(line_micros=None, pools=None)
        )
        found = {item.account_id: item async for item in usage.unbilled_records(connection, ["dept-line", "ana"], CUT)}
    assert found["dept-line"].records == (drawn,)
    assert found["ana"].records[0].line_micros == older.micros and found["ana"].records[0].pools == ()


async def test_unbilled_usage_sums_what_unbilled_records_lists(engine: AsyncEngine) -> None:
    """The bill run's reader: per account, the same records as ``unbilled_records`` (before the
    cut, unbilled, postpaid), summed by service and by where the money came from."""
    ana = [
        dataclasses.replace(record("ana", 1, NOW), line_micros=600, pools=(PoolDraw(1, 300, 101),)),
        dataclasses.replace(record("ana", 2, NOW + 1), service="sms", unit=Unit.EVENTS, units=1, line_micros=0),
        dataclasses.replace(record("ana", 3, NOW + 2), pools=(PoolDraw(1, 0, 3), PoolDraw(2, 5, 0))),
        record("ana", 4, CUT),  # at the cut: after it
    ]
    billed = record("bo", 1, NOW)
    older = record("bo", 2, NOW + 1)
    await stored(engine, *ana, billed, older, record("cy", 1, NOW, PaymentType.PREPAID))
    async with engine.begin() as connection:
        await usage.mark_billed(connection, [billed.record_id], "inv-1")
        await connection.execute(  # a row the spool wrote before 0008: no source kept
            update(usage.usage_records)
            .where(usage.usage_records.c.record_id == older.record_id)
            .values(line_micros=None, pools=None)
        )
        found = await usage.unbilled_usage(connection, ["ana", "bo", "cy", "nobody"], CUT)
    assert sorted(found) == ["ana", "bo"]
    ana_usage = found["ana"]
    numbers = ana_usage.record_number_list()
    assert ana_usage.record_id_list() == ["ana-1|0|1", "ana-3|0|1", "ana-2|0|1"]  # by service, oldest first in each
    assert len(set(numbers)) == 3 and numbers[0] < numbers[1] and ana_usage.first_record_number == min(numbers)
    assert dataclasses.replace(ana_usage, record_ids="", record_numbers="") == usage.LineUsage(
        account_id="ana",
        records=3,
        record_ids="",
        record_numbers="",
        first_record_number=min(numbers),
        micros=1_001 + 1_002 + 1_003,
        services=(
            usage.ServiceUsage("data", "octets", 2, 2 * 10**12, 1_001 + 1_003),
            usage.ServiceUsage("sms", "events", 1, 1, 1_002),
        ),
        line_micros=600 + 0 + 0,
        pools=(PoolDraw(1, 300, 104), PoolDraw(2, 5, 0)),
    )
    bo_usage = found["bo"]
    assert (bo_usage.record_id_list(), bo_usage.line_micros, bo_usage.pools) == (["bo-2|0|1"], 1_002, ())


def sms(made: UsageRecord) -> UsageRecord:
    return dataclasses.replace(made, service="sms", unit=Unit.EVENTS, units=1)


async def test_unbilled_usage_gives_each_services_records_oldest_first_however_stored(engine: AsyncEngine) -> None:
    """The records' ids and numbers come as the JSON arrays the bill run's marks take, in an
    order fixed by the database query: by service, and within a service oldest first (ties in
    time in spool order), whatever order they were stored in; the unit is the oldest record's."""
    stored_order = [  # newest first, two records a second, every third one an SMS
        sms(record(account_id, number, NOW + 500 - number // 2))
        if number % 3 == 0
        else record(account_id, number, NOW + 500 - number // 2)
        for account_id in ("ana", "bo")
        for number in range(600)
    ]
    stored_order[1] = dataclasses.replace(stored_order[1], unit=Unit.SECONDS)  # ana's newest data record
    await stored(engine, *stored_order)
    async with engine.connect() as connection:
        found = await usage.unbilled_usage(connection, ["bo", "ana"], CUT)
        numbers = {
            str(row[0]): int(row[1])
            for row in await connection.execute(
                usage.usage_records.select().with_only_columns(
                    usage.usage_records.c.record_id, usage.usage_records.c.record_number
                )
            )
        }
    for account_id in ("ana", "bo"):
        mine = [item for item in stored_order if item.account_id == account_id]
        expected = sorted(mine, key=lambda item: (item.service, item.at_seconds, numbers[item.record_id]))
        assert found[account_id].record_id_list() == [item.record_id for item in expected]
        assert found[account_id].record_number_list() == [numbers[item.record_id] for item in expected]
        assert found[account_id].records == 600
    assert [item.unit for item in found["ana"].services] == ["octets", "events"]  # the oldest data record's unit
