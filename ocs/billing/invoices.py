"""The store of invoices: ``issue`` a draft once, read customer bills (TMF678), and the bill
delivery outbox a mailer or print house reads and acknowledges.

Theory of operation: the bill run computes an ``InvoiceDraft`` (what to bill and why, line by
line) and calls ``issue``; everything about storing it is here. In one transaction, ``issue``
takes the billing account's lock, looks for the account's invoice of that period (``(billing
account, period start)`` is unique), and if there is one answers it and writes nothing: a rerun,
or a race of two runs, issues a period once. Otherwise it draws the next number of the legal
entity's series (gapless: a rollback gives the number back, ``ocs.billing.allocation``), stores
the invoice with its amounts computed from its lines, each amount and tax rounded to the
currency's minor unit with the amounts as priced kept beside (``line_rows``; subtotal = every line
but discounts and taxes; discount = what discount lines take off; tax = each line's tax plus tax
lines; total = subtotal - discount + tax, never negative), its lines, the pending adjustments it
carries (marked billed by it) and the deposits it charges (marked invoiced by it,
``ocs.billing.deposits``), and an ``invoice_issued`` event in ``delivery_outbox``; then the
account's credit (an earlier overpayment) pays what it can of the new bill. The invoice's id is
its number.

The caller may pass its own connection (``issue(draft, connection=...)``): then everything above
is part of the caller's transaction, which the bill run uses to mark the usage records billed in
the same commit, and the caller commits.

``issue_many(drafts, connection)`` is the bill run's bulk path, with the same rules for many
drafts (of distinct accounts) in the caller's transaction: the accounts' rows locked in one
statement (in id order, so concurrent runs queue instead of deadlocking), the periods invoiced
already found in one query and skipped, one block of numbers drawn from each series (gapless:
the numbers of one transaction are consecutive, and its rollback gives the block back), invoices,
lines and delivery events inserted by executemany, and the credit applied only on the accounts
that have some. It answers the drafts issued, each with its number, and the ones skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from pydantic import JsonValue
from sqlalchemy import ColumnElement, and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.billing.allocation import (
    apply_credit,
    bill_state,
    document_number,
    held_by_disputes,
    lock_account,
    next_sequence,
)
from ocs.billing.deposits import mark_invoiced
from ocs.billing.minor_units import minor_unit_micros, round_to_unit
from ocs.billing.values import (
    BillingPeriod,
    BillLine,
    BillState,
    CustomerBill,
    CustomerBillList,
    InvoiceDraft,
    LineKind,
    Money,
    NodeSubtotal,
)
from ocs.customers.service import CustomerRefusal, Problem
from ocs.customers.values import Closed
from ocs.db.billing import adjustments, delivery_outbox, invoice_lines, invoices, payments
from ocs.db.bulk import execute_many_values, insert_of
from ocs.db.customers import billing_accounts
from ocs.db.schema import utc_aware, utc_naive

MAX_LIST_ROWS = 1_000
MAX_BATCH_DRAFTS = 5_000  # issue_many: the accounts' ids are one IN list (far below the drivers' limits)
INVOICE_ISSUED = "invoice_issued"
LINE_ROW_NAMES = (  # ``line_rows``' keys, in order
    "position",
    "kind",
    "description",
    "node_id",
    "line_id",
    "explanation",
    "amount_micros",
    "tax_micros",
    "priced_amount_micros",
    "priced_tax_micros",
)
_line_values = itemgetter(*LINE_ROW_NAMES)
_KIND, _AMOUNT, _TAX, _PRICED_AMOUNT, _PRICED_TAX = 1, 6, 7, 8, 9  # positions in LINE_ROW_NAMES
_DISCOUNT, _TAX_LINE = LineKind.DISCOUNT.value, LineKind.TAX.value
AMOUNT_NAMES = ("subtotal_micros", "discount_micros", "tax_micros", "total_micros")
INVOICE_NAMES = (  # ``_invoice_values``' order
    "invoice_id",
    "legal_entity",
    "sequence",
    "number",
    "customer_id",
    "billing_account_id",
    "period_start",
    "period_end",
    "issued_at",
    "due_date",
    "currency",
    *AMOUNT_NAMES,
    "remaining_micros",
    "state",
    "catalog_version",
)
EVENT_NAMES = ("kind", "invoice_id", "payload", "created_at")


class Issued(Closed):
    bill: CustomerBill
    created: bool  # False: the period was invoiced already; that invoice is answered, nothing written


class DeliveryEvent(Closed):
    event_id: int
    kind: str
    invoice_id: str | None
    payload: dict[str, JsonValue]
    created_at: datetime


def line_values(draft: InvoiceDraft, currency: str) -> list[tuple[Any, ...]]:
    """The draft's lines as stored, by position, as the values of ``LINE_ROW_NAMES``: each
    amount and tax rounded to the currency's minor unit (``ocs.billing.minor_units``), the
    amounts as priced kept beside them (the bill run's path: no dict a line)."""
    unit = minor_unit_micros(currency)
    return [
        (
            position,
            line.kind.value,
            line.description,
            line.node_id,
            line.line_id,
            line.explanation,
            round_to_unit(line.amount_micros, unit),
            round_to_unit(line.tax_micros, unit),
            line.amount_micros,
            line.tax_micros,
        )
        for position, line in enumerate(draft.lines, start=1)
    ]


def line_rows(draft: InvoiceDraft, currency: str) -> list[dict[str, Any]]:
    """``line_values`` as rows by name."""
    return [dict(zip(LINE_ROW_NAMES, values, strict=True)) for values in line_values(draft, currency)]


def _amounts(lines: Sequence[Sequence[Any]]) -> tuple[int, int, int, int]:
    """(subtotal, discount, tax, total) of lines given as ``line_values`` (module docstring)."""
    subtotal = discount = tax = 0
    for line in lines:
        kind, amount = line[_KIND], line[_AMOUNT]
        tax += line[_TAX]
        if kind == _DISCOUNT:
            discount -= amount
        elif kind == _TAX_LINE:
            tax += amount
        else:
            subtotal += amount
    return subtotal, discount, tax, subtotal - discount + tax


def invoice_amounts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The invoice's subtotal, discount, tax and total from its (rounded) lines (module docstring)."""
    return dict(zip(AMOUNT_NAMES, _amounts([_line_values(row) for row in rows]), strict=True))


def _money(currency: str, value: int) -> Money:
    return Money(unit=currency, value_micros=value)


def _subtotals(lines: list[BillLine]) -> list[NodeSubtotal]:
    sums: dict[str | None, tuple[int, int]] = {}
    for line in lines:
        amount, tax = sums.get(line.node_id, (0, 0))
        sums[line.node_id] = (amount + line.amount_micros, tax + line.tax_micros)
    ordered = sorted(sums.items(), key=lambda item: (item[0] is not None, item[0] or ""))
    return [NodeSubtotal(node_id=node, amount_micros=amount, tax_micros=tax) for node, (amount, tax) in ordered]


def customer_bill(row: dict[str, Any], lines: list[BillLine], held_micros: int) -> CustomerBill:
    currency = row["currency"]
    return CustomerBill(
        id=row["invoice_id"],
        bill_no=row["number"],
        legal_entity=row["legal_entity"],
        customer_id=row["customer_id"],
        billing_account_id=row["billing_account_id"],
        bill_date=utc_aware(row["issued_at"]),
        billing_period=BillingPeriod(start_date=row["period_start"], end_date=row["period_end"]),
        payment_due_date=row["due_date"],
        state=BillState(row["state"]),
        catalog_version=row["catalog_version"],
        tax_excluded_amount=_money(currency, row["subtotal_micros"] - row["discount_micros"]),
        discount_amount=_money(currency, row["discount_micros"]),
        tax_amount=_money(currency, row["tax_micros"]),
        tax_included_amount=_money(currency, row["total_micros"]),
        amount_due=_money(currency, row["total_micros"]),
        remaining_amount=_money(currency, row["remaining_micros"]),
        disputed_amount=_money(currency, held_micros),
        subtotals=_subtotals(lines),
        lines=lines,
    )


def bill_line(row: dict[str, Any]) -> BillLine:
    """A stored line; one issued before amounts were rounded was priced as it stands."""
    row.pop("invoice_id", None)
    for priced, stored in (("priced_amount_micros", "amount_micros"), ("priced_tax_micros", "tax_micros")):
        if row.get(priced) is None:
            row[priced] = row[stored]
    return BillLine.model_validate(row)


async def read_bill(connection: AsyncConnection, invoice_id: str, *, with_lines: bool = True) -> CustomerBill | None:
    row = (await connection.execute(select(invoices).where(invoices.c.invoice_id == invoice_id))).first()
    if row is None:
        return None
    lines: list[BillLine] = []
    if with_lines:
        query = select(invoice_lines).where(invoice_lines.c.invoice_id == invoice_id).order_by(invoice_lines.c.position)
        lines = [bill_line(dict(line._mapping)) for line in (await connection.execute(query)).all()]
    held = await held_by_disputes(connection, [invoice_id])
    return customer_bill(dict(row._mapping), lines, held.get(invoice_id, 0))


class Invoices:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def issue(self, draft: InvoiceDraft, *, connection: AsyncConnection | None = None) -> Issued:
        """The draft stored as the period's invoice, once (see the module docstring)."""
        if connection is not None:
            return await self._issue(connection, draft)
        async with self.engine.begin() as own:
            return await self._issue(own, draft)

    async def _issue(self, connection: AsyncConnection, draft: InvoiceDraft) -> Issued:
        account = await lock_account(connection, draft.billing_account_id, "billing_account_id")
        existing = await connection.execute(
            select(invoices.c.invoice_id).where(
                and_(
                    invoices.c.billing_account_id == draft.billing_account_id,
                    invoices.c.period_start == draft.period_start,
                )
            )
        )
        found = existing.scalar_one_or_none()
        if found is not None:
            bill = await read_bill(connection, found)
            assert bill is not None
            return Issued(bill=bill, created=False)
        lines = line_rows(draft, account["currency"])
        _check_total([_line_values(line) for line in lines])
        await self._check_adjustments(connection, draft)
        now = self._now()
        sequence = await next_sequence(connection, draft.legal_entity)
        row = _invoice_row(draft, sequence, account["customer_id"], account["currency"], now, lines)
        number = row["invoice_id"]
        await connection.execute(insert(invoices).values(**row))
        if lines:
            await connection.execute(insert(invoice_lines), [{"invoice_id": number, **line} for line in lines])
        if draft.adjustment_ids:
            await connection.execute(
                update(adjustments)
                .where(adjustments.c.adjustment_id.in_(draft.adjustment_ids))
                .values(invoice_id=number)
            )
        await mark_invoiced(connection, draft.deposit_ids, number)
        await connection.execute(insert(delivery_outbox).values(**_issued_event(row, draft, now)))
        await apply_credit(connection, draft.billing_account_id, now)
        bill = await read_bill(connection, number)
        assert bill is not None
        return Issued(bill=bill, created=True)

    @staticmethod
    async def _check_adjustments(connection: AsyncConnection, draft: InvoiceDraft) -> None:
        if not draft.adjustment_ids:
            return
        query = select(adjustments.c.adjustment_id).where(
            and_(
                adjustments.c.adjustment_id.in_(draft.adjustment_ids),
                adjustments.c.billing_account_id == draft.billing_account_id,
                adjustments.c.invoice_id.is_(None),
            )
        )
        pending = set((await connection.execute(query)).scalars().all())
        missing = [adjustment for adjustment in draft.adjustment_ids if adjustment not in pending]
        if missing:
            raise CustomerRefusal(
                Problem.REFUSED, "adjustment_ids", f"not pending on this account: {', '.join(missing)}"
            )

    async def bill(self, invoice_id: str) -> CustomerBill:
        async with self.engine.connect() as connection:
            found = await read_bill(connection, invoice_id)
        if found is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "id", f"no customer bill {invoice_id!r}")
        return found

    async def bills(
        self, *, billing_account_id: str | None, state: BillState | None, limit: int, offset: int
    ) -> CustomerBillList:
        condition: ColumnElement[bool] = invoices.c.invoice_id.is_not(None)
        if billing_account_id is not None:
            condition = and_(condition, invoices.c.billing_account_id == billing_account_id)
        if state is not None:
            condition = and_(condition, invoices.c.state == state.value)
        query = (
            select(invoices)
            .where(condition)
            .order_by(invoices.c.issued_at, invoices.c.legal_entity, invoices.c.sequence)
            .limit(limit)
            .offset(offset)
        )
        async with self.engine.connect() as connection:
            rows = [dict(row._mapping) for row in (await connection.execute(query)).all()]
            held = await held_by_disputes(connection, [row["invoice_id"] for row in rows])
        return CustomerBillList(bills=[customer_bill(row, [], held.get(row["invoice_id"], 0)) for row in rows])

    async def undelivered(self, limit: int = MAX_LIST_ROWS, *, kinds: Collection[str] = ()) -> list[DeliveryEvent]:
        """Delivery events not acknowledged yet, oldest first; of ``kinds`` only, when given (each
        reader acknowledges its own kinds: the document consumer ``invoice_issued``, a mailer
        ``invoice_ready`` and ``reminder``)."""
        condition: ColumnElement[bool] = delivery_outbox.c.delivered_at.is_(None)
        if kinds:
            condition = and_(condition, delivery_outbox.c.kind.in_(sorted(kinds)))
        query = select(delivery_outbox).where(condition).order_by(delivery_outbox.c.event_id).limit(limit)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [
            DeliveryEvent(
                event_id=row.event_id,
                kind=row.kind,
                invoice_id=row.invoice_id,
                payload=row.payload,
                created_at=utc_aware(row.created_at),
            )
            for row in rows
        ]

    async def acknowledge(self, event_id: int) -> bool:
        """The event delivered (once: a second acknowledgement changes nothing and says False)."""
        async with self.engine.begin() as connection:
            done = await connection.execute(
                update(delivery_outbox)
                .where(and_(delivery_outbox.c.event_id == event_id, delivery_outbox.c.delivered_at.is_(None)))
                .values(delivered_at=utc_naive(self._now()))
            )
        return bool(done.rowcount)


@dataclass(frozen=True, slots=True)
class BatchIssued:
    """What ``issue_many`` did: (draft, its new invoice id) per issued draft, in the drafts'
    order, and the drafts whose period was invoiced already (nothing written for them)."""

    issued: list[tuple[InvoiceDraft, str]]
    skipped: list[InvoiceDraft]


async def issue_many(connection: AsyncConnection, drafts: Sequence[InvoiceDraft], now: datetime) -> BatchIssued:
    """The drafts (one per billing account) issued in the caller's transaction (module docstring)."""
    if len(drafts) > MAX_BATCH_DRAFTS:
        raise ValueError(f"issue_many: at most {MAX_BATCH_DRAFTS} drafts per call, not {len(drafts)}")
    by_account = {draft.billing_account_id: draft for draft in drafts}
    if len(by_account) != len(drafts):
        raise ValueError("issue_many: one draft per billing account")
    if not drafts:
        return BatchIssued([], [])
    ids = sorted(by_account)
    accounts = billing_accounts.c
    await connection.execute(
        update(billing_accounts).where(accounts.billing_account_id.in_(ids)).values(currency=accounts.currency)
    )
    found = await connection.execute(
        select(accounts.billing_account_id, accounts.customer_id, accounts.currency).where(
            accounts.billing_account_id.in_(ids)
        )
    )
    account_rows = {row.billing_account_id: row for row in found}
    missing = [account for account in ids if account not in account_rows]
    if missing:
        raise CustomerRefusal(Problem.NOT_FOUND, "billing_account_id", f"no billing account {missing[0]!r}")
    existing = await connection.execute(
        select(invoices.c.billing_account_id, invoices.c.period_start).where(invoices.c.billing_account_id.in_(ids))
    )
    invoiced = {(row.billing_account_id, row.period_start) for row in existing}
    fresh = [draft for draft in drafts if (draft.billing_account_id, draft.period_start) not in invoiced]
    skipped = [draft for draft in drafts if (draft.billing_account_id, draft.period_start) in invoiced]
    drafted = {
        draft.billing_account_id: line_values(draft, account_rows[draft.billing_account_id].currency) for draft in fresh
    }
    for draft in fresh:
        _check_total(drafted[draft.billing_account_id])
        await Invoices._check_adjustments(connection, draft)
    issued_at = utc_naive(now)  # one object for every row: converted once (``execute_many_values``)
    rows: list[tuple[Any, ...]] = []  # INVOICE_NAMES
    lines: list[tuple[Any, ...]] = []  # LINE_ROW_NAMES after the invoice's id
    events: list[tuple[Any, ...]] = []  # EVENT_NAMES
    issued: list[tuple[InvoiceDraft, str]] = []
    for series in sorted({draft.legal_entity for draft in fresh}):
        of_series = [draft for draft in fresh if draft.legal_entity == series]
        last = await next_sequence(connection, series, len(of_series))
        for sequence, draft in enumerate(of_series, start=last - len(of_series) + 1):
            account = account_rows[draft.billing_account_id]
            of_draft = drafted[draft.billing_account_id]
            amounts = _amounts(of_draft)
            row = _invoice_values(draft, sequence, account.customer_id, account.currency, issued_at, amounts)
            rows.append(row)
            number = row[0]
            issued.append((draft, number))
            lines += [(number, *line) for line in of_draft]
            payload = _issued_payload(number, account.customer_id, draft, account.currency, amounts[3])
            events.append((INVOICE_ISSUED, number, payload, issued_at))
    await execute_many_values(connection, insert_of(invoices), INVOICE_NAMES, rows)
    await execute_many_values(connection, insert_of(invoice_lines), ("invoice_id", *LINE_ROW_NAMES), lines)
    await execute_many_values(connection, insert_of(delivery_outbox), EVENT_NAMES, events)
    for draft, number in issued:
        if draft.adjustment_ids:
            await connection.execute(
                update(adjustments)
                .where(adjustments.c.adjustment_id.in_(draft.adjustment_ids))
                .values(invoice_id=number)
            )
        await mark_invoiced(connection, draft.deposit_ids, number)
    with_credit = await connection.execute(
        select(payments.c.billing_account_id)
        .where(payments.c.billing_account_id.in_([draft.billing_account_id for draft, _ in issued]))
        .where(payments.c.unallocated_micros > 0)
        .distinct()
    )
    for account_id in sorted(row[0] for row in with_credit):
        await apply_credit(connection, account_id, now)
    return BatchIssued(issued, skipped)


def _check_total(lines: Sequence[Sequence[Any]]) -> None:
    """Never a negative invoice, as priced or as rounded (a credit is a credit note); ``lines``
    as ``line_values``."""
    rounded = sum(line[_AMOUNT] + line[_TAX] for line in lines)
    priced = sum(line[_PRICED_AMOUNT] + line[_PRICED_TAX] for line in lines)
    if min(rounded, priced) < 0:
        raise CustomerRefusal(Problem.REFUSED, "lines", "the lines add up to less than zero; bill a credit note")


def _invoice_values(
    draft: InvoiceDraft,
    sequence: int,
    customer_id: str,
    currency: str,
    issued_at: datetime,
    amounts: tuple[int, int, int, int],
) -> tuple[Any, ...]:
    """The invoice's row as the values of ``INVOICE_NAMES`` (``issued_at`` naive UTC)."""
    number = document_number(draft.legal_entity, sequence)
    total = amounts[3]
    return (
        number,
        draft.legal_entity,
        sequence,
        number,
        customer_id,
        draft.billing_account_id,
        draft.period_start,
        draft.period_end,
        issued_at,
        draft.due_date,
        currency,
        *amounts,
        total,
        bill_state(total, total).value,
        draft.catalog_version,
    )


def _invoice_row(
    draft: InvoiceDraft, sequence: int, customer_id: str, currency: str, now: datetime, lines: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    amounts = _amounts([_line_values(line) for line in lines])
    values = _invoice_values(draft, sequence, customer_id, currency, utc_naive(now), amounts)
    return dict(zip(INVOICE_NAMES, values, strict=True))


def _issued_payload(
    number: str, customer_id: str, draft: InvoiceDraft, currency: str, total_micros: int
) -> dict[str, object]:
    return {
        "bill_no": number,
        "customer_id": customer_id,
        "billing_account_id": draft.billing_account_id,
        "currency": currency,
        "total_micros": total_micros,
        "due_date": draft.due_date.isoformat(),
        "period_start": draft.period_start.isoformat(),
        "period_end": draft.period_end.isoformat(),
    }


def _issued_event(row: dict[str, Any], draft: InvoiceDraft, now: datetime) -> dict[str, object]:
    payload = _issued_payload(row["number"], row["customer_id"], draft, row["currency"], row["total_micros"])
    return {"kind": INVOICE_ISSUED, "invoice_id": row["invoice_id"], "payload": payload, "created_at": utc_naive(now)}
