"""The one-ledger audit (issue 14 "One ledger"): the invoices, the usage records and Redis agree.

Theory of operation: read-only; answers the problems found (empty: the ledger is whole), each
naming the invoice, the record or the account:
- every invoice's usage lines, as priced, add up to the micros of the records it billed (invoiced
  usage = the usage records of the period, to the micro; the lines' amounts are rounded to the
  currency's minor unit, and the difference is the explicit rounding each line keeps), and an
  invoice with usage lines has records (no invoice without its records);
- every line's amount and tax are whole minor units of the invoice's currency, each at most half
  a minor unit from the amount as priced (lines issued before rounding have no priced amounts);
- no record is billed by an invoice that does not exist (a record's ``invoice_id`` is one column,
  so no record is billed twice by construction; a dangling id is the way it could go wrong);
- invoices - payments - credit notes = the open balance, row by row (``receivables.ledger_problems``);
- every cut the bill run recorded was applied, and the engine accepted it;
- the loyalty ledger (``ocs.db.loyalty.audit_problems``): no rule applied twice to a trigger, every
  application's trigger stored, budgets = what their applications cost, nothing left uncredited;
- with a balance store, per postpaid line: its unbilled counter in Redis = the line micros of its
  records not billed yet (after the last cut), those still in the engine's outbox included (the
  spool lags the engine by up to a drain).
"""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from balance.store import BalanceStore
from balance.types import PaymentType
from ocs.billing.minor_units import minor_unit_micros
from ocs.billing.receivables import ledger_problems
from ocs.billing.values import LineKind
from ocs.db.bill_run import bill_cuts
from ocs.db.billing import invoice_lines, invoices
from ocs.db.customers import lines
from ocs.db.loyalty import audit_problems as loyalty_audit_problems
from ocs.db.usage import STORED, record_of, usage_records

MAX_PROBLEMS = 1_000  # an answer, not a dump: the first ones name what to look at
ROUNDED = (
    invoice_lines.c.amount_micros,
    invoice_lines.c.priced_amount_micros,
    invoice_lines.c.tax_micros,
    invoice_lines.c.priced_tax_micros,
)


async def usage_problems(connection: AsyncConnection) -> list[str]:
    line = invoice_lines.c
    priced = func.coalesce(line.priced_amount_micros, line.amount_micros)
    invoiced = {
        invoice_id: (int(rounded), int(before))
        for invoice_id, rounded, before in (
            await connection.execute(
                select(line.invoice_id, func.sum(line.amount_micros), func.sum(priced))
                .where(line.kind == LineKind.USAGE.value)
                .group_by(line.invoice_id)
            )
        ).all()
    }
    recorded = dict(
        (
            await connection.execute(
                select(usage_records.c.invoice_id, func.sum(usage_records.c.micros))
                .where(usage_records.c.invoice_id.is_not(None))
                .group_by(usage_records.c.invoice_id)
            )
        ).all()
    )
    known = set((await connection.execute(select(invoices.c.invoice_id))).scalars().all())
    problems = []
    for invoice_id in sorted(set(invoiced) | set(recorded)):
        (rounded, before), records_micros = invoiced.get(invoice_id, (0, 0)), int(recorded.get(invoice_id, 0))
        if invoice_id not in known:
            problems.append(f"records billed by {invoice_id}, which is no invoice ({records_micros} micros)")
        elif invoice_id not in recorded:
            problems.append(f"invoice {invoice_id}: usage lines of {before} micros without records")
        elif before != records_micros:
            rounding = f" (rounded by {rounded - before})" if rounded != before else ""
            lines_text = f"usage lines {before} micros{rounding}"
            problems.append(f"invoice {invoice_id}: {lines_text}, its records {records_micros}")
    return problems + await rounding_problems(connection)


async def rounding_problems(connection: AsyncConnection) -> list[str]:
    """Every line's amount and tax a whole number of its currency's minor units, rounded from the
    amounts as priced by at most half of one (``ocs.billing.minor_units``)."""
    line = invoice_lines.c
    rows = await connection.execute(
        select(line.invoice_id, line.position, invoices.c.currency, *ROUNDED)
        .join(invoices, invoices.c.invoice_id == line.invoice_id)
        .where((line.priced_amount_micros.is_not(None)) | (line.priced_tax_micros.is_not(None)))
        .order_by(line.invoice_id, line.position)
    )
    problems = []
    for invoice_id, position, currency, amount, priced_amount, tax, priced_tax in rows:
        unit = minor_unit_micros(currency)
        for what, stored, priced in (("amount", amount, priced_amount), ("tax", tax, priced_tax)):
            if stored % unit or priced is None or 2 * abs(stored - priced) > unit:
                problems.append(
                    f"invoice {invoice_id} line {position}: {what} {stored} micros is not {priced} micros"
                    f" rounded to the {currency} minor unit ({unit} micros)"
                )
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems


async def cut_problems(connection: AsyncConnection) -> list[str]:
    rows = await connection.execute(
        select(bill_cuts.c.cut_id, bill_cuts.c.outcome)
        .where((bill_cuts.c.done_at.is_(None)) | (bill_cuts.c.outcome != "ok"))
        .order_by(bill_cuts.c.cut_id)
        .limit(MAX_PROBLEMS)
    )
    return [f"cut {cut_id}: {'pending' if outcome is None else outcome}" for cut_id, outcome in rows]


async def unbilled_problems(connection: AsyncConnection, store: BalanceStore, now_seconds: int) -> list[str]:
    """Per postpaid line: Redis unbilled = its unbilled records' line micros (outbox included)."""
    in_outbox: dict[str, int] = {}
    for root in await store.outbox_roots():
        for record in await store.read_outbox(root, limit=100_000):
            in_outbox[record.account_id] = in_outbox.get(record.account_id, 0) + record.line_micros
    postpaid = (
        (await connection.execute(select(lines.c.line_id).where(lines.c.payment_type == PaymentType.POSTPAID.value)))
        .scalars()
        .all()
    )
    problems = []
    for line_id in sorted(postpaid):
        view = await store.balance(line_id, now_seconds)
        if view is None:
            continue
        rows = await connection.execute(
            select(*STORED).where(usage_records.c.account_id == line_id, usage_records.c.invoice_id.is_(None))
        )
        stored = {record.record_id: record.line_micros for record in map(record_of, rows)}
        expected = sum(stored.values()) + in_outbox.get(line_id, 0)
        if view.unbilled_micros != expected:
            problems.append(
                f"line {line_id}: Redis unbilled {view.unbilled_micros} micros, records after the last cut {expected}"
            )
        if len(problems) >= MAX_PROBLEMS:
            break
    return problems


async def ledger_audit(engine: AsyncEngine, store: BalanceStore | None = None, now_seconds: int = 0) -> list[str]:
    """Every problem found (the module docstring); empty: both worlds tie out."""
    async with engine.connect() as connection:
        problems = await usage_problems(connection)
        problems += await ledger_problems(connection)
        problems += await cut_problems(connection)
        problems += await loyalty_audit_problems(connection, int(time.time() * 1000))
        if store is not None:
            problems += await unbilled_problems(connection, store, now_seconds)
    return problems[:MAX_PROBLEMS]
