"""The customer base and churn report on SQLite and PostgreSQL: a period's opening base,
additions, terminations by reason, closing base and churn rate from the status history, by
customer type, with closing = opening + additions - terminations; prepaid inactivity from the
newest usage per line."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ocs.api.orders import EngineLines
from ocs.api.provisioning import Provisioning
from ocs.customers import history
from ocs.customers.history import EntityKind, ReasonCategory, StatusChange
from ocs.customers.lifecycle import Lifecycle, StatusRequest, TargetStatus
from ocs.customers.reports import CHURN_FORMULA, Period, customer_base_report
from ocs.customers.service import Customers
from ocs.customers.values import NewLine
from tests.ocs.test_customers import ana, provisioning
from tests.ocs.test_interactions import Clock, clock, customers, database, postgresql_url

__all__ = ["clock", "customers", "database", "postgresql_url", "provisioning"]

MARCH = Period(start=date(2026, 3, 1), end=date(2026, 3, 31))


def person(customer_id: str) -> dict[str, object]:
    return {
        "customer_id": customer_id,
        "individual": {"given_name": customer_id, "family_name": "X", "birth_date": "1990-01-01"},
    }


async def terminate(customers: Customers, customer_id: str, at: datetime, category: ReasonCategory) -> None:
    """What the lifecycle does when it terminates a customer: the change, in the history."""
    async with customers.engine.begin() as connection:
        change = StatusChange(
            EntityKind.CUSTOMER, customer_id, customer_id, "active", "terminated", at, "care", "left", category
        )
        await history.record(connection, change)


async def test_the_base_adds_up_by_type_with_terminations_by_reason(customers: Customers, clock: Clock) -> None:
    clock.now = datetime(2026, 2, 10, tzinfo=UTC).timestamp()  # February: the opening base
    for name in ("ana", "bea", "cem"):
        await customers.create_customer(ana(**person(name)))
    await customers.add_line("ana", NewLine(line_id="ana-1"))
    await customers.add_line("bea", NewLine(line_id="bea-1", payment_type="postpaid"))
    await customers.add_line("bea", NewLine(line_id="bea-2", network="fixed", payment_type="postpaid"))
    clock.now = datetime(2026, 3, 5, tzinfo=UTC).timestamp()  # March: two join, one is a prospect
    await customers.create_customer(ana(**person("dan")))
    await customers.create_customer(ana(**person("eva")))
    await customers.create_customer(ana(**person("fay"), status="prospect"))
    await customers.add_line("dan", NewLine(line_id="dan-1"))
    await terminate(customers, "ana", datetime(2026, 3, 10, tzinfo=UTC), ReasonCategory.VOLUNTARY)
    await terminate(customers, "eva", datetime(2026, 3, 20, tzinfo=UTC), ReasonCategory.COLLECTIONS)
    await terminate(customers, "bea", datetime(2026, 4, 2, tzinfo=UTC), ReasonCategory.VOLUNTARY)  # after March
    report = await customer_base_report(customers.engine, MARCH, last_usage_seconds={}, inactivity_days=90)
    totals = report.totals
    assert (totals.opening, totals.gross_additions, totals.terminations, totals.closing) == (3, 2, 2, 3)
    assert totals.closing == totals.opening + totals.gross_additions - totals.terminations
    assert totals.terminations_by_reason == {"collections": 1, "voluntary": 1}
    assert totals.churn_rate == round(2 / 3, 6) and report.churn_formula == CHURN_FORMULA
    assert set(report.by_customer_type) == {"mobile_prepaid", "mixed", "no_lines"}
    mobile = report.by_customer_type["mobile_prepaid"]  # ana (left) and dan (joined)
    assert (mobile.opening, mobile.gross_additions, mobile.terminations, mobile.closing) == (1, 1, 1, 1)
    assert report.by_customer_type["mixed"].closing == 1  # bea: a mobile and a fixed line, counted once
    for figures in report.by_customer_type.values():
        assert figures.closing == figures.opening + figures.gross_additions - figures.terminations
    assert sum(figures.closing for figures in report.by_customer_type.values()) == totals.closing
    april = await customer_base_report(
        customers.engine,
        Period(start=date(2026, 4, 1), end=date(2026, 4, 30)),
        last_usage_seconds={},
        inactivity_days=90,
    )
    assert (april.totals.opening, april.totals.terminations, april.totals.closing) == (3, 1, 2)


async def test_prepaid_inactivity_counts_lines_without_usage_in_the_window(customers: Customers, clock: Clock) -> None:
    clock.now = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
    await customers.create_customer(ana())
    for line_id in ("ana-1", "ana-2", "ana-3"):
        await customers.add_line("ana", NewLine(line_id=line_id))
    await customers.add_line("ana", NewLine(line_id="ana-post", payment_type="postpaid"))  # not prepaid
    clock.now = datetime(2026, 3, 25, tzinfo=UTC).timestamp()
    await customers.add_line("ana", NewLine(line_id="ana-new"))  # too young to have been inactive 30 days
    end = MARCH.after_last_instant
    usage = {"ana-1": int((end - timedelta(days=3)).timestamp()), "ana-2": int((end - timedelta(days=40)).timestamp())}
    report = await customer_base_report(customers.engine, MARCH, last_usage_seconds=usage, inactivity_days=30)
    inactivity = report.prepaid_inactivity
    assert (inactivity.prepaid_lines, inactivity.inactive_lines) == (3, 2)  # ana-2 (40 days) and ana-3 (never)
    assert inactivity.inactivity_rate == round(2 / 3, 6) and inactivity.inactive_since == end - timedelta(days=30)


def test_a_period_ending_before_it_starts_is_refused_naming_to() -> None:
    with pytest.raises(ValueError, match="to: "):
        Period(start=date(2026, 3, 2), end=date(2026, 3, 1))
    assert MARCH.after_last_instant - MARCH.first_instant == timedelta(days=31)


async def test_customer_terminations_through_the_lifecycle_are_counted_by_category_and_lines_apart(
    customers: Customers, clock: Clock, provisioning: Provisioning
) -> None:
    lifecycle = Lifecycle(customers.engine, EngineLines(provisioning), clock=lambda: clock.now)
    clock.now = datetime(2026, 2, 10, tzinfo=UTC).timestamp()
    for name in ("gus", "hal", "ida"):
        await customers.create_customer(ana(**person(name)))
        await customers.add_line(name, NewLine(line_id=f"{name}-1"))
        await customers.add_line(name, NewLine(line_id=f"{name}-2"))
    clock.now = datetime(2026, 3, 3, tzinfo=UTC).timestamp()
    moved = StatusRequest(status=TargetStatus.TERMINATED, reason="moved", reason_category=ReasonCategory.VOLUNTARY)
    await lifecycle.set_customer_status("gus", moved, "care")
    clock.now = datetime(2026, 3, 4, tzinfo=UTC).timestamp()
    unpaid = StatusRequest(status=TargetStatus.TERMINATED, reason="unpaid", reason_category=ReasonCategory.COLLECTIONS)
    await lifecycle.set_customer_status("hal", unpaid, "dunning")
    suspended = StatusRequest(
        status=TargetStatus.SUSPENDED, reason="unpaid", reason_category=ReasonCategory.COLLECTIONS
    )
    await lifecycle.set_customer_status("ida", suspended, "dunning")  # still in the base
    report = await customer_base_report(customers.engine, MARCH, last_usage_seconds={}, inactivity_days=90)
    totals = report.totals
    assert (totals.opening, totals.terminations, totals.closing) == (3, 2, 1)
    assert totals.terminations_by_reason == {"collections": 1, "voluntary": 1}
    lines = report.lines  # four lines left with their customers, counted apart
    assert (lines.opening, lines.terminations, lines.closing) == (6, 4, 2)
    assert lines.terminations_by_reason == {"collections": 2, "voluntary": 2}
    assert lines.closing == lines.opening + lines.gross_additions - lines.terminations
