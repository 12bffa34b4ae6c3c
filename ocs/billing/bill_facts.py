"""What the bill run reads from the business database: the billing accounts to bill, page by page,
and for a page of them every line they pay for, with its service span and plans.

Theory of operation: the run streams billing accounts in pages ordered by id (``accounts_page``),
so its memory is a page's, whatever the number of accounts. A billing account that is not
``paid_by_parent`` pays for its lines: for a customer's lines hanging under no node, the
customer's own billing account (the one without a node); for a line under a node of a company
tree, the nearest node up from the line's own that has a billing account not paid by its
parent, else the customer's own billing account (``payer_of``). So a department's lines roll
into the paying node's invoice (their ``node_id`` gives the subtotals) unless the department has
a billing account of its own that is not paid by its parent: then it is invoiced separately.

A line's service span and plans come from its recorded history, never from the clock: it came
into service on the day of its first status change out of ``provisioning`` (its row's creation
day when none is recorded), left it on the day it entered ``terminated``; its plan was the plan
its ``add_line`` order item asked for (the line's current plan when it was made otherwise) and
changed on the completion day of each ``change_plan`` item. Every query takes ids in lists of at
most ``IDS_PER_STATEMENT`` and orders its rows, so a page's facts do not depend on the database's
row order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from balance.types import PaymentType
from ocs.billing.bill_draft import LineFacts, PendingAdjustment
from ocs.db.billing import adjustments, invoices
from ocs.db.bulk import day_of, rows_of_ids
from ocs.db.customers import billing_accounts, customer_nodes, lines
from ocs.db.interactions import status_changes
from ocs.db.orders import product_order_items
from ocs.db.usage import IDS_PER_STATEMENT

IN_SERVICE = frozenset({"active", "suspended", "barred"})  # statuses that count as in service (rentals run)
TERMINATED = "terminated"
PROVISIONING = "provisioning"


@dataclass(frozen=True, slots=True)
class PayingAccount:
    billing_account_id: str
    customer_id: str
    node_id: str | None
    bill_cycle_day: int


def chunks(items: Sequence[str], size: int = IDS_PER_STATEMENT) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


async def accounts_page(connection: AsyncConnection, after: str, limit: int) -> list[PayingAccount]:
    """Up to ``limit`` billing accounts that pay for themselves, by id, after ``after``."""
    table = billing_accounts.c
    statement = (
        select(table.billing_account_id, table.customer_id, table.node_id, table.bill_cycle_day)
        .where(table.billing_account_id > after, table.paid_by_parent.is_(False))
        .order_by(table.billing_account_id)
        .limit(limit)
    )
    return [PayingAccount(*row) for row in await connection.execute(statement)]


async def invoiced_periods(connection: AsyncConnection, account_ids: Sequence[str]) -> set[tuple[str, date]]:
    found: set[tuple[str, date]] = set()
    for part in chunks(account_ids):
        statement = select(invoices.c.billing_account_id, invoices.c.period_start).where(
            invoices.c.billing_account_id.in_(part)
        )
        found |= {(str(row[0]), row[1]) for row in await connection.execute(statement)}
    return found


def payer_of(
    node_id: str | None,
    customer_id: str,
    parent_of: dict[str, str | None],
    node_account: dict[str, tuple[str, bool]],
    customer_account: dict[str, str],
) -> str | None:
    """The billing account that pays for a line under ``node_id`` (the module docstring)."""
    seen: set[str] = set()
    current = node_id
    while current is not None and current not in seen:
        seen.add(current)
        account = node_account.get(current)
        if account is not None and not account[1]:
            return account[0]
        current = parent_of.get(current)
    return customer_account.get(customer_id)


async def _rows(connection: AsyncConnection, statement: Any, column: Any, ids: Sequence[str]) -> list[Any]:
    found: list[Any] = []
    for part in chunks(ids):
        found += list(await connection.execute(statement.where(column.in_(part))))
    return found


# The page's facts, each statement built once (``rows_of_ids`` caches its compiled form by it).
NODES = select(customer_nodes.c.node_id, customer_nodes.c.parent_node_id)
ACCOUNTS = select(
    billing_accounts.c.billing_account_id,
    billing_accounts.c.customer_id,
    billing_accounts.c.node_id,
    billing_accounts.c.paid_by_parent,
)
LINES = select(
    lines.c.line_id,
    lines.c.customer_id,
    lines.c.node_id,
    lines.c.payment_type,
    lines.c.plan,
    lines.c.status,
    lines.c.created_at,
).order_by(lines.c.line_id)
HISTORY = (
    select(status_changes.c.entity_id, status_changes.c.to_status, status_changes.c.changed_at)
    .where(status_changes.c.entity_kind == "line")
    .order_by(status_changes.c.entity_id, status_changes.c.changed_at, status_changes.c.record_id)
)


async def lines_of(connection: AsyncConnection, accounts: Sequence[PayingAccount]) -> dict[str, list[LineFacts]]:
    """Per billing account of ``accounts``, the lines it pays for, in the order of their ids."""
    customer_ids = sorted({account.customer_id for account in accounts})
    wanted = {account.billing_account_id for account in accounts}
    node_rows = await rows_of_ids(connection, NODES, customer_nodes.c.customer_id, customer_ids)
    parent_of: dict[str, str | None] = {row[0]: row[1] for row in node_rows}
    account_rows = await rows_of_ids(connection, ACCOUNTS, billing_accounts.c.customer_id, customer_ids)
    node_account = {row[2]: (row[0], bool(row[3])) for row in account_rows if row[2] is not None}
    customer_account = {row[1]: row[0] for row in account_rows if row[2] is None}
    paid: list[tuple[str, Sequence[Any]]] = []
    for row in await rows_of_ids(connection, LINES, lines.c.customer_id, customer_ids):
        if row[5] == PROVISIONING:
            continue
        payer = payer_of(row[2], row[1], parent_of, node_account, customer_account)
        if payer in wanted:
            paid.append((payer, row))
    paid.sort(key=lambda item: str(item[1][0]))
    line_ids = [row[0] for _, row in paid]
    history = await _history(connection, line_ids)
    plans = await _plan_history(connection, line_ids)
    found: dict[str, list[LineFacts]] = {}
    for payer, (line_id, _, node_id, payment_type, plan, _, created_at) in paid:
        activated, terminated = history.get(line_id, (None, None))
        activated_on = activated or day_of(created_at)
        initial, changes = plans.get(line_id, (None, []))
        found.setdefault(payer, []).append(
            LineFacts(
                line_id=line_id,
                node_id=node_id,
                payment_type=PaymentType(payment_type),
                activated_on=activated_on,
                terminated_on=terminated,
                plans=((activated_on, initial or (changes[0][1] if changes else plan)), *changes),
            )
        )
    return found


async def _history(connection: AsyncConnection, line_ids: Sequence[str]) -> dict[str, tuple[date | None, date | None]]:
    """Per line: the day it came into service and the day it was terminated (None: not recorded)."""
    found: dict[str, tuple[date | None, date | None]] = {}
    for line_id, status, moment in await rows_of_ids(connection, HISTORY, status_changes.c.entity_id, line_ids):
        activated, terminated = found.get(line_id, (None, None))
        if activated is None and status in IN_SERVICE:
            activated = day_of(moment)
        if terminated is None and status == TERMINATED:
            terminated = day_of(moment)
        found[line_id] = (activated, terminated)
    return found


async def _plan_history(
    connection: AsyncConnection, line_ids: Sequence[str]
) -> dict[str, tuple[str | None, list[tuple[date, str]]]]:
    """Per line: the plan its add_line item asked for, and (day, plan) of each completed change."""
    table = product_order_items.c
    statement = (
        select(table.line_id, table.action, table.payload, table.completed_at)
        .where(table.state == "completed", table.action.in_(("add_line", "change_plan")))
        .order_by(table.line_id, table.completed_at, table.order_id, table.item_id)
    )
    found: dict[str, tuple[str | None, list[tuple[date, str]]]] = {}
    for line_id, action, payload, completed_at in await _rows(connection, statement, table.line_id, line_ids):
        initial, changes = found.get(line_id, (None, []))
        if action == "add_line":
            line = payload.get("line") if isinstance(payload, dict) else None
            plan = line.get("plan") if isinstance(line, dict) else None
            initial = plan if isinstance(plan, str) else initial
        elif isinstance(payload, dict) and isinstance(payload.get("plan"), str) and completed_at is not None:
            changes.append((completed_at.date(), payload["plan"]))
        found[line_id] = (initial, changes)
    return found


async def pending_adjustments_of(
    connection: AsyncConnection, account_ids: Sequence[str]
) -> dict[str, list[PendingAdjustment]]:
    table = adjustments.c
    statement = (
        select(table.billing_account_id, table.adjustment_id, table.amount_micros, table.reason)
        .where(table.invoice_id.is_(None))
        .order_by(table.billing_account_id, table.created_at, table.adjustment_id)
    )
    found: dict[str, list[PendingAdjustment]] = {}
    for account_id, adjustment_id, amount, reason in await _rows(
        connection, statement, table.billing_account_id, account_ids
    ):
        found.setdefault(account_id, []).append(PendingAdjustment(adjustment_id, int(amount), reason))
    return found
