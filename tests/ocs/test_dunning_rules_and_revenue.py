"""The dunning file's loader (ocs/billing/dunning_rules.py): the shipped file loads, and every
mistake is refused naming the file, the section and the field; the dunning tables as the
migration makes them; and the revenue report (ocs/billing/revenue.py) summing invoice lines by
product and customer type on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing.dunning_rules import Action, DunningRulesError, parse_dunning_rules
from ocs.billing.invoices import Invoices
from ocs.billing.revenue import revenue
from ocs.billing.values import DraftLine, InvoiceDraft, LineKind
from ocs.db.customers import lines
from ocs.db.dunning import DUNNING_TABLES
from ocs.db.schema import metadata
from tests.ocs.billing_support import CLEARED, MOMENT, UNIT, Clock, add_account
from tests.ocs.postgres_support import business_database, postgresql_url
from tests.ocs.test_dunning import RULES

__all__ = ["postgresql_url"]

GOOD = """
exempt_segments = ["vip"]
[letters.l]
subject = "overdue $amount $currency"
body = "pay $invoice"
[[ladders.default.steps]]
days = 3
min_amount = "1.00"
action = "letter"
template = "l"
[[ladders.default.steps]]
days = 10
min_amount = "5.00"
action = "restrict"
"""


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, ("lines", *CLEARED)) as made:
        yield made


def test_the_shipped_file_gives_every_credit_class_a_ladder() -> None:
    for credit_class in ("A", "B", "C", "D", None):
        ladder = RULES.ladder_for(credit_class)
        assert [step.days for step in ladder.steps] == sorted(step.days for step in ladder.steps)
        assert ladder.steps[0].action is Action.LETTER
    assert RULES.ladder_for("B").name == "default" and RULES.ladder_for("A").lift_below_micros == 10 * UNIT
    rules = parse_dunning_rules(GOOD)
    assert rules.ladder_for("A").due(9, 10 * UNIT) == rules.ladder_for(None).steps[:1]
    assert rules.ladder_for("A").due(10, 4 * UNIT) == rules.ladder_for(None).steps[:1]  # below the amount
    subject, body = rules.letters["l"].render({"amount": "1.00", "currency": "EUR", "invoice": "main-1"})
    assert (subject, body) == ("overdue 1.00 EUR", "pay main-1\n")


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (("days = 10", "days = 3"), "x.toml: ladders.default.steps[2]: days: 3 is not after"),
        (('action = "restrict"', 'action = "cut"'), "x.toml: ladders.default.steps[2]: action: 'cut' is not"),
        (('min_amount = "5.00"', "min_amount = 5.0"), "x.toml: ladders.default.steps[2]: min_amount: write"),
        (('min_amount = "5.00"', 'min_amount = "0"'), "x.toml: ladders.default.steps[2]: min_amount: must be above"),
        (('template = "l"', 'template = "m"'), "x.toml: ladders.default.steps[1]: template: no [letters.m]"),
        (('body = "pay $invoice"', 'body = "pay $bill"'), "x.toml: letters.l: body: unknown placeholder $bill"),
        (("days = 10", "days = 10\nrepeat = 2"), "x.toml: ladders.default.steps[2]: repeat: unknown key"),
        (("ladders.default", "ladders.B"), "x.toml: ladders: default: missing"),
        (('exempt_segments = ["vip"]', "exempt = true"), "x.toml: (top level): exempt: unknown key"),
    ],
)
def test_a_mistake_is_refused_naming_the_file_the_section_and_the_field(change: tuple[str, str], where: str) -> None:
    with pytest.raises(DunningRulesError) as refused:
        parse_dunning_rules(GOOD.replace(*change), "x.toml")
    assert str(refused.value).startswith(where), str(refused.value)


async def test_the_migration_makes_the_dunning_tables_as_they_are_defined(database: AsyncEngine) -> None:
    names = {table.name for table in DUNNING_TABLES} | {"customers"}

    def ours(item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        return (name if kind == "table" else item.table.name) in names

    def differences(connection: Connection) -> list[Any]:
        options = {"compare_type": True, "include_object": ours}
        return list(compare_metadata(MigrationContext.configure(connection, opts=options), metadata))

    async with database.connect() as connection:
        assert await connection.run_sync(differences) == []


def line_of(kind: LineKind, amount_units: int, line_id: str | None, **explanation: str) -> DraftLine:
    return DraftLine(
        kind=kind,
        description=kind.value,
        amount_micros=amount_units * UNIT,
        tax_micros=max(amount_units, 0) * UNIT // 10,
        line_id=line_id,
        explanation=dict(explanation),
    )


async def test_revenue_sums_invoice_lines_by_product_and_customer_type(database: AsyncEngine) -> None:
    await add_account(database, "ba-1")
    async with database.begin() as connection:
        for line_id, network, payment in (("m-1", "mobile", "postpaid"), ("f-1", "fixed", "postpaid")):
            await connection.execute(
                insert(lines).values(
                    line_id=line_id,
                    customer_id="C-ba-1",
                    name=line_id,
                    network=network,
                    payment_type=payment,
                    plan="mobile_postpaid",
                    credit_limit_micros=0,
                    cap_micros=0,
                    status="active",
                    own_status="active",
                    created_at=MOMENT.replace(tzinfo=None),
                )
            )
    drafted = [
        line_of(LineKind.RENTAL, 20, "m-1", product="mobile_basic"),
        line_of(LineKind.RENTAL, 30, "f-1", product="fixed_basic"),
        line_of(LineKind.USAGE, 5, "m-1", service="voice"),
        line_of(LineKind.USAGE, 7, "m-1", service="data"),
        line_of(LineKind.DISCOUNT, -2, "m-1", product="mobile_basic"),
        line_of(LineKind.ADJUSTMENT, 1, None),
    ]
    clock = Clock()
    for month in (1, 2):
        period = InvoiceDraft(
            billing_account_id="ba-1",
            period_start=date(2026, month, 1),
            period_end=date(2026, month, 28),
            due_date=date(2026, month + 1, 20),
            catalog_version="2026-01",
            lines=drafted,
        )
        await Invoices(database, clock=clock).issue(period)
        clock.now += 40 * 86_400  # the next invoice is issued 40 days later
    report = await revenue(database, date(2026, 3, 1), date(2026, 3, 1))  # MOMENT's day: the first invoice only
    assert report.invoices == 1
    rows = {(row.product, row.customer_type): (row.amount_micros, row.invoice_lines) for row in report.rows}
    assert rows == {
        ("mobile_basic", "mobile_postpaid"): (18 * UNIT, 2),  # the rental less its discount
        ("fixed_basic", "fixed_postpaid"): (30 * UNIT, 1),
        ("usage:voice", "mobile_postpaid"): (5 * UNIT, 1),
        ("usage:data", "mobile_postpaid"): (7 * UNIT, 1),
        ("adjustment", "account"): (1 * UNIT, 1),
    }
    assert report.totals["EUR"].amount_micros == 61 * UNIT
    assert report.totals["EUR"].tax_micros == (20 + 30 + 5 + 7 + 1) * UNIT // 10
    both = await revenue(database, date(2026, 3, 1), date(2026, 4, 30))
    assert both.invoices == 2 and both.totals["EUR"].amount_micros == 122 * UNIT
    assert (await revenue(database, date(2026, 5, 1), date(2026, 5, 31))).rows == []
