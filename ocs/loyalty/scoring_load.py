"""The scoring rules as data (``config/scoring.toml``): factors with their weights and bands, the
segments by total points, the windows facts are read over; frozen values and their loader.

Theory of operation: the TOML document is read once and checked completely before it is used;
the first problem raises ``ScoringRulesError`` naming the file, the section
(``factors.spend.bands[2]``, ``segments[1]``) and the field, and every table refuses keys it does
not know, as the dunning ladders do (``ocs.billing.dunning_rules``).

A factor is one measure of the customer (``Measure``: tenure in days, spend a month, a trend in
percent, ...) turned into points by bands: the band with the greatest ``from`` at or below the
measured value gives its points, times the factor's ``weight``; a value below every band gives
none. Bands ascend strictly by ``from`` so the band of a value is never ambiguous. A money
measure's ``from`` is a decimal string in units of currency (read exactly into micros), every
other measure's an integer in the measure's unit. Only the factors the file names are scored.

Segments ascend by ``min_points``; the first has none (it takes every score below the second's),
so every score falls in exactly one segment. Segment names are what ``customers.segment`` holds
(at most 32 characters), where dunning exemptions and discounts read them.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ocs.db.loyalty_scores import SEGMENT_LENGTH
from ocs.rating.load_text import DataFileError, Where

MAX_POINTS = 1_000_000  # a band's points, either sign: far beyond any sensible scale
MAX_WEIGHT = 1_000
MAX_MONTHS = 36  # the spend and usage window: three years at most (one grouped read per window)
MAX_TICKET_DAYS = 3_660
_TOP_KEYS = frozenset({"months", "ticket_days", "segments", "factors"})
_SEGMENT_KEYS = frozenset({"name", "min_points"})
_FACTOR_KEYS = frozenset({"weight", "bands"})
_BAND_KEYS = frozenset({"from", "points"})


class ScoringRulesError(DataFileError):
    """A scoring file that cannot be loaded; ``str()`` reads ``file: section: field: problem``."""


class Measure(enum.StrEnum):
    """What a factor measures; its unit is ``UNITS[measure]``."""

    TENURE = "tenure"  # days since the customer was created
    SPEND = "spend"  # spend a month over the window: invoices, and prepaid usage records
    SPEND_TREND = "spend_trend"  # percent: the window's last month against the months before
    VOICE_USAGE = "voice_usage"  # seconds a month (usage records in seconds)
    VOICE_TREND = "voice_trend"
    SMS_USAGE = "sms_usage"  # events a month
    SMS_TREND = "sms_trend"
    DATA_USAGE = "data_usage"  # octets a month
    DATA_TREND = "data_trend"
    DAYS_LATE = "days_late"  # the most days an invoice due in the window was paid late (or is unpaid)
    OVERDUE_INVOICES = "overdue_invoices"  # invoices past their due date and still open at the day
    DUNNING_STEPS = "dunning_steps"  # dunning steps applied in the window (letters, restrict, bar, ...)
    OPEN_DISPUTES = "open_disputes"  # disputes open now
    TROUBLE_TICKETS = "trouble_tickets"  # tickets opened in the last ``ticket_days``
    COMPANY_LINES = "company_lines"  # an organization's lines not terminated (individuals: not scored)


UNITS: Mapping[Measure, str] = MappingProxyType(
    {
        Measure.TENURE: "days",
        Measure.SPEND: "micros a month",
        Measure.SPEND_TREND: "percent",
        Measure.VOICE_USAGE: "seconds a month",
        Measure.VOICE_TREND: "percent",
        Measure.SMS_USAGE: "events a month",
        Measure.SMS_TREND: "percent",
        Measure.DATA_USAGE: "octets a month",
        Measure.DATA_TREND: "percent",
        Measure.DAYS_LATE: "days",
        Measure.OVERDUE_INVOICES: "invoices",
        Measure.DUNNING_STEPS: "steps",
        Measure.OPEN_DISPUTES: "disputes",
        Measure.TROUBLE_TICKETS: "tickets",
        Measure.COMPANY_LINES: "lines",
    }
)
MONEY_MEASURES = frozenset({Measure.SPEND})
SIGNED_MEASURES = frozenset({Measure.SPEND_TREND, Measure.VOICE_TREND, Measure.SMS_TREND, Measure.DATA_TREND})


@dataclass(frozen=True, slots=True)
class Band:
    start: int  # ``from``, in the measure's unit (micros for money)
    points: int


@dataclass(frozen=True, slots=True)
class Factor:
    measure: Measure
    weight: int
    bands: tuple[Band, ...]  # ascending by start

    def band_of(self, value: int) -> Band | None:
        """The band a value falls in: the greatest start at or below it (None: below every band)."""
        found: Band | None = None
        for band in self.bands:
            if band.start > value:
                break
            found = band
        return found


@dataclass(frozen=True, slots=True)
class Segment:
    name: str
    min_points: int | None  # None: the lowest segment, below the next one's min_points


@dataclass(frozen=True, slots=True)
class ScoringRules:
    months: int  # the window of spend, usage and payment behaviour: the last N full calendar months
    ticket_days: int
    factors: tuple[Factor, ...]  # in the file's order
    segments: tuple[Segment, ...]  # ascending

    def segment_of(self, points: int) -> str:
        chosen = self.segments[0].name
        for segment in self.segments[1:]:
            if segment.min_points is not None and points >= segment.min_points:
                chosen = segment.name
        return chosen

    @property
    def segment_names(self) -> frozenset[str]:
        return frozenset(segment.name for segment in self.segments)


def load_scoring_rules(path: str | Path) -> ScoringRules:
    """Read and validate a scoring file; raises ``ScoringRulesError`` on the first problem."""
    file = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ScoringRulesError(file, "(file)", "(file)", str(error)) from None
    return parse_scoring_rules(content, file)


def parse_scoring_rules(content: str, file: str = "<string>") -> ScoringRules:
    where = Where(file, "(top level)", ScoringRulesError)
    try:
        document = tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        raise where.fail("(syntax)", str(error)) from None
    where.keys(document, "", _TOP_KEYS, _TOP_KEYS)
    months = where.integer(document["months"], "months", minimum=2)  # a trend needs months before the last
    if months > MAX_MONTHS:
        raise where.fail("months", f"{months} is above {MAX_MONTHS}")
    ticket_days = where.integer(document["ticket_days"], "ticket_days", minimum=1)
    if ticket_days > MAX_TICKET_DAYS:
        raise where.fail("ticket_days", f"{ticket_days} is above {MAX_TICKET_DAYS}")
    factors = where.table(document["factors"], "factors")
    if not factors:
        raise where.fail("factors", "no factor: name at least one [factors.MEASURE]")
    parsed = tuple(_factor(where.at(f"factors.{name}"), name, value) for name, value in factors.items())
    return ScoringRules(months, ticket_days, parsed, _segments(where, document["segments"]))


def _factor(where: Where, name: str, value: object) -> Factor:
    try:
        measure = Measure(name)
    except ValueError:
        known = ", ".join(item.value for item in Measure)
        raise where.fail("(name)", f"{name!r} is not a measure ({known})") from None
    table = where.table(value, "(table)")
    where.keys(table, "", _FACTOR_KEYS, frozenset({"bands"}))
    weight = where.integer(table.get("weight", 1), "weight", minimum=0)
    if weight > MAX_WEIGHT:
        raise where.fail("weight", f"{weight} is above {MAX_WEIGHT}")
    raw = table["bands"]
    if not isinstance(raw, list) or not raw:
        raise where.fail("bands", "must be a non-empty array of tables ({ from = ..., points = ... })")
    bands: list[Band] = []
    for index, item in enumerate(raw, start=1):
        band = _band(where.at(f"{where.section}.bands[{index}]"), measure, item)
        if bands and band.start <= bands[-1].start:
            raise where.at(f"{where.section}.bands[{index}]").fail(
                "from", f"{band.start} is not above the band before ({bands[-1].start}): bands ascend by from"
            )
        bands.append(band)
    return Factor(measure, weight, tuple(bands))


def _band(where: Where, measure: Measure, value: object) -> Band:
    table = where.table(value, "(table)")
    where.keys(table, "", _BAND_KEYS, _BAND_KEYS)
    if measure in MONEY_MEASURES:
        start = where.price_micros(table["from"], "from")
    else:
        start = where.integer(table["from"], "from", minimum=-MAX_POINTS if measure in SIGNED_MEASURES else 0)
    points = where.integer(table["points"], "points", minimum=-MAX_POINTS)
    if points > MAX_POINTS:
        raise where.fail("points", f"{points} is above {MAX_POINTS}")
    return Band(start, points)


def _segments(where: Where, value: object) -> tuple[Segment, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise where.fail("segments", "must be an array of at least two tables ([[segments]]), lowest first")
    segments: list[Segment] = []
    for index, item in enumerate(value, start=1):
        at = where.at(f"segments[{index}]")
        table = at.table(item, "(table)")
        at.keys(table, "", _SEGMENT_KEYS, frozenset({"name"}))
        name = at.text(table["name"], "name")
        if not name or len(name) > SEGMENT_LENGTH or name != name.strip():
            raise at.fail("name", f"{name!r}: 1 to {SEGMENT_LENGTH} characters, no surrounding spaces")
        if any(segment.name == name for segment in segments):
            raise at.fail("name", f"{name!r} is named twice")
        if index == 1:
            if "min_points" in table:
                raise at.fail("min_points", "the lowest segment has none: it takes every score below the next")
            segments.append(Segment(name, None))
            continue
        if "min_points" not in table:
            raise at.fail("min_points", "missing")
        min_points = at.integer(table["min_points"], "min_points", minimum=-MAX_POINTS)
        before = segments[-1].min_points
        if before is not None and min_points <= before:
            raise at.fail("min_points", f"{min_points} is not above the segment before ({before}): ascending")
        segments.append(Segment(name, min_points))
    return tuple(segments)
