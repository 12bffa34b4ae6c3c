"""The revenue report: what was invoiced in a period, by product and by customer type.

Theory of operation: revenue is recognised on the invoice's issue day; the report reads every
line of the invoices issued from ``from_date`` to ``to_date`` (both included) and adds their
amounts (net of tax: a discount line is negative and lowers its product's revenue) by currency,
product and customer type. The product is what the line says it is: its explanation's
``product`` (a catalog product code: rentals, one-offs, bundles, discounts aimed at a product),
else for usage ``usage:<service>`` from its explanation's ``service`` (the rating service: voice,
data, sms, ...), else the line's kind (``adjustment``, ``usage`` when no service is named). The
customer type is the line's subscription's network and payment type (``mobile_postpaid``,
``fixed_prepaid``, ...: DESIGN.md's four customer types), or ``account`` for a charge of the
billing account itself (no line). Tax is reported apart: each line's own tax and the tax lines
go into the currency's tax total, never into revenue. Rows are read as a stream, so a year of
invoices does not sit in memory at once; the answer holds one row per (currency, product, type).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

from pydantic import JsonValue
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing.values import LineKind
from ocs.customers.values import Closed
from ocs.db.billing import invoice_lines, invoices
from ocs.db.customers import lines

ACCOUNT_TYPE = "account"  # a charge of the billing account, not of one of its lines
STREAM_ROWS = 1_000


class RevenueRow(Closed):
    currency: str
    product: str
    customer_type: str
    amount_micros: int  # net of tax; discounts lower it
    invoice_lines: int


class RevenueTotal(Closed):
    amount_micros: int
    tax_micros: int


class RevenueReport(Closed):
    from_date: date
    to_date: date  # included
    invoices: int
    rows: list[RevenueRow]
    totals: dict[str, RevenueTotal]  # by currency


def product_of(kind: str, explanation: dict[str, JsonValue]) -> str:
    """The product a line is revenue of (the module docstring)."""
    product = explanation.get("product")
    if isinstance(product, str) and product:
        return product
    service = explanation.get("service")
    if kind == LineKind.USAGE.value and isinstance(service, str) and service:
        return f"usage:{service}"
    return kind


def customer_type_of(network: str | None, payment_type: str | None) -> str:
    return f"{network}_{payment_type}" if network and payment_type else ACCOUNT_TYPE


async def revenue(engine: AsyncEngine, from_date: date, to_date: date) -> RevenueReport:
    """What the invoices issued from ``from_date`` to ``to_date`` (included) billed, by product and type."""
    start = datetime.combine(from_date, time())
    end = datetime.combine(to_date + timedelta(days=1), time())
    query = (
        select(
            invoices.c.invoice_id,
            invoices.c.currency,
            invoice_lines.c.kind,
            invoice_lines.c.explanation,
            invoice_lines.c.amount_micros,
            invoice_lines.c.tax_micros,
            lines.c.network,
            lines.c.payment_type,
        )
        .join(invoices, invoices.c.invoice_id == invoice_lines.c.invoice_id)
        .outerjoin(lines, lines.c.line_id == invoice_lines.c.line_id)
        .where(and_(invoices.c.issued_at >= start, invoices.c.issued_at < end))
        .order_by(invoice_lines.c.invoice_id, invoice_lines.c.position)
        .execution_options(yield_per=STREAM_ROWS)
    )
    sums: dict[tuple[str, str, str], tuple[int, int]] = {}
    taxes: dict[str, int] = {}
    seen: set[str] = set()
    async with engine.connect() as connection:
        async for row in await connection.stream(query):
            seen.add(row.invoice_id)
            taxes[row.currency] = taxes.get(row.currency, 0) + int(row.tax_micros)
            if row.kind == LineKind.TAX.value:
                taxes[row.currency] += int(row.amount_micros)
                continue
            key = (
                row.currency,
                product_of(row.kind, row.explanation or {}),
                customer_type_of(row.network, row.payment_type),
            )
            amount, count = sums.get(key, (0, 0))
            sums[key] = (amount + int(row.amount_micros), count + 1)
    rows = [
        RevenueRow(currency=currency, product=product, customer_type=kind, amount_micros=amount, invoice_lines=count)
        for (currency, product, kind), (amount, count) in sorted(sums.items())
    ]
    totals = {
        currency: RevenueTotal(
            amount_micros=sum(row.amount_micros for row in rows if row.currency == currency),
            tax_micros=taxes.get(currency, 0),
        )
        for currency in sorted({*taxes, *(row.currency for row in rows)})
    }
    return RevenueReport(from_date=from_date, to_date=to_date, invoices=len(seen), rows=rows, totals=totals)
