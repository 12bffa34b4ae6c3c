"""The bill run's catch-up and its retry, on the real stores (SQLite and a private PostgreSQL, a
real Redis): a server down over a cycle's close bills every missed cycle at its next run, oldest
first, each invoice with its own cycle's records, at most ``MAX_CATCH_UP_CYCLES`` back; records
billed by someone else between a page's read and its commit make the page drafted again."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from balance.store import BalanceStore
from balance.types import Account, Outcome, PaymentType
from ocs.billing.bill_draft import LineFacts
from ocs.billing.bill_facts import PayingAccount
from ocs.billing.bill_run import BillRun, BillRunReport
from ocs.billing.cycles import MAX_CATCH_UP_CYCLES, Period, cycles_to_bill
from ocs.billing.invoices import read_bill
from ocs.billing.ledger_audit import ledger_audit
from ocs.db.billing import invoices
from ocs.db.usage import mark_billed, usage_records
from tests.balance.conftest import embedded_redis
from tests.ocs.bill_run_support import (
    UNIT,
    add_customer,
    add_line,
    balance_store,
    catalog,
    charge,
    database,
    spool,
)
from tests.ocs.postgres_support import postgresql_url

__all__ = ["balance_store", "database", "embedded_redis", "postgresql_url"]


def seconds(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp())


def clock(day: date) -> float:
    return datetime(day.year, day.month, day.day, 3, tzinfo=UTC).timestamp()


def test_the_cycles_to_bill_are_the_missed_ones_oldest_first_at_most_a_year_back() -> None:
    assert cycles_to_bill(1, date(2026, 4, 1), None) == [Period(date(2026, 3, 1), date(2026, 4, 1))]
    assert cycles_to_bill(1, date(2026, 4, 1), date(2026, 3, 1)) == []  # billed already
    assert cycles_to_bill(5, date(2026, 4, 20), date(2026, 1, 5)) == [
        Period(date(2026, 2, 5), date(2026, 3, 5)),
        Period(date(2026, 3, 5), date(2026, 4, 5)),
    ]
    far = cycles_to_bill(1, date(2026, 4, 1), date(2020, 1, 1))
    assert len(far) == MAX_CATCH_UP_CYCLES == 12
    assert (far[0].start, far[-1].start) == (date(2025, 4, 1), date(2026, 3, 1))


async def invoiced(connection: AsyncConnection) -> list[tuple[str, date]]:
    rows = await connection.execute(
        select(invoices.c.invoice_id, invoices.c.period_start).order_by(invoices.c.sequence)
    )
    return [(row[0], row[1]) for row in rows]


async def test_a_run_after_downtime_bills_every_missed_cycle_oldest_first_with_its_own_records(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await add_customer(database, "C1", billing_account_id="B1")
    await add_line(database, "L1", "C1")
    await balance_store.provision(Account("L1", payment_type=PaymentType.POSTPAID, credit_limit_micros=9 * UNIT))
    assert await charge(balance_store, "L1", "jan", 1, seconds(date(2026, 1, 20))) is Outcome.OK
    await spool(balance_store, database)
    first = await BillRun(database, balance_store, catalog(), clock=lambda: clock(date(2026, 2, 1))).run(
        date(2026, 2, 1)
    )
    assert first.invoices == 1
    # The server is down on 1 March: February closes unbilled; usage goes on in February and March.
    assert await charge(balance_store, "L1", "feb", 2, seconds(date(2026, 2, 10))) is Outcome.OK
    assert await charge(balance_store, "L1", "mar", 3, seconds(date(2026, 3, 10))) is Outcome.OK
    await spool(balance_store, database)
    run = BillRun(database, balance_store, catalog(), clock=lambda: clock(date(2026, 4, 2)))
    report = await run.run(date(2026, 4, 2))
    assert (report.invoices, report.records, report.cuts, report.problems) == (2, 2, 2, [])
    async with database.connect() as connection:
        assert await invoiced(connection) == [
            ("main-00000001", date(2026, 1, 1)),
            ("main-00000002", date(2026, 2, 1)),  # the missed cycle first: numbers follow time
            ("main-00000003", date(2026, 3, 1)),
        ]
        usage = {}
        for number in ("main-00000002", "main-00000003"):
            bill = await read_bill(connection, number)
            assert bill is not None
            usage[number] = [line.amount_micros for line in bill.lines if line.kind.value == "usage"]
    assert usage == {"main-00000002": [2 * UNIT], "main-00000003": [3 * UNIT]}  # each its own cycle's
    view = await balance_store.balance("L1", seconds(date(2026, 4, 2)))
    assert view is not None and view.unbilled_micros == 0
    again = await run.run(date(2026, 4, 2))
    assert (again.invoices, again.skipped) == (0, 1)
    assert await ledger_audit(database) == []


class RecordsBilledMeanwhile(BillRun):
    """Between the page's read and its commit, another invoice bills one of its records (once)."""

    interfered = False

    async def _renew(
        self,
        todo: list[PayingAccount],
        periods: dict[str, Period],
        paid_lines: dict[str, list[LineFacts]],
        today: date,
        report: BillRunReport,
    ) -> None:
        if not self.interfered:
            self.interfered = True
            async with self.engine.begin() as connection:
                assert await mark_billed(connection, ["s1|0|1"], "elsewhere") == 1
        await super()._renew(todo, periods, paid_lines, today, report)


async def test_records_billed_meanwhile_make_the_page_drafted_again_without_them(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await add_customer(database, "C1", billing_account_id="B1")
    await add_line(database, "L1", "C1")
    await balance_store.provision(Account("L1", payment_type=PaymentType.POSTPAID, credit_limit_micros=9 * UNIT))
    assert await charge(balance_store, "L1", "s1", 1, seconds(date(2026, 2, 10))) is Outcome.OK
    assert await charge(balance_store, "L1", "s2", 2, seconds(date(2026, 2, 11))) is Outcome.OK
    assert await spool(balance_store, database) == 2
    run = RecordsBilledMeanwhile(database, balance_store, catalog(), clock=lambda: clock(date(2026, 3, 1)))
    report = await run.run(date(2026, 3, 1))
    assert (report.invoices, report.records) == (1, 1)
    async with database.connect() as connection:
        billed = dict((await connection.execute(select(usage_records.c.record_id, usage_records.c.invoice_id))).all())
        bill = await read_bill(connection, "main-00000001")
    assert billed == {"s1|0|1": "elsewhere", "s2|0|1": "main-00000001"}
    assert bill is not None
    assert [line.amount_micros for line in bill.lines if line.kind.value == "usage"] == [2 * UNIT]
