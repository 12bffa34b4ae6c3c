"""Customer scoring as the server offers it: one customer's score on request, everyone's daily, a
rescore at once when a payment or a status change matters, the history and the movement report.

Theory of operation: a score is a pure function of the facts (``ocs.loyalty.score_factors``), and
the facts are read set-based (``ocs.loyalty.score_facts``); what this module adds is the apply
step and the triggers. ``apply`` compares each new score with the customer's newest stored one
(``ocs.db.loyalty_scores``) and, only where the points, a factor's points or the segment differ,
inserts a history row and writes the segment to ``customers.segment``, the column dunning
exemptions and catalog discounts read. A segment an operator set by hand (``customers.
segment_pinned``, ``PUT /loyalty/members/{id}/segment``), or one that is not one of the scoring
file's (``vip``, ``government``), is never overwritten: the operator's word stands over the score.
So the daily run and every rescore are idempotent: the same facts store nothing new, and a run
that crashed is simply run again. The apply is chunked (``APPLY_CHUNK`` customers a transaction)
so the daily run never holds SQLite's write lock for long against the spool writer.

Triggers (DESIGN.md "Loyalty"; issue 15 "recomputed daily and at once on events that matter"):

- a payment: ``on_payment``, a ``Payments`` listener (``ocs.billing.payments``), rescoring the
  paying customer before the payment is answered;
- a status change of an account (``StatusChanged`` on the account-event seam, ``ocs.events``):
  dunning's restrict, bar and terminate, and the suspension or termination of a line or a
  company node (a termination in the household or the company). ``on_account_event`` only
  notes the account; one task rescores the customers noted (several events of one company's
  termination are one rescore). Dunning letters change no status: the daily run scores them;
- every day: ``daily``, the ``scoring`` duty (``ocs.app``), from ``[scoring] run_hour`` UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing.values import PaymentOutcome
from ocs.customers.service import CustomerRefusal, Problem
from ocs.db.customers import customers
from ocs.db.loyalty_scores import insert_scores, latest_scores, score_history
from ocs.db.schema import utc_naive
from ocs.events import AccountEvent, StatusChanged
from ocs.loyalty.score_factors import FactorScore, Score, score
from ocs.loyalty.score_facts import Window, customer_of_billing_account, customers_of_accounts, read_facts
from ocs.loyalty.scoring_load import ScoringRules

log = structlog.get_logger("ocs.loyalty.scoring")

APPLY_CHUNK = 2_000  # customers per apply transaction
DUTY_WAKE_SECONDS = 60.0  # how often the daily duty looks at the clock
MAX_HISTORY_ROWS = 1_000


@dataclass(frozen=True, slots=True)
class Applied:
    scored: int  # customers scored
    stored: int  # history rows written: the standing changed (or was first scored)
    moved: int  # of which the segment changed


@dataclass(frozen=True, slots=True)
class StoredScore:
    customer_id: str
    scored_at: datetime  # aware UTC
    points: int
    segment: str
    cause: str
    factors: tuple[FactorScore, ...]


@dataclass(frozen=True, slots=True)
class FactorChange:
    factor: str
    from_points: int
    to_points: int
    from_explanation: str
    to_explanation: str


@dataclass(frozen=True, slots=True)
class Movement:
    """A customer whose segment at the end of ``to_day`` differs from the one at the end of ``from_day``."""

    customer_id: str
    from_segment: str
    to_segment: str
    from_points: int
    to_points: int
    changes: tuple[FactorChange, ...]  # the factors whose points differ: why it moved


def _stored(row: dict[str, Any]) -> StoredScore:
    factors = tuple(
        FactorScore(item["factor"], item["value"], item["unit"], item["points"], item["explanation"])
        for item in row["factors"]
    )
    scored_at = row["scored_at"].replace(tzinfo=UTC)
    return StoredScore(row["customer_id"], scored_at, row["points"], row["segment"], row["cause"], factors)


def _changes(before: StoredScore, after: StoredScore) -> tuple[FactorChange, ...]:
    earlier = {factor.factor: factor for factor in before.factors}
    changes: list[FactorChange] = []
    for factor in after.factors:
        old = earlier.get(factor.factor)
        if old is None or old.points != factor.points:
            changes.append(
                FactorChange(
                    factor.factor,
                    old.points if old is not None else 0,
                    factor.points,
                    old.explanation if old is not None else "(not scored)",
                    factor.explanation,
                )
            )
    return tuple(changes)


class Scoring:
    def __init__(
        self, engine: AsyncEngine, rules: ScoringRules, *, run_hour: int = 3, clock: Callable[[], float] = time.time
    ) -> None:
        if not 0 <= run_hour <= 23:
            raise ValueError(f"run_hour must be 0 to 23 (UTC), not {run_hour}")
        self.engine = engine
        self.rules = rules
        self.run_hour = run_hour
        self.clock = clock
        self.last_daily_run: date | None = None
        self._noted_accounts: set[str] = set()
        self._rescoring: asyncio.Task[None] | None = None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _window(self, day: date) -> Window:
        return Window(day, self.rules.months, self.rules.ticket_days)

    async def compute(self, customer_ids: Sequence[str] | None, day: date) -> list[Score]:
        """The scores of these customers (None: everyone not terminated) as of ``day``; writes nothing."""
        async with self.engine.connect() as connection:
            facts = await read_facts(connection, self._window(day), customer_ids)
        return [score(found, self.rules, day) for found in facts.values()]

    async def score_of(self, customer_id: str) -> Score:
        """One customer's score now, with its factors (nothing stored); 404 for an unknown customer."""
        found = await self.compute([customer_id], self._now().date())
        if not found:
            raise CustomerRefusal(Problem.NOT_FOUND, "customer_id", f"no customer {customer_id!r}")
        return found[0]

    async def segment_of(self, customer_id: str) -> str | None:
        """What ``customers.segment`` holds (the scoring's, or an operator's own)."""
        async with self.engine.connect() as connection:
            query = select(customers.c.segment).where(customers.c.customer_id == customer_id)
            found: str | None = (await connection.execute(query)).scalar()
            return found

    async def apply(self, scores: Sequence[Score], at: datetime, cause: str) -> Applied:
        """Store the scores whose standing changed, and write each scored segment where the
        customer's differs from it and is the scoring's to write (module docstring)."""
        stored = moved = 0
        names = self.rules.segment_names
        for start in range(0, len(scores), APPLY_CHUNK):
            part = scores[start : start + APPLY_CHUNK]
            async with self.engine.begin() as connection:
                ids = [item.customer_id for item in part]
                latest = await latest_scores(connection, ids)
                query = select(customers.c.customer_id, customers.c.segment, customers.c.segment_pinned)
                held = {
                    row[0]: (row[1], row[2])
                    for row in await connection.execute(query.where(customers.c.customer_id.in_(ids)))
                }
                rows: list[dict[str, object]] = []
                segments: list[dict[str, object]] = []
                for item in part:
                    segment, pinned = held.get(item.customer_id, (None, True))
                    if not pinned and (segment is None or segment in names) and segment != item.segment:
                        segments.append({"scored_customer": item.customer_id, "scored_segment": item.segment})
                    before = latest.get(item.customer_id)
                    if before is not None and item.same_standing(
                        before["points"], before["segment"], before["factors"]
                    ):
                        continue
                    rows.append(
                        {
                            "customer_id": item.customer_id,
                            "scored_at": utc_naive(at),
                            "points": item.points,
                            "segment": item.segment,
                            "factors": [factor.as_json() for factor in item.factors],
                            "cause": cause,
                        }
                    )
                    if before is None or before["segment"] != item.segment:
                        moved += 1
                await insert_scores(connection, rows)
                if segments:  # the pin checked again in the write: an operator's PUT may have come between
                    statement = (
                        update(customers)
                        .where(customers.c.customer_id == bindparam("scored_customer"))
                        .where(customers.c.segment_pinned.is_(False))
                        .values(segment=bindparam("scored_segment"))
                    )
                    await connection.execute(statement, segments)
                stored += len(rows)
        return Applied(len(scores), stored, moved)

    async def rescore(self, customer_ids: Sequence[str], cause: str = "request") -> Applied:
        """Score these customers now and store what changed; unknown ids are skipped."""
        now = self._now()
        return await self.apply(await self.compute(sorted(set(customer_ids)), now.date()), now, cause)

    async def run(self, day: date | None = None) -> Applied:
        """Everyone not terminated, as of ``day`` (default today, UTC); idempotent."""
        now = self._now()
        scores = await self.compute(None, day or now.date())
        return await self.apply(scores, now, "daily")

    async def history(self, customer_id: str, limit: int = MAX_HISTORY_ROWS) -> list[StoredScore]:
        async with self.engine.connect() as connection:
            rows = await score_history(connection, customer_id, limit)
            if not rows:
                known = select(customers.c.customer_id).where(customers.c.customer_id == customer_id)
                if (await connection.execute(known)).first() is None:
                    raise CustomerRefusal(Problem.NOT_FOUND, "customer_id", f"no customer {customer_id!r}")
        return [_stored(row) for row in rows]

    async def movements(self, from_day: date, to_day: date) -> list[Movement]:
        """Who is in another segment at the end of ``to_day`` than at the end of ``from_day``, and why."""
        before = datetime(from_day.year, from_day.month, from_day.day) + timedelta(days=1)
        after = datetime(to_day.year, to_day.month, to_day.day) + timedelta(days=1)
        async with self.engine.connect() as connection:
            earlier = await latest_scores(connection, before=before)
            later = await latest_scores(connection, before=after)
        moved: list[Movement] = []
        for customer_id in sorted(later):
            if customer_id not in earlier or earlier[customer_id]["segment"] == later[customer_id]["segment"]:
                continue
            old, new = _stored(earlier[customer_id]), _stored(later[customer_id])
            moved.append(Movement(customer_id, old.segment, new.segment, old.points, new.points, _changes(old, new)))
        return moved

    # -- triggers ---------------------------------------------------------------------------------

    async def on_payment(self, outcome: PaymentOutcome) -> None:
        """The ``Payments`` listener: the paying customer rescored before the payment is answered."""
        if outcome.replayed:
            return
        async with self.engine.connect() as connection:
            customer_id = await customer_of_billing_account(connection, outcome.payment.billing_account_id)
        if customer_id is not None:
            await self.rescore([customer_id], "payment")

    def on_account_event(self, event: AccountEvent) -> int:
        """The account-event subscriber: a status change notes its account for the rescoring task."""
        if not isinstance(event, StatusChanged):
            return 0
        self._noted_accounts.add(event.account_id)
        if self._rescoring is None or self._rescoring.done():
            with contextlib.suppress(RuntimeError):  # no loop (a synchronous caller): the daily run scores it
                self._rescoring = asyncio.get_running_loop().create_task(self._rescore_noted())
        return 0

    async def _rescore_noted(self) -> None:
        while self._noted_accounts:
            accounts = sorted(self._noted_accounts)
            self._noted_accounts.clear()
            try:
                async with self.engine.connect() as connection:
                    customer_ids = sorted(await customers_of_accounts(connection, accounts))
                await self.rescore(customer_ids, "status")
            except Exception:  # the database away: the daily run scores them
                log.exception("rescore_failed", accounts=len(accounts))

    async def drain(self) -> None:
        """Wait until the accounts noted so far are rescored (shutdown, tests)."""
        while self._rescoring is not None and not self._rescoring.done():
            await asyncio.shield(self._rescoring)

    async def run_due(self, now: datetime) -> Applied | None:
        """Today's run if ``now`` is past the run hour and it has not completed today, else None."""
        today = now.astimezone(UTC).date()
        if now.astimezone(UTC).hour < self.run_hour or self.last_daily_run == today:
            return None
        applied = await self.run(today)
        self.last_daily_run = today
        return applied

    async def daily(self) -> None:
        """The ``scoring`` duty: ``run_due`` at every wake-up, for ever."""
        while True:
            await asyncio.sleep(DUTY_WAKE_SECONDS)
            try:
                applied = await self.run_due(self._now())
            except Exception as error:  # the database away: tried again at the next wake-up
                log.error("scoring_run_failed", reason=str(error))
            else:
                if applied is not None:
                    log.info("scoring_run_done", scored=applied.scored, stored=applied.stored, moved=applied.moved)
