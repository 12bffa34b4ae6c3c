"""The facts scores are made of, read for many customers at once: a handful of grouped queries.

Theory of operation: ``read_facts(connection, window, customer_ids)`` answers a ``CustomerFacts``
(``ocs.loyalty.score_factors``) per customer, for the customers named (up to 1,000 per query) or
for every customer not terminated (``None``: the daily run). Each fact is one query grouped by
customer, never one query per customer, so the daily run over 100,000 customers is eight queries:

- the customers (kind, created);
- spend by month: invoices by the month of their period's start (postpaid), and prepaid usage
  records by the month of their commit (postpaid usage reaches the customer through the invoice);
- usage by unit (seconds, events, octets: voice, SMS, data) and month, from the usage records of
  the customer's lines; the month is a ``CASE`` over the window's month boundaries, inside SQL;
- lateness: the invoices due in the window before the day, with the time of their last payment
  allocation (late = paid after the due date, or still unpaid at the day: then also overdue);
- dunning steps applied in the window (lifts not counted), open disputes, trouble tickets opened in
  the ticket period, and lines not terminated.

The window (``Window``) is the last ``months`` full calendar months before the day's month, so a
score computed any day of a month reads the same months; the trend compares the last of them with
the months before. Every query runs on SQLite and PostgreSQL alike (no date functions in SQL: the
months are bound as epoch seconds and dates).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from ocs.db.billing import disputes, invoices, payment_allocations
from ocs.db.customers import billing_accounts, customer_nodes, customers, lines
from ocs.db.dunning import dunning_steps
from ocs.db.interactions import trouble_tickets
from ocs.db.loyalty_scores import chunks
from ocs.db.usage import usage_records
from ocs.loyalty.score_factors import CustomerFacts

TERMINATED = "terminated"


def _month_start(day: date, back: int) -> date:
    """The first day of the month ``back`` months before ``day``'s month."""
    index = day.year * 12 + day.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


@dataclass(frozen=True, slots=True)
class Window:
    day: date  # the scoring day (facts up to its end)
    months: int
    ticket_days: int
    # The window's months' first days, oldest first, and the day's month's first day (the end).
    boundaries: tuple[date, ...] = field(init=False)

    def __post_init__(self) -> None:  # computed once: every record's month is looked up in it
        bounds = tuple(_month_start(self.day, back) for back in range(self.months, -1, -1))
        object.__setattr__(self, "boundaries", bounds)

    @property
    def start(self) -> date:
        return self.boundaries[0]

    @property
    def end(self) -> date:
        return self.boundaries[-1]

    def month_of(self, day: date) -> int | None:
        """The index (0: oldest) of the window's month holding ``day``; None outside the window."""
        bounds = self.boundaries
        for index in range(self.months):
            if bounds[index] <= day < bounds[index + 1]:
                return index
        return None


def _groups(customer_ids: Sequence[str] | None) -> Iterable[Sequence[str] | None]:
    return [None] if customer_ids is None else chunks(customer_ids)


def _only(query: Select[Any], column: ColumnElement[Any], group: Sequence[str] | None) -> Select[Any]:
    return query if group is None else query.where(column.in_(group))


async def read_facts(
    connection: AsyncConnection, window: Window, customer_ids: Sequence[str] | None = None
) -> dict[str, CustomerFacts]:
    """Every named customer's facts (unknown ids are left out), or every customer not terminated."""
    facts: dict[str, CustomerFacts] = {}
    for group in _groups(customer_ids):
        query = select(customers.c.customer_id, customers.c.kind, customers.c.created_at)
        if group is None:
            query = query.where(customers.c.status != TERMINATED)
        for customer_id, kind, created_at in await connection.execute(_only(query, customers.c.customer_id, group)):
            facts[customer_id] = CustomerFacts(customer_id, kind, created_at.date(), window.months)
        await _spend(connection, window, group, facts)
        await _usage(connection, window, group, facts)
        await _lateness(connection, window, group, facts)
        await _counts(connection, window, group, facts)
    return facts


async def _spend(
    connection: AsyncConnection, window: Window, group: Sequence[str] | None, facts: dict[str, CustomerFacts]
) -> None:
    query = (
        select(invoices.c.customer_id, invoices.c.period_start, func.sum(invoices.c.total_micros))
        .where(invoices.c.period_start >= window.start, invoices.c.period_start < window.end)
        .group_by(invoices.c.customer_id, invoices.c.period_start)
    )
    for customer_id, period_start, total in await connection.execute(_only(query, invoices.c.customer_id, group)):
        month = window.month_of(period_start)
        if customer_id in facts and month is not None:
            facts[customer_id].spend_by_month[month] += int(total)


def _month_case(window: Window) -> ColumnElement[Any]:
    """The window month of a usage record, in SQL; the numbers are inlined (ours, integers) so the
    same expression can be grouped by on PostgreSQL, where two bound parameters never compare equal."""
    at = usage_records.c.at_seconds
    bounds = window.boundaries
    whens: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = [
        (at < literal_column(str(_epoch(bounds[index + 1]))), literal_column(str(index)))
        for index in range(window.months)
    ]
    return case(*whens, else_=literal_column(str(window.months - 1))).label("month")


async def _usage(
    connection: AsyncConnection, window: Window, group: Sequence[str] | None, facts: dict[str, CustomerFacts]
) -> None:
    month = _month_case(window)
    query = (
        select(
            lines.c.customer_id,
            usage_records.c.unit,
            usage_records.c.payment_type,
            month,
            func.sum(usage_records.c.units),
            func.sum(usage_records.c.micros),
        )
        .join(lines, lines.c.line_id == usage_records.c.account_id)
        .where(usage_records.c.at_seconds >= _epoch(window.start), usage_records.c.at_seconds < _epoch(window.end))
        .group_by(lines.c.customer_id, usage_records.c.unit, usage_records.c.payment_type, month)
    )
    for customer_id, unit, payment_type, index, units, micros in await connection.execute(
        _only(query, lines.c.customer_id, group)
    ):
        found = facts.get(customer_id)
        if found is None:
            continue
        found.usage(unit)[int(index)] += int(units)
        if payment_type == "prepaid":  # postpaid usage is spent through its invoice
            found.spend_by_month[int(index)] += int(micros)


async def _lateness(
    connection: AsyncConnection, window: Window, group: Sequence[str] | None, facts: dict[str, CustomerFacts]
) -> None:
    query = (
        select(
            invoices.c.customer_id,
            invoices.c.due_date,
            invoices.c.remaining_micros,
            func.max(payment_allocations.c.allocated_at),
        )
        .select_from(invoices.outerjoin(payment_allocations, payment_allocations.c.invoice_id == invoices.c.invoice_id))
        .where(invoices.c.due_date >= window.start, invoices.c.due_date < window.day)
        .group_by(invoices.c.invoice_id, invoices.c.customer_id, invoices.c.due_date, invoices.c.remaining_micros)
    )
    for customer_id, due_date, remaining, paid_at in await connection.execute(
        _only(query, invoices.c.customer_id, group)
    ):
        found = facts.get(customer_id)
        if found is None:
            continue
        late = max((_settled(window.day, due_date, remaining, paid_at) - due_date).days, 0)
        found.invoices_due += 1
        found.invoices_late += 1 if late > 0 else 0
        found.invoices_overdue += 1 if remaining > 0 else 0
        found.most_days_late = max(found.most_days_late, late)


def _settled(day: date, due_date: date, remaining_micros: int, paid_at: datetime | None) -> date:
    """When an invoice was settled, as far as lateness goes: still open, it is late until ``day``;
    settled with no allocation, a credit note settled it (not late)."""
    if remaining_micros > 0:
        return day
    return min(paid_at.date(), day) if paid_at is not None else due_date


async def _counts(
    connection: AsyncConnection, window: Window, group: Sequence[str] | None, facts: dict[str, CustomerFacts]
) -> None:
    since = datetime(window.day.year, window.day.month, window.day.day) - timedelta(days=window.ticket_days - 1)
    until = datetime(window.day.year, window.day.month, window.day.day) + timedelta(days=1)
    counted: list[tuple[str, Select[Any], ColumnElement[Any]]] = [
        (
            "dunning_steps",
            select(dunning_steps.c.customer_id, func.count())
            .where(dunning_steps.c.action != "lift", dunning_steps.c.run_date >= window.start)
            .where(dunning_steps.c.run_date <= window.day)
            .group_by(dunning_steps.c.customer_id),
            dunning_steps.c.customer_id,
        ),
        (
            "open_disputes",
            select(billing_accounts.c.customer_id, func.count())
            .join(billing_accounts, billing_accounts.c.billing_account_id == disputes.c.billing_account_id)
            .where(disputes.c.state == "open")
            .group_by(billing_accounts.c.customer_id),
            billing_accounts.c.customer_id,
        ),
        (
            "tickets",
            select(trouble_tickets.c.customer_id, func.count())
            .where(trouble_tickets.c.created_at >= since, trouble_tickets.c.created_at < until)
            .group_by(trouble_tickets.c.customer_id),
            trouble_tickets.c.customer_id,
        ),
        (
            "lines",
            select(lines.c.customer_id, func.count()).where(lines.c.status != TERMINATED).group_by(lines.c.customer_id),
            lines.c.customer_id,
        ),
    ]
    for name, query, column in counted:
        for customer_id, count in await connection.execute(_only(query, column, group)):
            if customer_id in facts:
                setattr(facts[customer_id], name, int(count))


async def customers_of_accounts(connection: AsyncConnection, account_ids: Sequence[str]) -> set[str]:
    """The customers whose lines or company nodes are these engine accounts."""
    found: set[str] = set()
    for group in chunks(account_ids):
        line_query = select(lines.c.customer_id).where(lines.c.line_id.in_(group))
        node_query = select(customer_nodes.c.customer_id).where(customer_nodes.c.account_id.in_(group))
        found.update((await connection.execute(line_query.union(node_query))).scalars())
    return found


async def customer_of_billing_account(connection: AsyncConnection, billing_account_id: str) -> str | None:
    query = select(billing_accounts.c.customer_id).where(billing_accounts.c.billing_account_id == billing_account_id)
    found: str | None = (await connection.execute(query)).scalar_one_or_none()
    return found
