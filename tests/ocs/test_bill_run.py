"""The bill run (ocs/billing/bill_run.py and bill_draft.py) on the real stores: SQLite and a
private PostgreSQL, a real Redis with accounts charged for real. Proration, the hierarchy's
roll-up, the rerun that makes nothing, the crash between the commit and the Redis cut, numbering
under concurrent runs, the cut giving a line its credit back, prepaid rentals."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.store import BalanceStore
from balance.types import Account, Bucket, BucketKind, Outcome, PaymentType
from ocs.billing.bill_draft import AccountFacts, LineFacts, draft_invoice
from ocs.billing.bill_run import BillRun, PendingCut
from ocs.billing.catalog_load import parse_catalog
from ocs.billing.cycles import Period, prorate
from ocs.billing.invoices import read_bill
from ocs.billing.ledger_audit import ledger_audit
from ocs.billing.values import InvoiceDraft, LineKind
from ocs.db.bill_run import bill_cuts, prepaid_rentals
from ocs.db.billing import invoices
from ocs.db.usage import usage_records
from ocs.rating.rate import load_book
from tests.balance.conftest import embedded_redis
from tests.ocs.bill_run_support import (
    ROOT,
    UNIT,
    add_billing_account,
    add_customer,
    add_line,
    add_node,
    balance_store,
    catalog,
    charge,
    database,
    events,
    spool,
)
from tests.ocs.postgres_support import postgresql_url

__all__ = ["balance_store", "database", "embedded_redis", "postgresql_url"]

RUN_DAY = date(2026, 3, 1)
FEBRUARY = Period(date(2026, 2, 1), date(2026, 3, 1))
IN_FEBRUARY = int(datetime(2026, 2, 10, tzinfo=UTC).timestamp())
CLOCK = datetime(2026, 3, 1, 3, tzinfo=UTC).timestamp


def facts(*lines: LineFacts) -> AccountFacts:
    return AccountFacts("B1", "main", None, lines, {})


def line(activated: date, terminated: date | None = None, plans: tuple[tuple[date, str], ...] = ()) -> LineFacts:
    return LineFacts("L1", None, PaymentType.POSTPAID, activated, terminated, plans or ((activated, "fixed_postpaid"),))


# -- drafting (pure) ----------------------------------------------------------------------------


def test_a_line_activated_and_terminated_inside_the_period_pays_its_days_and_the_activation() -> None:
    made = draft_invoice(catalog(), facts(line(date(2026, 2, 10), date(2026, 2, 20))), FEBRUARY, date(2026, 3, 14), "v")
    assert made is not None
    rental = next(item for item in made.lines if item.kind is LineKind.RENTAL)
    assert rental.amount_micros == prorate(14_990_000, Period(date(2026, 2, 10), date(2026, 2, 20)), FEBRUARY)
    assert rental.explanation["days"] == 10 and rental.explanation["cycle_days"] == 28
    assert "10/28 days" in str(rental.explanation["text"])
    assert [item.kind for item in made.lines] == [LineKind.RENTAL, LineKind.ONE_OFF]  # activation fee once


def test_a_plan_change_splits_the_rentals_at_its_day_and_the_parts_explain_their_discounts() -> None:
    plans = ((date(2026, 1, 1), "fixed_postpaid"), (date(2026, 2, 15), "mobile_postpaid"))
    made = draft_invoice(catalog(), facts(line(date(2026, 1, 1), plans=plans)), FEBRUARY, date(2026, 3, 14), "v")
    assert made is not None
    rentals = [item for item in made.lines if item.kind is LineKind.RENTAL]
    assert [item.explanation["product"] for item in rentals] == ["fixed_line", "mobile_m"]
    assert rentals[0].amount_micros == prorate(14_990_000, Period(date(2026, 2, 1), date(2026, 2, 15)), FEBRUARY)
    assert rentals[1].amount_micros == prorate(19_990_000, Period(date(2026, 2, 15), date(2026, 3, 1)), FEBRUARY)
    discount = next(item for item in made.lines if item.kind is LineKind.DISCOUNT)
    assert discount.amount_micros == -5_000_000 and "welcome-2026" in discount.description


def test_the_same_facts_draft_the_same_invoice_byte_for_byte() -> None:
    account = facts(line(date(2026, 2, 3), date(2026, 2, 27)))
    first = draft_invoice(catalog(), account, FEBRUARY, date(2026, 3, 14), "v")
    second = draft_invoice(catalog(), account, FEBRUARY, date(2026, 3, 14), "v")
    assert first is not None and second is not None
    assert first.model_dump_json() == second.model_dump_json()


def test_a_draft_built_without_validation_passes_its_validators() -> None:
    """Drafts are built with ``model_construct`` for speed: every one must still be valid."""
    plans = ((date(2026, 1, 1), "fixed_postpaid"), (date(2026, 2, 15), "mobile_postpaid"))
    account = facts(line(date(2026, 2, 3), date(2026, 2, 27)), line(date(2026, 1, 1), plans=plans))
    made = draft_invoice(catalog(), account, FEBRUARY, date(2026, 3, 14), "v")
    assert made is not None and len(made.lines) > 3
    assert InvoiceDraft.model_validate(made.model_dump()) == made
    with pytest.raises(ValidationError, match="due_date"):
        draft_invoice(catalog(), account, FEBRUARY, date(2026, 2, 27), "v")


def test_a_line_out_of_service_the_whole_period_bills_nothing() -> None:
    assert draft_invoice(catalog(), facts(line(date(2026, 3, 5))), FEBRUARY, date(2026, 3, 14), "v") is None


# -- the run on the stores ----------------------------------------------------------------------


async def postpaid_line_at_its_limit(engine: AsyncEngine, store: BalanceStore) -> None:
    """L1 of B1, postpaid with a 3.00 credit limit, used to its limit in February: 4012 after."""
    await add_customer(engine, "C1", billing_account_id="B1")
    await add_line(engine, "L1", "C1")
    await store.provision(Account("L1", payment_type=PaymentType.POSTPAID, credit_limit_micros=3 * UNIT))
    assert await charge(store, "L1", "s1", 3, IN_FEBRUARY) is Outcome.OK
    assert await charge(store, "L1", "s2", 1, IN_FEBRUARY) is Outcome.INSUFFICIENT_FUNDS  # 4012
    assert await spool(store, engine) == 1


async def test_a_run_invoices_the_period_cuts_the_usage_and_the_line_is_granted_again(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await postpaid_line_at_its_limit(database, balance_store)
    run = BillRun(database, balance_store, catalog(), clock=CLOCK)
    report = await run.run(RUN_DAY)
    assert (report.invoices, report.cuts, report.records, report.problems) == (1, 1, 1, [])
    async with database.connect() as connection:
        bill = await read_bill(connection, "main-00000001")
        billed = (await connection.execute(select(usage_records.c.invoice_id))).scalars().all()
    assert bill is not None and billed == ["main-00000001"]
    assert [item.kind for item in bill.lines] == [LineKind.RENTAL, LineKind.USAGE, LineKind.DISCOUNT]
    usage = bill.lines[1]
    assert usage.amount_micros == 3 * UNIT and usage.explanation["records"] == 1
    assert bill.billing_period.start_date == FEBRUARY.start and bill.billing_period.end_date == date(2026, 2, 28)
    assert await charge(balance_store, "L1", "s3", 1, IN_FEBRUARY + 86_400 * 30) is Outcome.OK  # credit back
    again = await run.run(RUN_DAY)
    assert (again.invoices, again.skipped, again.cuts, again.records) == (0, 1, 0, 0)


class KilledAfterCommit(Exception):
    pass


class RunKilledAfterCommit(BillRun):
    async def _apply_cuts(self, cuts: object, report: object) -> None:
        if cuts:
            raise KilledAfterCommit


async def test_a_run_killed_between_the_invoice_and_the_cut_is_finished_once_by_the_next(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await postpaid_line_at_its_limit(database, balance_store)
    with pytest.raises(KilledAfterCommit):
        await RunKilledAfterCommit(database, balance_store, catalog(), clock=CLOCK).run(RUN_DAY)
    async with database.connect() as connection:
        pending = (await connection.execute(select(bill_cuts.c.cut_id).where(bill_cuts.c.done_at.is_(None)))).all()
    assert [row[0] for row in pending] == ["main-00000001|L1"]
    assert await charge(balance_store, "L1", "s3", 1, IN_FEBRUARY) is Outcome.INSUFFICIENT_FUNDS  # not cut yet
    restarted = BillRun(database, balance_store, catalog(), clock=CLOCK)
    assert await restarted.finish_pending_cuts() == 1  # the server's startup pass
    assert await restarted.finish_pending_cuts() == 0
    view = await balance_store.balance("L1", IN_FEBRUARY)
    assert view is not None and (view.unbilled_micros, view.billed_micros) == (0, 3 * UNIT)
    assert await charge(balance_store, "L1", "s4", 1, IN_FEBRUARY) is Outcome.OK
    again = await restarted.run(RUN_DAY)
    assert (again.invoices, again.cuts) == (0, 0)
    # Applying the same cut again (a second pass that raced) changes nothing: idempotent by id.
    await restarted._apply_cuts([PendingCut("main-00000001|L1", "L1", 3 * UNIT, ())], again)
    view = await balance_store.balance("L1", IN_FEBRUARY)
    assert view is not None and view.billed_micros == 3 * UNIT


async def test_a_department_rolls_into_the_paying_node_and_a_branch_is_invoiced_apart(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await add_customer(database, "CO", billing_account_id=None, kind="organization")
    await add_node(database, "co", "CO", None, "company")
    await add_node(database, "co-sales", "CO", "co", "department")
    await add_node(database, "co-east", "CO", "co", "branch")
    await add_node(database, "co-east-ops", "CO", "co-east", "department")
    await add_billing_account(database, "B-co", "CO", "co")
    await add_billing_account(database, "B-east", "CO", "co-east")
    await add_billing_account(database, "B-ops", "CO", "co-east-ops", paid_by_parent=True)
    for line_id, node in (("L-a", "co"), ("L-b", "co-sales"), ("L-c", "co-east-ops")):
        await add_line(database, line_id, "CO", node_id=node)
    report = await BillRun(database, balance_store, catalog(), clock=CLOCK).run(RUN_DAY)
    assert (report.accounts, report.invoices) == (2, 2)  # B-ops is paid by its parent
    async with database.connect() as connection:
        numbers = dict((await connection.execute(select(invoices.c.billing_account_id, invoices.c.invoice_id))).all())
        company = await read_bill(connection, numbers["B-co"])
        east = await read_bill(connection, numbers["B-east"])
    assert company is not None and east is not None
    assert [item.node_id for item in company.subtotals] == ["co", "co-sales"]
    assert all(item.amount_micros == 14_990_000 for item in company.subtotals)
    assert [item.line_id for item in east.lines] == ["L-c"] and [item.node_id for item in east.subtotals] == [
        "co-east-ops"
    ]


async def test_two_concurrent_runs_number_every_invoice_once_without_gaps(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    for index in range(12):
        await add_customer(database, f"C{index:02d}", billing_account_id=f"B{index:02d}")
        await add_line(database, f"L{index:02d}", f"C{index:02d}")
    runs = [BillRun(database, balance_store, catalog(), chunk_size=5, clock=CLOCK) for _ in range(2)]
    reports = await asyncio.gather(*(run.run(RUN_DAY) for run in runs))
    assert sum(report.invoices for report in reports) == 12
    async with database.connect() as connection:
        sequences = (
            (await connection.execute(select(invoices.c.sequence).order_by(invoices.c.sequence))).scalars().all()
        )
    assert sequences == list(range(1, 13))


def prepaid_catalog(policy: str):  # type: ignore[no-untyped-def]
    text = (ROOT / "config" / "catalog.toml").read_text()
    text = text.replace(
        'one_offs = ["sim_card"]\nrental_policy = "restrict"',
        f'one_offs = ["sim_card"]\nrentals = ["mobile_s"]\nrental_policy = "{policy}"',
    )
    return parse_catalog(text, load_book(ROOT / "config" / "tariffs.toml"))


@pytest.mark.parametrize("policy", ["restrict", "allow_negative"])
async def test_a_prepaid_rental_is_debited_once_at_the_cycle_start_by_its_plans_policy(
    database: AsyncEngine, balance_store: BalanceStore, policy: str
) -> None:
    await add_customer(database, "CP", billing_account_id="BP")
    await add_line(database, "LP", "CP", plan="mobile_prepaid", payment_type="prepaid")
    await balance_store.provision(Account("LP", buckets=(Bucket(1, BucketKind.MAIN, 5 * UNIT),)))
    run = BillRun(database, balance_store, prepaid_catalog(policy), clock=CLOCK)
    report = await run.run(RUN_DAY)
    rental = 11_888_100  # mobile_s 9.99 + 19 % tax
    view = await balance_store.balance("LP", IN_FEBRUARY)
    assert view is not None
    main = sum(bucket.amount for bucket in view.account.buckets if bucket.kind is BucketKind.MAIN)
    if policy == "restrict":
        assert (report.rentals, report.rentals_refused, main) == (0, 1, 5 * UNIT)
    else:
        assert (report.rentals, report.rentals_refused, main) == (1, 0, 5 * UNIT - rental)
    assert (report.invoices, report.statements) == (0, 1)  # a statement, not an invoice
    again = await run.run(RUN_DAY)
    assert (again.rentals, again.rentals_refused, again.statements) == (0, 0, 0)
    async with database.connect() as connection:
        rows = (await connection.execute(select(prepaid_rentals.c.outcome, prepaid_rentals.c.micros))).all()
    assert [tuple(row) for row in rows] == [("ok" if policy != "restrict" else "insufficient_funds", rental)]


# -- the one-ledger audit -------------------------------------------------------------------------


async def test_the_ledger_audit_ties_out_after_a_run_and_finds_a_planted_inconsistency(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await postpaid_line_at_its_limit(database, balance_store)
    assert await charge(balance_store, "L1", "s3", 0, IN_FEBRUARY) is Outcome.OK  # nothing used: no record
    await BillRun(database, balance_store, catalog(), clock=CLOCK).run(RUN_DAY)
    assert await ledger_audit(database, balance_store, IN_FEBRUARY) == []
    async with database.begin() as connection:  # a record the invoice did not price, billed by it
        await connection.execute(
            update(usage_records).where(usage_records.c.invoice_id.is_not(None)).values(micros=2 * UNIT)
        )
    found = await ledger_audit(database, balance_store, IN_FEBRUARY)
    assert found == ["invoice main-00000001: usage lines 3000000 micros, its records 2000000"]
    await balance_store.charge(events("L1", "s5", 1, IN_FEBRUARY))  # used, not spooled: in the outbox
    assert await ledger_audit(database, balance_store, IN_FEBRUARY) == found
