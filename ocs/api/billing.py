"""The billing API: customer bills (TMF678), payments (TMF676 names), the bank file, credit notes,
disputes, refunds, adjustments, the receivables aging report, the bill run (``POST /billRuns``)
and the one-ledger audit (``GET /reports/ledger``), over HTTP, in the OpenAPI document.

Theory of operation: as ``ocs.api.interactions`` does, each route is a value (method, path, the
pydantic models of its body, query and answer, the status of success) that ``ocs.api.server``
registers; a call carries its author (the token's name: who recorded a payment, wrote a credit
note, opened or resolved a dispute). Refusals are the customer wing's ``CustomerRefusal`` (404,
409, 422 naming the field); bodies, paths and queries the models refuse are 422 naming the field.
A replay (a payment reference, a credit note, dispute or adjustment id sent again with the same
content) answers 200 with the first; a new record 201.

``POST /payments/bank-file`` takes a CSV body (``text/csv``, UTF-8) with the header
``reference,billing_account,amount,date``: the amount a decimal string in units of the account's
currency (``"12.50"``, at most 6 decimals), the date ``YYYY-MM-DD`` (when the bank received it).
Each row is one idempotent payment: a re-sent file replays its rows; a bad row is answered with
its line number and the field at fault, and nothing of that row is applied, while the good rows
are. The answer lists every row's outcome.

``GET /customerBills/{bill_id}/document?format=html|pdf`` answers the bill's document itself
(``text/html`` or ``application/pdf``, not JSON), as stored in the data directory by the delivery
consumer (``ocs.billing.delivery``); a bill the consumer has not reached yet is rendered and
stored on demand, so the answer never depends on timing. A PDF this server cannot make (no pango
for WeasyPrint) is 503 naming ``format``; the HTML is always there.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ocs.api.customers import PROBLEM_ERRORS, Answer, validated
from ocs.api.fields import BadInput, Unavailable, money_micros
from ocs.api.interactions import document_routes
from ocs.api.service_routes import ServiceRequest, ServiceRoute
from ocs.billing.bill_runs import BillRuns
from ocs.billing.corrections import Corrections
from ocs.billing.delivery import BillDocuments, DocumentUnavailable
from ocs.billing.documents import CONTENT_TYPES, DocumentFormat
from ocs.billing.invoices import MAX_LIST_ROWS, Invoices
from ocs.billing.payments import Payments
from ocs.billing.receivables import Receivables
from ocs.billing.values import (
    Adjustment,
    BillState,
    CreditNote,
    CustomerBill,
    CustomerBillList,
    Dispute,
    DisputeResolution,
    NewAdjustment,
    NewCreditNote,
    NewDispute,
    NewPayment,
    NewRefund,
    PaymentList,
    PaymentOutcome,
    PaymentSource,
    ReceivablesReport,
    Refund,
)
from ocs.customers.service import CustomerRefusal
from ocs.customers.values import ID_PATTERN, Closed

BANK_FILE_HEADER = ("reference", "billing_account", "amount", "date")
FIRST_BILL_RUN_DAY = date(1971, 1, 1)
LAST_BILL_RUN_DAY = date(9998, 12, 31)
MAX_PROBLEMS_SHOWN = 100  # a bill run's answer lists this many problems and counts the rest
COUNTS = (
    "accounts",
    "invoices",
    "skipped",
    "empty",
    "records",
    "cuts",
    "cuts_refused",
    "renewals",
    "rentals",
    "rentals_refused",
    "statements",
)
MAX_BANK_FILE_ROWS = 100_000


@dataclass(frozen=True, slots=True)
class Services:
    invoices: Invoices
    payments: Payments
    corrections: Corrections
    receivables: Receivables
    documents: BillDocuments
    bill_runs: BillRuns


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class BillQuery(_Query):
    billing_account: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    state: BillState | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_ROWS)] = 100
    offset: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


class PaymentQuery(_Query):
    billing_account: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_ROWS)] = 100
    offset: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


class ReceivablesQuery(_Query):
    as_of: date | None = None  # None: today (UTC)


class DocumentQuery(_Query):
    format: DocumentFormat = DocumentFormat.HTML


class Ids(_Query):
    bill_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    dispute_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    billing_account_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None


class PaymentBody(NewPayment):
    """``POST /payments``: the source is the API unless the caller says it is the CLI."""

    source: Literal[PaymentSource.API, PaymentSource.CLI] = PaymentSource.API


class BankFileRow(Closed):
    line: int  # the file's line number (the header is line 1)
    reference: str | None
    status: int  # 201 recorded, 200 replayed, 4xx refused (nothing of the row applied)
    payment_id: str | None = None
    settled_invoices: list[str] = Field(default_factory=list)
    error: str | None = None


class BankFileResult(Closed):
    rows: int
    recorded: int
    replayed: int
    failed: int  # rows refused
    results: list[BankFileRow]


class NewBillRun(Closed):
    """``POST /billRuns``: bill every account whose cycle closed by ``date`` (and missed ones)."""

    # "date" on the wire (a field named after its type confuses pydantic); days whose cycles and
    # the year of missed ones before them are ordinary dates
    day: date = Field(alias="date", ge=FIRST_BILL_RUN_DAY, le=LAST_BILL_RUN_DAY)


class BillRunResult(Closed):
    """What a bill run did (``ocs.billing.bill_run.BillRunReport``)."""

    date: str  # the run's day, YYYY-MM-DD
    accounts: int  # billing accounts seen (that pay for themselves)
    invoices: int  # invoices made by this run
    skipped: int  # accounts with nothing left to bill (invoiced already)
    empty: int  # cycles with nothing to bill
    records: int  # usage records billed
    cuts: int  # usage cuts applied in Redis
    cuts_refused: int
    renewals: int
    rentals: int  # prepaid rentals debited
    rentals_refused: int
    statements: int  # prepaid statements written
    problems: list[str]  # the first MAX_PROBLEMS_SHOWN
    more_problems: int = 0


class LedgerReport(Closed):
    """The one-ledger audit (``ocs.billing.ledger_audit``): no problem is a ledger that ties out."""

    ok: bool
    failed: int  # how many problems (``ocs report ledger`` exits 1 on any)
    problems: list[str]


Request = ServiceRequest[Ids]


class Route(ServiceRoute[Services, Ids]):
    __slots__ = ()
    ids_model = Ids


def _created(made: bool) -> int:
    return 201 if made else 200


async def _bills(services: Services, call: Request) -> Answer:
    query = call.query
    assert isinstance(query, BillQuery)
    found = await services.invoices.bills(
        billing_account_id=query.billing_account, state=query.state, limit=query.limit, offset=query.offset
    )
    return Answer(200, found)


async def _bill(services: Services, call: Request) -> Answer:
    assert call.ids.bill_id is not None
    return Answer(200, await services.invoices.bill(call.ids.bill_id))


async def _pay(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, PaymentBody)
    outcome = await services.payments.record_payment(NewPayment.model_validate(call.body.model_dump()), call.author)
    payment = outcome.payment
    after: dict[str, object] = {
        "payment_id": payment.payment_id,
        "reference": payment.reference,
        "amount_micros": payment.amount_micros,
        "settled_invoices": outcome.settled_invoices,
    }
    detail = "payment replayed: the first answered" if outcome.replayed else "payment recorded"
    return Answer(_created(not outcome.replayed), outcome, payment.billing_account_id, after, detail)


async def _payments(services: Services, call: Request) -> Answer:
    query = call.query
    assert isinstance(query, PaymentQuery)
    found = await services.payments.payments(
        billing_account_id=query.billing_account, limit=query.limit, offset=query.offset
    )
    return Answer(200, found)


def bank_file_rows(text: str) -> list[tuple[int, NewPayment | str]]:
    """Each row of a bank file as a payment, or the error naming its line and field."""
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise BadInput(f"line 1: {error}") from None
    if header is None or tuple(name.strip().lower() for name in header) != BANK_FILE_HEADER:
        raise BadInput(f"line 1: the header must be {','.join(BANK_FILE_HEADER)}")
    rows: list[tuple[int, NewPayment | str]] = []
    while True:
        try:
            values = next(reader, None)
        except csv.Error as error:
            rows.append((reader.line_num, f"line {reader.line_num}: {error}"))
            break
        if values is None:
            break
        if not any(value.strip() for value in values):
            continue
        if len(rows) >= MAX_BANK_FILE_ROWS:
            raise BadInput(f"more than {MAX_BANK_FILE_ROWS} rows: split the file")
        rows.append((reader.line_num, _bank_payment(reader.line_num, values)))
    return rows


def _bank_payment(line: int, values: list[str]) -> NewPayment | str:
    if len(values) != len(BANK_FILE_HEADER):
        return f"line {line}: expected {len(BANK_FILE_HEADER)} fields, got {len(values)}"
    reference, account, amount, day = (value.strip() for value in values)
    try:
        micros = money_micros(amount)
    except ValueError as error:
        return f"line {line}: amount: {error}"
    try:
        received = datetime.combine(date.fromisoformat(day), time(), UTC)
    except ValueError:
        return f"line {line}: date: {day!r} is not a day, YYYY-MM-DD"
    fields = {
        "billing_account_id": account,
        "reference": reference,
        "amount_micros": micros,
        "received_at": received,
        "source": PaymentSource.BANK_FILE,
    }
    try:
        return NewPayment.model_validate(fields)
    except ValidationError as error:
        first = error.errors()[0]
        field = {"billing_account_id": "billing_account", "amount_micros": "amount"}.get(str(first["loc"][0]))
        return f"line {line}: {field or first['loc'][0]}: {first['msg']}"


async def _bank_file(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, str)
    results: list[BankFileRow] = []
    for line, row in bank_file_rows(call.body):
        if isinstance(row, str):
            results.append(BankFileRow(line=line, reference=None, status=422, error=row))
            continue
        try:
            outcome = await services.payments.record_payment(row, call.author)
        except CustomerRefusal as refusal:
            status = {"not_found": 404, "conflict": 409}.get(refusal.problem.value, 422)
            error = f"line {line}: {refusal.message}".replace(": billing_account_id:", ": billing_account:")
            results.append(BankFileRow(line=line, reference=row.reference, status=status, error=error))
            continue
        results.append(
            BankFileRow(
                line=line,
                reference=row.reference,
                status=_created(not outcome.replayed),
                payment_id=outcome.payment.payment_id,
                settled_invoices=outcome.settled_invoices,
            )
        )
    counts = {status: sum(1 for result in results if result.status == status) for status in (200, 201)}
    result = BankFileResult(
        rows=len(results),
        recorded=counts[201],
        replayed=counts[200],
        failed=len(results) - counts[200] - counts[201],
        results=results,
    )
    after: dict[str, object] = {"rows": result.rows, "recorded": result.recorded, "failed": result.failed}
    return Answer(200, result, None, after, f"bank file of {result.rows} row(s)")


async def _credit_note(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, NewCreditNote) and call.ids.bill_id is not None
    note, made = await services.corrections.credit_note(call.ids.bill_id, call.body, call.author)
    after: dict[str, object] = {"credit_note": note.number, "invoice_id": note.invoice_id, "amount": note.amount_micros}
    return Answer(_created(made), note, note.billing_account_id, after, call.body.reason)


async def _open_dispute(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, NewDispute) and call.ids.bill_id is not None
    dispute, made = await services.corrections.open_dispute(call.ids.bill_id, call.body, call.author)
    after: dict[str, object] = {"dispute_id": dispute.dispute_id, "amount_micros": dispute.amount_micros}
    return Answer(_created(made), dispute, dispute.billing_account_id, after, call.body.reason)


async def _dispute(services: Services, call: Request) -> Answer:
    assert call.ids.dispute_id is not None
    return Answer(200, await services.corrections.dispute(call.ids.dispute_id))


async def _resolve_dispute(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, DisputeResolution) and call.ids.dispute_id is not None
    dispute = await services.corrections.resolve_dispute(call.ids.dispute_id, call.body, call.author)
    after: dict[str, object] = {"dispute_id": dispute.dispute_id, "state": dispute.state.value}
    return Answer(200, dispute, dispute.billing_account_id, after, call.body.resolution)


async def _refund(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, NewRefund) and call.ids.billing_account_id is not None
    refund, made = await services.payments.refund(call.ids.billing_account_id, call.body, call.author)
    after: dict[str, object] = {"refund_id": refund.refund_id, "amount_micros": refund.amount_micros}
    return Answer(_created(made), refund, refund.billing_account_id, after, call.body.reason)


async def _adjust(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, NewAdjustment) and call.ids.billing_account_id is not None
    adjustment, made = await services.corrections.adjust(call.ids.billing_account_id, call.body, call.author)
    after: dict[str, object] = {"adjustment_id": adjustment.adjustment_id, "amount_micros": adjustment.amount_micros}
    return Answer(_created(made), adjustment, adjustment.billing_account_id, after, call.body.reason)


async def _receivables(services: Services, call: Request) -> Answer:
    query = call.query
    assert isinstance(query, ReceivablesQuery)
    as_of = query.as_of or datetime.now(UTC).date()
    return Answer(200, await services.receivables.aging(as_of))


async def _bill_run(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, NewBillRun)
    report = await services.bill_runs.run(call.body.day)
    counts = {name: getattr(report, name) for name in COUNTS}
    result = BillRunResult(
        date=report.day.isoformat(),
        **counts,
        problems=report.problems[:MAX_PROBLEMS_SHOWN],
        more_problems=max(len(report.problems) - MAX_PROBLEMS_SHOWN, 0),
    )
    after: dict[str, object] = {"date": result.date, "invoices": report.invoices, "cuts": report.cuts}
    return Answer(200, result, None, after, f"bill run for {result.date}")


async def _ledger(services: Services, call: Request) -> Answer:
    problems = await services.bill_runs.ledger()
    return Answer(200, LedgerReport(ok=not problems, failed=len(problems), problems=problems))


DOCUMENT_PATH = "/customerBills/{bill_id}/document"


@dataclass(frozen=True, slots=True)
class Document:
    content: bytes
    content_type: str
    file_name: str


async def bill_document(services: Services, path: Mapping[str, str], query: Mapping[str, str]) -> Document:
    """``GET /customerBills/{bill_id}/document``: the stored document, or rendered on demand."""
    ids = validated(Ids, dict(path))
    wanted = validated(DocumentQuery, dict(query)).format
    assert ids.bill_id is not None
    try:
        content = await services.documents.document(ids.bill_id, wanted)
    except CustomerRefusal as refusal:
        raise PROBLEM_ERRORS[refusal.problem](refusal.message) from None
    except DocumentUnavailable as error:
        raise Unavailable(f"format: {wanted.value} cannot be made on this server: {error.reason}") from None
    return Document(content, CONTENT_TYPES[wanted], f"{ids.bill_id}.{wanted.value}")


_CHANGE = (404, 409, 422)
_ACCOUNT = "/billingAccounts/{billing_account_id}"
ROUTES = (
    Route(
        "GET", "/customerBills", "List customer bills (TMF678)", _bills, CustomerBillList, query=BillQuery, errors=()
    ),
    Route("GET", "/customerBills/{bill_id}", "Read a customer bill and its lines", _bill, CustomerBill),
    Route("POST", "/payments", "Record a payment", _pay, PaymentOutcome, PaymentBody, 201, errors=_CHANGE),
    Route("GET", "/payments", "List payments", _payments, PaymentList, query=PaymentQuery, errors=()),
    Route(
        "POST",
        "/payments/bank-file",
        "Record a bank file of payments (CSV)",
        _bank_file,
        BankFileResult,
        csv_body=True,
        errors=(),
    ),
    Route(
        "POST",
        "/customerBills/{bill_id}/creditNotes",
        "Credit part of a bill",
        _credit_note,
        CreditNote,
        NewCreditNote,
        201,
        errors=_CHANGE,
    ),
    Route(
        "POST",
        "/customerBills/{bill_id}/disputes",
        "Dispute part of a bill",
        _open_dispute,
        Dispute,
        NewDispute,
        201,
        errors=_CHANGE,
    ),
    Route("GET", "/disputes/{dispute_id}", "Read a dispute", _dispute, Dispute),
    Route(
        "PATCH",
        "/disputes/{dispute_id}",
        "Resolve a dispute",
        _resolve_dispute,
        Dispute,
        DisputeResolution,
        errors=_CHANGE,
    ),
    Route("POST", f"{_ACCOUNT}/refunds", "Refund account credit", _refund, Refund, NewRefund, 201, errors=_CHANGE),
    Route(
        "POST",
        f"{_ACCOUNT}/adjustments",
        "Add an adjustment for the next bill",
        _adjust,
        Adjustment,
        NewAdjustment,
        201,
        errors=_CHANGE,
    ),
    Route("POST", "/billRuns", "Run the bill run for a day", _bill_run, BillRunResult, NewBillRun, errors=(409, 422)),
    Route("GET", "/reports/ledger", "The one-ledger audit", _ledger, LedgerReport, errors=()),
    Route(
        "GET",
        "/reports/receivables",
        "Receivables aging",
        _receivables,
        ReceivablesReport,
        query=ReceivablesQuery,
        errors=(),
    ),
)
PATH_NAMES = ("bill_id", "dispute_id", "billing_account_id")


def extend_document(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the billing routes; the bank file's body is CSV text."""
    document = document_routes(document, ROUTES, PATH_NAMES)
    document["paths"][DOCUMENT_PATH] = {"get": _document_operation()}
    upload = {"required": True, "content": {"text/csv": {"schema": {"type": "string"}}}}
    document["paths"]["/payments/bank-file"]["post"]["requestBody"] = upload
    return document


def _document_operation() -> dict[str, object]:
    """The OpenAPI operation of ``GET /customerBills/{bill_id}/document`` (its answer is a file)."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    binary = {"schema": {"type": "string", "format": "binary"}}
    responses: dict[str, object] = {
        "200": {
            "description": "The bill's document as issued",
            "content": {
                CONTENT_TYPES[DocumentFormat.HTML].split(";")[0]: binary,
                CONTENT_TYPES[DocumentFormat.PDF]: binary,
            },
        }
    }
    for status in (400, 401, 403, 404, 422, 503):
        responses[str(status)] = {"description": f"refused ({status})", **error}
    return {
        "summary": "Read a bill's document (HTML or PDF)",
        "parameters": [
            {"name": "bill_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}},
            {
                "name": "format",
                "in": "query",
                "required": False,
                "schema": {"enum": [item.value for item in DocumentFormat], "default": "html"},
            },
        ],
        "responses": responses,
    }
