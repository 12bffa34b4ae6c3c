"""Load and validate the loyalty programmes (``config/loyalty.toml``) into frozen ``LoyaltyRules``.

Theory of operation: the TOML document is read once at startup and checked completely before
anything is built; the first problem raises ``LoyaltyRulesError`` naming the file, the section
(``programmes[2]``, ``programmes[2].rules[1].action``) and the field. Every table refuses keys it
does not know, so a misspelt ``treshold`` cannot silently turn a rule off. Amounts are decimal
strings read exactly into micros and percents into basis points (``ocs.rating.load_text``); a
threshold on a spend counter is an amount, on an events or units counter an integer. Programme
and rule ids are unique over the file: an application names its rule for ever, and the
idempotency id of its credit is made from it.

The file format is documented by example in ``config/loyalty.toml``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from balance.types import BucketKind
from ocs.loyalty.rules import (
    Action,
    ActionKind,
    Condition,
    ConditionKind,
    Counter,
    DiscountTarget,
    EventKind,
    Filters,
    LoyaltyRules,
    Measure,
    PercentOf,
    Period,
    Programme,
    Rule,
)
from ocs.rating.load_text import DataFileError, Where, kind_of

PERCENT_DECIMALS = 2  # "5" is 500 basis points, "2.5" is 250
ID_LENGTH = 64  # the database's id columns (ocs/db/loyalty.py)
E = TypeVar("E", bound=str)

_PROGRAMME_KEYS = frozenset({"id", "name", "valid_from", "valid_until", "budget", "rules"})
_PROGRAMME_REQUIRED = frozenset({"id", "name", "valid_from", "rules"})
_RULE_KEYS = frozenset({"id", "event", "filters", "counter", "condition", "action"})
_RULE_REQUIRED = frozenset({"id", "event", "counter", "condition", "action"})
_FILTER_KEYS = frozenset({"services", "segments", "payment_types", "customer_kinds"})
_COUNTER_KEYS = frozenset({"period", "measure"})
_CONDITION_KEYS = frozenset({"every", "threshold"})
_ACTION_KEYS: Mapping[ActionKind, frozenset[str]] = {
    ActionKind.BONUS_MONEY: frozenset({"kind", "amount", "percent", "percent_of", "expiry_days"}),
    ActionKind.UNIT_ALLOWANCE: frozenset({"kind", "unit", "units", "services", "expiry_days", "cost"}),
    ActionKind.INVOICE_DISCOUNT: frozenset({"kind", "percent", "target", "service"}),
    ActionKind.RATING_DISCOUNT: frozenset({"kind", "percent", "service"}),
}
_ALLOWANCE_KINDS = (BucketKind.SECONDS, BucketKind.OCTETS, BucketKind.EVENTS)


class LoyaltyRulesError(DataFileError):
    """A loyalty file that cannot be loaded; ``str()`` reads ``file: section: field: problem``."""


def load_loyalty_rules(path: str | Path) -> LoyaltyRules:
    """Read and validate a loyalty file; raises ``LoyaltyRulesError`` on the first problem."""
    file = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise LoyaltyRulesError(file, "(file)", "(file)", str(error)) from None
    return parse_loyalty_rules(content, file)


def parse_loyalty_rules(content: str, file: str = "<string>") -> LoyaltyRules:
    where = Where(file, "(top level)", LoyaltyRulesError)
    try:
        document = tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        raise where.fail("(syntax)", str(error)) from None
    where.keys(document, "", frozenset({"programmes"}), frozenset())
    raw = document.get("programmes", [])
    if not isinstance(raw, list):
        raise where.fail("programmes", f"must be an array of tables ([[programmes]]), not {kind_of(raw)}")
    programmes: dict[str, Programme] = {}
    rules: dict[str, Rule] = {}
    for index, item in enumerate(raw, start=1):
        section = where.at(f"programmes[{index}]")
        programme = _programme(section, item)
        if programme.programme_id in programmes:
            raise section.fail("id", f"{programme.programme_id!r} is the id of another programme")
        for position, rule in enumerate(programme.rules, start=1):
            if rule.rule_id in rules:
                raise section.at(f"programmes[{index}].rules[{position}]").fail(
                    "id", f"{rule.rule_id!r} is the id of another rule"
                )
            rules[rule.rule_id] = rule
        programmes[programme.programme_id] = programme
    return LoyaltyRules(MappingProxyType(programmes), MappingProxyType(rules))


def _identifier(where: Where, value: object, field: str) -> str:
    text = where.text(value, field)
    if not text or len(text) > ID_LENGTH or "|" in text or text != text.strip():
        raise where.fail(field, f"{text!r} must be 1 to {ID_LENGTH} characters, without '|' or surrounding spaces")
    return text


def _day(where: Where, value: object, field: str) -> date:
    if not isinstance(value, date) or hasattr(value, "hour"):
        raise where.fail(field, f"must be a TOML date such as 2026-01-01, not {kind_of(value)}")
    return value


def _choice(where: Where, value: object, field: str, kind: type[E]) -> E:
    text = where.text(value, field)
    try:
        return kind(text)
    except ValueError:
        allowed = ", ".join(str(member) for member in kind.__members__.values())  # type: ignore[attr-defined]
        raise where.fail(field, f"{text!r} is not one of: {allowed}") from None


def _strings(where: Where, value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise where.fail(field, f"must be a list of strings, not {kind_of(value)}")
    return tuple(where.text(item, f"{field}[{index}]") for index, item in enumerate(value, start=1))


def _programme(where: Where, value: object) -> Programme:
    table = where.table(value, "(table)")
    where.keys(table, "", _PROGRAMME_KEYS, _PROGRAMME_REQUIRED)
    programme_id = _identifier(where, table["id"], "id")
    name = where.text(table["name"], "name")
    valid_from = _day(where, table["valid_from"], "valid_from")
    valid_until = _day(where, table["valid_until"], "valid_until") if "valid_until" in table else None
    if valid_until is not None and valid_until < valid_from:
        raise where.fail("valid_until", f"{valid_until} is before valid_from ({valid_from})")
    budget = where.price_micros(table["budget"], "budget") if "budget" in table else None
    raw = table["rules"]
    if not isinstance(raw, list) or not raw:
        raise where.fail("rules", "must be a non-empty array of tables ([[programmes.rules]])")
    rules = tuple(
        _rule(where.at(f"{where.section}.rules[{index}]"), programme_id, item)
        for index, item in enumerate(raw, start=1)
    )
    return Programme(programme_id, name, valid_from, valid_until, budget, rules)


def _rule(where: Where, programme_id: str, value: object) -> Rule:
    table = where.table(value, "(table)")
    where.keys(table, "", _RULE_KEYS, _RULE_REQUIRED)
    rule_id = _identifier(where, table["id"], "id")
    event = _choice(where, table["event"], "event", EventKind)
    filters = _filters(where.at(f"{where.section}.filters"), table.get("filters", {}))
    counter = _counter(where.at(f"{where.section}.counter"), table["counter"])
    condition = _condition(where.at(f"{where.section}.condition"), table["condition"], counter)
    action = _action(where.at(f"{where.section}.action"), table["action"])
    if action.kind is ActionKind.INVOICE_DISCOUNT and counter.period is Period.DAY:
        raise where.at(f"{where.section}.counter").fail(
            "period", "an invoice discount applies to the next month: its counter's period is month"
        )
    return Rule(rule_id, programme_id, event, filters, counter, condition, action)


def _filters(where: Where, value: object) -> Filters:
    table = where.table(value, "(table)")
    where.keys(table, "", _FILTER_KEYS, frozenset())
    sets = {key: frozenset(_strings(where, table[key], key)) for key in table}
    return Filters(**sets)


def _counter(where: Where, value: object) -> Counter:
    table = where.table(value, "(table)")
    where.keys(table, "", _COUNTER_KEYS, _COUNTER_KEYS)
    return Counter(
        _choice(where, table["period"], "period", Period), _choice(where, table["measure"], "measure", Measure)
    )


def _condition(where: Where, value: object, counter: Counter) -> Condition:
    table = where.table(value, "(table)")
    where.keys(table, "", _CONDITION_KEYS, frozenset())
    if len(table) != 1:
        raise where.fail("every", "give exactly one of every, threshold")
    key, raw = next(iter(table.items()))
    if counter.measure is Measure.SPEND:
        amount = where.price_micros(raw, key)
        if amount == 0:
            raise where.fail(key, "must be above 0")
    else:
        amount = where.integer(raw, key, minimum=1)
    return Condition(ConditionKind(key), amount)


def _percent(where: Where, value: object) -> int:
    basis_points = where.decimal(value, "percent", PERCENT_DECIMALS, "5")
    if not 0 < basis_points <= 100 * 100:
        raise where.fail("percent", "must be above 0 and at most 100")
    return basis_points


def _action(where: Where, value: object) -> Action:
    table = where.table(value, "(table)")
    if "kind" not in table:
        raise where.fail("kind", "missing")
    kind = _choice(where, table["kind"], "kind", ActionKind)
    allowed = _ACTION_KEYS[kind]
    where.keys(table, "", allowed, frozenset({"kind"}))
    expiry = where.integer(table["expiry_days"], "expiry_days", minimum=1) if "expiry_days" in table else 0
    if kind is ActionKind.BONUS_MONEY:
        if ("amount" in table) == ("percent" in table):
            raise where.fail("amount", "give exactly one of amount, percent")
        if "amount" in table:
            if "percent_of" in table:
                raise where.fail("percent_of", "only with percent")
            amount = where.price_micros(table["amount"], "amount")
            if amount == 0:
                raise where.fail("amount", "must be above 0")
            return Action(kind, amount_micros=amount, expiry_days=expiry)
        if "percent_of" not in table:
            raise where.fail("percent_of", "missing: trigger_spend or counted_spend")
        percent_of = _choice(where, table["percent_of"], "percent_of", PercentOf)
        return Action(
            kind, percent_basis_points=_percent(where, table["percent"]), percent_of=percent_of, expiry_days=expiry
        )
    if kind is ActionKind.UNIT_ALLOWANCE:
        where.keys(table, "", allowed, frozenset({"unit", "units"}))
        unit = _choice(where, table["unit"], "unit", BucketKind)
        if unit not in _ALLOWANCE_KINDS:
            raise where.fail("unit", f"{unit.value!r} is money: an allowance is seconds, octets or events")
        return Action(
            kind,
            unit_kind=unit,
            units=where.integer(table["units"], "units", minimum=1),
            services=_strings(where, table.get("services", []), "services"),
            expiry_days=expiry,
            cost_micros=where.price_micros(table["cost"], "cost") if "cost" in table else 0,
        )
    where.keys(table, "", allowed, frozenset({"kind", "percent"}))
    percent = _percent(where, table["percent"])
    if kind is ActionKind.INVOICE_DISCOUNT:
        if "target" not in table:
            raise where.fail("target", "missing: service or rentals")
        target = _choice(where, table["target"], "target", DiscountTarget)
        service = where.text(table["service"], "service") if "service" in table else ""
        if (target is DiscountTarget.SERVICE) != bool(service):
            raise where.fail("service", "a discount on a service names it; one on rentals names none")
        return Action(kind, percent_basis_points=percent, target=target, service=service)
    if "service" not in table:
        raise where.fail("service", "missing: the service whose rating it discounts")
    return Action(kind, percent_basis_points=percent, service=where.text(table["service"], "service"))
