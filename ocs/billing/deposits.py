"""Deposits a credit class asks for: invoiced once by the bill run, held, and credited back at
termination.

Theory of operation: the customer wing records a deposit as ``pending`` in ``deposits`` (one per
customer and credit class, ``ocs.db.orders``) when a customer gets its first postpaid line under
a class that asks for one. The customer's own billing account (the one without a node) pays it:
the bill run reads the account's pending deposits (``pending_deposits_of``) into its facts, and
the invoice of the next cycle it bills carries each as a line of its own (kind ``deposit``,
"Deposit", not taxed: a deposit is a security, not a supply). The invoice's transaction marks
the deposit ``invoiced`` with the invoice's id (``mark_invoiced``), only while it is still
``pending``: a rerun or a concurrent run finds it invoiced and charges it never again.

Once invoiced, the deposit is *held*: it is not account credit that pays the next bills (it would
be gone in the first month), it stays with the operator while the customer has service. At the
customer's termination the final invoice's transaction credits it back (``credit_held``): one
payment of source ``deposit`` (reference ``deposit-<id>``) for its amount, allocated like any
payment to the oldest open bills (the final invoice among them), the rest account credit that a
refund pays out; the deposit becomes ``credited``. That is right whether or not the customer paid
the deposit's invoice: unpaid, the credit pays it back off, and the customer owes exactly the
charges. A deposit still ``pending`` at termination was never charged and is ``cancelled``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ocs.billing.allocation import apply_credit
from ocs.billing.values import DraftLine, LineKind, PaymentSource
from ocs.customers.service import CustomerRefusal, Problem, made_id
from ocs.db.billing import payments
from ocs.db.customers import billing_accounts
from ocs.db.orders import deposits
from ocs.db.schema import utc_naive

PENDING, INVOICED, CREDITED, CANCELLED = "pending", "invoiced", "credited", "cancelled"
DEPOSIT_AUTHOR = "billing"


@dataclass(frozen=True, slots=True)
class PendingDeposit:
    deposit_id: int
    amount_micros: int
    credit_class: str


def deposit_lines(pending: Sequence[PendingDeposit]) -> list[DraftLine]:
    """One untaxed "Deposit" line per pending deposit (valid by construction, as a draft's lines)."""
    return [
        DraftLine.model_construct(
            kind=LineKind.DEPOSIT,
            description=f"Deposit (credit class {item.credit_class})",
            amount_micros=item.amount_micros,
            tax_micros=0,
            node_id=None,
            line_id=None,
            explanation={"deposit_id": item.deposit_id, "credit_class": item.credit_class},
        )
        for item in pending
    ]


async def pending_deposits_of(
    connection: AsyncConnection, billing_account_ids: Sequence[str]
) -> dict[str, list[PendingDeposit]]:
    """Per billing account of ``billing_account_ids`` that is its customer's own (no node): the
    customer's pending deposits, by id."""
    account = billing_accounts.c
    found: dict[str, list[PendingDeposit]] = {}
    if not billing_account_ids:
        return found
    rows = await connection.execute(
        select(account.billing_account_id, deposits.c.deposit_id, deposits.c.amount_micros, deposits.c.credit_class)
        .join(deposits, deposits.c.customer_id == account.customer_id)
        .where(
            account.billing_account_id.in_(list(billing_account_ids)),
            account.node_id.is_(None),
            deposits.c.state == PENDING,
        )
        .order_by(account.billing_account_id, deposits.c.deposit_id)
    )
    for account_id, deposit_id, amount, credit_class in rows:
        found.setdefault(account_id, []).append(PendingDeposit(int(deposit_id), int(amount), credit_class))
    return found


async def mark_invoiced(connection: AsyncConnection, deposit_ids: Sequence[int], invoice_id: str) -> None:
    """The deposits invoiced by ``invoice_id``, in its transaction; refused (422 naming
    ``deposit_ids``) when one is no longer pending, so the caller's transaction rolls back."""
    if not deposit_ids:
        return
    done = await connection.execute(
        update(deposits)
        .where(and_(deposits.c.deposit_id.in_(list(deposit_ids)), deposits.c.state == PENDING))
        .values(state=INVOICED, invoice_id=invoice_id)
    )
    if done.rowcount != len(deposit_ids):
        raise CustomerRefusal(Problem.REFUSED, "deposit_ids", "a deposit of the draft is no longer pending")


async def credit_held(connection: AsyncConnection, billing_account_id: str, now: datetime) -> int:
    """At termination (module docstring): the customer's held deposits credited to its own billing
    account and allocated, the pending ones cancelled; the micros credited."""
    account = billing_accounts.c
    customer = (
        await connection.execute(
            select(account.customer_id).where(
                account.billing_account_id == billing_account_id, account.node_id.is_(None)
            )
        )
    ).scalar_one_or_none()
    if customer is None:
        return 0  # a node's account: deposits are the customer's
    held = (
        await connection.execute(
            select(deposits.c.deposit_id, deposits.c.amount_micros)
            .where(deposits.c.customer_id == customer, deposits.c.state == INVOICED)
            .order_by(deposits.c.deposit_id)
        )
    ).all()
    for deposit_id, amount in held:
        await connection.execute(
            insert(payments).values(
                payment_id=made_id("PAY"),
                billing_account_id=billing_account_id,
                reference=f"deposit-{deposit_id}",
                amount_micros=amount,
                unallocated_micros=amount,
                method="deposit",
                source=PaymentSource.DEPOSIT.value,
                received_at=utc_naive(now),
                recorded_by=DEPOSIT_AUTHOR,
                recorded_at=utc_naive(now),
            )
        )
        await connection.execute(update(deposits).where(deposits.c.deposit_id == deposit_id).values(state=CREDITED))
    await connection.execute(
        update(deposits).where(deposits.c.customer_id == customer, deposits.c.state == PENDING).values(state=CANCELLED)
    )
    if held:
        await apply_credit(connection, billing_account_id, now)
    return sum(int(amount) for _, amount in held)
