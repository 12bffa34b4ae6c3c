"""The credit check at activation: an application (and a customer's payment history) -> a credit
class, and what that class may be offered.

Theory of operation: a ``CreditBureau`` assesses an application with the payment history of an
existing customer (``None`` for a new one) and returns a ``CreditDecision``: the class, the offer
(prepaid only, or postpaid with a credit limit; a deposit), and the factors that led there, each
with its points, so the decision explains itself on request (``CreditDecision.explain``).

``RuleTable`` is the default bureau: a scorecard whose rules are data (``config/credit_classes.toml``,
loaded by ``ocs.customers.credit_load`` into the frozen ``CreditRules`` below). Each factor maps
the applicant's value to points: numeric factors (age, years at the address, years trading,
employees, worst days late, open debt) through ascending steps ("from this value on, these
points"), categorical ones (employment, income band, registration) through one entry per value.
The points add up to a score; the classes are ordered best first, each with the least score it
needs, and the last one takes every score below the others. An external credit bureau replaces
the table by implementing the same Protocol; callers depend on ``CreditBureau`` only, and call it
through ``assess``, which refuses a decision activation cannot act on.

Everything here is a pure function of its inputs: the application carries its own date (the age
is counted on it), so an assessment can be repeated and gives the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Protocol, runtime_checkable

from ocs.customers.identity_check import age_years
from ocs.rating.rate import format_money


class Employment(StrEnum):
    EMPLOYED = "employed"
    SELF_EMPLOYED = "self_employed"
    RETIRED = "retired"
    STUDENT = "student"
    UNEMPLOYED = "unemployed"


class IncomeBand(StrEnum):
    """Declared net monthly household income, lowest first (the bands' limits are the form's)."""

    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    VERY_HIGH = "very_high"


class OfferKind(StrEnum):
    PREPAID_ONLY = "prepaid_only"
    POSTPAID = "postpaid"


@dataclass(frozen=True, slots=True)
class IndividualApplication:
    application_date: date  # the age is counted on this day
    date_of_birth: date
    employment: Employment
    income_band: IncomeBand
    years_at_address: int

    def __post_init__(self) -> None:
        _not_negative(self, "years_at_address")


@dataclass(frozen=True, slots=True)
class OrganizationApplication:
    application_date: date
    years_trading: int
    registered: bool  # a registration number (commercial register) was given and validated
    employees: int

    def __post_init__(self) -> None:
        _not_negative(self, "years_trading", "employees")


Application = IndividualApplication | OrganizationApplication


def _not_negative(value: object, *names: str) -> None:
    """Counts and amounts below 0 are a caller's mistake: refused naming the field."""
    for name in names:
        number = getattr(value, name)
        if number < 0:
            raise ValueError(f"{name}: {number} is negative")


@dataclass(frozen=True, slots=True)
class PaymentHistory:
    """An existing customer's record: days each invoice was paid late (0: on time; an unpaid
    overdue invoice counts its days so far), most recent first, and its open debt."""

    days_late: tuple[int, ...]
    open_debt_micros: int

    def __post_init__(self) -> None:
        _not_negative(self, "open_debt_micros")
        if any(days < 0 for days in self.days_late):
            raise ValueError(f"days_late: {self.days_late} holds a negative number of days")


@dataclass(frozen=True, slots=True)
class Step:
    """Points for every value from ``start`` up to the next step's start."""

    start: int
    points: int


@dataclass(frozen=True, slots=True)
class StepFactor:
    steps: tuple[Step, ...]  # ascending, the first from 0: every value >= 0 has points

    def points(self, value: int) -> int:
        chosen = self.steps[0].points
        for step in self.steps:
            if value < step.start:
                break
            chosen = step.points
        return chosen


@dataclass(frozen=True, slots=True)
class IndividualRules:
    age: StepFactor
    employment: Mapping[Employment, int]
    income_band: Mapping[IncomeBand, int]
    years_at_address: StepFactor


@dataclass(frozen=True, slots=True)
class OrganizationRules:
    years_trading: StepFactor
    registration_present: int
    registration_absent: int
    employees: StepFactor


@dataclass(frozen=True, slots=True)
class HistoryRules:
    invoices: int  # how many of the latest invoices count
    worst_days_late: StepFactor
    open_debt: StepFactor  # steps in micros


@dataclass(frozen=True, slots=True)
class Offer:
    kind: OfferKind
    credit_limit_micros: int  # 0 for prepaid only
    deposit_micros: int
    plans: tuple[str, ...] | None = None  # the tariff plans a line may take; None: every plan

    def allows_plan(self, plan: str) -> bool:
        return self.plans is None or plan in self.plans


@dataclass(frozen=True, slots=True)
class CreditClass:
    name: str
    minimum_points: int | None  # None: the last class, every lower score
    offer: Offer
    description: str


@dataclass(frozen=True, slots=True)
class CreditRules:
    file: str
    currency: str  # ISO 4217: of the credit limits and deposits
    individual: IndividualRules
    organization: OrganizationRules
    history: HistoryRules
    classes: tuple[CreditClass, ...]  # best first

    def class_for(self, points: int) -> CreditClass:
        for credit_class in self.classes:
            if credit_class.minimum_points is None or points >= credit_class.minimum_points:
                return credit_class
        return self.classes[-1]


@dataclass(frozen=True, slots=True)
class FactorScore:
    factor: str  # "age", "income_band", "open_debt", ...
    value: str  # the applicant's value, as read
    points: int


@dataclass(frozen=True, slots=True)
class CreditDecision:
    credit_class: str
    offer: Offer
    currency: str
    points: int
    factors: tuple[FactorScore, ...]  # empty when the bureau gives no reasons
    assessed_by: str  # "rule table <file>" or the external bureau's name

    def explain(self) -> str:
        """One line per factor, then the total, the class and the offer."""
        lines = [f"{factor.factor} {factor.value}: {factor.points:+d}" for factor in self.factors]
        offer = self.offer
        if offer.kind is OfferKind.POSTPAID:
            terms = f"postpaid, credit limit {format_money(offer.credit_limit_micros)} {self.currency}"
        else:
            terms = "prepaid only"
        if offer.deposit_micros:
            terms += f", deposit {format_money(offer.deposit_micros)} {self.currency}"
        lines.append(f"total {self.points}: class {self.credit_class} ({terms}) by {self.assessed_by}")
        return "\n".join(lines)


@runtime_checkable
class CreditBureau(Protocol):
    """Whoever assesses an application: the rule table, or an external credit bureau's adapter."""

    def assess(self, application: Application, history: PaymentHistory | None) -> CreditDecision: ...


class BureauError(ValueError):
    """A bureau's decision that cannot be acted on (an external bureau's adapter got it wrong)."""


def assess(bureau: CreditBureau, application: Application, history: PaymentHistory | None) -> CreditDecision:
    """The decision of ``bureau``, held to what activation relies on: a postpaid offer has a credit
    limit above 0, a prepaid-only offer none, and no amount is negative. An external bureau is
    code we do not control; a decision that breaks these is refused, naming the field, rather than
    opening a line with credit nobody granted."""
    decision = bureau.assess(application, history)
    offer = decision.offer
    problems = {
        "offer.credit_limit_micros": (offer.kind is OfferKind.POSTPAID) != (offer.credit_limit_micros > 0)
        or offer.credit_limit_micros < 0,
        "offer.deposit_micros": offer.deposit_micros < 0,
        "credit_class": not decision.credit_class,
    }
    for field, wrong in problems.items():
        if wrong:
            raise BureauError(f"{decision.assessed_by}: {field}: not usable in {decision}")
    return decision


class RuleTable:
    """The default ``CreditBureau``: the scorecard of ``config/credit_classes.toml``."""

    def __init__(self, rules: CreditRules) -> None:
        self.rules = rules

    def assess(self, application: Application, history: PaymentHistory | None) -> CreditDecision:
        factors = _application_factors(self.rules, application)
        if history is not None:
            factors += _history_factors(self.rules.history, history)
        points = sum(factor.points for factor in factors)
        credit_class = self.rules.class_for(points)
        return CreditDecision(
            credit_class=credit_class.name,
            offer=credit_class.offer,
            currency=self.rules.currency,
            points=points,
            factors=tuple(factors),
            assessed_by=f"rule table {self.rules.file}",
        )


def _application_factors(rules: CreditRules, application: Application) -> list[FactorScore]:
    if isinstance(application, IndividualApplication):
        person = rules.individual
        return [
            _numeric("age", age_years(application.date_of_birth, application.application_date), person.age),
            FactorScore("employment", application.employment.value, person.employment[application.employment]),
            FactorScore("income_band", application.income_band.value, person.income_band[application.income_band]),
            _numeric("years_at_address", application.years_at_address, person.years_at_address),
        ]
    company = rules.organization
    registration = company.registration_present if application.registered else company.registration_absent
    return [
        _numeric("years_trading", application.years_trading, company.years_trading),
        FactorScore("registration", "present" if application.registered else "absent", registration),
        _numeric("employees", application.employees, company.employees),
    ]


def _history_factors(rules: HistoryRules, history: PaymentHistory) -> list[FactorScore]:
    counted = history.days_late[: rules.invoices]
    worst = max(counted, default=0)
    debt = history.open_debt_micros
    return [
        FactorScore("worst_days_late", f"{worst} (last {len(counted)} invoices)", rules.worst_days_late.points(worst)),
        FactorScore("open_debt", format_money(debt), rules.open_debt.points(debt)),
    ]


def _numeric(factor: str, value: int, steps: StepFactor) -> FactorScore:
    return FactorScore(factor, str(value), steps.points(value))
