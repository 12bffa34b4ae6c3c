"""The dunning ladders as data (``config/dunning.toml``): frozen values, the loader, and the
reminder letters rendered from their templates.

Theory of operation: the TOML document is read once at startup and checked completely before
anything is built; the first problem raises ``DunningRulesError`` naming the file, the section
(``ladders.B.steps[2]``, ``letters.friendly``) and the field. Every table refuses keys it does not
know: a misspelt ``min_amount`` must not silently dun every cent.

A ladder is the steps of one credit class, ordered by ``days`` past due (strictly ascending, so
"the next step" is never ambiguous); each step has a minimum amount overdue (integer micros, read
exactly from a decimal string) and an action. The ladder ``default`` is required: it serves a
customer with no credit class, or with a class the file has no ladder for. The ladder's lift
threshold is the smallest minimum amount of its restrict and bar steps: an overdue amount below
it no longer justifies any restriction (``Ladder.lift_below_micros``).

Letters are ``string.Template`` texts (``$amount``, ``$due_date``, ...) rather than Jinja2: a
reminder is a few fixed sentences with values put in, with no loops or conditions, and the
standard library's templates cannot run code, need no new dependency, and let the loader refuse a
placeholder it does not know (``Template.get_identifiers``) instead of failing on the day the
letter is sent. The invoice documents (HTML/PDF) have their own renderer.
"""

from __future__ import annotations

import enum
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from types import MappingProxyType

from ocs.rating.load_text import DataFileError, Where, kind_of

DEFAULT_LADDER = "default"
PLACEHOLDERS = frozenset(
    {"customer_id", "billing_account_id", "amount", "currency", "days_past_due", "due_date", "invoice", "date"}
)
_TOP_KEYS = frozenset({"exempt_segments", "letters", "ladders"})
_LETTER_KEYS = frozenset({"subject", "body"})
_LADDER_KEYS = frozenset({"steps"})
_STEP_KEYS = frozenset({"days", "min_amount", "action", "template"})
_STEP_REQUIRED = frozenset({"days", "min_amount", "action"})


class DunningRulesError(DataFileError):
    """A dunning file that cannot be loaded; ``str()`` reads ``file: section: field: problem``."""


class Action(enum.StrEnum):
    LETTER = "letter"
    RESTRICT = "restrict"
    BAR = "bar"
    TERMINATE = "terminate"


ENFORCEMENT = frozenset({Action.RESTRICT, Action.BAR})  # what a payment lifts


@dataclass(frozen=True, slots=True)
class Letter:
    name: str
    subject: Template
    body: Template

    def render(self, values: Mapping[str, str]) -> tuple[str, str]:
        """The subject and the body with ``values`` put in (every placeholder was checked at load)."""
        return self.subject.substitute(values), self.body.substitute(values).strip() + "\n"


@dataclass(frozen=True, slots=True)
class LadderStep:
    position: int  # 1-based, in the ladder's order
    days: int  # days past the oldest unpaid due date
    min_amount_micros: int  # at least this much overdue
    action: Action
    template: str | None  # the letter's, for ``letter``


@dataclass(frozen=True, slots=True)
class Ladder:
    name: str
    steps: tuple[LadderStep, ...]

    @property
    def lift_below_micros(self) -> int:
        """Overdue below this lifts a restriction or a bar (the module docstring)."""
        amounts = [step.min_amount_micros for step in self.steps if step.action in ENFORCEMENT]
        return min(amounts, default=1)

    def due(self, days_past_due: int, overdue_micros: int) -> tuple[LadderStep, ...]:
        """The steps due at these days and this amount, in order."""
        return tuple(
            step for step in self.steps if days_past_due >= step.days and overdue_micros >= step.min_amount_micros
        )


@dataclass(frozen=True, slots=True)
class DunningRules:
    ladders: Mapping[str, Ladder]
    letters: Mapping[str, Letter]
    exempt_segments: frozenset[str]

    def ladder_for(self, credit_class: str | None) -> Ladder:
        return self.ladders.get(credit_class or DEFAULT_LADDER, self.ladders[DEFAULT_LADDER])


def load_dunning_rules(path: str | Path) -> DunningRules:
    """Read and validate a dunning file; raises ``DunningRulesError`` on the first problem."""
    file = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise DunningRulesError(file, "(file)", "(file)", str(error)) from None
    return parse_dunning_rules(content, file)


def parse_dunning_rules(content: str, file: str = "<string>") -> DunningRules:
    where = Where(file, "(top level)", DunningRulesError)
    try:
        document = tomllib.loads(content)
    except tomllib.TOMLDecodeError as error:
        raise where.fail("(syntax)", str(error)) from None
    where.keys(document, "", _TOP_KEYS, frozenset({"ladders"}))
    letters = {
        name: _letter(where.at(f"letters.{name}"), name, value)
        for name, value in where.table(document.get("letters", {}), "letters").items()
    }
    ladders = {
        name: _ladder(where.at(f"ladders.{name}"), name, value, letters)
        for name, value in where.table(document["ladders"], "ladders").items()
    }
    if DEFAULT_LADDER not in ladders:
        raise where.at("ladders").fail(DEFAULT_LADDER, "missing: the ladder of customers with no credit class")
    segments = document.get("exempt_segments", [])
    if not isinstance(segments, list):
        raise where.fail("exempt_segments", f"must be a list of strings, not {kind_of(segments)}")
    exempt = frozenset(where.text(segment, f"exempt_segments[{index}]") for index, segment in enumerate(segments))
    return DunningRules(MappingProxyType(ladders), MappingProxyType(letters), exempt)


def _letter(where: Where, name: str, value: object) -> Letter:
    table = where.table(value, "(table)")
    where.keys(table, "", _LETTER_KEYS, _LETTER_KEYS)
    templates = {key: Template(where.text(table[key], key)) for key in ("subject", "body")}
    for key, template in templates.items():
        if not template.is_valid():
            raise where.fail(key, "a $ that is not a placeholder (write $$ for a dollar sign)")
        unknown = sorted(set(template.get_identifiers()) - PLACEHOLDERS)
        if unknown:
            raise where.fail(key, f"unknown placeholder ${unknown[0]} (known: {', '.join(sorted(PLACEHOLDERS))})")
    return Letter(name, templates["subject"], templates["body"])


def _ladder(where: Where, name: str, value: object, letters: Mapping[str, Letter]) -> Ladder:
    table = where.table(value, "(table)")
    where.keys(table, "", _LADDER_KEYS, _LADDER_KEYS)
    raw = table["steps"]
    if not isinstance(raw, list) or not raw:
        raise where.fail("steps", "must be a non-empty array of tables ([[ladders.NAME.steps]])")
    steps: list[LadderStep] = []
    for index, item in enumerate(raw, start=1):
        step = _step(where.at(f"ladders.{name}.steps[{index}]"), index, item, letters)
        if steps and step.days <= steps[-1].days:
            raise where.at(f"ladders.{name}.steps[{index}]").fail(
                "days", f"{step.days} is not after the step before ({steps[-1].days}): steps ascend by days"
            )
        steps.append(step)
    return Ladder(name, tuple(steps))


def _step(where: Where, position: int, value: object, letters: Mapping[str, Letter]) -> LadderStep:
    table = where.table(value, "(table)")
    where.keys(table, "", _STEP_KEYS, _STEP_REQUIRED)
    days = where.integer(table["days"], "days", minimum=1)
    amount = where.price_micros(table["min_amount"], "min_amount")
    if amount == 0:
        raise where.fail("min_amount", "must be above 0 (a settled account is not dunned)")
    action_text = where.text(table["action"], "action")
    try:
        action = Action(action_text)
    except ValueError:
        allowed = ", ".join(item.value for item in Action)
        raise where.fail("action", f"{action_text!r} is not an action ({allowed})") from None
    template: str | None = None
    if action is Action.LETTER:
        if "template" not in table:
            raise where.fail("template", "missing: a letter names its template")
        template = where.text(table["template"], "template")
        if template not in letters:
            raise where.fail("template", f"no [letters.{template}] in this file")
    elif "template" in table:
        raise where.fail("template", f"only a letter has a template, not {action.value}")
    return LadderStep(position, days, amount, action, template)
