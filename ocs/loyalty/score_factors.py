"""A customer's score as a pure function of the facts about the customer and the scoring rules.

Theory of operation: ``CustomerFacts`` holds everything a score is made of, read for many customers
at once by ``ocs.loyalty.score_facts``; ``score(facts, rules, day)`` measures each factor the rules
name (``measure``), finds its band (``ocs.loyalty.scoring_load``), and sums the points into the
total, whose segment the rules' thresholds give. Nothing here reads a clock or a database, so the
same facts always give the same score, and the daily run, a rescore on a payment and an
operator's question all agree.

Each factor explains itself in one line of facts and arithmetic, for example
``tenure 412 days (band from 365) -> 20 points`` or ``spend 25.00 a month over 3 months (band from
10.00) -> 10 points x weight 2 = 20 points``. A factor that cannot be measured (a trend with
nothing in the months before the last, company lines for an individual) scores 0 points and says
why. Trends are whole percents, rounded down: the window's last month against the average of the
months before it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date

from ocs.loyalty.scoring_load import MONEY_MEASURES, UNITS, Factor, Measure, ScoringRules
from ocs.rating.rate import format_money

SECONDS = "seconds"
EVENTS = "events"
OCTETS = "octets"
# The usage records' units as services: voice is charged in seconds, SMS in events, data in octets
# (DESIGN.md: the service table of the network elements).
USAGE_UNITS: Mapping[Measure, str] = {
    Measure.VOICE_USAGE: SECONDS,
    Measure.VOICE_TREND: SECONDS,
    Measure.SMS_USAGE: EVENTS,
    Measure.SMS_TREND: EVENTS,
    Measure.DATA_USAGE: OCTETS,
    Measure.DATA_TREND: OCTETS,
}
_SERVICE_NAMES = {SECONDS: "voice", EVENTS: "sms", OCTETS: "data"}


@dataclass(slots=True)
class CustomerFacts:
    """What one customer's score is made of; the months of the window oldest first."""

    customer_id: str
    kind: str  # individual | organization
    created_on: date
    months: int
    spend_by_month: list[int] = field(default_factory=list)  # micros
    usage_by_month: dict[str, list[int]] = field(default_factory=dict)  # unit -> units a month
    invoices_due: int = 0  # invoices due in the window, before the day
    invoices_late: int = 0
    most_days_late: int = 0
    invoices_overdue: int = 0  # of those, still open at the day
    dunning_steps: int = 0
    open_disputes: int = 0
    tickets: int = 0
    lines: int = 0

    def __post_init__(self) -> None:
        if not self.spend_by_month:
            self.spend_by_month = [0] * self.months

    def usage(self, unit: str) -> list[int]:
        return self.usage_by_month.setdefault(unit, [0] * self.months)


@dataclass(frozen=True, slots=True)
class FactorScore:
    factor: str
    value: int | None  # in ``unit``; None: not measurable for this customer
    unit: str
    points: int
    explanation: str

    def as_json(self) -> dict[str, object]:
        return {
            "factor": self.factor,
            "value": self.value,
            "unit": self.unit,
            "points": self.points,
            "explanation": self.explanation,
        }


@dataclass(frozen=True, slots=True)
class Score:
    customer_id: str
    points: int
    segment: str
    factors: tuple[FactorScore, ...]

    def same_standing(self, points: int, segment: str, factors: object) -> bool:
        """Whether a stored score (its points, segment and factor list) has these points throughout."""
        if points != self.points or segment != self.segment or not isinstance(factors, list):
            return False
        stored = {item.get("factor"): item.get("points") for item in factors if isinstance(item, dict)}
        return stored == {factor.factor: factor.points for factor in self.factors}


def score(facts: CustomerFacts, rules: ScoringRules, day: date) -> Score:
    factors = tuple(_scored(factor, facts, day) for factor in rules.factors)
    total = sum(factor.points for factor in factors)
    return Score(facts.customer_id, total, rules.segment_of(total), factors)


def _scored(factor: Factor, facts: CustomerFacts, day: date) -> FactorScore:
    value, described = measure(factor.measure, facts, day)
    unit = UNITS[factor.measure]
    if value is None:
        return FactorScore(factor.measure.value, None, unit, 0, f"{described} -> 0 points")
    band = factor.band_of(value)
    if band is None:
        return FactorScore(factor.measure.value, value, unit, 0, f"{described} (below every band) -> 0 points")
    start = format_money(band.start) if factor.measure in MONEY_MEASURES else str(band.start)
    points = band.points * factor.weight
    arithmetic = f"{band.points} points" if factor.weight == 1 else f"{band.points} points x weight {factor.weight}"
    total = "" if factor.weight == 1 else f" = {points} points"
    return FactorScore(
        factor.measure.value, value, unit, points, f"{described} (band from {start}) -> {arithmetic}{total}"
    )


def measure(kind: Measure, facts: CustomerFacts, day: date) -> tuple[int | None, str]:
    """The measured value (None: not measurable) and the facts behind it, as a phrase."""
    months = facts.months
    if kind is Measure.TENURE:
        days = max((day - facts.created_on).days, 0)
        return days, f"tenure {days} days (customer since {facts.created_on.isoformat()})"
    if kind is Measure.SPEND:
        monthly = sum(facts.spend_by_month) // months
        return monthly, f"spend {format_money(monthly)} a month over {months} months"
    if kind is Measure.SPEND_TREND:
        return _trend("spend", facts.spend_by_month, format_money)
    if kind in (Measure.VOICE_USAGE, Measure.SMS_USAGE, Measure.DATA_USAGE):
        unit = USAGE_UNITS[kind]
        monthly = sum(facts.usage(unit)) // months
        return monthly, f"{_SERVICE_NAMES[unit]} {monthly} {unit} a month over {months} months"
    if kind in (Measure.VOICE_TREND, Measure.SMS_TREND, Measure.DATA_TREND):
        unit = USAGE_UNITS[kind]
        return _trend(_SERVICE_NAMES[unit], facts.usage(unit), lambda amount: f"{amount} {unit}")
    return _behaviour(kind, facts)


def _behaviour(kind: Measure, facts: CustomerFacts) -> tuple[int | None, str]:
    if kind is Measure.DAYS_LATE:
        late = facts.most_days_late
        return late, (
            f"at most {late} days late ({facts.invoices_late} of {facts.invoices_due} invoices due in "
            f"{facts.months} months paid late or unpaid)"
        )
    if kind is Measure.OVERDUE_INVOICES:
        return facts.invoices_overdue, f"{facts.invoices_overdue} invoices overdue and unpaid"
    if kind is Measure.DUNNING_STEPS:
        return facts.dunning_steps, f"{facts.dunning_steps} dunning steps in {facts.months} months"
    if kind is Measure.OPEN_DISPUTES:
        return facts.open_disputes, f"{facts.open_disputes} open disputes"
    if kind is Measure.TROUBLE_TICKETS:
        return facts.tickets, f"{facts.tickets} trouble tickets opened"
    if facts.kind != "organization":
        return None, "company lines: not an organization"
    return facts.lines, f"company of {facts.lines} lines"


def _trend(name: str, by_month: list[int], shown: Callable[[int], str]) -> tuple[int | None, str]:
    earlier = by_month[:-1]
    average = sum(earlier) // len(earlier)
    last = by_month[-1]
    if average == 0:
        return None, f"{name} trend: nothing in the {len(earlier)} months before the last"
    percent = (last - average) * 100 // average
    return percent, (f"{name} trend {percent:+d} % (last month {shown(last)} against {shown(average)} a month before)")
