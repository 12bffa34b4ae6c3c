"""What an invoice discount cost, counted when the bill run prices it (ocs/billing/loyalty_discounts.py).

Theory of operation: when a rule records an invoice discount its application costs 0 (the
discount's worth is not known until an invoice prices it). The bill run, in the transaction that
issues the invoice and marks the discount consumed, calls ``count_discount_cost`` with what the
discount line took off: the cost is added to the discount's application
(``loyalty_applications.cost_micros``, found by the discount's rule and trigger) and to its
programme's spending (``loyalty_budgets``). A programme with a budget has its spending row from
its first application (the engine writes it whenever a budgeted programme applies a rule), so the
row is updated, never created: a programme without a budget keeps none, and the audit's "what the
applications cost = each budget's spending" stays whole both ways. The spending may pass the
budget by the last discount's worth; the engine refuses the programme's next applications.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ocs.db.loyalty import loyalty_applications, loyalty_budgets, loyalty_invoice_discounts


async def count_discount_cost(connection: AsyncConnection, discount_id: int, cost_micros: int) -> None:
    """Add ``cost_micros`` to the discount's application and its programme's budget spending."""
    if cost_micros <= 0:
        return
    discount = loyalty_invoice_discounts.c
    found = (
        await connection.execute(
            select(discount.rule_id, discount.trigger_id, discount.programme_id).where(
                discount.discount_id == discount_id
            )
        )
    ).one_or_none()
    if found is None:
        return
    rule_id, trigger_id, programme_id = found
    application = loyalty_applications.c
    await connection.execute(
        update(loyalty_applications)
        .where(application.rule_id == rule_id, application.trigger_id == trigger_id)
        .values(cost_micros=application.cost_micros + cost_micros)
    )
    budget = loyalty_budgets.c
    await connection.execute(
        update(loyalty_budgets)
        .where(budget.programme_id == programme_id)
        .values(spent_micros=budget.spent_micros + cost_micros)
    )
