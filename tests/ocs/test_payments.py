"""Payments, credit notes, disputes, refunds, the aging report and the ledger check on the real
stores (SQLite and a private PostgreSQL)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing.corrections import Corrections
from ocs.billing.invoices import Invoices
from ocs.billing.payments import Payments
from ocs.billing.receivables import Receivables, aging_bucket
from ocs.billing.values import (
    BillState,
    DisputeResolution,
    DisputeState,
    NewAdjustment,
    NewCreditNote,
    NewDispute,
    NewPayment,
    NewRefund,
    PaymentOutcome,
)
from ocs.customers.service import CustomerRefusal, Problem
from ocs.db.billing import payment_allocations
from ocs.db.interactions import trouble_tickets
from tests.ocs.billing_support import MOMENT, UNIT, Clock, add_account, clock, database, draft
from tests.ocs.postgres_support import postgresql_url

__all__ = ["clock", "database", "postgresql_url"]


def pay(reference: str, units: int, account: str = "ba-1") -> NewPayment:
    return NewPayment(billing_account_id=account, reference=reference, amount_micros=units * UNIT)


async def test_a_payment_pays_the_oldest_due_invoice_first(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    store = Invoices(database, clock=clock)
    february = (await store.issue(draft("ba-1", 2, 20, due_day=5))).bill
    january = (await store.issue(draft("ba-1", 1, 30, due_day=25))).bill  # issued later, but due first
    outcome = await Payments(database, clock=clock).record_payment(pay("bank-1", 40), "ana")
    assert [(made.invoice_id, made.amount_micros) for made in outcome.allocated_now] == [
        (january.id, 30 * UNIT),
        (february.id, 10 * UNIT),
    ]
    assert outcome.settled_invoices == [january.id] and outcome.payment.unallocated_micros == 0
    assert (await store.bill(january.id)).state is BillState.SETTLED
    assert (await store.bill(february.id)).state is BillState.PARTIALLY_PAID
    assert await Receivables(database).open_balance("ba-1") == 10 * UNIT


async def test_an_overpayment_is_credit_that_pays_the_next_invoice(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    store = Invoices(database, clock=clock)
    await store.issue(draft("ba-1", 1, 30))
    outcome = await Payments(database, clock=clock).record_payment(pay("bank-1", 50), "ana")
    assert outcome.payment.unallocated_micros == 20 * UNIT
    assert await Receivables(database).open_balance("ba-1") == -20 * UNIT  # the account is in credit
    february = (await store.issue(draft("ba-1", 2, 25))).bill  # the credit is allocated at issue
    assert february.remaining_amount.value_micros == 5 * UNIT and february.state is BillState.PARTIALLY_PAID
    assert await Receivables(database).open_balance("ba-1") == 5 * UNIT
    assert await Receivables(database).ledger_check() == []


async def test_a_reference_is_a_replay_with_its_amount_and_a_conflict_with_another(
    database: AsyncEngine, clock: Clock
) -> None:
    await add_account(database, "ba-1")
    await Invoices(database, clock=clock).issue(draft("ba-1", 1, 30))
    payments = Payments(database, clock=clock)
    first = await payments.record_payment(pay("bank-1", 10), "ana")
    again = await payments.record_payment(pay("bank-1", 10), "ana")
    assert again.replayed and not first.replayed and again.payment == first.payment and again.allocated_now == []
    with pytest.raises(CustomerRefusal) as refused:
        await payments.record_payment(pay("bank-1", 11), "ana")
    assert refused.value.field == "reference" and refused.value.problem is Problem.CONFLICT
    assert len((await payments.payments(billing_account_id="ba-1", limit=10, offset=0)).payments) == 1
    assert await Receivables(database).open_balance("ba-1") == 20 * UNIT


async def test_paying_what_is_overdue_is_reported_to_the_listeners(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    await Invoices(database, clock=clock).issue(draft("ba-1", 1, 30, due_day=1))  # due 2026-02-01
    clock.now = (MOMENT + timedelta(days=10)).timestamp()
    heard: list[PaymentOutcome] = []
    payments = Payments(database, clock=clock, on_payment=(heard.append,))
    outcome = await payments.record_payment(pay("bank-1", 30), "ana")
    assert (outcome.overdue_before_micros, outcome.overdue_after_micros) == (30 * UNIT, 0)
    await payments.record_payment(pay("bank-1", 30), "ana")  # a replay is not news
    assert heard == [outcome]


async def test_a_credit_note_never_credits_more_than_is_left(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    bill = (await Invoices(database, clock=clock).issue(draft("ba-1", 1, 30))).bill
    await Payments(database, clock=clock).record_payment(pay("bank-1", 20), "ana")
    corrections = Corrections(database, clock=clock)
    with pytest.raises(CustomerRefusal) as refused:
        await corrections.credit_note(bill.id, NewCreditNote(amount_micros=10 * UNIT + 1, reason="goodwill"), "bo")
    assert refused.value.field == "amount_micros"
    note, made = await corrections.credit_note(
        bill.id, NewCreditNote(credit_note_id="cn-a", amount_micros=10 * UNIT, reason="goodwill"), "bo"
    )
    again, made_again = await corrections.credit_note(
        bill.id, NewCreditNote(credit_note_id="cn-a", amount_micros=10 * UNIT, reason="goodwill"), "bo"
    )
    assert made and not made_again and again == note and note.number == "main-CN-00000001"
    assert (await Invoices(database, clock=clock).bill(bill.id)).state is BillState.SETTLED
    with pytest.raises(CustomerRefusal):
        await corrections.credit_note(bill.id, NewCreditNote(amount_micros=1, reason="more"), "bo")
    assert await Receivables(database).ledger_check() == []


async def test_a_dispute_holds_its_amount_out_of_overdue_and_allocation(database: AsyncEngine, clock: Clock) -> None:
    customer = await add_account(database, "ba-1")
    async with database.begin() as connection:
        now = MOMENT.replace(tzinfo=None)
        await connection.execute(
            insert(trouble_tickets).values(
                ticket_id="TT-1",
                customer_id=customer,
                name="wrong bill",
                description="roaming charged twice",
                ticket_type="complaint",
                severity="minor",
                status="acknowledged",
                created_by="carla",
                created_at=now,
                updated_at=now,
            )
        )
    bill = (await Invoices(database, clock=clock).issue(draft("ba-1", 1, 30, due_day=1))).bill
    corrections = Corrections(database, clock=clock)
    with pytest.raises(CustomerRefusal) as refused:
        await corrections.open_dispute(bill.id, NewDispute(amount_micros=31 * UNIT, reason="too much"), "carla")
    assert refused.value.field == "amount_micros"
    with pytest.raises(CustomerRefusal) as refused:
        await corrections.open_dispute(bill.id, NewDispute(amount_micros=UNIT, reason="x", ticket_id="TT-9"), "carla")
    assert refused.value.field == "ticket_id"
    dispute, _ = await corrections.open_dispute(
        bill.id, NewDispute(amount_micros=12 * UNIT, reason="roaming", ticket_id="TT-1"), "carla"
    )
    receivables = Receivables(database)
    overdue = await receivables.overdue("ba-1", date(2026, 2, 10))
    assert overdue.amount_micros == 18 * UNIT and overdue.oldest_due_date == date(2026, 2, 1)
    outcome = await Payments(database, clock=clock).record_payment(pay("bank-1", 30), "ana")
    assert outcome.allocated_now[0].amount_micros == 18 * UNIT  # the held 12 are not paid off
    assert outcome.payment.unallocated_micros == 12 * UNIT
    resolved = await corrections.resolve_dispute(
        dispute.dispute_id, DisputeResolution(state=DisputeState.REJECTED, resolution="charged right"), "dan"
    )
    assert resolved.state is DisputeState.REJECTED and resolved.resolved_by == "dan"
    # the released 12 are paid from the credit at once
    assert (await Invoices(database, clock=clock).bill(bill.id)).state is BillState.SETTLED
    with pytest.raises(CustomerRefusal) as refused:
        await corrections.resolve_dispute(
            dispute.dispute_id, DisputeResolution(state=DisputeState.CREDITED, resolution="again"), "dan"
        )
    assert refused.value.problem is Problem.CONFLICT
    assert await receivables.ledger_check() == []


async def test_a_credited_dispute_writes_its_credit_note(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    bill = (await Invoices(database, clock=clock).issue(draft("ba-1", 1, 30, due_day=1))).bill
    corrections = Corrections(database, clock=clock)
    dispute, _ = await corrections.open_dispute(bill.id, NewDispute(amount_micros=12 * UNIT, reason="r"), "carla")
    resolution = DisputeResolution(state=DisputeState.CREDITED, resolution="our error", amount_micros=8 * UNIT)
    resolved = await corrections.resolve_dispute(dispute.dispute_id, resolution, "dan")
    assert resolved.credit_note is not None and resolved.credit_note.amount_micros == 8 * UNIT
    assert (await Receivables(database).overdue("ba-1", date(2026, 2, 2))).amount_micros == 22 * UNIT
    assert await Receivables(database).ledger_check() == []


async def test_a_refund_pays_back_credit_and_no_more(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    payments = Payments(database, clock=clock)
    await payments.record_payment(pay("bank-1", 15), "ana")
    with pytest.raises(CustomerRefusal) as refused:
        await payments.refund("ba-1", NewRefund(reference="r-1", amount_micros=16 * UNIT, reason="closing"), "bo")
    assert refused.value.field == "amount_micros"
    refund, made = await payments.refund("ba-1", NewRefund(reference="r-1", amount_micros=5 * UNIT, reason="x"), "bo")
    _, again = await payments.refund("ba-1", NewRefund(reference="r-1", amount_micros=5 * UNIT, reason="x"), "bo")
    assert made and not again and refund.amount_micros == 5 * UNIT
    assert await Receivables(database).open_balance("ba-1") == -10 * UNIT
    assert await Receivables(database).ledger_check() == []


async def test_adjustments_wait_for_the_invoice_that_carries_them(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    corrections = Corrections(database, clock=clock)
    adjustment, _ = await corrections.adjust("ba-1", NewAdjustment(amount_micros=-2 * UNIT, reason="outage"), "bo")
    assert [found.adjustment_id for found in await corrections.pending_adjustments("ba-1")] == [
        adjustment.adjustment_id
    ]
    made = draft("ba-1", 1, 10).model_copy(update={"adjustment_ids": [adjustment.adjustment_id]})
    await Invoices(database, clock=clock).issue(made)
    assert await corrections.pending_adjustments("ba-1") == []
    with pytest.raises(CustomerRefusal) as refused:
        await Invoices(database, clock=clock).issue(
            draft("ba-1", 2, 10).model_copy(update={"adjustment_ids": [adjustment.adjustment_id]})
        )
    assert refused.value.field == "adjustment_ids"


@pytest.mark.parametrize(
    ("days", "bucket"),
    [
        (-5, "current_micros"),
        (0, "current_micros"),
        (1, "days_1_30_micros"),
        (30, "days_1_30_micros"),
        (31, "days_31_60_micros"),
        (60, "days_31_60_micros"),
        (61, "days_61_90_micros"),
        (90, "days_61_90_micros"),
        (91, "days_over_90_micros"),
    ],
)
def test_aging_buckets_at_their_boundaries(days: int, bucket: str) -> None:
    assert aging_bucket(days) == bucket


async def test_the_aging_report_buckets_open_amounts_as_of_a_day(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    await add_account(database, "ba-2", currency="USD")
    store = Invoices(database, clock=clock)
    await store.issue(draft("ba-1", 1, 30, due_day=1))  # due 2026-02-01
    await store.issue(draft("ba-1", 2, 20, due_day=1))  # due 2026-03-01
    await store.issue(draft("ba-2", 1, 7, due_day=1))
    bill = (await store.bills(billing_account_id="ba-1", state=None, limit=1, offset=0)).bills[0]
    await Corrections(database, clock=clock).open_dispute(bill.id, NewDispute(amount_micros=4 * UNIT, reason="r"), "c")
    report = await Receivables(database).aging(date(2026, 3, 3))  # 30 days past the first, 2 past the second
    [first, second] = report.accounts
    assert first.billing_account_id == "ba-1" and first.currency == "EUR"
    assert first.buckets.days_1_30_micros == 26 * UNIT + 20 * UNIT and first.buckets.disputed_micros == 4 * UNIT
    assert second.buckets.days_1_30_micros == 7 * UNIT and report.totals["USD"].days_1_30_micros == 7 * UNIT
    later = await Receivables(database).aging(date(2026, 3, 4))  # the first is 31 days past due
    assert later.accounts[0].buckets.days_31_60_micros == 26 * UNIT
    on_issue = (await Receivables(database).aging(date(2026, 3, 1))).accounts[0].buckets  # the second due that day
    assert (on_issue.current_micros, on_issue.days_1_30_micros) == (20 * UNIT, 26 * UNIT)
    assert (await Receivables(database).aging(date(2026, 2, 28))).accounts == []  # issued after that day


async def test_the_ledger_check_finds_a_planted_allocation(database: AsyncEngine, clock: Clock) -> None:
    await add_account(database, "ba-1")
    bill = (await Invoices(database, clock=clock).issue(draft("ba-1", 1, 30))).bill
    outcome = await Payments(database, clock=clock).record_payment(pay("bank-1", 10), "ana")
    receivables = Receivables(database)
    assert await receivables.ledger_check() == []
    async with database.begin() as connection:  # an allocation written behind the services' back
        await connection.execute(
            insert(payment_allocations).values(
                payment_id=outcome.payment.payment_id,
                invoice_id=bill.id,
                amount_micros=5 * UNIT,
                allocated_at=MOMENT.replace(tzinfo=None),
            )
        )
    problems = await receivables.ledger_check()
    assert any(f"invoice {bill.id}: total" in problem for problem in problems)
    assert any(f"payment {outcome.payment.payment_id}: allocations" in problem for problem in problems)
    assert any("payments - refunds" in problem for problem in problems)
