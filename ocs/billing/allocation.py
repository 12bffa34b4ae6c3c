"""What every money step of a billing account does inside its transaction: take the account's
lock, draw gapless numbers, and apply the account's credit to its open invoices.

Theory of operation: every step that changes what an account owes or holds (issuing an invoice,
recording a payment, a credit note, a dispute's end, a refund) starts with ``lock_account``: a
no-op UPDATE of the account's ``billing_accounts`` row. On PostgreSQL that takes the row's lock
until commit; on SQLite the first write of a transaction takes the database's writer lock. Either
way two steps on one account run one after the other, so an allocation is never decided on a
stale remaining amount and an account's credit is never spent twice.

``next_sequence`` moves a series' counter (``number_series``) in the caller's transaction: the
UPDATE takes the counter row's lock (PostgreSQL) or the writer lock (SQLite), so concurrent
issuers queue, each gets the next number, and a rollback gives its number back: the series stays
gapless. A series' row is made on first use by an insert that ignores a concurrent twin.

``apply_credit`` is the one allocation rule (DESIGN.md "Payments allocated oldest first"): money
not yet allocated (``payments.unallocated_micros``, oldest payment first) pays the open invoices
in order of due date, then number, each only up to what open disputes do not hold. A payment runs
it after its insert, an issue after its invoice (the credit of an earlier overpayment pays the new
bill: an allocation at issue time), a rejected dispute after its release.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ocs.billing.values import Allocation, BillState
from ocs.customers.service import CustomerRefusal, Problem
from ocs.db.billing import disputes, invoices, number_series, payment_allocations, payments
from ocs.db.customers import billing_accounts
from ocs.db.schema import utc_naive

SEQUENCE_DIGITS = 8  # "main-00000042": numbers sort as text within a series


async def lock_account(connection: AsyncConnection, billing_account_id: str, field: str) -> dict[str, Any]:
    """The account's row, locked until the transaction ends; 404 naming ``field`` when unknown."""
    key = billing_accounts.c.billing_account_id == billing_account_id
    touched = await connection.execute(update(billing_accounts).where(key).values(currency=billing_accounts.c.currency))
    if not touched.rowcount:
        raise CustomerRefusal(Problem.NOT_FOUND, field, f"no billing account {billing_account_id!r}")
    row = (await connection.execute(select(billing_accounts).where(key))).one()
    return dict(row._mapping)


async def next_sequence(connection: AsyncConnection, series: str, count: int = 1) -> int:
    """The series' next number, taken in the caller's transaction (given back by its rollback);
    with ``count``, a block of that many consecutive numbers, of which the last is answered."""
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    first_use = dialect.insert(number_series).values(series=series, last_sequence=0).on_conflict_do_nothing()
    await connection.execute(first_use)
    moved = await connection.execute(
        update(number_series)
        .where(number_series.c.series == series)
        .values(last_sequence=number_series.c.last_sequence + count)
        .returning(number_series.c.last_sequence)
    )
    return int(moved.scalar_one())


def document_number(series: str, sequence: int) -> str:
    return f"{series.replace('/', '-')}-{sequence:0{SEQUENCE_DIGITS}d}"


def bill_state(total_micros: int, remaining_micros: int) -> BillState:
    if remaining_micros == 0:
        return BillState.SETTLED
    return BillState.PARTIALLY_PAID if remaining_micros < total_micros else BillState.SENT


async def held_by_disputes(connection: AsyncConnection, invoice_ids: list[str]) -> dict[str, int]:
    """Per invoice, the amount its open disputes hold."""
    if not invoice_ids:
        return {}
    query = (
        select(disputes.c.invoice_id, func.sum(disputes.c.amount_micros))
        .where(and_(disputes.c.invoice_id.in_(invoice_ids), disputes.c.state == "open"))
        .group_by(disputes.c.invoice_id)
    )
    return {row[0]: int(row[1]) for row in (await connection.execute(query)).all()}


async def reduce_remaining(connection: AsyncConnection, invoice: dict[str, Any], amount_micros: int) -> None:
    """The invoice's remaining amount less ``amount_micros``, and its state from the result."""
    remaining = int(invoice["remaining_micros"]) - amount_micros
    assert remaining >= 0, "an invoice is never paid or credited beyond its total"
    state = bill_state(int(invoice["total_micros"]), remaining).value
    await connection.execute(
        update(invoices)
        .where(invoices.c.invoice_id == invoice["invoice_id"])
        .values(remaining_micros=remaining, state=state)
    )
    invoice["remaining_micros"] = remaining


async def open_invoices(connection: AsyncConnection, billing_account_id: str) -> list[dict[str, Any]]:
    """The account's invoices with something left to pay, oldest due first (then by number)."""
    query = (
        select(invoices)
        .where(and_(invoices.c.billing_account_id == billing_account_id, invoices.c.remaining_micros > 0))
        .order_by(invoices.c.due_date, invoices.c.legal_entity, invoices.c.sequence)
    )
    return [dict(row._mapping) for row in (await connection.execute(query)).all()]


async def apply_credit(connection: AsyncConnection, billing_account_id: str, now: datetime) -> list[Allocation]:
    """The account's unallocated money allocated to its open invoices (the lock is held)."""
    funds = [
        dict(row._mapping)
        for row in (
            await connection.execute(
                select(payments.c.payment_id, payments.c.unallocated_micros)
                .where(and_(payments.c.billing_account_id == billing_account_id, payments.c.unallocated_micros > 0))
                .order_by(payments.c.received_at, payments.c.recorded_at, payments.c.payment_id)
            )
        ).all()
    ]
    if not funds:
        return []
    for fund in funds:
        fund["was_micros"] = fund["unallocated_micros"]
    bills = await open_invoices(connection, billing_account_id)
    held = await held_by_disputes(connection, [bill["invoice_id"] for bill in bills])
    made: dict[str, Allocation] = {}
    for bill in bills:
        payable = int(bill["remaining_micros"]) - held.get(bill["invoice_id"], 0)
        for fund in funds:
            amount = min(payable, int(fund["unallocated_micros"]))
            if amount <= 0:
                continue
            await connection.execute(
                insert(payment_allocations).values(
                    payment_id=fund["payment_id"],
                    invoice_id=bill["invoice_id"],
                    amount_micros=amount,
                    allocated_at=utc_naive(now),
                )
            )
            fund["unallocated_micros"] = int(fund["unallocated_micros"]) - amount
            payable -= amount
            await reduce_remaining(connection, bill, amount)
            before = made.get(bill["invoice_id"])
            total = amount + (before.amount_micros if before is not None else 0)
            made[bill["invoice_id"]] = Allocation(
                invoice_id=bill["invoice_id"], bill_no=bill["number"], amount_micros=total
            )
    for fund in funds:
        if fund["unallocated_micros"] == fund["was_micros"]:
            continue
        await connection.execute(
            update(payments)
            .where(payments.c.payment_id == fund["payment_id"])
            .values(unallocated_micros=fund["unallocated_micros"])
        )
    return list(made.values())
