"""Dunning and collection: the daily run that climbs each overdue billing account's ladder, the
lift when a payment brings the overdue amount down, promises to pay and exemptions.

Theory of operation: ``run(D)`` first finishes every step a crash left unfinished (``resume``),
then looks at every billing account with an unpaid invoice due before D
(``dunning_records.overdue_accounts``, read in pages of ``page_size`` by id, each page starting
after the last id of the one before: keyset pagination, so the run holds one page in memory and
an account whose steps change during the run is neither skipped nor seen twice) and asks
``receivables.overdue_in`` what it owes past due at D, disputed amounts held out. Nothing is
done for an account whose overdue amount is all disputed, whose customer is exempt (by flag,
``dunning_exemptions``, or by a segment the dunning file lists), or that promised to pay on or
after D. Otherwise its customer's credit class chooses
the ladder (``ocs.billing.dunning_rules``); the days past due count from the oldest unpaid due
date, which also names the *episode*; every step due at those days and that amount and not yet
recorded in the episode is applied, in ladder order, each once:

1. one transaction: the step row (who: the oldest overdue invoice, the days and the amount: its
   reason), and, for a letter, the reminder rendered into the delivery outbox (kind ``reminder``;
   the step is finished in the same commit), for a terminate, a ``final_invoice_requested`` event
   with the termination date (the run's) for the bill run, whose next run bills the account's
   last cycle up to that date at once (``ocs.billing.final_invoices``);
2. a restrict, bar or terminate goes through the customer lifecycle
   (``ocs.customers.lifecycle``), with reason category ``collections``: the customer's status, or
   the paying company node's when the billing account belongs to a node; the lifecycle pushes it
   to live sessions (suspend: RAR, then the plan's suspended Final-Unit-Indication; bar: ASR and
   4010; terminate: ASR, release);
3. the step row is marked finished with its outcome (``applied``; ``unchanged`` when the status
   already was that, set by someone else; ``refused: ...`` when the lifecycle refuses, e.g.
   restricting a barred customer).

A crash or Redis down between 1 and 3 leaves the row unfinished; ``resume`` (the server's startup
and the start of every run) runs 2 and 3 again: the lifecycle changes nothing already changed and
finishes its own step, so the effect happens once. A rerun of D finds every due step recorded
and does nothing new.

The lift (``on_payment``, a ``Payments`` listener called after the payment's commit, and a pass of
every run for a lift a crash missed): on the payment's day (``PaymentOutcome.as_of``, the billing
calendar's date the overdue amount was measured on, as a run's ``D`` is; never this process's
clock, which may be the host's while the calendar is another), when the overdue amount is below
the ladder's lift threshold
(``Ladder.lift_below_micros``), every restrict and bar dunning applied and has not lifted is
lifted at once: a lift row per step (recorded, then applied, then finished, as a step is) and one
resume through the lifecycle, which RARs live sessions so their next request gets a normal grant.
Dunning lifts only what it did: the target's latest lifecycle change must be dunning's own (its
author and the ``collections`` category); a suspension the customer asked for, or a bar for
fraud made since, stays (the lift row says ``superseded``). A lifted step is not applied again in
its episode; a new episode (a new oldest due date) climbs the ladder from the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing import dunning_records as records
from ocs.billing.dunning_records import DunningRunResult, DunningStep, Exemption, NewPromiseToPay, PromiseToPay
from ocs.billing.dunning_rules import Action, DunningRules, LadderStep
from ocs.billing.receivables import overdue_in
from ocs.billing.values import PaymentOutcome
from ocs.customers.history import ReasonCategory
from ocs.customers.lifecycle import Lifecycle, StatusRequest, TargetStatus
from ocs.customers.service import CustomerRefusal, Problem, made_id
from ocs.db.billing import delivery_outbox
from ocs.db.customers import billing_accounts, customer_nodes, customers
from ocs.db.dunning import dunning_exemptions, promises_to_pay
from ocs.db.schema import utc_naive
from ocs.rating.rate import format_money

log = structlog.get_logger("ocs.billing.dunning")

AUTHOR = "dunning"  # the lifecycle's author of every change dunning makes: how a lift knows its own
REMINDER = "reminder"
FINAL_INVOICE_REQUESTED = "final_invoice_requested"
DEFAULT_PAGE_SIZE = 1_000  # overdue accounts read at once: the run's memory is one page, however many owe
_STATUS_OF = {Action.RESTRICT: TargetStatus.SUSPENDED, Action.BAR: TargetStatus.BARRED}
_STATUS_OF[Action.TERMINATE] = TargetStatus.TERMINATED
_OWN_STATUS = {
    "customer": (customers.c.status, customers.c.customer_id),
    "node": (customer_nodes.c.status, customer_nodes.c.node_id),
}


class Dunning:
    def __init__(
        self,
        engine: AsyncEngine,
        rules: DunningRules,
        lifecycle: Lifecycle,
        *,
        clock: Callable[[], float] = time.time,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        self.engine = engine
        self.rules = rules
        self.lifecycle = lifecycle
        self.clock = clock
        self.page_size = page_size

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- the daily run --------------------------------------------------------------------------

    async def run(self, day: date) -> DunningRunResult:
        """Every due step of every overdue account applied once (see the module docstring)."""
        counts: dict[str, int] = {"resumed": await self.resume()}
        by_action: dict[str, int] = {}
        overdue = 0
        after = ""
        while True:
            async with self.engine.connect() as connection:
                accounts = await records.overdue_accounts(connection, day, after, self.page_size)
            if not accounts:
                break
            after = accounts[-1].billing_account_id
            overdue += len(accounts)
            for account in accounts:
                try:
                    verdict = await self._account(account, day, by_action)
                except Exception:  # Redis down, a database hiccup: the next run (or resume) finishes it
                    log.exception("dunning_account_failed", billing_account_id=account.billing_account_id)
                    verdict = "failed"
                counts[verdict] = counts.get(verdict, 0) + 1
        lifted = await self._lift_pass(day)
        result = DunningRunResult(
            date=day,
            accounts_overdue=overdue,
            steps_applied=sum(by_action.values()),
            steps_by_action=by_action,
            held_by_disputes=counts.get("held", 0),
            paused_by_promises=counts.get("paused", 0),
            exempt=counts.get("exempt", 0),
            lifted=lifted,
            resumed=counts["resumed"],
            failed=counts.get("failed", 0),
        )
        log.info("dunning_run", **result.model_dump(mode="json", exclude={"steps_by_action"}))
        return result

    async def _account(self, account: Any, day: date, by_action: dict[str, int]) -> str:
        if account.exempt_customer is not None or (account.segment in self.rules.exempt_segments):
            return "exempt"
        async with self.engine.connect() as connection:
            overdue = await overdue_in(connection, account.billing_account_id, day)
            if overdue.oldest_due_date is None:
                return "held"  # all of it disputed
            if await records.paused_until(connection, account.billing_account_id, day) is not None:
                return "paused"
            episode = overdue.oldest_due_date
            done = await records.positions_done(connection, account.billing_account_id, episode)
            invoice_id = await records.oldest_overdue_invoice(connection, account.billing_account_id, episode)
        ladder = self.rules.ladder_for(account.credit_class)
        days_past_due = (day - episode).days
        for step in ladder.due(days_past_due, overdue.amount_micros):
            if step.position in done:
                continue
            values = {
                "billing_account_id": account.billing_account_id,
                "customer_id": account.customer_id,
                "episode_due_date": episode,
                "ladder": ladder.name,
                "position": step.position,
                "action": step.action.value,
                "target_kind": "node" if account.node_id is not None else "customer",
                "target_id": account.node_id if account.node_id is not None else account.customer_id,
                "run_date": day,
                "days_past_due": days_past_due,
                "overdue_micros": overdue.amount_micros,
                "invoice_id": invoice_id,
                "template": step.template,
            }
            step_id = await self._record(values, step, account.currency)
            if step_id is None:
                continue  # another run recorded it: that run applies it
            by_action[step.action.value] = by_action.get(step.action.value, 0) + 1
            if step.action is not Action.LETTER:
                await self._apply(await self._step(step_id))
        return "dunned"

    async def _record(self, values: dict[str, object], step: LadderStep, currency: str) -> int | None:
        now = self._now()
        async with self.engine.begin() as connection:
            letter = step.action is Action.LETTER
            row = {**values, "created_at": utc_naive(now)}
            if letter:
                row.update(outcome="applied", finished_at=utc_naive(now))
            step_id = await records.record_step(connection, row)
            if step_id is None:
                return None
            if letter:
                await connection.execute(insert(delivery_outbox).values(**self._reminder(values, step, currency, now)))
            elif step.action is Action.TERMINATE:
                payload: dict[str, object] = {
                    "billing_account_id": values["billing_account_id"],
                    "customer_id": values["customer_id"],
                    "dunning_step_id": step_id,
                    "termination_date": str(values["run_date"]),  # a date: ISO 8601
                    "reason": f"dunning: terminated at {values['days_past_due']} days past due",
                }
                await connection.execute(
                    insert(delivery_outbox).values(
                        kind=FINAL_INVOICE_REQUESTED, invoice_id=None, payload=payload, created_at=utc_naive(now)
                    )
                )
        return step_id

    def _reminder(self, values: dict[str, Any], step: LadderStep, currency: str, now: datetime) -> dict[str, object]:
        assert step.template is not None
        fields = {
            "customer_id": values["customer_id"],
            "billing_account_id": values["billing_account_id"],
            "amount": format_money(values["overdue_micros"]),
            "currency": currency,
            "days_past_due": str(values["days_past_due"]),
            "due_date": values["episode_due_date"].isoformat(),
            "invoice": values["invoice_id"] or "",
            "date": values["run_date"].isoformat(),
        }
        subject, body = self.rules.letters[step.template].render(fields)
        payload: dict[str, object] = {
            **{key: fields[key] for key in ("customer_id", "billing_account_id", "currency", "due_date")},
            "template": step.template,
            "overdue_micros": values["overdue_micros"],
            "days_past_due": values["days_past_due"],
            "subject": subject,
            "body": body,
        }
        return {"kind": REMINDER, "invoice_id": values["invoice_id"], "payload": payload, "created_at": utc_naive(now)}

    async def _step(self, step_id: int) -> DunningStep:
        async with self.engine.connect() as connection:
            return await records.step(connection, step_id)

    async def _apply(self, step: DunningStep) -> None:
        """Steps 2 and 3 of a restrict, bar or terminate (the module docstring)."""
        action = Action(step.action)
        reason = (
            f"dunning: {step.days_past_due} days past due, {format_money(step.overdue_micros)} overdue"
            f" (bill {step.invoice_id})"
        )
        outcome = await self._set_status(step, _STATUS_OF[action], reason)
        await records.finish_step(self.engine, step.step_id, outcome, self._now())
        log.info("dunning_step", billing_account_id=step.billing_account_id, action=action.value, outcome=outcome)

    async def _set_status(self, step: DunningStep, status: TargetStatus, reason: str) -> str:
        """The target's status through the lifecycle: ``applied`` when the target's latest change
        is now dunning's own to that status (made now, or by this step before a crash)."""
        request = StatusRequest(status=status, reason=reason[:256], reason_category=ReasonCategory.COLLECTIONS)
        try:
            if step.target_kind == "node":
                await self.lifecycle.set_node_status(step.customer_id, step.target_id, request, AUTHOR)
            else:
                await self.lifecycle.set_customer_status(step.target_id, request, AUTHOR)
        except CustomerRefusal as refusal:
            if refusal.problem is Problem.NOT_FOUND:
                raise
            return f"refused: {refusal.message}"
        async with self.engine.connect() as connection:
            last = await records.last_lifecycle_step(connection, step.target_kind, step.target_id)
        return "applied" if _is_dunnings(last) and last.status == status.value else "unchanged"

    async def _own_status(self, kind: str, entity_id: str) -> str | None:
        column, key = _OWN_STATUS[kind]
        async with self.engine.connect() as connection:
            found = await connection.execute(select(column).where(key == entity_id))
            return found.scalar_one_or_none()

    # -- the restart pass -----------------------------------------------------------------------

    async def resume(self) -> int:
        """Finish every step and lift a crash left unfinished, oldest first; how many."""
        steps = await records.unfinished_steps(self.engine)
        for step in steps:
            if step.action == "lift":
                await self._apply_lift(step)
            else:
                await self._apply(step)
        if steps:
            log.warning("dunning_steps_resumed", steps=len(steps))
        return len(steps)

    # -- the lift -------------------------------------------------------------------------------

    async def on_payment(self, outcome: PaymentOutcome) -> None:
        """The ``Payments`` listener: lift at once when the payment brought the overdue amount down."""
        if outcome.replayed:
            return
        await self.lift(outcome.payment.billing_account_id, outcome.overdue_after_micros, outcome.as_of)

    async def lift(self, billing_account_id: str, overdue_micros: int, day: date) -> int:
        """Lift what dunning applied on the account when ``overdue_micros`` is below the ladder's
        threshold; how many steps were lifted."""
        async with self.engine.connect() as connection:
            applied = await records.enforcing(connection, billing_account_id)
        lifting = [step for step in applied if overdue_micros < self._lift_below(step.ladder)]
        if not lifting:
            return 0
        now = self._now()
        lifts: list[int] = []
        async with self.engine.begin() as connection:
            for step in lifting:
                values = {
                    **step.model_dump(
                        include={
                            "billing_account_id",
                            "customer_id",
                            "episode_due_date",
                            "ladder",
                            "target_kind",
                            "target_id",
                            "invoice_id",
                        }
                    ),
                    "position": -step.position,
                    "action": "lift",
                    "run_date": day,
                    "days_past_due": (day - step.episode_due_date).days,
                    "overdue_micros": overdue_micros,
                    "lifts_step_id": step.step_id,
                    "created_at": utc_naive(now),
                }
                made = await records.record_step(connection, values)
                if made is not None:
                    lifts.append(made)
        for step_id in lifts:
            await self._apply_lift(await self._step(step_id))
        return len(lifts)

    def _lift_below(self, ladder: str) -> int:
        """The threshold of the ladder a step came from (the default's if the file lost it since)."""
        return self.rules.ladders.get(ladder, self.rules.ladder_for(None)).lift_below_micros

    async def _apply_lift(self, lift: DunningStep) -> None:
        async with self.engine.connect() as connection:
            last = await records.last_lifecycle_step(connection, lift.target_kind, lift.target_id)
        status = await self._own_status(lift.target_kind, lift.target_id)
        if not _is_dunnings(last) or status not in ("suspended", "barred", "active"):
            outcome = f"superseded: {status} set by {last.author if last is not None else 'nobody'}; not lifted"
        else:
            reason = f"dunning lifted: {format_money(lift.overdue_micros)} overdue after payment"
            outcome = await self._set_status(lift, TargetStatus.ACTIVE, reason)
            outcome = "applied" if outcome == "unchanged" else outcome  # lifted with another step's lift
        await records.finish_step(self.engine, lift.step_id, outcome, self._now())
        log.info("dunning_lifted", billing_account_id=lift.billing_account_id, outcome=outcome)

    async def _lift_pass(self, day: date) -> int:
        """Lift what a payment should have lifted when its listener did not run (a crash)."""
        lifted = 0
        after = ""
        while True:
            async with self.engine.connect() as connection:
                accounts = await records.enforcing_accounts(connection, after, self.page_size)
            if not accounts:
                return lifted
            after = accounts[-1]
            for account in accounts:
                async with self.engine.connect() as connection:
                    overdue = await overdue_in(connection, account, day)
                lifted += await self.lift(account, overdue.amount_micros, day)

    # -- promises and exemptions ----------------------------------------------------------------

    async def promise(self, billing_account_id: str, new: NewPromiseToPay, author: str) -> tuple[PromiseToPay, bool]:
        """A promise to pay, once per ``promise_id`` (``True`` when recorded now)."""
        now = self._now()
        promise_id = new.promise_id or made_id("PTP")
        row = {
            "promise_id": promise_id,
            "billing_account_id": billing_account_id,
            "amount_micros": new.amount_micros,
            "promised_date": new.promised_date,
            "reason": new.reason,
            "author": author,
            "created_at": utc_naive(now),
        }
        async with self.engine.begin() as connection:
            await self._check_account(connection, billing_account_id)
            found = (
                await connection.execute(promises_to_pay.select().where(promises_to_pay.c.promise_id == promise_id))
            ).first()
            if found is not None:
                same = (found.billing_account_id, found.amount_micros, found.promised_date) == (
                    billing_account_id,
                    new.amount_micros,
                    new.promised_date,
                )
                if not same:
                    raise CustomerRefusal(Problem.CONFLICT, "promise_id", f"{promise_id!r} is another promise")
                return records.promise_of(found), False
            if new.promised_date < now.date():
                raise CustomerRefusal(Problem.REFUSED, "promised_date", "is in the past")
            await connection.execute(insert(promises_to_pay).values(**row))
        return PromiseToPay.model_validate({**row, "created_at": now}), True

    @staticmethod
    async def _check_account(connection: Any, billing_account_id: str) -> None:
        found = await connection.execute(
            billing_accounts.select().where(billing_accounts.c.billing_account_id == billing_account_id)
        )
        if found.first() is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "billing_account_id", f"no billing account {billing_account_id!r}")

    async def exempt(self, customer_id: str, reason: str, author: str) -> Exemption:
        """The customer never dunned from now on (until ``unexempt``); asking again keeps the first."""
        now = self._now()
        async with self.engine.begin() as connection:
            customer = await connection.execute(customers.select().where(customers.c.customer_id == customer_id))
            if customer.first() is None:
                raise CustomerRefusal(Problem.NOT_FOUND, "customer_id", f"no customer {customer_id!r}")
            query = dunning_exemptions.select().where(dunning_exemptions.c.customer_id == customer_id)
            found = (await connection.execute(query)).first()
            if found is None:
                row = {"customer_id": customer_id, "reason": reason, "author": author, "created_at": utc_naive(now)}
                await connection.execute(insert(dunning_exemptions).values(**row))
                found = (await connection.execute(query)).one()
        return Exemption(
            customer_id=found.customer_id,
            reason=found.reason,
            author=found.author,
            created_at=found.created_at.replace(tzinfo=UTC),
        )

    async def unexempt(self, customer_id: str) -> bool:
        async with self.engine.begin() as connection:
            done = await connection.execute(
                dunning_exemptions.delete().where(dunning_exemptions.c.customer_id == customer_id)
            )
        return bool(done.rowcount)

    async def history(self, billing_account_id: str) -> records.DunningHistory:
        found = await records.history(self.engine, billing_account_id)
        if found is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "billing_account_id", f"no billing account {billing_account_id!r}")
        return found


def _is_dunnings(last: Any) -> bool:
    """Whether a lifecycle step (a row of ``lifecycle_steps``) was made by dunning."""
    return last is not None and last.author == AUTHOR and last.reason_category == ReasonCategory.COLLECTIONS.value
