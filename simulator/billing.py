"""The billing cycle during a run: a compressed calendar of bill runs, payments, disputes, promises
to pay and dunning runs, and how the dunning ladder reached the live sessions.

Theory of operation: while traffic runs in real time, ``BillingCycle.run`` walks a calendar of
simulated days from ``start_date`` for ``months`` months, one day every ``day_seconds`` of wall
time. On each day it asks the OCS, as an operator's scheduler would, for the bill run of that
date (``POST /billRuns``: every billing account whose cycle closed by then and has no invoice for
it), reads the bills it made (``GET /customerBills``), acts as the customers (below), and asks
for the dunning run of that date (``POST /dunningRuns``). The server's own daily duties run on
real dates, before the calendar's, and find nothing to do for these accounts.

Each billing account (a postpaid individual's, or the company's, which pays for the postpaid
lines under its departments) has a payment behaviour drawn from the seed: ``on_time`` pays each
bill the day before it is due, ``partial`` pays part of it on the due date, ``late`` pays all it
owes the day after the dunning ladder restricted or barred it (at the latest ``late_days``
after the due date), ``never`` pays nothing. Some bills are disputed the day after they are
issued (``POST /customerBills/{id}/disputes``, at most what is still open: a payment may come
first), some of those resolved later (credited or
rejected); some late or never payers promise to pay (``POST /billingAccounts/{id}/promisesToPay``).
Payments carry the simulated date as when the bank received them and a reference that makes a
retry harmless. A payment waits, within its day, for a line of the account to be in a session,
so that a lift it causes has a live session to reach (within ``PAYMENT_WAIT_SECONDS``).

What dunning did is read from each account's history (``GET /billingAccounts/{id}/dunning``)
after a run that applied steps: a restrict, bar or terminate reaches the account's lines from the
moment the run answered; a ``lift`` ends it at the payment that caused it. A terminated line
leaves the traffic for good. Checks (``audit``): no line is charged on a request sent while it is
barred or terminated (other than the final CCR-TERMINATION; the OCS answers 4010 or 5030); the
one-ledger audit (``GET /reports/ledger``) is empty; what the simulator paid equals the payments
the OCS recorded, account by account; the invoices the bill runs answered equal the bills the OCS
lists for these accounts. ``payment_to_grant``: for a payment that lifted a restriction while a
line of the account was in a session, the time from the payment call to that line's first grant
without Final-Unit-Indication after the OCS's RAR.
"""

from __future__ import annotations

import asyncio
import calendar
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from simulator.http_api import ApiRefused, OcsApi
from simulator.lifecycle import percentile
from simulator.population import SimulatedSubscriber, money_text
from simulator.records import Recorder

BEHAVIOURS = ("on_time", "late", "partial", "never")
ENFORCING = ("restrict", "bar", "terminate")  # dunning actions that reach the network
CHARGING_STOPPED = ("bar", "terminate")  # no request may be charged while these hold
SUCCESS = 2001  # DIAMETER_SUCCESS, RFC 6733 section 7.1.2
BUSY_POLL_SECONDS = 0.05
PAYMENT_TO_GRANT_TARGET_MS = 2000.0  # issue 14 "What must be shown"
PAYMENT_WAIT_SECONDS = 2.0  # longest wait for a line of the account in a session before a payment


@dataclass(frozen=True, slots=True)
class BillingSettings:
    enabled: bool = False  # False: no billing calendar in this run
    start_date: date | None = None  # None: the day after the run starts (the real date, UTC)
    months: int = 3
    day_seconds: float = 1.0  # wall time of one simulated day
    behaviours: Mapping[str, float] = field(default_factory=lambda: {"on_time": 1.0})  # weights
    late_days: int = 20  # a late payer pays at the latest this many days after the due date
    partial_percent: int = 50  # of the bill a partial payer pays
    dispute_share: float = 0.0  # of the bills
    dispute_percent: int = 20  # of the bill disputed
    dispute_resolved_share: float = 0.5  # of the disputes, resolved (half credited, half rejected)
    dispute_resolve_days: int = 5
    promise_share: float = 0.0  # of the late and never payers' bills: a promise the day after due
    promise_days: int = 7  # the promised date, after the promise

    def first_day(self, today: date) -> date:
        return self.start_date if self.start_date is not None else today + timedelta(days=1)

    def days(self, today: date) -> int:
        """How many simulated days the calendar has when the run starts on ``today``."""
        first = self.first_day(today)
        return (add_months(first, self.months) - first).days

    @property
    def longest_wall_seconds(self) -> float:
        """Wall time of the calendar at most (months of 31 days when the start is not fixed)."""
        days = self.days(date.min) if self.start_date is not None else 31 * self.months
        return days * self.day_seconds


def behaviour_draw(weights: Mapping[str, float], count: int, rng: random.Random) -> list[str]:
    """``count`` behaviours in the shares of ``weights`` (largest remainder, so a small population
    has them all in proportion), in an order shuffled by ``rng``."""
    total = sum(weights.values())
    exact = {name: count * weight / total for name, weight in weights.items()}
    counts = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda name: exact[name] - counts[name], reverse=True)[
        : count - sum(counts.values())
    ]:
        counts[name] += 1
    drawn = [name for name, number in counts.items() for _ in range(number)]
    rng.shuffle(drawn)
    return drawn


def add_months(day: date, months: int) -> date:
    """The same day ``months`` later, or that month's last day when it has no such day."""
    year, month = divmod(day.month - 1 + months, 12)
    year += day.year
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


@dataclass(slots=True)
class Payer:
    """A billing account the simulator pays for, and how."""

    billing_account_id: str
    customer_id: str
    lines: tuple[str, ...]
    behaviour: str
    paid_micros: int = 0  # what the OCS accepted from the simulator
    references: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Bill:
    bill_id: str
    billing_account_id: str
    amount_micros: int
    due: date


@dataclass(slots=True)
class Enforcement:
    """A dunning step on the network: from when its run answered to when a payment lifted it."""

    step_id: int
    action: str  # restrict, bar or terminate
    billing_account_id: str
    lines: tuple[str, ...]
    since: float  # time.monotonic()
    requested_at: float  # time.monotonic() before the dunning run that applied it was asked for
    until: float | None = None


@dataclass(frozen=True, slots=True)
class PaymentCall:
    billing_account_id: str
    called_at: float  # time.monotonic() just before the call
    live_lines: tuple[str, ...]  # the account's lines in a session at the call


@dataclass(slots=True)
class BillingCycle:
    settings: BillingSettings
    api: OcsApi
    recorder: Recorder
    subscribers: Sequence[SimulatedSubscriber]
    busy: Callable[[], set[str]]  # the lines in a session now
    retired: set[str]  # lines out of the traffic (terminated)
    rng: random.Random
    payers: dict[str, Payer] = field(default_factory=dict)  # by billing account
    bills: dict[str, Bill] = field(default_factory=dict)
    invoices_answered: int = 0  # as the bill runs answered
    dunning_steps: Counter[str] = field(default_factory=Counter)  # as the dunning runs answered
    enforcements: dict[int, Enforcement] = field(default_factory=dict)  # by step id
    payment_calls: list[PaymentCall] = field(default_factory=list)
    lifted_calls: list[PaymentCall] = field(default_factory=list)  # payments that lifted restrict/bar
    disputes: Counter[str] = field(default_factory=Counter)  # opened, credited, rejected
    promises: int = 0
    problems: list[str] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)
    start: date | None = None  # the calendar's first day, once it runs
    day_count: int = 0
    billed_micros: int = 0  # the bills the OCS lists for the run's accounts, after the calendar
    listed_invoices: int = 0
    _agenda: dict[date, list[tuple[str, str]]] = field(default_factory=dict)  # day -> (what, id)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def set_up(self) -> None:
        """Find each customer's billing account and draw how it pays."""
        owners = sorted({s.owner_id for s in self.subscribers if s.bill_cycle_day})
        behaviours = behaviour_draw(self.settings.behaviours, len(owners), self.rng)
        for owner, behaviour in zip(owners, behaviours, strict=True):
            account = (await self.api.customer(owner)).get("billing_account")
            if not isinstance(account, dict):
                self.problems.append(f"customer {owner}: no billing account after provisioning")
                continue
            lines = tuple(s.account_id for s in self.subscribers if s.msisdn and s.owner_id == owner)
            billing_account_id = str(account["billing_account_id"])
            self.payers[billing_account_id] = Payer(billing_account_id, owner, lines, behaviour)

    async def run(self) -> None:
        """Every day of the calendar, one every ``day_seconds`` (the module docstring)."""
        if not self.settings.enabled:
            return
        today = datetime.now(UTC).date()
        start = self.settings.first_day(today)
        if start <= today:
            self.problems.append(
                f"[billing] start_date {start} is not after today ({today}): usage made now would fall before "
                "the calendar's cycles"
            )
            return
        self.start, self.day_count = start, self.settings.days(today)
        began = time.monotonic()
        for number in range(self.day_count):
            await asyncio.sleep(max(0.0, began + number * self.settings.day_seconds - time.monotonic()))
            day = start + timedelta(days=number)
            try:
                await self._day(day)
            except ApiRefused as refused:
                self.problems.append(f"{day}: {refused}")
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    async def _day(self, day: date) -> None:
        answer = await self.api.bill_run(day.isoformat())
        issued = answer.get("invoices")
        self.invoices_answered += issued if isinstance(issued, int) else 0
        if isinstance(issued, int) and issued:
            await self._new_bills(day)
        for what, item in self._agenda.pop(day, []):
            await self._act(what, item, day)
        requested = time.monotonic()
        run = await self.api.dunning_run(day.isoformat())
        answered = time.monotonic()
        steps = run.get("steps_by_action")
        if isinstance(steps, dict):
            self.dunning_steps.update({str(k): int(v) for k, v in steps.items() if isinstance(v, int)})
        if run.get("steps_applied"):
            await self._observe_dunning(requested, answered, day)
        if run.get("lifted"):  # the run's own lift pass (a dispute or credit note took the debt below)
            await self._observe_run_lifts(requested)

    def _plan(self, day: date, what: str, item: str) -> None:
        self._agenda.setdefault(day, []).append((what, item))

    async def _new_bills(self, day: date) -> None:
        for listed in await self.api.bills():
            bill_id, account = str(listed.get("id")), str(listed.get("billing_account_id"))
            payer = self.payers.get(account)
            if payer is None or bill_id in self.bills:
                continue
            amount = _micros(listed.get("amount_due"))
            due = date.fromisoformat(str(listed.get("payment_due_date")))
            self.bills[bill_id] = Bill(bill_id, account, amount, due)
            self._plan_customer(payer, self.bills[bill_id], day)

    def _plan_customer(self, payer: Payer, bill: Bill, day: date) -> None:
        """What the customer will do about a new bill (the module docstring)."""
        settings = self.settings
        if self.rng.random() < settings.dispute_share:
            self._plan(day + timedelta(days=1), "dispute", bill.bill_id)
        behaviour = payer.behaviour
        if behaviour == "on_time":
            self._plan(max(day, bill.due - timedelta(days=1)), "pay_bill", bill.bill_id)
        elif behaviour == "partial":
            self._plan(bill.due, "pay_part", bill.bill_id)
        elif behaviour == "late":
            self._plan(bill.due + timedelta(days=settings.late_days), "pay_all", payer.billing_account_id)
        if behaviour in ("late", "never") and self.rng.random() < settings.promise_share:
            self._plan(bill.due + timedelta(days=1), "promise", bill.bill_id)

    async def _act(self, what: str, item: str, day: date) -> None:
        if what == "dispute":
            await self._dispute(self.bills[item], day)
        elif what in ("credited", "rejected"):
            await self.api.resolve_dispute(item, what, f"simulated resolution: {what}")
            self.disputes[what] += 1
        elif what == "promise":
            bill = self.bills[item]
            promised = day + timedelta(days=self.settings.promise_days)
            amount = max(1, bill.amount_micros)
            await self.api.promise_to_pay(bill.billing_account_id, f"promise-{bill.bill_id}", amount, str(promised))
            self.promises += 1
        else:
            self._pay_later(what, item, day)

    async def _dispute(self, bill: Bill, day: date) -> None:
        """Dispute ``dispute_percent`` of the bill, at most what is still open and undisputed: a
        payment made meanwhile (a task that waited for a busy line, or a late payer paying all it
        owes) may have settled the bill first, and the OCS refuses to dispute a paid amount."""
        listed = await self.api.bill(bill.bill_id)
        left = _micros(listed.get("remaining_amount")) - _micros(listed.get("disputed_amount"))
        amount = min(bill.amount_micros * self.settings.dispute_percent // 100, left)
        if amount <= 0:
            return
        dispute = await self.api.open_dispute(bill.bill_id, f"dispute-{bill.bill_id}", amount, "simulated dispute")
        self.disputes["opened"] += 1
        if self.rng.random() < self.settings.dispute_resolved_share:
            outcome = self.rng.choice(("credited", "rejected"))
            self._plan(day + timedelta(days=self.settings.dispute_resolve_days), outcome, str(dispute["dispute_id"]))

    def _pay_later(self, what: str, item: str, day: date) -> None:
        task = asyncio.create_task(self._pay(what, item, day))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _pay(self, what: str, item: str, day: date) -> None:
        """One payment, made when a line of the account is in a session (within the day)."""
        account = self.bills[item].billing_account_id if what != "pay_all" else item
        payer = self.payers[account]
        deadline = time.monotonic() + max(self.settings.day_seconds, PAYMENT_WAIT_SECONDS)
        while time.monotonic() < deadline and not any(line in self.busy() for line in payer.lines):
            await asyncio.sleep(BUSY_POLL_SECONDS)
        try:
            amount = await self._amount(what, item, account)
            if amount <= 0:
                return
            reference = f"sim-{what}-{item}-{day.isoformat()}"
            live = tuple(line for line in payer.lines if line in self.busy())
            call = PaymentCall(account, time.monotonic(), live)
            await self.api.pay(account, reference, amount, f"{day.isoformat()}T12:00:00Z")
        except ApiRefused as refused:
            self.problems.append(f"payment {what} {item}: {refused}")
            return
        if reference not in payer.references:
            payer.references.add(reference)
            payer.paid_micros += amount
        self.payment_calls.append(call)
        await self._observe_lifts(call)

    async def _amount(self, what: str, item: str, account: str) -> int:
        """What to pay now: the bill's open amount less what is disputed (a part of it for a
        partial payer), or everything the account owes (a late payer)."""
        bills = [await self.api.bill(item)] if what != "pay_all" else await self.api.bills(account)
        owed = sum(_micros(bill.get("remaining_amount")) - _micros(bill.get("disputed_amount")) for bill in bills)
        return owed * self.settings.partial_percent // 100 if what == "pay_part" else owed

    async def _observe_dunning(self, requested: float, answered: float, day: date) -> None:
        """After a run that applied steps: what reached the network, account by account."""
        for payer in self.payers.values():
            for step in await self.api.dunning_history(payer.billing_account_id):
                step_id, action = step.get("step_id"), str(step.get("action"))
                if not isinstance(step_id, int) or step_id in self.enforcements or action not in ENFORCING:
                    continue
                self.enforcements[step_id] = Enforcement(
                    step_id, action, payer.billing_account_id, payer.lines, answered, requested
                )
                if action == "terminate":
                    self.retired.update(payer.lines)
                elif payer.behaviour == "late":  # pays the day after it was restricted or barred
                    self._plan(day + timedelta(days=1), "pay_all", payer.billing_account_id)

    def status_changes(self) -> list[tuple[str, float]]:
        """(line, when its restriction, bar or termination was asked for): what explains a later
        refusal for the line's status (``Lifecycle.audit_refusals``)."""
        return [(line, step.requested_at) for step in self.enforcements.values() for line in step.lines]

    async def _observe_lifts(self, call: PaymentCall) -> None:
        """Which of the account's restrictions or bars the payment lifted (its history says)."""
        if await self._lifted(call.billing_account_id, call.called_at):
            self.lifted_calls.append(call)

    async def _observe_run_lifts(self, requested: float) -> None:
        """What a dunning run lifted by itself (its lift pass), from when the run was asked for."""
        accounts = {step.billing_account_id for step in self.enforcements.values() if step.until is None}
        for account in sorted(accounts):
            await self._lifted(account, requested)

    async def _lifted(self, billing_account_id: str, since: float) -> bool:
        """Marks the account's enforcements its history shows lifted as ended at ``since``."""
        lifted = False
        for step in await self.api.dunning_history(billing_account_id):
            lifts = step.get("lifts_step_id")
            enforcement = self.enforcements.get(lifts) if isinstance(lifts, int) else None
            if step.get("action") == "lift" and enforcement is not None and enforcement.until is None:
                enforcement.until = since
                lifted = True
        return lifted

    # --- after the traffic ------------------------------------------------------------------------
    def payment_to_grant_ms(self) -> list[float]:
        """Per lifting payment with a live line: ms from the call to that line's first grant
        without Final-Unit-Indication after the RAR that followed the payment."""
        times: list[float] = []
        for call in self.lifted_calls:
            seen: list[float] = []
            for line in call.live_lines:
                rar = self.recorder.first_server_request((line,), call.called_at)
                grant = self.recorder.first_normal_grant(line, rar) if rar is not None else None
                if grant is not None:
                    seen.append(grant)
            if seen:
                times.append((min(seen) - call.called_at) * 1000.0)
        return sorted(times)

    def audit_charging(self) -> None:
        """No line charged on a request sent while barred or terminated (the final CCR-T aside)."""
        for enforcement in self.enforcements.values():
            if enforcement.action not in CHARGING_STOPPED:
                continue
            until = enforcement.until if enforcement.until is not None else float("inf")
            for line in enforcement.lines:
                for sent, kind, code in self.recorder.requests_by_line.get(line, ()):
                    if enforcement.since <= sent < until and kind != "CCR-T" and code == SUCCESS:
                        self.problems.append(
                            f"{line}: {kind} sent {sent - enforcement.since:.3f} s into its {enforcement.action} "
                            f"(dunning step {enforcement.step_id}) got {SUCCESS}"
                        )

    async def audit_ledger(self) -> None:
        """The one-ledger audit, and the simulator's own books against the OCS's."""
        try:
            self.ledger_problems = await self.api.ledger_problems()
        except ApiRefused as refused:
            self.ledger_problems = [f"the one-ledger audit: {refused}"]
        listed = [bill for bill in await self.api.bills() if str(bill.get("billing_account_id")) in self.payers]
        if len(listed) != self.invoices_answered:
            self.ledger_problems.append(
                f"the bill runs answered {self.invoices_answered} invoice(s); the OCS lists {len(listed)} "
                "for the run's accounts"
            )
        for payer in self.payers.values():
            recorded = sum(
                _integer(p.get("amount_micros"))
                for p in await self.api.payments(payer.billing_account_id)
                if p.get("source") != "deposit"  # a held deposit the OCS credited back at termination
            )
            if recorded != payer.paid_micros:
                self.ledger_problems.append(
                    f"billing account {payer.billing_account_id}: the simulator paid {payer.paid_micros} micros, "
                    f"the OCS recorded {recorded}"
                )
        self.billed_micros = sum(_micros(bill.get("amount_due")) for bill in listed)
        self.listed_invoices = len(listed)

    def verdict_problems(self) -> list[str]:
        """What fails the run: the checks' problems, the ledger's, and a slow lift."""
        problems = list(self.problems) + list(self.ledger_problems)
        p99 = percentile(self.payment_to_grant_ms(), 99.0)
        if p99 > PAYMENT_TO_GRANT_TARGET_MS:
            problems.append(f"payment_to_grant_p99_ms {p99:.0f} is over the {PAYMENT_TO_GRANT_TARGET_MS:.0f} ms target")
        if not self.listed_invoices:
            problems.append("the calendar made no invoice")
        return problems

    def summary(self) -> dict[str, object]:
        """The report's ``billing`` object (issue 14, "What must be shown")."""
        times = self.payment_to_grant_ms()
        p99 = percentile(times, 99.0)
        paid = sum(payer.paid_micros for payer in self.payers.values())
        return {
            "calendar": {"start": str(self.start), "days": self.day_count},
            "billing_accounts": dict(Counter(payer.behaviour for payer in self.payers.values())),
            "invoices": self.listed_invoices,
            "billed": money_text(self.billed_micros),
            "billed_micros": self.billed_micros,
            "paid": money_text(paid),
            "paid_micros": paid,
            "payments": len(self.payment_calls),
            "disputes": dict(self.disputes),
            "promises_to_pay": self.promises,
            "dunning_steps": dict(self.dunning_steps),
            "lifted_by_payment": len(self.lifted_calls),
            "redirects": self.recorder.final_unit_actions.get("REDIRECT", 0),
            "payment_to_grant_timed": len(times),
            "payment_to_grant_p50_ms": round(percentile(times, 50.0), 3),
            "payment_to_grant_p99_ms": round(p99, 3),
            "ledger_ok": not self.ledger_problems,
            "problems": self.verdict_problems(),
        }


def _micros(money: object) -> int:
    """A TMF678 Money (``{"unit", "value_micros"}``) as micros."""
    return _integer(money.get("value_micros")) if isinstance(money, dict) else 0


def _integer(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
