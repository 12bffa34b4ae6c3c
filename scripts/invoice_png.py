"""Draw the first page of an invoice PDF as a PNG (pypdfium2): the README's ``docs/invoice-example.png``.

    python scripts/invoice_png.py DATA_DIR [--bill BILL_NO] [--out docs/invoice-example.png]
    python scripts/invoice_png.py FILE.pdf [--out ...]
    python scripts/invoice_png.py --example [--out ...]

DATA_DIR is a server's data directory (after ``ocs demo --data DIR``: DIR): the invoice PDF the
delivery consumer stored there, ``invoices/<YYYY>/<bill no>.pdf``: the one named by ``--bill``, else
the last by year and number. ``--example`` renders a company's invoice built here (two
departments and the account, rentals, usage, a discount, a one-off charge, 19 % tax) through the server's own
renderer (ocs/billing/documents.py), for when no demo data is at hand.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime
from pathlib import Path

import pypdfium2

from ocs.billing.documents import DocumentRenderer, InvoiceFacts, Issuer, Recipient
from ocs.billing.invoices import bill_line, customer_bill, invoice_amounts, line_rows
from ocs.billing.values import DraftLine, InvoiceDraft, LineKind

DEFAULT_OUT = Path("docs/invoice-example.png")
DOTS_PER_INCH = 110  # a README-sized page: about 910 x 1290 pixels for A4
POINTS_PER_INCH = 72  # PDF user space units
UNIT = 1_000_000
TAX_PERCENT = 19


def _taxed(kind: LineKind, description: str, amount: int, node: str | None, **explanation: object) -> DraftLine:
    cent = UNIT // 100
    tax = 0 if kind is LineKind.DISCOUNT else (amount * TAX_PERCENT // 100 + cent // 2) // cent * cent
    if kind is not LineKind.DISCOUNT:
        explanation["tax_rate_percent"] = TAX_PERCENT
    return DraftLine(
        kind=kind,
        description=description,
        amount_micros=amount,
        tax_micros=tax,
        node_id=node,
        line_id=explanation.pop("line", None),  # type: ignore[arg-type]
        explanation=explanation,  # type: ignore[arg-type]
    )


def example_facts() -> InvoiceFacts:
    """A company's March bill: what the bill run would make for ACME Logistics and its departments."""
    period = ["2026-02-01", "2026-02-28"]
    lines = [
        _taxed(LineKind.RENTAL, "Company pool, monthly fee", 29_000_000, None, period=period, rate_micros=29_000_000),
        _taxed(
            LineKind.RENTAL, "Business Mobile L, 2 lines", 79_800_000, "sales", period=period, rate_micros=39_900_000
        ),
        _taxed(
            LineKind.USAGE,
            "Voice, national",
            4_360_000,
            "sales",
            line="sales-1",
            records=57,
            units=26_160,
            unit="seconds",
            rate_micros=10_000,
            period=period,
        ),
        _taxed(
            LineKind.USAGE,
            "Data roaming, zone 1",
            12_480_000,
            "sales",
            line="sales-2",
            records=31,
            units=2_496_000_000,
            unit="octets",
            rate_micros=5_000,
            period=period,
        ),
        _taxed(LineKind.DISCOUNT, "Volume discount 10 % on usage", -1_680_000, "sales", percent=10, product="usage"),
        _taxed(LineKind.RENTAL, "Fixed Office, 1 line", 24_900_000, "warehouse", period=period, rate_micros=24_900_000),
        _taxed(
            LineKind.USAGE,
            "Fixed calls, national",
            1_270_000,
            "warehouse",
            line="warehouse-1",
            records=88,
            units=12_700,
            unit="seconds",
            rate_micros=6_000,
            period=period,
        ),
        _taxed(LineKind.ONE_OFF, "SIM card, replacement", 9_990_000, "warehouse", line="warehouse-2", product="sim"),
    ]
    draft = InvoiceDraft(
        billing_account_id="acme-logistics",
        period_start=date(2026, 2, 1),
        period_end=date(2026, 2, 28),
        due_date=date(2026, 3, 20),
        catalog_version="2026-01",
        lines=lines,
    )
    stored = line_rows(draft, "EUR")
    amounts = invoice_amounts(stored)
    row = {
        "invoice_id": "main-00000042",
        "number": "main-00000042",
        "legal_entity": "main",
        "customer_id": "acme-logistics",
        "billing_account_id": "acme-logistics",
        "issued_at": datetime(2026, 3, 1, 6, 0),
        "period_start": draft.period_start,
        "period_end": draft.period_end,
        "due_date": draft.due_date,
        "state": "sent",
        "catalog_version": draft.catalog_version,
        "currency": "EUR",
        **amounts,
        "remaining_micros": amounts["total_micros"],
    }
    bill_lines = [bill_line(row) for row in stored]
    return InvoiceFacts(
        bill=customer_bill(row, bill_lines, 0),
        recipient=Recipient(
            name="ACME Logistics GmbH",
            address_lines=("Accounts payable", "Hafenstrasse 12", "20457 Hamburg", "Germany"),
        ),
        node_names={"sales": "Sales department", "warehouse": "Warehouse Hamburg"},
        line_names={
            "sales-1": "+49 151 2345 6701",
            "sales-2": "+49 151 2345 6702",
            "warehouse-1": "+49 40 1234 5600",
            "warehouse-2": "+49 151 2345 6710",
        },
    )


EXAMPLE_ISSUER = Issuer(
    name="Open OCS Telecom",
    address_lines=("1 Network Way", "10115 Berlin", "Germany"),
    tax_id="DE123456789",
    payment_instructions="Bank transfer to IBAN DE89 3704 0044 0532 0130 00 (BIC COBADEFFXXX), "
    "or direct debit as agreed.",
)


def example_pdf() -> bytes:
    facts = example_facts()
    renderer = DocumentRenderer()
    html = renderer.invoice_html(facts, EXAMPLE_ISSUER)
    pdf = renderer.pdf(html, identifier=f"main/{facts.bill.bill_no}", created=facts.bill.bill_date)
    if isinstance(pdf, str):
        raise SystemExit(f"invoice_png: {pdf}")
    return pdf


def pdf_in(directory: Path, bill_no: str | None) -> Path:
    """The invoice PDF of ``bill_no`` in a data directory, else its last one."""
    found = sorted((directory / "invoices").glob(f"*/{bill_no or '*'}.pdf"))
    if not found:
        raise SystemExit(f"invoice_png: no invoice PDF {bill_no or ''} under {directory / 'invoices'}")
    return found[-1]


def first_page_png(pdf: bytes, out: Path, dots_per_inch: int = DOTS_PER_INCH) -> tuple[int, int]:
    document = pypdfium2.PdfDocument(pdf)
    try:
        image = document[0].render(scale=dots_per_inch / POINTS_PER_INCH).to_pil()
    finally:
        document.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, format="PNG", optimize=True)
    return image.size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, help="a data directory or an invoice PDF")
    parser.add_argument("--bill", help="the bill number, in a data directory")
    parser.add_argument("--example", action="store_true", help="render the example invoice built here")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--dpi", type=int, default=DOTS_PER_INCH)
    arguments = parser.parse_args(argv)
    if arguments.example == (arguments.source is not None):
        parser.error("give a data directory or a PDF, or --example")
    if arguments.example:
        pdf = example_pdf()
    elif arguments.source.is_dir():
        pdf = pdf_in(arguments.source, arguments.bill).read_bytes()
    else:
        pdf = arguments.source.read_bytes()
    width, height = first_page_png(pdf, arguments.out, arguments.dpi)
    print(f"{arguments.out}: {width} x {height} pixels")
    return 0


if __name__ == "__main__":
    sys.exit(main())
