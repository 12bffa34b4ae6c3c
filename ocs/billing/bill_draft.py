"""The bill run's pure part: one billing account's facts for a period in, its invoice draft out.

Theory of operation: ``draft_invoice`` is a function of (the catalog, the account's facts, the
period, the due date): no clock, no I/O, no set or dict order that could differ between two runs,
so the same inputs give the same draft, byte for byte (the running part, ``ocs.billing.bill_run``,
gathers the facts from the business database and issues the draft). Every line explains itself:
its ``explanation`` holds the product and version, the period and days charged, the full price,
the discounts taken, the tax category and rate, and for usage the records, units and money per
service.

What a postpaid line of the account adds to the period's invoice, lines in the order of their
ids, each line's charges in this order:
- rentals: for each span of the period the line was in service (from its activation day to its
  termination day) under one plan (split at each plan change's day), the rentals of the plan's
  offer as in force at the period's start, prorated by day (``ocs.billing.cycles.prorate``: the
  parts of a period always add up to the full price); each discount the catalog gives on it is a
  DISCOUNT line right after it, its tax computed on the net;
- one-offs: the offer's one-off charges when the line was activated inside the period;
- bundles with a price: charged once per period for a line still in service at the period's end
  (the bundle itself is renewed into the balance engine for the next cycle by the running part:
  ``renewals``);
- usage: one line with the sum of the line's unbilled postpaid records before the cut (they are
  priced already: each record carries its micros; the facts hold them summed, ``LineUsage``),
  usage discounts, and the usage tax category.
Then, when there are charges, the customer's loyalty discounts for the period, one DISCOUNT line
each, aimed at the charges above (``ocs.billing.loyalty_discounts``); then the customer's pending
deposits on its own billing account, one untaxed DEPOSIT line each (``ocs.billing.deposits``),
then the account's pending adjustments, one ADJUSTMENT line each (no tax: an adjustment is an
amount as the operator wrote it). A line's charges carry its
``node_id``: the invoice's subtotals per node (``ocs.billing.invoices``) follow from it.

Speed (the bill run drafts thousands of accounts a second): a ``ChargeMemo`` computes each
product's charge once for the accounts of a page that pay the same one, its explanation shared by
their lines (never changed after), and the lines are built as ``model_construct`` would
(``ocs.billing.draft_line``).

Rentals are charged in advance in the catalog's sense (the price of a cycle is the price in force
at its start), and invoiced when the cycle closes, for the days the line was in service in it:
the invoice of a closed cycle knows every activation, termination and plan change inside it, so
it never needs a correction later. A prepaid line is never invoiced: its rentals are debited from
its balance at the start of each cycle (``prepaid_rental``), its usage was paid as it was used.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from pydantic import JsonValue

from balance.types import PaymentType
from ocs.billing.catalog import Catalog, Charge, Offer, Product, ProductKind, product_charge, usage_charge
from ocs.billing.cycles import Period
from ocs.billing.deposits import PendingDeposit, deposit_lines
from ocs.billing.draft_line import draft_line
from ocs.billing.loyalty_discounts import loyalty_discount_lines
from ocs.billing.values import MAX_DRAFT_LINES, DraftLine, InvoiceDraft, LineKind
from ocs.db.loyalty import InvoiceDiscount
from ocs.db.usage import LineUsage

MAX_DESCRIPTION_CHARACTERS = 1_000  # DraftLine.description


@dataclass(frozen=True, slots=True)
class LineFacts:
    """One line (subscription) as the bill run sees it: its service span and its plans."""

    line_id: str
    node_id: str | None  # the node it hangs under (its subtotal), None for an individual's line
    payment_type: PaymentType
    activated_on: date  # the first day in service
    terminated_on: date | None  # the first day out of service (None: still in service)
    plans: tuple[tuple[date, str], ...]  # (first day, plan), ascending; the first from activation

    def plan_on(self, day: date) -> str:
        found = self.plans[0][1]
        for start, plan in self.plans:
            if start > day:
                break
            found = plan
        return found

    def in_service_on(self, day: date) -> bool:
        return self.activated_on <= day and (self.terminated_on is None or day < self.terminated_on)

    def spans(self, period: Period) -> list[tuple[Period, str]]:
        """The days of ``period`` in service, split by plan: (days, plan) in order."""
        start = max(period.start, self.activated_on)
        end = period.end if self.terminated_on is None else min(period.end, self.terminated_on)
        found: list[tuple[Period, str]] = []
        for index, (first, plan) in enumerate(self.plans):
            until = self.plans[index + 1][0] if index + 1 < len(self.plans) else end
            span_start, span_end = max(first, start), min(until, end)
            if span_start < span_end:
                found.append((Period(span_start, span_end), plan))
        return found


@dataclass(frozen=True, slots=True)
class PendingAdjustment:
    adjustment_id: str
    amount_micros: int  # signed: a charge (+) or a rebate (-)
    reason: str


@dataclass(frozen=True, slots=True)
class AccountFacts:
    """What one billing account's invoice for a period is made of (``draft_invoice``)."""

    billing_account_id: str
    legal_entity: str
    segment: str | None  # the customer segment the catalog's discounts aim at (None: none)
    lines: tuple[LineFacts, ...]  # in the order of their ids
    usage: Mapping[str, LineUsage]  # per line id: its unbilled postpaid records up to the cut, summed
    adjustments: tuple[PendingAdjustment, ...] = ()
    deposits: tuple[PendingDeposit, ...] = ()  # the customer's, on its own billing account (ocs.billing.deposits)
    loyalty_discounts: tuple[
        InvoiceDiscount, ...
    ] = ()  # the customer's, for this period (ocs.billing.loyalty_discounts)


@dataclass(frozen=True, slots=True)
class Renewal:
    """A bundle to renew into the balance engine for the next cycle (``renew_bundle``)."""

    line_id: str
    bundle: Product


@dataclass(frozen=True, slots=True)
class Explained:
    """A charge with its line's explanation and its DISCOUNT line's (``_charge_lines``)."""

    charge: Charge
    explanation: dict[str, JsonValue]
    discount_explanation: dict[str, JsonValue]


def explained(charge: Charge, extra: Mapping[str, JsonValue] | None = None) -> Explained:
    explanation = _explanation(charge)
    if extra:
        explanation.update(extra)
    return Explained(charge, explanation, {"on": charge.product, "discounts": explanation["discounts"]})


class ChargeMemo:
    """The charges of one product for the same days, cycle, plan and segment, computed once for a
    page of accounts (most lines of a page pay the same rentals), their explanations shared by
    the lines that charge them (never changed after: ``execute_many`` serializes each once)."""

    def __init__(self) -> None:
        self._found: dict[tuple[int, Period, Period, str, str | None], Explained] = {}
        self._offers: dict[tuple[str, date], Offer | None] = {}
        self._products: dict[tuple[str, date], Product | None] = {}
        self._bundles: dict[tuple[str, date], list[Product]] = {}

    def offer_at(self, catalog: Catalog, plan: str, day: date) -> Offer | None:
        key = (plan, day)
        if key not in self._offers:
            self._offers[key] = catalog.offer_at(plan, day)
        return self._offers[key]

    def product_at(self, catalog: Catalog, code: str, day: date) -> Product | None:
        key = (code, day)
        if key not in self._products:
            self._products[key] = catalog.product_at(code, day)
        return self._products[key]

    def bundles(self, catalog: Catalog, plan: str, day: date) -> list[Product]:
        """The bundles of ``plan``'s offer on ``day`` (the list is shared: never changed)."""
        key = (plan, day)
        found = self._bundles.get(key)
        if found is None:
            found = self._bundles[key] = _bundles(catalog, plan, day)
        return found

    def product_charge(
        self, catalog: Catalog, product: Product, used: Period, cycle: Period, plan: str, segment: str | None
    ) -> Explained:
        key = (id(product), used, cycle, plan, segment)  # the catalog holds its products: ids stay theirs
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = explained(product_charge(catalog, product, used, cycle, plan, segment))
        return found


def _explanation(charge: Charge) -> dict[str, JsonValue]:
    return {
        "text": charge.explanation,
        "product": charge.product,
        "version": charge.version,
        "period_start": charge.period.start.isoformat(),
        "period_end": charge.period.end.isoformat(),
        "days": charge.days,
        "cycle_days": charge.cycle_days,
        "full_micros": charge.full_micros,
        "prorated_micros": charge.prorated_micros,
        "discounts": [{"code": item.code, "micros": item.micros} for item in charge.discounts],
        "net_micros": charge.net_micros,
        "tax_category": charge.tax_category,
        "tax_basis_points": charge.tax_basis_points,
    }


def _charge_lines(made: Explained, kind: LineKind, description: str, line: LineFacts) -> list[DraftLine]:
    """The charge as a line at its amount before discounts, taxed on its net, then one DISCOUNT
    line with what the discounts took (when they took anything). The lines are built without
    validation (``draft_line``, as ``model_construct`` would): every value is in range by
    construction (amounts from the catalog's integer arithmetic, descriptions cut to their
    maximum, ids from the database), and a test holds every draft against its validators."""
    charge = made.charge
    lines = [
        draft_line(
            kind,
            description[:MAX_DESCRIPTION_CHARACTERS],
            charge.prorated_micros,
            charge.tax_micros,
            line.node_id,
            line.line_id,
            made.explanation,
        )
    ]
    taken = charge.prorated_micros - charge.net_micros
    if taken:
        codes = ", ".join(item.code for item in charge.discounts)
        lines.append(
            draft_line(
                LineKind.DISCOUNT,
                f"{description} - discount {codes}"[:MAX_DESCRIPTION_CHARACTERS],
                -taken,
                0,
                line.node_id,
                line.line_id,
                made.discount_explanation,
            )
        )
    return lines


def _usage_summary(usage: LineUsage) -> dict[str, JsonValue]:
    """Per service: records, unit, units, micros; services by name."""
    return {
        item.service: {"records": item.records, "unit": item.unit, "units": item.units, "micros": item.micros}
        for item in usage.services
    }


def line_charges(
    catalog: Catalog, facts: AccountFacts, line: LineFacts, period: Period, memo: ChargeMemo | None = None
) -> list[DraftLine]:
    """What one postpaid line adds to the period's invoice (the module docstring)."""
    memo = memo if memo is not None else ChargeMemo()
    made: list[DraftLine] = []
    for span, plan in line.spans(period):
        offer = memo.offer_at(catalog, plan, period.start)
        for code in offer.rentals if offer is not None else ():
            product = memo.product_at(catalog, code, period.start)
            if product is None:
                continue
            charged = memo.product_charge(catalog, product, span, period, plan, facts.segment)
            made += _charge_lines(charged, LineKind.RENTAL, f"{product.description} ({line.line_id}, {plan})", line)
    if period.contains(line.activated_on):
        plan = line.plan_on(line.activated_on)
        offer = catalog.offer_at(plan, line.activated_on)
        for code in offer.one_offs if offer is not None else ():
            product = catalog.product_at(code, line.activated_on)
            if product is not None and product.kind is ProductKind.ONE_OFF:
                charged = memo.product_charge(catalog, product, period, period, plan, facts.segment)
                made += _charge_lines(charged, LineKind.ONE_OFF, f"{product.description} ({line.line_id})", line)
    if line.in_service_on(period.end):
        plan = line.plan_on(period.end)
        for product in memo.bundles(catalog, plan, period.end):
            if product.price_micros > 0:
                charged = memo.product_charge(catalog, product, period, period, plan, facts.segment)
                made += _charge_lines(charged, LineKind.BUNDLE, f"{product.description} ({line.line_id})", line)
    usage = facts.usage.get(line.line_id)
    if usage is not None and usage.records:
        records = usage.records
        plan = line.plan_on(period.start if line.activated_on < period.start else line.activated_on)
        description = f"usage of {line.line_id}: {records} records"
        charge = usage_charge(catalog, usage.micros, description, period, plan, facts.segment)
        extra: dict[str, JsonValue] = {"records": records, "services": _usage_summary(usage)}
        made += _charge_lines(explained(charge, extra), LineKind.USAGE, description, line)
    return made


def _bundles(catalog: Catalog, plan: str, day: date) -> list[Product]:
    offer = catalog.offer_at(plan, day)
    found = [catalog.product_at(code, day) for code in (offer.bundles if offer is not None else ())]
    return [product for product in found if product is not None and product.kind is ProductKind.BUNDLE]


def renewals(
    catalog: Catalog, lines: Sequence[LineFacts], period: Period, memo: ChargeMemo | None = None
) -> list[Renewal]:
    """The bundles each line still in service when ``period`` ends gets for the next cycle."""
    memo = memo if memo is not None else ChargeMemo()
    return [
        Renewal(line.line_id, product)
        for line in lines
        if line.in_service_on(period.end)
        for product in memo.bundles(catalog, line.plan_on(period.end), period.end)
    ]


def draft_invoice(
    catalog: Catalog,
    facts: AccountFacts,
    period: Period,
    due_date: date,
    catalog_version: str,
    memo: ChargeMemo | None = None,
) -> InvoiceDraft | None:
    """The account's invoice for ``period`` (None: nothing to bill: no line in service in it, no
    usage, no adjustment). Adjustments are left for a later invoice when they would take the
    total below zero (an invoice is never negative; a credit is a credit note)."""
    memo = memo if memo is not None else ChargeMemo()
    lines: list[DraftLine] = []
    for line in facts.lines:
        if line.payment_type is PaymentType.POSTPAID:
            lines += line_charges(catalog, facts, line, period, memo)
    taken = facts.loyalty_discounts if lines else ()  # for the next invoice with charges
    if taken:  # (each of these makes nothing of nothing: skipped, most accounts have none)
        lines += loyalty_discount_lines(taken, lines, facts.usage)
    if facts.deposits:
        lines += deposit_lines(facts.deposits)
    carried = not facts.adjustments or _carries(lines, facts.adjustments)
    if carried:
        lines += _adjustment_lines(facts.adjustments)
    if not lines:
        return None
    if len(lines) > MAX_DRAFT_LINES:
        raise ValueError(f"lines: {len(lines)} for one invoice, more than {MAX_DRAFT_LINES}")
    head = InvoiceDraft(  # the invoice's own fields validated; its lines are valid by construction
        legal_entity=facts.legal_entity,
        billing_account_id=facts.billing_account_id,
        period_start=period.start,
        period_end=last_day_of(period),
        due_date=due_date,
        catalog_version=catalog_version,
        lines=[],
        adjustment_ids=[item.adjustment_id for item in facts.adjustments] if carried else [],
        deposit_ids=[item.deposit_id for item in facts.deposits],
        loyalty_discount_ids=[item.discount_id for item in taken],
    )
    # What ``head.model_copy(update={"lines": lines})`` makes, without the copy: the head is
    # this call's own (made just above, seen by no one), "lines" among its fields set already.
    head.__dict__["lines"] = lines
    return head


def _carries(lines: Sequence[DraftLine], adjustments: Sequence[PendingAdjustment]) -> bool:
    """The adjustments go on this invoice unless they would take its total below zero."""
    charged = sum(item.amount_micros + item.tax_micros for item in lines)
    return charged + sum(item.amount_micros for item in adjustments) >= 0


def _adjustment_lines(adjustments: Sequence[PendingAdjustment]) -> list[DraftLine]:
    return [
        draft_line(
            LineKind.ADJUSTMENT,
            f"adjustment {item.adjustment_id}: {item.reason}"[:MAX_DESCRIPTION_CHARACTERS],
            item.amount_micros,
            0,
            None,
            None,
            {"adjustment_id": item.adjustment_id, "reason": item.reason},
        )
        for item in adjustments
    ]


@functools.lru_cache(maxsize=64)
def last_day_of(period: Period) -> date:
    """The period's last day (its end is exclusive); one object for the accounts of a period, so
    the bill run's rows that hold it convert it once (``ocs.db.bulk``)."""
    return date.fromordinal(period.end.toordinal() - 1)


def prepaid_rental(catalog: Catalog, line: LineFacts, cycle: Period) -> list[tuple[Product, int]]:
    """The rentals a prepaid line pays at the start of ``cycle`` (the one just begun), tax
    included: (product, micros > 0). A line in service on the cycle's first day pays the whole
    cycle (paid in advance, nothing comes back on a later termination); a line activated later
    in it pays from its next cycle on."""
    if line.payment_type is not PaymentType.PREPAID or not line.in_service_on(cycle.start):
        return []
    plan = line.plan_on(cycle.start)
    offer = catalog.offer_at(plan, cycle.start)
    found: list[tuple[Product, int]] = []
    for code in offer.rentals if offer is not None else ():
        product = catalog.product_at(code, cycle.start)
        if product is not None and product.price_micros > 0:
            found.append((product, product_charge(catalog, product, cycle, cycle, plan, None).total_micros))
    return found
