"""Bill documents rendered (ocs/billing/documents.py): the HTML names every line under its node
with the node's subtotal, each line's explanation, the totals and the amount due, money exactly
from integer micros with its currency; a customer's ``<script>`` is printed escaped; the same
facts give the same bytes; the PDF is a real PDF whose text has the bill number and whose dates
are the bill's; and without WeasyPrint's C libraries the PDF is refused with the reason."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

import pypdfium2
import pytest

from ocs.billing.documents import DocumentRenderer, InvoiceFacts, Issuer, Recipient, money_text, pdf_printer
from ocs.billing.invoices import customer_bill
from ocs.billing.values import BillLine, CustomerBill, LineKind
from ocs.metrics import Metrics

UNIT = 1_000_000
ISSUER = Issuer(
    name="Open OCS Telecom",
    address_lines=("1 Network Way", "1000 Brussels"),
    tax_id="BE0123456789",
    payment_instructions="IBAN BE71 0961 2345 6769",
)


def _line(position: int, kind: LineKind, description: str, amount: int, tax: int = 0, **more: Any) -> BillLine:
    return BillLine(
        position=position,
        kind=kind,
        description=description,
        node_id=more.get("node_id"),
        line_id=more.get("line_id"),
        amount_micros=amount,
        tax_micros=tax,
        priced_amount_micros=amount,
        priced_tax_micros=tax,
        explanation=more.get("explanation", {}),
    )


def a_bill(currency: str = "EUR") -> CustomerBill:
    """A company's bill: a rental on the account, usage and a discount in the sales department."""
    lines = [
        _line(
            1,
            LineKind.RENTAL,
            "Business Unlimited, monthly rental",
            1_234_500_000,
            259_245_000,
            explanation={"period": ["2026-02-01", "2026-02-28"], "rate_micros": 1_234_500_000, "days": 28},
        ),
        _line(
            2,
            LineKind.USAGE,
            "Voice calls, national",
            12_345_678,
            2_592_592,
            node_id="dept-sales",
            line_id="line-1",
            explanation={"records": 42, "units": 7380, "unit": "seconds", "rate_micros": 100_000},
        ),
        _line(3, LineKind.DISCOUNT, "10% off usage", -1_234_567, node_id="dept-sales", explanation={"percent": 10}),
    ]
    row = {
        "invoice_id": "main-00000007",
        "number": "main-00000007",
        "legal_entity": "main",
        "customer_id": "acme",
        "billing_account_id": "acme-ba",
        "issued_at": datetime(2026, 3, 1, 9, 0),
        "period_start": date(2026, 2, 1),
        "period_end": date(2026, 2, 28),
        "due_date": date(2026, 3, 20),
        "state": "sent",
        "catalog_version": "2026-01",
        "currency": currency,
        "subtotal_micros": 1_246_845_678,
        "discount_micros": 1_234_567,
        "tax_micros": 261_837_592,
        "total_micros": 1_507_448_703,
        "remaining_micros": 1_507_448_703,
    }
    return customer_bill(row, lines, 0)


def facts(name: str = "ACME Ltd") -> InvoiceFacts:
    return InvoiceFacts(
        bill=a_bill(),
        recipient=Recipient(name=name, address_lines=("12 Harbour Street", "1000 Brussels")),
        node_names={"dept-sales": "Sales department"},
        line_names={"line-1": "+32 470 12 34 56"},
    )


@pytest.fixture(scope="module")
def renderer() -> DocumentRenderer:
    return DocumentRenderer()


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (0, "0.00 EUR"),
        (1, "0.000001 EUR"),
        (12_500_000, "12.50 EUR"),
        (-1_234_567_891, "-1,234.567891 EUR"),
        (1_000_000_000_000, "1,000,000.00 EUR"),
    ],
)
def test_money_is_printed_exactly_from_micros(micros: int, text: str) -> None:
    assert money_text(micros, "EUR") == text


def test_money_is_printed_with_at_least_the_currencys_decimals() -> None:
    assert money_text(1_235_000_000, "JPY") == "1,235 JPY"
    assert money_text(1_235_000, "KWD") == "1.235 KWD"
    assert money_text(423_210_000, "USD") == "423.21 USD"


def test_the_html_has_every_line_under_its_node_with_subtotals_and_totals(renderer: DocumentRenderer) -> None:
    html = renderer.invoice_html(facts(), ISSUER)
    for expected in (
        "<title>Invoice main-00000007</title>",
        "Open OCS Telecom",
        "Tax ID BE0123456789",
        "ACME Ltd",
        "12 Harbour Street",
        "2026-02-01 to 2026-02-28",  # the period, and the rental's explanation
        "2026-03-20",
        "Account charges",
        "Sales department",
        "+32 470 12 34 56",  # the line's name, not its id
        "1,234.50 EUR",  # the rental, grouped
        "12.345678 EUR",  # usage to the micro, not rounded
        "-1.234567 EUR",
        "Subtotal Sales department",
        "11.111111 EUR",  # the department: usage less its discount
        "usage records:</span> 42",
        "units:</span> 7,380",
        "rate:</span> 0.10 EUR",
        "share:</span> 10 %",
        "1,507.448703 EUR",  # total and amount due
        "IBAN BE71 0961 2345 6769",
        '<meta name="dcterms.created" content="2026-03-01T09:00:00Z">',
    ):
        assert expected in html, expected
    assert html.index("Account charges") < html.index("Business Unlimited") < html.index("Sales department")
    assert html.index("Sales department") < html.index("Voice calls") < html.index("Subtotal Sales department")


def test_a_customer_name_with_markup_is_printed_escaped(renderer: DocumentRenderer) -> None:
    html = renderer.invoice_html(facts("<script>alert('x')</script> & Sons"), ISSUER)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Sons" in html
    assert "<script" not in html


def test_the_same_facts_give_the_same_html_bytes() -> None:
    first = DocumentRenderer().invoice_html(facts(), ISSUER)
    assert DocumentRenderer().invoice_html(facts(), ISSUER) == first
    assert DocumentRenderer().invoice_html(facts("ACME SA"), ISSUER) != first


def test_the_pdf_is_a_pdf_with_the_bill_number_and_the_bill_date(
    renderer: DocumentRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = facts()
    html = renderer.invoice_html(made, ISSUER)
    pdf = renderer.pdf(html, identifier="main/main-00000007", created=made.bill.bill_date)
    assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF-")
    document = pypdfium2.PdfDocument(pdf)
    try:
        text = document[0].get_textpage().get_text_range()
        metadata = document.get_metadata_dict()
    finally:
        document.close()
    assert "main-00000007" in text and "1,507.448703 EUR" in text
    assert metadata["CreationDate"].startswith("D:20260301090000")
    later = time.time() + 86_400  # printed again a day later: the fonts' stamps must not follow the clock
    monkeypatch.setattr(time, "time", lambda: later)
    again = renderer.pdf(html, identifier="main/main-00000007", created=made.bill.bill_date)
    assert again == pdf  # the same bill prints to the same bytes


def test_without_pango_there_is_no_pdf_and_the_reason_says_why() -> None:
    def missing() -> Any:
        raise OSError("cannot load library 'libpango-1.0-0'")

    assert "libpango" in str(pdf_printer(missing))
    renderer = DocumentRenderer(loader=missing)
    html = renderer.invoice_html(facts(), ISSUER)  # the HTML is made all the same
    reason = renderer.pdf(html, identifier="x", created=datetime(2026, 3, 1, tzinfo=UTC))
    assert isinstance(reason, str) and "pango" in reason and "OSError" in reason


def test_a_pass_is_counted_by_format_and_failures_by_reason() -> None:
    metrics = Metrics(process_collectors=False)
    metrics.documents_delivered(html=3, pdf=2, failed=1, without_pdf=1)
    metrics.documents_delivered(html=0, pdf=0, failed=0, without_pdf=0)  # an idle pass adds nothing
    registry = metrics.registry
    assert registry.get_sample_value("ocs_bill_documents_rendered_total", {"format": "html"}) == 3
    assert registry.get_sample_value("ocs_bill_documents_rendered_total", {"format": "pdf"}) == 2
    assert registry.get_sample_value("ocs_bill_document_failures_total", {"reason": "render"}) == 1
    assert registry.get_sample_value("ocs_bill_document_failures_total", {"reason": "no_pdf_printer"}) == 1
