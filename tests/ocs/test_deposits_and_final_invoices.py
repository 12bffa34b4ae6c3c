"""Deposits (ocs/billing/deposits.py) and final invoices (ocs/billing/final_invoices.py) through
the bill run on the real stores (SQLite and a private PostgreSQL, a real Redis): a pending deposit
is charged once, as its own untaxed line of the customer's next invoice, and held from then on;
dunning's termination gets its final invoice at the next run (rentals prorated to the
termination date, all unbilled usage), once, with the held deposit credited back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.store import BalanceStore
from balance.types import Account, Outcome, PaymentType
from ocs.billing.bill_run import BillRun
from ocs.billing.cycles import Period, prorate
from ocs.billing.dunning import FINAL_INVOICE_REQUESTED
from ocs.billing.invoices import Invoices
from ocs.billing.ledger_audit import ledger_audit
from ocs.billing.payments import Payments
from ocs.billing.values import LineKind, NewPayment, PaymentSource
from ocs.db.billing import delivery_outbox
from ocs.db.orders import deposits
from tests.balance.conftest import embedded_redis
from tests.ocs.bill_run_support import CLEARED, UNIT, add_customer, add_line, balance_store, catalog, charge, spool
from tests.ocs.postgres_support import business_database, postgresql_url

__all__ = ["balance_store", "embedded_redis", "postgresql_url"]

TABLES = ("deposits", *CLEARED)
CLOCK = datetime(2026, 2, 1, 3, tzinfo=UTC).timestamp


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, TABLES) as made:
        yield made
        async with made.begin() as connection:  # the session's PostgreSQL is shared: leave no rows
            for table in TABLES:
                await connection.execute(text(f"DELETE FROM {table}"))


async def customer_with_a_deposit(engine: AsyncEngine, terminated: datetime | None = None) -> None:
    """C1 (billing account B1, cycle day 1) whose credit class asked for a 50.00 deposit with its
    first postpaid line, C1-L1 (fixed_postpaid, 14.99 a month), in service since 2026-01-01."""
    customer_id = "C1"
    await add_customer(engine, customer_id, billing_account_id="B1")
    await add_line(engine, f"{customer_id}-L1", customer_id, terminated=terminated)
    async with engine.begin() as connection:
        await connection.execute(
            insert(deposits).values(
                customer_id=customer_id,
                line_id=f"{customer_id}-L1",
                credit_class="C",
                amount_micros=50 * UNIT,
                currency="EUR",
                state="pending",
                created_at=datetime(2026, 1, 1),
            )
        )


async def deposit_rows(engine: AsyncEngine) -> list[tuple[str, str | None]]:
    async with engine.connect() as connection:
        found = await connection.execute(
            select(deposits.c.state, deposits.c.invoice_id).order_by(deposits.c.deposit_id)
        )
        return [(row.state, row.invoice_id) for row in found]


async def test_a_pending_deposit_is_charged_once_as_its_own_untaxed_line(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await customer_with_a_deposit(database)
    run = BillRun(database, balance_store, catalog(), clock=CLOCK)
    assert (await run.run(date(2026, 2, 1))).invoices == 1
    bill = await Invoices(database).bill("main-00000001")
    deposit = [line for line in bill.lines if line.kind is LineKind.DEPOSIT]
    assert [(line.amount_micros, line.tax_micros, line.description) for line in deposit] == [
        (50 * UNIT, 0, "Deposit (credit class C)")
    ]
    charges = sum(line.amount_micros + line.tax_micros for line in bill.lines if line.kind is not LineKind.DEPOSIT)
    assert bill.amount_due.value_micros == charges + 50 * UNIT
    assert await deposit_rows(database) == [("invoiced", "main-00000001")]
    assert (await run.run(date(2026, 2, 1))).invoices == 0  # the rerun: nothing new
    assert (await run.run(date(2026, 3, 1))).invoices == 1
    february = await Invoices(database).bill("main-00000002")
    assert LineKind.DEPOSIT not in [line.kind for line in february.lines]  # charged once, held since
    assert await deposit_rows(database) == [("invoiced", "main-00000001")]


async def test_a_terminated_account_gets_its_final_invoice_at_the_next_run_once_with_its_deposit_credited(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await customer_with_a_deposit(database, terminated=datetime(2026, 2, 10, 9))
    await balance_store.provision(Account("C1-L1", payment_type=PaymentType.POSTPAID, credit_limit_micros=9 * UNIT))
    in_february = int(datetime(2026, 2, 5, tzinfo=UTC).timestamp())
    assert await charge(balance_store, "C1-L1", "s1", 3, in_february) is Outcome.OK
    assert await spool(balance_store, database) == 1
    run = BillRun(database, balance_store, catalog(), clock=CLOCK)
    await run.run(date(2026, 2, 1))  # January, the deposit on it
    january = await Invoices(database).bill("main-00000001")
    await Payments(database).record_payment(
        NewPayment(billing_account_id="B1", reference="jan", amount_micros=january.amount_due.value_micros), "bank"
    )
    async with database.begin() as connection:  # what dunning's terminate step writes (ocs.billing.dunning)
        payload = {"billing_account_id": "B1", "customer_id": "C1", "termination_date": "2026-02-10"}
        await connection.execute(
            insert(delivery_outbox).values(
                kind=FINAL_INVOICE_REQUESTED, invoice_id=None, payload=payload, created_at=datetime(2026, 2, 10, 9)
            )
        )

    report = await run.run(date(2026, 2, 11))
    assert (report.invoices, report.final_invoices, report.records) == (1, 1, 1)
    final = await Invoices(database).bill("main-00000002")
    assert (final.billing_period.start_date, final.billing_period.end_date) == (date(2026, 2, 1), date(2026, 2, 10))
    rental = next(line for line in final.lines if line.kind is LineKind.RENTAL)
    february = Period(date(2026, 2, 1), date(2026, 3, 1))
    assert rental.priced_amount_micros == prorate(14_990_000, Period(date(2026, 2, 1), date(2026, 2, 10)), february)
    usage = next(line for line in final.lines if line.kind is LineKind.USAGE)
    assert usage.amount_micros == 3 * UNIT
    assert LineKind.DEPOSIT not in [line.kind for line in final.lines] and LineKind.BUNDLE not in [
        line.kind for line in final.lines
    ]
    assert await deposit_rows(database) == [("credited", "main-00000001")]
    credits = [
        payment
        for payment in (await Payments(database).payments(billing_account_id="B1", limit=10, offset=0)).payments
        if payment.source is PaymentSource.DEPOSIT
    ]
    assert [(payment.amount_micros, [item.invoice_id for item in payment.allocations]) for payment in credits] == [
        (50 * UNIT, ["main-00000002"])
    ]
    owed = final.amount_due.value_micros
    assert credits[0].unallocated_micros == max(0, 50 * UNIT - owed)  # the rest: account credit for a refund
    assert (await Invoices(database).bill("main-00000002")).remaining_amount.value_micros == max(0, owed - 50 * UNIT)

    again = await run.run(date(2026, 2, 12))
    assert (again.invoices, again.final_invoices) == (0, 0)
    assert (await run.run(date(2026, 3, 1))).invoices == 0  # February is the final invoice: not billed twice
    assert len((await Payments(database).payments(billing_account_id="B1", limit=10, offset=0)).payments) == 2
    assert await ledger_audit(database) == []
