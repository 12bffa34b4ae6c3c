"""Load and validate tariff plans (``config/tariffs.toml``) into a frozen ``TariffBook``.

Theory of operation: the TOML document is read once and checked completely before anything is
built; the first problem raises ``TariffError`` naming the file, the section (``plan X`` or
``zone set Y``) and the field, so an operator can fix the file without reading this code.
Every table refuses keys it does not know (a misspelt key must not silently fall back to a
default). Prices are decimal strings converted to integer micros with integer arithmetic
only: ``"0.12"`` is 120,000 micros exactly, and a seventh decimal is an error because it
cannot be represented (1 unit of currency = 1,000,000 micros, balance/RULES.md). Floats are
refused outright: ``0.1`` in TOML is already inexact.

A plan's ``final_unit`` table, and a service's, say what the network does at the last grant
(``rating_book.FinalUnitPolicy``); ``_final_unit`` checks each value against what RFC 4006
section 8.34-8.39 lets a Final-Unit-Indication carry, and the merged plan-and-service policy
against the actions it names (RESTRICT_ACCESS with nothing to restrict to is refused).

A plan may have later versions by effective date (``[[plans.X.versions]]``): each is the
version before with its changes merged in, built by ``_plan`` like the first
(``ocs.rating.versions``); the book holds every plan's ``PlanTimeline``.

The file format is documented by example in ``config/tariffs.toml``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from balance.tariff import is_valid
from balance.types import Tariff
from ocs.rating.book import (
    CURRENCY_NUMBERS,
    FINAL_UNIT_ACTIONS,
    KNOWN_CONTEXT_UNITS,
    SILENT,
    UNIT_OF_KIND,
    UNZONED,
    BandWindow,
    ContextRule,
    FinalUnitPolicy,
    Numbering,
    Plan,
    PlanTimeline,
    RedirectAddressType,
    RedirectServer,
    Restriction,
    ServiceKind,
    ServiceRate,
    TariffBook,
    ZoneSet,
    normalise_context_id,
)
from ocs.rating.load_text import TariffError, Where, kind_of
from ocs.rating.versions import PlanBuilder, plan_timeline

SECONDS_PER_MINUTE = 60
UNSIGNED32_MAX = 2**32 - 1  # Rating-Group, Service-Identifier: Unsigned32 (RFC 4006 8.28, 8.29)
E164_MAX_DIGITS = 15  # ITU-T E.164: an international number has at most 15 digits
# ITU-T E.164 dialling procedures (TSB list): "00" is the recommended international prefix, used
# across Europe; "011" in North America is a plan setting.
DEFAULT_INTERNATIONAL_PREFIX = "00"
DEFAULT_PER_OCTETS = 1_000_000  # "per MB" in SI megabytes (the unit mobile tariffs advertise)
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60

_INCREMENT = re.compile(r"^(\d+)/(\d+)$")
_CLOCK = re.compile(r"^(\d\d):(\d\d)$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")  # ISO 4217 alphabetic code

_TOP_KEYS = frozenset({"zone_sets", "plans"})
_ZONE_SET_KEYS = frozenset({"description", "default_zone", "zones"})
_PLAN_KEYS = frozenset(
    {
        "description",
        "currency",
        "time_zone",
        "zone_set",
        "country_code",
        "national_prefix",
        "international_prefix",
        "default_band",
        "bands",
        "holidays",
        "contexts",
        "services",
        "final_unit",
        "versions",  # later versions by effective date (ocs/rating/versions.py)
    }
)
_BAND_KEYS = frozenset({"name", "days", "start", "end"})
_CONTEXT_KEYS = frozenset({"default_service", "rating_groups", "service_identifiers"})
_SERVICE_KEYS: Mapping[ServiceKind, frozenset[str]] = {
    ServiceKind.VOICE: frozenset(
        {"kind", "description", "increment", "zone_increments", "price_per_minute", "final_unit"}
    ),
    ServiceKind.SMS: frozenset({"kind", "description", "price_per_message", "final_unit"}),
    ServiceKind.DATA: frozenset(
        {"kind", "description", "price", "per_octets", "block_octets", "first_octets", "final_unit"}
    ),
}
_FINAL_UNIT_KEYS = frozenset(
    {"action", "suspended_action", "redirect_address", "redirect_address_type", "restriction_filters", "filter_ids"}
)
# Redirect-Address-Type by the names RFC 4006 section 8.38 gives its values.
_REDIRECT_ADDRESS_TYPES: Mapping[str, RedirectAddressType] = {
    "IPv4 Address": RedirectAddressType.IPV4_ADDRESS,
    "IPv6 Address": RedirectAddressType.IPV6_ADDRESS,
    "URL": RedirectAddressType.URL,
    "SIP URI": RedirectAddressType.SIP_URI,
}
# RFC 6733 section 4.3.1 IPFilterRule: "action dir proto from src to dst [options]".
_FILTER_ACTIONS = ("permit", "deny")
_FILTER_DIRECTIONS = ("in", "out")


def load_book(path: str | Path) -> TariffBook:
    """Read and validate a tariff file; raises ``TariffError`` on the first problem."""
    file = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TariffError(file, "(file)", "(file)", f"cannot be read: {error}") from None
    return parse_book(content, file)


def parse_book(content: str, file: str = "<string>") -> TariffBook:
    """Validate TOML text into a ``TariffBook``; ``file`` names the source in errors."""
    top = Where(file, "(top level)")
    try:
        document = tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        raise top.fail("(syntax)", str(error)) from None
    top.keys(document, "", _TOP_KEYS, frozenset({"plans"}))
    zone_sets = {
        name: _zone_set(Where(file, f"zone set {name}"), name, raw)
        for name, raw in top.table(document.get("zone_sets", {}), "zone_sets").items()
    }
    timelines: dict[str, PlanTimeline] = {}
    for name, raw in top.table(document["plans"], "plans").items():
        where = Where(file, f"plan {name}")
        timelines[name] = plan_timeline(where, where.table(raw, ""), _PLAN_KEYS, _plan_builder(name, zone_sets))
    if not timelines:
        raise top.fail("plans", "no plan defined")
    plans = {name: timeline.first for name, timeline in timelines.items()}
    return TariffBook(file, MappingProxyType(plans), MappingProxyType(zone_sets), MappingProxyType(timelines))


def _zone_set(where: Where, name: str, raw: object) -> ZoneSet:
    table = where.table(raw, "")
    where.keys(table, "", _ZONE_SET_KEYS, frozenset({"zones"}))
    if "default_zone" not in table:
        raise where.fail("default_zone", "missing: numbers no prefix matches need a zone")
    zones = where.table(table["zones"], "zones")
    default_zone = where.text(table["default_zone"], "default_zone")
    if default_zone not in zones:
        raise where.fail("default_zone", f"{default_zone!r} is not one of the zones ({', '.join(zones)})")
    prefixes: dict[str, str] = {}
    for zone, listed in zones.items():
        field = f"zones.{zone}"
        if not isinstance(listed, list):
            raise where.fail(field, f"must be a list of prefixes, not {kind_of(listed)}")
        for prefix_value in listed:
            prefix = where.digits(prefix_value, field, empty=False)
            if len(prefix) > E164_MAX_DIGITS:
                raise where.fail(field, f"prefix {prefix} is longer than {E164_MAX_DIGITS} digits (E.164)")
            if prefix in prefixes:
                raise where.fail(field, f"prefix {prefix} is already in zone {prefixes[prefix]}")
            prefixes[prefix] = zone
    longest = max((len(prefix) for prefix in prefixes), default=0)
    return ZoneSet(name, default_zone, tuple(zones), MappingProxyType(prefixes), longest)


def _plan_builder(name: str, zone_sets: Mapping[str, ZoneSet]) -> PlanBuilder:
    def build(where: Where, table: Mapping[str, object]) -> Plan:
        return _plan(where, name, table, zone_sets)

    return build


def _plan(where: Where, name: str, raw: object, zone_sets: Mapping[str, ZoneSet]) -> Plan:
    table = where.table(raw, "")
    required = frozenset({"currency", "time_zone", "default_band", "contexts", "services"})
    where.keys(table, "", _PLAN_KEYS, required)
    currency = where.text(table["currency"], "currency")
    if not _CURRENCY.match(currency):
        raise where.fail("currency", f'{currency!r} is not an ISO 4217 code such as "EUR"')
    if currency not in CURRENCY_NUMBERS:
        known = ", ".join(CURRENCY_NUMBERS)
        raise where.fail("currency", f"{currency} has no ISO 4217 number here (known: {known}; ocs/rating/book.py)")
    zone_set = None
    if "zone_set" in table:
        zone_set_name = where.text(table["zone_set"], "zone_set")
        if zone_set_name not in zone_sets:
            raise where.fail("zone_set", f"no zone set named {zone_set_name!r}")
        zone_set = zone_sets[zone_set_name]
    default_band = where.text(table["default_band"], "default_band")
    windows = _bands(where, table.get("bands", []))
    band_names = tuple(dict.fromkeys([default_band, *(window.name for window in windows)]))
    services = {
        service_name: _service(where, f"services.{service_name}", service_name, raw_service, zone_set, band_names)
        for service_name, raw_service in where.table(table["services"], "services").items()
    }
    contexts = _contexts(where, where.table(table["contexts"], "contexts"), services)
    final_unit = _final_unit(where, "final_unit", table.get("final_unit"))
    _check_final_unit(where, "final_unit", final_unit)
    for service_name, service in services.items():
        _check_final_unit(where, f"services.{service_name}.final_unit", service.final_unit.over(final_unit))
    return Plan(
        name=name,
        description=where.text(table.get("description", ""), "description"),
        currency=currency,
        time_zone=_time_zone(where, table["time_zone"]),
        numbering=_numbering(where, table),
        zone_set=zone_set,
        default_band=default_band,
        band_names=band_names,
        windows_by_day=tuple(tuple(window for window in windows if day in window.days) for day in range(7)),
        holidays=_holidays(where, table.get("holidays", [])),
        contexts=MappingProxyType(contexts),
        services=MappingProxyType(services),
        final_unit=final_unit,
    )


def _time_zone(where: Where, value: object) -> ZoneInfo:
    name = where.text(value, "time_zone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise where.fail("time_zone", f'{name!r} is not an IANA time zone such as "Europe/Berlin"') from None


def _numbering(where: Where, table: Mapping[str, object]) -> Numbering:
    country_code = where.digits(table.get("country_code", ""), "country_code")
    national_prefix = where.digits(table.get("national_prefix", ""), "national_prefix")
    international_prefix = where.digits(
        table.get("international_prefix", DEFAULT_INTERNATIONAL_PREFIX), "international_prefix"
    )
    if national_prefix and not country_code:
        raise where.fail("country_code", "missing: national_prefix is replaced by the country code")
    if not international_prefix:
        raise where.fail("international_prefix", "must not be empty")
    return Numbering(country_code, national_prefix, international_prefix)


def _clock_minute(where: Where, value: object, field: str, *, end: bool) -> int:
    text = where.text(value, field)
    match = _CLOCK.match(text)
    if match is None:
        raise where.fail(field, f'{text!r} is not a time of day such as "08:00"')
    hours, minutes = int(match[1]), int(match[2])
    minute = hours * 60 + minutes
    if minutes >= 60 or minute > MINUTES_PER_DAY or (minute == MINUTES_PER_DAY and not end):
        raise where.fail(field, f"{text!r} is not a time of day (00:00 to {'24:00' if end else '23:59'})")
    return minute


def _bands(where: Where, raw: object) -> tuple[BandWindow, ...]:
    if not isinstance(raw, list):
        raise where.fail("bands", f"must be an array of tables ([[...bands]]), not {kind_of(raw)}")
    windows: list[BandWindow] = []
    for index, raw_window in enumerate(raw):
        field = f"bands[{index}]"
        table = where.table(raw_window, field)
        where.keys(table, field, _BAND_KEYS, _BAND_KEYS)
        days_value = table["days"]
        if not isinstance(days_value, list) or not days_value:
            raise where.fail(f"{field}.days", "must be a non-empty list of day names (mon .. sun)")
        days: set[int] = set()
        for day_value in days_value:
            day = where.text(day_value, f"{field}.days")
            if day not in DAY_NAMES:
                raise where.fail(f"{field}.days", f"{day!r} is not one of {', '.join(DAY_NAMES)}")
            if DAY_NAMES.index(day) in days:
                raise where.fail(f"{field}.days", f"{day!r} is listed twice")
            days.add(DAY_NAMES.index(day))
        start = _clock_minute(where, table["start"], f"{field}.start", end=False)
        end = _clock_minute(where, table["end"], f"{field}.end", end=True)
        if start >= end:
            raise where.fail(f"{field}.end", "must be after start (split a band that crosses midnight in two)")
        window = BandWindow(where.text(table["name"], f"{field}.name"), frozenset(days), start, end)
        for other_index, other in enumerate(windows):
            shared = window.days & other.days
            if shared and window.start_minute < other.end_minute and other.start_minute < window.end_minute:
                day_name = DAY_NAMES[min(shared)]
                raise where.fail(field, f"overlaps bands[{other_index}] ({other.name}) on {day_name}")
        windows.append(window)
    return tuple(windows)


def _holidays(where: Where, raw: object) -> frozenset[date]:
    if not isinstance(raw, list):
        raise where.fail("holidays", f"must be a list of dates (2026-12-25), not {kind_of(raw)}")
    for value in raw:
        # TOML local dates load as datetime.date; a datetime (date with a time) is refused.
        if not isinstance(value, date) or isinstance(value, datetime):
            raise where.fail("holidays", f"{value!r} is not a date such as 2026-12-25")
    return frozenset(raw)


def _increment(where: Where, value: object, field: str) -> tuple[int, int]:
    """Charging increments "first/next" in seconds (e.g. "60/1"): first is a multiple of next."""
    text = where.text(value, field)
    match = _INCREMENT.match(text)
    if match is None:
        raise where.fail(field, f'{text!r} is not an increment such as "60/1" (first/next seconds)')
    first, following = int(match[1]), int(match[2])
    if first < 1 or following < 1:
        raise where.fail(field, f"{text!r}: both increments must be at least 1 second")
    if first % following:
        raise where.fail(field, f"{text!r}: the first increment must be a multiple of the next")
    return first, following


def _banded_prices(where: Where, value: object, field: str, band_names: tuple[str, ...]) -> dict[str, int]:
    """A price for every band: one string for all bands, or a table band -> price."""
    if not isinstance(value, dict):
        micros = where.price_micros(value, field)
        return dict.fromkeys(band_names, micros)
    for band in value:
        if band not in band_names:
            raise where.fail(f"{field}.{band}", f"no such band (bands: {', '.join(band_names)})")
    for band in band_names:
        if band not in value:
            raise where.fail(f"{field}.{band}", "missing: a banded price needs every band of the plan")
    return {band: where.price_micros(value[band], f"{field}.{band}") for band in band_names}


def _tariffs(
    where: Where, field: str, prices: Mapping[str, int], make: Mapping[str, int]
) -> MappingProxyType[str, Tariff]:
    tariffs = {
        band: Tariff(
            price_micros=micros,
            per_units=make["per_units"],
            block_units=make["block_units"],
            first_units=make["first_units"],
        )
        for band, micros in prices.items()
    }
    for tariff in tariffs.values():
        if not is_valid(tariff):
            raise where.fail(field, f"{tariff} is outside the engine's limits (balance/types.py)")
    return MappingProxyType(tariffs)


def _zoned_prices(
    where: Where, field: str, value: object, zone_set: ZoneSet | None, band_names: tuple[str, ...]
) -> dict[str, dict[str, int]]:
    if zone_set is None:
        raise where.fail(field, "a zoned price needs the plan's zone_set")
    table = where.table(value, field)
    for zone in table:
        if zone not in zone_set.zones:
            raise where.fail(f"{field}.{zone}", f"not a zone of zone set {zone_set.name}")
    for zone in zone_set.zones:
        if zone not in table:
            raise where.fail(f"{field}.{zone}", "missing: every zone of the zone set needs a price")
    return {zone: _banded_prices(where, table[zone], f"{field}.{zone}", band_names) for zone in zone_set.zones}


def _service(
    where: Where, field: str, name: str, raw: object, zone_set: ZoneSet | None, band_names: tuple[str, ...]
) -> ServiceRate:
    table = where.table(raw, field)
    kind_text = where.text(table.get("kind"), f"{field}.kind") if "kind" in table else ""
    if kind_text not in {kind.value for kind in ServiceKind}:
        raise where.fail(f"{field}.kind", f"{kind_text!r} must be one of {', '.join(ServiceKind)}")
    kind = ServiceKind(kind_text)
    required = {
        ServiceKind.VOICE: frozenset({"increment", "price_per_minute"}),
        ServiceKind.SMS: frozenset({"price_per_message"}),
        ServiceKind.DATA: frozenset({"price", "block_octets"}),
    }[kind]
    where.keys(table, field, _SERVICE_KEYS[kind], required)
    description = where.text(table.get("description", ""), f"{field}.description")
    tariffs: dict[str, MappingProxyType[str, Tariff]] = {}
    if kind is ServiceKind.VOICE:
        first, following = _increment(where, table["increment"], f"{field}.increment")
        overrides = where.table(table.get("zone_increments", {}), f"{field}.zone_increments")
        if zone_set is not None:
            for zone in overrides:
                if zone not in zone_set.zones:
                    raise where.fail(f"{field}.zone_increments.{zone}", f"not a zone of zone set {zone_set.name}")
        prices = _zoned_prices(where, f"{field}.price_per_minute", table["price_per_minute"], zone_set, band_names)
        for zone, by_band in prices.items():
            zone_first, zone_following = (
                _increment(where, overrides[zone], f"{field}.zone_increments.{zone}")
                if zone in overrides
                else (first, following)
            )
            # Price per minute over 60 seconds: the engine's cost is then exact to the micro.
            shape = {"per_units": SECONDS_PER_MINUTE, "block_units": zone_following, "first_units": zone_first}
            tariffs[zone] = _tariffs(where, f"{field}.price_per_minute.{zone}", by_band, shape)
    elif kind is ServiceKind.SMS:
        prices = _zoned_prices(where, f"{field}.price_per_message", table["price_per_message"], zone_set, band_names)
        shape = {"per_units": 1, "block_units": 1, "first_units": 1}
        for zone, by_band in prices.items():
            tariffs[zone] = _tariffs(where, f"{field}.price_per_message.{zone}", by_band, shape)
    else:
        per_octets = where.integer(table.get("per_octets", DEFAULT_PER_OCTETS), f"{field}.per_octets")
        block_octets = where.integer(table["block_octets"], f"{field}.block_octets")
        first_octets = where.integer(table.get("first_octets", block_octets), f"{field}.first_octets")
        if first_octets % block_octets:
            raise where.fail(f"{field}.first_octets", f"{first_octets} is not a multiple of block_octets")
        by_band = _banded_prices(where, table["price"], f"{field}.price", band_names)
        shape = {"per_units": per_octets, "block_units": block_octets, "first_units": first_octets}
        tariffs[UNZONED] = _tariffs(where, f"{field}.price", by_band, shape)
    final_unit = _final_unit(where, f"{field}.final_unit", table.get("final_unit"))
    return ServiceRate(name, kind, description, MappingProxyType(tariffs), final_unit)


def _identifier_map(
    where: Where, field: str, value: object, services: Mapping[str, ServiceRate]
) -> MappingProxyType[int, str]:
    table = where.table(value, field)
    mapped: dict[int, str] = {}
    for key, service in table.items():
        if not (key.isascii() and key.isdigit()) or int(key) > UNSIGNED32_MAX:
            raise where.fail(f"{field}.{key}", f"{key!r} is not an Unsigned32 number")
        if int(key) in mapped:
            raise where.fail(f"{field}.{key}", f"{int(key)} is listed twice")
        service_name = where.text(service, f"{field}.{key}")
        if service_name not in services:
            raise where.fail(f"{field}.{key}", f"no service named {service_name!r}")
        mapped[int(key)] = service_name
    return MappingProxyType(mapped)


def _contexts(where: Where, table: Mapping[str, object], services: Mapping[str, ServiceRate]) -> dict[str, ContextRule]:
    if not table:
        raise where.fail("contexts", "no service context: the plan could rate nothing")
    contexts: dict[str, ContextRule] = {}
    for raw_id, raw in table.items():
        field = f"contexts.{raw_id}"
        context_id = normalise_context_id(raw_id)
        if context_id in contexts:
            raise where.fail(field, f"the same service context as another entry ({context_id})")
        rule_table = where.table(raw, field)
        where.keys(rule_table, field, _CONTEXT_KEYS, frozenset())
        default_service = None
        if "default_service" in rule_table:
            default_service = where.text(rule_table["default_service"], f"{field}.default_service")
            if default_service not in services:
                raise where.fail(f"{field}.default_service", f"no service named {default_service!r}")
        rule = ContextRule(
            context_id=context_id,
            default_service=default_service,
            rating_groups=_identifier_map(
                where, f"{field}.rating_groups", rule_table.get("rating_groups", {}), services
            ),
            service_identifiers=_identifier_map(
                where, f"{field}.service_identifiers", rule_table.get("service_identifiers", {}), services
            ),
        )
        named = {default_service, *rule.rating_groups.values(), *rule.service_identifiers.values()} - {None}
        if not named:
            raise where.fail(field, "selects no service (set default_service or rating_groups)")
        expected_unit = KNOWN_CONTEXT_UNITS.get(context_id)
        for service_name in sorted(name for name in named if name is not None):
            unit = UNIT_OF_KIND[services[service_name].kind]
            if expected_unit is not None and unit is not expected_unit:
                raise where.fail(
                    field, f"service {service_name} counts {unit}, but {context_id} counts {expected_unit}"
                )
        contexts[context_id] = rule
    return contexts


def _final_unit(where: Where, field: str, raw: object) -> FinalUnitPolicy:
    """A ``final_unit`` table: each key it sets overrides the level above, none is required."""
    if raw is None:
        return SILENT
    table = where.table(raw, field)
    where.keys(table, field, _FINAL_UNIT_KEYS, frozenset())
    actions: dict[str, str] = {}
    for key in ("action", "suspended_action"):
        if key in table:
            name = where.text(table[key], f"{field}.{key}")
            if name not in FINAL_UNIT_ACTIONS:
                raise where.fail(f"{field}.{key}", f"{name!r} must be one of {', '.join(FINAL_UNIT_ACTIONS)}")
            actions[key] = name
    restriction = None
    if "restriction_filters" in table or "filter_ids" in table:
        rules = _texts(where, f"{field}.restriction_filters", table.get("restriction_filters", []))
        for rule in rules:
            _filter_rule(where, f"{field}.restriction_filters", rule)
        restriction = Restriction(rules, _texts(where, f"{field}.filter_ids", table.get("filter_ids", [])))
    return FinalUnitPolicy(
        action=actions.get("action"),
        suspended_action=actions.get("suspended_action"),
        redirect=_redirect(where, field, table),
        restriction=restriction,
    )


def _texts(where: Where, field: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise where.fail(field, f"must be a list of strings, not {kind_of(value)}")
    texts = tuple(where.text(item, field) for item in value)
    if any(not text.strip() for text in texts):
        raise where.fail(field, "an entry is empty")
    return texts


def _filter_rule(where: Where, field: str, rule: str) -> None:
    """An IPFilterRule (RFC 6733 section 4.3.1): ASCII, "action dir proto from src to dst [options]"."""
    words = rule.split()
    shaped = (
        rule.isascii()
        and len(words) >= 7
        and words[0] in _FILTER_ACTIONS
        and words[1] in _FILTER_DIRECTIONS
        and words[3] == "from"
        and "to" in words[5:-1]
    )
    if not shaped:
        raise where.fail(field, f'{rule!r} is not an IPFilterRule such as "permit out ip from any to 10.0.0.1 80"')


def _redirect(where: Where, field: str, table: Mapping[str, object]) -> RedirectServer | None:
    """Redirect-Server (RFC 4006 section 8.37) from redirect_address and its type (section 8.38;
    "URL" when not given): the address must be of that type."""
    if "redirect_address" not in table:
        if "redirect_address_type" in table:
            raise where.fail(f"{field}.redirect_address", "missing: redirect_address_type needs it")
        return None
    address = where.text(table["redirect_address"], f"{field}.redirect_address")
    type_name = where.text(table.get("redirect_address_type", "URL"), f"{field}.redirect_address_type")
    address_type = _REDIRECT_ADDRESS_TYPES.get(type_name)
    if address_type is None:
        names = ", ".join(repr(name) for name in _REDIRECT_ADDRESS_TYPES)
        raise where.fail(f"{field}.redirect_address_type", f"{type_name!r} must be one of {names} (RFC 4006 8.38)")
    if not _is_address_of(address, address_type):
        raise where.fail(f"{field}.redirect_address", f"{address!r} is not an address of type {type_name}")
    return RedirectServer(address_type, address)


def _is_address_of(address: str, address_type: RedirectAddressType) -> bool:
    if address_type is RedirectAddressType.IPV4_ADDRESS:
        try:
            return str(ipaddress.IPv4Address(address)) == address
        except ValueError:
            return False
    if address_type is RedirectAddressType.IPV6_ADDRESS:
        try:
            # RFC 8506 section 8.38: the IPv6 text form of RFC 5952 (what ipaddress writes).
            return str(ipaddress.IPv6Address(address)) == address
        except ValueError:
            return False
    if address_type is RedirectAddressType.SIP_URI:
        scheme, _, rest = address.partition(":")  # RFC 3261 section 19.1: sip: or sips:
        return scheme.lower() in ("sip", "sips") and bool(rest.strip()) and " " not in address
    parts = urlsplit(address)  # RFC 3986: a scheme and an authority, no blanks
    return bool(parts.scheme and parts.netloc) and " " not in address


def _check_final_unit(where: Where, field: str, policy: FinalUnitPolicy) -> None:
    """RFC 4006 section 8.34: with RESTRICT_ACCESS "either the Restriction-Filter-Rule AVP or the
    Filter-Id AVP SHOULD be present"; an empty list set in the file would send neither."""
    restricting = "RESTRICT_ACCESS" in (policy.action, policy.suspended_action)
    empty = policy.restriction is not None and not (policy.restriction.filter_rules or policy.restriction.filter_ids)
    if restricting and empty:
        raise where.fail(field, "RESTRICT_ACCESS needs restriction_filters or filter_ids, and both are empty")
