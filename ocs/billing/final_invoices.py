"""Final invoices: what a terminated billing account owes up to its termination, billed once.

Theory of operation: dunning's terminate step writes a ``final_invoice_requested`` event to the
delivery outbox (``ocs.billing.dunning``), naming the billing account and the termination date
(the dunning run's, so the billing calendar's). At the end of every bill run
(``bill_final_invoices``), each such event not yet acknowledged is consumed, oldest first:

1. unless the cycle that holds the termination date was invoiced already (a regular run got
   there first: that invoice is the final one, its lines prorated by the same spans), the final
   invoice is drafted as any invoice of that cycle (``ocs.billing.bill_draft``) with every line's
   service ending at the termination date at the latest (rentals prorated to it against the
   whole cycle, no bundle renewed or charged for a cycle the account leaves), with every
   unbilled usage record of its postpaid lines up to the end of the run's day, and the pending
   adjustments; its period runs from the cycle's start to the termination date. It is committed
   and cut in Redis as the bill run commits and cuts a page (``BillRun.commit_final``): the
   records marked billed in the invoice's transaction, a regular run of that cycle later finds it
   invoiced (``(billing account, period start)`` is unique) and bills nothing twice;
2. one transaction acknowledges the event (only if still unacknowledged, so two runs consume it
   once) and credits the customer's held deposit back (``ocs.billing.deposits.credit_held``):
   allocated to the oldest open bills, the final invoice among them. A crash between 1 and 2
   leaves the event, and the next run finds the cycle invoiced and does step 2 only.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import PaymentType
from ocs.billing.bill_draft import AccountFacts, LineFacts, draft_invoice
from ocs.billing.bill_facts import PayingAccount, invoiced_periods, lines_of, pending_adjustments_of
from ocs.billing.catalog import Catalog
from ocs.billing.cycles import Period, cycle_containing
from ocs.billing.deposits import credit_held
from ocs.billing.dunning import FINAL_INVOICE_REQUESTED
from ocs.billing.values import InvoiceDraft
from ocs.db.billing import delivery_outbox
from ocs.db.customers import billing_accounts
from ocs.db.schema import utc_naive
from ocs.db.usage import unbilled_usage

EVENTS_PER_PASS = 100


class FinalBiller(Protocol):
    """What the final invoices need of the bill run (``ocs.billing.bill_run.BillRun``), whose
    report (``BillRunReport``) counts them in ``final_invoices``."""

    engine: AsyncEngine
    catalog: Catalog
    legal_entity: str
    payment_days: int

    def _now(self) -> datetime: ...

    async def commit_final(
        self, draft: InvoiceDraft, facts: AccountFacts, account: PayingAccount, cycle: Period, report: Any
    ) -> None: ...


async def bill_final_invoices(run: FinalBiller, day: date, report: Any) -> None:
    """Every final invoice asked for and not yet made (the module docstring)."""
    after = 0
    while True:
        async with run.engine.connect() as connection:
            events = (
                await connection.execute(
                    select(delivery_outbox.c.event_id, delivery_outbox.c.payload, delivery_outbox.c.created_at)
                    .where(
                        delivery_outbox.c.kind == FINAL_INVOICE_REQUESTED,
                        delivery_outbox.c.delivered_at.is_(None),
                        delivery_outbox.c.event_id > after,
                    )
                    .order_by(delivery_outbox.c.event_id)
                    .limit(EVENTS_PER_PASS)
                )
            ).all()
        if not events:
            return
        after = events[-1].event_id
        for event in events:
            terminated = _termination_day(event.payload, event.created_at.date())
            await _final_invoice(run, str(event.payload.get("billing_account_id")), terminated, day, report)
            await _acknowledge(run, event.event_id, str(event.payload.get("billing_account_id")))


def _termination_day(payload: dict[str, Any], fallback: date) -> date:
    found = payload.get("termination_date")
    return date.fromisoformat(found) if isinstance(found, str) else fallback


async def _final_invoice(run: FinalBiller, account_id: str, terminated: date, day: date, report: Any) -> None:
    """Step 1 of the module docstring for one billing account."""
    async with run.engine.connect() as connection:
        row = (
            await connection.execute(
                select(billing_accounts).where(
                    billing_accounts.c.billing_account_id == account_id, billing_accounts.c.paid_by_parent.is_(False)
                )
            )
        ).first()
        if row is None:
            return  # no such account, or its parent pays: the parent's invoices bill its lines
        account = PayingAccount(row.billing_account_id, row.customer_id, row.node_id, row.bill_cycle_day)
        cycle = cycle_containing(account.bill_cycle_day, terminated)
        if (account_id, cycle.start) in await invoiced_periods(connection, [account_id]):
            return
        ended = [_ended_by(line, terminated) for line in (await lines_of(connection, [account])).get(account_id, [])]
        postpaid = [line.line_id for line in ended if line.payment_type is PaymentType.POSTPAID]
        end_of_day = day + timedelta(days=1)
        usage = await unbilled_usage(connection, postpaid, int(datetime.combine(end_of_day, time(), UTC).timestamp()))
        adjustments = (await pending_adjustments_of(connection, [account_id])).get(account_id, [])
    facts = AccountFacts(account_id, run.legal_entity, None, tuple(ended), usage, tuple(adjustments))
    last_day = max(cycle.start, terminated)
    drafted_due = cycle.end + timedelta(days=run.payment_days)  # the draft's rule, for the whole cycle
    made = draft_invoice(run.catalog, facts, cycle, drafted_due, f"catalog@{cycle.start.isoformat()}")
    if made is None:
        return
    due = last_day + timedelta(days=run.payment_days)
    final = made.model_copy(update={"period_end": last_day, "due_date": due})
    await run.commit_final(final, facts, account, cycle, report)
    report.final_invoices += 1


def _ended_by(line: LineFacts, terminated: date) -> LineFacts:
    """The line out of service from the account's termination day on, at the latest."""
    if line.terminated_on is not None and line.terminated_on <= terminated:
        return line
    return dataclasses.replace(line, terminated_on=max(terminated, line.activated_on))


async def _acknowledge(run: FinalBiller, event_id: int, account_id: str) -> None:
    """Step 2 of the module docstring: the event consumed once, the held deposit credited with it."""
    now = run._now()
    async with run.engine.begin() as connection:
        taken = await connection.execute(
            update(delivery_outbox)
            .where(delivery_outbox.c.event_id == event_id, delivery_outbox.c.delivered_at.is_(None))
            .values(delivered_at=utc_naive(now))
        )
        if taken.rowcount == 1:
            await credit_held(connection, account_id, now)
