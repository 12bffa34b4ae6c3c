"""The bill run: for a day D, every billing account whose cycle closed by D and has no invoice for
that cycle is invoiced, its usage cut in Redis, its bundles renewed, its prepaid rentals debited
and its prepaid statement written; resumable, and a rerun changes nothing.

Theory of operation: accounts are streamed in pages of ``chunk_size`` by id (memory: one page).
Each account's cycles to bill are ``ocs.billing.cycles.cycles_to_bill``: the last cycle closed by
D, and, for an account invoiced before, every cycle closed since its newest invoice that a run
missed (the server was down over its close), at most ``MAX_CATCH_UP_CYCLES`` (12) back, oldest
first. A page is billed in passes, one cycle per account each (the oldest first), so each invoice
takes only the records before its own cycle's end and numbers follow time. For each pass:
1. read (one read transaction): the periods invoiced already (those accounts are skipped), the
   lines each account pays for (``ocs.billing.bill_facts``), their unbilled postpaid usage records
   before the cut (the period's end, midnight UTC), the pending adjustments, the customers' loyalty
   discounts for the period (``ocs.billing.loyalty_discounts``); draft each invoice
   (``ocs.billing.bill_draft``: pure, so a rerun drafts the same invoice);
2. the engine steps that must precede the invoice, each idempotent by its id in Redis, so a crash
   before step 3 only repeats them as replays: bundles renewed for the next cycle (id: bundle and
   the next cycle's start) and prepaid rentals debited for the cycle begun (id: rental and cycle
   start; one ``prepaid_rentals`` row per line and cycle says what the engine answered);
3. one write transaction: the invoices issued (``invoices.issue_many``, which skips a period a
   concurrent run invoiced meanwhile), their records marked billed (a record billed by someone
   else meanwhile rolls the page back: ``BillRunConflict``, and the page is drafted again), one
   ``bill_cuts`` row per consuming account with what its records drew from its own credit line and
   from each ancestor's pool, the prepaid statements, the loyalty discounts taken marked consumed
   (one taken meanwhile rolls the page back as records billed meanwhile do);
4. after the commit, the cuts in Redis (idempotent by cut id = invoice id | account), each marked
   done. A run killed between 3 and 4 leaves cuts pending: ``finish_pending_cuts`` (the server's
   startup pass, and the start of every run) applies them, so each cut is applied exactly once
   and the line gets its credit back.

Automatic garbage collection is paused for the run (``ocs.billing.collection_pause``: a page's
objects, promoted while it lives, made CPython walk the whole heap every page or so).

Steps 3 and 4 of a page's last pass run while the next page goes through steps 1 and 2 (its own
accounts, lines and records: nothing the page being written touches), so SQLite's work in its
thread and Redis's in its process overlap the drafting in Python. Commits keep the pages' order
(a page's first commit waits for the previous page's), so numbers still follow the pages. Records
billed meanwhile (``BillRunConflict``) make that one page drafted and written again, alone.

After the last page, the final invoices dunning asked for (terminated accounts: their last
cycle up to the termination date, billed at once; ``ocs.billing.final_invoices``).

A cut the engine refuses (an unknown account, or amounts it does not hold: records that never
went through this engine) is marked done with the engine's answer and reported, not retried: the
one-ledger audit (``ocs.billing.ledger_audit``) names it. A prepaid rental the balance does not
cover under the ``restrict`` policy is not debited and is reported (``rentals_refused``, and the
``prepaid_rentals`` row): the decision to suspend is the dunning ladder's, not the bill run's.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from balance.cycle import CutOrder, cut_many, debit_rental, renew_bundle
from balance.store import BalanceStore
from balance.types import BucketKind, OperationResult, Outcome, PaymentType, PoolDraw
from ocs.billing.bill_draft import (
    AccountFacts,
    ChargeMemo,
    LineFacts,
    draft_invoice,
    last_day_of,
    prepaid_rental,
    renewals,
)
from ocs.billing.bill_facts import PayingAccount, accounts_page, invoiced_periods, lines_of, pending_adjustments_of
from ocs.billing.bill_statements import write_statements
from ocs.billing.catalog import Catalog
from ocs.billing.collection_pause import collect_young, paused_collection
from ocs.billing.cycles import Period, cycle_containing, cycles_to_bill
from ocs.billing.deposits import pending_deposits_of
from ocs.billing.final_invoices import bill_final_invoices
from ocs.billing.invoices import issue_many
from ocs.billing.loyalty_discounts import LoyaltyDiscountTaken, mark_consumed, pending_loyalty_discounts
from ocs.billing.values import InvoiceDraft
from ocs.db.bill_run import bill_cuts, prepaid_rentals
from ocs.db.bulk import execute_many, execute_many_values, insert_of
from ocs.db.schema import utc_naive
from ocs.db.usage import IDS_PER_STATEMENT, LineUsage, format_pools, parse_pools, unbilled_usage, usage_records

DEFAULT_CHUNK_SIZE = 1_000  # accounts per page: one read and one write transaction (issue_many takes 5,000)
DEFAULT_PAYMENT_DAYS = 14  # due date: this many days after the period's last day
CONCURRENT_ENGINE_CALLS = 64  # Redis calls in flight at once (cuts, renewals, rentals)
PENDING_CUTS_PER_PASS = 1_000
CONFLICT_RETRIES = 3  # a page drafted again after records were billed meanwhile


# A record found by its number (the rowid: one lookup, where its id is a walk of a big index in
# random order), its id checked as well, so a number is never taken for another record's.
MARK_BILLED = (
    update(usage_records)
    .where(
        usage_records.c.record_number == bindparam("number"),
        usage_records.c.record_id == bindparam("record"),
        usage_records.c.invoice_id.is_(None),
    )
    .values(invoice_id=bindparam("invoice"))
)
MARK_NAMES = ("number", "record", "invoice")
# On SQLite, one statement a line instead of one a record (its numbers and ids as JSON arrays):
# each executemany step takes and gives back the GIL, which the drafting thread holds most of the
# time, so ten steps an account cost more in waiting than SQLite spends on them.
MARK_LINE_BILLED_SQLITE = (
    "UPDATE usage_records SET invoice_id = ?"
    " WHERE record_number IN (SELECT value FROM json_each(?))"
    " AND record_id IN (SELECT value FROM json_each(?)) AND invoice_id IS NULL"
)
CUT_DONE = (
    update(bill_cuts)
    .where(bill_cuts.c.cut_id == bindparam("cut"))
    .values(done_at=bindparam("done_at"), outcome=bindparam("outcome"))
)


class BillRunConflict(Exception):
    """Records of a draft were billed by someone else before the commit: draft the page again."""


@dataclass(slots=True)
class BillRunReport:
    day: date
    accounts: int = 0  # billing accounts seen (that pay for themselves)
    invoices: int = 0  # invoices made by this run
    skipped: int = 0  # accounts whose period was invoiced already
    empty: int = 0  # accounts with nothing to bill for the period
    records: int = 0  # usage records billed
    cuts: int = 0  # cuts applied in Redis (by this run, pending ones included)
    cuts_refused: int = 0
    renewals: int = 0  # bundle renewals asked of the engine (replays included)
    rentals: int = 0  # prepaid rentals debited
    rentals_refused: int = 0  # prepaid rentals the balance did not cover (restrict): reported
    statements: int = 0
    final_invoices: int = 0  # of terminated accounts (ocs.billing.final_invoices)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class DraftedPass:
    """One pass of a page read and drafted, its engine steps done: what ``_write`` commits."""

    todo: list[PayingAccount]  # the accounts not invoiced for their period yet
    periods: dict[str, Period]
    paid_lines: dict[str, list[LineFacts]]
    drafts: list[tuple[InvoiceDraft, AccountFacts]]
    rentals: list[dict[str, object]]  # rows for ``prepaid_rentals``


@dataclass(frozen=True, slots=True)
class PendingCut:
    cut_id: str
    account_id: str
    line_micros: int
    pools: tuple[PoolDraw, ...]


def midnight_seconds(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def cuts_of(invoice_id: str, usages: Sequence[LineUsage], now: datetime) -> list[dict[str, object]]:
    """One ``bill_cuts`` row per consuming account of ``usages``: what its records drew."""
    rows: list[dict[str, object]] = []
    created_at = utc_naive(now)  # one object for the rows: converted once (``ocs.db.bulk``)
    for usage in sorted(usages, key=lambda item: item.account_id):
        if usage.line_micros == 0 and not any(pool.bucket_micros or pool.line_micros for pool in usage.pools):
            continue  # all from its own money buckets: nothing unbilled to cut
        rows.append(
            {
                "cut_id": f"{invoice_id}|{usage.account_id}",
                "invoice_id": invoice_id,
                "account_id": usage.account_id,
                "line_micros": usage.line_micros,
                "pools": format_pools(usage.pools),
                "records": usage.records,
                "created_at": created_at,
            }
        )
    return rows


EngineCall = Callable[[], Awaitable[OperationResult]]


async def gather_limited(calls: Sequence[EngineCall], limit: int = CONCURRENT_ENGINE_CALLS) -> list[OperationResult]:
    """Run the engine calls ``limit`` at a time, answers in order."""
    answers: list[OperationResult] = []
    for start in range(0, len(calls), limit):
        answers += await asyncio.gather(*(call() for call in calls[start : start + limit]))
    return answers


class BillRun:
    def __init__(
        self,
        engine: AsyncEngine,
        store: BalanceStore,
        catalog: Catalog,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        payment_days: int = DEFAULT_PAYMENT_DAYS,
        legal_entity: str = "main",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        self.engine = engine
        self.store = store
        self.catalog = catalog
        self.chunk_size = chunk_size
        self.payment_days = payment_days
        self.legal_entity = legal_entity
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def run(self, day: date) -> BillRunReport:
        """Bill every account whose cycle closed by ``day`` (the module docstring)."""
        report = BillRunReport(day)
        await self.finish_pending_cuts(report)
        with paused_collection():
            await self._pages(day, report)
        await bill_final_invoices(self, day, report)
        return report

    async def _pages(self, day: date, report: BillRunReport) -> None:
        """Page after page of accounts, each written while the next is drafted (module docstring)."""
        after = ""
        behind: asyncio.Task[None] | None = None  # the previous page's last pass, being written
        try:
            while True:
                async with self.engine.connect() as connection:
                    page = await accounts_page(connection, after, self.chunk_size)
                if not page:
                    break
                after = page[-1].billing_account_id
                report.accounts += len(page)
                try:
                    drafted = await self._page(page, day, report, behind)
                except BillRunConflict:
                    drafted = None
                    if behind is not None:
                        await behind
                    await self._page_again(page, day, report)
                if behind is not None:
                    await behind
                behind = None
                if drafted is not None:
                    behind = asyncio.create_task(self._finish_page(page, drafted, day, report))
                collect_young()
            if behind is not None:
                await behind
        except BaseException:
            if behind is not None:  # never cut off in the middle: let it end, then report the first failure
                await asyncio.gather(behind, return_exceptions=True)
            raise

    async def _page(
        self, page: list[PayingAccount], day: date, report: BillRunReport, behind: asyncio.Task[None] | None
    ) -> DraftedPass | None:
        """Each account's cycles to bill (``cycles_to_bill``: the last closed one, and those a run
        missed), in passes: the first bills every account's oldest such cycle, the next its
        second, and so on, so a cycle's invoice only takes the records before its own end. Every
        pass but the last is written here (after ``behind``, the previous page's writing, so
        commits keep the pages' order); the last is drafted and answered, for the caller to write
        while it drafts the next page."""
        async with self.engine.connect() as connection:
            invoiced = await invoiced_periods(connection, [account.billing_account_id for account in page])
        newest: dict[str, date] = {}
        for account_id, start in invoiced:
            newest[account_id] = max(start, newest.get(account_id, start))
        # Most accounts of a page share their cycles: computed once, the same periods (and their
        # dates: converted once when written, ``ocs.db.bulk``) for all of them.
        to_bill = functools.cache(functools.partial(cycles_to_bill, day=day))
        plans = {
            account.billing_account_id: to_bill(
                account.bill_cycle_day, newest_invoiced_start=newest.get(account.billing_account_id)
            )
            for account in page
        }
        report.skipped += sum(1 for cycles in plans.values() if not cycles)
        drafted: DraftedPass | None = None
        for index in range(max((len(cycles) for cycles in plans.values()), default=0)):
            if drafted is not None:
                if behind is not None:
                    await behind
                    behind = None
                await self._write(drafted, report)
            todo = [account for account in page if len(plans[account.billing_account_id]) > index]
            periods = {account.billing_account_id: plans[account.billing_account_id][index] for account in todo}
            drafted = await self._draft_pass(todo, periods, day, report, invoiced if index == 0 else None)
        return drafted

    async def _finish_page(
        self, page: list[PayingAccount], drafted: DraftedPass, day: date, report: BillRunReport
    ) -> None:
        """The page's last pass written; records billed meanwhile: the page drafted again."""
        try:
            await self._write(drafted, report)
        except BillRunConflict:
            await self._page_again(page, day, report)

    async def _page_again(self, page: list[PayingAccount], day: date, report: BillRunReport) -> None:
        """The page after a ``BillRunConflict``: drafted and written again, pass by pass (the
        passes written already are found invoiced and skipped)."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                drafted = await self._page(page, day, report, None)
                if drafted is not None:
                    await self._write(drafted, report)
                return
            except BillRunConflict:
                if attempt == CONFLICT_RETRIES - 1:
                    raise

    async def _draft_pass(
        self,
        page: list[PayingAccount],
        periods: dict[str, Period],
        day: date,
        report: BillRunReport,
        invoiced: set[tuple[str, date]] | None,
    ) -> DraftedPass | None:
        """One period per account of ``page``: read, draft and the engine steps (module
        docstring), for ``_write``; ``invoiced``: the periods invoiced already, when just read."""
        async with self.engine.connect() as connection:
            if invoiced is None:
                invoiced = await invoiced_periods(connection, list(periods))
            todo = [
                item
                for item in page
                if (item.billing_account_id, periods[item.billing_account_id].start) not in invoiced
            ]
            report.skipped += len(page) - len(todo)
            if not todo:
                return None
            paid_lines = await lines_of(connection, todo)
            usage = await self._usage(connection, todo, periods, paid_lines)
            pending = await pending_adjustments_of(connection, [item.billing_account_id for item in todo])
            deposits_due = await pending_deposits_of(connection, [item.billing_account_id for item in todo])
            done_rentals = await self._rentals_recorded(connection, paid_lines, todo, day)
            loyalty = await pending_loyalty_discounts(
                connection,
                {
                    item.billing_account_id: (
                        midnight_seconds(periods[item.billing_account_id].start),
                        midnight_seconds(periods[item.billing_account_id].end),
                    )
                    for item in todo
                },
            )
        drafts: list[tuple[InvoiceDraft, AccountFacts]] = []
        memo = ChargeMemo()
        due_of: dict[Period, date] = {}  # one due date object per period (see ``_page``)
        for account in todo:
            period = periods[account.billing_account_id]
            facts = AccountFacts(
                billing_account_id=account.billing_account_id,
                legal_entity=self.legal_entity,
                segment=None,
                lines=tuple(paid_lines.get(account.billing_account_id, ())),
                usage=usage.get(account.billing_account_id, {}),
                adjustments=tuple(pending.get(account.billing_account_id, ())),
                deposits=tuple(deposits_due.get(account.billing_account_id, ())),
                loyalty_discounts=tuple(loyalty.get(account.billing_account_id, ())),
            )
            due = due_of.get(period)
            if due is None:
                due = due_of[period] = last_day_of(period) + timedelta(days=self.payment_days)
            made = draft_invoice(self.catalog, facts, period, due, f"catalog@{period.start.isoformat()}", memo)
            if made is None:
                report.empty += 1
            else:
                drafts.append((made, facts))
        await self._renew(todo, periods, paid_lines, day, report)
        rentals = await self._debit_rentals(todo, day, paid_lines, done_rentals, report)
        return DraftedPass(todo, periods, paid_lines, drafts, rentals)

    async def _write(self, drafted: DraftedPass, report: BillRunReport) -> None:
        """A drafted pass committed, then its cuts applied (module docstring, steps 3 and 4)."""
        cuts = await self._commit(
            drafted.drafts, drafted.todo, drafted.periods, drafted.paid_lines, drafted.rentals, report
        )
        await self._apply_cuts(cuts, report)

    async def commit_final(
        self, draft: InvoiceDraft, facts: AccountFacts, account: PayingAccount, cycle: Period, report: BillRunReport
    ) -> None:
        """A final invoice (``ocs.billing.final_invoices``) committed and cut as a page's invoices are."""
        paid = {account.billing_account_id: list(facts.lines)}
        cuts = await self._commit([(draft, facts)], [account], {account.billing_account_id: cycle}, paid, [], report)
        await self._apply_cuts(cuts, report)

    async def _usage(
        self,
        connection: AsyncConnection,
        todo: list[PayingAccount],
        periods: dict[str, Period],
        paid_lines: dict[str, list[LineFacts]],
    ) -> dict[str, dict[str, LineUsage]]:
        """Per billing account, per postpaid line: its unbilled records before the period's end."""
        by_cut: dict[date, list[tuple[str, str]]] = {}
        for account in todo:
            for line in paid_lines.get(account.billing_account_id, ()):
                if line.payment_type is PaymentType.POSTPAID:
                    end = periods[account.billing_account_id].end
                    by_cut.setdefault(end, []).append((account.billing_account_id, line.line_id))
        found: dict[str, dict[str, LineUsage]] = {}
        for end in sorted(by_cut):
            owner = dict((line_id, account_id) for account_id, line_id in by_cut[end])
            usages = await unbilled_usage(connection, [line_id for _, line_id in by_cut[end]], midnight_seconds(end))
            for line_id, usage in usages.items():
                found.setdefault(owner[line_id], {})[line_id] = usage
        return found

    async def _renew(
        self,
        todo: list[PayingAccount],
        periods: dict[str, Period],
        paid_lines: dict[str, list[LineFacts]],
        today: date,
        report: BillRunReport,
    ) -> None:
        calls: list[EngineCall] = []
        memo = ChargeMemo()  # each plan's bundles looked up once
        for account in todo:
            period = periods[account.billing_account_id]
            following = cycle_containing(account.bill_cycle_day, period.end)
            if following.end <= today:
                continue  # a missed cycle's: the bundles of a cycle already over are not renewed
            for renewal in renewals(self.catalog, paid_lines.get(account.billing_account_id, ()), period, memo):
                bundle = renewal.bundle
                assert bundle.unit is not None
                calls.append(
                    functools.partial(
                        renew_bundle,
                        self.store,
                        renewal.line_id,
                        bundle.code,
                        BucketKind(bundle.unit.value),
                        bundle.units,
                        bundle.services,
                        midnight_seconds(following.end),
                        bundle.rollover_cap if bundle.rollover else 0,
                        f"{bundle.code}.{following.start.isoformat()}",
                    )
                )
        for answer in await gather_limited(calls):
            report.renewals += 1
            if answer.outcome is not Outcome.OK:
                report.problems.append(f"bundle renewal: {answer.outcome.value} {answer.reason}".strip())

    async def _rentals_recorded(
        self, connection: AsyncConnection, paid_lines: dict[str, list[LineFacts]], todo: list[PayingAccount], day: date
    ) -> set[tuple[str, date]]:
        prepaid = [
            line.line_id
            for account in todo
            for line in paid_lines.get(account.billing_account_id, ())
            if line.payment_type is PaymentType.PREPAID
        ]
        if not prepaid:
            return set()
        statement = select(prepaid_rentals.c.line_id, prepaid_rentals.c.period_start).where(
            prepaid_rentals.c.line_id.in_(prepaid)
        )
        return {(str(row[0]), row[1]) for row in await connection.execute(statement)}

    async def _debit_rentals(
        self,
        todo: list[PayingAccount],
        day: date,
        paid_lines: dict[str, list[LineFacts]],
        done: set[tuple[str, date]],
        report: BillRunReport,
    ) -> list[dict[str, object]]:
        """Prepaid rentals of the cycle begun, each debited once (rows for ``prepaid_rentals``)."""
        rows: list[dict[str, object]] = []
        now = utc_naive(self._now())
        for account in todo:
            cycle = cycle_containing(account.bill_cycle_day, day)
            for line in paid_lines.get(account.billing_account_id, ()):
                if (line.line_id, cycle.start) in done:
                    continue
                owed = prepaid_rental(self.catalog, line, cycle)
                if not owed:
                    continue
                offer = self.catalog.offer_at(line.plan_on(cycle.start), cycle.start)
                assert offer is not None
                outcomes = []
                for product, micros in owed:
                    rental_id = f"rental.{product.code}.{cycle.start.isoformat()}"
                    answer = await debit_rental(self.store, line.line_id, rental_id, micros, offer.rental_policy)
                    outcomes.append(answer.outcome)
                worst = next((outcome for outcome in outcomes if outcome is not Outcome.OK), Outcome.OK)
                if worst is Outcome.OK:
                    report.rentals += 1
                else:
                    report.rentals_refused += 1
                    report.problems.append(
                        f"prepaid rental of {line.line_id} for {cycle}: {worst.value} ({offer.rental_policy.value})"
                    )
                rows.append(
                    {
                        "line_id": line.line_id,
                        "period_start": cycle.start,
                        "billing_account_id": account.billing_account_id,
                        "product": ",".join(product.code for product, _ in owed)[:64],
                        "micros": sum(micros for _, micros in owed),
                        "policy": offer.rental_policy.value,
                        "outcome": worst.value,
                        "debited_at": now,
                    }
                )
        return rows

    async def _commit(
        self,
        drafts: list[tuple[InvoiceDraft, AccountFacts]],
        todo: list[PayingAccount],
        periods: dict[str, Period],
        paid_lines: dict[str, list[LineFacts]],
        rentals: list[dict[str, object]],
        report: BillRunReport,
    ) -> list[PendingCut]:
        now = self._now()
        facts_of = {draft.billing_account_id: facts for draft, facts in drafts}
        async with self.engine.begin() as connection:
            batch = await issue_many(connection, [draft for draft, _ in drafts], now)
            marks: list[tuple[str, LineUsage]] = []  # (invoice, the line's records it bills)
            cut_rows: list[dict[str, object]] = []
            for draft, invoice_id in batch.issued:
                usages = list(facts_of[draft.billing_account_id].usage.values())
                marks += ((invoice_id, usage) for usage in usages if usage.records)
                try:
                    await mark_consumed(connection, draft, invoice_id)
                except LoyaltyDiscountTaken as taken:
                    raise BillRunConflict(str(taken)) from None
                cut_rows += cuts_of(invoice_id, usages, now)
            records = sum(usage.records for _, usage in marks)
            issued_ids = [invoice_id for _, invoice_id in batch.issued]
            if records and await self._marked(connection, marks, issued_ids) != records:
                raise BillRunConflict("records were billed meanwhile")
            await execute_many(connection, insert_of(bill_cuts), cut_rows)
            await execute_many(connection, insert_of(prepaid_rentals), rentals)
            report.statements += await write_statements(connection, todo, periods, paid_lines, now)
        report.invoices += len(batch.issued)
        report.skipped += len(batch.skipped)
        report.records += records
        return [
            PendingCut(
                str(row["cut_id"]), str(row["account_id"]), int(str(row["line_micros"])), parse_pools(str(row["pools"]))
            )
            for row in cut_rows
        ]

    @staticmethod
    async def _marked(connection: AsyncConnection, marks: list[tuple[str, LineUsage]], invoice_ids: list[str]) -> int:
        """The records of ``marks`` marked billed by their invoice: how many were still free."""
        if connection.dialect.name == "sqlite":  # sqlite3's executemany sums the rows each update changed
            lines = [
                (invoice_id, usage.record_numbers, usage.record_ids)
                for invoice_id, usage in sorted(marks, key=lambda mark: mark[1].first_record_number)
            ]
            return int((await connection.exec_driver_sql(MARK_LINE_BILLED_SQLITE, lines)).rowcount)
        await execute_many_values(
            connection,
            MARK_BILLED,
            MARK_NAMES,
            [
                (number, record_id, invoice_id)
                for invoice_id, usage in marks
                for number, record_id in zip(usage.record_number_list(), usage.record_id_list(), strict=True)
            ],
        )
        billed = 0
        for start in range(0, len(invoice_ids), IDS_PER_STATEMENT):
            counted = await connection.execute(
                select(func.count())
                .select_from(usage_records)
                .where(usage_records.c.invoice_id.in_(invoice_ids[start : start + IDS_PER_STATEMENT]))
            )
            billed += int(counted.scalar_one())
        return billed

    async def _apply_cuts(self, cuts: Sequence[PendingCut], report: BillRunReport) -> None:
        answers = await cut_many(
            self.store, [CutOrder(item.account_id, item.cut_id, item.line_micros, item.pools) for item in cuts]
        )
        done: list[dict[str, object]] = []
        now = utc_naive(self._now())
        for item, answer in zip(cuts, answers, strict=True):
            if answer.outcome is Outcome.OK:
                report.cuts += 1
            else:
                report.cuts_refused += 1
                report.problems.append(f"cut {item.cut_id}: {answer.outcome.value} {answer.reason}".strip())
            done.append({"cut": item.cut_id, "done_at": now, "outcome": answer.outcome.value[:32]})
        if done:
            async with self.engine.begin() as connection:
                await execute_many(connection, CUT_DONE, done)

    async def finish_pending_cuts(self, report: BillRunReport | None = None) -> int:
        """Apply every cut a run committed but did not apply (a crash after its commit)."""
        report = report if report is not None else BillRunReport(date.today())
        applied = 0
        while True:
            async with self.engine.connect() as connection:
                rows = (
                    await connection.execute(
                        select(bill_cuts.c.cut_id, bill_cuts.c.account_id, bill_cuts.c.line_micros, bill_cuts.c.pools)
                        .where(bill_cuts.c.done_at.is_(None))
                        .order_by(bill_cuts.c.created_at, bill_cuts.c.cut_id)
                        .limit(PENDING_CUTS_PER_PASS)
                    )
                ).all()
            if not rows:
                return applied
            await self._apply_cuts(
                [PendingCut(row[0], row[1], int(row[2]), parse_pools(row[3])) for row in rows], report
            )
            applied += len(rows)
