"""``ocs loyalty simulate``: what a rule set would have given over past usage records, crediting
nothing (a dry run).

Theory of operation: the usage records of ``[from, to]`` (days, UTC, both included) are read from
the business database in pages, oldest first (by commit time, then record number), each made a
loyalty event of its line's member exactly as the engine makes it (``ocs.loyalty.engine.
usage_event``, the members read once with ``MemberDirectory.preload``), and fed page after page to
the pure evaluation the engine uses (``ocs.loyalty.rules.evaluate``) with counters and budgets
kept here, in memory, from 0: a counter of a period that began before ``from`` starts at 0 (what
the records before ``from`` counted is not seen), and budgets start unspent. Nothing is written:
the database is only read, through a connection that never begins a write, and nothing reaches
the balance engine (the engine's credit path is never called).

The result, per programme and per segment of the member (``none`` when it has none):
applications, bonus money and allowance units (by unit kind) that would have been given, invoice
discounts that would have been recorded, and how many applications a budget refused; plus the
records read and how many had a member.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db.usage import usage_records
from ocs.loyalty.engine import usage_event
from ocs.loyalty.members import MemberDirectory
from ocs.loyalty.rules import ActionKind, CounterKey, LoyaltyEvent, LoyaltyRules, Member, evaluate

PAGE_ROWS = 5_000
NO_SEGMENT = "none"


@dataclass(slots=True)
class SimulatedTotals:
    """What one programme would have given one segment."""

    applications: int = 0
    bonus_micros: int = 0
    units: dict[str, int] = field(default_factory=dict)  # by unit kind
    invoice_discounts: int = 0


@dataclass(slots=True)
class Simulation:
    from_day: date
    to_day: date
    records: int = 0
    records_with_member: int = 0
    over_budget: int = 0
    totals: dict[tuple[str, str], SimulatedTotals] = field(default_factory=dict)  # (programme, segment)

    def as_json(self) -> dict[str, object]:
        programmes: dict[str, dict[str, object]] = {}
        for (programme_id, segment), item in sorted(self.totals.items()):
            programmes.setdefault(programme_id, {})[segment] = {
                "applications": item.applications,
                "bonus_micros": item.bonus_micros,
                "units": dict(sorted(item.units.items())),
                "invoice_discounts": item.invoice_discounts,
            }
        return {
            "from": self.from_day.isoformat(),
            "to": self.to_day.isoformat(),
            "records": self.records,
            "records_with_member": self.records_with_member,
            "over_budget": self.over_budget,
            "programmes": programmes,
        }


def _day_start(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


_COLUMNS = (
    usage_records.c.record_number,
    usage_records.c.record_id,
    usage_records.c.account_id,
    usage_records.c.at_seconds,
    usage_records.c.service,
    usage_records.c.units,
    usage_records.c.micros,
    usage_records.c.payment_type,
)


async def simulate(database: AsyncEngine, rules: LoyaltyRules, from_day: date, to_day: date) -> Simulation:
    """The dry run of ``rules`` over the records of ``[from_day, to_day]`` (module docstring)."""
    if to_day < from_day:
        raise ValueError("to: before from")
    result = Simulation(from_day, to_day)
    start, end = _day_start(from_day), _day_start(to_day + timedelta(days=1))
    members = MemberDirectory(segment_ttl_seconds=float("inf"))
    counters: dict[CounterKey, int] = {}
    spent: dict[str, int] = {}
    after = (start - 1, 0)  # (at_seconds, record_number) of the last record read
    async with database.connect() as connection:
        await members.preload(connection)
        while True:
            statement = (
                select(*_COLUMNS)
                .where(
                    usage_records.c.at_seconds >= start,
                    usage_records.c.at_seconds < end,
                    tuple_(usage_records.c.at_seconds, usage_records.c.record_number) > after,
                )
                .order_by(usage_records.c.at_seconds, usage_records.c.record_number)
                .limit(PAGE_ROWS)
            )
            rows = [dict(row._mapping) for row in await connection.execute(statement)]
            if not rows:
                break
            after = (int(rows[-1]["at_seconds"]), int(rows[-1]["record_number"]))
            found = await members.of_lines(connection, {str(row["account_id"]) for row in rows})
            events: list[tuple[LoyaltyEvent, Member]] = [
                (usage_event(row, member), member)
                for row in rows
                if (member := found.get(str(row["account_id"]))) is not None
            ]
            result.records += len(rows)
            result.records_with_member += len(events)
            _apply(rules, events, counters, spent, result)
    return result


def _apply(
    rules: LoyaltyRules,
    events: list[tuple[LoyaltyEvent, Member]],
    counters: dict[CounterKey, int],
    spent: dict[str, int],
    result: Simulation,
) -> None:
    outcome = evaluate(rules, events, counters, spent)
    counters.update(outcome.counters)
    spent.update(outcome.spent)
    result.over_budget += outcome.over_budget
    segments: Mapping[str, str] = {member.customer_id: member.segment or NO_SEGMENT for _, member in events}
    for application in outcome.applications:
        key = (application.programme_id, segments.get(application.member_id, NO_SEGMENT))
        totals = result.totals.setdefault(key, SimulatedTotals())
        totals.applications += 1
        if application.action is ActionKind.BONUS_MONEY:
            totals.bonus_micros += application.amount_micros
        elif application.action is ActionKind.UNIT_ALLOWANCE and application.unit_kind is not None:
            kind = application.unit_kind.value
            totals.units[kind] = totals.units.get(kind, 0) + application.units
        elif application.action is ActionKind.INVOICE_DISCOUNT:
            totals.invoice_discounts += 1
