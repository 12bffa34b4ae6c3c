"""Customer scoring (ocs/loyalty/): each factor measured from real rows on SQLite and a private
PostgreSQL, with its points and the facts behind them; thresholds into segments; the history kept
only when the standing changes; the movement report; the segment written to the customer but never
over an operator's own; the rescore on a payment and on a status change."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import AccountStatus
from ocs.billing.payments import Payments
from ocs.billing.values import NewPayment
from ocs.db.customers import customers, lines
from ocs.db.loyalty_reports import set_segment
from ocs.events import AccountEvents, BalanceChanged, StatusChanged
from ocs.loyalty.score_factors import FactorScore, Score
from ocs.loyalty.scoring import Scoring
from tests.ocs.postgres_support import postgresql_url
from tests.ocs.scoring_support import (
    DAY,
    RULES,
    UNIT,
    Clock,
    add_allocation,
    add_customer,
    add_dispute,
    add_dunning_step,
    add_invoice,
    add_line,
    add_ticket,
    add_usage,
    database,
)

__all__ = ["database", "postgresql_url"]


async def scored(engine: AsyncEngine, customer_id: str, day: date = DAY) -> dict[str, FactorScore]:
    found = await Scoring(engine, RULES, clock=Clock()).compute([customer_id], day)
    return {factor.factor: factor for factor in found[0].factors}


async def test_tenure_counts_the_days_since_the_customer_was_created(database: AsyncEngine) -> None:
    await add_customer(database, "ana", date(2025, 4, 1))
    tenure = (await scored(database, "ana"))["tenure"]
    assert (tenure.value, tenure.unit, tenure.points) == (404, "days", 10)
    assert tenure.explanation == "tenure 404 days (customer since 2025-04-01) (band from 365) -> 10 points"


async def test_spend_is_invoices_and_prepaid_usage_a_month_and_its_trend_the_last_month_against_the_rest(
    database: AsyncEngine,
) -> None:
    await add_customer(database, "ana", date(2024, 1, 1))
    await add_line(database, "ana", "ana-1", payment_type="prepaid")
    await add_line(database, "ana", "ana-2", payment_type="postpaid")
    for number, (month, units) in enumerate([(2, 10), (3, 20), (4, 60)], start=1):
        await add_invoice(
            database, "ana", number, date(2026, month, 1), units, due=date(2026, month, 20), remaining_units=0
        )
    await add_invoice(database, "ana", 9, date(2026, 1, 1), 500, due=date(2026, 1, 20), remaining_units=0)  # before
    await add_usage(database, "ana-1", date(2026, 4, 3), "events", 1, 3 * UNIT)  # prepaid: spent
    await add_usage(database, "ana-2", date(2026, 4, 3), "events", 1, 7 * UNIT, payment_type="postpaid")  # invoiced
    await add_usage(database, "ana-1", date(2026, 5, 2), "events", 1, 100 * UNIT)  # this month: not in the window
    factors = await scored(database, "ana")
    spend, trend = factors["spend"], factors["spend_trend"]
    assert (spend.value, spend.points) == (31 * UNIT, 20)  # (10 + 20 + 60 + 3) / 3 = 31.00: band 30.00, weight 2
    assert spend.explanation == (
        "spend 31.00 a month over 3 months (band from 30.00) -> 10 points x weight 2 = 20 points"
    )
    assert (trend.value, trend.points) == (320, 5)  # 63.00 against 15.00: +320 %
    assert trend.explanation == (
        "spend trend +320 % (last month 63.00 against 15.00 a month before) (band from 20) -> 5 points"
    )


async def test_usage_by_service_comes_from_the_lines_usage_records_by_unit(database: AsyncEngine) -> None:
    await add_customer(database, "ana", date(2024, 1, 1))
    await add_line(database, "ana", "ana-1")
    await add_line(database, "ana", "ana-2", payment_type="postpaid")
    for month in (2, 3):
        await add_usage(database, "ana-1", date(2026, month, 5), "seconds", 9_000, 0)
        await add_usage(database, "ana-2", date(2026, month, 5), "octets", 2**30, 0, payment_type="postpaid")
    await add_usage(database, "ana-1", date(2026, 4, 5), "seconds", 2_000, 0)
    for _ in range(3):
        await add_usage(database, "ana-1", date(2026, 4, 30), "events", 50, 0)
    factors = await scored(database, "ana")
    assert (factors["voice_usage"].value, factors["voice_usage"].points) == (6_666, 3)  # 20,000 s / 3 months
    assert (factors["voice_trend"].value, factors["voice_trend"].points) == (-78, -3)  # 2,000 against 9,000
    assert factors["voice_trend"].explanation.startswith(
        "voice trend -78 % (last month 2000 seconds against 9000 seconds a month before)"
    )
    assert (factors["sms_usage"].value, factors["sms_usage"].points) == (50, 2)
    assert (factors["sms_trend"].value, factors["sms_trend"].points) == (None, 0)  # nothing before April
    assert factors["sms_trend"].explanation == "sms trend: nothing in the 2 months before the last -> 0 points"
    assert factors["data_usage"].value == 2**31 // 3
    assert factors["data_trend"].value == -100


async def test_payment_behaviour_days_late_dunning_steps_and_open_disputes(database: AsyncEngine) -> None:
    await add_customer(database, "ana", date(2024, 1, 1))
    paid_late = await add_invoice(database, "ana", 1, date(2026, 2, 1), 10, due=date(2026, 3, 1), remaining_units=0)
    await add_allocation(database, "ana", paid_late, 10, date(2026, 3, 20))  # 19 days late
    unpaid = await add_invoice(database, "ana", 2, date(2026, 3, 1), 10, due=date(2026, 4, 20))  # 20 days at the day
    on_time = await add_invoice(database, "ana", 3, date(2026, 1, 1), 10, due=date(2026, 2, 10), remaining_units=0)
    await add_allocation(database, "ana", on_time, 10, date(2026, 2, 9))
    await add_dunning_step(database, "ana", 1, date(2026, 4, 23), "letter")
    await add_dunning_step(database, "ana", 2, date(2026, 5, 4), "restrict")
    await add_dunning_step(database, "ana", 0, date(2026, 5, 6), "lift")  # a lift is not a step reached
    await add_dispute(database, "ana", unpaid, "open")
    await add_dispute(database, "ana", paid_late, "rejected")
    factors = await scored(database, "ana")
    late = factors["days_late"]
    assert (late.value, late.points) == (20, -10)
    assert late.explanation == (
        "at most 20 days late (2 of 3 invoices due in 3 months paid late or unpaid) (band from 15) -> -10 points"
    )
    assert (factors["overdue_invoices"].value, factors["overdue_invoices"].points) == (1, -10)
    assert (factors["dunning_steps"].value, factors["dunning_steps"].points) == (2, -15)
    assert (factors["open_disputes"].value, factors["open_disputes"].points) == (1, -5)


async def test_trouble_tickets_count_those_opened_in_the_ticket_period(database: AsyncEngine) -> None:
    await add_customer(database, "ana", date(2024, 1, 1))
    for number, opened in enumerate([date(2026, 2, 10), date(2026, 3, 1), date(2026, 5, 10), date(2026, 1, 1)]):
        await add_ticket(database, "ana", f"T-{number}", opened)
    tickets = (await scored(database, "ana"))["trouble_tickets"]
    assert (tickets.value, tickets.points) == (3, -5)  # 90 days back from 10 May: 10 February on
    assert tickets.explanation == "3 trouble tickets opened (band from 3) -> -5 points"


async def test_company_size_counts_an_organizations_lines_not_terminated(database: AsyncEngine) -> None:
    await add_customer(database, "acme", date(2024, 1, 1), kind="organization")
    for number in range(12):
        await add_line(database, "acme", f"acme-{number}", status="terminated" if number == 0 else "active")
    await add_customer(database, "ana", date(2024, 1, 1))
    await add_line(database, "ana", "ana-1")
    company = (await scored(database, "acme"))["company_lines"]
    assert (company.value, company.points, company.explanation) == (
        11,
        10,
        "company of 11 lines (band from 10) -> 10 points",
    )
    person = (await scored(database, "ana"))["company_lines"]
    assert (person.value, person.points, person.explanation) == (
        None,
        0,
        "company lines: not an organization -> 0 points",
    )


def test_the_total_falls_in_the_segment_whose_threshold_it_reaches() -> None:
    assert [RULES.segment_of(points) for points in (-50, 19, 20, 59, 60, 500)] == [
        "bad",
        "bad",
        "average",
        "average",
        "ideal",
        "ideal",
    ]


async def good_and_bad(database: AsyncEngine) -> None:
    """Ana: long tenure, spends, pays on time: ideal. Bo: new, an invoice 50 days unpaid, dunned: bad."""
    await add_customer(database, "ana", date(2022, 1, 1))
    await add_line(database, "ana", "ana-1")
    for month in (2, 3, 4):
        await add_usage(database, "ana-1", date(2026, month, 2), "seconds", 20_000, 40 * UNIT)
        await add_usage(database, "ana-1", date(2026, month, 2), "events", 60, 0)
    await add_customer(database, "bo", date(2026, 1, 1))
    await add_invoice(database, "bo", 1, date(2026, 2, 1), 30, due=date(2026, 3, 20))
    for position, on in enumerate([date(2026, 3, 23), date(2026, 4, 3), date(2026, 4, 10), date(2026, 4, 19)], 1):
        await add_dunning_step(database, "bo", position, on, "letter")


async def test_a_score_sums_its_factors_into_a_segment_and_explains_each(database: AsyncEngine) -> None:
    await good_and_bad(database)
    scores = {item.customer_id: item for item in await Scoring(database, RULES, clock=Clock()).compute(None, DAY)}
    ana, bo = scores["ana"], scores["bo"]
    assert (ana.segment, bo.segment) == ("ideal", "bad")
    assert ana.points == sum(factor.points for factor in ana.factors) == 77
    assert bo.points == sum(factor.points for factor in bo.factors) == -65
    assert [factor.factor for factor in ana.factors] == [factor.measure.value for factor in RULES.factors]
    assert all(factor.explanation.endswith("points") for factor in (*ana.factors, *bo.factors))


async def test_the_daily_run_stores_what_changed_and_writes_the_segment_but_not_over_an_operators(
    database: AsyncEngine,
) -> None:
    await good_and_bad(database)
    await add_customer(database, "vip", date(2026, 1, 1), segment="vip")
    clock = Clock()
    scoring = Scoring(database, RULES, clock=clock)
    first = await scoring.run(DAY)
    assert (first.scored, first.stored) == (3, 3)
    async with database.connect() as connection:
        segments = dict((await connection.execute(select(customers.c.customer_id, customers.c.segment))).all())
    assert segments == {"ana": "ideal", "bo": "bad", "vip": "vip"}
    clock.move_to(datetime(2026, 5, 11, 9, 0, tzinfo=UTC))
    again = await scoring.run(date(2026, 5, 11))  # tenure one day longer: the same points
    assert (again.scored, again.stored, again.moved) == (3, 0, 0)
    history = await scoring.history("ana")
    assert [(item.points, item.segment, item.cause) for item in history] == [(77, "ideal", "daily")]
    assert history[0].factors[0].explanation.startswith("tenure 1590 days")


async def test_a_segment_an_operator_pinned_stands_over_the_daily_run_until_it_is_cleared(
    database: AsyncEngine,
) -> None:
    """``PUT /loyalty/members/{id}/segment`` pins a scoring segment: "bad" on a customer the rules
    call ideal stays through the daily run; cleared, the next run sets the scoring's again."""
    await good_and_bad(database)
    async with database.begin() as connection:
        assert await set_segment(connection, "ana", "bad")
    scoring = Scoring(database, RULES, clock=Clock())
    await scoring.run(DAY)
    assert await scoring.segment_of("ana") == "bad"
    assert await scoring.segment_of("bo") == "bad"  # unpinned: the scoring's own
    async with database.begin() as connection:
        assert await set_segment(connection, "ana", None)
    async with database.begin() as connection:  # drifted by hand, unpinned: the scoring writes its own again
        await connection.execute(update(customers).where(customers.c.customer_id == "bo").values(segment="ideal"))
    await Scoring(database, RULES, clock=Clock()).rescore(["ana", "bo"])
    assert (await scoring.segment_of("ana"), await scoring.segment_of("bo")) == ("ideal", "bad")


async def test_the_movement_report_shows_who_moved_between_two_days_and_which_factors_moved_them(
    database: AsyncEngine,
) -> None:
    await good_and_bad(database)
    clock = Clock(datetime(2026, 5, 10, 9, 0, tzinfo=UTC))
    scoring = Scoring(database, RULES, clock=clock)
    await scoring.run(DAY)
    await add_invoice(database, "ana", 7, date(2026, 3, 1), 10, due=date(2026, 3, 25))  # unpaid: 50 days late
    for position in range(1, 5):
        await add_dunning_step(database, "ana", position, date(2026, 4, position * 5), "letter")
    clock.move_to(datetime(2026, 5, 14, 9, 0, tzinfo=UTC))
    applied = await scoring.run(date(2026, 5, 14))
    assert (applied.stored, applied.moved) == (1, 1)
    assert await scoring.movements(date(2026, 5, 11), date(2026, 5, 13)) == []
    [moved] = await scoring.movements(date(2026, 5, 10), date(2026, 5, 14))
    assert (moved.customer_id, moved.from_segment, moved.to_segment) == ("ana", "ideal", "bad")
    changed = {change.factor: (change.from_points, change.to_points) for change in moved.changes}
    assert changed == {"days_late": (15, -30), "overdue_invoices": (5, -10), "dunning_steps": (5, -30)}
    assert moved.to_points - moved.from_points == sum(to - before for before, to in changed.values())
    [why] = [change for change in moved.changes if change.factor == "days_late"]
    assert why.from_explanation.startswith("at most 0 days late")
    assert why.to_explanation.startswith("at most 50 days late")


async def test_a_payment_rescores_its_customer_before_it_is_answered(database: AsyncEngine) -> None:
    await good_and_bad(database)
    clock = Clock()
    scoring = Scoring(database, RULES, clock=clock)
    await scoring.run(DAY)
    assert (await scoring.segment_of("bo")) == "bad"
    payments = Payments(database, clock=clock, on_payment=(scoring.on_payment,))
    await payments.record_payment(
        NewPayment(billing_account_id="BA-bo", reference="bank-1", amount_micros=30 * UNIT), "bo"
    )
    [latest, first] = await scoring.history("bo")
    assert (latest.cause, first.cause) == ("payment", "daily")
    factors = {factor.factor: factor for factor in latest.factors}
    assert factors["days_late"].explanation.startswith("at most 51 days late (1 of 1 invoices")  # paid 51 days late
    assert (factors["overdue_invoices"].value, factors["overdue_invoices"].points) == (0, 5)
    assert latest.points == first.points + 15  # -10 for the overdue invoice became +5


async def test_a_status_change_of_a_line_rescores_its_customer(database: AsyncEngine) -> None:
    await add_customer(database, "acme", date(2024, 1, 1), kind="organization")
    for number in range(10):
        await add_line(database, "acme", f"acme-{number}")
    scoring = Scoring(database, RULES, clock=Clock())
    events = AccountEvents()
    events.subscribe(scoring.on_account_event)
    await scoring.run(DAY)
    async with database.begin() as connection:
        await connection.execute(update(lines).where(lines.c.line_id == "acme-3").values(status="terminated"))
    assert events.publish(BalanceChanged("acme-1", "top_up", UNIT)) == 0
    events.publish(StatusChanged("acme-3", AccountStatus.ACTIVE, AccountStatus.TERMINATED, "care", "moved away"))
    await scoring.drain()
    [latest, _] = await scoring.history("acme")
    company = {factor.factor: factor for factor in latest.factors}["company_lines"]
    assert (latest.cause, company.value, company.points) == ("status", 9, 0)


async def test_an_unknown_customer_is_refused_naming_it(database: AsyncEngine) -> None:
    from ocs.customers.service import CustomerRefusal

    with pytest.raises(CustomerRefusal, match="nobody"):
        await Scoring(database, RULES, clock=Clock()).score_of("nobody")
    with pytest.raises(CustomerRefusal, match="nobody"):
        await Scoring(database, RULES, clock=Clock()).history("nobody")


def test_a_score_keeps_its_standing_when_only_the_facts_moved() -> None:
    factor = FactorScore("tenure", 400, "days", 10, "tenure 400 days -> 10 points")
    made = Score("ana", 10, "bad", (factor,))
    stored = [{"factor": "tenure", "value": 399, "points": 10, "explanation": "tenure 399 days -> 10 points"}]
    assert made.same_standing(10, "bad", stored)
    assert not made.same_standing(10, "average", stored)
    assert not made.same_standing(10, "bad", [{"factor": "tenure", "points": 5}])


async def test_the_daily_duty_runs_once_a_day_from_its_hour(database: AsyncEngine) -> None:
    await add_customer(database, "ana", date(2024, 1, 1))
    scoring = Scoring(database, RULES, run_hour=3, clock=Clock())
    assert await scoring.run_due(datetime(2026, 5, 10, 2, 59, tzinfo=UTC)) is None  # before the hour
    done = await scoring.run_due(datetime(2026, 5, 10, 3, 0, tzinfo=UTC))
    assert done is not None and (done.scored, done.stored) == (1, 1)
    assert await scoring.run_due(datetime(2026, 5, 10, 23, 0, tzinfo=UTC)) is None  # once that day
    again = await scoring.run_due(datetime(2026, 5, 11, 3, 0, tzinfo=UTC))
    assert again is not None and (again.scored, again.stored) == (1, 0)
    with pytest.raises(ValueError, match="run_hour"):
        Scoring(database, RULES, run_hour=24)
