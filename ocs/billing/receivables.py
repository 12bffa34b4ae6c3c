"""What billing accounts owe: overdue amounts for dunning, the open balance, the receivables aging
report, and the ledger check the audit runs.

Theory of operation: an invoice's ``remaining_micros`` is what is left to pay of it; open disputes
hold part of it out of collection. ``overdue`` is, for the invoices due before ``as_of``, what is
left and not held, with the oldest such due date: the dunning run asks it, and a payment reports it
before and after (``ocs.billing.payments``). The open balance is invoices - payments - credit
notes + refunds, which the stored amounts give as remaining - account credit. The aging report
puts every open invoice's unheld remainder in a bucket by days past due at ``as_of`` (0 or less:
current; 1-30; 31-60; 61-90; over 90) and the held amounts apart; invoices issued after ``as_of``
are left out; amounts are today's (payments recorded after ``as_of`` are not undone).

``ledger_check`` ties the stored rows out (issue 14 "One ledger"), per billing account: every
invoice's total = its allocations + its credit notes + its remaining amount, with the remaining
amount never below zero nor below what open disputes hold; every payment's allocations + its
unallocated money never above its amount, and allocations only to invoices of the payment's own
account; the account's payments - refunds = allocations + credit. It answers the problems found
(empty: the ledger is whole), each naming the account and the row.
"""

from __future__ import annotations

from datetime import date, datetime, time
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.billing.allocation import held_by_disputes
from ocs.billing.values import AccountAging, AgingBuckets, Overdue, ReceivablesReport
from ocs.db.billing import credit_notes, disputes, invoices, payment_allocations, payments, refunds
from ocs.db.customers import billing_accounts

AGING_BUCKETS = ((0, "current_micros"), (30, "days_1_30_micros"), (60, "days_31_60_micros"), (90, "days_61_90_micros"))


def aging_bucket(days_past_due: int) -> str:
    """The ``AgingBuckets`` field for an amount ``days_past_due`` days past its due date."""
    for most, field in AGING_BUCKETS:
        if days_past_due <= most:
            return field
    return "days_over_90_micros"


async def overdue_in(connection: AsyncConnection, billing_account_id: str, as_of: date) -> Overdue:
    query = (
        select(invoices.c.invoice_id, invoices.c.due_date, invoices.c.remaining_micros)
        .where(
            and_(
                invoices.c.billing_account_id == billing_account_id,
                invoices.c.remaining_micros > 0,
                invoices.c.due_date < as_of,
            )
        )
        .order_by(invoices.c.due_date)
    )
    rows = (await connection.execute(query)).all()
    held = await held_by_disputes(connection, [row.invoice_id for row in rows])
    owed = [(row.due_date, int(row.remaining_micros) - held.get(row.invoice_id, 0)) for row in rows]
    owed = [(due, amount) for due, amount in owed if amount > 0]
    return Overdue(amount_micros=sum(amount for _, amount in owed), oldest_due_date=owed[0][0] if owed else None)


async def _sums(connection: AsyncConnection, column: Any, key: Any) -> dict[str, int]:
    query = select(key, func.sum(column)).group_by(key)
    return {row[0]: int(row[1]) for row in (await connection.execute(query)).all()}


class Receivables:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def overdue(self, billing_account_id: str, as_of: date) -> Overdue:
        """What the account owes past due at ``as_of``, disputed amounts held out."""
        async with self.engine.connect() as connection:
            return await overdue_in(connection, billing_account_id, as_of)

    async def open_balance(self, billing_account_id: str) -> int:
        """Invoices - payments - credit notes + refunds, in micros (negative: the account is in credit)."""
        async with self.engine.connect() as connection:
            remaining = await connection.execute(
                select(func.coalesce(func.sum(invoices.c.remaining_micros), 0)).where(
                    invoices.c.billing_account_id == billing_account_id
                )
            )
            credit = await connection.execute(
                select(func.coalesce(func.sum(payments.c.unallocated_micros), 0)).where(
                    payments.c.billing_account_id == billing_account_id
                )
            )
            return int(remaining.scalar_one()) - int(credit.scalar_one())

    async def aging(self, as_of: date) -> ReceivablesReport:
        issued_by = datetime.combine(as_of, time.max)
        async with self.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(invoices.c.invoice_id, invoices.c.billing_account_id, invoices.c.currency)
                    .add_columns(invoices.c.due_date, invoices.c.remaining_micros)
                    .where(and_(invoices.c.remaining_micros > 0, invoices.c.issued_at <= issued_by))
                    .order_by(invoices.c.billing_account_id, invoices.c.due_date)
                )
            ).all()
            held = await held_by_disputes(connection, [row.invoice_id for row in rows])
            credit = await _sums(connection, payments.c.unallocated_micros, payments.c.billing_account_id)
            currencies = {
                row.billing_account_id: row.currency
                for row in (
                    await connection.execute(select(billing_accounts.c.billing_account_id, billing_accounts.c.currency))
                ).all()
            }
        buckets: dict[str, dict[str, int]] = {}
        for row in rows:
            account = buckets.setdefault(row.billing_account_id, {})
            on_hold = held.get(row.invoice_id, 0)
            field = aging_bucket((as_of - row.due_date).days)
            account[field] = account.get(field, 0) + int(row.remaining_micros) - on_hold
            account["disputed_micros"] = account.get("disputed_micros", 0) + on_hold
        accounts = [
            AccountAging(
                billing_account_id=account_id,
                currency=currencies.get(account_id, ""),
                buckets=AgingBuckets(**amounts),
                open_balance_micros=sum(amounts.values()) - credit.get(account_id, 0),
                credit_micros=credit.get(account_id, 0),
            )
            for account_id, amounts in sorted(buckets.items())
        ]
        totals: dict[str, dict[str, int]] = {}
        for aged in accounts:
            total = totals.setdefault(aged.currency, {})
            for field, amount in aged.buckets.model_dump().items():
                total[field] = total.get(field, 0) + amount
        return ReceivablesReport(
            as_of=as_of,
            accounts=accounts,
            totals={currency: AgingBuckets(**amounts) for currency, amounts in sorted(totals.items())},
        )

    async def ledger_check(self) -> list[str]:
        """The ledger's problems, per account and row (empty: it ties out)."""
        async with self.engine.connect() as connection:
            return await ledger_problems(connection)


async def ledger_problems(connection: AsyncConnection) -> list[str]:
    allocated = await _sums(connection, payment_allocations.c.amount_micros, payment_allocations.c.invoice_id)
    credited = await _sums(connection, credit_notes.c.amount_micros, credit_notes.c.invoice_id)
    held = await _open_holds(connection)
    problems: list[str] = []
    account_of: dict[str, str] = {}
    for row in (await connection.execute(select(invoices).order_by(invoices.c.invoice_id))).all():
        account_of[row.invoice_id] = row.billing_account_id
        paid, credit, left = allocated.get(row.invoice_id, 0), credited.get(row.invoice_id, 0), row.remaining_micros
        where = f"billing account {row.billing_account_id}, invoice {row.invoice_id}"
        if paid + credit + left != row.total_micros:
            problems.append(
                f"{where}: total {row.total_micros} != allocations {paid} + credit notes {credit} + remaining {left}"
            )
        if left < 0:
            problems.append(f"{where}: remaining {left} is below zero")
        if held.get(row.invoice_id, 0) > max(left, 0):
            problems.append(f"{where}: open disputes hold {held[row.invoice_id]}, more than the remaining {left}")
    problems.extend(await _payment_problems(connection, account_of))
    return problems


async def _open_holds(connection: AsyncConnection) -> dict[str, int]:
    query = (
        select(disputes.c.invoice_id, func.sum(disputes.c.amount_micros))
        .where(disputes.c.state == "open")
        .group_by(disputes.c.invoice_id)
    )
    return {row[0]: int(row[1]) for row in (await connection.execute(query)).all()}


async def _payment_problems(connection: AsyncConnection, account_of: dict[str, str]) -> list[str]:
    problems: list[str] = []
    by_payment: dict[str, int] = {}
    by_account: dict[str, int] = {}
    for row in (
        await connection.execute(
            select(payment_allocations, payments.c.billing_account_id).join(
                payments, payments.c.payment_id == payment_allocations.c.payment_id
            )
        )
    ).all():
        by_payment[row.payment_id] = by_payment.get(row.payment_id, 0) + int(row.amount_micros)
        by_account[row.billing_account_id] = by_account.get(row.billing_account_id, 0) + int(row.amount_micros)
        if account_of.get(row.invoice_id) != row.billing_account_id:
            problems.append(
                f"billing account {row.billing_account_id}, payment {row.payment_id}: allocated to invoice "
                f"{row.invoice_id} of another account"
            )
    paid: dict[str, int] = {}
    unallocated: dict[str, int] = {}
    for row in (await connection.execute(select(payments).order_by(payments.c.payment_id))).all():
        used = by_payment.get(row.payment_id, 0)
        if row.unallocated_micros < 0 or used + row.unallocated_micros > row.amount_micros:
            problems.append(
                f"billing account {row.billing_account_id}, payment {row.payment_id}: allocations {used} + "
                f"unallocated {row.unallocated_micros} exceed its amount {row.amount_micros}"
            )
        paid[row.billing_account_id] = paid.get(row.billing_account_id, 0) + int(row.amount_micros)
        unallocated[row.billing_account_id] = unallocated.get(row.billing_account_id, 0) + int(row.unallocated_micros)
    refunded = await _sums(connection, refunds.c.amount_micros, refunds.c.billing_account_id)
    for account in sorted(set(paid) | set(refunded) | set(by_account)):
        net = paid.get(account, 0) - refunded.get(account, 0)
        used = by_account.get(account, 0) + unallocated.get(account, 0)
        if net != used:
            problems.append(f"billing account {account}: payments - refunds {net} != allocations + credit {used}")
    return problems
