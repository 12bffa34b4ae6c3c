"""The usage spool and CDR export, on a private real Redis and the business database (a real
SQLite file; the spool's writing, reading and retention on PostgreSQL too, where installed).

Every record here comes from a real charge through ``BalanceStore`` (prepaid buckets, postpaid
credit lines, a company's children), so the outbox holds what the Lua script wrote. The checks:
each committed record lands in the spool exactly once, across a lost acknowledgement, a
cancelled drain, a restart and concurrent charging; the spool's totals equal the engine's
``committed`` counters; the export's period and account filters and its exact amounts.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import random
import tempfile
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.embedded import EmbeddedRedis
from balance.store import BalanceStore
from balance.types import (
    Account,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    Outcome,
    PaymentType,
    Tariff,
    Unit,
    UsageRecord,
)
from ocs.billing.cdr import FIELDS, decimal_amount, epoch_seconds_ceiling, export
from ocs.billing.spool import Spool
from ocs.db import usage
from ocs.db.engine import open_database, sqlite_url
from tests.balance.conftest import embedded_redis
from tests.ocs.postgres_support import business_database, postgresql_url
from tests.ocs.store_stand_in import StoreStandIn

__all__ = ["embedded_redis", "postgresql_url"]

EUR = 1_000_000
NOW = 1_700_000_000  # 2023-11-14T22:13:20Z
SMS = Tariff(price_micros=1_234_567)  # per event: odd micros, so the decimal amounts are checked
VOICE = Tariff(price_micros=600_000, per_units=60, block_units=60, first_units=60)  # 0.60 a minute, 60/60
DATA = Tariff(price_micros=10_000, per_units=1_000_000, block_units=1_000_000, first_units=1_000_000)


@pytest.fixture
async def store(embedded_redis: EmbeddedRedis) -> AsyncIterator[BalanceStore]:
    balance_store = await BalanceStore.connect(embedded_redis.url)
    await balance_store.flush_all()
    try:
        yield balance_store
    finally:
        await balance_store.close()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    made = await open_database(sqlite_url(tmp_path / "data"))
    try:
        yield made
    finally:
        await made.dispose()


@pytest.fixture
async def spool(engine: AsyncEngine) -> AsyncIterator[Spool]:
    opened = Spool(engine)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_spool(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Spool]:
    """The spool on each business database (the writer, the readers and the retention)."""
    async with business_database(request, tmp_path, ("usage_records",)) as made:
        opened = Spool(made)
        try:
            yield opened
        finally:
            await opened.close()


class AcknowledgementLost(StoreStandIn):
    """The real store, except that trimming the outboxes of ``lost`` hierarchies raises: the
    process dies after the SQLite commit, before those outboxes are trimmed."""

    def __init__(self, store: BalanceStore, lost: set[str]) -> None:
        super().__init__(store)
        self.lost = lost

    async def acknowledge_outbox(self, root: str, records: Sequence[UsageRecord]) -> int:
        if root in self.lost:
            raise ConnectionError("crash before the acknowledgement")
        return await self.store.acknowledge_outbox(root, records)


class ChargeAfterEmptyRead(StoreStandIn):
    """The real store, where a charge commits right after the spool found an outbox empty and
    before it takes that hierarchy off the work list: the race the length check is for."""

    def __init__(self, store: BalanceStore) -> None:
        super().__init__(store)
        self.charged: list[str] = []

    async def read_outbox(self, root: str, limit: int = 1_000) -> list[UsageRecord]:
        records = await self.store.read_outbox(root, limit)
        if not records and not self.charged:
            self.charged.append(await sms(self.store, root, "late"))  # its SADD finds the root still listed
        return records


async def provision(store: BalanceStore, account: Account) -> None:
    assert (await store.provision(account)).outcome is Outcome.OK


async def prepaid(store: BalanceStore, account_id: str, micros: int = 1_000 * EUR) -> None:
    await provision(store, Account(account_id, buckets=(Bucket(1, BucketKind.MAIN, micros),)))


async def postpaid(store: BalanceStore, account_id: str, limit_micros: int = 1_000 * EUR) -> None:
    await provision(store, Account(account_id, payment_type=PaymentType.POSTPAID, credit_limit_micros=limit_micros))


async def sms(store: BalanceStore, account_id: str, session_id: str, *, events: int = 1, now: int = NOW) -> str:
    """A direct debit (RFC 4006 EVENT) of ``events`` SMS; returns the usage record's id."""
    item = ChargeItem(1, "sms", Unit.EVENTS, SMS, used_units=events)
    result = await store.charge(ChargeRequest(account_id, session_id, 0, (item,), now_seconds=now, event=True))
    assert result.outcome is Outcome.OK and result.items[0].committed_micros == events * SMS.price_micros
    return f"{session_id}|0|1"


async def call(store: BalanceStore, account_id: str, session_id: str, seconds: int, *, now: int = NOW) -> list[str]:
    """A voice call and a data session in one: INITIAL reserves, TERMINATION commits both."""
    opening = (
        ChargeItem(1, "voice", Unit.SECONDS, VOICE, requested_units=600),
        ChargeItem(2, "data", Unit.OCTETS, DATA, requested_units=5_000_000),
    )
    assert (
        await store.charge(ChargeRequest(account_id, session_id, 0, opening, now_seconds=now))
    ).outcome is Outcome.OK
    closing = (
        ChargeItem(1, "voice", Unit.SECONDS, VOICE, used_units=seconds),
        ChargeItem(2, "data", Unit.OCTETS, DATA, used_units=2_500_000),
    )
    request = ChargeRequest(account_id, session_id, 1, closing, now_seconds=now + seconds, terminate=True)
    result = await store.charge(request)
    assert result.outcome is Outcome.OK and all(item.committed_units > 0 for item in result.items)
    return [f"{session_id}|1|1", f"{session_id}|1|2"]


async def committed(store: BalanceStore, account_ids: list[str]) -> dict[str, int]:
    """The engine's own count of what each account used (RULES.md ``committed``)."""
    totals: dict[str, int] = {}
    for account_id in account_ids:
        view = await store.balance(account_id, NOW)
        assert view is not None
        if view.committed_micros:
            totals[account_id] = view.committed_micros
    return totals


async def spooled_ids(spool: Spool) -> list[str]:
    async with spool.engine.connect() as connection:
        query = text("SELECT record_id FROM usage_records ORDER BY record_number")
        return [str(row[0]) for row in await connection.execute(query)]


# -- exactly once ------------------------------------------------------------------------------


async def test_committed_records_land_in_the_spool_once(store: BalanceStore, any_spool: Spool) -> None:
    spool = any_spool
    await prepaid(store, "alice")
    await postpaid(store, "bob")
    expected = [await sms(store, "alice", 'sms "1";\\x'), *await call(store, "alice", "call-1", 75)]
    expected += [await sms(store, "bob", "sms-2", events=3), *await call(store, "bob", "call-2", 61)]
    assert len(await store.usage_records()) == 6

    assert await spool.drain_once(store) == 6
    assert sorted(await spooled_ids(spool)) == sorted(expected)
    assert await store.usage_records() == []  # acknowledged: the outboxes are empty
    assert await store.outbox_roots() == ["alice", "bob"]
    assert await spool.drain_once(store) == 0  # finds both outboxes empty: off the work list
    assert await store.outbox_roots() == []
    assert await spool.count() == 6
    totals = await spool.totals_by_account()
    assert totals == await committed(store, ["alice", "bob"])
    # 1.234567 + 2 minutes of voice (1.20) + 3 MB of data (0.03); postpaid: 3 SMS + 2 minutes + 3 MB.
    assert totals == {"alice": 1_234_567 + 1_200_000 + 30_000, "bob": 3 * 1_234_567 + 1_200_000 + 30_000}
    bob = await store.balance("bob", NOW)
    assert bob is not None and bob.unbilled_micros == totals["bob"]  # postpaid: billed on the credit line
    async with spool.engine.connect() as connection:
        query = text("SELECT DISTINCT account_id, payment_type FROM usage_records")
        payments = {str(row[0]): str(row[1]) for row in await connection.execute(query)}
    assert payments == {"alice": "prepaid", "bob": "postpaid"}
    stats = spool.stats()
    assert (stats.records_written, stats.duplicates_ignored, stats.backlog_records) == (6, 0, 0)


@pytest.mark.parametrize("lost", [{"acct-0"}, {"acct-1", "acct-2"}, {"acct-0", "acct-1", "acct-2"}])
async def test_a_crash_between_commit_and_acknowledgement_stores_each_record_once(
    store: BalanceStore, spool: Spool, lost: set[str]
) -> None:
    expected: list[str] = []
    for index in range(3):
        await prepaid(store, f"acct-{index}")
        expected += [await sms(store, f"acct-{index}", f"s-{index}-{number}") for number in range(4)]

    with pytest.raises(ConnectionError):
        await spool.drain_once(AcknowledgementLost(store, lost))
    assert sorted(await spooled_ids(spool)) == sorted(expected)  # committed before the crash
    left = await store.usage_records()
    assert {record.account_id for record in left} == lost and len(left) == 4 * len(lost)  # not trimmed

    assert await spool.drain_once(store) == 0  # everything read again was already stored
    assert sorted(await spooled_ids(spool)) == sorted(expected)
    assert await store.usage_records() == []
    assert spool.stats().duplicates_ignored == len(left)


async def test_a_cancelled_drain_leaves_each_record_once(store: BalanceStore, spool: Spool) -> None:
    rng = random.Random(4)
    expected: list[str] = []
    for index in range(20):
        await postpaid(store, f"post-{index}")
        expected += [await sms(store, f"post-{index}", f"c-{index}-{number}") for number in range(30)]
    for _ in range(30):  # cancel at many points: reading, inserting, committing, acknowledging
        task = asyncio.create_task(spool.drain_once(store, batch_size=rng.randint(1, 64)))
        for _ in range(rng.randint(0, 40)):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await spool.drain_once(store)
    ids = await spooled_ids(spool)
    assert len(ids) == len(set(ids)) and sorted(ids) == sorted(expected)
    assert await store.usage_records() == []


async def test_concurrent_drains_do_not_trim_records_twice(store: BalanceStore, spool: Spool) -> None:
    await prepaid(store, "busy")
    expected = [await sms(store, "busy", f"e-{number}") for number in range(100)]
    drained = await asyncio.gather(*(spool.drain_once(store, batch_size=10) for _ in range(4)))
    assert sum(drained) == 100
    assert sorted(await spooled_ids(spool)) == sorted(expected)
    assert await store.usage_records() == []


async def test_a_record_written_while_its_outbox_leaves_the_work_list_is_not_stranded(
    store: BalanceStore, spool: Spool
) -> None:
    await prepaid(store, "hank")
    first = await sms(store, "hank", "early")
    assert await spool.drain_once(store) == 1
    racing = ChargeAfterEmptyRead(store)
    assert await spool.drain_once(racing) == 0  # found empty; "late" is committed meanwhile
    assert racing.charged == ["late|0|1"]
    assert await store.outbox_roots() == ["hank"]  # still listed, so the next drain finds it
    assert await spool.drain_once(store) == 1
    assert sorted(await spooled_ids(spool)) == sorted([first, "late|0|1"])


async def test_a_restart_keeps_every_record(store: BalanceStore, tmp_path: Path) -> None:
    directory = tmp_path / "restart"  # the directory is created on open
    await prepaid(store, "carol")
    await postpaid(store, "dave")
    engine = await open_database(sqlite_url(directory))
    first = Spool(engine)
    before = [await sms(store, "carol", "r-1"), *await call(store, "dave", "r-2", 30)]
    assert await first.drain_once(store) == 3
    await first.close()
    await engine.dispose()

    after = [await sms(store, "dave", "r-3", events=2)]
    engine = await open_database(sqlite_url(directory))  # the schema exists: migrating again changes nothing
    second = Spool(engine)
    try:
        assert await second.count() == 3
        assert await second.drain_once(store) == 1
        assert sorted(await spooled_ids(second)) == sorted(before + after)
        assert await second.totals_by_account() == await committed(store, ["carol", "dave"])
        async with engine.connect() as connection:
            pragmas = [
                (await connection.execute(text(f"PRAGMA {name}"))).scalar() for name in ("journal_mode", "synchronous")
            ]
        assert pragmas == ["wal", 2]  # 2: FULL, a commit survives a power loss (ocs.billing.spool)
    finally:
        await second.close()
        await engine.dispose()


async def test_thousands_of_records_across_many_hierarchies_while_charging(store: BalanceStore, spool: Spool) -> None:
    """The writer task runs while charges arrive; afterwards the spool equals the engine's books."""
    rng = random.Random(7)
    accounts: list[str] = []
    for index in range(60):
        await prepaid(store, f"p{index}")
        await postpaid(store, f"q{index}")
        accounts += [f"p{index}", f"q{index}"]
    for index in range(20):  # companies: the children's records go to the company's outbox
        await provision(store, Account(f"co{index}", buckets=(Bucket(1, BucketKind.MAIN, 10_000 * EUR),)))
        for child in range(3):
            child_id = f"co{index}-{child}"
            await provision(store, Account(child_id, parent_id=f"co{index}", child_cap_micros=2_000 * EUR))
            accounts.append(child_id)

    writer = asyncio.create_task(spool.run(store, batch_size=50, interval_seconds=0.05))
    expected: list[str] = []
    for number in range(2_000):
        account_id = rng.choice(accounts)
        if number % 10 == 0:
            expected += await call(store, account_id, f"v{number}", rng.randint(1, 300))
        else:
            expected.append(await sms(store, account_id, f"m{number}", events=rng.randint(1, 3)))
        if number % 400 == 0:
            await asyncio.sleep(0.02)  # let the writer take batches mid-way, as in a live server
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    await spool.drain_once(store)  # what arrived after its last tick (a shutdown's final drain)

    ids = await spooled_ids(spool)
    assert len(ids) == len(expected) == len(set(ids)) and set(ids) == set(expected)
    assert await spool.totals_by_account() == await committed(store, accounts)
    assert await store.usage_records() == []


async def test_stats_report_lag_and_backlog(store: BalanceStore, spool: Spool) -> None:
    opened = spool.stats(now=0.0)
    assert (opened.last_drain_at, opened.lag_seconds) == (0.0, 0.0)
    await prepaid(store, "erin")
    for number in range(5):
        await sms(store, "erin", f"l-{number}")
    await spool.drain_once(store)
    stats = spool.stats()
    assert stats.backlog_records == 5 and stats.records_written == 5
    assert stats.last_drain_at > 0 and 0 <= stats.lag_seconds < 5
    assert spool.stats(now=stats.last_drain_at + 60).lag_seconds >= 60  # no drain for a minute


async def test_batch_size_must_be_positive(store: BalanceStore, spool: Spool) -> None:
    with pytest.raises(ValueError):
        await spool.drain_once(store, batch_size=0)


# -- export ------------------------------------------------------------------------------------


async def exported(
    spool: Spool,
    fmt: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    account_id: str | None = None,
) -> tuple[int, str]:
    """Export to a file (a regular file: its records are marked exported)."""
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / f"export.{fmt}"
        with target.open("w", encoding="utf-8", newline="") as out:
            written = await export(spool.engine, since=since, until=until, fmt=fmt, out=out, account_id=account_id)
        with target.open(encoding="utf-8", newline="") as written_file:  # line ends as written
            return written, written_file.read()


async def test_export_csv_and_jsonl_for_a_period_and_an_account(store: BalanceStore, any_spool: Spool) -> None:
    spool = any_spool
    await prepaid(store, "frank")
    await postpaid(store, "grace")
    hour = 3_600
    await sms(store, "frank", "x-0", now=NOW - 1)  # before the period
    await sms(store, "frank", "x-1", now=NOW)  # the first second of the period (inclusive)
    await sms(store, "grace", "x-2", events=2, now=NOW + hour - 1)  # the last second of the period
    await sms(store, "grace", "x-3", now=NOW + hour)  # the end (exclusive)
    await call(store, "grace", "x-4", 90, now=NOW + 60)  # commits at NOW + 150: 90 s used, billed as 2 minutes; 3 MB
    await spool.drain_once(store)

    since = datetime.fromtimestamp(NOW, UTC)
    until = since + timedelta(hours=1)
    written, text = await exported(spool, "csv", since=since, until=until)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert written == len(rows) == 4
    assert tuple(rows[0]) == FIELDS
    assert [row["record_id"] for row in rows] == ["x-1|0|1", "x-4|1|1", "x-4|1|2", "x-2|0|1"]  # by time
    assert [(row["micros"], row["amount"]) for row in rows] == [
        ("1234567", "1.234567"),
        ("1200000", "1.200000"),
        ("30000", "0.030000"),
        ("2469134", "2.469134"),
    ]
    assert rows[0]["at"] == "2023-11-14T22:13:20Z" and rows[0]["payment_type"] == "prepaid"
    assert rows[1]["payment_type"] == "postpaid" and rows[1]["units"] == "90" and rows[1]["unit"] == "seconds"
    assert text.endswith("\r\n")  # RFC 4180 line ends

    written, text = await exported(spool, "jsonl", since=since, until=until, account_id="grace")
    records = [json.loads(line) for line in text.splitlines()]
    assert written == len(records) == 3
    assert [record["record_id"] for record in records] == ["x-4|1|1", "x-4|1|2", "x-2|0|1"]
    assert records[2] == {
        "record_id": "x-2|0|1",
        "account_id": "grace",
        "session_id": "x-2",
        "request_number": 0,
        "rating_group": 1,
        "service_identifier": None,
        "service": "sms",
        "unit": "events",
        "units": 2,
        "micros": 2_469_134,
        "amount": "2.469134",
        "payment_type": "postpaid",
        "at_seconds": NOW + hour - 1,
        "at": "2023-11-14T23:13:19Z",
    }

    # Open bounds, and the same instant written in another time zone (bounds are instants).
    assert (await exported(spool, "jsonl"))[0] == 6
    assert (await exported(spool, "jsonl", until=since))[0] == 1
    assert (await exported(spool, "jsonl", since=until))[0] == 1
    paris = since.astimezone(timezone(timedelta(hours=1)))
    assert (await exported(spool, "csv", since=paris, until=until, account_id="frank"))[0] == 1
    assert (await exported(spool, "csv", account_id="nobody")) == (0, "\r\n".join([",".join(FIELDS), ""]))


async def test_export_refuses_an_unknown_format(spool: Spool) -> None:
    with pytest.raises(ValueError, match="format"):
        await export(spool.engine, since=None, until=None, fmt="xml", out=io.StringIO())


def test_decimal_amounts_are_exact() -> None:
    assert decimal_amount(0) == "0.000000"
    assert decimal_amount(1) == "0.000001"
    assert decimal_amount(999_999) == "0.999999"
    assert decimal_amount(10**15 + 1) == "1000000000.000001"  # beyond a float's 15-16 digits
    assert decimal_amount(-1_500_000) == "-1.500000"


def test_period_bounds_round_up_to_whole_seconds() -> None:
    moment = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert epoch_seconds_ceiling(moment) == NOW
    assert epoch_seconds_ceiling(moment.replace(tzinfo=None)) == NOW  # naive is UTC
    assert epoch_seconds_ceiling(moment + timedelta(microseconds=1)) == NOW + 1
    assert epoch_seconds_ceiling(moment - timedelta(microseconds=1)) == NOW
    assert epoch_seconds_ceiling(datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)) == 0


# -- retention -----------------------------------------------------------------------------------

DAY = 86_400


async def exported_ids(spool: Spool) -> list[str]:
    async with spool.engine.connect() as connection:
        query = text("SELECT record_id FROM usage_records WHERE exported_at IS NOT NULL ORDER BY record_number")
        return [str(row[0]) for row in await connection.execute(query)]


async def test_an_export_marks_exactly_the_records_it_wrote(store: BalanceStore, spool: Spool) -> None:
    """Nothing tracked exports before (issue 17): now each record written is marked."""
    await prepaid(store, "hugo")
    first = await sms(store, "hugo", "m-1", now=NOW)
    await sms(store, "hugo", "m-2", now=NOW + DAY)
    await spool.drain_once(store)
    since = datetime.fromtimestamp(NOW, UTC)
    assert (await exported(spool, "csv", since=since, until=since + timedelta(hours=1)))[0] == 1
    assert await exported_ids(spool) == [first]


async def test_an_export_to_standard_output_marks_nothing(store: BalanceStore, spool: Spool) -> None:
    """Issue 17 review F4: an export to a terminal, /dev/null or a pipe was marked once flushed,
    and the retention then deleted records that exist in no other copy. Only a regular file,
    synced, marks."""
    await prepaid(store, "hans")
    await sms(store, "hans", "m-1", now=NOW)
    await spool.drain_once(store)
    read_end, write_end = os.pipe()
    with os.fdopen(read_end) as reader, os.fdopen(write_end, "w") as pipe, open(os.devnull, "w") as null:
        for out in (pipe, null, io.StringIO()):
            assert await export(spool.engine, since=None, until=None, fmt="jsonl", out=out) == 1
        pipe.close()
        assert '"account_id":"hans"' in reader.read()
    assert await exported_ids(spool) == []
    assert (await exported(spool, "jsonl"))[0] == 1 and len(await exported_ids(spool)) == 1


async def test_retention_deletes_old_exported_records_only(store: BalanceStore, any_spool: Spool) -> None:
    """Old and exported: deleted, in batches. Old but never exported (prepaid or postpaid, not
    yet billed): kept. Exported but young: kept."""
    spool = any_spool
    await prepaid(store, "ivy")
    await postpaid(store, "jon")
    old_exported = [await sms(store, "ivy", f"old-{index}", now=NOW) for index in range(5)]
    old_kept = [await sms(store, "ivy", "old-ivy", now=NOW), await sms(store, "jon", "old-jon", now=NOW)]
    young = await sms(store, "ivy", "young", now=NOW + 2 * DAY)
    await spool.drain_once(store)
    since = datetime.fromtimestamp(NOW, UTC)
    async with spool.engine.begin() as connection:  # exported, as ExportMarker marks them
        await usage.mark_exported(connection, old_exported, NOW)
    assert (await exported(spool, "jsonl", since=since + timedelta(days=2)))[0] == 1  # marks `young`

    deleted = await spool.delete_exported(older_than_seconds=DAY, batch_size=2, now=NOW + 2 * DAY)

    assert deleted == 5
    assert sorted(await spooled_ids(spool)) == sorted([*old_kept, young])
    assert await spool.delete_exported(older_than_seconds=DAY, batch_size=2, now=NOW + 2 * DAY) == 0
    with pytest.raises(ValueError, match="batch_size"):
        await spool.delete_exported(older_than_seconds=DAY, batch_size=0)


async def test_retention_keeps_postpaid_records_until_billed(store: BalanceStore, any_spool: Spool) -> None:
    """A postpaid record is the bill run's input: exported and old, it stays until an invoice
    has billed it (issue 14); then it goes as a prepaid one does."""
    spool = any_spool
    await prepaid(store, "mia")
    await postpaid(store, "ned")
    prepaid_record = await sms(store, "mia", "p-1", now=NOW)
    unbilled, billed = [await sms(store, "ned", f"b-{index}", now=NOW) for index in range(2)]
    await spool.drain_once(store)
    async with spool.engine.begin() as connection:
        await usage.mark_exported(connection, [prepaid_record, unbilled, billed], NOW)
        assert await usage.mark_billed(connection, [billed], "inv-1") == 1

    assert await spool.delete_exported(older_than_seconds=DAY, batch_size=10, now=NOW + 2 * DAY) == 2
    assert await spooled_ids(spool) == [unbilled]


async def test_records_name_rating_group_and_service_identifier_apart(store: BalanceStore, spool: Spool) -> None:
    """One Rating-Group, two Service-Identifiers: two quotas, two records, each naming both."""
    await prepaid(store, "lena")
    opening = tuple(
        ChargeItem(10, "data", Unit.OCTETS, DATA, requested_units=2_000_000, service_identifier=identifier)
        for identifier in (1, 2)
    )
    assert (await store.charge(ChargeRequest("lena", "si", 0, opening, now_seconds=NOW))).outcome is Outcome.OK
    closing = (
        ChargeItem(10, "data", Unit.OCTETS, DATA, used_units=1_000_000, service_identifier=1),
        ChargeItem(10, "data", Unit.OCTETS, DATA, used_units=2_000_000, service_identifier=2),
        ChargeItem(10, "data", Unit.OCTETS, DATA, used_units=1_000_000),  # no reservation: charged directly
    )
    request = ChargeRequest("lena", "si", 1, closing, now_seconds=NOW + 60, terminate=True)
    assert (await store.charge(request)).outcome is Outcome.OK
    assert await spool.drain_once(store) == 3
    written, text = await exported(spool, "csv", account_id="lena")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert written == 3
    assert [(row["record_id"], row["rating_group"], row["service_identifier"], row["units"]) for row in rows] == [
        ("si|1|10/1", "10", "1", "1000000"),
        ("si|1|10/2", "10", "2", "2000000"),
        ("si|1|10", "10", "", "1000000"),
    ]
