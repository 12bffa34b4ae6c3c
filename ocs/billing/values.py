"""The billing wing's values: invoice drafts, customer bills (TMF678), payments (TMF676 names where
they fit), credit notes, disputes, refunds, adjustments and the receivables report.

Theory of operation: these pydantic (v2) models are what the services take and answer and what
the API shows (the OpenAPI document is generated from them, ``ocs.api.billing``). Names follow
TMF678 CustomerBill (``bill_no``, ``bill_date``, ``billing_period``, ``amount_due``,
``remaining_amount``, ``tax_included_amount``, ``payment_due_date``, ``state``) written in the API's
snake case; money is integer micros with its ISO 4217 currency (``Money``), never a float.

Rules kept here, before anything is written (a refusal names the field): unknown fields are
refused; a draft's period ends on or after its start and its due date is not before the period's
end; amounts are JSON integers of micros (a string or a fraction is refused, never rounded); amounts paid,
credited, disputed or refunded are positive; a reference is 1 to 128 printable
characters without spaces (it is the idempotency key, typed by people and banks).
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import Field, JsonValue, computed_field, model_validator

from balance.types import MAX_AMOUNT_MICROS
from ocs.customers.values import Closed, EntityId
from ocs.rating.rate import format_money

MAX_DRAFT_LINES = 100_000  # a company of many lines on one bill, not unbounded input
MAX_REASON_CHARACTERS = 1_000

Micros = Annotated[
    int, Field(strict=True, ge=0, le=MAX_AMOUNT_MICROS, description="integer micros: 1 unit = 1,000,000")
]
PositiveMicros = Annotated[
    int, Field(strict=True, gt=0, le=MAX_AMOUNT_MICROS, description="integer micros, more than 0")
]
SignedMicros = Annotated[
    int, Field(strict=True, ge=-MAX_AMOUNT_MICROS, le=MAX_AMOUNT_MICROS, description="integer micros, may be negative")
]
Reference = Annotated[str, Field(pattern=r"^[!-~]{1,128}$", description="1 to 128 printable characters, no spaces")]
Reason = Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARACTERS)]
SeriesName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")]


class LineKind(enum.StrEnum):
    USAGE = "usage"
    RENTAL = "rental"
    ONE_OFF = "one_off"
    DISCOUNT = "discount"  # amount negative
    TAX = "tax"  # a tax not carried on a line's own tax_micros
    ADJUSTMENT = "adjustment"
    BUNDLE = "bundle"
    DEPOSIT = "deposit"  # a credit class's deposit: untaxed, held, credited back at termination


class BillState(enum.StrEnum):
    """TMF678 CustomerBill states this wing uses: issued (delivery queued), part paid, paid."""

    SENT = "sent"
    PARTIALLY_PAID = "partiallyPaid"
    SETTLED = "settled"


class DraftLine(Closed):
    kind: LineKind
    description: Annotated[str, Field(min_length=1, max_length=1_000)]
    amount_micros: SignedMicros
    tax_micros: Micros = 0
    node_id: EntityId | None = None  # the node whose subtotal holds the line (hierarchies)
    line_id: EntityId | None = None  # the subscription it is for
    explanation: dict[str, JsonValue] = Field(default_factory=dict)  # records, units, rate, period, discount


class InvoiceDraft(Closed):
    """What the bill run computes for one billing account and period; ``issue`` stores it once."""

    legal_entity: SeriesName = "main"  # the issuer; invoice numbers are gapless per legal entity
    billing_account_id: EntityId
    period_start: date
    period_end: date  # the last day included
    due_date: date
    catalog_version: Annotated[str, Field(min_length=1, max_length=64)]
    lines: list[DraftLine] = Field(max_length=MAX_DRAFT_LINES)
    adjustment_ids: list[EntityId] = Field(default_factory=list)  # pending adjustments this bill carries
    deposit_ids: list[int] = Field(default_factory=list)  # pending deposits it charges (ocs.billing.deposits)
    loyalty_discount_ids: list[int] = Field(default_factory=list)  # loyalty discounts it takes (bill run)

    @model_validator(mode="after")
    def _dates(self) -> InvoiceDraft:
        if self.period_end < self.period_start:
            raise ValueError("period_end: before period_start")
        if self.due_date < self.period_end:
            raise ValueError("due_date: before the period's end")
        return self


class Money(Closed):
    """TMF678 Money: ``unit`` (ISO 4217) and ``value``, here in integer micros (``value_micros``,
    what a program should read) and as the decimal amount TMF678 names ``value`` (a string, so no
    reader meets a float: ``value_micros=30_500_000`` is ``"30.50"``)."""

    unit: str  # ISO 4217
    value_micros: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def value(self) -> str:
        return format_money(self.value_micros)


class BillingPeriod(Closed):
    start_date: date
    end_date: date  # included


class BillLine(Closed):
    position: int
    kind: LineKind
    description: str
    node_id: str | None
    line_id: str | None
    amount_micros: int  # rounded to the currency's minor unit (ocs.billing.minor_units)
    tax_micros: int
    priced_amount_micros: int  # as priced, before rounding: the rounding is amount_micros - priced_amount_micros
    priced_tax_micros: int
    explanation: dict[str, JsonValue]


class NodeSubtotal(Closed):
    """What one node of a hierarchy (or the account itself: ``node_id`` None) adds to the bill."""

    node_id: str | None
    amount_micros: int
    tax_micros: int


class CustomerBill(Closed):
    """TMF678 CustomerBill."""

    id: str
    bill_no: str
    legal_entity: str
    customer_id: str
    billing_account_id: str
    bill_date: datetime
    billing_period: BillingPeriod
    payment_due_date: date
    state: BillState
    catalog_version: str
    tax_excluded_amount: Money  # after discounts
    discount_amount: Money
    tax_amount: Money
    tax_included_amount: Money
    amount_due: Money
    remaining_amount: Money
    disputed_amount: Money  # held by open disputes
    subtotals: list[NodeSubtotal]
    lines: list[BillLine]


class CustomerBillList(Closed):
    bills: list[CustomerBill]  # without their lines; ``GET /customerBills/{id}`` has them


class PaymentSource(enum.StrEnum):
    API = "api"
    CLI = "cli"
    BANK_FILE = "bank_file"
    DEPOSIT = "deposit"  # a held deposit credited back at termination (ocs.billing.deposits), never sent


PaymentMethod = Literal["cash", "card", "direct_debit", "bank_transfer", "voucher"]


class NewPayment(Closed):
    billing_account_id: EntityId
    reference: Reference  # unique per billing account: the idempotency key
    amount_micros: PositiveMicros
    method: PaymentMethod = "bank_transfer"
    received_at: datetime | None = None  # None: now
    source: PaymentSource = PaymentSource.API

    @model_validator(mode="after")
    def _source(self) -> NewPayment:
        if self.source is PaymentSource.DEPOSIT:
            raise ValueError("source: deposit credits are made by the billing wing at termination")
        return self


class Allocation(Closed):
    invoice_id: str
    bill_no: str
    amount_micros: int


class Payment(Closed):
    payment_id: str
    billing_account_id: str
    reference: str
    amount_micros: int
    unallocated_micros: int  # what is account credit
    method: str
    source: PaymentSource
    received_at: datetime
    recorded_by: str
    allocations: list[Allocation]


class PaymentOutcome(Closed):
    """A payment as recorded, and what it changed: what a dunning lift needs to know."""

    payment: Payment
    replayed: bool  # the reference was known with this amount: nothing new was recorded
    allocated_now: list[Allocation]
    settled_invoices: list[str]  # the invoices this call paid off
    overdue_before_micros: int
    overdue_after_micros: int
    as_of: date  # the day both were measured on: the payment's (``payment_day``), which the lift uses


class PaymentList(Closed):
    payments: list[Payment]


class NewRefund(Closed):
    reference: Reference
    amount_micros: PositiveMicros
    reason: Reason


class Refund(Closed):
    refund_id: str
    billing_account_id: str
    reference: str
    amount_micros: int
    reason: str
    author: str
    created_at: datetime


class NewCreditNote(Closed):
    credit_note_id: EntityId | None = None  # the idempotency key: None, one is made (no replay)
    amount_micros: PositiveMicros
    reason: Reason


class CreditNote(Closed):
    credit_note_id: str
    number: str
    invoice_id: str
    billing_account_id: str
    amount_micros: int
    reason: str
    author: str
    dispute_id: str | None
    created_at: datetime


class DisputeState(enum.StrEnum):
    OPEN = "open"
    CREDITED = "credited"
    REJECTED = "rejected"


class NewDispute(Closed):
    dispute_id: EntityId | None = None  # the idempotency key: None, one is made (no replay)
    amount_micros: PositiveMicros
    reason: Reason
    ticket_id: EntityId | None = None  # the trouble ticket it comes from


class DisputeResolution(Closed):
    """How a dispute ends: ``credited`` (a credit note of ``amount_micros``, default the whole
    disputed amount; the rest is owed again) or ``rejected`` (all of it owed again)."""

    state: Literal[DisputeState.CREDITED, DisputeState.REJECTED]
    resolution: Reason
    amount_micros: PositiveMicros | None = None


class Dispute(Closed):
    dispute_id: str
    invoice_id: str
    billing_account_id: str
    amount_micros: int
    state: DisputeState
    ticket_id: str | None
    reason: str
    opened_by: str
    opened_at: datetime
    resolved_by: str | None
    resolved_at: datetime | None
    resolution: str | None
    credit_note: CreditNote | None


class NewAdjustment(Closed):
    adjustment_id: EntityId | None = None  # the idempotency key: None, one is made (no replay)
    amount_micros: SignedMicros  # a charge (+) or a rebate (-) carried by the next invoice
    reason: Reason


class Adjustment(Closed):
    adjustment_id: str
    billing_account_id: str
    amount_micros: int
    reason: str
    author: str
    created_at: datetime
    invoice_id: str | None  # None: not billed yet


class Overdue(Closed):
    """What a billing account owes past its due dates, disputed amounts held out."""

    amount_micros: int
    oldest_due_date: date | None


class AgingBuckets(Closed):
    current_micros: int = 0  # not yet due (or due today)
    days_1_30_micros: int = 0
    days_31_60_micros: int = 0
    days_61_90_micros: int = 0
    days_over_90_micros: int = 0
    disputed_micros: int = 0  # held out of the buckets above


class AccountAging(Closed):
    billing_account_id: str
    currency: str
    buckets: AgingBuckets
    open_balance_micros: int  # invoices - payments - credit notes + refunds
    credit_micros: int  # payments not yet allocated


class ReceivablesReport(Closed):
    as_of: date
    accounts: list[AccountAging]
    totals: dict[str, AgingBuckets]  # per currency
