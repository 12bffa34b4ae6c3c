"""Load and validate the product catalog (``config/catalog.toml``) into a frozen ``Catalog``.

Theory of operation: the TOML document is read once and checked completely before anything is
built; the first problem raises ``CatalogError`` naming the file, the section (``product X``,
``offer Y``, ``tax category Z``, ``discounts[i]``) and the field. Every table refuses keys it
does not know. Prices are decimal strings converted to integer micros exactly, and rates are
decimal percent strings converted to basis points exactly ("19" is 1900, "7.5" is 750), by the
tariff loader's own readers (``ocs.rating.load_text``); floats and extra decimals are refused.

Versions: a product, an offer or a tax category is its table (version 1, in force from its
optional ``effective_from`` day, else from the beginning of time) followed by
``[[...versions]]`` entries, each with an ``effective_from`` day later than the one before and
the keys it changes, merged into the version before as tariff versions are
(``ocs.rating.versions.merged``). A product's ``kind`` cannot change in a version.

Cross-checks against the tariff book (``ocs.rating.book.TariffBook``): every offer and every
discount's plan is a tariff plan, in the catalog's currency; every bundle service is a service
of some plan that counts the bundle's unit. Inside the catalog: every product an offer or a
discount names exists with the right kind from the offer's day on; every tax category a product
or usage uses has a rate from the day the product exists.

The file format is documented by example in ``config/catalog.toml``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from balance.types import RentalPolicy, Unit
from ocs.billing.catalog import (
    BASIS_POINTS_PER_WHOLE,
    Catalog,
    Dated,
    Discount,
    DiscountKind,
    DiscountTarget,
    Offer,
    Product,
    ProductKind,
    TaxRate,
)
from ocs.rating.book import UNIT_OF_KIND, TariffBook
from ocs.rating.load_text import DataFileError, Where, kind_of
from ocs.rating.versions import merged

PERCENT_DECIMALS = 2  # a percent with 2 decimals is a whole number of basis points
T = TypeVar("T")


class CatalogError(DataFileError):
    """A catalog file that cannot be loaded; ``str()`` reads ``file: section: field: problem``."""


_TOP_KEYS = frozenset({"currency", "taxes", "products", "offers", "discounts"})
_TAXES_KEYS = frozenset({"usage_category", "categories"})
_TAX_KEYS = frozenset({"rate_percent", "effective_from", "versions"})
_COMMON_PRODUCT_KEYS = frozenset({"kind", "description", "tax_category", "price", "effective_from", "versions"})
_PRODUCT_KEYS: Mapping[ProductKind, frozenset[str]] = {
    ProductKind.RENTAL: _COMMON_PRODUCT_KEYS,
    ProductKind.ONE_OFF: _COMMON_PRODUCT_KEYS,
    ProductKind.BUNDLE: _COMMON_PRODUCT_KEYS | {"unit", "units", "services", "rollover", "rollover_cap"},
}
_PRODUCT_REQUIRED: Mapping[ProductKind, frozenset[str]] = {
    ProductKind.RENTAL: frozenset({"tax_category", "price"}),
    ProductKind.ONE_OFF: frozenset({"tax_category", "price"}),
    ProductKind.BUNDLE: frozenset({"tax_category", "unit", "units", "services"}),
}
_OFFER_KEYS = frozenset({"rentals", "one_offs", "bundles", "rental_policy", "effective_from", "versions"})
_DISCOUNT_KEYS = frozenset(
    {
        "code",
        "description",
        "kind",
        "target",
        "percent",
        "amount",
        "products",
        "plans",
        "segments",
        "valid_from",
        "valid_until",
    }
)
_UNITS = {unit.value: unit for unit in Unit}
_OFFER_LISTS: Mapping[str, ProductKind] = {
    "rentals": ProductKind.RENTAL,
    "one_offs": ProductKind.ONE_OFF,
    "bundles": ProductKind.BUNDLE,
}


def load_catalog(path: str | Path, book: TariffBook) -> Catalog:
    """Read and validate a catalog file against ``book``; raises ``CatalogError`` on the first problem."""
    file = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CatalogError(file, "(file)", "(file)", f"cannot be read: {error}") from None
    return parse_catalog(content, book, file)


def parse_catalog(content: str, book: TariffBook, file: str = "<string>") -> Catalog:
    """Validate TOML text into a ``Catalog``; ``file`` names the source in errors."""
    top = Where(file, "(top level)", CatalogError)
    try:
        document = tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        raise top.fail("(syntax)", str(error)) from None
    top.keys(document, "", _TOP_KEYS, frozenset({"currency", "taxes", "products"}))
    currency = top.text(document["currency"], "currency")
    taxes = top.table(document["taxes"], "taxes")
    top.keys(taxes, "taxes", _TAXES_KEYS, _TAXES_KEYS)
    tax_rates = {
        name: _dated(top.at(f"tax category {name}"), raw, _TAX_KEYS, frozenset({"rate_percent"}), _tax_builder(name))
        for name, raw in top.table(taxes["categories"], "taxes.categories").items()
    }
    usage_category = top.text(taxes["usage_category"], "taxes.usage_category")
    if usage_category not in tax_rates:
        raise top.fail("taxes.usage_category", f"no tax category {usage_category!r} (known: {', '.join(tax_rates)})")
    products = {
        code: _product(top.at(f"product {code}"), code, raw, tax_rates, book)
        for code, raw in top.table(document["products"], "products").items()
    }
    offers: dict[str, Dated[Offer]] = {}
    for plan, raw in top.table(document.get("offers", {}), "offers").items():
        where = top.at(f"offer {plan}")
        _check_plan(where, "", plan, book, currency)
        offers[plan] = _dated(where, raw, _OFFER_KEYS, frozenset(), _offer_builder(plan, products))
    raw_discounts = document.get("discounts", [])
    if not isinstance(raw_discounts, list):
        raise top.fail("discounts", f"must be an array of tables ([[discounts]]), not {kind_of(raw_discounts)}")
    discounts = tuple(
        _discount(top.at(f"discounts[{index}]"), raw, products, book, currency)
        for index, raw in enumerate(raw_discounts)
    )
    codes = [discount.code for discount in discounts]
    for index, code in enumerate(codes):
        if code in codes[:index]:
            raise top.at(f"discounts[{index}]").fail("code", f"{code!r} is already the code of another discount")
    return Catalog(
        source=file,
        currency=currency,
        products=MappingProxyType(products),
        offers=MappingProxyType(offers),
        tax_rates=MappingProxyType(tax_rates),
        usage_tax_category=usage_category,
        discounts=discounts,
    )


def _day(where: Where, value: object, field: str) -> date:
    # TOML local dates load as datetime.date; a date-time is refused: billing counts whole days.
    if not isinstance(value, date) or isinstance(value, datetime):
        raise where.fail(field, f"{value!r} is not a date such as 2026-07-01")
    return value


Builder = Callable[[Where, Mapping[str, object], int, date | None], T]


def _dated(where: Where, raw: object, allowed: frozenset[str], required: frozenset[str], build: Builder[T]) -> Dated[T]:
    """An item's versions: its table, then each ``[[versions]]`` entry merged into the one before."""
    table = where.table(raw, "")
    where.keys(table, "", allowed, required)
    raw_versions = table.get("versions", [])
    if not isinstance(raw_versions, list):
        raise where.fail("versions", f"must be an array of tables ([[...versions]]), not {kind_of(raw_versions)}")
    current = {key: value for key, value in table.items() if key not in ("versions", "effective_from")}
    start = _day(where, table["effective_from"], "effective_from") if "effective_from" in table else None
    starts: list[date | None] = [start]
    values = [build(where, current, 1, start)]
    version_keys = (allowed - {"versions", "kind"}) | {"effective_from"}
    for index, raw_version in enumerate(raw_versions):
        field = f"versions[{index}]"
        changes = where.table(raw_version, field)
        if "kind" in changes:
            raise where.fail(f"{field}.kind", "cannot change in a version")
        where.keys(changes, field, version_keys, frozenset({"effective_from"}))
        day = _day(where, changes["effective_from"], f"{field}.effective_from")
        previous = starts[-1]
        if previous is not None and day <= previous:
            raise where.fail(f"{field}.effective_from", f"{day} must be later than {previous}")
        current = merged(current, {key: value for key, value in changes.items() if key != "effective_from"})
        starts.append(day)
        values.append(build(where.at(f"{where.section} version {index + 2} ({field})"), current, index + 2, day))
    return Dated(tuple(starts), tuple(values))


def _percent_basis_points(where: Where, value: object, field: str) -> int:
    basis_points = where.decimal(value, field, PERCENT_DECIMALS, "19")
    if basis_points > BASIS_POINTS_PER_WHOLE:
        raise where.fail(field, f"{value!r} is above 100 percent")
    return basis_points


def _tax_builder(category: str) -> Builder[TaxRate]:
    def build(where: Where, table: Mapping[str, object], version: int, start: date | None) -> TaxRate:
        return TaxRate(category, version, start, _percent_basis_points(where, table["rate_percent"], "rate_percent"))

    return build


def _starts_by(item: Dated[T] | None, day: date | None) -> bool:
    """Whether ``item`` is in force from ``day`` (None: the beginning of time) on."""
    if item is None:
        return False
    first = item.starts[0]
    return first is None or (day is not None and first <= day)


def _product(
    where: Where, code: str, raw: object, tax_rates: Mapping[str, Dated[TaxRate]], book: TariffBook
) -> Dated[Product]:
    table = where.table(raw, "")
    kind_text = where.text(table.get("kind"), "kind") if "kind" in table else ""
    if kind_text not in {kind.value for kind in ProductKind}:
        raise where.fail("kind", f"{kind_text!r} must be one of {', '.join(ProductKind)}")
    kind = ProductKind(kind_text)

    def build(where: Where, table: Mapping[str, object], version: int, start: date | None) -> Product:
        category = where.text(table["tax_category"], "tax_category")
        if category not in tax_rates:
            raise where.fail("tax_category", f"no tax category {category!r} (known: {', '.join(tax_rates)})")
        if not _starts_by(tax_rates[category], start):
            raise where.fail("tax_category", f"tax category {category} has no rate yet on the product's first day")
        product = Product(
            code=code,
            kind=kind,
            version=version,
            effective_from=start,
            description=where.text(table.get("description", ""), "description"),
            tax_category=category,
            price_micros=where.price_micros(table.get("price", "0"), "price"),
        )
        return _bundle(where, table, product, book) if kind is ProductKind.BUNDLE else product

    return _dated(where, table, _PRODUCT_KEYS[kind], _PRODUCT_REQUIRED[kind], build)


def _bundle(where: Where, table: Mapping[str, object], product: Product, book: TariffBook) -> Product:
    unit_text = where.text(table["unit"], "unit")
    if unit_text not in _UNITS:
        raise where.fail("unit", f"{unit_text!r} must be one of {', '.join(_UNITS)}")
    unit = _UNITS[unit_text]
    raw_services = table["services"]
    if not isinstance(raw_services, list) or not raw_services:
        raise where.fail("services", "must be a non-empty list of tariff service names")
    services = tuple(where.text(name, "services") for name in raw_services)
    for name in services:
        counted = {UNIT_OF_KIND[plan.services[name].kind] for plan in book.all_versions() if name in plan.services}
        if not counted:
            raise where.fail("services", f"no tariff plan in {book.source} has a service {name!r}")
        if unit not in counted:
            raise where.fail("services", f"service {name!r} counts {', '.join(sorted(counted))}, not {unit}")
    rollover = table.get("rollover", False)
    if not isinstance(rollover, bool):
        raise where.fail("rollover", f"must be true or false, not {kind_of(rollover)}")
    if rollover != ("rollover_cap" in table):
        raise where.fail("rollover_cap", "is required with rollover = true, and only then")
    cap = where.integer(table["rollover_cap"], "rollover_cap") if rollover else 0
    return Product(
        code=product.code,
        kind=product.kind,
        version=product.version,
        effective_from=product.effective_from,
        description=product.description,
        tax_category=product.tax_category,
        price_micros=product.price_micros,
        unit=unit,
        units=where.integer(table["units"], "units"),
        services=services,
        rollover=rollover,
        rollover_cap=cap,
    )


def _check_plan(where: Where, field: str, plan: str, book: TariffBook, currency: str) -> None:
    found = book.plans.get(plan)
    name = field or "(plan)"
    if found is None:
        raise where.fail(name, f"no tariff plan {plan!r} in {book.source} (known: {', '.join(book.plans)})")
    if found.currency != currency:
        raise where.fail(name, f"plan {plan} prices in {found.currency}, the catalog in {currency}")


def _codes(where: Where, table: Mapping[str, object], field: str) -> tuple[str, ...]:
    raw = table.get(field, [])
    if not isinstance(raw, list):
        raise where.fail(field, f"must be a list of product codes, not {kind_of(raw)}")
    return tuple(where.text(code, field) for code in raw)


def _offer_builder(plan: str, products: Mapping[str, Dated[Product]]) -> Builder[Offer]:
    def build(where: Where, table: Mapping[str, object], version: int, start: date | None) -> Offer:
        lists: dict[str, tuple[str, ...]] = {}
        for field, kind in _OFFER_LISTS.items():
            lists[field] = _codes(where, table, field)
            for code in lists[field]:
                product = products.get(code)
                if product is None:
                    raise where.fail(field, f"no product {code!r}")
                if product.values[0].kind is not kind:
                    raise where.fail(field, f"product {code} is a {product.values[0].kind}, not a {kind}")
                if not _starts_by(product, start):
                    raise where.fail(field, f"product {code} does not exist yet on the offer's first day")
        raw_policy = table.get("rental_policy", RentalPolicy.RESTRICT.value)
        policies = ", ".join(item.value for item in RentalPolicy)
        if not isinstance(raw_policy, str) or raw_policy not in {item.value for item in RentalPolicy}:
            raise where.fail("rental_policy", f"must be one of {policies}, not {raw_policy!r}")
        return Offer(
            plan, version, start, lists["rentals"], lists["one_offs"], lists["bundles"], RentalPolicy(raw_policy)
        )

    return build


def _names(where: Where, table: Mapping[str, object], field: str) -> frozenset[str]:
    raw = table.get(field, [])
    if not isinstance(raw, list):
        raise where.fail(field, f"must be a list of names, not {kind_of(raw)}")
    names = [where.text(name, field) for name in raw]
    if any(not name.strip() for name in names):
        raise where.fail(field, "an entry is empty")
    return frozenset(names)


def _discount(
    where: Where, raw: object, products: Mapping[str, Dated[Product]], book: TariffBook, currency: str
) -> Discount:
    table = where.table(raw, "")
    where.keys(table, "", _DISCOUNT_KEYS, frozenset({"code", "kind", "target"}))
    kind_text = where.text(table["kind"], "kind")
    if kind_text not in {kind.value for kind in DiscountKind}:
        raise where.fail("kind", f"{kind_text!r} must be one of {', '.join(DiscountKind)}")
    kind = DiscountKind(kind_text)
    target_text = where.text(table["target"], "target")
    if target_text not in {target.value for target in DiscountTarget}:
        raise where.fail("target", f"{target_text!r} must be one of {', '.join(DiscountTarget)}")
    wanted, other = ("percent", "amount") if kind is DiscountKind.PERCENTAGE else ("amount", "percent")
    if other in table:
        raise where.fail(other, f"not used by a {kind} discount (give {wanted})")
    if wanted not in table:
        raise where.fail(wanted, "missing")
    basis_points = _percent_basis_points(where, table["percent"], "percent") if "percent" in table else 0
    amount = where.price_micros(table["amount"], "amount") if "amount" in table else 0
    if basis_points == 0 and amount == 0:
        raise where.fail(wanted, "a discount of 0 takes nothing off")
    codes = _names(where, table, "products")
    if codes and DiscountTarget(target_text) is DiscountTarget.USAGE:
        raise where.fail("products", "a usage discount is aimed by plan or segment, not product")
    for code in sorted(codes):
        if code not in products:
            raise where.fail("products", f"no product {code!r}")
    plans = _names(where, table, "plans")
    for plan in sorted(plans):
        _check_plan(where, "plans", plan, book, currency)
    valid_from = _day(where, table["valid_from"], "valid_from") if "valid_from" in table else None
    valid_until = _day(where, table["valid_until"], "valid_until") if "valid_until" in table else None
    if valid_from is not None and valid_until is not None and valid_until <= valid_from:
        raise where.fail("valid_until", f"{valid_until} must be after valid_from {valid_from}")
    return Discount(
        code=where.text(table["code"], "code"),
        description=where.text(table.get("description", ""), "description"),
        kind=kind,
        target=DiscountTarget(target_text),
        basis_points=basis_points,
        amount_micros=amount,
        products=codes,
        plans=plans,
        segments=_names(where, table, "segments"),
        valid_from=valid_from,
        valid_until=valid_until,
    )
