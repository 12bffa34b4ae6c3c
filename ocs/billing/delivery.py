"""Bill documents made and handed on: the delivery outbox's ``invoice_issued`` events become stored
HTML and PDF files and one ``invoice_ready`` event each, for a mailer or a print house.

Theory of operation: ``Invoices.issue`` queues an ``invoice_issued`` event in ``delivery_outbox``
in the transaction that stores the bill. ``BillDocuments.deliver_once`` reads the oldest of those
not yet acknowledged (other kinds are other readers': a mailer reads ``invoice_ready`` and
``reminder``), and for each:

1. reads the bill's facts (the bill, its customer's name and postal address, the names of its
   nodes and lines: ``ocs.billing.documents.InvoiceFacts``);
2. renders and stores the documents, in a thread (``ocs.billing.documents``: WeasyPrint is
   CPU-bound and must not hold the event loop, which also answers Diameter;
   ``ocs.billing.document_store``: atomic writes);
3. in one transaction, acknowledges the ``invoice_issued`` event (``delivered_at`` set, only
   where it was still unset) and, only when that acknowledgement took, queues ``invoice_ready``
   with the files' paths and the issued event's id (``issued_event_id``).

A crash after 2 and before 3 leaves the event unacknowledged: the next pass renders again, which
writes the same bytes (the HTML always; the PDF as far as WeasyPrint allows, see
``ocs.billing.documents``), and queues ``invoice_ready`` once. Two consumers racing on one event
(a lease that changed hands during a pause) both render, but only the one whose acknowledgement
changed the row queues ``invoice_ready``: the other's transaction sees the row taken and writes
nothing. A bill that fails to render stays unacknowledged, is counted, and is tried again at the
next pass; the others go on.

Without WeasyPrint's C libraries (pango) the HTML is still rendered and stored, and
``invoice_ready`` says ``pdf_path: null`` with ``pdf_unavailable`` giving the reason; the pass
reports it, for the server's log line and metric. ``document`` answers the API: the stored file,
or the documents rendered and stored on demand when the consumer has not reached the bill yet.

The pass is a plain async function of its inputs (the database and the data directory), so the
server can run it under a lease, once for all its worker processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing.document_store import DocumentStore, data_directory
from ocs.billing.documents import DocumentFormat, DocumentRenderer, InvoiceFacts, Issuer, Recipient
from ocs.billing.invoices import INVOICE_ISSUED, DeliveryEvent, Invoices, read_bill
from ocs.config import Settings
from ocs.customers.service import CustomerRefusal, Problem
from ocs.db.billing import delivery_outbox
from ocs.db.customers import customer_nodes, customers, lines, parties
from ocs.db.schema import utc_naive

INVOICE_READY = "invoice_ready"
DEFAULT_BATCH = 50  # invoices per pass: a pass of about a minute of printing at most


class DocumentUnavailable(Exception):
    """The format cannot be made on this server (the PDF without pango); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StoredDocuments:
    bill_no: str
    html_path: Path
    pdf_path: Path | None  # None: no PDF printer on this server
    pdf_unavailable: str | None = None  # why there is no PDF


@dataclass(slots=True)
class DeliveryPass:
    """What one pass did: documents written by format, events handed on, bills that failed."""

    events: int = 0  # invoice_issued events read
    documents: dict[DocumentFormat, int] = field(default_factory=lambda: dict.fromkeys(DocumentFormat, 0))
    ready: int = 0  # invoice_ready events queued
    failures: list[tuple[str, str]] = field(default_factory=list)  # (invoice id, error)
    pdf_unavailable: str | None = None


def _recipient(party: Any, fallback: str) -> Recipient:
    """The customer's party row as the letter's recipient: the organization's name or the person's,
    the postal address (each line of each postal contact) and the first e-mail address."""
    if party is None:
        return Recipient(name=fallback)
    contacts = [medium for medium in party.contact_media or [] if isinstance(medium, dict)]
    postal = [
        line.strip()
        for medium in contacts
        if medium.get("kind") == "postal"
        for line in str(medium.get("value", "")).splitlines()
        if line.strip()
    ]
    email = next((str(medium.get("value", "")) for medium in contacts if medium.get("kind") == "email"), "")
    person = " ".join(part for part in (party.given_name, party.family_name) if part)
    return Recipient(name=party.organization_name or person or fallback, address_lines=tuple(postal), email=email)


class BillDocuments:
    def __init__(
        self,
        engine: AsyncEngine,
        directory: Path,
        issuer: Issuer,
        renderer: DocumentRenderer,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.store = DocumentStore(directory)
        self.issuer = issuer
        self.renderer = renderer
        self.clock = clock
        self.invoices = Invoices(engine, clock=clock)

    async def facts(self, invoice_id: str) -> InvoiceFacts:
        """The bill and who and what it names; an unknown bill is refused naming ``id``."""
        async with self.engine.connect() as connection:
            bill = await read_bill(connection, invoice_id)
            if bill is None:
                raise CustomerRefusal(Problem.NOT_FOUND, "id", f"no customer bill {invoice_id!r}")
            node_rows = await connection.execute(
                select(customer_nodes.c.node_id, customer_nodes.c.name).where(
                    customer_nodes.c.customer_id == bill.customer_id
                )
            )
            line_rows = await connection.execute(
                select(lines.c.line_id, lines.c.name).where(lines.c.customer_id == bill.customer_id)
            )
            node_names = {row.node_id: row.name for row in node_rows}
            line_names = {row.line_id: row.name for row in line_rows}
            party = (
                await connection.execute(
                    select(parties)
                    .join(customers, customers.c.party_id == parties.c.party_id)
                    .where(customers.c.customer_id == bill.customer_id)
                )
            ).first()
        return InvoiceFacts(
            bill=bill,
            recipient=_recipient(party, bill.customer_id),
            node_names=node_names,
            line_names=line_names,
        )

    def _render_and_store(self, facts: InvoiceFacts) -> StoredDocuments:
        """Blocking: run in a thread."""
        bill = facts.bill
        html = self.renderer.invoice_html(facts, self.issuer)
        html_path = self.store.path(bill, DocumentFormat.HTML)
        self.store.write(html_path, html.encode("utf-8"))
        pdf = self.renderer.pdf(html, identifier=f"{bill.legal_entity}/{bill.bill_no}", created=bill.bill_date)
        if isinstance(pdf, str):
            return StoredDocuments(bill.bill_no, html_path, None, pdf)
        pdf_path = self.store.path(bill, DocumentFormat.PDF)
        self.store.write(pdf_path, pdf)
        return StoredDocuments(bill.bill_no, html_path, pdf_path)

    async def render(self, invoice_id: str) -> StoredDocuments:
        """The bill's documents rendered and stored (again: the same bytes)."""
        facts = await self.facts(invoice_id)
        return await asyncio.to_thread(self._render_and_store, facts)

    async def document(self, invoice_id: str, document_format: DocumentFormat) -> bytes:
        """The stored document, rendered first when it is not there yet."""
        async with self.engine.connect() as connection:
            bill = await read_bill(connection, invoice_id, with_lines=False)
        if bill is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "id", f"no customer bill {invoice_id!r}")
        path = self.store.path(bill, document_format)
        stored = await asyncio.to_thread(self.store.read, path)
        if stored is not None:
            return stored
        made = await self.render(invoice_id)
        if document_format is DocumentFormat.PDF and made.pdf_path is None:
            raise DocumentUnavailable(made.pdf_unavailable or "no PDF printer")
        content = await asyncio.to_thread(self.store.read, path)
        assert content is not None  # just written
        return content

    async def deliver_once(self, batch: int = DEFAULT_BATCH) -> DeliveryPass:
        """One pass over the issued invoices waiting for their documents (see the module docstring)."""
        outcome = DeliveryPass()
        events = await self.invoices.undelivered(batch, kinds=(INVOICE_ISSUED,))
        outcome.events = len(events)
        for event in events:
            if event.invoice_id is None:  # not an invoice's: nothing to render, nothing to hold back
                await self.invoices.acknowledge(event.event_id)
                continue
            try:
                made = await self.render(event.invoice_id)
            except Exception as error:  # this bill waits for the next pass; the others go on
                outcome.failures.append((event.invoice_id, f"{type(error).__name__}: {error}"))
                continue
            outcome.documents[DocumentFormat.HTML] += 1
            if made.pdf_path is not None:
                outcome.documents[DocumentFormat.PDF] += 1
            else:
                outcome.pdf_unavailable = made.pdf_unavailable
            if await self.hand_on(event, made):
                outcome.ready += 1
        return outcome

    async def hand_on(self, event: DeliveryEvent, made: StoredDocuments) -> bool:
        """Acknowledge ``event`` and queue its ``invoice_ready``, in one transaction; False (and
        nothing written) when the event was acknowledged already."""
        now = utc_naive(datetime.fromtimestamp(self.clock(), UTC))
        async with self.engine.begin() as connection:
            taken = await connection.execute(
                update(delivery_outbox)
                .where(and_(delivery_outbox.c.event_id == event.event_id, delivery_outbox.c.delivered_at.is_(None)))
                .values(delivered_at=now)
            )
            if taken.rowcount != 1:
                return False
            payload: dict[str, object] = {
                **event.payload,
                "issued_event_id": event.event_id,
                "html_path": str(made.html_path.resolve()),
                "pdf_path": None if made.pdf_path is None else str(made.pdf_path.resolve()),
                "pdf_unavailable": made.pdf_unavailable,
            }
            await connection.execute(
                insert(delivery_outbox).values(
                    kind=INVOICE_READY, invoice_id=event.invoice_id, payload=payload, created_at=now
                )
            )
        return True


def bill_documents(settings: Settings, engine: AsyncEngine, renderer: DocumentRenderer) -> BillDocuments:
    """The server's bill documents: its data directory, the ``[billing]`` issuer."""
    billing = settings.billing
    issuer = Issuer(
        name=billing.issuer_name,
        address_lines=billing.issuer_address,
        tax_id=billing.issuer_tax_id,
        payment_instructions=billing.payment_instructions,
    )
    return BillDocuments(engine, data_directory(settings), issuer, renderer)
