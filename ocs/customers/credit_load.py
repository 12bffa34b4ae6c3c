"""Load and validate the credit check rules (``config/credit_classes.toml``) into ``CreditRules``.

Theory of operation: the TOML document is read once at startup and checked completely before
anything is built; the first problem raises ``CreditRulesError`` naming the file, the table
(``individual``, ``classes[1]``, ...) and the field, so an operator fixes the file without reading
code. Every table refuses keys it does not know: a misspelt factor must not silently score 0.

- A numeric factor is an array of steps ``{ from = N, points = P }``: strictly ascending, the first
  from 0, so every value has points. The open debt steps start at amounts (``from = "100.00"``).
- A categorical factor gives points for every value the code knows (employment, income band), no
  more and no fewer: a new value in the code must be scored by the operator, not default to 0.
- Amounts (credit limits, deposits, debt steps) are decimal strings in units of ``currency``,
  converted to integer micros exactly (``"0.12"`` is 120,000 micros); floats and a seventh
  decimal are refused (1 unit = 1,000,000 micros, balance/types.py), as in the tariff file.
- ``[[classes]]`` are ordered best first with strictly falling ``min_points``; the last one has
  none and takes every lower score. A postpaid class needs a credit limit above 0, a prepaid-only
  class may not have one.

The file format is documented by example in ``config/credit_classes.toml``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar

from balance.types import MAX_AMOUNT_MICROS, MICROS_PER_UNIT
from ocs.customers.credit import (
    CreditClass,
    CreditRules,
    Employment,
    HistoryRules,
    IncomeBand,
    IndividualRules,
    Offer,
    OfferKind,
    OrganizationRules,
    Step,
    StepFactor,
)

_MICROS_DECIMALS = 6  # balance/types.py MICROS_PER_UNIT = 10**6
_AMOUNT = re.compile(r"^(\d+)(?:\.(\d+))?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")  # ISO 4217 alphabetic code
_CATEGORY = TypeVar("_CATEGORY", bound=StrEnum)


class CreditRulesError(ValueError):
    """A credit rules file that cannot be loaded; ``str()`` reads ``file: table: field: problem``."""

    def __init__(self, file: str, table: str, field: str, problem: str) -> None:
        super().__init__(f"{file}: {table}: {field}: {problem}")
        self.file = file
        self.table = table
        self.field = field
        self.problem = problem


class _Table:
    """One TOML table being read: every value is taken through it, every error raised by it."""

    def __init__(
        self,
        file: str,
        name: str,
        value: object,
        keys: tuple[frozenset[str], frozenset[str]],
        prefix: str = "",
    ) -> None:
        """``keys``: those allowed and those required; ``prefix`` goes before every field named in
        an error (``age[2].``: an inline table within the table ``name``)."""
        self.file = file
        self.name = name
        self.prefix = prefix
        allowed, required = keys
        if not isinstance(value, dict):
            field = prefix.rstrip(".") or "(table)"
            raise CreditRulesError(file, name, field, f"must be a table, not {type(value).__name__}")
        self.values: dict[str, object] = value
        for key in value:
            if key not in allowed:
                raise self.fail(key, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required - value.keys()):
            raise self.fail(key, "missing")

    def fail(self, field: str, problem: str) -> CreditRulesError:
        return CreditRulesError(self.file, self.name, f"{self.prefix}{field}", problem)

    def sub(self, key: str, keys: tuple[frozenset[str], frozenset[str]]) -> _Table:
        name = key if self.name == _TOP_LEVEL else f"{self.name}.{key}"
        return _Table(self.file, name, self.values[key], keys)

    def integer(self, key: str, *, minimum: int | None = None) -> int:
        value = self.values[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"must be an integer, not {type(value).__name__}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"{value} is below {minimum}")
        return value

    def text(self, key: str, default: str | None = None) -> str:
        value = self.values.get(key, default)
        if not isinstance(value, str):
            raise self.fail(key, f"must be a string, not {type(value).__name__}")
        return value

    def amount_micros(self, key: str) -> int:
        """A decimal string in units of currency -> integer micros, exactly."""
        value = self.values[key]
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise self.fail(key, f'write the amount as a string ("{value}"), so it stays exact')
        text = value if isinstance(value, str) else ""
        match = _AMOUNT.match(text)
        if match is None:
            raise self.fail(key, f'{value!r} is not a decimal amount such as "50.00"')
        whole, fraction = match[1], match[2] or ""
        if len(fraction) > _MICROS_DECIMALS:
            raise self.fail(key, f"{text!r} has more than {_MICROS_DECIMALS} decimals (micros)")
        micros = int(whole) * MICROS_PER_UNIT + int(fraction.ljust(_MICROS_DECIMALS, "0"))
        if micros > MAX_AMOUNT_MICROS:
            raise self.fail(key, f"{text!r} is above the engine's limit of {MAX_AMOUNT_MICROS} micros")
        return micros

    def steps(self, key: str, *, money: bool = False) -> StepFactor:
        raw = self.values[key]
        if not isinstance(raw, list) or not raw:
            raise self.fail(key, "must be a non-empty array of steps such as [{ from = 0, points = 0 }]")
        steps: list[Step] = []
        for index, raw_step in enumerate(raw):
            step = _Table(self.file, self.name, raw_step, (_STEP_KEYS, _STEP_KEYS), f"{key}[{index}].")
            start = step.amount_micros("from") if money else step.integer("from")
            points = step.integer("points")
            if not steps and start != 0:
                raise step.fail("from", "the first step starts at 0, so every value has points")
            if steps and start <= steps[-1].start:
                raise step.fail("from", "steps must start at strictly ascending values")
            steps.append(Step(start, points))
        return StepFactor(tuple(steps))

    def categories(self, key: str, kind: type[_CATEGORY]) -> Mapping[_CATEGORY, int]:
        names = frozenset(member.value for member in kind)
        table = self.sub(key, (names, names))
        return MappingProxyType({member: table.integer(member.value) for member in kind})


_TOP_LEVEL = "(top level)"
_STEP_KEYS = frozenset({"from", "points"})
_TOP_KEYS = frozenset({"currency", "individual", "organization", "history", "classes"})
_INDIVIDUAL_KEYS = frozenset({"age", "employment", "income_band", "years_at_address"})
_ORGANIZATION_KEYS = frozenset({"years_trading", "registration", "employees"})
_REGISTRATION_KEYS = frozenset({"present", "absent"})
_HISTORY_KEYS = frozenset({"invoices", "worst_days_late", "open_debt"})
_CLASS_KEYS = frozenset({"name", "description", "min_points", "offer", "credit_limit", "deposit", "plans"})


def load_credit_rules(path: str | Path) -> CreditRules:
    """Read and validate a credit rules file; raises ``CreditRulesError`` on the first problem."""
    file = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CreditRulesError(file, "(file)", "(file)", f"cannot be read: {error}") from None
    return parse_credit_rules(content, file)


def parse_credit_rules(content: str, file: str = "<string>") -> CreditRules:
    """Validate TOML text into ``CreditRules``; ``file`` names the source in errors."""
    try:
        document = tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        raise CreditRulesError(file, _TOP_LEVEL, "(syntax)", str(error)) from None
    top = _Table(file, _TOP_LEVEL, document, (_TOP_KEYS, _TOP_KEYS))
    currency = top.text("currency")
    if not _CURRENCY.match(currency):
        raise top.fail("currency", f'{currency!r} is not an ISO 4217 code such as "EUR"')
    individual = top.sub("individual", (_INDIVIDUAL_KEYS, _INDIVIDUAL_KEYS))
    organization = top.sub("organization", (_ORGANIZATION_KEYS, _ORGANIZATION_KEYS))
    registration = organization.sub("registration", (_REGISTRATION_KEYS, _REGISTRATION_KEYS))
    history = top.sub("history", (_HISTORY_KEYS, _HISTORY_KEYS))
    return CreditRules(
        file=file,
        currency=currency,
        individual=IndividualRules(
            age=individual.steps("age"),
            employment=individual.categories("employment", Employment),
            income_band=individual.categories("income_band", IncomeBand),
            years_at_address=individual.steps("years_at_address"),
        ),
        organization=OrganizationRules(
            years_trading=organization.steps("years_trading"),
            registration_present=registration.integer("present"),
            registration_absent=registration.integer("absent"),
            employees=organization.steps("employees"),
        ),
        history=HistoryRules(
            invoices=history.integer("invoices", minimum=1),
            worst_days_late=history.steps("worst_days_late"),
            open_debt=history.steps("open_debt", money=True),
        ),
        classes=_classes(file, document["classes"]),
    )


def _classes(file: str, raw: object) -> tuple[CreditClass, ...]:
    if not isinstance(raw, list) or not raw:
        raise CreditRulesError(file, "classes", "(table)", "must be a non-empty array of tables ([[classes]])")
    classes: list[CreditClass] = []
    for index, raw_class in enumerate(raw):
        last = index == len(raw) - 1
        required = frozenset({"name", "offer"} | (set() if last else {"min_points"}))
        table = _Table(file, f"classes[{index}]", raw_class, (_CLASS_KEYS, required))
        name = table.text("name")
        if not name or name in {credit_class.name for credit_class in classes}:
            raise table.fail("name", f"{name!r} must be a unique, non-empty class name")
        minimum = None
        if last and "min_points" in table.values:
            raise table.fail("min_points", "the last class takes every lower score: it has no min_points")
        if not last:
            minimum = table.integer("min_points")
            previous = classes[-1].minimum_points if classes else None
            if previous is not None and minimum >= previous:
                raise table.fail("min_points", f"{minimum} must be below the previous class's {previous} (best first)")
        classes.append(CreditClass(name, minimum, _offer(table), table.text("description", "")))
    return tuple(classes)


def _offer(table: _Table) -> Offer:
    text = table.text("offer")
    kinds = {kind.value: kind for kind in OfferKind}
    if text not in kinds:
        raise table.fail("offer", f"{text!r} is not one of {', '.join(kinds)}")
    kind = kinds[text]
    limit = table.amount_micros("credit_limit") if "credit_limit" in table.values else 0
    if kind is OfferKind.POSTPAID and limit == 0:
        raise table.fail("credit_limit", "a postpaid class needs a credit limit above 0")
    if kind is OfferKind.PREPAID_ONLY and limit != 0:
        raise table.fail("credit_limit", "a prepaid-only class extends no credit: remove it")
    deposit = table.amount_micros("deposit") if "deposit" in table.values else 0
    return Offer(kind, limit, deposit, _plans(table))


def _plans(table: _Table) -> tuple[str, ...] | None:
    """The plans a class's lines may take (a change_plan order item is refused another one)."""
    if "plans" not in table.values:
        return None
    raw = table.values["plans"]
    if not isinstance(raw, list) or not raw or not all(isinstance(plan, str) and plan for plan in raw):
        raise table.fail("plans", "must be a non-empty array of tariff plan names")
    return tuple(raw)
