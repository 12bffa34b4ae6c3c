"""Applications: how a customer is acquired (issue 13 "Activation").

Theory of operation: ``Applications.submit`` takes the applicant's data (an individual with its
identity document, or an organization with its registration), the payment method and the offer
asked for, and decides in three steps, writing nothing until the last:

1. identity validation (``ocs.customers.identity_check``) against the customers already holding
   the same document or registration, found in the customer tables with their status and debt.
   What a holder owes comes from the ``Debts`` port; until the billing wing exists there are no
   invoices, so ``NoBillingYet`` says 0 for everyone and only a malformed document, an age or an
   IBAN can refuse. Any refusal is a ``CustomerRefusal`` (422) naming every field at fault;
2. the credit check (``ocs.customers.credit``: the rule table of ``[customers]
   credit_classes_path`` or any ``CreditBureau``) assigns the credit class, which decides what may
   be offered: prepaid only, or postpaid up to a credit limit, maybe against a deposit;
3. the customer is created ``prospect`` with that credit profile (score and class). Its first
   completed product order (``ocs.customers.orders``) makes it ``active``.

The answer shows the decision and its explanation, and whether the offer asked for is granted: a
postpaid request from a prepaid-only class is answered with the prepaid offer, not refused, so the
applicant can still become a customer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Literal, Protocol

from pydantic import Field, model_validator
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.customers import identity_check
from ocs.customers.credit import (
    CreditBureau,
    Employment,
    IncomeBand,
    IndividualApplication,
    OfferKind,
    OrganizationApplication,
    assess,
)
from ocs.customers.identity_check import DocumentKind, Holder
from ocs.customers.service import CustomerRefusal, Customers, Problem
from ocs.customers.values import (
    BillingAccountSpec,
    Closed,
    CreditProfile,
    Customer,
    CustomerStatus,
    EntityId,
    Individual,
    NewCustomer,
    Organization,
)
from ocs.db.customers import customers, parties

MAX_SCORE = 1000  # CreditProfile.credit_score's bound (TMF629 creditScore)


class PaymentMethod(Closed):
    kind: Literal["cash", "card", "direct_debit", "bank_transfer", "voucher"]
    iban: Annotated[str, Field(min_length=1, max_length=42)] | None = None  # direct debit: ISO 13616

    @model_validator(mode="after")
    def _iban_for_debit(self) -> PaymentMethod:
        if (self.kind == "direct_debit") != (self.iban is not None):
            raise ValueError("iban: given for direct_debit, and only for it")
        return self


class PersonFacts(Closed):
    """What the credit check weighs for an individual (config/credit_classes.toml [individual])."""

    employment: Employment
    income_band: IncomeBand
    years_at_address: Annotated[int, Field(ge=0, le=150)]


class CompanyFacts(Closed):
    """What the credit check weighs for an organization ([organization])."""

    years_trading: Annotated[int, Field(ge=0, le=1000)]
    employees: Annotated[int, Field(ge=0, le=10_000_000)]


class NewApplication(Closed):
    customer_id: EntityId | None = None  # None: one is made
    individual: Individual | None = None  # with its identity_document
    person: PersonFacts | None = None
    organization: Organization | None = None
    company: CompanyFacts | None = None
    payment_method: PaymentMethod
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    bill_cycle_day: Annotated[int, Field(ge=1, le=28)] = 1
    requested_offer: Literal["prepaid", "postpaid"]
    lines_wanted: Annotated[int, Field(ge=1, le=100)] = 1

    @model_validator(mode="after")
    def _one_applicant(self) -> NewApplication:
        if (self.individual is None) == (self.organization is None):
            raise ValueError("give exactly one of individual or organization")
        if self.individual is not None and (self.person is None or self.individual.identity_document is None):
            raise ValueError("an individual applies with individual.identity_document and person")
        if self.organization is not None and self.company is None:
            raise ValueError("an organization applies with company")
        return self


class Factor(Closed):
    factor: str
    value: str
    points: int


class Decision(Closed):
    credit_class: str
    offer: Literal["prepaid_only", "postpaid"]
    credit_limit_micros: int
    deposit_micros: int
    currency: str
    points: int
    factors: list[Factor]
    explanation: str
    assessed_by: str
    requested_offer_granted: bool  # False: postpaid asked, the class offers prepaid only
    debt_note: str


class ApplicationResult(Closed):
    customer: Customer
    decision: Decision


class Debts(Protocol):
    async def open_debt_micros(self, customer_id: str) -> int: ...


class NoBillingYet:
    """No invoices exist before the billing wing: nobody owes anything yet."""

    note = "debt is 0 for every customer until billing exists (no invoices yet)"

    async def open_debt_micros(self, customer_id: str) -> int:
        return 0


class Applications:
    def __init__(
        self,
        engine: AsyncEngine,
        service: Customers,
        bureau: CreditBureau,
        *,
        debts: Debts | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.service = service
        self.bureau = bureau
        self.debts: Debts = debts if debts is not None else NoBillingYet()
        self.clock = clock

    async def submit(self, new: NewApplication) -> ApplicationResult:
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        check = await self._identity(new, today)
        if not check.accepted:
            message = "; ".join(f"{refusal.detail} ({refusal.reason.value})" for refusal in check.refusals)
            raise CustomerRefusal(Problem.REFUSED, _field(check.refusals[0].field, new), message)
        decision = assess(self.bureau, _credit_application(new, today), None)
        score = max(0, min(MAX_SCORE, decision.points))
        customer = await self.service.create_customer(
            NewCustomer(
                customer_id=new.customer_id,
                individual=new.individual,
                organization=new.organization,
                status=CustomerStatus.PROSPECT,
                credit_profile=CreditProfile(credit_score=score, credit_class=decision.credit_class),
                billing_account=BillingAccountSpec(
                    currency=new.currency, bill_cycle_day=new.bill_cycle_day, payment_method=new.payment_method.kind
                ),
            )
        )
        offer = decision.offer
        granted = new.requested_offer == "prepaid" or offer.kind is OfferKind.POSTPAID
        note = getattr(self.debts, "note", "")
        return ApplicationResult(
            customer=customer,
            decision=Decision(
                credit_class=decision.credit_class,
                offer=offer.kind.value,
                credit_limit_micros=offer.credit_limit_micros,
                deposit_micros=offer.deposit_micros,
                currency=decision.currency,
                points=decision.points,
                factors=[Factor(factor=f.factor, value=f.value, points=f.points) for f in decision.factors],
                explanation=decision.explain(),
                assessed_by=decision.assessed_by,
                requested_offer_granted=granted,
                debt_note=note,
            ),
        )

    async def _identity(self, new: NewApplication, today: date) -> identity_check.IdentityCheck:
        iban = new.payment_method.iban or ""
        if new.individual is not None:
            document = new.individual.identity_document
            assert document is not None
            kind = DocumentKind.PASSPORT if document.type == "passport" else DocumentKind.NATIONAL_ID
            checked = identity_check.IdentityDocument(kind, document.issuing_country, document.number)
            holders = await self._holders(parties.c.document_country == document.issuing_country, document.number)
            return identity_check.check_person(checked, new.individual.birth_date, iban, holders, today)
        assert new.organization is not None
        number = new.organization.registration_number
        registration = identity_check.IdentityDocument(DocumentKind.COMPANY_REGISTRATION, "DE", number)
        holders = await self._holders(parties.c.kind == "organization", number, registration=True)
        return identity_check.check_organization(registration, iban, holders)

    async def _holders(self, condition: object, number: str, *, registration: bool = False) -> list[Holder]:
        """The customers holding this document (numbers compared as ``normalise_document_number``)."""
        column = parties.c.registration_number if registration else parties.c.document_number
        query = (
            select(customers.c.customer_id, customers.c.status, column.label("number"))
            .join(parties, parties.c.party_id == customers.c.party_id)
            .where(and_(condition, column.is_not(None)))  # type: ignore[arg-type]
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        wanted = identity_check.normalise_document_number(number)
        return [
            Holder(row.status, await self.debts.open_debt_micros(row.customer_id))
            for row in rows
            if identity_check.normalise_document_number(row.number) == wanted
        ]


def _field(field: str, new: NewApplication) -> str:
    """identity_check's field names as the application's body names them."""
    if field == "date_of_birth":
        return "individual.birth_date"
    if field.startswith("identity_document"):
        return f"individual.{field}"
    if field.startswith("registration"):
        return "organization.registration_number"
    return field  # payment_method.iban


def _credit_application(new: NewApplication, today: date) -> IndividualApplication | OrganizationApplication:
    if new.individual is not None and new.person is not None:
        person = new.person
        return IndividualApplication(
            today, new.individual.birth_date, person.employment, person.income_band, person.years_at_address
        )
    assert new.company is not None
    return OrganizationApplication(today, new.company.years_trading, True, new.company.employees)
