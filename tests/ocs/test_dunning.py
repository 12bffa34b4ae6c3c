"""Dunning (ocs/billing/dunning.py) on the real stores: every query on SQLite and on a private
PostgreSQL, every status change through the customer lifecycle into a real Redis.

Each step of the ladder at its day and not before, each applied once on a rerun; the reminder in
the delivery outbox; a crash between recording a step and applying it finished by the restart
pass; a dispute holding its amount out; a promise to pay pausing the ladder; exemptions by flag
and by segment; the lift when a payment brings the overdue amount down, and only of what dunning
itself applied. Invoices are issued directly (``Invoices.issue``), as the bill run would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import AccountStatus
from ocs.api.orders import EngineLines
from ocs.api.provisioning import Provisioning
from ocs.billing.corrections import Corrections
from ocs.billing.dunning import Dunning
from ocs.billing.dunning_records import NewPromiseToPay
from ocs.billing.dunning_rules import load_dunning_rules
from ocs.billing.invoices import Invoices
from ocs.billing.payments import Payments
from ocs.billing.values import NewDispute, NewPayment
from ocs.customers.lifecycle import Lifecycle
from ocs.customers.service import Customers
from ocs.customers.values import NewNode
from ocs.db.billing import delivery_outbox
from ocs.db.customers import customers as customer_rows
from tests.ocs.billing_support import UNIT, Clock, draft
from tests.ocs.postgres_support import business_database, postgresql_url
from tests.ocs.test_customer_lifecycle import FailingAfter, asked, engine_status, line
from tests.ocs.test_customers import acme, ana, customers, provisioning

__all__ = ["customers", "postgresql_url", "provisioning"]

RULES = load_dunning_rules(Path(__file__).resolve().parents[2] / "config" / "dunning.toml")
CLEARED = (
    "dunning_steps",
    "promises_to_pay",
    "dunning_exemptions",
    "delivery_outbox",
    "disputes",
    "payment_allocations",
    "payments",
    "invoice_lines",
    "invoices",
    "number_series",
    "lifecycle_steps",
    "status_changes",
    "line_identities",
    "lines",
    "billing_accounts",
    "customer_nodes",
    "customers",
    "parties",
)
DUE = date(2026, 2, 20)  # the January invoice's due date (billing_support.draft)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, CLEARED) as made:
        yield made


@pytest.fixture
def lifecycle(database: AsyncEngine, provisioning: Provisioning) -> Lifecycle:
    return Lifecycle(database, EngineLines(provisioning))


@pytest.fixture
def dunning(database: AsyncEngine, lifecycle: Lifecycle) -> Dunning:
    return Dunning(database, RULES, lifecycle, clock=Clock())


async def overdue_customer(customers: Customers, database: AsyncEngine, amount_units: int = 10) -> str:
    """Ana (credit class B: the default ladder) with a line and January's bill unpaid; her billing account."""
    made = await customers.create_customer(ana())
    await customers.add_line("ana", line("ana-1", "4915100000401"))
    assert made.billing_account is not None
    account = made.billing_account.billing_account_id
    await Invoices(database, clock=Clock()).issue(draft(account, 1, amount_units))
    return account


def day(days_past_due: int) -> date:
    return date.fromordinal(DUE.toordinal() + days_past_due)


async def actions(dunning: Dunning, account: str) -> list[tuple[str, int, str | None]]:
    found = await dunning.history(account)
    return [(step.action, step.days_past_due, step.outcome) for step in found.steps]


async def reminders(database: AsyncEngine) -> list[dict[str, object]]:
    query = select(delivery_outbox.c.payload).where(delivery_outbox.c.kind == "reminder")
    async with database.connect() as connection:
        return list((await connection.execute(query.order_by(delivery_outbox.c.event_id))).scalars().all())


async def test_each_step_comes_at_its_day_not_before_and_once(
    customers: Customers, database: AsyncEngine, dunning: Dunning, provisioning: Provisioning
) -> None:
    account = await overdue_customer(customers, database)
    for early in (-1, 0, 2):  # not yet due, due today, before the first letter
        result = await dunning.run(day(early))
        assert result.steps_applied == 0
    assert await actions(dunning, account) == []

    assert (await dunning.run(day(3))).steps_by_action == {"letter": 1}
    letters = await reminders(database)
    assert len(letters) == 1 and letters[0]["template"] == "friendly"
    assert "10.00 EUR" in str(letters[0]["body"]) and "2026-02-20" in str(letters[0]["body"])
    assert (await dunning.run(day(3))).steps_applied == 0  # the rerun: nothing new
    assert (await dunning.run(day(13))).steps_applied == 0
    assert (await customers.customer("ana")).status.value == "active"

    assert (await dunning.run(day(14))).steps_by_action == {"restrict": 1}
    assert (await customers.customer("ana")).status.value == "suspended"
    assert await engine_status(provisioning, "ana-1") is AccountStatus.SUSPENDED
    assert (await dunning.run(day(20))).steps_applied == 0
    assert (await dunning.run(day(30))).steps_by_action == {"letter": 1, "bar": 1}  # two days due at once, in order
    assert await engine_status(provisioning, "ana-1") is AccountStatus.BARRED
    assert (await dunning.run(day(30))).steps_applied == 0
    assert (await dunning.run(day(60))).steps_by_action == {"terminate": 1}
    assert (await customers.customer("ana")).status.value == "terminated"
    assert await actions(dunning, account) == [
        ("letter", 3, "applied"),
        ("restrict", 14, "applied"),
        ("letter", 30, "applied"),
        ("bar", 30, "applied"),
        ("terminate", 60, "applied"),
    ]
    async with database.connect() as connection:
        final = (
            await connection.execute(select(delivery_outbox).where(delivery_outbox.c.kind == "final_invoice_requested"))
        ).all()
    assert [row.payload["billing_account_id"] for row in final] == [account]
    assert (await dunning.run(day(61))).steps_applied == 0


async def test_a_crash_between_recording_and_applying_a_step_is_finished_by_the_restart_pass(
    customers: Customers, database: AsyncEngine, lifecycle: Lifecycle, provisioning: Provisioning
) -> None:
    account = await overdue_customer(customers, database)
    crashing = Dunning(database, RULES, Lifecycle(database, FailingAfter(EngineLines(provisioning), 0)), clock=Clock())
    result = await crashing.run(day(14))
    assert result.failed == 1 and result.steps_by_action == {"letter": 1, "restrict": 1}
    assert await actions(crashing, account) == [("letter", 14, "applied"), ("restrict", 14, None)]
    assert await engine_status(provisioning, "ana-1") is AccountStatus.ACTIVE  # Redis "went away"

    restarted = Dunning(database, RULES, lifecycle, clock=Clock())
    assert await restarted.resume() == 1
    assert await actions(restarted, account) == [("letter", 14, "applied"), ("restrict", 14, "applied")]
    assert await engine_status(provisioning, "ana-1") is AccountStatus.SUSPENDED
    assert await restarted.resume() == 0
    assert (await restarted.run(day(14))).steps_applied == 0
    assert len(await reminders(database)) == 1


async def test_a_disputed_amount_is_held_out_of_dunning(
    customers: Customers, database: AsyncEngine, dunning: Dunning
) -> None:
    account = await overdue_customer(customers, database)
    bill = (await Invoices(database).bills(billing_account_id=account, state=None, limit=1, offset=0)).bills[0]
    dispute = NewDispute(amount_micros=9_500_000, reason="roaming charges I never made")
    await Corrections(database).open_dispute(bill.id, dispute, "care")
    result = await dunning.run(day(30))  # 0.50 undisputed: below every step's 1.00
    assert result.accounts_overdue == 1 and result.steps_applied == 0
    whole = NewDispute(amount_micros=500_000, reason="and the rest")
    await Corrections(database).open_dispute(bill.id, whole, "care")
    assert (await dunning.run(day(30))).held_by_disputes == 1
    assert (await customers.customer("ana")).status.value == "active"


async def test_a_promise_to_pay_pauses_the_ladder_until_its_date(
    customers: Customers, database: AsyncEngine, dunning: Dunning
) -> None:
    account = await overdue_customer(customers, database)
    promise = NewPromiseToPay(promise_id="ptp-1", amount_micros=10 * UNIT, promised_date=day(20))
    made, created = await dunning.promise(account, promise, "care")
    assert created and made.promised_date == day(20)
    assert (await dunning.promise(account, promise, "care"))[1] is False  # a retry: the first answered
    for paused in (3, 14, 20):
        assert (await dunning.run(day(paused))).paused_by_promises == 1
    assert await actions(dunning, account) == []
    assert (await dunning.run(day(21))).steps_by_action == {"letter": 2, "restrict": 1}  # broken: the ladder goes on


async def test_exempt_customers_are_not_dunned_by_flag_or_by_segment(
    customers: Customers, database: AsyncEngine, dunning: Dunning
) -> None:
    account = await overdue_customer(customers, database)
    await dunning.exempt("ana", "hospital line: never cut", "admin")
    assert (await dunning.run(day(30))).exempt == 1
    assert (await dunning.history(account)).exempt is True
    assert await dunning.unexempt("ana") is True
    async with database.begin() as connection:
        await connection.execute(update(customer_rows).values(segment="vip"))
    assert (await dunning.run(day(30))).exempt == 1
    assert await actions(dunning, account) == []
    async with database.begin() as connection:
        await connection.execute(update(customer_rows).values(segment="average"))
    assert (await dunning.run(day(30))).steps_applied == 4


async def test_a_payment_of_what_is_overdue_lifts_the_restriction_at_once(
    customers: Customers, database: AsyncEngine, dunning: Dunning, provisioning: Provisioning
) -> None:
    account = await overdue_customer(customers, database)
    await dunning.run(day(30))
    assert await engine_status(provisioning, "ana-1") is AccountStatus.BARRED
    payments = Payments(database, on_payment=(dunning.on_payment,))
    await payments.record_payment(
        NewPayment(billing_account_id=account, reference="r-1", amount_micros=9 * UNIT), "bank"
    )
    assert await engine_status(provisioning, "ana-1") is AccountStatus.BARRED  # 1.00 still overdue: the threshold
    await payments.record_payment(NewPayment(billing_account_id=account, reference="r-2", amount_micros=UNIT), "bank")
    assert await engine_status(provisioning, "ana-1") is AccountStatus.ACTIVE
    assert (await customers.customer("ana")).status.value == "active"
    history = await actions(dunning, account)
    assert [(action, outcome) for action, _, outcome in history[-2:]] == [("lift", "applied"), ("lift", "applied")]
    assert (await dunning.run(day(31))).steps_applied == 0  # paid: nothing overdue


async def test_a_suspension_the_customer_asked_for_is_not_lifted_by_a_payment(
    customers: Customers, database: AsyncEngine, dunning: Dunning, lifecycle: Lifecycle, provisioning: Provisioning
) -> None:
    account = await overdue_customer(customers, database)
    await lifecycle.set_customer_status("ana", asked("suspended", "travelling for a year", "voluntary"), "care")
    await dunning.run(day(14))
    assert await actions(dunning, account) == [("letter", 14, "applied"), ("restrict", 14, "unchanged")]
    payments = Payments(database, on_payment=(dunning.on_payment,))
    await payments.record_payment(
        NewPayment(billing_account_id=account, reference="r", amount_micros=10 * UNIT), "bank"
    )
    assert (await customers.customer("ana")).status.value == "suspended"
    assert await engine_status(provisioning, "ana-1") is AccountStatus.SUSPENDED


async def test_a_lift_a_crash_missed_is_made_by_the_next_run(
    customers: Customers, database: AsyncEngine, dunning: Dunning, provisioning: Provisioning
) -> None:
    account = await overdue_customer(customers, database)
    await dunning.run(day(14))
    payments = Payments(database)  # the listener never ran: the process died after the commit
    await payments.record_payment(
        NewPayment(billing_account_id=account, reference="r", amount_micros=10 * UNIT), "bank"
    )
    assert await engine_status(provisioning, "ana-1") is AccountStatus.SUSPENDED
    assert (await dunning.run(day(15))).lifted == 1
    assert await engine_status(provisioning, "ana-1") is AccountStatus.ACTIVE


async def test_a_payment_is_measured_and_lifted_on_the_billing_calendars_date_not_the_hosts(
    customers: Customers, database: AsyncEngine, lifecycle: Lifecycle, provisioning: Provisioning
) -> None:
    """As in the simulator: the host's clock is before the bills' due dates, the calendar (the
    dunning run's date, the payments' received date) after them."""
    host = Clock()
    host.now = datetime(2026, 2, 1, 12, 0, tzinfo=UTC).timestamp()  # nothing is due yet by this clock
    dunning = Dunning(database, RULES, lifecycle, clock=host)
    account = await overdue_customer(customers, database)
    await dunning.run(day(30))
    assert await engine_status(provisioning, "ana-1") is AccountStatus.BARRED
    payments = Payments(database, clock=host, on_payment=(dunning.on_payment,))
    received = datetime.combine(day(31), datetime.min.time(), UTC)
    partial = NewPayment(billing_account_id=account, reference="r-1", amount_micros=9 * UNIT, received_at=received)
    outcome = await payments.record_payment(partial, "bank")
    assert (outcome.as_of, outcome.overdue_after_micros) == (day(31), UNIT)
    assert await engine_status(provisioning, "ana-1") is AccountStatus.BARRED  # 1.00 still overdue on day 31
    rest = NewPayment(billing_account_id=account, reference="r-2", amount_micros=UNIT, received_at=received)
    await payments.record_payment(rest, "bank")
    assert await engine_status(provisioning, "ana-1") is AccountStatus.ACTIVE
    lifts = [step for step in (await dunning.history(account)).steps if step.action == "lift"]
    assert [(step.run_date, step.days_past_due, step.outcome) for step in lifts] == [(day(31), 31, "applied")] * 2


async def test_the_run_reads_overdue_accounts_in_pages_and_dunns_each_once(
    customers: Customers, database: AsyncEngine, lifecycle: Lifecycle, provisioning: Provisioning
) -> None:
    accounts = []
    for number in range(5):  # two full pages of two and a last one of one
        made = await customers.create_customer(ana(customer_id=f"ana{number}"))
        await customers.add_line(f"ana{number}", line(f"ana{number}-1", f"49151000005{number:02d}"))
        assert made.billing_account is not None
        accounts.append(made.billing_account.billing_account_id)
        await Invoices(database, clock=Clock()).issue(draft(accounts[-1], 1, 10))
    dunning = Dunning(database, RULES, lifecycle, clock=Clock(), page_size=2)
    result = await dunning.run(day(14))
    assert (result.accounts_overdue, result.steps_by_action) == (5, {"letter": 5, "restrict": 5})
    for account in accounts:
        assert await actions(dunning, account) == [("letter", 14, "applied"), ("restrict", 14, "applied")]
    payments = Payments(database)  # no listener: the run's lift pass, paged the same way, lifts them
    for account in accounts:
        await payments.record_payment(
            NewPayment(billing_account_id=account, reference="r", amount_micros=10 * UNIT), "bank"
        )
    assert (await dunning.run(day(15))).lifted == 5
    for number in range(5):
        assert await engine_status(provisioning, f"ana{number}-1") is AccountStatus.ACTIVE


async def overdue_node(customers: Customers, database: AsyncEngine) -> str:
    """ACME whose Sales branch pays for its lines (s-1 in its North department, s-2) and has
    January's bill unpaid; the head office's line h-1 is the company's. Sales' billing account."""
    await customers.create_customer(acme())
    spec = {"currency": "EUR", "bill_cycle_day": 1, "payment_method": "bank_transfer"}
    sales = await customers.add_node("acme", NewNode(node_id="sales", name="Sales", billing_account=spec))
    await customers.add_node("acme", NewNode(node_id="north", parent_node_id="sales", name="North", kind="department"))
    await customers.add_line("acme", line("s-1", "4915100000601", node_id="north"))
    await customers.add_line("acme", line("s-2", "4915100000602", node_id="sales"))
    await customers.add_line("acme", line("h-1", "4915100000603"))
    assert sales.billing_account is not None
    await Invoices(database, clock=Clock()).issue(draft(sales.billing_account.billing_account_id, 1, 10))
    return sales.billing_account.billing_account_id


async def test_a_paying_nodes_overdue_bill_restricts_and_bars_the_lines_under_it_and_only_those(
    customers: Customers, database: AsyncEngine, dunning: Dunning, provisioning: Provisioning
) -> None:
    account = await overdue_node(customers, database)

    assert (await dunning.run(day(14))).steps_by_action == {"letter": 1, "restrict": 1}
    history = (await dunning.history(account)).steps
    assert [(step.action, step.target_kind, step.target_id) for step in history] == [
        ("letter", "node", "sales"),
        ("restrict", "node", "sales"),
    ]
    assert [await engine_status(provisioning, each) for each in ("s-1", "s-2", "h-1")] == [
        AccountStatus.SUSPENDED,
        AccountStatus.SUSPENDED,
        AccountStatus.ACTIVE,
    ]
    assert (await customers.customer("acme")).status.value == "active"
    assert (await dunning.run(day(30))).steps_by_action == {"letter": 1, "bar": 1}
    assert [await engine_status(provisioning, each) for each in ("s-1", "s-2", "h-1")] == [
        AccountStatus.BARRED,
        AccountStatus.BARRED,
        AccountStatus.ACTIVE,
    ]
    payments = Payments(database, on_payment=(dunning.on_payment,))
    await payments.record_payment(
        NewPayment(billing_account_id=account, reference="r", amount_micros=10 * UNIT), "bank"
    )
    assert [await engine_status(provisioning, each) for each in ("s-1", "s-2", "h-1")] == [AccountStatus.ACTIVE] * 3
    assert [(step.action, step.outcome) for step in (await dunning.history(account)).steps][-2:] == [
        ("lift", "applied"),
        ("lift", "applied"),
    ]


async def test_a_paying_nodes_termination_ends_its_lines_and_asks_for_its_final_invoice(
    customers: Customers, database: AsyncEngine, dunning: Dunning, provisioning: Provisioning
) -> None:
    account = await overdue_node(customers, database)
    assert (await dunning.run(day(60))).steps_by_action == {"letter": 2, "restrict": 1, "bar": 1, "terminate": 1}
    assert [outcome for _, _, outcome in await actions(dunning, account)] == ["applied"] * 5
    assert [(await customers.line(each)).status.value for each in ("s-1", "s-2", "h-1")] == [
        "terminated",
        "terminated",
        "active",
    ]
    assert await engine_status(provisioning, "h-1") is AccountStatus.ACTIVE
    assert (await customers.customer("acme")).status.value == "active"
    async with database.connect() as connection:
        final = await connection.execute(
            select(delivery_outbox.c.payload).where(delivery_outbox.c.kind == "final_invoice_requested")
        )
        assert [payload["billing_account_id"] for payload in final.scalars()] == [account]
    assert (await dunning.run(day(61))).steps_applied == 0
