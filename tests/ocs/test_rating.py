"""Rating: the default tariff plans, a small test plan, every load error, and totality.

Costs are worked out by hand in the comments and also checked against the money engine's own
arithmetic (``balance.tariff``) and an independent exact formula (``fractions.Fraction``).
Times are given in UTC and converted in the plan's zone (Europe/Berlin: UTC+1, UTC+2 in summer).
"""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime, timedelta, timezone
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from balance.tariff import cost, is_valid
from balance.types import Tariff, Unit
from ocs.rating.book import (
    KNOWN_CONTEXT_UNITS,
    FinalUnitPolicy,
    Numbering,
    RedirectAddressType,
    RedirectServer,
    Restriction,
    normalise_context_id,
)
from ocs.rating.rate import (
    Quote,
    Rated,
    RatingFailure,
    RatingInput,
    TariffBook,
    TariffError,
    band_at,
    explain,
    format_money,
    load_book,
    normalise_number,
    parse_book,
    rate,
)

DEFAULT_TARIFFS = Path(__file__).resolve().parents[2] / "config" / "tariffs.toml"
PS, IMS, SMS = "32251@3gpp.org", "32260@3gpp.org", "32274@3gpp.org"
TUESDAY = date(2026, 3, 3)  # an ordinary weekday in winter time (UTC+1)


@pytest.fixture(scope="module")
def book() -> TariffBook:
    return load_book(DEFAULT_TARIFFS)


def at_utc(day: date, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=UTC)


def voice(called: str | None, at: datetime | None = None) -> RatingInput:
    return RatingInput(IMS, None, None, called, at or at_utc(TUESDAY, 10))


def rated(result: Rated | RatingFailure) -> Rated:
    assert isinstance(result, Rated), result
    return result


def quoted(result: Quote | RatingFailure) -> Quote:
    assert isinstance(result, Quote), result
    return result


# A small plan for the rules the default file does not exercise, and the base of the load-error cases.
MINIMAL = """
[zone_sets.z]
default_zone = "rest"

[zone_sets.z.zones]
home = ["49"]
mobile = ["4915"]
rest = []

[plans.p]
currency = "EUR"
time_zone = "Europe/Berlin"
zone_set = "z"
country_code = "49"
national_prefix = "0"
default_band = "off_peak"

[[plans.p.bands]]
name = "peak"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "08:00"
end = "20:00"

[plans.p.contexts."32251@3gpp.org"]
default_service = "data"
rating_groups = { 20 = "video" }
service_identifiers = { 1001 = "video" }

[plans.p.contexts."32260@3gpp.org"]
default_service = "voice"

[plans.p.contexts."32274@3gpp.org"]
default_service = "sms"

[plans.p.services.data]
kind = "data"
price = "0.01"
block_octets = 1_000

[plans.p.services.video]
kind = "data"
price = "0.002"
block_octets = 1_000

[plans.p.services.voice]
kind = "voice"
increment = "60/1"
price_per_minute = { home = { peak = "0.12", off_peak = "0.06" }, mobile = "0.12", rest = "1.00" }

[plans.p.services.sms]
kind = "sms"
price_per_message = { home = "0.09", mobile = "0.09", rest = "0.29" }
"""


SMS_SECTION = "[plans.p.services.sms]\n"
SMS_PRICES = 'price_per_message = { home = "0.09", mobile = "0.09", rest = "0.29" }\n'


def plan_final_unit(lines: str) -> str:
    """The plan's ``final_unit`` table with ``lines``, before its sms service."""
    return f"[plans.p.final_unit]\n{lines}\n\n{SMS_SECTION}"


def edited(*replacements: tuple[str, str]) -> str:
    text = MINIMAL
    for old, new in replacements:
        assert old in text, old  # a case that edits nothing would test nothing
        text = text.replace(old, new, 1)
    return text


# --- the default file --------------------------------------------------------------------------


def test_default_file_has_the_four_customer_plans(book: TariffBook) -> None:
    assert set(book.plans) == {"mobile_prepaid", "mobile_postpaid", "fixed_prepaid", "fixed_postpaid"}
    for name in ("mobile_prepaid", "mobile_postpaid"):
        assert set(book.plans[name].contexts) == {PS, IMS, SMS}
    for name in ("fixed_prepaid", "fixed_postpaid"):
        assert set(book.plans[name].contexts) == {IMS}
    assert all(plan.currency == "EUR" for plan in book.plans.values())


def test_the_book_is_read_only(book: TariffBook) -> None:
    plan = book.plans["mobile_prepaid"]
    with pytest.raises(FrozenInstanceError):
        plan.currency = "USD"  # type: ignore[misc]
    with pytest.raises(TypeError):
        book.plans["other"] = plan  # type: ignore[index]
    with pytest.raises(TypeError):
        plan.services["voice"].tariffs["eu"]["peak"] = Tariff(0)  # type: ignore[index]


# --- numbers and zones -------------------------------------------------------------------------

GERMANY = Numbering(country_code="49", national_prefix="0", international_prefix="00")


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("+491512345678", "491512345678"),
        ("tel:+49-151-234.56(78)", "491512345678"),  # RFC 3966 visual separators
        ("TEL:+491512345678;phone-context=example.com", "491512345678"),
        ("sip:+491512345678@ims.example.net;user=phone", "491512345678"),
        ("sips:0049301234@ims.example.net", "49301234"),
        ("sip:%2B33123456@ims.example.net", "33123456"),  # percent-encoded "+"
        ("0049 30 1234", "49301234"),  # "00" international prefix, tried before the "0" trunk prefix
        ("030 1234", "49301234"),  # national prefix -> country code
        ("  +33 1 23 45  ", "3312345"),
        ("sip:alice@example.com", "alice"),
        ("12345", "12345"),  # no rule applies: left as it is
    ],
)
def test_normalise_number(raw: str, normalised: str) -> None:
    assert normalise_number(raw, GERMANY) == normalised


def test_national_prefix_rule_is_a_plan_setting() -> None:
    no_trunk_prefix = Numbering(country_code="", national_prefix="", international_prefix="011")
    assert normalise_number("0301234", no_trunk_prefix) == "0301234"
    assert normalise_number("011441234", no_trunk_prefix) == "441234"


@pytest.mark.parametrize(
    ("called", "zone", "prefix"),
    [
        ("+49301234567", "national_fixed", "49"),
        ("+491512345678", "national_mobile", "4915"),  # 4915 is longer than 49
        ("08001234567", "freephone", "49800"),  # national format, 49800 beats 49
        ("+4990012345", "premium", "49900"),
        ("0033123456789", "eu", "33"),
        ("+35312345678", "eu", "353"),
        ("+881612345678", "satellite", "881"),
        ("+12125550100", "world", ""),  # no prefix listed: default zone
        ("sip:alice@example.com", "world", ""),  # not a number
        ("+٤٩١٥١٢٣", "world", ""),  # Arabic-Indic digits are not telephone digits
    ],
)
def test_longest_prefix_picks_the_zone(book: TariffBook, called: str, zone: str, prefix: str) -> None:
    result = rated(rate(book, "mobile_prepaid", voice(called)))
    assert result.zone == zone
    assert (f"prefix {prefix} -> zone {zone}" if prefix else f"no prefix matched -> zone {zone}") in result.explanation


def test_no_called_party_rates_in_the_default_zone(book: TariffBook) -> None:
    for called in (None, ""):
        result = rated(rate(book, "mobile_prepaid", voice(called)))
        assert (result.zone, result.destination) == ("world", None)


# --- service selection -------------------------------------------------------------------------


def test_rating_groups_select_services(book: TariffBook) -> None:
    def service(rating_group: int | None, context: str = PS) -> str:
        return rated(
            rate(book, "mobile_prepaid", RatingInput(context, rating_group, None, None, at_utc(TUESDAY, 10)))
        ).service

    assert service(10) == "data"
    assert service(20) == "video"
    assert service(None) == "data"  # absent: the default service
    assert service(0) == "data"  # 0 and not listed: the default service
    assert service(None, "8.32251@3gpp.org") == "data"  # TS 32.299 7.1.12 release prefix
    assert service(None, "10.262.01.8.32251@3GPP.ORG") == "data"
    assert service(None, IMS) == "voice"
    assert service(None, SMS) == "sms"


def test_data_and_video_have_different_prices(book: TariffBook) -> None:
    data = rated(rate(book, "mobile_prepaid", RatingInput(PS, 10, None, None, at_utc(TUESDAY, 10))))
    video = rated(rate(book, "mobile_prepaid", RatingInput(PS, 20, None, None, at_utc(TUESDAY, 10))))
    assert (data.unit, data.zone) == (Unit.OCTETS, None)
    assert data.tariff == Tariff(price_micros=10_000, per_units=1_000_000, block_units=10_000, first_units=10_000)
    assert video.tariff == Tariff(price_micros=5_000, per_units=1_000_000, block_units=100_000, first_units=100_000)


@pytest.mark.parametrize(
    ("context", "rating_group", "service_identifier", "avp_name", "reason"),
    [
        ("32299@3gpp.org", None, None, "Service-Context-Id", "does not rate service context '32299@3gpp.org'"),
        ("", 10, None, "Service-Context-Id", "does not rate service context ''"),
        (PS, 7, None, "Rating-Group", "Rating-Group 7 is not rated in 32251@3gpp.org"),
        (PS, 7, 1001, "Rating-Group", "Rating-Group 7"),  # the identifier is not mapped in this plan
    ],
)
def test_unknown_context_or_rating_group_is_a_rating_failure(
    book: TariffBook, context: str, rating_group: int | None, service_identifier: int | None, avp_name: str, reason: str
) -> None:
    result = rate(
        book, "mobile_prepaid", RatingInput(context, rating_group, service_identifier, None, at_utc(TUESDAY, 10))
    )
    assert isinstance(result, RatingFailure)
    assert result.avp_name == avp_name
    assert reason in result.reason


def test_service_identifier_wins_over_rating_group() -> None:
    test_book = parse_book(MINIMAL)
    by_identifier = rated(rate(test_book, "p", RatingInput(PS, 10, 1001, None, at_utc(TUESDAY, 10))))
    assert by_identifier.service == "video"
    assert "Service-Identifier 1001" in by_identifier.explanation
    # Not mapped: the Rating-Group decides; here RG 10 is not listed, so it fails on Rating-Group.
    failure = rate(test_book, "p", RatingInput(PS, 10, 1002, None, at_utc(TUESDAY, 10)))
    assert isinstance(failure, RatingFailure)
    assert failure.avp_name == "Rating-Group"


def test_a_context_without_default_needs_its_identifiers() -> None:
    test_book = parse_book(edited(('default_service = "data"\n', "")))
    no_group = rate(test_book, "p", RatingInput(PS, None, None, None, at_utc(TUESDAY, 10)))
    assert isinstance(no_group, RatingFailure)
    assert no_group.avp_name == "Rating-Group"
    assert "needs a Rating-Group" in no_group.reason
    unknown_identifier = rate(test_book, "p", RatingInput(PS, None, 5, None, at_utc(TUESDAY, 10)))
    assert isinstance(unknown_identifier, RatingFailure)
    assert unknown_identifier.avp_name == "Service-Identifier"
    assert rated(rate(test_book, "p", RatingInput(PS, 20, None, None, at_utc(TUESDAY, 10)))).service == "video"


def test_unknown_plan_is_a_failure_without_an_avp(book: TariffBook) -> None:
    result = rate(book, "gold", voice("+49301234"))
    assert isinstance(result, RatingFailure)
    assert result.avp_name is None
    assert "'gold'" in result.reason


def test_context_ids_reduce_to_their_core() -> None:
    assert normalise_context_id(" 8.32251@3gpp.org ") == PS
    assert normalise_context_id("32260@3GPP.org") == IMS
    assert normalise_context_id("prepaid.v2@Operator.Example") == "prepaid.v2@operator.example"
    assert normalise_context_id("no-domain") == "no-domain"


# --- time bands --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "band"),
    [
        (at_utc(TUESDAY, 6, 59, 59), "off_peak"),  # 07:59:59 local
        (at_utc(TUESDAY, 7, 0, 0), "peak"),  # 08:00 exactly
        (at_utc(TUESDAY, 18, 59, 59), "peak"),  # 19:59:59
        (at_utc(TUESDAY, 19, 0, 0), "off_peak"),  # 20:00 exactly: the end is exclusive
        (at_utc(date(2026, 3, 6), 10), "peak"),  # Friday
        (at_utc(date(2026, 3, 7), 10), "off_peak"),  # Saturday
        (at_utc(date(2026, 3, 8), 10), "off_peak"),  # Sunday
        (at_utc(date(2026, 3, 1), 23, 0), "off_peak"),  # Sunday 23:00 UTC is Monday 00:00 local
        (at_utc(date(2026, 3, 2), 7, 0), "peak"),  # Monday 08:00 local
        (at_utc(date(2026, 12, 25), 10), "off_peak"),  # Christmas, a Friday: a holiday
        (at_utc(date(2026, 12, 24), 10), "peak"),  # the day before is an ordinary Thursday
        (datetime(2026, 3, 3, 7, 0), "peak"),  # naive = UTC
        (datetime(2026, 3, 3, 2, 0, tzinfo=timezone(timedelta(hours=-5))), "peak"),  # 07:00 UTC
    ],
)
def test_time_bands_at_their_boundaries(book: TariffBook, moment: datetime, band: str) -> None:
    assert rated(rate(book, "mobile_prepaid", voice("+49301234", moment))).band == band


def test_national_prices_follow_the_band(book: TariffBook) -> None:
    peak = rated(rate(book, "mobile_prepaid", voice("030 1234", at_utc(TUESDAY, 7))))
    off_peak = rated(rate(book, "mobile_prepaid", voice("030 1234", at_utc(TUESDAY, 6, 59))))
    assert (peak.band, peak.tariff.price_micros) == ("peak", 90_000)
    assert (off_peak.band, off_peak.tariff.price_micros) == ("off_peak", 50_000)
    assert "Tue 2026-03-03 08:00 Europe/Berlin -> band peak" in peak.explanation


def test_bands_follow_daylight_saving_in_the_plan_zone() -> None:
    every_day = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
    test_book = parse_book(
        edited(
            ('days = ["mon", "tue", "wed", "thu", "fri"]', f"days = {every_day}"),
            (
                'end = "20:00"\n',
                f'end = "20:00"\n\n[[plans.p.bands]]\nname = "night"\ndays = {every_day}\n'
                'start = "02:00"\nend = "03:00"\n',
            ),
            ('off_peak = "0.06" }', 'off_peak = "0.06", night = "0.03" }'),
        )
    )
    plan = test_book.plans["p"]
    spring_forward = date(2026, 3, 29)  # Berlin: 02:00 CET -> 03:00 CEST
    assert band_at(plan, at_utc(spring_forward - timedelta(days=1), 7))[0] == "peak"  # 08:00 CET
    assert band_at(plan, at_utc(spring_forward - timedelta(days=1), 6))[0] == "off_peak"  # 07:00 CET
    assert band_at(plan, at_utc(spring_forward, 6))[0] == "peak"  # 08:00 CEST
    assert band_at(plan, at_utc(spring_forward, 5, 59))[0] == "off_peak"  # 07:59 CEST
    assert band_at(plan, at_utc(spring_forward, 0, 59))[0] == "off_peak"  # 01:59 CET
    assert band_at(plan, at_utc(spring_forward, 1, 0))[0] == "off_peak"  # 03:00 CEST: 02:xx never happens
    fall_back = date(2026, 10, 25)  # Berlin: 03:00 CEST -> 02:00 CET, 02:xx happens twice
    assert band_at(plan, at_utc(fall_back, 0, 30))[0] == "night"  # 02:30 CEST
    assert band_at(plan, at_utc(fall_back, 1, 30))[0] == "night"  # 02:30 CET
    assert band_at(plan, at_utc(fall_back, 2, 0))[0] == "off_peak"  # 03:00 CET
    assert band_at(plan, at_utc(fall_back, 7))[0] == "peak"  # 08:00 CET


# --- increments and costs ----------------------------------------------------------------------


def exact_cost(units: int, tariff: Tariff) -> int:
    """An independent statement of the RULES.md cost: ceil(charged * price / per) with exact fractions."""
    if units == 0:
        return 0
    charged_units = max(tariff.first_units, math.ceil(Fraction(units, tariff.block_units)) * tariff.block_units)
    return math.ceil(Fraction(charged_units * tariff.price_micros, tariff.per_units))


@pytest.mark.parametrize(
    ("plan", "called", "tariff", "costs"),
    [
        # fixed_prepaid 60/60 at 0.19 per minute to a mobile: every started minute costs 0.19.
        (
            "fixed_prepaid",
            "01511234567",
            Tariff(price_micros=190_000, per_units=60, block_units=60, first_units=60),
            {0: (0, 0), 1: (60, 190_000), 60: (60, 190_000), 61: (120, 380_000), 3600: (3600, 11_400_000)},
        ),
        # mobile_prepaid 60/1 at 0.09 per minute (peak): a first minute, then 0.0015 per second.
        (
            "mobile_prepaid",
            "01511234567",
            Tariff(price_micros=90_000, per_units=60, block_units=1, first_units=60),
            {0: (0, 0), 1: (60, 90_000), 60: (60, 90_000), 61: (61, 91_500), 90: (90, 135_000)},
        ),
        # mobile_postpaid 1/1 at 0.05 per minute: 833.33.. micros a second, rounded up per call.
        (
            "mobile_postpaid",
            "01511234567",
            Tariff(price_micros=50_000, per_units=60, block_units=1, first_units=1),
            {1: (1, 834), 59: (59, 49_167), 60: (60, 50_000), 61: (61, 50_834), 7: (7, 5_834)},
        ),
        # fixed_postpaid 60/1, but 60/60 for premium numbers (a zone increment): 2.99 per started minute.
        (
            "fixed_postpaid",
            "+4990012345",
            Tariff(price_micros=2_990_000, per_units=60, block_units=60, first_units=60),
            {30: (60, 2_990_000), 61: (120, 5_980_000)},
        ),
    ],
)
def test_increments_cost_what_the_engine_charges(
    book: TariffBook, plan: str, called: str, tariff: Tariff, costs: dict[int, tuple[int, int]]
) -> None:
    request = voice(called, at_utc(TUESDAY, 10))
    assert rated(rate(book, plan, request)).tariff == tariff
    for units, (charged_units, micros) in costs.items():
        quote = quoted(explain(book, plan, request, units))
        assert (quote.charged_units, quote.cost_micros) == (charged_units, micros), units
        assert micros == cost(units, tariff) == exact_cost(units, tariff)


def test_quote_text_shows_the_arithmetic(book: TariffBook) -> None:
    quote = quoted(explain(book, "mobile_prepaid", voice("01511234567"), 61))
    assert quote.text.endswith("61 s charged as 61 s: 0.0915 EUR (91500 micros)")
    assert "0.09 EUR per minute, increments 60/1" in quote.text
    with pytest.raises(ValueError, match="units"):
        explain(book, "mobile_prepaid", voice("01511234567"), -1)


def test_explain_passes_failures_through(book: TariffBook) -> None:
    failure = explain(book, "fixed_prepaid", RatingInput(PS, 10, None, None, at_utc(TUESDAY, 10)), 1)
    assert isinstance(failure, RatingFailure)
    assert failure.avp_name == "Service-Context-Id"


@pytest.mark.parametrize(
    ("plan", "rating_group", "costs"),
    [
        # 0.01 per MB, 10 kB blocks: a started block of 10,000 octets costs 100 micros.
        (
            "mobile_prepaid",
            10,
            {
                1: (10_000, 100),
                10_000: (10_000, 100),
                10_001: (20_000, 200),
                1_000_000: (1_000_000, 10_000),
                1_000_001: (1_010_000, 10_100),
            },
        ),
        # 0.005 per MB, 1 kB blocks: 5 micros a kB.
        ("mobile_postpaid", 10, {1: (1_000, 5), 1_500: (2_000, 10), 10**9: (10**9, 5_000_000)}),
        # video 0.005 per MB in 100 kB blocks: 500 micros a block.
        ("mobile_prepaid", 20, {1: (100_000, 500), 250_000: (300_000, 1_500)}),
    ],
)
def test_data_is_rounded_to_blocks(
    book: TariffBook, plan: str, rating_group: int, costs: dict[int, tuple[int, int]]
) -> None:
    request = RatingInput(PS, rating_group, None, None, at_utc(TUESDAY, 10))
    for units, (charged_units, micros) in costs.items():
        quote = quoted(explain(book, plan, request, units))
        assert (quote.charged_units, quote.cost_micros) == (charged_units, micros), units
        assert micros == exact_cost(units, quote.rated.tariff)


def test_sms_is_per_message_and_zoned(book: TariffBook) -> None:
    def sms(called: str, messages: int = 1) -> Quote:
        return quoted(
            explain(book, "mobile_prepaid", RatingInput(SMS, None, None, called, at_utc(TUESDAY, 10)), messages)
        )

    eu = sms("+33612345678", 3)
    assert (eu.rated.service, eu.rated.unit, eu.rated.zone) == ("sms", Unit.EVENTS, "eu")
    assert eu.rated.tariff == Tariff(price_micros=60_000, per_units=1, block_units=1, first_units=1)
    assert eu.cost_micros == 180_000
    assert sms("01761234567").cost_micros == 90_000
    assert sms("+4990012345").cost_micros == 990_000
    assert sms("+12125550100").cost_micros == 290_000


def test_fixed_line_plan_rates_calls_only(book: TariffBook) -> None:
    local_peak = rated(rate(book, "fixed_prepaid", voice("030 12345678", at_utc(TUESDAY, 16, 59))))
    local_evening = rated(rate(book, "fixed_prepaid", voice("030 12345678", at_utc(TUESDAY, 17))))
    # The fixed plans' peak ends at 18:00 local, two hours before the mobile plans'.
    assert (local_peak.band, local_peak.tariff.price_micros) == ("peak", 40_000)
    assert (local_evening.band, local_evening.tariff.price_micros) == ("off_peak", 20_000)
    assert local_peak.tariff.first_units == local_peak.tariff.block_units == 60
    assert local_peak.service == "voice"
    sms = rate(book, "fixed_postpaid", RatingInput(SMS, None, None, "+4930123", at_utc(TUESDAY, 10)))
    assert isinstance(sms, RatingFailure)
    assert sms.avp_name == "Service-Context-Id"


# --- prices ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "micros"),
    [("0", 0), ("0.1", 100_000), ("0.12", 120_000), ("0.000001", 1), ("12.345678", 12_345_678), ("1000", 10**9)],
)
def test_prices_convert_exactly(price: str, micros: int) -> None:
    test_book = parse_book(edited(('price = "0.01"', f'price = "{price}"')))
    assert test_book.plans["p"].services["data"].tariffs[""]["peak"].price_micros == micros


@given(micros=st.integers(min_value=0, max_value=10**15))
def test_any_micro_amount_round_trips_through_the_file(micros: int) -> None:
    test_book = parse_book(edited(('price = "0.01"', f'price = "{format_money(micros)}"')))
    assert test_book.plans["p"].services["data"].tariffs[""]["off_peak"].price_micros == micros


def test_format_money() -> None:
    assert [format_money(value) for value in (0, 1, 120_000, 1_500_000, 12_345_678, -5)] == [
        "0.00",
        "0.000001",
        "0.12",
        "1.50",
        "12.345678",
        "-0.000005",
    ]


# --- load errors -------------------------------------------------------------------------------

VOICE_PRICES = 'price_per_minute = { home = { peak = "0.12", off_peak = "0.06" }, mobile = "0.12", rest = "1.00" }'
BAND_HEADER = '[[plans.p.bands]]\nname = "peak"\n'


@pytest.mark.parametrize(
    ("replacements", "section", "field", "problem"),
    [
        # unknown keys, at every level
        ((("[zone_sets.z]\n", "[zone_sets.z]\ncolour = 1\n"),), "zone set z", "colour", "unknown key"),
        ((("[plans.p]\n", "[plans.p]\nprise = 1\n"),), "plan p", "prise", "unknown key"),
        (
            (("[plans.p.services.voice]\n", "[plans.p.services.voice]\nprice = 1\n"),),
            "plan p",
            "services.voice.price",
            "unknown key",
        ),
        (
            (("[plans.p.services.data]\n", "[plans.p.services.data]\nincrement = 1\n"),),
            "plan p",
            "services.data.increment",
            "unknown key",
        ),
        ((('start = "08:00"', 'start = "08:00"\nweekend = true'),), "plan p", "bands[0].weekend", "unknown key"),
        (
            (('rating_groups = { 20 = "video" }', 'rating_group = { 20 = "video" }'),),
            "plan p",
            "contexts.32251@3gpp.org.rating_group",
            "unknown key",
        ),
        ((("[zone_sets.z]\n", "[extras]\n[zone_sets.z]\n"),), "(top level)", "extras", "unknown key"),
        # overlapping bands
        (
            (
                (
                    'end = "20:00"\n',
                    'end = "20:00"\n\n'
                    + BAND_HEADER.replace("peak", "lunch")
                    + 'days = ["fri", "sat"]\nstart = "12:00"\nend = "13:00"\n',
                ),
            ),
            "plan p",
            "bands[1]",
            "overlaps bands[0] (peak) on fri",
        ),
        (
            (
                (
                    'end = "20:00"\n',
                    'end = "20:00"\n\n'
                    + BAND_HEADER.replace("peak", "evening")
                    + 'days = ["mon"]\nstart = "19:59"\nend = "22:00"\n',
                ),
            ),
            "plan p",
            "bands[1]",
            "overlaps",
        ),
        ((('start = "08:00"', 'start = "20:00"'),), "plan p", "bands[0].end", "must be after start"),
        ((('start = "08:00"', 'start = "24:00"'),), "plan p", "bands[0].start", "not a time of day"),
        ((('start = "08:00"', 'start = "8:00"'),), "plan p", "bands[0].start", "not a time of day"),
        ((('end = "20:00"', 'end = "20:60"'),), "plan p", "bands[0].end", "not a time of day"),
        ((('"mon", "tue"', '"monday", "tue"'),), "plan p", "bands[0].days", "'monday' is not one of"),
        ((('"mon", "tue"', '"mon", "mon"'),), "plan p", "bands[0].days", "listed twice"),
        ((('days = ["mon", "tue", "wed", "thu", "fri"]', "days = []"),), "plan p", "bands[0].days", "non-empty"),
        # bad increments
        ((('increment = "60/1"', 'increment = "60/0"'),), "plan p", "services.voice.increment", "at least 1"),
        ((('increment = "60/1"', 'increment = "0/1"'),), "plan p", "services.voice.increment", "at least 1"),
        ((('increment = "60/1"', 'increment = "30/60"'),), "plan p", "services.voice.increment", "multiple"),
        ((('increment = "60/1"', 'increment = "60"'),), "plan p", "services.voice.increment", "first/next"),
        (
            (('increment = "60/1"', 'increment = "60/1"\nzone_increments = { home = "1/1/1" }'),),
            "plan p",
            "services.voice.zone_increments.home",
            "not an increment",
        ),
        (
            (('increment = "60/1"', 'increment = "60/1"\nzone_increments = { moon = "1/1" }'),),
            "plan p",
            "services.voice.zone_increments.moon",
            "not a zone",
        ),
        # prices
        (
            (('mobile = "0.12"', 'mobile = "0.1234567"'),),
            "plan p",
            "services.voice.price_per_minute.mobile",
            "7 decimals; at most 6",
        ),
        ((('mobile = "0.12"', "mobile = 0.12"),), "plan p", "services.voice.price_per_minute.mobile", "as a string"),
        ((('mobile = "0.12"', "mobile = 1"),), "plan p", "services.voice.price_per_minute.mobile", "as a string"),
        (
            (('mobile = "0.12"', 'mobile = "0,12"'),),
            "plan p",
            "services.voice.price_per_minute.mobile",
            "not a decimal price",
        ),
        (
            (('mobile = "0.12"', 'mobile = "-0.12"'),),
            "plan p",
            "services.voice.price_per_minute.mobile",
            "not a decimal price",
        ),
        (
            (('mobile = "0.12"', 'mobile = "1e3"'),),
            "plan p",
            "services.voice.price_per_minute.mobile",
            "not a decimal price",
        ),
        (
            (('mobile = "0.12"', 'mobile = "1000000001"'),),
            "plan p",
            "services.voice.price_per_minute.mobile",
            "engine's limit",
        ),
        ((('mobile = "0.12", ', ""),), "plan p", "services.voice.price_per_minute.mobile", "missing"),
        (
            (('rest = "1.00" }', 'rest = "1.00", mars = "9" }'),),
            "plan p",
            "services.voice.price_per_minute.mars",
            "not a zone of zone set z",
        ),
        (
            (('off_peak = "0.06" }', 'night = "0.06" }'),),
            "plan p",
            "services.voice.price_per_minute.home.night",
            "no such band",
        ),
        (
            (('{ peak = "0.12", off_peak = "0.06" }', '{ peak = "0.12" }'),),
            "plan p",
            "services.voice.price_per_minute.home.off_peak",
            "every band",
        ),
        # zones
        ((('default_zone = "rest"\n', ""),), "zone set z", "default_zone", "missing"),
        (
            (('default_zone = "rest"', 'default_zone = "elsewhere"'),),
            "zone set z",
            "default_zone",
            "not one of the zones",
        ),
        (
            (('mobile = ["4915"]', 'mobile = ["4915", "49"]'),),
            "zone set z",
            "zones.mobile",
            "prefix 49 is already in zone home",
        ),
        ((('mobile = ["4915"]', 'mobile = ["+4915"]'),), "zone set z", "zones.mobile", "digits"),
        ((('mobile = ["4915"]', 'mobile = ["1234567890123456"]'),), "zone set z", "zones.mobile", "15 digits"),
        ((('mobile = ["4915"]', 'mobile = "4915"'),), "zone set z", "zones.mobile", "list of prefixes"),
        ((('zone_set = "z"', 'zone_set = "y"'),), "plan p", "zone_set", "no zone set named 'y'"),
        ((('zone_set = "z"\n', ""),), "plan p", "services.voice.price_per_minute", "needs the plan's zone_set"),
        # plan settings
        (
            (('time_zone = "Europe/Berlin"', 'time_zone = "Europe/Atlantis"'),),
            "plan p",
            "time_zone",
            "not an IANA time zone",
        ),
        (
            (('time_zone = "Europe/Berlin"', 'time_zone = "../etc/passwd"'),),
            "plan p",
            "time_zone",
            "not an IANA time zone",
        ),
        ((('currency = "EUR"', 'currency = "euro"'),), "plan p", "currency", "ISO 4217"),
        ((('currency = "EUR"', 'currency = "XTS"'),), "plan p", "currency", "XTS has no ISO 4217 number here"),
        ((('currency = "EUR"\n', ""),), "plan p", "currency", "missing"),
        ((('country_code = "49"\n', ""),), "plan p", "country_code", "missing"),
        ((('national_prefix = "0"', 'national_prefix = "O"'),), "plan p", "national_prefix", "digits"),
        (
            (('national_prefix = "0"', 'national_prefix = "0"\ninternational_prefix = ""'),),
            "plan p",
            "international_prefix",
            "empty",
        ),
        (
            (('national_prefix = "0"', 'national_prefix = "0"\nholidays = ["2026-12-25"]'),),
            "plan p",
            "holidays",
            "not a date",
        ),
        (
            (('national_prefix = "0"', 'national_prefix = "0"\nholidays = [2026-12-25T00:00:00]'),),
            "plan p",
            "holidays",
            "not a date",
        ),
        # services and contexts
        ((('kind = "sms"', 'kind = "mms"'),), "plan p", "services.sms.kind", "must be one of"),
        (
            (("block_octets = 1_000\n", "block_octets = 1_000\nfirst_octets = 1_500\n"),),
            "plan p",
            "services.data.first_octets",
            "not a multiple",
        ),
        ((("block_octets = 1_000\n", "block_octets = 0\n"),), "plan p", "services.data.block_octets", "below 1"),
        (
            (("block_octets = 1_000\n", 'block_octets = "1000"\n'),),
            "plan p",
            "services.data.block_octets",
            "must be an integer",
        ),
        (
            (('default_service = "voice"', 'default_service = "telephony"'),),
            "plan p",
            "contexts.32260@3gpp.org.default_service",
            "no service named 'telephony'",
        ),
        (
            (('default_service = "voice"', 'default_service = "data"'),),
            "plan p",
            "contexts.32260@3gpp.org",
            "counts octets, but 32260@3gpp.org counts seconds",
        ),
        (
            (('{ 20 = "video" }', '{ twenty = "video" }'),),
            "plan p",
            "contexts.32251@3gpp.org.rating_groups.twenty",
            "Unsigned32",
        ),
        (
            (('{ 20 = "video" }', '{ 4294967296 = "video" }'),),
            "plan p",
            "contexts.32251@3gpp.org.rating_groups.4294967296",
            "Unsigned32",
        ),
        (
            (('{ 20 = "video" }', '{ 20 = "video", 020 = "data" }'),),
            "plan p",
            "contexts.32251@3gpp.org.rating_groups.020",
            "20 is listed twice",
        ),
        (
            (('[plans.p.contexts."32274@3gpp.org"]', '[plans.p.contexts."8.32260@3gpp.org"]'),),
            "plan p",
            "contexts.8.32260@3gpp.org",
            "same service context",
        ),
        ((('default_service = "sms"', ""),), "plan p", "contexts.32274@3gpp.org", "selects no service"),
        # final units (RFC 4006 sections 8.34-8.39)
        (((SMS_SECTION, plan_final_unit('action = "BLOCK"')),), "plan p", "final_unit.action", "must be one of"),
        (((SMS_SECTION, plan_final_unit("colour = 1")),), "plan p", "final_unit.colour", "unknown key"),
        (
            ((SMS_SECTION, plan_final_unit('redirect_address = "top-up portal"')),),
            "plan p",
            "final_unit.redirect_address",
            "not an address of type URL",
        ),
        (
            (
                (
                    SMS_SECTION,
                    plan_final_unit('redirect_address = "192.0.2.300"\nredirect_address_type = "IPv4 Address"'),
                ),
            ),
            "plan p",
            "final_unit.redirect_address",
            "not an address of type IPv4 Address",
        ),
        (
            (
                (
                    SMS_SECTION,
                    plan_final_unit('redirect_address = "2001:DB8::1"\nredirect_address_type = "IPv6 Address"'),
                ),
            ),
            "plan p",
            "final_unit.redirect_address",
            "not an address of type IPv6 Address",  # RFC 5952 text is lower case
        ),
        (
            (
                (
                    SMS_SECTION,
                    plan_final_unit('redirect_address = "top-up@example.net"\nredirect_address_type = "SIP URI"'),
                ),
            ),
            "plan p",
            "final_unit.redirect_address",
            "not an address of type SIP URI",
        ),
        (
            ((SMS_SECTION, plan_final_unit('redirect_address = "192.0.2.1"\nredirect_address_type = "IPv5"')),),
            "plan p",
            "final_unit.redirect_address_type",
            "must be one of",
        ),
        (
            ((SMS_SECTION, plan_final_unit('redirect_address_type = "URL"')),),
            "plan p",
            "final_unit.redirect_address",
            "missing",
        ),
        (
            ((SMS_SECTION, plan_final_unit('restriction_filters = ["allow everything"]')),),
            "plan p",
            "final_unit.restriction_filters",
            "not an IPFilterRule",
        ),
        (
            ((SMS_SECTION, plan_final_unit('restriction_filters = ["permit sideways ip from any to any"]')),),
            "plan p",
            "final_unit.restriction_filters",
            "not an IPFilterRule",
        ),
        (
            ((SMS_SECTION, plan_final_unit('filter_ids = "walled-garden"')),),
            "plan p",
            "final_unit.filter_ids",
            "must be a list",
        ),
        (((SMS_SECTION, plan_final_unit('filter_ids = [""]')),), "plan p", "final_unit.filter_ids", "empty"),
        (
            ((SMS_SECTION, plan_final_unit('action = "RESTRICT_ACCESS"\nfilter_ids = []')),),
            "plan p",
            "final_unit",
            "RESTRICT_ACCESS needs restriction_filters or filter_ids",
        ),
        (
            ((SMS_PRICES, SMS_PRICES + '\n[plans.p.services.sms.final_unit]\nsuspended_action = "STOP"\n'),),
            "plan p",
            "services.sms.final_unit.suspended_action",
            "must be one of",
        ),
        (
            (
                (SMS_SECTION, plan_final_unit('action = "RESTRICT_ACCESS"\nfilter_ids = ["garden"]')),
                (SMS_PRICES, SMS_PRICES + "\n[plans.p.services.sms.final_unit]\nfilter_ids = []\n"),
            ),
            "plan p",
            "services.sms.final_unit",
            "RESTRICT_ACCESS needs restriction_filters or filter_ids",
        ),
    ],
)
def test_load_errors_name_file_section_and_field(
    replacements: tuple[tuple[str, str], ...], section: str, field: str, problem: str
) -> None:
    with pytest.raises(TariffError) as caught:
        parse_book(edited(*replacements), "tariffs-under-test.toml")
    error = caught.value
    assert (error.file, error.section, error.field) == ("tariffs-under-test.toml", section, field), str(error)
    assert problem in error.problem, str(error)
    assert str(error).startswith(f"tariffs-under-test.toml: {section}: {field}: ")


def test_whole_file_errors(tmp_path: Path) -> None:
    cases = {
        "syntax": ("[plans.p\n", "(syntax)", "Expected"),
        "no plans": ("[zone_sets]\n", "plans", "missing"),
        "empty plans": ("[plans]\n", "plans", "no plan defined"),
    }
    for name, (text, field, problem) in cases.items():
        with pytest.raises(TariffError) as caught:
            parse_book(text, "t.toml")
        assert caught.value.field == field, name
        assert problem in caught.value.problem, name
    only_plan = '[plans.p]\ncurrency = "EUR"\ntime_zone = "UTC"\ndefault_band = "all"\ncontexts = {}\nservices = {}\n'
    with pytest.raises(TariffError, match="plan p: contexts: no service context"):
        parse_book(only_plan, "t.toml")
    missing = tmp_path / "absent.toml"
    with pytest.raises(TariffError, match="cannot be read") as caught:
        load_book(missing)
    assert caught.value.file == str(missing)


def test_a_file_on_disk_loads_like_a_string(tmp_path: Path) -> None:
    path = tmp_path / "tariffs.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    loaded = load_book(path)
    assert loaded.source == str(path)
    assert loaded.plans["p"] == parse_book(MINIMAL, str(path)).plans["p"]


# --- totality ----------------------------------------------------------------------------------

_DEFAULT_BOOK = load_book(DEFAULT_TARIFFS)
_CONTEXTS = st.one_of(
    st.sampled_from([PS, IMS, SMS, "8.32251@3gpp.org", "1.2.3.32260@3GPP.org", "32299@3gpp.org", "@", ".@3gpp.org"]),
    st.text(max_size=40),
)
_IDENTIFIERS = st.one_of(st.none(), st.sampled_from([0, 10, 20, 1001]), st.integers(-(2**40), 2**40))
_CALLED = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.from_regex(r"\A(tel:|sip:|sips:|TEL:)?(\+|00|0)?[0-9 ().-]{0,18}(@[a-z.]{0,10})?(;[a-z=]{0,8})?\Z"),
)
_MOMENTS = st.datetimes(timezones=st.one_of(st.none(), st.timezones()))


@pytest.mark.parametrize("plan_name", sorted(_DEFAULT_BOOK.plans))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    context=_CONTEXTS,
    rating_group=_IDENTIFIERS,
    service_identifier=_IDENTIFIERS,
    called=_CALLED,
    moment=_MOMENTS,
    units=st.integers(0, 10**12),
)
def test_rating_is_total(
    plan_name: str,
    context: str,
    rating_group: int | None,
    service_identifier: int | None,
    called: str | None,
    moment: datetime,
    units: int,
) -> None:
    plan = _DEFAULT_BOOK.plans[plan_name]
    request = RatingInput(context, rating_group, service_identifier, called, moment)
    result = rate(_DEFAULT_BOOK, plan_name, request)
    if isinstance(result, RatingFailure):
        assert result.avp_name in {"Service-Context-Id", "Rating-Group", "Service-Identifier", "Event-Timestamp"}
        assert result.reason
        return
    assert isinstance(result, Rated)
    service = plan.services[result.service]
    assert result.unit is service.unit
    expected_unit = KNOWN_CONTEXT_UNITS.get(normalise_context_id(context))
    assert expected_unit is None or result.unit is expected_unit
    assert result.band in plan.band_names
    assert (result.zone is None) is (not service.zoned)
    assert is_valid(result.tariff)
    assert result.tariff.first_units % result.tariff.block_units == 0
    quote = quoted(explain(_DEFAULT_BOOK, plan_name, request, units))
    assert quote.cost_micros == exact_cost(units, result.tariff)
    assert result.explanation in quote.text


def test_final_unit_tables_load_per_plan_and_service() -> None:
    loaded = parse_book(
        edited(
            (
                SMS_SECTION,
                plan_final_unit(
                    'action = "RESTRICT_ACCESS"\n'
                    'restriction_filters = ["permit out ip from any to 192.0.2.10 443"]\n'
                    'filter_ids = ["garden"]\n'
                    'suspended_action = "REDIRECT"\n'
                    'redirect_address = "2001:db8::1"\n'
                    'redirect_address_type = "IPv6 Address"'
                ),
            ),
            (
                SMS_PRICES,
                SMS_PRICES + '\n[plans.p.services.sms.final_unit]\nredirect_address = "sip:pay@example.net"\n'
                'redirect_address_type = "SIP URI"\n',
            ),
        )
    )
    plan = loaded.plans["p"]
    assert plan.final_unit == FinalUnitPolicy(
        action="RESTRICT_ACCESS",
        suspended_action="REDIRECT",
        redirect=RedirectServer(RedirectAddressType.IPV6_ADDRESS, "2001:db8::1"),
        restriction=Restriction(("permit out ip from any to 192.0.2.10 443",), ("garden",)),
    )
    sms = plan.services["sms"].final_unit.over(plan.final_unit)
    assert sms.redirect == RedirectServer(RedirectAddressType.SIP_URI, "sip:pay@example.net")
    assert (sms.action, sms.restriction) == (plan.final_unit.action, plan.final_unit.restriction)
    assert plan.services["voice"].final_unit.over(plan.final_unit) == plan.final_unit


# -- Tariff-Time-Change: the first change of tariff within a grant's validity ----------------------


def ahead(called: str | None, at: datetime, lookahead_seconds: int, context: str = IMS) -> RatingInput:
    return RatingInput(context, None, None, called, at, lookahead_seconds)


@pytest.mark.parametrize(
    ("plan", "moment", "lookahead", "change_at", "price"),
    [
        # Peak ends at 20:00 local (19:00 UTC in winter): the price after it is off-peak's.
        ("mobile_prepaid", at_utc(TUESDAY, 18, 59), 900, at_utc(TUESDAY, 19), 50_000),
        ("mobile_prepaid", at_utc(TUESDAY, 18, 45), 900, at_utc(TUESDAY, 19), 50_000),  # exactly at the end
        ("mobile_prepaid", at_utc(TUESDAY, 18, 45), 899, None, None),  # one second short
        ("mobile_prepaid", at_utc(TUESDAY, 10), 900, None, None),  # mid-peak
        ("mobile_prepaid", at_utc(TUESDAY, 6, 55), 900, at_utc(TUESDAY, 7), 90_000),  # into peak at 08:00
        ("fixed_prepaid", at_utc(TUESDAY, 16, 59), 120, at_utc(TUESDAY, 17), 20_000),  # peak ends at 18:00
        # Christmas is rated like a Sunday: 08:00 starts no peak there, and the evening before has none.
        ("mobile_prepaid", at_utc(date(2026, 12, 25), 6, 55), 900, None, None),
        ("mobile_prepaid", at_utc(date(2026, 12, 24), 22, 55), 900, None, None),
        # Sunday night into Monday: the band changes at local midnight only for its windows (none).
        ("mobile_prepaid", at_utc(date(2026, 3, 1), 22, 55), 900, None, None),
        # A weekday boundary days ahead is found across midnights.
        ("mobile_prepaid", at_utc(date(2026, 3, 7), 10), 2 * 86_400, at_utc(date(2026, 3, 9), 7), 90_000),
    ],
)
def test_the_first_change_of_tariff_within_the_lookahead(
    book: TariffBook, plan: str, moment: datetime, lookahead: int, change_at: datetime | None, price: int | None
) -> None:
    result = rated(rate(book, plan, ahead("+49301234", moment, lookahead)))
    if change_at is None:
        assert result.change is None
    else:
        assert result.change is not None
        assert (result.change.at, result.change.tariff.price_micros) == (change_at, price)


def test_a_band_change_that_keeps_the_price_is_no_tariff_change(book: TariffBook) -> None:
    # mobile_prepaid prices data alike in every band; EU calls cost 0.19 at any time.
    data = rated(rate(book, "mobile_prepaid", ahead(None, at_utc(TUESDAY, 18, 59), 900, context=PS)))
    eu = rated(rate(book, "mobile_prepaid", ahead("+33123456", at_utc(TUESDAY, 18, 59), 900)))
    assert data.change is None and eu.change is None
    assert (
        rated(rate(book, "mobile_prepaid", voice("+49301234", at_utc(TUESDAY, 18, 59)))).change is None
    )  # no lookahead
