"""Deposits (ocs/billing/deposits.py) through the bill run on the real stores (SQLite and a
private PostgreSQL, a real Redis): a pending deposit is charged once, as its own untaxed line of
the customer's next invoice, and is held from then on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.store import BalanceStore
from ocs.billing.bill_run import BillRun
from ocs.billing.invoices import Invoices
from ocs.billing.values import LineKind
from ocs.db.orders import deposits
from tests.balance.conftest import embedded_redis
from tests.ocs.bill_run_support import CLEARED, UNIT, add_customer, add_line, balance_store, catalog
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


async def customer_with_a_deposit(engine: AsyncEngine, customer_id: str = "C1", account: str = "B1") -> None:
    """A postpaid customer whose credit class asked for a 50.00 deposit with its first line."""
    await add_customer(engine, customer_id, billing_account_id=account)
    await add_line(engine, f"{customer_id}-L1", customer_id)
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
