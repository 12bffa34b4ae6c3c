"""The product catalog: rentals, one-off charges, bundles, offers, discounts and taxes, by date.

Theory of operation: the catalog is data (``config/catalog.toml``, read once by
``ocs.billing.catalog_load``) turned into frozen values here, and every money rule the bill run
applies to it is a pure function of those values and integers: no clock, no I/O, no floats.

Versions: products, offers and tax categories change at effective dates. Each is a ``Dated``:
its versions in order, each in force from its ``effective_from`` day (inclusive) until the next
one's; the first may start at the beginning of time (``None``) or at a date before which the
item does not exist. ``Catalog.product_at(code, day)`` and ``Catalog.version_at(day)`` (the
whole catalog as in force on a day: a ``CatalogVersion``) answer what applied, so a bill for a
period is a function of the catalog and the period's dates. Billing dates are calendar days,
as the bill cycle is (``ocs.billing.cycles``); the bill run chooses which day of a period it
prices by (its start, for a rental charged in advance).

Products (``Product``, one ``ProductKind`` each, each with a tax category):
- RENTAL: a monthly price charged in advance for the bill cycle, prorated by day when the line
  is activated, changes plan or is terminated inside a cycle (``ocs.billing.cycles.prorate``).
- ONE_OFF: a price charged once (activation, SIM card), never prorated.
- BUNDLE: an allowance of ``units`` seconds, octets or events for the named tariff services,
  renewed into the balance engine each cycle; unused units roll over up to ``rollover_cap``
  when ``rollover`` is on (``rollover_units``). A bundle may have a price (0: included in a
  rental).

An ``Offer`` says what a tariff plan (config/tariffs.toml) comes with: rentals each cycle,
one-offs on activation, bundles each cycle, and for prepaid lines the ``rental_policy`` when the
balance does not cover a rental (restrict, the default, or allow_negative).

Discounts (``Discount``) are percentage (basis points of the amount) or fixed (micros), on
rentals (and one-offs) or on usage, aimed at products, plans or customer segments (an empty
list aims at all), valid on the days [valid_from, valid_until). ``apply_discounts`` applies the
matching ones in catalog order, each to what the previous left: a percentage is rounded
half-even to the micro, a fixed amount is taken whole, and no discount takes a charge below 0.

Taxes: a rate per tax category in basis points (1900 = 19 %); ``tax_micros`` is the net amount
of one invoice line times the rate, rounded half-even to the micro. Usage lines take
``Catalog.usage_tax_category``.

``Charge`` is one computed line with everything that made it (product and version, period,
days, full price, prorated amount, discounts, tax): ``Charge.explanation`` is the text the bill
run puts on the invoice line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from types import MappingProxyType
from typing import Generic, TypeVar

from balance.types import RentalPolicy, Unit
from ocs.billing.cycles import Period, divide_half_even, prorate
from ocs.rating.rate import format_money

BASIS_POINTS_PER_WHOLE = 10_000  # 100 % in basis points

T = TypeVar("T")


class ProductKind(StrEnum):
    RENTAL = "rental"
    ONE_OFF = "one_off"
    BUNDLE = "bundle"


class DiscountKind(StrEnum):
    PERCENTAGE = "percentage"
    FIXED = "fixed"


class DiscountTarget(StrEnum):
    RENTALS = "rentals"  # recurring rentals and one-off charges
    USAGE = "usage"  # rated usage


@dataclass(frozen=True, slots=True)
class Dated(Generic[T]):
    """Versions of one item: ``starts[i]`` is the first day of ``values[i]`` (None: always)."""

    starts: tuple[date | None, ...]
    values: tuple[T, ...]

    def at(self, day: date) -> T | None:
        """The version in force on ``day``, or None before the first one starts."""
        found: T | None = None
        for start, value in zip(self.starts, self.values, strict=True):
            if start is not None and start > day:
                break
            found = value
        return found


@dataclass(frozen=True, slots=True)
class Product:
    """One version of a product."""

    code: str
    kind: ProductKind
    version: int  # 1, 2, ... in order of effective_from
    effective_from: date | None  # None: from the beginning of time
    description: str
    tax_category: str
    price_micros: int  # rentals: per cycle; one-offs: once; bundles: per cycle (0: included)
    unit: Unit | None = None  # bundles only
    units: int = 0  # bundles: the allowance each cycle
    services: tuple[str, ...] = ()  # bundles: the tariff services that draw on it
    rollover: bool = False
    rollover_cap: int = 0  # bundles: the most units carried into the next cycle

    @property
    def label(self) -> str:
        since = f" from {self.effective_from.isoformat()}" if self.effective_from is not None else ""
        return f"{self.code} v{self.version}{since}"


@dataclass(frozen=True, slots=True)
class Offer:
    """One version of what a tariff plan comes with (product codes)."""

    plan: str
    version: int
    effective_from: date | None
    rentals: tuple[str, ...]
    one_offs: tuple[str, ...]  # charged on activation
    bundles: tuple[str, ...]
    # Prepaid lines: what a rental the main balance does not cover does (balance RULES.md
    # "debit_rental"): restrict (nothing debited; the bill run reports the line) or allow_negative.
    rental_policy: RentalPolicy = RentalPolicy.RESTRICT


@dataclass(frozen=True, slots=True)
class Discount:
    code: str
    description: str
    kind: DiscountKind
    target: DiscountTarget
    basis_points: int  # percentage discounts (1000 = 10 %)
    amount_micros: int  # fixed discounts
    products: frozenset[str]  # empty: any product (rental discounts)
    plans: frozenset[str]  # empty: any plan
    segments: frozenset[str]  # empty: any customer segment
    valid_from: date | None
    valid_until: date | None  # exclusive

    def applies(self, target: DiscountTarget, day: date, product: str | None, plan: str, segment: str | None) -> bool:
        """Whether this discount reduces a charge of ``target`` priced on ``day``."""
        return (
            self.target is target
            and (self.valid_from is None or self.valid_from <= day)
            and (self.valid_until is None or day < self.valid_until)
            and (not self.products or product in self.products)
            and (not self.plans or plan in self.plans)
            and (not self.segments or segment in self.segments)
        )

    def off(self, amount_micros: int) -> int:
        """What this discount takes off ``amount_micros`` (>= 0): never more than the amount."""
        if amount_micros <= 0:
            return 0
        if self.kind is DiscountKind.PERCENTAGE:
            wanted = divide_half_even(amount_micros * self.basis_points, BASIS_POINTS_PER_WHOLE)
        else:
            wanted = self.amount_micros
        return min(wanted, amount_micros)


@dataclass(frozen=True, slots=True)
class TaxRate:
    """One version of a tax category's rate."""

    category: str
    version: int
    effective_from: date | None
    basis_points: int  # 1900 = 19 %


@dataclass(frozen=True, slots=True)
class AppliedDiscount:
    code: str
    micros: int  # taken off


@dataclass(frozen=True, slots=True)
class Charge:
    """One invoice line as computed, with the facts that made it."""

    product: str  # product code, or "usage"
    version: str  # "mobile_m v2 from 2026-07-01", or the usage's description
    period: Period
    days: int  # days charged (the whole cycle unless prorated)
    cycle_days: int
    full_micros: int  # the price for the whole cycle (or the one-off / usage amount)
    prorated_micros: int  # before discounts
    discounts: tuple[AppliedDiscount, ...]
    net_micros: int  # after discounts, before tax
    tax_category: str
    tax_basis_points: int
    tax_micros: int

    @property
    def total_micros(self) -> int:
        return self.net_micros + self.tax_micros

    @property
    def explanation(self) -> str:
        parts = [f"{self.version}, {self.period}"]
        if self.days != self.cycle_days:
            parts.append(
                f"{self.days}/{self.cycle_days} days of {format_money(self.full_micros)} = "
                f"{format_money(self.prorated_micros)}"
            )
        else:
            parts.append(format_money(self.prorated_micros))
        parts.extend(f"discount {item.code} -{format_money(item.micros)}" for item in self.discounts)
        rate = f"{self.tax_basis_points // 100}.{self.tax_basis_points % 100:02d} %"
        parts.append(
            f"net {format_money(self.net_micros)}, tax {self.tax_category} {rate} {format_money(self.tax_micros)}"
        )
        return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class CatalogVersion:
    """The catalog as in force on ``day``: what ``Catalog.version_at`` returns."""

    day: date
    products: Mapping[str, Product]
    offers: Mapping[str, Offer]
    tax_rates: Mapping[str, TaxRate]
    discounts: tuple[Discount, ...]  # valid on ``day``


@dataclass(frozen=True, slots=True)
class Catalog:
    source: str  # the file it was loaded from
    currency: str
    products: Mapping[str, Dated[Product]]
    offers: Mapping[str, Dated[Offer]]  # by tariff plan name
    tax_rates: Mapping[str, Dated[TaxRate]]  # by tax category
    usage_tax_category: str
    discounts: tuple[Discount, ...]  # in the order they apply

    def product_at(self, code: str, day: date) -> Product | None:
        dated = self.products.get(code)
        return None if dated is None else dated.at(day)

    def offer_at(self, plan: str, day: date) -> Offer | None:
        dated = self.offers.get(plan)
        return None if dated is None else dated.at(day)

    def tax_rate_at(self, category: str, day: date) -> TaxRate:
        """The rate of ``category`` on ``day``; the loader checks every category has one from
        the first day any product using it exists, so a miss is a programming error (KeyError)."""
        dated = self.tax_rates.get(category)
        found = None if dated is None else dated.at(day)
        if found is None:
            raise KeyError(f"no tax rate for category {category!r} on {day}")
        return found

    def version_at(self, day: date) -> CatalogVersion:
        """Every product, offer and tax rate in force on ``day``, and the discounts valid then."""
        return CatalogVersion(
            day=day,
            products=_in_force(self.products, day),
            offers=_in_force(self.offers, day),
            tax_rates=_in_force(self.tax_rates, day),
            discounts=tuple(
                item
                for item in self.discounts
                if (item.valid_from is None or item.valid_from <= day)
                and (item.valid_until is None or day < item.valid_until)
            ),
        )


def _in_force(items: Mapping[str, Dated[T]], day: date) -> Mapping[str, T]:
    found = {key: dated.at(day) for key, dated in items.items()}
    return MappingProxyType({key: value for key, value in found.items() if value is not None})


def apply_discounts(amount_micros: int, discounts: Sequence[Discount]) -> tuple[int, tuple[AppliedDiscount, ...]]:
    """(what is left, what each discount took): each in order on what the previous left; a
    percentage rounded half-even to the micro; never below 0."""
    left = amount_micros
    applied: list[AppliedDiscount] = []
    for discount in discounts:
        taken = discount.off(left)
        if taken:
            applied.append(AppliedDiscount(discount.code, taken))
            left -= taken
    return left, tuple(applied)


def tax_micros(net_micros: int, basis_points: int) -> int:
    """The tax on one invoice line: net x rate, rounded half-even to the micro (a negative net,
    a credit, gets a negative tax of the same rounding)."""
    return divide_half_even(net_micros * basis_points, BASIS_POINTS_PER_WHOLE)


def rollover_units(bundle: Product, unused_units: int) -> int:
    """Units of ``bundle`` carried into the next cycle: none without rollover, else the unused
    units up to ``rollover_cap``."""
    if not bundle.rollover or unused_units <= 0:
        return 0
    return min(unused_units, bundle.rollover_cap)


def matching_discounts(
    catalog: Catalog, target: DiscountTarget, day: date, product: str | None, plan: str, segment: str | None
) -> tuple[Discount, ...]:
    return tuple(item for item in catalog.discounts if item.applies(target, day, product, plan, segment))


def product_charge(
    catalog: Catalog, product: Product, used: Period, cycle: Period, plan: str, segment: str | None
) -> Charge:
    """A rental for the days of ``used`` in ``cycle`` (prorated), or a one-off / bundle price
    (``used`` is its cycle; never prorated), with its discounts and tax as of the cycle start."""
    if product.kind is ProductKind.RENTAL:
        charged = used.overlap(cycle) or Period(cycle.start, cycle.start)
        amount = prorate(product.price_micros, charged, cycle)
    else:
        charged, amount = cycle, product.price_micros
    discounts = matching_discounts(catalog, DiscountTarget.RENTALS, cycle.start, product.code, plan, segment)
    return _charge(
        catalog,
        product.code,
        product.label,
        charged,
        cycle,
        product.price_micros,
        amount,
        discounts,
        product.tax_category,
    )


def usage_charge(
    catalog: Catalog, usage_micros: int, description: str, cycle: Period, plan: str, segment: str | None
) -> Charge:
    """A period's rated usage as one line, with usage discounts and the usage tax category."""
    discounts = matching_discounts(catalog, DiscountTarget.USAGE, cycle.start, None, plan, segment)
    category = catalog.usage_tax_category
    return _charge(catalog, "usage", description, cycle, cycle, usage_micros, usage_micros, discounts, category)


def _charge(
    catalog: Catalog,
    code: str,
    label: str,
    charged: Period,
    cycle: Period,
    full_micros: int,
    amount_micros: int,
    discounts: Sequence[Discount],
    tax_category: str,
) -> Charge:
    net, applied = apply_discounts(amount_micros, discounts)
    rate = catalog.tax_rate_at(tax_category, cycle.start)
    return Charge(
        product=code,
        version=label,
        period=charged,
        days=charged.days,
        cycle_days=cycle.days,
        full_micros=full_micros,
        prorated_micros=amount_micros,
        discounts=applied,
        net_micros=net,
        tax_category=tax_category,
        tax_basis_points=rate.basis_points,
        tax_micros=tax_micros(net, rate.basis_points),
    )
