"""Loyalty programmes as values, and the pure evaluation of events against them.

Theory of operation: a programme (TMF658 "loyalty program": an id, a name, validity dates and a
budget in the currency) holds rules; a rule is "on an event of this kind, for a member passing
these filters, move this counter; when its condition holds, take this action". Everything here is
a frozen value or a pure function: ``evaluate`` takes the events, their members, the counters and
the budgets' spending as they stand, and returns the counters and spending after, and the
applications the rules made. The engine (``ocs.loyalty.engine``) loads those inputs from the
business database and writes the outputs in the transaction that stored the events; a dry run
(``ocs loyalty simulate``) can call the same function with counters of its own.

Rules:
- A member is a customer (``customers.customer_id``): the usage of every line of a company counts
  towards the company's counters.
- A counter is per (rule, member, period); a period is a calendar day or month in UTC, named by
  its first day (``2026-12`` or ``2026-12-07``); the next period starts the counter from 0.
- The counter counts events, units, or spend (micros) of the events the filters let through.
- ``every`` N fires each time the counter passes a multiple of N (a spend counter may pass
  several at once: the action is taken that many times); ``threshold`` T fires once per period,
  when the counter goes from below T to T or more.
- An event outside its programme's validity dates counts for nothing.
- A programme with a budget makes no application that would take its spending past the budget
  (the cost of bonus money is its amount; of an allowance its declared ``cost``; of a discount 0
  until the bill run prices it); the counters still move.
- An action worth nothing (5 % of a free record) makes no application.
- The evaluation's hot loop (``evaluate_triggers``, the engine's) reads plain tuples: an event is
  a ``Trigger``, the rules counting it are chosen once per combination of what the filters look
  at and made ready as tuples, and the counters are read and moved by stored row (member,
  period); a usage record makes no object but its tuple and its counters' values (an event and
  five matches per record, with their keys, were most of the engine's Python time).
  ``evaluate`` takes ``LoyaltyEvent``s and counters by (rule, member, period), for the dry run
  and the tests. The values made per event (events, members, applications) are ``value_type``s:
  immutable to the type checker without a frozen dataclass's cost per field at run time.
- Rating discounts are part of the model only: the loader reads them, ``evaluate`` makes no
  application for them (rating does not consult loyalty yet).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from balance.types import BucketKind
from balance.value_type import value_type

BASIS_POINTS_PER_WHOLE = 10_000
SECONDS_PER_DAY = 86_400

CounterKey = tuple[str, str, str]  # (rule id, member id, period)


class EventKind(enum.StrEnum):
    USAGE = "usage"  # a committed usage record, as it leaves the outbox
    PAYMENT = "payment"  # a payment recorded by billing
    TOP_UP = "top_up"  # a top-up through the API (ocs.loyalty.account_feed)
    LIFECYCLE = "lifecycle"  # a line's status change; ``service`` is the new status (account_feed)
    BIRTHDAY = "birthday"  # fed once a day (ocs.loyalty.daily_feed)
    ANNIVERSARY = "anniversary"  # the customer's, in whole years; fed once a day (daily_feed)


WIRED_EVENT_KINDS = frozenset(EventKind)


class Period(enum.StrEnum):
    DAY = "day"
    MONTH = "month"


class Measure(enum.StrEnum):
    EVENTS = "events"
    UNITS = "units"
    SPEND = "spend"  # micros


class ConditionKind(enum.StrEnum):
    EVERY = "every"
    THRESHOLD = "threshold"


class ActionKind(enum.StrEnum):
    BONUS_MONEY = "bonus_money"
    UNIT_ALLOWANCE = "unit_allowance"
    INVOICE_DISCOUNT = "invoice_discount"
    RATING_DISCOUNT = "rating_discount"  # model only (module docstring)


class PercentOf(enum.StrEnum):
    TRIGGER_SPEND = "trigger_spend"  # the micros of the event that fired the rule
    COUNTED_SPEND = "counted_spend"  # the counter after the event (a spend counter's period total)


class DiscountTarget(enum.StrEnum):
    SERVICE = "service"  # the usage of one service on the next invoice
    RENTALS = "rentals"  # the rentals of the next invoice


@dataclass(frozen=True, slots=True)
class Filters:
    """Which events count; an empty set lets everything through."""

    services: frozenset[str] = frozenset()
    segments: frozenset[str] = frozenset()
    payment_types: frozenset[str] = frozenset()  # prepaid | postpaid
    customer_kinds: frozenset[str] = frozenset()  # individual | organization


@dataclass(frozen=True, slots=True)
class Counter:
    period: Period
    measure: Measure


@dataclass(frozen=True, slots=True)
class Condition:
    kind: ConditionKind
    value: int  # N for every, T for threshold; in the counter's measure (micros for spend)


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    amount_micros: int = 0  # bonus money: a fixed amount per firing
    percent_basis_points: int = 0  # bonus money (instead of a fixed amount), discounts
    percent_of: PercentOf | None = None  # bonus money given as a percent
    unit_kind: BucketKind | None = None  # allowance: seconds | octets | events
    units: int = 0  # allowance: units per firing
    services: tuple[str, ...] = ()  # allowance: the services it serves (empty: every service of its unit)
    expiry_days: int = 0  # bonus money and allowances: valid this many days from the event (0: no end)
    cost_micros: int = 0  # allowance: what one firing costs the programme's budget
    target: DiscountTarget | None = None  # invoice discount
    service: str = ""  # invoice or rating discount of a service


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    programme_id: str
    event: EventKind
    filters: Filters
    counter: Counter
    condition: Condition
    action: Action


@dataclass(frozen=True, slots=True)
class Programme:
    programme_id: str
    name: str
    valid_from: date
    valid_until: date | None  # the last day it counts (None: open-ended)
    budget_micros: int | None  # None: no budget
    rules: tuple[Rule, ...]
    valid_from_seconds: int = field(init=False)
    valid_until_seconds: int | None = field(init=False)  # exclusive

    def __post_init__(self) -> None:
        object.__setattr__(self, "valid_from_seconds", _day_start(self.valid_from))
        until = None if self.valid_until is None else _day_start(self.valid_until) + SECONDS_PER_DAY
        object.__setattr__(self, "valid_until_seconds", until)

    def valid_at(self, at_seconds: int) -> bool:
        return self.valid_from_seconds <= at_seconds and (
            self.valid_until_seconds is None or at_seconds < self.valid_until_seconds
        )


@dataclass(frozen=True, slots=True)
class LoyaltyRules:
    programmes: Mapping[str, Programme]
    rules: Mapping[str, Rule]

    def for_event(self, kind: EventKind) -> tuple[Rule, ...]:
        return tuple(rule for rule in self.rules.values() if rule.event is kind)


@value_type
class LoyaltyEvent:
    """What a rule looks at: a usage record or a payment, made neutral."""

    kind: EventKind
    trigger_id: str  # the record id, or the event's own (a payment id, "birthday|C|2026")
    member_id: str
    line_id: str  # the balance account a credit goes to ("" : none known, nothing credited)
    at_seconds: int
    service: str = ""
    units: int = 0
    micros: int = 0
    payment_type: str = ""


@value_type
class Member:
    customer_id: str
    kind: str  # individual | organization
    segment: str | None


@value_type
class Application:
    """One rule applied to one trigger: what to credit or record."""

    rule_id: str
    programme_id: str
    member_id: str
    line_id: str
    trigger_id: str
    trigger_kind: EventKind
    action: ActionKind
    at_seconds: int
    amount_micros: int = 0  # bonus money
    units: int = 0  # allowance
    unit_kind: BucketKind | None = None
    services: tuple[str, ...] = ()
    valid_until: int = 0  # epoch seconds (0: no end)
    cost_micros: int = 0  # what it took from the programme's budget
    percent_basis_points: int = 0  # invoice discount
    target: DiscountTarget | None = None
    service: str = ""
    applies_from: int = 0  # invoice discount: the next period, [from, until) epoch seconds
    applies_until: int = 0


CounterRow = tuple[str, str]  # (member id, period): one stored row of counters (ocs.db.loyalty)
CounterRows = dict[CounterRow, dict[str, int]]  # each row's counters: rule id -> value

# An event as the evaluation reads it, a plain tuple (a usage record makes no object but this):
# (kind, trigger id, line id, at_seconds, service, units, micros, payment type, member).
Trigger = tuple[EventKind, str, str, int, str, int, int, str, Member]


@dataclass(slots=True)
class Evaluation:
    """What ``evaluate`` decided: the counters it moved (values after, by row), budgets' spending
    after, and the applications, in event order; ``over_budget`` counts the applications a
    budget refused."""

    changed: CounterRows
    spent: dict[str, int]
    applications: list[Application]
    over_budget: int = 0

    @property
    def counters(self) -> dict[CounterKey, int]:
        """The counters moved, one key per (rule, member, period)."""
        return {
            (rule_id, member_id, period): value
            for (member_id, period), values in self.changed.items()
            for rule_id, value in values.items()
        }


# -- periods -----------------------------------------------------------------------------------


def _day_start(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def period_of(period: Period, at_seconds: int) -> str:
    """The period holding ``at_seconds`` (UTC), named by its first day."""
    day = datetime.fromtimestamp(at_seconds, UTC)
    return f"{day.year:04d}-{day.month:02d}" if period is Period.MONTH else f"{day.date().isoformat()}"


def next_period_bounds(period: Period, at_seconds: int) -> tuple[int, int]:
    """The period after the one holding ``at_seconds``: [start, end) in epoch seconds."""
    day = datetime.fromtimestamp(at_seconds, UTC).date()
    if period is Period.DAY:
        start = _day_start(day) + SECONDS_PER_DAY
        return start, start + SECONDS_PER_DAY
    following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
    after = date(following.year + following.month // 12, following.month % 12 + 1, 1)
    return _day_start(following), _day_start(after)


# -- evaluation --------------------------------------------------------------------------------

_MEASURE_INDEX = {Measure.EVENTS: 0, Measure.UNITS: 1, Measure.SPEND: 2}  # in (1, units, micros)

# A rule counting an event, made ready for the loop: (rule, rule id, whether its period is a
# day, its measure's index in (1, units, micros), N of ``every`` (0 for a threshold), T of a
# threshold (N for every)).
_Counting = tuple[Rule, str, bool, int, int, int]
_Combination = tuple[EventKind, str, str | None, str, str, int]


def admits(rule: Rule, service: str, payment_type: str, member: Member) -> bool:
    """Whether the rule's filters let this member's event (of this service and payment type) through."""
    filters = rule.filters
    return (
        (not filters.services or service in filters.services)
        and (not filters.segments or member.segment in filters.segments)
        and (not filters.payment_types or payment_type in filters.payment_types)
        and (not filters.customer_kinds or member.kind in filters.customer_kinds)
    )


def triggers_of(events: Iterable[tuple[LoyaltyEvent, Member]]) -> list[Trigger]:
    """The events as the evaluation reads them."""
    return [
        (
            event.kind,
            event.trigger_id,
            event.line_id,
            event.at_seconds,
            event.service,
            event.units,
            event.micros,
            event.payment_type,
            member,
        )
        for event, member in events
    ]


def counter_periods(triggers: Iterable[Trigger]) -> set[str]:
    """The periods (days and months) the triggers' counters fall in: with their members, the
    counter rows an evaluation may read."""
    periods: set[str] = set()
    for day in {trigger[3] // SECONDS_PER_DAY for trigger in triggers}:
        periods.update(_period_names(day * SECONDS_PER_DAY))
    return periods


def counter_keys(rules: LoyaltyRules, events: Sequence[tuple[LoyaltyEvent, Member]]) -> set[CounterKey]:
    """The counters ``evaluate`` reads for these events (each one it reads, it moves)."""
    return set(evaluate(rules, events, {}, {}).counters)


def evaluate(
    rules: LoyaltyRules,
    events: Sequence[tuple[LoyaltyEvent, Member]],
    counters: Mapping[CounterKey, int],
    spent: Mapping[str, int],
) -> Evaluation:
    """The events applied in order to the counters (missing: 0) and budgets' spending (missing: 0)."""
    return evaluate_triggers(rules, triggers_of(events), _RowsOfKeys(counters), spent)


def evaluate_triggers(
    rules: LoyaltyRules,
    triggers: Iterable[Trigger],
    stored: Mapping[CounterRow, Mapping[str, int]],
    spent: Mapping[str, int],
) -> Evaluation:
    """``evaluate`` of triggers, on the stored counters by row (missing: 0): the engine's form.

    Which rules count an event depends only on its kind, service and payment type, its member's
    segment and kind (the filters) and its UTC day (a programme's validity starts and ends at a
    day's start), so the rules are chosen once per such combination a call meets (a few dozen
    per batch of records), each made ready as a tuple (``_Counting``); an event then costs one
    dict lookup, and each rule counting it a few more (its row, its counter), with no object
    made but the counters' values; its periods are named once a day."""
    result = Evaluation(changed={}, spent={}, applications=[])
    changed = result.changed
    chosen: dict[_Combination, tuple[_Counting, ...]] = {}
    nothing: Mapping[str, int] = {}
    last_day, day_name, month_name = -1, "", ""
    for trigger in triggers:
        kind, _, _, at_seconds, service, units, micros, payment_type, member = trigger
        day = at_seconds // SECONDS_PER_DAY
        if day != last_day:
            last_day = day
            day_name, month_name = _period_names(at_seconds)
        combination = (kind, service, member.segment, member.kind, payment_type, day)
        counting = chosen.get(combination)
        if counting is None:
            counting = chosen[combination] = _counting(rules, trigger)
        amounts = (1, units, micros)
        customer_id = member.customer_id
        for rule, rule_id, daily, measure, every, threshold in counting:
            row = (customer_id, day_name if daily else month_name)
            moved = changed.get(row)
            if moved is None:
                moved = changed[row] = {}
            before = moved.get(rule_id)
            if before is None:
                before = stored.get(row, nothing).get(rule_id, 0)
            after = moved[rule_id] = before + amounts[measure]
            # every N: once per multiple of N passed; a threshold T: once, as the counter reaches T
            fired = after // every - before // every if every else int(before < threshold <= after)
            if fired > 0:
                _take(rules, applied(rule, trigger, fired, after), spent, result)
    return result


def _counting(rules: LoyaltyRules, trigger: Trigger) -> tuple[_Counting, ...]:
    """The rules counting ``trigger``, in rule order, made ready for the loop."""
    kind, _, _, at_seconds, service, _, _, payment_type, member = trigger
    return tuple(
        (
            rule,
            rule.rule_id,
            rule.counter.period is Period.DAY,
            _MEASURE_INDEX[rule.counter.measure],
            rule.condition.value if rule.condition.kind is ConditionKind.EVERY else 0,
            rule.condition.value,
        )
        for rule in rules.for_event(kind)
        if admits(rule, service, payment_type, member) and rules.programmes[rule.programme_id].valid_at(at_seconds)
    )


def _take(rules: LoyaltyRules, application: Application | None, spent: Mapping[str, int], result: Evaluation) -> None:
    """Add the application to the result unless it is worth nothing or its budget refuses it."""
    if application is None:
        return
    programme = rules.programmes[application.programme_id]
    if programme.budget_micros is not None:
        so_far = result.spent.get(programme.programme_id, spent.get(programme.programme_id, 0))
        if so_far + application.cost_micros > programme.budget_micros:
            result.over_budget += 1
            return
        result.spent[programme.programme_id] = so_far + application.cost_micros
    result.applications.append(application)


def _period_names(at_seconds: int) -> tuple[str, str]:
    """(day, month) holding ``at_seconds``, as ``period_of`` names them."""
    moment = time.gmtime(at_seconds)
    month = f"{moment.tm_year:04d}-{moment.tm_mon:02d}"
    return f"{month}-{moment.tm_mday:02d}", month


class _RowsOfKeys(Mapping[CounterRow, Mapping[str, int]]):
    """Counters keyed by (rule, member, period), as ``evaluate``'s callers keep them, seen by
    row as ``evaluate_triggers`` reads them (the view reads the mapping: nothing is copied)."""

    def __init__(self, counters: Mapping[CounterKey, int]) -> None:
        self.counters = counters

    def __getitem__(self, row: CounterRow) -> Mapping[str, int]:
        return _RowOfKeys(self.counters, row)

    def __iter__(self) -> Iterator[CounterRow]:
        return iter({(member_id, period) for _, member_id, period in self.counters})

    def __len__(self) -> int:
        return sum(1 for _ in self)


class _RowOfKeys(Mapping[str, int]):
    def __init__(self, counters: Mapping[CounterKey, int], row: CounterRow) -> None:
        self.counters = counters
        self.row = row

    def __getitem__(self, rule_id: str) -> int:
        return self.counters[(rule_id, *self.row)]

    def __iter__(self) -> Iterator[str]:
        return iter([rule_id for rule_id, *row in self.counters if tuple(row) == self.row])

    def __len__(self) -> int:
        return sum(1 for _ in self)


def applied(rule: Rule, trigger: Trigger, fired: int, counted: int) -> Application | None:
    """The application of ``rule`` fired ``fired`` times by ``trigger`` (None: worth nothing).

    Made with the action's fields in one call (``dataclasses.replace`` of a common base cost
    about 8 us an application, a tenth of the evaluation of a batch)."""
    action = rule.action
    at_seconds = trigger[3]
    valid_until = at_seconds + action.expiry_days * SECONDS_PER_DAY if action.expiry_days else 0
    if action.kind is ActionKind.BONUS_MONEY:
        if action.percent_of is None:
            amount = action.amount_micros * fired
        else:
            spend = trigger[6] if action.percent_of is PercentOf.TRIGGER_SPEND else counted
            amount = spend * action.percent_basis_points // BASIS_POINTS_PER_WHOLE
        if amount <= 0:
            return None
        return _application(rule, trigger, amount_micros=amount, valid_until=valid_until, cost_micros=amount)
    if action.kind is ActionKind.UNIT_ALLOWANCE:
        return _application(
            rule,
            trigger,
            units=action.units * fired,
            unit_kind=action.unit_kind,
            services=action.services,
            valid_until=valid_until,
            cost_micros=action.cost_micros * fired,
        )
    if action.kind is ActionKind.INVOICE_DISCOUNT:
        start, end = next_period_bounds(rule.counter.period, at_seconds)
        return _application(
            rule,
            trigger,
            percent_basis_points=action.percent_basis_points,
            target=action.target,
            service=action.service,
            applies_from=start,
            applies_until=end,
        )
    return None  # a rating discount: model only (module docstring)


def _application(rule: Rule, trigger: Trigger, **action_fields: Any) -> Application:
    kind, trigger_id, line_id, at_seconds, _, _, _, _, member = trigger
    return Application(
        rule_id=rule.rule_id,
        programme_id=rule.programme_id,
        member_id=member.customer_id,
        line_id=line_id,
        trigger_id=trigger_id,
        trigger_kind=kind,
        action=rule.action.kind,
        at_seconds=at_seconds,
        **action_fields,
    )
