"""The delivery outbox's consumer on the real stores (SQLite and a private PostgreSQL) and a real
data directory: an issued invoice becomes ``<data>/invoices/<YYYY>/<bill no>.html`` and ``.pdf``
and one ``invoice_ready`` event; a crash between rendering and the acknowledgement renders the
same files again and hands on once; racing consumers hand on once; a bill that cannot be stored
waits for the next pass; other kinds of events are left to their readers; without pango the HTML
is still delivered; files are replaced atomically."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pypdfium2
import pytest
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.billing.delivery import INVOICE_READY, BillDocuments
from ocs.billing.document_store import DocumentStore
from ocs.billing.documents import DocumentFormat, DocumentRenderer, Issuer
from ocs.billing.invoices import INVOICE_ISSUED, Invoices
from ocs.db.billing import delivery_outbox
from ocs.db.customers import parties
from ocs.db.schema import utc_naive
from tests.ocs.billing_support import MOMENT, Clock, add_account, clock, database, draft
from tests.ocs.postgres_support import postgresql_url

__all__ = ["clock", "database", "postgresql_url"]

ISSUER = Issuer(name="Open OCS Telecom", address_lines=("1 Network Way",), payment_instructions="IBAN BE71")


@pytest.fixture(scope="module")
def renderer() -> DocumentRenderer:
    return DocumentRenderer()


async def _issued(database: AsyncEngine, clock: Clock, account: str = "ba-1") -> str:
    await add_account(database, account)
    async with database.begin() as connection:  # a postal address and a mail address for the letter
        contacts = [
            {"kind": "postal", "value": "Rua Augusta 1\n1100-053 Lisboa"},
            {"kind": "email", "value": "ana@example.org"},
        ]
        await connection.execute(
            update(parties).where(parties.c.party_id == f"P-{account}").values(contact_media=contacts)
        )
    return (await Invoices(database, clock=clock).issue(draft(account, 2, 30))).bill.id


async def _events(database: AsyncEngine, kind: str) -> list[dict[str, Any]]:
    async with database.connect() as connection:
        rows = await connection.execute(
            select(delivery_outbox).where(delivery_outbox.c.kind == kind).order_by(delivery_outbox.c.event_id)
        )
        return [dict(row._mapping) for row in rows]


def _documents(database: AsyncEngine, tmp_path: Path, clock: Clock, renderer: DocumentRenderer) -> BillDocuments:
    return BillDocuments(database, tmp_path / "data", ISSUER, renderer, clock=clock)


async def test_an_issued_invoice_becomes_stored_files_and_one_ready_event(
    database: AsyncEngine, clock: Clock, tmp_path: Path, renderer: DocumentRenderer
) -> None:
    bill_id = await _issued(database, clock)
    documents = _documents(database, tmp_path, clock, renderer)
    done = await documents.deliver_once()
    assert (done.events, done.ready, done.failures) == (1, 1, [])
    assert done.documents == {DocumentFormat.HTML: 1, DocumentFormat.PDF: 1}
    html_path = tmp_path / "data" / "invoices" / str(MOMENT.year) / f"{bill_id}.html"
    pdf_path = html_path.with_suffix(".pdf")
    html = html_path.read_text(encoding="utf-8")
    assert "Ana Lima" in html and "Rua Augusta 1" in html and "1100-053 Lisboa" in html and "30.00 EUR" in html
    document = pypdfium2.PdfDocument(pdf_path.read_bytes())
    try:
        assert bill_id in document[0].get_textpage().get_text_range()
    finally:
        document.close()
    [ready] = await _events(database, INVOICE_READY)
    [issued] = await _events(database, INVOICE_ISSUED)
    assert issued["delivered_at"] is not None and ready["delivered_at"] is None  # the mailer's to read
    assert ready["invoice_id"] == bill_id and ready["payload"]["issued_event_id"] == issued["event_id"]
    assert ready["payload"]["html_path"] == str(html_path.resolve())
    assert ready["payload"]["pdf_path"] == str(pdf_path.resolve()) and ready["payload"]["bill_no"] == bill_id
    again = await documents.deliver_once()
    assert (again.events, again.ready) == (0, 0) and len(await _events(database, INVOICE_READY)) == 1


async def test_a_crash_between_rendering_and_acknowledging_renders_the_same_files_and_hands_on_once(
    database: AsyncEngine, clock: Clock, tmp_path: Path, renderer: DocumentRenderer
) -> None:
    bill_id = await _issued(database, clock)
    documents = _documents(database, tmp_path, clock, renderer)
    crashed = await documents.render(bill_id)  # the pass rendered, then the process died
    assert crashed.pdf_path is not None
    first = (crashed.html_path.read_bytes(), crashed.pdf_path.read_bytes())
    clock.now += 3_600  # it restarts an hour later
    done = await documents.deliver_once()
    assert done.ready == 1 and (crashed.html_path.read_bytes(), crashed.pdf_path.read_bytes()) == first
    assert len(await _events(database, INVOICE_READY)) == 1
    assert (await documents.deliver_once()).ready == 0


async def test_racing_consumers_hand_an_event_on_once(
    database: AsyncEngine, clock: Clock, tmp_path: Path, renderer: DocumentRenderer
) -> None:
    bill_id = await _issued(database, clock)
    documents = _documents(database, tmp_path, clock, renderer)
    [event] = await documents.invoices.undelivered(kinds=(INVOICE_ISSUED,))
    made = await documents.render(bill_id)
    outcomes = await asyncio.gather(*(documents.hand_on(event, made) for _ in range(4)))
    assert sorted(outcomes) == [False, False, False, True]
    assert len(await _events(database, INVOICE_READY)) == 1


async def test_a_bill_that_cannot_be_stored_waits_for_the_next_pass_and_other_kinds_are_left_alone(
    database: AsyncEngine, clock: Clock, tmp_path: Path, renderer: DocumentRenderer
) -> None:
    bill_id = await _issued(database, clock)
    async with database.begin() as connection:  # another reader's event (the dunning letters)
        await connection.execute(
            insert(delivery_outbox).values(
                kind="reminder", invoice_id=bill_id, payload={}, created_at=utc_naive(MOMENT)
            )
        )
    blocked = tmp_path / "data" / "invoices"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where the directory should be")
    documents = _documents(database, tmp_path, clock, renderer)
    failed = await documents.deliver_once()
    assert failed.ready == 0 and [invoice for invoice, _ in failed.failures] == [bill_id]
    assert "NotADirectoryError" in failed.failures[0][1] or "FileExistsError" in failed.failures[0][1]
    assert [event.kind for event in await documents.invoices.undelivered()] == [INVOICE_ISSUED, "reminder"]
    blocked.unlink()
    done = await documents.deliver_once()
    assert (done.ready, done.failures) == (1, [])
    undelivered = [event.kind for event in await documents.invoices.undelivered()]
    assert undelivered == ["reminder", INVOICE_READY]  # the reminder is still its reader's


async def test_without_pango_the_html_is_delivered_and_the_ready_event_says_why_there_is_no_pdf(
    database: AsyncEngine, clock: Clock, tmp_path: Path
) -> None:
    def missing() -> Any:
        raise OSError("cannot load library 'libpango-1.0-0'")

    bill_id = await _issued(database, clock)
    documents = _documents(database, tmp_path, clock, DocumentRenderer(loader=missing))
    done = await documents.deliver_once()
    assert done.ready == 1 and done.documents == {DocumentFormat.HTML: 1, DocumentFormat.PDF: 0}
    assert done.pdf_unavailable is not None and "pango" in done.pdf_unavailable
    [ready] = await _events(database, INVOICE_READY)
    assert ready["payload"]["pdf_path"] is None and "pango" in ready["payload"]["pdf_unavailable"]
    assert Path(ready["payload"]["html_path"]).is_file()
    assert not list((tmp_path / "data").rglob("*.pdf")) and bill_id in ready["payload"]["html_path"]


def test_a_document_is_replaced_atomically_and_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    store = DocumentStore(tmp_path)
    path = tmp_path / "invoices" / "2026" / "main-00000001.html"
    store.write(path, b"first")
    store.write(path, b"second")
    assert path.read_bytes() == b"second" and os.stat(path).st_mode & 0o777 == 0o640
    with pytest.raises(TypeError):
        store.write(path, "not bytes")  # type: ignore[arg-type]  # fails half-way, after the temporary file
    assert path.read_bytes() == b"second"
    assert sorted(item.name for item in path.parent.iterdir()) == ["main-00000001.html"]  # no temporary left
