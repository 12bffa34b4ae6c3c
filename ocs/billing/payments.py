"""Payments and refunds of a billing account: recorded once per reference, allocated oldest first.

Theory of operation: ``record_payment`` is idempotent by (billing account, reference): the
reference is the bank's or the client's key for the money. A reference seen before with the same
amount is a replay, answered with the first payment and nothing written; with another amount it is
a conflict (409 naming ``reference``), never a second payment. A new payment is inserted whole as
unallocated money and the account's one allocation rule runs (``ocs.billing.allocation``): the
oldest open invoices first (by due date, then number), each only up to what open disputes do not
hold; what is left stays on the payment as account credit, which the next invoice issued uses.
All of it runs under the account's lock in one transaction: a refusal or a crash applies nothing.

The outcome says what the payment changed for dunning (DESIGN.md "a payment of what is overdue
lifts it at once"): the allocations made, the invoices it settled, and the account's overdue
amount before and after (``ocs.billing.receivables.overdue``), measured on the payment's day
(``payment_day``: the day the bank received it, ``received_at``, when the payment says, else
today by the service's clock; the dunning run takes its day from the same billing calendar, so
a lift is decided and recorded on the calendar's date, never on the host's); the dunning lift
reads it (``as_of`` is that day), and
``on_payment`` subscribers (the dunning lift, ``ocs.billing.dunning``) are called with it after
commit; one that returns an awaitable is awaited before the payment is answered, so a lift has
reached the network when the caller hears of the payment.

A refund pays account credit back to the customer: idempotent by its reference as a payment is,
never more than the credit (422 naming ``amount_micros``); it takes the credit from the oldest
payments first.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

import structlog
from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.billing.allocation import apply_credit, lock_account
from ocs.billing.receivables import overdue_in
from ocs.billing.values import (
    Allocation,
    BillState,
    NewPayment,
    NewRefund,
    Payment,
    PaymentList,
    PaymentOutcome,
    PaymentSource,
    Refund,
)
from ocs.customers.service import CustomerRefusal, Problem, made_id
from ocs.db.billing import invoices, payment_allocations, payments, refunds
from ocs.db.schema import utc_aware, utc_naive

log = structlog.get_logger("ocs.billing.payments")

MAX_LIST_ROWS = 1_000
PaymentListener = Callable[[PaymentOutcome], Awaitable[None] | None]  # awaited when it returns an awaitable


async def _payment(connection: AsyncConnection, row: dict[str, Any]) -> Payment:
    query = (
        select(payment_allocations.c.invoice_id, invoices.c.number, func.sum(payment_allocations.c.amount_micros))
        .join(invoices, invoices.c.invoice_id == payment_allocations.c.invoice_id)
        .where(payment_allocations.c.payment_id == row["payment_id"])
        .group_by(payment_allocations.c.invoice_id, invoices.c.number)
        .order_by(invoices.c.number)
    )
    allocations = [
        Allocation(invoice_id=found[0], bill_no=found[1], amount_micros=int(found[2]))
        for found in (await connection.execute(query)).all()
    ]
    return Payment(
        payment_id=row["payment_id"],
        billing_account_id=row["billing_account_id"],
        reference=row["reference"],
        amount_micros=row["amount_micros"],
        unallocated_micros=row["unallocated_micros"],
        method=row["method"],
        source=PaymentSource(row["source"]),
        received_at=utc_aware(row["received_at"]),
        recorded_by=row["recorded_by"],
        allocations=allocations,
    )


async def _by_reference(connection: AsyncConnection, table: Any, billing_account_id: str, reference: str) -> Any:
    query = select(table).where(and_(table.c.billing_account_id == billing_account_id, table.c.reference == reference))
    return (await connection.execute(query)).first()


def _replay_or_conflict(found: Any, amount_micros: int, kind: str) -> None:
    if found.amount_micros != amount_micros:
        raise CustomerRefusal(
            Problem.CONFLICT,
            "reference",
            f"{found.reference!r} is already the {kind} of {found.amount_micros} micros; a reference is used once",
        )


def payment_day(new: NewPayment, now: datetime) -> date:
    """The day a payment counts on (module docstring): when the bank received it, else today."""
    return (new.received_at or now).astimezone(UTC).date()


class Payments:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], float] = time.time,
        on_payment: tuple[PaymentListener, ...] = (),
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.on_payment = on_payment

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def record_payment(self, new: NewPayment, author: str) -> PaymentOutcome:
        """The payment, once per reference, allocated (see the module docstring)."""
        now = self._now()
        async with self.engine.begin() as connection:
            outcome = await self._record(connection, new, author, now, payment_day(new, now))
        if not outcome.replayed:
            log.info(
                "payment_recorded",
                billing_account_id=new.billing_account_id,
                amount_micros=new.amount_micros,
                settled=len(outcome.settled_invoices),
            )
            for listener in self.on_payment:
                try:
                    reaction = listener(outcome)
                    if inspect.isawaitable(reaction):  # the dunning lift: done before the payment is answered
                        await reaction
                except Exception:  # one subscriber's failure is not the payment's
                    log.exception("payment_listener_failed", billing_account_id=new.billing_account_id)
        return outcome

    async def _record(
        self, connection: AsyncConnection, new: NewPayment, author: str, now: datetime, today: date
    ) -> PaymentOutcome:
        await lock_account(connection, new.billing_account_id, "billing_account_id")
        found = await _by_reference(connection, payments, new.billing_account_id, new.reference)
        if found is not None:
            _replay_or_conflict(found, new.amount_micros, "payment")
            payment = await _payment(connection, dict(found._mapping))
            overdue = (await overdue_in(connection, new.billing_account_id, today)).amount_micros
            return PaymentOutcome(
                payment=payment,
                replayed=True,
                allocated_now=[],
                settled_invoices=[],
                overdue_before_micros=overdue,
                overdue_after_micros=overdue,
                as_of=today,
            )
        before = (await overdue_in(connection, new.billing_account_id, today)).amount_micros
        row = {
            "payment_id": made_id("PAY"),
            "billing_account_id": new.billing_account_id,
            "reference": new.reference,
            "amount_micros": new.amount_micros,
            "unallocated_micros": new.amount_micros,
            "method": new.method,
            "source": new.source.value,
            "received_at": utc_naive(new.received_at or now),
            "recorded_by": author,
            "recorded_at": utc_naive(now),
        }
        await connection.execute(insert(payments).values(**row))
        allocated = await apply_credit(connection, new.billing_account_id, now)
        settled = await _settled(connection, [allocation.invoice_id for allocation in allocated])
        after = (await overdue_in(connection, new.billing_account_id, today)).amount_micros
        stored = (await connection.execute(select(payments).where(payments.c.payment_id == row["payment_id"]))).one()
        return PaymentOutcome(
            payment=await _payment(connection, dict(stored._mapping)),
            replayed=False,
            allocated_now=allocated,
            settled_invoices=settled,
            overdue_before_micros=before,
            overdue_after_micros=after,
            as_of=today,
        )

    async def payments(self, *, billing_account_id: str | None, limit: int, offset: int) -> PaymentList:
        query = select(payments)
        if billing_account_id is not None:
            query = query.where(payments.c.billing_account_id == billing_account_id)
        query = query.order_by(payments.c.received_at, payments.c.payment_id).limit(limit).offset(offset)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
            return PaymentList(payments=[await _payment(connection, dict(row._mapping)) for row in rows])

    async def refund(self, billing_account_id: str, new: NewRefund, author: str) -> tuple[Refund, bool]:
        """Account credit paid back (``True`` when recorded now, ``False`` for a replay)."""
        now = self._now()
        async with self.engine.begin() as connection:
            await lock_account(connection, billing_account_id, "billing_account_id")
            found = await _by_reference(connection, refunds, billing_account_id, new.reference)
            if found is not None:
                _replay_or_conflict(found, new.amount_micros, "refund")
                return _refund(dict(found._mapping)), False
            await _take_credit(connection, billing_account_id, new.amount_micros)
            row = {
                "refund_id": made_id("REF"),
                "billing_account_id": billing_account_id,
                "reference": new.reference,
                "amount_micros": new.amount_micros,
                "reason": new.reason,
                "author": author,
                "created_at": utc_naive(now),
            }
            await connection.execute(insert(refunds).values(**row))
        return _refund(row), True


def _refund(row: dict[str, Any]) -> Refund:
    return Refund.model_validate({**row, "created_at": utc_aware(row["created_at"])})


async def _settled(connection: AsyncConnection, invoice_ids: list[str]) -> list[str]:
    if not invoice_ids:
        return []
    query = select(invoices.c.invoice_id).where(
        and_(invoices.c.invoice_id.in_(invoice_ids), invoices.c.state == BillState.SETTLED.value)
    )
    return sorted((await connection.execute(query)).scalars().all())


async def _take_credit(connection: AsyncConnection, billing_account_id: str, amount_micros: int) -> None:
    """``amount_micros`` of the account's credit taken from its oldest payments; 422 when short."""
    query = (
        select(payments.c.payment_id, payments.c.unallocated_micros)
        .where(and_(payments.c.billing_account_id == billing_account_id, payments.c.unallocated_micros > 0))
        .order_by(payments.c.received_at, payments.c.recorded_at, payments.c.payment_id)
    )
    funds = (await connection.execute(query)).all()
    credit = sum(int(fund.unallocated_micros) for fund in funds)
    if amount_micros > credit:
        raise CustomerRefusal(Problem.REFUSED, "amount_micros", f"more than the account's credit ({credit} micros)")
    left = amount_micros
    for fund in funds:
        taken = min(left, int(fund.unallocated_micros))
        if taken == 0:
            break
        await connection.execute(
            update(payments)
            .where(payments.c.payment_id == fund.payment_id)
            .values(unallocated_micros=payments.c.unallocated_micros - taken)
        )
        left -= taken
