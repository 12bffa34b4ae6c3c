"""Loyalty invoice discounts through the bill run (ocs/billing/loyalty_discounts.py) on the real
stores (SQLite, a real Redis): a discount recorded by a rule for the next month is taken by the
member's next invoice as a DISCOUNT line naming its programme and rule, worth the percent of what
it aims at, marked consumed by that invoice in its transaction; a rerun applies nothing twice, and
a discount for a later period waits for its invoice."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.store import BalanceStore
from balance.types import Account, Outcome, PaymentType
from ocs.billing.bill_run import BillRun
from ocs.billing.invoices import Invoices
from ocs.billing.values import LineKind
from ocs.db.loyalty import loyalty_applications, loyalty_budgets, loyalty_invoice_discounts
from tests.balance.conftest import embedded_redis
from tests.ocs.bill_run_support import (
    UNIT,
    add_customer,
    add_line,
    balance_store,
    catalog,
    charge,
    spool,
    sqlite_database,
)

__all__ = ["balance_store", "embedded_redis", "sqlite_database"]

CENT = 10_000
CLOCK = datetime(2026, 3, 1, 3, tzinfo=UTC).timestamp


def _seconds(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


async def record_discount(
    engine: AsyncEngine, trigger: str, target: str, service: str, applies: tuple[date, date]
) -> None:
    """What the engine records when an invoice_discount rule fires (ocs.loyalty.engine)."""
    async with engine.begin() as connection:
        await connection.execute(
            insert(loyalty_invoice_discounts).values(
                rule_id=f"rule_{target}",
                trigger_id=trigger,
                programme_id=f"programme_{target}",
                member_id="C1",
                target=target,
                service=service,
                percent_basis_points=1_000,
                applies_from=_seconds(applies[0]),
                applies_until=_seconds(applies[1]),
                state="pending",
            )
        )


async def discount_rows(engine: AsyncEngine) -> list[tuple[str, str, str | None]]:
    table = loyalty_invoice_discounts.c
    async with engine.connect() as connection:
        found = await connection.execute(
            select(table.trigger_id, table.state, table.invoice_id).order_by(table.discount_id)
        )
        return [(str(row[0]), str(row[1]), row[2]) for row in found]


async def sms_in_february(database: AsyncEngine, balance_store: BalanceStore) -> None:
    """Customer C1 (billing account B1) with a postpaid line that sent 7.00 of sms on 5 February."""
    await add_customer(database, "C1", billing_account_id="B1")
    await add_line(database, "C1-L1", "C1")
    await balance_store.provision(Account("C1-L1", payment_type=PaymentType.POSTPAID, credit_limit_micros=50 * UNIT))
    in_february = int(datetime(2026, 2, 5, tzinfo=UTC).timestamp())
    assert await charge(balance_store, "C1-L1", "s1", 7, in_february) is Outcome.OK  # 7.00 of sms
    assert await spool(balance_store, database) == 1


async def test_a_loyalty_discount_reaches_the_next_invoice_once_naming_its_programme_and_rule(
    sqlite_database: AsyncEngine, balance_store: BalanceStore
) -> None:
    database = sqlite_database
    await sms_in_february(database, balance_store)
    february = (date(2026, 2, 1), date(2026, 3, 1))
    await record_discount(database, "r1", "service", "sms", february)  # fired in January
    await record_discount(database, "r2", "rentals", "", february)
    await record_discount(database, "r3", "service", "sms", (date(2026, 3, 1), date(2026, 4, 1)))  # later

    run = BillRun(database, balance_store, catalog(), clock=CLOCK)
    assert (await run.run(date(2026, 3, 1))).invoices == 1
    bill = await Invoices(database).bill("main-00000001")
    loyalty = [line for line in bill.lines if line.kind is LineKind.DISCOUNT and "loyalty" in line.description]
    rentals = sum(line.amount_micros for line in bill.lines if line.kind is LineKind.RENTAL)
    assert rentals > 0
    assert [line.description for line in loyalty] == [
        "loyalty programme_service (rule_service): 10 % off sms usage",
        "loyalty programme_rentals (rule_rentals): 10 % off rentals",
    ]
    assert loyalty[0].amount_micros == -7 * UNIT // 10
    assert abs(loyalty[1].amount_micros + rentals // 10) < CENT  # lines are stored rounded to the cent
    charged = sum(line.amount_micros + line.tax_micros for line in bill.lines if line not in loyalty)
    assert bill.amount_due.value_micros == charged + loyalty[0].amount_micros + loyalty[1].amount_micros
    assert await discount_rows(database) == [
        ("r1", "consumed", "main-00000001"),
        ("r2", "consumed", "main-00000001"),
        ("r3", "pending", None),
    ]

    assert (await run.run(date(2026, 3, 1))).invoices == 0  # the rerun applies nothing twice
    assert (await run.run(date(2026, 4, 1))).invoices == 1
    march = await Invoices(database).bill("main-00000002")
    taken = [line for line in march.lines if "loyalty" in line.description]
    assert [(line.description, line.amount_micros) for line in taken] == [
        ("loyalty programme_service (rule_service): 10 % off sms usage", 0)  # no sms in March
    ]
    assert await discount_rows(database) == [
        ("r1", "consumed", "main-00000001"),
        ("r2", "consumed", "main-00000001"),
        ("r3", "consumed", "main-00000002"),
    ]


async def record_application(engine: AsyncEngine, trigger: str, target: str, *, budgeted: bool) -> None:
    """The discount's application as the engine records it (cost 0), and with a budget its
    programme's spending row (the engine writes one with every application of a budgeted programme)."""
    async with engine.begin() as connection:
        await connection.execute(
            insert(loyalty_applications).values(
                rule_id=f"rule_{target}",
                programme_id=f"programme_{target}",
                member_id="C1",
                line_id="",
                trigger_id=trigger,
                trigger_kind="usage",
                action="invoice_discount",
                amount_micros=0,
                units=0,
                services="",
                valid_until=0,
                cost_micros=0,
                at_seconds=0,
                committed_at_ms=0,
                state="recorded",
            )
        )
        if budgeted:
            await connection.execute(
                insert(loyalty_budgets).values(programme_id=f"programme_{target}", spent_micros=UNIT)
            )


async def test_a_priced_discount_counts_against_its_programme_budget_in_the_invoice_transaction(
    sqlite_database: AsyncEngine, balance_store: BalanceStore
) -> None:
    database = sqlite_database
    await sms_in_february(database, balance_store)
    february = (date(2026, 2, 1), date(2026, 3, 1))
    await record_discount(database, "r1", "service", "sms", february)
    await record_application(database, "r1", "service", budgeted=True)
    await record_discount(database, "r2", "rentals", "", february)
    await record_application(database, "r2", "rentals", budgeted=False)

    run = BillRun(database, balance_store, catalog(), clock=CLOCK)
    assert (await run.run(date(2026, 3, 1))).invoices == 1
    assert (await run.run(date(2026, 3, 1))).invoices == 0  # a rerun counts nothing again
    async with database.connect() as connection:
        costs = dict(
            (
                await connection.execute(select(loyalty_applications.c.trigger_id, loyalty_applications.c.cost_micros))
            ).all()
        )
        spent = dict(
            (await connection.execute(select(loyalty_budgets.c.programme_id, loyalty_budgets.c.spent_micros))).all()
        )
    assert costs["r1"] == 7 * UNIT // 10
    assert costs["r2"] > 0  # the rentals' 10 %
    assert spent == {"programme_service": UNIT + 7 * UNIT // 10}  # no budget, no spending row
