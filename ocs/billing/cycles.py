"""Bill-cycle periods and proration by day: pure functions on dates and integer micros.

Theory of operation: a billing account has a bill-cycle day from 1 to 28. Its cycles run from
that day of one month (included) to the same day of the next (excluded): cycle day 5 gives
[5 March, 5 April), [5 April, 5 May), ... Days 29, 30 and 31 are refused: not every month has
them (February has 28 days, or 29 in a leap year), and a rule that moves the day in short months
would make cycles of uneven origin; an account that wants calendar months takes day 1, whose
cycles are exactly the months. A cycle therefore has 28 to 31 days, by the month it starts in.

Proration: a rental of ``full_micros`` for a cycle of N days, used on the days [start, end)
inside it, costs ``cumulative(end) - cumulative(start)``, where ``cumulative(d)`` is the full
price times (days from the cycle start to d) / N, rounded half-even to the micro. The amounts
are differences of one rounded running total, so the parts of a cycle split at any days add up
to the full price exactly (the running total is 0 at the cycle start and the full price at its
end), each part is within one micro of the exact fraction, and none is negative (the running
total never decreases). Days are whole calendar days: activation, plan change and termination
take effect from a day's start, as the bill run gives them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date

MIN_CYCLE_DAY = 1
MAX_CYCLE_DAY = 28  # the last day every month has (February)
MONTHS_PER_YEAR = 12


def divide_half_even(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded to the nearest integer, ties to even (banker's rounding).

    Exact integer arithmetic for any signs; ``denominator`` must not be 0.
    """
    if denominator == 0:
        raise ZeroDivisionError("divide_half_even by 0")
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    quotient, remainder = divmod(numerator, denominator)  # 0 <= remainder < denominator
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """Whole days [start, end): ``end`` is the first day not included."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"period end {self.end} is before its start {self.start}")

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def contains(self, day: date) -> bool:
        return self.start <= day < self.end

    def overlap(self, other: Period) -> Period | None:
        """The days both periods hold, or None when they share none."""
        start, end = max(self.start, other.start), min(self.end, other.end)
        return Period(start, end) if start < end else None

    def __str__(self) -> str:
        return f"{self.start.isoformat()} to {self.end.isoformat()} (excl.)"


def check_cycle_day(cycle_day: int) -> int:
    """``cycle_day`` if it is 1..28; raises ValueError naming the rule otherwise."""
    if isinstance(cycle_day, bool) or not isinstance(cycle_day, int) or not MIN_CYCLE_DAY <= cycle_day <= MAX_CYCLE_DAY:
        raise ValueError(
            f"bill-cycle day {cycle_day!r} must be {MIN_CYCLE_DAY}..{MAX_CYCLE_DAY} (every month has it; "
            "day 1 bills calendar months)"
        )
    return cycle_day


def _month_shift(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * MONTHS_PER_YEAR + (month - 1) + months
    return index // MONTHS_PER_YEAR, index % MONTHS_PER_YEAR + 1


@functools.lru_cache(maxsize=4_096)  # the bill run asks it for every account of a page, about the same few days
def cycle_containing(cycle_day: int, day: date) -> Period:
    """The bill cycle [start, end) of an account with ``cycle_day`` that holds ``day``."""
    check_cycle_day(cycle_day)
    year, month = (day.year, day.month) if day.day >= cycle_day else _month_shift(day.year, day.month, -1)
    start = date(year, month, cycle_day)
    next_year, next_month = _month_shift(year, month, 1)
    return Period(start, date(next_year, next_month, cycle_day))


def previous_cycle(cycle_day: int, day: date) -> Period:
    """The last cycle closed by ``day``: the one that ends where the cycle holding ``day`` starts.

    On the cycle day itself the cycle that just ended is returned (it closed at that day's start).
    """
    current = cycle_containing(cycle_day, day)
    year, month = _month_shift(current.start.year, current.start.month, -1)
    return Period(date(year, month, cycle_day), current.start)


def cumulative_micros(full_micros: int, cycle: Period, day: date) -> int:
    """The running total of a rental of ``full_micros`` for ``cycle`` at the start of ``day``
    (clamped to the cycle): full price x days elapsed / days in the cycle, half-even."""
    elapsed = min(max((day - cycle.start).days, 0), cycle.days)
    return divide_half_even(full_micros * elapsed, cycle.days)


def prorate(full_micros: int, used: Period, cycle: Period) -> int:
    """What the days of ``used`` that fall in ``cycle`` cost of a rental of ``full_micros`` for the
    cycle (the module docstring: differences of the running total, so parts sum exactly)."""
    if full_micros < 0:
        raise ValueError(f"a rental price is not negative ({full_micros} micros)")
    if cycle.days == 0:
        raise ValueError(f"cycle {cycle} has no days")
    return cumulative_micros(full_micros, cycle, used.end) - cumulative_micros(full_micros, cycle, used.start)


MAX_CATCH_UP_CYCLES = 12  # a year of monthly cycles: how far back a run bills cycles it missed


def cycles_to_bill(cycle_day: int, day: date, newest_invoiced_start: date | None) -> list[Period]:
    """The cycles a run on ``day`` bills for an account, oldest first: every cycle closed by
    ``day`` that starts after its newest invoiced cycle (those a server down over their close
    missed), at most ``MAX_CATCH_UP_CYCLES``; for an account never invoiced, the last closed
    cycle only (its first bill: the cycles before it are not guessed at)."""
    last = previous_cycle(cycle_day, day)
    if newest_invoiced_start is None:
        return [last]
    found: list[Period] = []
    period = last
    while len(found) < MAX_CATCH_UP_CYCLES and period.start > newest_invoiced_start:
        found.append(period)
        period = previous_cycle(cycle_day, period.start)
    return found[::-1]
