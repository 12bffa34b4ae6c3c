"""Read-side queries of the loyalty tables for operators: members, applications, programme totals,
and the one write an operator makes there, a customer's segment (``ocs.loyalty.reports`` uses them).

Theory of operation: everything here reads the tables ``ocs.db.loyalty`` defines and the engine
writes (counters, applications, budgets, invoice discounts) and ``customers.segment``; nothing
here is on the engine's hot path. Lists are ordered by their keys and paged by ``limit`` and
``offset``, so two reads of the same rows answer the same. Money is integer micros.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ocs.db.customers import customers
from ocs.db.loyalty import (
    ApplicationState,
    loyalty_applications,
    loyalty_budgets,
    loyalty_invoice_discounts,
    loyalty_member_counters,
)

NO_SEGMENT = "none"  # how a customer without a segment is counted in ``members_by_segment``


@dataclass(frozen=True, slots=True)
class MemberRow:
    customer_id: str
    kind: str
    segment: str | None


@dataclass(frozen=True, slots=True)
class CounterRow:
    rule_id: str
    period: str
    value: int


@dataclass(frozen=True, slots=True)
class ApplicationRow:
    application_id: int
    rule_id: str
    programme_id: str
    member_id: str
    line_id: str
    trigger_id: str
    trigger_kind: str
    action: str
    amount_micros: int
    units: int
    unit_kind: str | None
    valid_until: int
    cost_micros: int
    at_seconds: int
    committed_at_ms: int
    credited_at_ms: int | None
    state: str
    outcome: str | None


@dataclass(slots=True)
class ProgrammeTotals:
    """One programme's applications summed: by state, bonus money and units credited, and cost."""

    programme_id: str
    applications: dict[str, int] = field(default_factory=dict)  # by state
    bonus_credited_micros: int = 0  # bonus money in the balance engine (state credited)
    bonus_pending_micros: int = 0  # bonus money not credited yet
    units_credited: dict[str, int] = field(default_factory=dict)  # allowances credited, by unit kind
    cost_micros: int = 0  # what its applications cost (the budget's measure)
    budget_spent_micros: int = 0  # what its budget row counts (equal to cost_micros: the audit's check)
    discounts_pending: int = 0  # invoice discounts waiting for their invoice
    discounts_consumed: int = 0


async def member(connection: AsyncConnection, customer_id: str) -> MemberRow | None:
    table = customers.c
    row = (
        await connection.execute(
            select(table.customer_id, table.kind, table.segment).where(table.customer_id == customer_id)
        )
    ).first()
    return None if row is None else MemberRow(str(row[0]), str(row[1]), None if row[2] is None else str(row[2]))


async def set_segment(connection: AsyncConnection, customer_id: str, segment: str | None) -> bool:
    """Write ``customers.segment`` by an operator's hand: a segment pins it (the scoring leaves it),
    None unpins it (the scoring's next score sets it again); False when there is no such customer."""
    values = {"segment": segment, "segment_pinned": segment is not None}
    statement = update(customers).where(customers.c.customer_id == customer_id).values(**values)
    return int((await connection.execute(statement)).rowcount) == 1


async def members_by_segment(connection: AsyncConnection) -> dict[str, int]:
    """Customers per segment (``NO_SEGMENT`` for those without one), by segment name."""
    table = customers.c
    rows = await connection.execute(select(table.segment, func.count()).group_by(table.segment))
    found: dict[str, int] = {}
    for segment, count in rows:
        key = NO_SEGMENT if segment is None else str(segment)
        found[key] = found.get(key, 0) + int(count)
    return dict(sorted(found.items()))


async def counters_of(connection: AsyncConnection, member_id: str) -> list[CounterRow]:
    """The member's counters by period and rule (``loyalty_member_counters``: one row a period)."""
    table = loyalty_member_counters.c
    statement = select(table.period, table.counters).where(table.member_id == member_id).order_by(table.period)
    return [
        CounterRow(str(rule), str(period), int(value))
        for period, packed in await connection.execute(statement)
        for rule, value in sorted(json.loads(packed).items())
    ]


_APPLICATION_COLUMNS = (
    loyalty_applications.c.application_id,
    loyalty_applications.c.rule_id,
    loyalty_applications.c.programme_id,
    loyalty_applications.c.member_id,
    loyalty_applications.c.line_id,
    loyalty_applications.c.trigger_id,
    loyalty_applications.c.trigger_kind,
    loyalty_applications.c.action,
    loyalty_applications.c.amount_micros,
    loyalty_applications.c.units,
    loyalty_applications.c.unit_kind,
    loyalty_applications.c.valid_until,
    loyalty_applications.c.cost_micros,
    loyalty_applications.c.at_seconds,
    loyalty_applications.c.committed_at_ms,
    loyalty_applications.c.credited_at_ms,
    loyalty_applications.c.state,
    loyalty_applications.c.outcome,
)


async def applications(
    connection: AsyncConnection,
    *,
    member_id: str | None = None,
    programme_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ApplicationRow]:
    """Applications, oldest first, of one member and/or one programme (None: any)."""
    table = loyalty_applications.c
    statement = select(*_APPLICATION_COLUMNS).order_by(table.application_id).limit(limit).offset(offset)
    if member_id is not None:
        statement = statement.where(table.member_id == member_id)
    if programme_id is not None:
        statement = statement.where(table.programme_id == programme_id)
    return [ApplicationRow(**row._mapping) for row in await connection.execute(statement)]


async def programme_totals(connection: AsyncConnection) -> dict[str, ProgrammeTotals]:
    """Per programme with applications, a budget row or invoice discounts: its totals."""
    table = loyalty_applications.c
    rows = await connection.execute(
        select(
            table.programme_id,
            table.state,
            table.action,
            table.unit_kind,
            func.count(),
            func.sum(table.amount_micros),
            func.sum(table.units),
            func.sum(table.cost_micros),
        ).group_by(table.programme_id, table.state, table.action, table.unit_kind)
    )
    made: dict[str, ProgrammeTotals] = {}

    def entry(programme_id: object) -> ProgrammeTotals:
        return made.setdefault(str(programme_id), ProgrammeTotals(str(programme_id)))

    for programme_id, state, action, unit_kind, count, amount, units, cost in rows:
        found = entry(programme_id)
        found.applications[str(state)] = found.applications.get(str(state), 0) + int(count)
        found.cost_micros += int(cost or 0)
        if action == "bonus_money" and state == ApplicationState.CREDITED:
            found.bonus_credited_micros += int(amount or 0)
        elif action == "bonus_money" and state == ApplicationState.PENDING:
            found.bonus_pending_micros += int(amount or 0)
        elif action == "unit_allowance" and state == ApplicationState.CREDITED and unit_kind is not None:
            found.units_credited[str(unit_kind)] = found.units_credited.get(str(unit_kind), 0) + int(units or 0)
    budgets = loyalty_budgets.c
    for programme_id, spent in await connection.execute(select(budgets.programme_id, budgets.spent_micros)):
        entry(programme_id).budget_spent_micros = int(spent)
    discounts = loyalty_invoice_discounts.c
    for programme_id, state, count in await connection.execute(
        select(discounts.programme_id, discounts.state, func.count()).group_by(discounts.programme_id, discounts.state)
    ):
        if state == "consumed":
            entry(programme_id).discounts_consumed += int(count)
        else:
            entry(programme_id).discounts_pending += int(count)
    return dict(sorted(made.items()))


async def bonus_credited_by_line(connection: AsyncConnection) -> dict[str, dict[str, int]]:
    """Per line: bonus money credited into it, per programme (what ``bonus spent`` is measured against)."""
    table = loyalty_applications.c
    rows = await connection.execute(
        select(table.line_id, table.programme_id, func.sum(table.amount_micros))
        .where(table.action == "bonus_money", table.state == ApplicationState.CREDITED)
        .group_by(table.line_id, table.programme_id)
    )
    found: dict[str, dict[str, int]] = {}
    for line_id, programme_id, amount in rows:
        found.setdefault(str(line_id), {})[str(programme_id)] = int(amount or 0)
    return found
