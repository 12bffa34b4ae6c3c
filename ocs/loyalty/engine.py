"""The loyalty engine: rules evaluated on every committed usage record and payment, credits made
into the balance engine exactly once per (rule, trigger).

Theory of operation, in two steps per batch:

1. In the transaction that stores the triggers (the spool writer's batch of usage records,
   ``usage_stored``, called through the spool's hook with the records that batch newly stored;
   or the engine's own for a payment, ``events_recorded``): find each trigger's member
   (``ocs.loyalty.members``), read the counters and budgets the batch touches, evaluate
   (``ocs.loyalty.rules.evaluate``, a pure function), and write the counters, the budgets'
   spending and one application per (rule, trigger) in the same transaction: credits
   ``pending``, invoice discounts ``recorded`` with their discount row. A record stored once is
   evaluated once: a replayed spool batch stores nothing new and so evaluates nothing; a rolled
   back batch rolls its counters and applications back with it.
2. After the commit (``credit``, started beside the spool's next batch, so the writer does not
   wait for Redis; ``settle`` waits for it): each pending application goes into the balance engine with an
   idempotency id made of its rule and trigger (``credit_id``): bonus money as a ``top_up`` of the
   BONUS kind (spent before main money at the next CCR), an allowance as a bucket
   (``add_bucket`` with the id as operation id); then the applications are marked ``credited`` (or
   ``refused`` when the engine refuses: an account gone or terminated), in the spool's next
   batch's transaction (SQLite has one writer: a transaction of their own beside the spool's
   made both wait), or by ``settle`` and the periodic pass when no batch comes; and a
   ``BalanceChanged`` account event tells live sessions (a session on its final units is
   granted again).

Garbage collection: a batch makes a few objects per record (triggers, counters, applications)
that live across the hook's awaits, so the collector's young collections caught them alive and
promoted them, and the promotions triggered full collections, each walking every
long-lived object of the process (the member directory alone holds 200,000 at 100,000 members):
17 of them, about 3 s, in bench/loyalty.py's 200,000 records. The hook therefore runs with
automatic collection paused and collects the young generation every few batches
(``ocs.billing.collection_pause``, as the bill run does): what a batch made is freed by reference
counts when it ends, and full collections fell to 4.

Exactly once: a crash after step 1 leaves applications pending; ``credit_pending`` (at startup,
then every ``[loyalty] credit_interval_seconds``) credits them again. A crash between the
engine's credit and the ``credited`` mark credits again with the same id, which the engine answers
as a replay and changes nothing. A credit that fails (Redis away) stays pending for the next pass, and so does
one whose mark is lost with a rolled-back batch (credited again: a replay).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from balance.errors import BalanceUnavailable
from balance.store import BalanceStore
from balance.types import Bucket, BucketKind, OperationResult, Outcome
from ocs.billing.collection_pause import collect_young, paused_collection
from ocs.billing.values import PaymentOutcome
from ocs.db import loyalty as tables
from ocs.db.loyalty import ApplicationState, Mark, PendingCredit
from ocs.db.schema import utc_aware
from ocs.events import AccountEvents, BalanceChanged
from ocs.loyalty.members import MemberDirectory, customer_of_billing_account, main_lines
from ocs.loyalty.rules import (
    ActionKind,
    Application,
    EventKind,
    LoyaltyEvent,
    LoyaltyRules,
    Member,
    Trigger,
    counter_periods,
    evaluate_triggers,
    triggers_of,
)

log = structlog.get_logger("ocs.loyalty.engine")

CONCURRENT_CREDITS = 64  # credits in flight at once (each one script call on the admin connection pool)
PENDING_PAGE = 500  # applications read per pass of ``credit_pending``
CREDIT_TASKS = 4  # committed batches credited at once, beside the spool's next batches
AfterCommit = Callable[[], Awaitable[None]]
# SQLite's page cache of a connection the spool's batches run on (the hook's), in KiB: SQLite's
# default is 2 MiB (``cache_size=-2000``), a few hundred pages, while a batch reads and writes the
# counter rows of about 500 random members (a day's and a month's row each), beside the usage
# insert's pages: at 100,000 members the counters alone are tens of MiB, and with 2 MiB a batch
# read them again from the file, between its read and its upsert and from one batch to the next.
# Set once per connection that runs the hook, not for the whole pool: SQLite allocates pages as
# they are read, so a connection that never runs a batch costs nothing more. bench/loyalty.py:
# the hook's CPU -13 %, its counters' upsert -49 %, the usage insert before it -40 % (load 8-10).
SPOOL_PAGE_CACHE_KIB = 65_536
_PAGE_CACHE_SET = "ocs_loyalty_page_cache"  # connection info: the pragma was sent on it
_CREDITED_STATES = frozenset({Outcome.OK})


def credit_id(rule_id: str, trigger_id: str) -> str:
    """The balance engine's idempotency id of an application's credit."""
    return f"loyalty|{rule_id}|{trigger_id}"


def usage_event(row: Mapping[str, object], member: Member) -> LoyaltyEvent:
    """A usage record's row (``ocs.db.usage.row_of``) as a loyalty event of its line's member."""
    return LoyaltyEvent(
        kind=EventKind.USAGE,
        trigger_id=str(row["record_id"]),
        member_id=member.customer_id,
        line_id=str(row["account_id"]),
        at_seconds=int(row["at_seconds"]),  # type: ignore[call-overload]
        service=str(row["service"]),
        units=int(row["units"]),  # type: ignore[call-overload]
        micros=int(row["micros"]),  # type: ignore[call-overload]
        payment_type=str(row["payment_type"]),
    )


class LoyaltyEngine:
    def __init__(
        self,
        database: AsyncEngine,
        rules: LoyaltyRules,
        store: BalanceStore,
        events: AccountEvents | None = None,
        *,
        members: MemberDirectory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.database = database
        self.rules = rules
        self.store = store
        self.events = events
        self.members = members or MemberDirectory()
        self.clock = clock
        self._budgeted = tuple(
            programme.programme_id for programme in rules.programmes.values() if programme.budget_micros is not None
        )
        self._usage_rules = bool(rules.for_event(EventKind.USAGE))
        self._crediting: set[asyncio.Task[None]] = set()  # batches being credited (``_credit_beside``)
        self._marks: list[Mark] = []  # credits made, not yet marked (``credit``)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def preload_members(self) -> int:
        """Read every line's member once (``MemberDirectory.preload``); returns how many lines."""
        async with self.database.connect() as connection:
            return await self.members.preload(connection)

    # -- step 1: in the triggers' transaction ---------------------------------------------------

    async def usage_stored(self, connection: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> AfterCommit | None:
        """The spool's hook: evaluate the records this batch newly stored; returns what to run
        after the commit (the credits), or None when nothing is to be credited. A record is read
        straight into a ``Trigger`` tuple (the row's values are typed as stored: ``usage.row_of``)."""
        with paused_collection():
            if self._marks:
                await self._write_marks(connection)  # rolled back with the batch: then they are pending
            if not self._usage_rules or not rows:
                return None
            if connection.dialect.name == "sqlite" and not connection.info.get(_PAGE_CACHE_SET):
                await connection.exec_driver_sql(f"PRAGMA cache_size=-{SPOOL_PAGE_CACHE_KIB}")
                connection.info[_PAGE_CACHE_SET] = True  # the pooled connection's: kept while it lives
            members = await self.members.of_lines(connection, {row["account_id"] for row in rows})
            usage = EventKind.USAGE
            triggers: list[Trigger] = [
                (
                    usage,
                    row["record_id"],
                    row["account_id"],
                    row["at_seconds"],
                    row["service"],
                    row["units"],
                    row["micros"],
                    row["payment_type"],
                    member,
                )
                for row in rows
                if (member := members.get(row["account_id"])) is not None
            ]
            credits = await self._apply(connection, triggers)
        collect_young()
        return (lambda: self._credit_beside(credits)) if credits else None

    async def apply(
        self, connection: AsyncConnection, events: Sequence[tuple[LoyaltyEvent, Member]]
    ) -> list[PendingCredit]:
        """Evaluate ``events`` and write counters, budgets and applications in the caller's
        transaction; returns the credits to make once it commits."""
        return await self._apply(connection, triggers_of(events))

    async def _apply(self, connection: AsyncConnection, triggers: Sequence[Trigger]) -> list[PendingCredit]:
        if not triggers:
            return []
        member_ids = {trigger[8].customer_id for trigger in triggers}
        counters = await tables.read_counter_rows(connection, member_ids, counter_periods(triggers))
        spent = await tables.read_spent(connection, self._budgeted)
        outcome = evaluate_triggers(self.rules, triggers, counters, spent)
        await tables.upsert_counter_rows(connection, outcome.changed)
        await tables.write_spent(connection, outcome.spent)
        if outcome.over_budget:
            log.info("loyalty_budget_refused", applications=outcome.over_budget)
        now_ms = self._now_ms()
        rows = [_application_row(application, now_ms) for application in outcome.applications]
        await tables.insert_applications(connection, rows)
        await tables.insert_invoice_discounts(
            connection,
            [_discount_row(item) for item in outcome.applications if item.action is ActionKind.INVOICE_DISCOUNT],
        )
        return [
            _pending(application, now_ms)
            for application, row in zip(outcome.applications, rows, strict=True)
            if row["state"] == ApplicationState.PENDING
        ]

    async def events_recorded(self, events: Sequence[LoyaltyEvent]) -> int:
        """Events other than usage (a payment, a birthday), each evaluated once by its trigger id,
        in one transaction, then credited; returns the applications credited."""
        events = list({event.trigger_id: event for event in reversed(events)}.values())[::-1]  # each once
        async with self.database.begin() as connection:
            new = await tables.record_events(
                connection,
                [
                    {
                        "trigger_id": event.trigger_id,
                        "kind": event.kind.value,
                        "member_id": event.member_id,
                        "amount_micros": event.micros,
                        "at_seconds": event.at_seconds,
                    }
                    for event in events
                ],
            )
            members = await self.members.of_customers(connection, {event.member_id for event in events})
            chosen = [
                (event, members[event.member_id])
                for event in events
                if event.trigger_id in new and event.member_id in members
            ]
            credits = await self.apply(connection, chosen)
        return await self.credit(credits)

    async def on_payment(self, outcome: PaymentOutcome) -> None:
        """The payment service's listener (``Payments.on_payment``): a new payment as an event of
        its billing account's customer, credited to the customer's main line. A crash between
        the payment's commit and this call loses the event (a scan of payments is part 3's)."""
        if outcome.replayed:
            return
        payment = outcome.payment
        async with self.database.connect() as connection:
            customer_id = await customer_of_billing_account(connection, payment.billing_account_id)
            if customer_id is None:
                return
            line_id = (await main_lines(connection, [customer_id])).get(customer_id, "")
        event = LoyaltyEvent(
            kind=EventKind.PAYMENT,
            trigger_id=payment.payment_id,
            member_id=customer_id,
            line_id=line_id,
            at_seconds=int(utc_aware(payment.received_at).timestamp()),
            micros=payment.amount_micros,
        )
        await self.events_recorded([event])

    # -- step 2: after the commit ----------------------------------------------------------------

    async def _credit_beside(self, credits: Sequence[PendingCredit]) -> None:
        """Start crediting a committed batch beside the spool's next one; at most
        ``CREDIT_TASKS`` batches are credited at once (the spool waits beyond)."""
        while len(self._crediting) >= CREDIT_TASKS:
            await asyncio.wait(self._crediting, return_when=asyncio.FIRST_COMPLETED)
        task = asyncio.ensure_future(self._credit_quietly(credits, mark_now=False))
        self._crediting.add(task)
        task.add_done_callback(self._crediting.discard)

    async def settle(self) -> None:
        """Wait for the credits in progress and write their marks (shutdown, tests); what fails
        stays pending."""
        while self._crediting:
            await asyncio.wait(set(self._crediting))
        await self.write_marks()

    async def _credit_quietly(self, credits: Sequence[PendingCredit], *, mark_now: bool) -> None:
        try:
            await self.credit(credits, mark_now=mark_now)
        except Exception:  # they stay pending: credit_pending takes them again
            log.exception("loyalty_credit_failed", applications=len(credits))

    async def credit(self, credits: Sequence[PendingCredit], *, mark_now: bool = True) -> int:
        """Credit each application into the balance engine; returns how many were credited
        (replays of credits made before included). Their marks are written at once in a
        transaction of their own, or with ``mark_now`` False kept for the next transaction the
        engine writes in (``usage_stored``: the spool's next batch), so that crediting beside the
        spool does not compete with it for SQLite's one writer; ``settle`` writes what is left."""
        marks: list[Mark] = []
        for start in range(0, len(credits), CONCURRENT_CREDITS):
            chunk = credits[start : start + CONCURRENT_CREDITS]
            results = await asyncio.gather(*(self._credit_one(item) for item in chunk), return_exceptions=True)
            now_ms = self._now_ms()
            for item, result in zip(chunk, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, BalanceUnavailable):
                        log.error(
                            "loyalty_credit_error", rule_id=item.rule_id, trigger_id=item.trigger_id, error=repr(result)
                        )
                    continue  # stays pending
                if result.outcome in _CREDITED_STATES:
                    marks.append(Mark(item.rule_id, item.trigger_id, ApplicationState.CREDITED, now_ms))
                    if not result.replayed and self.events is not None:
                        self.events.publish(BalanceChanged(item.line_id, "loyalty_bonus", item.amount_micros))
                else:
                    log.warning("loyalty_credit_refused", outcome=result.outcome.value, rule_id=item.rule_id)
                    marks.append(
                        Mark(item.rule_id, item.trigger_id, ApplicationState.REFUSED, now_ms, result.outcome.value)
                    )
        self._marks += marks
        if mark_now:
            await self.write_marks()
        return sum(1 for mark in marks if mark.state == ApplicationState.CREDITED)

    async def write_marks(self) -> None:
        """Write the marks kept so far in a transaction of their own."""
        if self._marks:
            async with self.database.begin() as connection:
                await self._write_marks(connection)

    async def _write_marks(self, connection: AsyncConnection) -> None:
        marks, self._marks = self._marks, []
        try:
            await tables.mark_applications(connection, marks)
        except BaseException:
            self._marks = marks + self._marks  # kept for the next try (else: credited again, harmlessly)
            raise

    async def _credit_one(self, item: PendingCredit) -> OperationResult:
        operation_id = credit_id(item.rule_id, item.trigger_id)
        if not item.line_id:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        if item.action == ActionKind.BONUS_MONEY:
            return await self.store.top_up(
                item.line_id, operation_id, item.amount_micros, kind=BucketKind.BONUS, valid_until=item.valid_until
            )
        assert item.unit_kind is not None, item
        bucket = Bucket(0, BucketKind(item.unit_kind), item.units, item.services, 0, item.valid_until)
        return await self.store.add_bucket(item.line_id, bucket, operation_id)

    async def credit_pending(self) -> int:
        """Credit every application left pending (a crash, Redis away); returns how many."""
        credited = 0
        while True:
            async with self.database.connect() as connection:
                page = await tables.pending_credits(connection, PENDING_PAGE)
            if not page:
                return credited
            made = await self.credit(page)
            credited += made
            if made == 0:
                return credited  # what is left waits for the next pass (Redis away)

    async def run(self, interval_seconds: float) -> None:
        """``credit_pending`` now and every ``interval_seconds``, for ever; cancel to stop."""
        while True:
            try:
                await self.write_marks()  # the marks of credits made beside the spool, traffic or not
                credited = await self.credit_pending()
                if credited:
                    log.info("loyalty_pending_credited", applications=credited)
            except Exception:
                log.exception("loyalty_pending_credit_failed")
            await asyncio.sleep(interval_seconds)


def _application_row(application: Application, now_ms: int) -> dict[str, object]:
    creditable = application.action in (ActionKind.BONUS_MONEY, ActionKind.UNIT_ALLOWANCE)
    return {
        "rule_id": application.rule_id,
        "programme_id": application.programme_id,
        "member_id": application.member_id,
        "line_id": application.line_id,
        "trigger_id": application.trigger_id,
        "trigger_kind": application.trigger_kind.value,
        "action": application.action.value,
        "amount_micros": application.amount_micros,
        "units": application.units,
        "unit_kind": None if application.unit_kind is None else application.unit_kind.value,
        "services": ",".join(application.services),
        "valid_until": application.valid_until,
        "cost_micros": application.cost_micros,
        "at_seconds": application.at_seconds,
        "committed_at_ms": now_ms,
        "credited_at_ms": None,
        "state": ApplicationState.PENDING if creditable else ApplicationState.RECORDED,
        "outcome": None,
    }


def _pending(application: Application, now_ms: int) -> PendingCredit:
    return PendingCredit(
        rule_id=application.rule_id,
        trigger_id=application.trigger_id,
        line_id=application.line_id,
        action=application.action.value,
        amount_micros=application.amount_micros,
        units=application.units,
        unit_kind=None if application.unit_kind is None else application.unit_kind.value,
        services=application.services,
        valid_until=application.valid_until,
        committed_at_ms=now_ms,
    )


def _discount_row(application: Application) -> dict[str, object]:
    assert application.target is not None
    return {
        "rule_id": application.rule_id,
        "trigger_id": application.trigger_id,
        "programme_id": application.programme_id,
        "member_id": application.member_id,
        "target": application.target.value,
        "service": application.service,
        "percent_basis_points": application.percent_basis_points,
        "applies_from": application.applies_from,
        "applies_until": application.applies_until,
        "state": "pending",
    }
