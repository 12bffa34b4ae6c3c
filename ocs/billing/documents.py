"""Bill documents: a customer bill (TMF678) rendered to HTML with Jinja2 and to PDF with WeasyPrint.

Theory of operation: a document is a function of its facts: the bill as issued (``CustomerBill``),
who receives it (``Recipient``: the customer's name and postal address), the names of the nodes and
lines its charges belong to, and the issuer (``Issuer``, the ``[billing]`` settings). ``invoice_view``
turns those facts into plain strings (money formatted from integer micros, exactly, with its
currency; each line's ``explanation`` as label and value pairs); ``DocumentRenderer.html`` fills the
document kind's template (``templates/<kind>.html.j2``: one template per kind, so a statement or a
reminder letter is a new template and a new view, not a new renderer) with autoescaping on, so a
name such as ``<script>`` is printed, never run. The HTML carries its own stylesheet, laid out for
A4, and has no reference outside itself: the same bytes are the web page, the mail attachment and
the PDF's source. Nothing of the moment of rendering enters it (the bill's state and what is left
to pay change with payments and are not printed: the document is the bill as issued), so the same
facts always give the same bytes.

``DocumentRenderer.pdf`` prints that HTML with WeasyPrint. WeasyPrint needs pango (a C library);
``pdf_printer()`` imports it once, lazily, and answers the reason instead when it cannot load, so a
server without pango renders the HTML and says why there is no PDF, never crashes. The PDF's dates
are the bill's (``dcterms.created`` and ``dcterms.modified`` in the HTML), its file identifier is
made from the bill number, and the fonts WeasyPrint subsets carry the bill's date as their stamp
(fontTools reads ``SOURCE_DATE_EPOCH``, the reproducible-builds convention; it is set around each
print under a lock because the environment is the process's): the same bill prints to the same
bytes with the same WeasyPrint and fonts. Printing is CPU work of a second or so: callers run it
in a thread (``asyncio.to_thread``), and the lock also keeps to one print at a time.
"""

from __future__ import annotations

import enum
import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from pydantic import JsonValue

from ocs.billing.minor_units import MICROS_PER_UNIT, exponent
from ocs.billing.values import BillLine, CustomerBill, LineKind

TEMPLATE_PACKAGE = "ocs.billing"


class DocumentKind(enum.StrEnum):
    """What is rendered; each kind has its template ``templates/<kind>.html.j2``."""

    INVOICE = "invoice"


class DocumentFormat(enum.StrEnum):
    HTML = "html"
    PDF = "pdf"


CONTENT_TYPES = {DocumentFormat.HTML: "text/html; charset=utf-8", DocumentFormat.PDF: "application/pdf"}


@dataclass(frozen=True, slots=True)
class Issuer:
    """Who issues the bills: printed at the top of every document (the ``[billing]`` settings)."""

    name: str
    address_lines: tuple[str, ...] = ()
    tax_id: str = ""
    payment_instructions: str = ""


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who receives the bill: the customer's name and postal address."""

    name: str
    address_lines: tuple[str, ...] = ()
    email: str = ""


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    """Everything an invoice document is made from (see the module docstring)."""

    bill: CustomerBill
    recipient: Recipient
    node_names: Mapping[str, str] = field(default_factory=dict)
    line_names: Mapping[str, str] = field(default_factory=dict)


def money_text(micros: int, currency: str) -> str:
    """Integer micros as the amount printed, exactly: thousands grouped, at least the currency's
    decimals (ISO 4217: 2 for EUR, none for JPY; ``ocs.billing.minor_units``) and at most 6, and
    the currency: ``-1234567891`` -> ``-1,234.567891 EUR``, ``1235000000`` -> ``1,235 JPY``."""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    digits = f"{fraction:06d}".rstrip("0").ljust(exponent(currency), "0")
    sign = "-" if micros < 0 else ""
    return f"{sign}{whole:,}{'.' if digits else ''}{digits} {currency}"


# Labels of the explanation fields the bill run writes (records, units, rate, period, discount);
# any other field is printed under its own name, so a new field is never lost from the document.
_LABELS = {
    "records": "usage records",
    "units": "units",
    "unit": "unit",
    "service": "service",
    "rate": "rate",
    "rate_micros": "rate",
    "price_micros": "price",
    "period": "period",
    "days": "days",
    "discount": "discount applied",
    "discount_micros": "discount applied",
    "percent": "share",
    "tax_rate_percent": "tax rate",
    "tax_category": "tax category",
    "product": "product",
    "plan": "plan",
}


def _value_text(key: str, value: JsonValue, currency: str) -> str:
    if key.endswith("_micros") and isinstance(value, int) and not isinstance(value, bool):
        return money_text(value, currency)
    if (key == "percent" or key.endswith("_percent")) and isinstance(value, int | str) and not isinstance(value, bool):
        return f"{value} %"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(item, str) for item in value):
        return f"{value[0]} to {value[1]}"  # a period: first and last day
    if isinstance(value, list):
        return ", ".join(_value_text(key, item, currency) for item in value)
    if isinstance(value, dict):
        return "; ".join(f"{_label(name)}: {_value_text(name, item, currency)}" for name, item in value.items())
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def _label(key: str) -> str:
    return _LABELS.get(key, key.removesuffix("_micros").replace("_", " "))


def explanation_items(explanation: Mapping[str, JsonValue], currency: str) -> list[tuple[str, str]]:
    """A line's explanation as (label, value) pairs, in the order the bill run wrote them."""
    return [(_label(key), _value_text(key, value, currency)) for key, value in explanation.items()]


@dataclass(frozen=True, slots=True)
class _Row:
    position: int
    kind: str
    description: str
    line_name: str
    amount: str
    tax: str
    explanation: list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class _Group:
    title: str
    rows: list[_Row]
    amount: str
    tax: str


def _groups(facts: InvoiceFacts) -> list[_Group]:
    bill = facts.bill
    currency = bill.amount_due.unit
    by_node: dict[str | None, list[BillLine]] = {}
    for line in bill.lines:
        by_node.setdefault(line.node_id, []).append(line)
    groups: list[_Group] = []
    for subtotal in bill.subtotals:  # the account's own charges first, then each node by id
        node = subtotal.node_id
        title = "Account charges" if node is None else facts.node_names.get(node, node)
        rows = [
            _Row(
                position=line.position,
                kind=line.kind.value.replace("_", "-"),
                description=line.description,
                line_name="" if line.line_id is None else facts.line_names.get(line.line_id, line.line_id),
                amount=money_text(line.amount_micros, currency),
                tax=money_text(line.tax_micros, currency) if line.tax_micros or line.kind is LineKind.TAX else "",
                explanation=explanation_items(line.explanation, currency),
            )
            for line in by_node.get(node, [])
        ]
        amount, tax = money_text(subtotal.amount_micros, currency), money_text(subtotal.tax_micros, currency)
        groups.append(_Group(title=title, rows=rows, amount=amount, tax=tax))
    return groups


def invoice_view(facts: InvoiceFacts, issuer: Issuer) -> dict[str, Any]:
    """The invoice template's values: every amount already a string (see ``money_text``)."""
    bill = facts.bill
    currency = bill.amount_due.unit
    discount = bill.discount_amount.value_micros
    return {
        "issuer": issuer,
        "recipient": facts.recipient,
        "bill_no": bill.bill_no,
        "customer_id": bill.customer_id,
        "billing_account_id": bill.billing_account_id,
        "bill_date": bill.bill_date.date().isoformat(),
        "created": bill.bill_date.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "period_start": bill.billing_period.start_date.isoformat(),
        "period_end": bill.billing_period.end_date.isoformat(),
        "due_date": bill.payment_due_date.isoformat(),
        "currency": currency,
        "groups": _groups(facts),
        "charges": money_text(bill.tax_excluded_amount.value_micros + discount, currency),
        "discount": money_text(-discount, currency) if discount else "",
        "net": money_text(bill.tax_excluded_amount.value_micros, currency),
        "tax": money_text(bill.tax_amount.value_micros, currency),
        "total": money_text(bill.tax_included_amount.value_micros, currency),
        "amount_due": money_text(bill.amount_due.value_micros, currency),
    }


# One print at a time in the process: SOURCE_DATE_EPOCH is process-wide (see the module docstring).
_PRINT_LOCK = threading.Lock()


class PdfPrinter:
    """WeasyPrint, loaded: HTML in, PDF bytes out (see the module docstring on fixed bytes)."""

    def __init__(self, weasyprint: Any) -> None:
        self._weasyprint = weasyprint

    def print(self, html: str, *, identifier: str, created: datetime) -> bytes:
        weasyprint = self._weasyprint
        fetcher = weasyprint.URLFetcher(allowed_protocols=("data",))  # the document reaches nothing outside
        with _PRINT_LOCK:
            earlier = os.environ.get("SOURCE_DATE_EPOCH")
            os.environ["SOURCE_DATE_EPOCH"] = str(int(created.timestamp()))
            try:
                document = weasyprint.HTML(string=html, url_fetcher=fetcher)
                pdf: bytes = document.write_pdf(pdf_identifier=hashlib.sha256(identifier.encode()).digest()[:16])
            finally:
                if earlier is None:
                    del os.environ["SOURCE_DATE_EPOCH"]
                else:
                    os.environ["SOURCE_DATE_EPOCH"] = earlier
        return pdf


def load_weasyprint() -> Any:
    import weasyprint  # loads pango: slow, and absent on some hosts, so loaded on first use

    return weasyprint


def pdf_printer(loader: Callable[[], Any] = load_weasyprint) -> PdfPrinter | str:
    """WeasyPrint ready to print, or why it cannot load (pango missing: an ``OSError`` from its
    C bindings; the package missing: an ``ImportError``)."""
    try:
        return PdfPrinter(loader())
    except (ImportError, OSError) as error:
        return f"WeasyPrint cannot load ({type(error).__name__}: {error}); install pango (Debian: libpango-1.0-0)"


class DocumentRenderer:
    """Templates and the PDF printer, made once per process."""

    def __init__(self, loader: Callable[[], Any] = load_weasyprint) -> None:
        self.environment = Environment(
            loader=PackageLoader(TEMPLATE_PACKAGE, "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._loader = loader
        self._printer: PdfPrinter | str | None = None
        self._printer_lock = threading.Lock()

    def html(self, kind: DocumentKind, view: Mapping[str, Any]) -> str:
        return self.environment.get_template(f"{kind.value}.html.j2").render(view)

    def invoice_html(self, facts: InvoiceFacts, issuer: Issuer) -> str:
        return self.html(DocumentKind.INVOICE, invoice_view(facts, issuer))

    @property
    def printer(self) -> PdfPrinter | str:
        """The PDF printer, or why there is none (loaded on first use, then kept)."""
        with self._printer_lock:
            if self._printer is None:
                self._printer = pdf_printer(self._loader)
            return self._printer

    def pdf(self, html: str, *, identifier: str, created: datetime) -> bytes | str:
        """The PDF, or why it cannot be made on this host."""
        printer = self.printer
        if isinstance(printer, str):
            return printer
        return printer.print(html, identifier=identifier, created=created)
