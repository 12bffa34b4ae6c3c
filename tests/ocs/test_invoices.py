"""The store of invoices on the real stores (SQLite and a private PostgreSQL): a period is
invoiced once, numbers are gapless per legal entity under concurrent issuers and across a
rolled-back issue, amounts come from the lines, and every invoice queues one delivery event."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing.invoices import Invoices, invoice_amounts, issue_many, line_rows
from ocs.billing.ledger_audit import rounding_problems
from ocs.billing.minor_units import minor_unit_micros, round_to_minor_unit
from ocs.billing.payments import Payments
from ocs.billing.values import BillState, DraftLine, LineKind, NewPayment
from ocs.customers.service import CustomerRefusal, Problem
from ocs.db.billing import BILLING_TABLES, invoice_lines
from ocs.db.billing import invoices as invoice_table
from ocs.db.schema import metadata
from tests.ocs.billing_support import MOMENT, UNIT, Clock, add_account, clock, database, draft
from tests.ocs.postgres_support import postgresql_url

__all__ = ["clock", "database", "postgresql_url"]


async def test_a_period_is_invoiced_once_and_the_second_issue_writes_nothing(
    database: AsyncEngine, clock: Clock
) -> None:
    await add_account(database, "ba-1")
    store = Invoices(database, clock=clock)
    first = await store.issue(draft("ba-1", 1, 30))
    again = await store.issue(draft("ba-1", 1, 99))  # a rerun (even a different computation) changes nothing
    assert first.created and not again.created
    assert again.bill == first.bill and first.bill.bill_no == "main-00000001"
    assert first.bill.amount_due.value_micros == 30 * UNIT and first.bill.state is BillState.SENT
    assert [line.kind for line in first.bill.lines] == [LineKind.RENTAL]
    assert len(await store.undelivered()) == 1
    async with database.connect() as connection:
        assert (await connection.execute(select(func.count()).select_from(invoice_table))).scalar_one() == 1


async def test_amounts_come_from_the_lines_and_a_negative_bill_is_refused(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    made = draft("ba-1", 1, 100, tax_micros=20 * UNIT)
    lines = [
        *made.lines,
        DraftLine(kind=LineKind.DISCOUNT, description="10% off", amount_micros=-10 * UNIT, node_id="dept-a"),
        DraftLine(kind=LineKind.USAGE, description="calls", amount_micros=5 * UNIT, node_id="dept-a"),
    ]
    assert invoice_amounts(line_rows(made.model_copy(update={"lines": lines}), "EUR")) == {
        "subtotal_micros": 105 * UNIT,
        "discount_micros": 10 * UNIT,
        "tax_micros": 20 * UNIT,
        "total_micros": 115 * UNIT,
    }
    store = Invoices(database, clock=clock)
    bill = (await store.issue(made.model_copy(update={"lines": lines}))).bill
    assert bill.tax_included_amount.value_micros == 115 * UNIT and bill.tax_excluded_amount.value_micros == 95 * UNIT
    assert [(total.node_id, total.amount_micros) for total in bill.subtotals] == [
        (None, 100 * UNIT),
        ("dept-a", -5 * UNIT),
    ]
    negative = [DraftLine(kind=LineKind.DISCOUNT, description="too much", amount_micros=-1)]
    with pytest.raises(CustomerRefusal) as refused:
        await store.issue(draft("ba-1", 2, 1).model_copy(update={"lines": negative}))
    assert refused.value.field == "lines" and refused.value.problem is Problem.REFUSED


async def test_an_unknown_billing_account_is_named(database: AsyncEngine, clock: Clock) -> None:
    with pytest.raises(CustomerRefusal) as refused:
        await Invoices(database, clock=clock).issue(draft("nobody", 1, 10))
    assert refused.value.field == "billing_account_id" and refused.value.problem is Problem.NOT_FOUND


async def test_a_rolled_back_issue_consumes_no_number(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    await add_account(database, "ba-2")
    store = Invoices(database, clock=clock)

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with database.begin() as connection:  # the bill run's own transaction, which then fails
            issued = await store.issue(draft("ba-1", 1, 10), connection=connection)
            assert issued.bill.bill_no == "main-00000001"
            raise Crash
    assert (await store.issue(draft("ba-2", 1, 10))).bill.bill_no == "main-00000001"
    assert (await store.issue(draft("ba-1", 1, 10))).bill.bill_no == "main-00000002"
    assert (await store.issue(draft("ba-1", 1, 10, legal_entity="shop"))).created is False  # the period is taken
    assert (await store.issue(draft("ba-1", 2, 10, legal_entity="shop"))).bill.bill_no == "shop-00000001"


async def test_concurrent_issuers_get_distinct_gapless_numbers(database: AsyncEngine, clock: Clock) -> None:
    accounts = [f"ba-{index}" for index in range(12)]
    for account in accounts:
        await add_account(database, account)
    store = Invoices(database, clock=clock)
    # every account twice at once: each period must be issued once, the numbers 1..12 without a gap
    issued = await asyncio.gather(*(store.issue(draft(account, 1, 10)) for account in accounts * 2))
    numbers = sorted(result.bill.bill_no for result in issued if result.created)
    assert numbers == [f"main-{sequence:08d}" for sequence in range(1, 13)]
    assert sum(result.created for result in issued) == 12


async def test_the_delivery_outbox_is_read_and_acknowledged_once(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    store = Invoices(database, clock=clock)
    bill = (await store.issue(draft("ba-1", 1, 10))).bill
    [event] = await store.undelivered()
    assert event.kind == "invoice_issued" and event.invoice_id == bill.id
    assert event.payload["total_micros"] == 10 * UNIT and event.payload["due_date"] == date(2026, 2, 20).isoformat()
    assert await store.acknowledge(event.event_id) is True
    assert await store.acknowledge(event.event_id) is False
    assert await store.undelivered() == []
    listed = await store.bills(billing_account_id="ba-1", state=BillState.SENT, limit=10, offset=0)
    assert [found.id for found in listed.bills] == [bill.id]


async def test_the_migration_makes_the_billing_tables_as_they_are_defined(database: AsyncEngine) -> None:
    names = {table.name for table in BILLING_TABLES}

    def billing(item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        return (name if kind == "table" else item.table.name) in names

    def differences(connection: Connection) -> list[Any]:
        options = {"compare_type": True, "include_object": billing}
        return list(compare_metadata(MigrationContext.configure(connection, opts=options), metadata))

    async with database.connect() as connection:
        assert await connection.run_sync(differences) == []


def test_amounts_round_half_away_from_zero_to_the_currencys_minor_unit() -> None:
    eur = [423_207_985, 423_205_000, 423_204_999, -5_000, -4_999, 0]
    assert [round_to_minor_unit(micros, "EUR") for micros in eur] == [
        423_210_000,
        423_210_000,
        423_200_000,
        -10_000,
        0,
        0,
    ]
    assert round_to_minor_unit(1_234_500_000, "JPY") == 1_235_000_000  # no decimals
    assert round_to_minor_unit(1_234_567, "KWD") == 1_235_000  # three
    assert [minor_unit_micros(currency) for currency in ("USD", "JPY", "KWD", "CLF")] == [10_000, UNIT, 1_000, 100]


async def test_an_invoice_is_in_minor_units_with_its_lines_as_priced_kept_and_paid_by_its_rounded_total(
    database: AsyncEngine, clock: Clock
) -> None:
    await add_account(database, "ba-1")
    usage = DraftLine(kind=LineKind.USAGE, description="calls", amount_micros=423_207_985, tax_micros=80_409_517)
    discount = DraftLine(kind=LineKind.DISCOUNT, description="5% off", amount_micros=-21_160_399)
    made = draft("ba-1", 1, 1).model_copy(update={"lines": [usage, discount]})
    bill = (await Invoices(database, clock=clock).issue(made)).bill
    assert [
        (line.amount_micros, line.tax_micros, line.priced_amount_micros, line.priced_tax_micros) for line in bill.lines
    ] == [(423_210_000, 80_410_000, 423_207_985, 80_409_517), (-21_160_000, 0, -21_160_399, 0)]
    total = 423_210_000 - 21_160_000 + 80_410_000  # 482.46 EUR: the sum of the rounded lines
    assert (bill.amount_due.value_micros, bill.tax_amount.value_micros) == (total, 80_410_000)
    assert bill.tax_excluded_amount.value_micros == 402_050_000
    paid = NewPayment(billing_account_id="ba-1", reference="r-1", amount_micros=total)
    outcome = await Payments(database, clock=clock).record_payment(paid, "bank")
    assert outcome.settled_invoices == [bill.id] and outcome.payment.unallocated_micros == 0
    async with database.connect() as connection:
        assert await rounding_problems(connection) == []


async def test_the_bill_runs_batch_issues_in_the_accounts_currency_and_the_audit_finds_a_line_not_rounded(
    database: AsyncEngine,
) -> None:
    await add_account(database, "ba-jpy", currency="JPY")
    line = DraftLine(kind=LineKind.RENTAL, description="rental", amount_micros=1_234_500_000, tax_micros=246_900_000)
    async with database.begin() as connection:
        batch = await issue_many(connection, [draft("ba-jpy", 1, 1).model_copy(update={"lines": [line]})], MOMENT)
    bill = await Invoices(database).bill(batch.issued[0][1])
    assert (bill.lines[0].amount_micros, bill.lines[0].tax_micros) == (1_235_000_000, 247_000_000)
    assert bill.amount_due.value_micros == 1_482_000_000
    async with database.begin() as connection:
        await connection.execute(update(invoice_lines).values(tax_micros=246_900_000))  # as priced: not in yen
        assert await rounding_problems(connection) == [
            f"invoice {bill.id} line 1: tax 246900000 micros is not 246900000 micros rounded to the JPY minor unit"
            " (1000000 micros)"
        ]
