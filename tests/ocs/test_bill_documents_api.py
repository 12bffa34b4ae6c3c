"""A bill's document over real HTTP and from the command line: ``GET /customerBills/{id}/document``
answers the HTML or the PDF (rendered on demand when the consumer has not reached the bill, and
kept in the data directory), 404 for an unknown bill, 422 naming ``format``, 503 naming ``format``
when this server cannot print PDFs; ``ocs bill document ID --format pdf --out FILE`` writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pypdfium2
import pytest

from ocs.billing.document_store import data_directory
from ocs.billing.documents import DocumentRenderer
from ocs.db.tokens import Role
from tests.ocs.test_access import call, token
from tests.ocs.test_api import Api, api
from tests.ocs.test_billing_api import _bea_with_a_bill
from tests.ocs.test_cli import ocs

__all__ = ["api"]


async def _get(api: Api, path: str, **query: str) -> tuple[int, str, bytes]:
    async with api.session.get(api.url + path, params=query) as response:
        return response.status, response.headers["Content-Type"], await response.read()


def _pdf_text(content: bytes) -> str:
    document = pypdfium2.PdfDocument(content)
    try:
        return str(document[0].get_textpage().get_text_range())
    finally:
        document.close()


async def test_the_document_of_a_bill_in_html_and_pdf(api: Api) -> None:
    _, bill_id = await _bea_with_a_bill(api)
    status, content_type, html = await _get(api, f"/customerBills/{bill_id}/document")
    assert status == 200 and content_type == "text/html; charset=utf-8"
    assert b"Bea Example" in html and bill_id.encode() in html and b"30.00 EUR" in html
    async with api.session.get(api.url + f"/customerBills/{bill_id}/document") as response:
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Content-Disposition"] == f'inline; filename="{bill_id}.html"'
    status, content_type, pdf = await _get(api, f"/customerBills/{bill_id}/document", format="pdf")
    assert status == 200 and content_type == "application/pdf" and pdf.startswith(b"%PDF-")
    assert bill_id in _pdf_text(pdf)
    stored = data_directory(api.server.state.settings) / "invoices"
    assert sorted(path.name for path in stored.rglob(f"{bill_id}.*")) == [f"{bill_id}.html", f"{bill_id}.pdf"]
    status, body = await api.call("GET", f"/customerBills/{bill_id}/document", query={"format": "docx"})
    assert status == 422 and body["error"].startswith("format: ")
    status, body = await api.call("GET", "/customerBills/main-99999999/document")
    assert status == 404 and "main-99999999" in body["error"]


async def test_read_only_staff_read_documents_and_self_care_does_not(api: Api) -> None:
    _, bill_id = await _bea_with_a_bill(api)
    path = f"/customerBills/{bill_id}/document"
    reader = await token(api, Role.READ_ONLY)
    assert (await call(api, "GET", path, reader))[0] == 200
    assert (await call(api, "GET", path, await token(api, Role.SELF_CARE, account_id="bea")))[0] == 403


async def test_without_pango_the_pdf_is_503_naming_format_and_the_html_is_served(api: Api) -> None:
    def missing() -> Any:
        raise OSError("cannot load library 'libpango-1.0-0'")

    documents = api.server.state.documents
    assert documents is not None
    documents.renderer = DocumentRenderer(loader=missing)
    _, bill_id = await _bea_with_a_bill(api)
    status, body = await api.call("GET", f"/customerBills/{bill_id}/document", query={"format": "pdf"})
    assert status == 503 and body["error"].startswith("format: pdf cannot be made") and "pango" in body["error"]
    status, _, html = await _get(api, f"/customerBills/{bill_id}/document")
    assert status == 200 and bill_id.encode() in html


async def test_ocs_bill_document_writes_the_file(api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, bill_id = await _bea_with_a_bill(api)
    out = tmp_path / "bill.pdf"
    status, printed, err = await ocs(
        capsys, "--url", api.url, "bill", "document", bill_id, "--format", "pdf", "--out", str(out)
    )
    assert status == 0 and f"written to {out}" in printed, err
    assert bill_id in _pdf_text(out.read_bytes())
    status, printed, err = await ocs(capsys, "--url", api.url, "bill", "document", "main-99999999", "--out", str(out))
    assert status == 1 and "main-99999999" in err and "HTTP 404" in err
    assert bill_id in _pdf_text(out.read_bytes())  # a refused download leaves the file as it was
    status, _, err = await ocs(capsys, "--url", api.url, "bill", "document", bill_id, "--format", "doc", "--out", "x")
    assert status == 2 and "--format" in err
