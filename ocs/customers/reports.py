"""The customer base and churn report for a period, replayed from the status history.

Theory of operation: the period is whole UTC days, ``from`` to ``to`` both included, so it is the
instants [from 00:00, to + 1 day 00:00). A customer is *in the base* while its status is active,
suspended or barred (a prospect has not joined yet; a terminated customer has left). Replaying
``status_changes`` (``ocs.customers.history``) in time order gives each customer's status at any
instant; then, for the period:

- ``opening``: customers in the base at its start; ``closing``: at its end;
- ``gross_additions``: changes during the period from out of the base into it (a new customer, a
  prospect activated, a terminated customer won back: each entry counts);
- ``terminations``: changes from in the base to out of it, counted by their reason category
  (``voluntary``, ``collections``, ``fraud``, ``other``; ``other`` when none was given).

Customers terminate through the lifecycle (``ocs.customers.lifecycle``: ``PUT
/customers/{id}/status`` with a reason category), which records the customer's change with its
category. The same figures over lines (each line's effective status, its changes recorded with
the category of the change that made them) are given apart as ``lines``; they are not customers.

Every change that crosses the base's edge is one of the two, so ``closing = opening +
gross_additions - terminations`` holds by construction, for the totals and for each type.
``churn_rate = terminations / ((opening + closing) / 2)``, the terminations over the average base
of the period (None when that average is 0).

A customer's type is its lines' types (network x payment type: ``mobile_prepaid``,
``fixed_postpaid``, ...): a customer whose lines all share one type counts under it, a customer
with lines of two or more types counts once, under ``mixed``, and a customer with no line under
``no_lines``; so the types split the base and their figures add up to the totals.

Prepaid inactivity churn is a separate figure: prepaid lines in the base at the period's end
(active, suspended or barred) with no usage record (the usage spool, ``ocs.billing.spool``: the
newest record per line, given by the caller, since this wing does not read billing's spool) in
the ``inactivity_days`` before the end, among those old enough to have had the chance (made before
that cut). Customers and lines made before the history existed (revision 0003i) count as having
entered their current status when they were made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated

from pydantic import Field, model_validator
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.customers import history
from ocs.customers.history import EntityKind, StatusChange
from ocs.customers.values import Closed
from ocs.db.customers import customers, lines
from ocs.db.schema import utc_aware

IN_BASE = frozenset({"active", "suspended", "barred"})
NO_CATEGORY = "other"
MIXED = "mixed"
NO_LINES = "no_lines"
CHURN_FORMULA = "churn_rate = terminations / ((opening + closing) / 2)"
RATE_DIGITS = 6
# The epoch (no usage record is older) to the last date whose next day Python can still hold;
# the inactivity window (at most 36,600 days) reaches back from the end, still within datetime.
EARLIEST = date(1970, 1, 1)
LATEST = date(9999, 12, 30)
ReportDate = Annotated[date, Field(ge=EARLIEST, le=LATEST)]


class Period(Closed):
    """``from`` and ``to`` are both included (whole UTC days)."""

    start: ReportDate
    end: ReportDate

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError(f"to: {self.end} is before from {self.start}")
        return self

    @property
    def first_instant(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def after_last_instant(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time(), UTC)


class BaseFigures(Closed):
    opening: int = 0
    gross_additions: int = 0
    terminations: int = 0
    terminations_by_reason: dict[str, int] = {}
    closing: int = 0
    churn_rate: float | None = None


class PrepaidInactivity(Closed):
    inactivity_days: int
    inactive_since: datetime  # no usage from this instant to the period's end
    prepaid_lines: int  # in the base at the end, made before ``inactive_since``
    inactive_lines: int
    inactivity_rate: float | None


class CustomerBaseReport(Closed):
    period_from: date
    period_to: date
    churn_formula: str
    totals: BaseFigures  # customers
    by_customer_type: dict[str, BaseFigures]
    lines: BaseFigures  # the same figures counted over lines (a line's effective status), apart
    prepaid_inactivity: PrepaidInactivity


@dataclass(slots=True)
class _Counts:
    opening: int = 0
    additions: int = 0
    closing: int = 0
    by_reason: dict[str, int] | None = None

    def figures(self) -> BaseFigures:
        reasons = dict(sorted((self.by_reason or {}).items()))
        terminations = sum(reasons.values())
        average_base = (self.opening + self.closing) / 2
        rate = round(terminations / average_base, RATE_DIGITS) if average_base else None
        return BaseFigures(
            opening=self.opening,
            gross_additions=self.additions,
            terminations=terminations,
            terminations_by_reason=reasons,
            closing=self.closing,
            churn_rate=rate,
        )


def _count_customer(counts: _Counts, changes: list[StatusChange], start: datetime) -> None:
    status: str | None = None  # before its first change a customer is not in the base
    for change in changes:  # oldest first, all before the period's end
        if change.changed_at < start:
            counts.opening = int(change.to_status in IN_BASE)
        elif (status in IN_BASE) != (change.to_status in IN_BASE):
            if change.to_status in IN_BASE:
                counts.additions += 1
            else:
                category = change.reason_category.value if change.reason_category is not None else NO_CATEGORY
                counts.by_reason = counts.by_reason or {}
                counts.by_reason[category] = counts.by_reason.get(category, 0) + 1
        status = change.to_status
    counts.closing = int(status in IN_BASE)


def customer_type(line_types: set[str]) -> str:
    if not line_types:
        return NO_LINES
    return next(iter(line_types)) if len(line_types) == 1 else MIXED


def base_figures(
    changes: list[StatusChange], line_types: Mapping[str, set[str]], period: Period
) -> tuple[BaseFigures, dict[str, BaseFigures]]:
    """The totals and the figures by customer type: a pure function of the customer changes."""
    by_customer: dict[str, list[StatusChange]] = {}
    for change in changes:
        by_customer.setdefault(change.entity_id, []).append(change)
    totals = _Counts()
    by_type: dict[str, _Counts] = {}
    for customer_id, own in by_customer.items():
        one = _Counts()
        _count_customer(one, own, period.first_instant)
        for counts in (totals, by_type.setdefault(customer_type(line_types.get(customer_id, set())), _Counts())):
            counts.opening += one.opening
            counts.additions += one.additions
            counts.closing += one.closing
            for reason, count in (one.by_reason or {}).items():
                counts.by_reason = counts.by_reason or {}
                counts.by_reason[reason] = counts.by_reason.get(reason, 0) + count
    return totals.figures(), {kind: counts.figures() for kind, counts in sorted(by_type.items())}


def prepaid_inactivity(
    line_changes: list[StatusChange],
    prepaid_made_at: Mapping[str, datetime],
    last_usage_seconds: Mapping[str, int],
    period: Period,
    inactivity_days: int,
) -> PrepaidInactivity:
    end = period.after_last_instant
    cut = end - timedelta(days=inactivity_days)
    status_at_end: dict[str, str] = {}
    for change in line_changes:
        status_at_end[change.entity_id] = change.to_status
    candidates = [
        line_id
        for line_id, made_at in prepaid_made_at.items()
        if made_at < cut and status_at_end.get(line_id) in IN_BASE
    ]
    inactive = [line_id for line_id in candidates if last_usage_seconds.get(line_id, 0) < cut.timestamp()]
    return PrepaidInactivity(
        inactivity_days=inactivity_days,
        inactive_since=cut,
        prepaid_lines=len(candidates),
        inactive_lines=len(inactive),
        inactivity_rate=round(len(inactive) / len(candidates), RATE_DIGITS) if candidates else None,
    )


def _with_unrecorded(
    changes: list[StatusChange], kind: EntityKind, rows: list[tuple[str, str, str, datetime]], end: datetime
) -> list[StatusChange]:
    """The history, plus one change (None -> current status, when made) for each entity made
    before the history was kept; in time order."""
    recorded = {change.entity_id for change in changes}
    made = [
        StatusChange(kind, entity_id, customer_id, None, status, created_at)
        for entity_id, customer_id, status, created_at in rows
        if entity_id not in recorded and created_at < end
    ]
    return sorted([*changes, *made], key=lambda change: change.changed_at)


async def customer_base_report(
    engine: AsyncEngine, period: Period, *, last_usage_seconds: Mapping[str, int], inactivity_days: int
) -> CustomerBaseReport:
    end = period.after_last_instant
    async with engine.connect() as connection:
        customer_rows = (
            await connection.execute(select(customers.c.customer_id, customers.c.status, customers.c.created_at))
        ).all()
        line_rows = (
            await connection.execute(
                select(
                    lines.c.line_id,
                    lines.c.customer_id,
                    lines.c.status,
                    lines.c.created_at,
                    lines.c.network,
                    lines.c.payment_type,
                )
            )
        ).all()
    known = await history.read(engine, until=end)
    customer_changes = _with_unrecorded(
        [change for change in known if change.entity_kind is EntityKind.CUSTOMER],
        EntityKind.CUSTOMER,
        [(row.customer_id, row.customer_id, row.status, utc_aware(row.created_at)) for row in customer_rows],
        end,
    )
    line_changes = _with_unrecorded(
        [change for change in known if change.entity_kind is EntityKind.LINE],
        EntityKind.LINE,
        [
            (row.line_id, row.customer_id, row.status, utc_aware(row.created_at))
            for row in line_rows
            if row.status != "provisioning"
        ],
        end,
    )
    line_types: dict[str, set[str]] = {}
    for row in line_rows:
        line_types.setdefault(row.customer_id, set()).add(f"{row.network}_{row.payment_type}")
    totals, by_type = base_figures(customer_changes, line_types, period)
    prepaid = {row.line_id: utc_aware(row.created_at) for row in line_rows if row.payment_type == "prepaid"}
    return CustomerBaseReport(
        period_from=period.start,
        period_to=period.end,
        churn_formula=CHURN_FORMULA,
        totals=totals,
        by_customer_type=by_type,
        lines=base_figures(line_changes, {}, period)[0],
        prepaid_inactivity=prepaid_inactivity(line_changes, prepaid, last_usage_seconds, period, inactivity_days),
    )
