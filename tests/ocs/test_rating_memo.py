"""``MemoizedRating``: each input rated once a minute, and equal to ``rate`` on every input but
for the local time, which it gives at the start of the moment's minute.

The comparisons walk moments in seconds' steps across what changes a rating within a minute's
reach: a band's start and end with a grant's lookahead, daylight-saving changes, a holiday's
midnight, a plan version's start, and a time zone's offset of seconds (local mean time, 1890).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocs.rating.rate import MemoizedRating, Rated, RatingFailure, RatingInput, TariffBook, load_book, parse_book, rate
from tests.ocs.test_rating import DEFAULT_TARIFFS, IMS, PS, SMS
from tests.ocs.test_rating_versions import JULY, OCTOBER, VERSIONED

LOOKAHEAD_SECONDS = 1800  # the default Validity-Time (config QuotaSettings.validity_seconds)


@pytest.fixture(scope="module")
def book() -> TariffBook:
    return load_book(DEFAULT_TARIFFS)


def inputs_at(at: datetime) -> list[RatingInput]:
    return [
        RatingInput(PS, 10, None, None, at, LOOKAHEAD_SECONDS),
        RatingInput(PS, 20, None, None, at, 0),
        RatingInput(PS, 99, None, None, at, LOOKAHEAD_SECONDS),  # not rated: a failure
        RatingInput(IMS, None, None, "+4930123456", at, LOOKAHEAD_SECONDS),
        RatingInput(IMS, None, None, "004930123456", at, 90),
        RatingInput(SMS, None, None, "+491511234567", at, 0),
    ]


def moments(start: datetime, end: datetime, step_seconds: int) -> Iterable[datetime]:
    at = start
    while at < end:
        yield at
        at += timedelta(seconds=step_seconds)


def at_minute(rated: Rated | RatingFailure) -> Rated | RatingFailure:
    """``rated`` with its local time at the start of its minute, as the memo gives it."""
    if isinstance(rated, RatingFailure):
        return rated
    return dataclasses.replace(rated, local_time=rated.local_time.replace(second=0, microsecond=0))


def assert_same_as_rate(book: TariffBook, plan: str, times: Iterable[datetime]) -> int:
    """Every input at every moment rated by the memo and by ``rate``; returns the number compared."""
    memo = MemoizedRating(book)
    compared = 0
    for at in times:
        for request in inputs_at(at):
            assert at_minute(memo.rate(plan, request)) == at_minute(rate(book, plan, request)), (plan, request)
            compared += 1
    return compared


@pytest.mark.parametrize(
    ("start", "end"),
    [
        # 08:00 Berlin (winter) = 07:00 UTC: a grant's lookahead reaches the band's start.
        (datetime(2026, 3, 3, 6, 20, tzinfo=UTC), datetime(2026, 3, 3, 7, 5, tzinfo=UTC)),
        # 20:00 Berlin = 19:00 UTC: the end of the band.
        (datetime(2026, 3, 3, 18, 25, tzinfo=UTC), datetime(2026, 3, 3, 19, 3, tzinfo=UTC)),
        # Daylight saving begins 2026-03-29 01:00 UTC (02:00 -> 03:00 Berlin).
        (datetime(2026, 3, 29, 0, 20, tzinfo=UTC), datetime(2026, 3, 29, 1, 10, tzinfo=UTC)),
        # ... and ends 2026-10-25 01:00 UTC (03:00 -> 02:00 Berlin), on a Sunday before a Monday.
        (datetime(2026, 10, 25, 0, 20, tzinfo=UTC), datetime(2026, 10, 25, 1, 10, tzinfo=UTC)),
        # The midnight before a holiday (2026-12-25) and a Friday's 20:00 band end before it.
        (datetime(2026, 12, 24, 22, 20, tzinfo=UTC), datetime(2026, 12, 24, 23, 5, tzinfo=UTC)),
    ],
)
def test_the_memo_rates_as_rate_does_across_band_and_clock_changes(
    book: TariffBook, start: datetime, end: datetime
) -> None:
    assert assert_same_as_rate(book, "mobile_prepaid", moments(start, end, 7)) > 1_500


def test_the_memo_rates_as_rate_does_across_a_plan_version_start() -> None:
    # A version may start within a minute: the third one here, at 12:00:30 Berlin.
    third = "\n[[plans.p.versions]]\neffective_from = 2026-11-02T12:00:30+01:00\n"
    third += 'services = { voice = { price_per_minute = { rest = "2.50" } } }\n'
    versioned = parse_book(VERSIONED + third)
    for change in (JULY, OCTOBER, datetime(2026, 11, 2, 11, 0, 30, tzinfo=UTC)):
        window = moments(change - timedelta(minutes=35), change + timedelta(minutes=3), 11)
        assert assert_same_as_rate(versioned, "p", window) > 1_000


def test_the_memo_rates_as_rate_does_in_a_time_zone_offset_of_seconds(book: TariffBook) -> None:
    # Berlin kept local mean time (UTC+0:53:28) until 1893: its minutes are not UTC's, and the
    # peak band starts at 07:06:32 UTC, within a UTC minute.
    start = datetime(1890, 6, 2, 6, 50, tzinfo=UTC)
    assert assert_same_as_rate(book, "mobile_prepaid", moments(start, start + timedelta(minutes=25), 13)) > 500


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)),
        min_size=1,
        max_size=20,
    ),
    st.integers(min_value=0, max_value=7_200),
)
def test_the_memo_rates_as_rate_does_at_any_moment(book: TariffBook, times: list[datetime], lookahead: int) -> None:
    memo = MemoizedRating(book)
    for at in times:
        for near in (at, at + timedelta(seconds=1), at + timedelta(seconds=59)):
            request = RatingInput(PS, 10, None, None, near, lookahead)
            assert at_minute(memo.rate("mobile_prepaid", request)) == at_minute(rate(book, "mobile_prepaid", request))


def test_an_input_is_rated_once_a_minute(book: TariffBook) -> None:
    memo = MemoizedRating(book)
    start = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    for at in moments(start, start + timedelta(minutes=2), 5):
        memo.rate("mobile_prepaid", RatingInput(PS, 10, None, None, at, LOOKAHEAD_SECONDS))
        memo.rate("mobile_prepaid", RatingInput(PS, 20, None, None, at, LOOKAHEAD_SECONDS))
    assert (memo.minutes_rated, memo.remembered()) == (4, 2)  # two inputs, two minutes
    # One value for the minute: nothing is made per request.
    first = memo.rate("mobile_prepaid", RatingInput(PS, 10, None, None, start, LOOKAHEAD_SECONDS))
    assert memo.rate("mobile_prepaid", RatingInput(PS, 10, None, None, start + timedelta(seconds=42), 1800)) is first


def test_the_memo_forgets_all_at_its_capacity(book: TariffBook) -> None:
    memo = MemoizedRating(book, capacity=3)
    at = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    for number in range(10):
        request = RatingInput(IMS, None, None, f"+49301234{number}", at, 0)
        assert memo.rate("mobile_prepaid", request) == rate(book, "mobile_prepaid", request)  # at 09:00:00
    assert memo.remembered() <= 3
