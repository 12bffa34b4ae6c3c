"""Operating the loyalty programmes: programmes, members, bonus history, reports and the ledger,
as values the API (``ocs.api.loyalty``) and the CLI (``ocs loyalty ...``) show.

Theory of operation: ``LoyaltyReports`` holds the rules the server loaded, the business database
and the balance engine; each method reads (``ocs.db.loyalty_reports``) and answers a pydantic
value. One write: ``set_segment`` (an operator's, or a scenario's, segment for a customer), after
which the engine's member cache is dropped so the next record sees the new segment.

The programmes report, per programme:
- ``bonus_issued``: bonus money credited into the balance engine (applications ``credited``);
  ``bonus_pending``: recorded, not credited yet; units credited per unit kind;
- ``bonus_spent`` and ``bonus_expired``: the engine keeps one bonus bucket per line (a BONUS
  top-up adds to it), so what was spent is not recorded per programme. They are measured per line
  from its bonus buckets now: ``expired`` = the amount left in bonus buckets past their
  ``valid_until``, ``left`` = the amount in usable ones, ``spent`` = credited - left - expired
  (never below 0: an operator's own bonus top-up on the line makes it an under-estimate), and a
  line's spent and expired are shared among the programmes that credited it in proportion to what
  each credited (integer division; the remainder goes to the first programme by id);
- ``cost`` (what its applications cost: bonus money, allowances at their declared cost) against
  ``budget`` (None: no budget), with ``budget_left``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import date

from sqlalchemy.ext.asyncio import AsyncEngine

from balance.store import BalanceStore
from balance.types import BucketKind
from ocs.customers.service import CustomerRefusal, Problem
from ocs.customers.values import Closed
from ocs.db import loyalty_reports as queries
from ocs.db.loyalty import audit_problems
from ocs.loyalty.members import MemberDirectory
from ocs.loyalty.rules import LoyaltyRules, Programme, Rule

MAX_PAGE = 1_000
CONCURRENT_BALANCE_READS = 32


class RuleView(Closed):
    rule_id: str
    event: str
    services: list[str]
    segments: list[str]
    payment_types: list[str]
    customer_kinds: list[str]
    period: str
    measure: str
    condition: str  # every | threshold
    condition_value: int
    action: str
    amount_micros: int
    percent_basis_points: int
    units: int
    unit_kind: str | None
    target: str | None
    service: str


class ProgrammeView(Closed):
    programme_id: str
    name: str
    valid_from: date
    valid_until: date | None
    budget_micros: int | None
    spent_micros: int  # what its budget row counts
    rules: list[RuleView]


class ProgrammeList(Closed):
    programmes: list[ProgrammeView]


class CounterView(Closed):
    rule_id: str
    period: str
    value: int


class ApplicationList(Closed):
    applications: list[queries.ApplicationRow]
    limit: int
    offset: int


class MemberView(Closed):
    customer_id: str
    kind: str
    segment: str | None
    counters: list[CounterView]
    applications: list[queries.ApplicationRow]  # the oldest ``MAX_PAGE``: the list resource pages the rest


class SegmentReport(Closed):
    members: dict[str, int]  # customers by segment ("none": without one)


class ProgrammeReport(Closed):
    programme_id: str
    name: str
    applications: dict[str, int]  # by state
    bonus_issued_micros: int
    bonus_pending_micros: int
    bonus_spent_micros: int  # measured from the bonus buckets (module docstring)
    bonus_expired_micros: int
    units_issued: dict[str, int]
    discounts_pending: int
    discounts_consumed: int
    cost_micros: int
    budget_micros: int | None
    budget_left_micros: int | None


class ProgrammesReport(Closed):
    programmes: list[ProgrammeReport]
    spent_measure: str  # how spent and expired are measured


class LedgerReport(Closed):
    ok: bool
    problems: list[str]


SPENT_MEASURE = (
    "per line: spent = bonus credited - bonus left in usable bonus buckets - bonus left in expired ones;"
    " shared among programmes in proportion to what each credited the line"
)


def rule_view(rule: Rule) -> RuleView:
    action, condition = rule.action, rule.condition
    return RuleView(
        rule_id=rule.rule_id,
        event=rule.event.value,
        services=sorted(rule.filters.services),
        segments=sorted(rule.filters.segments),
        payment_types=sorted(rule.filters.payment_types),
        customer_kinds=sorted(rule.filters.customer_kinds),
        period=rule.counter.period.value,
        measure=rule.counter.measure.value,
        condition=condition.kind.value,
        condition_value=condition.value,
        action=action.kind.value,
        amount_micros=action.amount_micros,
        percent_basis_points=action.percent_basis_points,
        units=action.units,
        unit_kind=None if action.unit_kind is None else action.unit_kind.value,
        target=None if action.target is None else action.target.value,
        service=action.service,
    )


def share(amount: int, weights: Mapping[str, int]) -> dict[str, int]:
    """``amount`` shared in proportion to ``weights`` (integer; the remainder to the first key)."""
    total = sum(weights.values())
    if total <= 0 or amount <= 0:
        return {key: 0 for key in weights}
    parts = {key: amount * weight // total for key, weight in weights.items()}
    first = min(weights)
    parts[first] += amount - sum(parts.values())
    return parts


class LoyaltyReports:
    def __init__(
        self,
        database: AsyncEngine,
        rules: LoyaltyRules,
        store: BalanceStore | None,
        members: MemberDirectory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.rules = rules
        self.store = store
        self.members = members
        self.clock = clock

    def _programme(self, programme_id: str) -> Programme:
        found = self.rules.programmes.get(programme_id)
        if found is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "programme_id", f"no programme {programme_id}")
        return found

    def _view(self, programme: Programme, spent: Mapping[str, queries.ProgrammeTotals]) -> ProgrammeView:
        totals = spent.get(programme.programme_id)
        return ProgrammeView(
            programme_id=programme.programme_id,
            name=programme.name,
            valid_from=programme.valid_from,
            valid_until=programme.valid_until,
            budget_micros=programme.budget_micros,
            spent_micros=totals.budget_spent_micros if totals is not None else 0,
            rules=[rule_view(rule) for rule in programme.rules],
        )

    async def _totals(self) -> dict[str, queries.ProgrammeTotals]:
        async with self.database.connect() as connection:
            return await queries.programme_totals(connection)

    async def programmes(self) -> ProgrammeList:
        totals = await self._totals()
        return ProgrammeList(programmes=[self._view(item, totals) for _, item in sorted(self.rules.programmes.items())])

    async def programme(self, programme_id: str) -> ProgrammeView:
        return self._view(self._programme(programme_id), await self._totals())

    async def member(self, customer_id: str) -> MemberView:
        async with self.database.connect() as connection:
            found = await queries.member(connection, customer_id)
            if found is None:
                raise CustomerRefusal(Problem.NOT_FOUND, "customer_id", f"no customer {customer_id}")
            counters = await queries.counters_of(connection, customer_id)
            applied = await queries.applications(connection, member_id=customer_id, limit=MAX_PAGE)
        return MemberView(
            customer_id=found.customer_id,
            kind=found.kind,
            segment=found.segment,
            counters=[CounterView(rule_id=item.rule_id, period=item.period, value=item.value) for item in counters],
            applications=applied,
        )

    async def set_segment(self, customer_id: str, segment: str | None) -> MemberView:
        async with self.database.begin() as connection:
            if not await queries.set_segment(connection, customer_id, segment):
                raise CustomerRefusal(Problem.NOT_FOUND, "customer_id", f"no customer {customer_id}")
        if self.members is not None:
            self.members.forget()  # the next record reads the member again, with its new segment
        return await self.member(customer_id)

    async def applications(
        self, member_id: str | None, programme_id: str | None, limit: int, offset: int
    ) -> ApplicationList:
        if programme_id is not None:
            self._programme(programme_id)
        async with self.database.connect() as connection:
            rows = await queries.applications(
                connection, member_id=member_id, programme_id=programme_id, limit=limit, offset=offset
            )
        return ApplicationList(applications=rows, limit=limit, offset=offset)

    async def segments(self) -> SegmentReport:
        async with self.database.connect() as connection:
            return SegmentReport(members=await queries.members_by_segment(connection))

    async def _spent_and_expired(self) -> tuple[dict[str, int], dict[str, int]]:
        """Per programme: bonus spent and expired, measured from the lines' bonus buckets."""
        spent: dict[str, int] = {}
        expired: dict[str, int] = {}
        if self.store is None:
            return spent, expired
        async with self.database.connect() as connection:
            credited = await queries.bonus_credited_by_line(connection)
        now = int(self.clock())
        limit = asyncio.Semaphore(CONCURRENT_BALANCE_READS)
        store = self.store

        async def measure(line_id: str, by_programme: dict[str, int]) -> None:
            async with limit:
                view = await store.balance(line_id, now)
            left = gone = 0
            for bucket in view.account.buckets if view is not None else ():
                if bucket.kind is not BucketKind.BONUS or bucket.amount <= 0:
                    continue
                if bucket.valid_until and bucket.valid_until <= now:
                    gone += bucket.amount
                else:
                    left += bucket.amount
            used = max(sum(by_programme.values()) - left - gone, 0)
            for key, value in share(used, by_programme).items():
                spent[key] = spent.get(key, 0) + value
            for key, value in share(min(gone, sum(by_programme.values())), by_programme).items():
                expired[key] = expired.get(key, 0) + value

        await asyncio.gather(*(measure(line_id, amounts) for line_id, amounts in credited.items()))
        return spent, expired

    async def programmes_report(self) -> ProgrammesReport:
        totals = await self._totals()
        spent, expired = await self._spent_and_expired()
        made: list[ProgrammeReport] = []
        for programme_id in sorted(set(self.rules.programmes) | set(totals)):
            found = totals.get(programme_id, queries.ProgrammeTotals(programme_id))
            programme = self.rules.programmes.get(programme_id)
            budget = programme.budget_micros if programme is not None else None
            made.append(
                ProgrammeReport(
                    programme_id=programme_id,
                    name=programme.name if programme is not None else "(no longer in the rules)",
                    applications=found.applications,
                    bonus_issued_micros=found.bonus_credited_micros,
                    bonus_pending_micros=found.bonus_pending_micros,
                    bonus_spent_micros=spent.get(programme_id, 0),
                    bonus_expired_micros=expired.get(programme_id, 0),
                    units_issued=found.units_credited,
                    discounts_pending=found.discounts_pending,
                    discounts_consumed=found.discounts_consumed,
                    cost_micros=found.cost_micros,
                    budget_micros=budget,
                    budget_left_micros=None if budget is None else budget - found.budget_spent_micros,
                )
            )
        return ProgrammesReport(programmes=made, spent_measure=SPENT_MEASURE)

    async def ledger(self) -> LedgerReport:
        """The loyalty ledger's audit (``ocs.db.loyalty.audit_problems``)."""
        async with self.database.connect() as connection:
            problems = await audit_problems(connection, int(self.clock() * 1000))
        return LedgerReport(ok=not problems, problems=problems)
