"""Corrections to what a billing account owes: credit notes, disputes and adjustments.

Theory of operation: a credit note takes an amount off one invoice's remaining amount, never more
than what is left to credit (the remaining amount less what open disputes hold: that part waits
for the dispute's end). Credit notes have their own gapless series per legal entity
(``<entity>/CN``, numbers ``<entity>-CN-00000001``), drawn in the note's transaction as invoice
numbers are, so a credit note is a document of its own that the invoice series does not skip for.

A dispute (from a customer interaction: ``ticket_id`` links the trouble ticket, which must be the
invoice's customer's) holds an amount of an invoice, at most its remaining amount not yet held,
out of allocation and out of overdue (``ocs.billing.receivables``) until resolved: ``credited``
writes a credit note of the amount granted (at most the disputed amount; the rest is owed again),
``rejected`` gives all of it back to collection. Either way the account's credit is applied again
to what the dispute released. Resolving a dispute that is no longer open is a conflict (409).

An adjustment is a charge or rebate with its reason and author that the next invoice carries: it
waits, unbilled, until the bill run lists it in a draft's ``adjustment_ids`` (``issue`` marks it).

Each step runs under the account's lock in one transaction. Each takes an optional id of its own
(``credit_note_id``, ``dispute_id``, ``adjustment_id``): sent again with the same content it
answers the first and writes nothing (409 naming the id when the content differs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.billing.allocation import (
    apply_credit,
    document_number,
    held_by_disputes,
    lock_account,
    next_sequence,
    reduce_remaining,
)
from ocs.billing.values import (
    Adjustment,
    CreditNote,
    Dispute,
    DisputeResolution,
    DisputeState,
    NewAdjustment,
    NewCreditNote,
    NewDispute,
)
from ocs.customers.service import CustomerRefusal, Problem, made_id
from ocs.db.billing import adjustments, credit_notes, disputes, invoices
from ocs.db.interactions import trouble_tickets
from ocs.db.schema import utc_aware, utc_naive

CREDIT_NOTE_SERIES = "{entity}/CN"


def _credit_note(row: dict[str, Any]) -> CreditNote:
    return CreditNote.model_validate(
        {name: value for name, value in row.items() if name not in ("series", "sequence")}
        | {"created_at": utc_aware(row["created_at"])}
    )


def _same_or_conflict(found: dict[str, Any], wanted: dict[str, object], field: str) -> None:
    differs = sorted(name for name, value in wanted.items() if found.get(name) != value)
    if differs:
        raise CustomerRefusal(
            Problem.CONFLICT, field, f"{found[field]!r} exists with another {', '.join(differs)}; an id is used once"
        )


async def _row(connection: AsyncConnection, table: Any, column: Any, key: str) -> dict[str, Any] | None:
    found = (await connection.execute(select(table).where(column == key))).first()
    return dict(found._mapping) if found is not None else None


class Corrections:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def _locked_invoice(self, connection: AsyncConnection, invoice_id: str) -> dict[str, Any]:
        """The invoice, its account locked and then the invoice read again (its amounts current)."""
        found = await _row(connection, invoices, invoices.c.invoice_id, invoice_id)
        if found is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "invoice_id", f"no customer bill {invoice_id!r}")
        await lock_account(connection, found["billing_account_id"], "billing_account_id")
        current = await _row(connection, invoices, invoices.c.invoice_id, invoice_id)
        assert current is not None
        return current

    # -- credit notes ---------------------------------------------------------------------------

    async def credit_note(self, invoice_id: str, new: NewCreditNote, author: str) -> tuple[CreditNote, bool]:
        """A credit note on the invoice (``True``: written now; ``False``: its id was known)."""
        async with self.engine.begin() as connection:
            invoice = await self._locked_invoice(connection, invoice_id)
            if new.credit_note_id is not None:
                found = await _row(connection, credit_notes, credit_notes.c.credit_note_id, new.credit_note_id)
                if found is not None:
                    wanted = {"invoice_id": invoice_id, "amount_micros": new.amount_micros, "reason": new.reason}
                    _same_or_conflict(found, wanted, "credit_note_id")
                    return _credit_note(found), False
            held = (await held_by_disputes(connection, [invoice_id])).get(invoice_id, 0)
            creditable = int(invoice["remaining_micros"]) - held
            if new.amount_micros > creditable:
                raise CustomerRefusal(
                    Problem.REFUSED,
                    "amount_micros",
                    f"more than is left to credit on {invoice_id} ({creditable} micros"
                    + (f"; open disputes hold {held})" if held else ")"),
                )
            note = await self._write_credit_note(
                connection, invoice, new.amount_micros, new.reason, author, None, new.credit_note_id
            )
        return note, True

    async def _write_credit_note(
        self,
        connection: AsyncConnection,
        invoice: dict[str, Any],
        amount_micros: int,
        reason: str,
        author: str,
        dispute_id: str | None,
        credit_note_id: str | None,
    ) -> CreditNote:
        series = CREDIT_NOTE_SERIES.format(entity=invoice["legal_entity"])
        sequence = await next_sequence(connection, series)
        row = {
            "credit_note_id": credit_note_id or made_id("CN"),
            "series": series,
            "sequence": sequence,
            "number": document_number(series, sequence),
            "invoice_id": invoice["invoice_id"],
            "billing_account_id": invoice["billing_account_id"],
            "amount_micros": amount_micros,
            "reason": reason,
            "author": author,
            "dispute_id": dispute_id,
            "created_at": utc_naive(self._now()),
        }
        await connection.execute(insert(credit_notes).values(**row))
        await reduce_remaining(connection, invoice, amount_micros)
        return _credit_note(row)

    # -- disputes -------------------------------------------------------------------------------

    async def open_dispute(self, invoice_id: str, new: NewDispute, author: str) -> tuple[Dispute, bool]:
        async with self.engine.begin() as connection:
            invoice = await self._locked_invoice(connection, invoice_id)
            if new.dispute_id is not None:
                found = await _row(connection, disputes, disputes.c.dispute_id, new.dispute_id)
                if found is not None:
                    wanted = {"invoice_id": invoice_id, "amount_micros": new.amount_micros, "reason": new.reason}
                    _same_or_conflict(found, wanted, "dispute_id")
                    return await _dispute(connection, found), False
            held = (await held_by_disputes(connection, [invoice_id])).get(invoice_id, 0)
            disputable = int(invoice["remaining_micros"]) - held
            if new.amount_micros > disputable:
                raise CustomerRefusal(
                    Problem.REFUSED,
                    "amount_micros",
                    f"more than is left to dispute on {invoice_id} ({disputable} micros)",
                )
            if new.ticket_id is not None:
                ticket = await _row(connection, trouble_tickets, trouble_tickets.c.ticket_id, new.ticket_id)
                if ticket is None or ticket["customer_id"] != invoice["customer_id"]:
                    raise CustomerRefusal(
                        Problem.REFUSED,
                        "ticket_id",
                        f"customer {invoice['customer_id']!r} has no ticket {new.ticket_id!r}",
                    )
            row = {
                "dispute_id": new.dispute_id or made_id("DSP"),
                "invoice_id": invoice_id,
                "billing_account_id": invoice["billing_account_id"],
                "amount_micros": new.amount_micros,
                "state": DisputeState.OPEN.value,
                "ticket_id": new.ticket_id,
                "reason": new.reason,
                "opened_by": author,
                "opened_at": utc_naive(self._now()),
            }
            await connection.execute(insert(disputes).values(**row))
            return await _dispute(connection, row), True

    async def dispute(self, dispute_id: str) -> Dispute:
        async with self.engine.connect() as connection:
            found = await _row(connection, disputes, disputes.c.dispute_id, dispute_id)
            if found is None:
                raise CustomerRefusal(Problem.NOT_FOUND, "dispute_id", f"no dispute {dispute_id!r}")
            return await _dispute(connection, found)

    async def resolve_dispute(self, dispute_id: str, resolution: DisputeResolution, author: str) -> Dispute:
        now = self._now()
        async with self.engine.begin() as connection:
            found = await _row(connection, disputes, disputes.c.dispute_id, dispute_id)
            if found is None:
                raise CustomerRefusal(Problem.NOT_FOUND, "dispute_id", f"no dispute {dispute_id!r}")
            invoice = await self._locked_invoice(connection, found["invoice_id"])
            moved = await connection.execute(
                update(disputes)
                .where(and_(disputes.c.dispute_id == dispute_id, disputes.c.state == DisputeState.OPEN.value))
                .values(
                    state=resolution.state.value,
                    resolved_by=author,
                    resolved_at=utc_naive(now),
                    resolution=resolution.resolution,
                )
            )
            if not moved.rowcount:
                raise CustomerRefusal(Problem.CONFLICT, "state", f"the dispute is {found['state']}, not open")
            if resolution.state is DisputeState.CREDITED:
                granted = resolution.amount_micros or int(found["amount_micros"])
                if granted > int(found["amount_micros"]):
                    raise CustomerRefusal(
                        Problem.REFUSED, "amount_micros", f"more than the disputed {found['amount_micros']} micros"
                    )
                await self._write_credit_note(
                    connection,
                    invoice,
                    granted,
                    f"dispute {dispute_id}: {resolution.resolution}",
                    author,
                    dispute_id,
                    None,
                )
            await apply_credit(connection, invoice["billing_account_id"], now)
            stored = await _row(connection, disputes, disputes.c.dispute_id, dispute_id)
            assert stored is not None
            return await _dispute(connection, stored)

    # -- adjustments ----------------------------------------------------------------------------

    async def adjust(self, billing_account_id: str, new: NewAdjustment, author: str) -> tuple[Adjustment, bool]:
        async with self.engine.begin() as connection:
            await lock_account(connection, billing_account_id, "billing_account_id")
            if new.adjustment_id is not None:
                found = await _row(connection, adjustments, adjustments.c.adjustment_id, new.adjustment_id)
                if found is not None:
                    wanted = {
                        "billing_account_id": billing_account_id,
                        "amount_micros": new.amount_micros,
                        "reason": new.reason,
                    }
                    _same_or_conflict(found, wanted, "adjustment_id")
                    return _adjustment(found), False
            row = {
                "adjustment_id": new.adjustment_id or made_id("ADJ"),
                "billing_account_id": billing_account_id,
                "amount_micros": new.amount_micros,
                "reason": new.reason,
                "author": author,
                "created_at": utc_naive(self._now()),
                "invoice_id": None,
            }
            await connection.execute(insert(adjustments).values(**row))
        return _adjustment(row), True

    async def pending_adjustments(self, billing_account_id: str) -> list[Adjustment]:
        """The account's adjustments no invoice carries yet, oldest first (the bill run's input)."""
        query = (
            select(adjustments)
            .where(and_(adjustments.c.billing_account_id == billing_account_id, adjustments.c.invoice_id.is_(None)))
            .order_by(adjustments.c.created_at, adjustments.c.adjustment_id)
        )
        async with self.engine.connect() as connection:
            return [_adjustment(dict(row._mapping)) for row in (await connection.execute(query)).all()]


def _adjustment(row: dict[str, Any]) -> Adjustment:
    return Adjustment.model_validate({**row, "created_at": utc_aware(row["created_at"])})


async def _dispute(connection: AsyncConnection, row: dict[str, Any]) -> Dispute:
    query = select(credit_notes).where(credit_notes.c.dispute_id == row["dispute_id"])
    note = (await connection.execute(query)).first()
    resolved_at = row.get("resolved_at")
    return Dispute(
        dispute_id=row["dispute_id"],
        invoice_id=row["invoice_id"],
        billing_account_id=row["billing_account_id"],
        amount_micros=row["amount_micros"],
        state=DisputeState(row["state"]),
        ticket_id=row.get("ticket_id"),
        reason=row["reason"],
        opened_by=row["opened_by"],
        opened_at=utc_aware(row["opened_at"]),
        resolved_by=row.get("resolved_by"),
        resolved_at=utc_aware(resolved_at) if resolved_at is not None else None,
        resolution=row.get("resolution"),
        credit_note=_credit_note(dict(note._mapping)) if note is not None else None,
    )
