"""The product catalog: loading (every error names file, section and field), versions by date,
and the money rules (bill cycles, proration, discounts, tax) as properties over exact integers.

Oracles are independent of the code under test: ``fractions.Fraction`` for the exact value and
Python's ``round`` on a Fraction, which rounds half to even, for the rounding.
"""

from __future__ import annotations

from datetime import date, timedelta
from fractions import Fraction
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balance.types import Unit
from ocs.billing.catalog import (
    Catalog,
    Discount,
    DiscountKind,
    DiscountTarget,
    ProductKind,
    apply_discounts,
    product_charge,
    rollover_units,
    tax_micros,
    usage_charge,
)
from ocs.billing.catalog_load import CatalogError, load_catalog, parse_catalog
from ocs.billing.cycles import (
    Period,
    check_cycle_day,
    cycle_containing,
    divide_half_even,
    previous_cycle,
    prorate,
)
from ocs.rating.rate import TariffBook, load_book

ROOT = Path(__file__).resolve().parents[2]
BOOK = load_book(ROOT / "config" / "tariffs.toml")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(ROOT / "config" / "catalog.toml", BOOK)


MINIMAL = """
currency = "EUR"

[taxes]
usage_category = "telecom"

[taxes.categories.telecom]
rate_percent = "19"

[products.rent]
kind = "rental"
tax_category = "telecom"
price = "10.00"

[products.sim]
kind = "one_off"
tax_category = "telecom"
price = "5"

[products.minutes]
kind = "bundle"
tax_category = "telecom"
unit = "seconds"
units = 600
services = ["voice"]

[offers.mobile_postpaid]
rentals = ["rent"]
one_offs = ["sim"]
bundles = ["minutes"]

[[discounts]]
code = "d1"
kind = "percentage"
target = "rentals"
percent = "10"
"""


def edited(*replacements: tuple[str, str]) -> str:
    text = MINIMAL
    for old, new in replacements:
        assert old in text, old  # a case that edits nothing would test nothing
        text = text.replace(old, new, 1)
    return text


# --- loading -----------------------------------------------------------------------------------


def test_the_default_catalog_loads_against_the_default_tariffs(catalog: Catalog) -> None:
    assert set(catalog.offers) <= set(BOOK.plans)
    assert catalog.usage_tax_category == "telecom"
    data = catalog.product_at("data_5gb", date(2026, 1, 1))
    assert data is not None and data.kind is ProductKind.BUNDLE and data.unit is Unit.OCTETS
    assert data.rollover and data.rollover_cap == 5_000_000_000 and data.services == ("data", "video")
    offer = catalog.offer_at("mobile_postpaid", date(2026, 1, 1))
    assert offer is not None and offer.rentals == ("mobile_m",) and "activation" in offer.one_offs


def test_versions_give_what_was_in_force_on_a_day(catalog: Catalog) -> None:
    before = catalog.product_at("mobile_m", date(2026, 6, 30))
    after = catalog.product_at("mobile_m", date(2026, 7, 1))
    assert before is not None and (before.version, before.price_micros) == (1, 19_990_000)
    assert after is not None and (after.version, after.price_micros) == (2, 21_990_000)
    assert after.tax_category == before.tax_category == "telecom"  # carried from version 1
    assert catalog.product_at("no_such_product", date(2026, 7, 1)) is None
    snapshot = catalog.version_at(date(2026, 7, 1))
    assert snapshot.products["mobile_m"] == after and snapshot.tax_rates["telecom"].basis_points == 1900
    assert "welcome-2026" in {item.code for item in snapshot.discounts}
    assert "welcome-2026" not in {item.code for item in catalog.version_at(date(2027, 1, 1)).discounts}


def test_an_item_that_starts_later_does_not_exist_before() -> None:
    text = edited(
        ('[products.rent]\nkind = "rental"\n', '[products.rent]\nkind = "rental"\neffective_from = 2026-03-01\n'),
        ("[offers.mobile_postpaid]\n", "[offers.mobile_postpaid]\neffective_from = 2026-03-01\n"),
        (
            'rate_percent = "19"\n',
            'rate_percent = "16"\n[[taxes.categories.telecom.versions]]\n'
            'effective_from = 2026-02-01\nrate_percent = "19"\n',
        ),
    )
    loaded = parse_catalog(text, BOOK)
    assert loaded.product_at("rent", date(2026, 2, 28)) is None
    assert loaded.offer_at("mobile_postpaid", date(2026, 2, 28)) is None
    assert loaded.tax_rate_at("telecom", date(2026, 1, 31)).basis_points == 1600
    assert loaded.tax_rate_at("telecom", date(2026, 2, 1)).basis_points == 1900


ERROR_CASES = [
    (('currency = "EUR"\n', 'currency = "EUR"\ncolour = 1\n'), "(top level): colour: unknown key"),
    (('currency = "EUR"\n', 'currency = "USD"\n'), "offer mobile_postpaid: (plan): plan mobile_postpaid prices in EUR"),
    (('price = "10.00"', "price = 10.0"), "product rent: price: write the price as a string"),
    (('price = "10.00"', 'price = "10.0000001"'), "product rent: price: '10.0000001' has 7 decimals"),
    (('kind = "rental"', 'kind = "monthly"'), "product rent: kind: 'monthly' must be one of"),
    (('kind = "rental"\n', 'kind = "rental"\nunits = 3\n'), "product rent: units: unknown key"),
    (
        ('tax_category = "telecom"\nprice = "10.00"', 'tax_category = "vat"\nprice = "10.00"'),
        "product rent: tax_category: no tax category 'vat'",
    ),
    (
        ('rate_percent = "19"', 'rate_percent = "19.125"'),
        "tax category telecom: rate_percent: '19.125' has more than 2 decimals",
    ),
    (('rate_percent = "19"', 'rate_percent = "101"'), "tax category telecom: rate_percent: '101' is above 100 percent"),
    (
        ('usage_category = "telecom"', 'usage_category = "usage"'),
        "(top level): taxes.usage_category: no tax category 'usage'",
    ),
    (
        ('services = ["voice"]', 'services = ["data"]'),
        "product minutes: services: service 'data' counts octets, not seconds",
    ),
    (('services = ["voice"]', 'services = ["fax"]'), "product minutes: services: no tariff plan in"),
    (('services = ["voice"]', "services = []"), "product minutes: services: must be a non-empty list"),
    (
        ("units = 600\n", "units = 600\nrollover = true\n"),
        "product minutes: rollover_cap: is required with rollover = true",
    ),
    (("units = 600\n", "units = 0\n"), "product minutes: units: 0 is below 1"),
    (('unit = "seconds"', 'unit = "minutes"'), "product minutes: unit: 'minutes' must be one of"),
    (("[offers.mobile_postpaid]", "[offers.gold]"), "offer gold: (plan): no tariff plan 'gold'"),
    (
        ('rentals = ["rent"]', 'rentals = ["sim"]'),
        "offer mobile_postpaid: rentals: product sim is a one_off, not a rental",
    ),
    (('rentals = ["rent"]', 'rentals = ["gone"]'), "offer mobile_postpaid: rentals: no product 'gone'"),
    (('percent = "10"', 'percent = "10"\namount = "1"'), "discounts[0]: amount: not used by a percentage discount"),
    (('percent = "10"', 'percent = "0"'), "discounts[0]: percent: a discount of 0 takes nothing off"),
    (('target = "rentals"', 'target = "everything"'), "discounts[0]: target: 'everything' must be one of"),
    (('percent = "10"', 'percent = "10"\nplans = ["gold"]'), "discounts[0]: plans: no tariff plan 'gold'"),
    (('percent = "10"', 'percent = "10"\nproducts = ["gone"]'), "discounts[0]: products: no product 'gone'"),
    (
        ('percent = "10"', 'percent = "10"\nvalid_from = 2026-02-01\nvalid_until = 2026-02-01'),
        "discounts[0]: valid_until: 2026-02-01 must be after valid_from",
    ),
    (
        ('percent = "10"', 'percent = "10"\nvalid_from = "2026-02-01"'),
        "discounts[0]: valid_from: '2026-02-01' is not a date",
    ),
    (
        (
            'price = "10.00"\n',
            'price = "10.00"\n[[products.rent.versions]]\neffective_from = 2026-01-01\nkind = "one_off"\n',
        ),
        "product rent: versions[0].kind: cannot change in a version",
    ),
    (
        ('price = "10.00"\n', 'price = "10.00"\n[[products.rent.versions]]\nprice = "11"\n'),
        "product rent: versions[0].effective_from: missing",
    ),
    (
        (
            'price = "10.00"\n',
            'price = "10.00"\n[[products.rent.versions]]\neffective_from = 2026-01-01\nprice = "1.1234567"\n',
        ),
        "product rent version 2 (versions[0]): price: '1.1234567' has 7 decimals",
    ),
    (
        (
            'price = "10.00"\n',
            'price = "10.00"\n[[products.rent.versions]]\neffective_from = 2026-02-01\nprice = "11"\n'
            '[[products.rent.versions]]\neffective_from = 2026-01-01\nprice = "12"\n',
        ),
        "product rent: versions[1].effective_from: 2026-01-01 must be later than 2026-02-01",
    ),
]


@pytest.mark.parametrize(("replacement", "message"), ERROR_CASES)
def test_load_errors_name_file_section_and_field(replacement: tuple[str, str], message: str) -> None:
    with pytest.raises(CatalogError) as caught:
        parse_catalog(edited(replacement), BOOK, "c.toml")
    assert str(caught.value).startswith(f"c.toml: {message}"), str(caught.value)


def test_a_missing_or_broken_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot be read"):
        load_catalog(tmp_path / "missing.toml", BOOK)
    with pytest.raises(CatalogError, match=r"\(top level\): \(syntax\)"):
        parse_catalog("currency = ", BOOK)
    with pytest.raises(CatalogError, match=r"\(top level\): products: missing"):
        parse_catalog(
            'currency = "EUR"\n[taxes]\nusage_category = "t"\ncategories = { t = { rate_percent = "1" } }\n', BOOK
        )


def test_a_product_needs_a_tax_rate_from_its_first_day() -> None:
    text = edited(
        ("[taxes.categories.telecom]\n", "[taxes.categories.telecom]\neffective_from = 2026-01-01\n"),
    )
    with pytest.raises(CatalogError, match="product rent: tax_category: tax category telecom has no rate yet"):
        parse_catalog(text, BOOK)


def test_an_offer_cannot_name_a_product_before_it_exists() -> None:
    text = edited(
        ('[products.rent]\nkind = "rental"\n', '[products.rent]\nkind = "rental"\neffective_from = 2026-03-01\n')
    )
    with pytest.raises(CatalogError, match="offer mobile_postpaid: rentals: product rent does not exist yet"):
        parse_catalog(text, BOOK)


def test_offers_are_checked_against_the_tariff_book_given() -> None:
    kept = {name: plan for name, plan in BOOK.plans.items() if name != "mobile_postpaid"}
    other = TariffBook(BOOK.source, kept, BOOK.zone_sets, BOOK.timelines)
    with pytest.raises(CatalogError, match="offer mobile_postpaid: \\(plan\\): no tariff plan 'mobile_postpaid'"):
        parse_catalog(MINIMAL, other)


# --- bill cycles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cycle_day", "day", "start", "end"),
    [
        (1, date(2026, 2, 14), date(2026, 2, 1), date(2026, 3, 1)),  # day 1: calendar months
        (28, date(2026, 2, 28), date(2026, 2, 28), date(2026, 3, 28)),
        (28, date(2026, 2, 27), date(2026, 1, 28), date(2026, 2, 28)),  # 31 days
        (28, date(2026, 3, 27), date(2026, 2, 28), date(2026, 3, 28)),  # 28 days (February)
        (28, date(2028, 3, 27), date(2028, 2, 28), date(2028, 3, 28)),  # 29 days (leap year)
        (15, date(2026, 12, 31), date(2026, 12, 15), date(2027, 1, 15)),  # across the year
        (15, date(2026, 1, 14), date(2025, 12, 15), date(2026, 1, 15)),
    ],
)
def test_the_cycle_holding_a_day(cycle_day: int, day: date, start: date, end: date) -> None:
    assert cycle_containing(cycle_day, day) == Period(start, end)


def test_the_previous_cycle_is_the_one_closed_by_the_day() -> None:
    assert previous_cycle(5, date(2026, 3, 5)) == Period(date(2026, 2, 5), date(2026, 3, 5))
    assert previous_cycle(5, date(2026, 3, 4)) == Period(date(2026, 1, 5), date(2026, 2, 5))
    assert previous_cycle(1, date(2026, 1, 1)) == Period(date(2025, 12, 1), date(2026, 1, 1))


@pytest.mark.parametrize("cycle_day", [0, 29, 30, 31, -1])
def test_cycle_days_past_28_are_refused(cycle_day: int) -> None:
    with pytest.raises(ValueError, match=rf"bill-cycle day {cycle_day} must be 1\.\.28"):
        cycle_containing(cycle_day, date(2026, 1, 1))
    with pytest.raises(ValueError, match=r"must be 1\.\.28"):
        check_cycle_day(cycle_day)


DAYS = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))


@given(st.integers(min_value=1, max_value=28), DAYS)
def test_cycles_tile_the_calendar(cycle_day: int, day: date) -> None:
    cycle = cycle_containing(cycle_day, day)
    assert cycle.contains(day) and cycle.start.day == cycle.end.day == cycle_day
    assert 28 <= cycle.days <= 31
    assert cycle_containing(cycle_day, cycle.end).start == cycle.end  # the next one starts where it ends
    assert previous_cycle(cycle_day, day).end == cycle.start


# --- proration ---------------------------------------------------------------------------------

PRICES = st.integers(min_value=0, max_value=10**15)


@given(
    PRICES, st.integers(min_value=1, max_value=28), DAYS, st.lists(st.integers(min_value=0, max_value=31), max_size=6)
)
def test_the_parts_of_a_cycle_split_at_any_days_sum_to_the_full_rental(
    price: int, cycle_day: int, day: date, cuts: list[int]
) -> None:
    cycle = cycle_containing(cycle_day, day)
    points = sorted({cycle.start, cycle.end, *(cycle.start + timedelta(days=min(cut, cycle.days)) for cut in cuts)})
    parts = [prorate(price, Period(start, end), cycle) for start, end in pairwise(points)]
    assert sum(parts) == price
    for (start, end), part in zip(pairwise(points), parts, strict=True):
        exact = Fraction(price * (end - start).days, cycle.days)
        assert part >= 0 and abs(part - exact) <= 1  # each part within a micro of the exact share


@given(PRICES, st.integers(min_value=1, max_value=28), DAYS, st.integers(min_value=0, max_value=31))
def test_activation_and_termination_days_prorate_the_rest_and_the_start(
    price: int, cycle_day: int, day: date, offset: int
) -> None:
    cycle = cycle_containing(cycle_day, day)
    cut = cycle.start + timedelta(days=min(offset, cycle.days))
    activated = prorate(price, Period(cut, cycle.end), cycle)  # activated on ``cut``
    terminated = prorate(price, Period(cycle.start, cut), cycle)  # terminated from ``cut``
    assert terminated == round(Fraction(price * (cut - cycle.start).days, cycle.days))  # half-even running total
    assert activated + terminated == price
    assert prorate(price, cycle, cycle) == price
    # Days outside the cycle cost nothing.
    assert prorate(price, Period(cycle.end, cycle.end + timedelta(days=5)), cycle) == 0


def test_a_rental_price_is_not_negative() -> None:
    cycle = cycle_containing(1, date(2026, 1, 1))
    with pytest.raises(ValueError, match="not negative"):
        prorate(-1, cycle, cycle)


@given(
    st.integers(min_value=-(10**18), max_value=10**18), st.integers(min_value=-(10**6), max_value=10**6).filter(bool)
)
def test_divide_half_even_is_pythons_exact_round(numerator: int, denominator: int) -> None:
    assert divide_half_even(numerator, denominator) == round(Fraction(numerator, denominator))


# --- discounts and tax -------------------------------------------------------------------------


def discount(code: str, kind: DiscountKind, value: int, **aimed: frozenset[str]) -> Discount:
    return Discount(
        code=code,
        description="",
        kind=kind,
        target=DiscountTarget.RENTALS,
        basis_points=value if kind is DiscountKind.PERCENTAGE else 0,
        amount_micros=value if kind is DiscountKind.FIXED else 0,
        products=aimed.get("products", frozenset()),
        plans=aimed.get("plans", frozenset()),
        segments=aimed.get("segments", frozenset()),
        valid_from=date(2026, 1, 1),
        valid_until=date(2026, 2, 1),
    )


DISCOUNTS = st.lists(
    st.one_of(
        st.builds(discount, st.just("p"), st.just(DiscountKind.PERCENTAGE), st.integers(min_value=1, max_value=10_000)),
        st.builds(discount, st.just("f"), st.just(DiscountKind.FIXED), st.integers(min_value=1, max_value=10**12)),
    ),
    max_size=5,
)


@given(st.integers(min_value=0, max_value=10**15), DISCOUNTS)
def test_discounts_never_take_a_charge_below_zero(amount: int, discounts: list[Discount]) -> None:
    left, applied = apply_discounts(amount, discounts)
    assert 0 <= left <= amount and left + sum(item.micros for item in applied) == amount
    # Each in order, on what the previous left: the percentage rounded half-even, a fixed amount whole.
    expected = amount
    for item in discounts:
        wanted = (
            round(Fraction(expected * item.basis_points, 10_000))
            if item.kind is DiscountKind.PERCENTAGE
            else item.amount_micros
        )
        expected -= min(wanted, expected)
    assert left == expected


def test_percentage_rounding_is_half_even_to_the_micro() -> None:
    ten_percent = discount("p", DiscountKind.PERCENTAGE, 1_000)
    assert ten_percent.off(5) == 0  # 0.5 -> 0 (even)
    assert ten_percent.off(15) == 2  # 1.5 -> 2 (even)
    assert ten_percent.off(25) == 2  # 2.5 -> 2 (even)
    assert discount("f", DiscountKind.FIXED, 7).off(5) == 5  # capped at the amount


def test_discounts_are_aimed_by_product_plan_segment_and_dates() -> None:
    aimed = discount(
        "a",
        DiscountKind.FIXED,
        1,
        products=frozenset({"rent"}),
        plans=frozenset({"gold"}),
        segments=frozenset({"ideal"}),
    )
    day = date(2026, 1, 10)
    assert aimed.applies(DiscountTarget.RENTALS, day, "rent", "gold", "ideal")
    assert not aimed.applies(DiscountTarget.USAGE, day, "rent", "gold", "ideal")
    assert not aimed.applies(DiscountTarget.RENTALS, day, "sim", "gold", "ideal")
    assert not aimed.applies(DiscountTarget.RENTALS, day, "rent", "silver", "ideal")
    assert not aimed.applies(DiscountTarget.RENTALS, day, "rent", "gold", None)
    assert not aimed.applies(DiscountTarget.RENTALS, date(2026, 2, 1), "rent", "gold", "ideal")  # until is exclusive
    assert not aimed.applies(DiscountTarget.RENTALS, date(2025, 12, 31), "rent", "gold", "ideal")


@given(st.integers(min_value=-(10**15), max_value=10**15), st.integers(min_value=0, max_value=10_000))
def test_tax_is_the_rate_of_the_line_rounded_half_even(net: int, basis_points: int) -> None:
    assert tax_micros(net, basis_points) == round(Fraction(net * basis_points, 10_000))


def test_rollover_is_capped_and_only_when_on(catalog: Catalog) -> None:
    data = catalog.product_at("data_5gb", date(2026, 1, 1))
    voice = catalog.product_at("voice_300", date(2026, 1, 1))
    assert data is not None and voice is not None
    assert rollover_units(data, 1_000) == 1_000
    assert rollover_units(data, 9_000_000_000) == 5_000_000_000
    assert rollover_units(data, 0) == 0
    assert rollover_units(voice, 1_000) == 0


# --- charges that explain themselves ------------------------------------------------------------


def test_a_prorated_rental_charge_explains_itself(catalog: Catalog) -> None:
    """mobile_m v2 (21.99) activated on 20 July in the cycle [5 July, 5 August): 16 of 31 days
    = 11.349677 (half-even); 10 % for the ideal segment (1.134968), 5.00 welcome; 19 % tax."""
    cycle = cycle_containing(5, date(2026, 7, 20))
    product = catalog.product_at("mobile_m", cycle.start)
    assert product is not None
    charge = product_charge(catalog, product, Period(date(2026, 7, 20), cycle.end), cycle, "mobile_postpaid", "ideal")
    assert (charge.days, charge.cycle_days, charge.prorated_micros) == (16, 31, 11_349_677)
    assert [(item.code, item.micros) for item in charge.discounts] == [
        ("ideal-10", 1_134_968),
        ("welcome-2026", 5_000_000),
    ]
    assert charge.net_micros == 5_214_709 and charge.tax_micros == 990_795 and charge.total_micros == 6_205_504
    assert charge.explanation == (
        "mobile_m v2 from 2026-07-01, 2026-07-20 to 2026-08-05 (excl.); 16/31 days of 21.99 = 11.349677; "
        "discount ideal-10 -1.134968; discount welcome-2026 -5.00; net 5.214709, tax telecom 19.00 % 0.990795"
    )


def test_one_offs_are_not_prorated_and_usage_takes_the_usage_category(catalog: Catalog) -> None:
    cycle = cycle_containing(1, date(2026, 3, 20))
    sim = catalog.product_at("sim_card", cycle.start)
    assert sim is not None
    charge = product_charge(catalog, sim, Period(date(2026, 3, 20), cycle.end), cycle, "mobile_prepaid", None)
    assert charge.prorated_micros == 4_990_000 and charge.tax_category == "hardware" and not charge.discounts
    usage = usage_charge(catalog, 1_000_000, "usage 2026-03", cycle, "fixed_postpaid", None)
    assert usage.tax_category == "telecom" and [item.code for item in usage.discounts] == ["fixed-usage-5"]
    assert usage.net_micros == 950_000 and usage.tax_micros == 180_500
