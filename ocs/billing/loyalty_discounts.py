"""Loyalty discounts on invoices: the bill run's side of ``invoice_discount`` rules (issue 15).

Theory of operation: the loyalty engine (``ocs.loyalty.engine``) records, when a rule such as
"voice spend of 20.00 in a month gives 10 % off data the next month" fires, one pending row in
``loyalty_invoice_discounts`` (``ocs.db.loyalty``) for the member (the customer) with the time it
applies to, ``[applies_from, applies_until)``. The bill run takes them:

1. read (``pending_loyalty_discounts``, in the pass's read transaction): per billing account that
   is its customer's own (no company node, as deposits), the customer's pending discounts whose
   time overlaps the invoice's period: the first invoice after the rule fired;
2. draft (``loyalty_discount_lines``, pure, in ``ocs.billing.bill_draft``): one DISCOUNT line per
   discount after the account's charges, saying which programme and rule gave it, worth the
   percent of what it aims at on this invoice: the micros of one service's usage (the sum of that
   service's records on the invoice's usage lines) or the rentals (each RENTAL line net of the
   catalog's DISCOUNT lines right after it). The line is untaxed, like an adjustment: the tax was
   computed on the charges. A discount with nothing to aim at (no data used that month) still
   makes its line, worth 0, and is used up: it was for that period;
3. write: the invoice's ``loyalty_discount_ids`` are marked ``consumed`` with its invoice id in the
   transaction that issues it (``mark_consumed``); one taken meanwhile by another run raises
   ``LoyaltyDiscountTaken`` and the transaction rolls back. A rerun finds the period invoiced and
   drafts nothing, and the discount is no longer pending: nothing is applied twice. In the same
   transaction what each discount line took off is counted as its application's cost and against
   its programme's budget (``ocs.db.loyalty_costs``): a priced discount spends the budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ocs.billing.values import DraftLine, InvoiceDraft, LineKind
from ocs.db.customers import billing_accounts
from ocs.db.loyalty import InvoiceDiscount, consume_invoice_discount, pending_invoice_discounts_of
from ocs.db.loyalty_costs import count_discount_cost
from ocs.db.usage import LineUsage

BASIS_POINTS_PER_WHOLE = 10_000
RENTALS = "rentals"


class LoyaltyDiscountTaken(Exception):
    """A discount of the draft was consumed by another invoice meanwhile."""


async def pending_loyalty_discounts(
    connection: AsyncConnection, periods: Mapping[str, tuple[int, int]]
) -> dict[str, list[InvoiceDiscount]]:
    """Per billing account of ``periods`` (its invoice's [start, end) in epoch seconds) that is its
    customer's own: the customer's pending discounts overlapping that period, oldest first."""
    if not periods:
        return {}
    account = billing_accounts.c
    rows = await connection.execute(
        select(account.billing_account_id, account.customer_id).where(
            account.billing_account_id.in_(list(periods)), account.node_id.is_(None)
        )
    )
    owners = sorted((str(account_id), str(customer_id)) for account_id, customer_id in rows.all())
    of_members = await pending_invoice_discounts_of(connection, [customer_id for _, customer_id in owners])
    found: dict[str, list[InvoiceDiscount]] = {}
    for billing_account_id, customer_id in owners:
        start, end = periods[billing_account_id]
        overlapping = [
            discount
            for discount in of_members.get(customer_id, ())
            if discount.applies_from < end and discount.applies_until > start
        ]
        if overlapping:
            found[billing_account_id] = overlapping
    return found


def _targets(lines: Sequence[DraftLine], usage: Mapping[str, LineUsage]) -> dict[str, int]:
    """Micros a discount can aim at: ``rentals`` (net of catalog discounts) and each service's usage."""
    found: dict[str, int] = {RENTALS: 0}
    previous: LineKind | None = None
    for line in lines:
        if line.kind is LineKind.RENTAL or (line.kind is LineKind.DISCOUNT and previous is LineKind.RENTAL):
            found[RENTALS] += line.amount_micros
        if line.kind is not LineKind.DISCOUNT:
            previous = line.kind
    for line_usage in usage.values():
        for item in line_usage.services:
            key = f"service:{item.service}"
            found[key] = found.get(key, 0) + item.micros
    return found


def loyalty_discount_lines(
    discounts: Sequence[InvoiceDiscount], lines: Sequence[DraftLine], usage: Mapping[str, LineUsage]
) -> list[DraftLine]:
    """One DISCOUNT line per discount, aimed at ``lines`` (the invoice's charges) and ``usage``."""
    targets = _targets(lines, usage)
    made: list[DraftLine] = []
    for discount in discounts:
        key = RENTALS if discount.target == RENTALS else f"service:{discount.service}"
        base = max(targets.get(key, 0), 0)
        amount = base * discount.percent_basis_points // BASIS_POINTS_PER_WHOLE
        aim = "rentals" if discount.target == RENTALS else f"{discount.service} usage"
        percent = f"{discount.percent_basis_points / 100:g}"
        made.append(
            DraftLine.model_construct(
                kind=LineKind.DISCOUNT,
                description=f"loyalty {discount.programme_id} ({discount.rule_id}): {percent} % off {aim}"[:1_000],
                amount_micros=-amount,
                tax_micros=0,
                node_id=None,
                line_id=None,
                explanation={
                    "loyalty_discount_id": discount.discount_id,
                    "programme_id": discount.programme_id,
                    "rule_id": discount.rule_id,
                    "target": discount.target,
                    "service": discount.service,
                    "percent_basis_points": discount.percent_basis_points,
                    "base_micros": base,
                },
            )
        )
    return made


def priced_discounts(lines: Sequence[DraftLine]) -> dict[int, int]:
    """What each loyalty discount line of a draft takes off (micros, >= 0), by discount id."""
    return {
        int(line.explanation["loyalty_discount_id"]): -line.amount_micros  # type: ignore[arg-type]
        for line in lines
        if line.kind is LineKind.DISCOUNT and "loyalty_discount_id" in line.explanation
    }


async def mark_consumed(connection: AsyncConnection, draft: InvoiceDraft, invoice_id: str) -> None:
    """The discounts taken by ``invoice_id``, in its transaction, and what each cost counted
    against its programme (module docstring, step 3)."""
    priced = priced_discounts(draft.lines)
    for discount_id in draft.loyalty_discount_ids:
        if not await consume_invoice_discount(connection, discount_id, invoice_id):
            raise LoyaltyDiscountTaken(f"loyalty discount {discount_id} was taken by another invoice")
        await count_discount_cost(connection, discount_id, priced.get(discount_id, 0))
