"""Reading values out of a rules file (TOML) with errors that name the file, the section and the field.

Theory of operation: a loader walks its document section by section, holding a ``Where`` (the
file and the section); every check raises through ``Where.fail``, so each error reads
``file: section: field: problem`` and an operator can fix the file without reading code. The
error type is the loader's own (``TariffError`` for the tariff book, the catalog's for the
catalog), all of them ``DataFileError``.

Decimal strings become integers exactly (``parse_decimal``): ``"0.12"`` with 6 decimals is
120,000 (micros), ``"19.5"`` with 2 decimals is 1950 (basis points). Integer arithmetic only;
a digit beyond the allowed decimals is an error, never rounded, and TOML floats are refused
outright (``0.1`` as a float is already inexact).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from balance.types import MAX_AMOUNT_MICROS

MICROS_DECIMALS = 6  # 1 unit = 10**6 micros (balance/types.py MICROS_PER_UNIT)

_DECIMAL = re.compile(r"^(\d+)(?:\.(\d+))?$")


class DataFileError(ValueError):
    """A rules file that cannot be loaded; ``str()`` reads ``file: section: field: problem``."""

    def __init__(self, file: str, section: str, field: str, problem: str) -> None:
        super().__init__(f"{file}: {section}: {field}: {problem}")
        self.file = file
        self.section = section
        self.field = field
        self.problem = problem


class TariffError(DataFileError):
    """A tariff file (``config/tariffs.toml``) that cannot be loaded."""


def kind_of(value: object) -> str:
    return type(value).__name__


def parse_decimal(text: str, decimals: int) -> int:
    """A non-negative decimal string as an integer of 10**-decimals units, exactly.

    ``parse_decimal("0.12", 6) == 120_000``; raises ``ValueError`` (the problem) for anything
    that is not digits with an optional fraction of at most ``decimals`` digits.
    """
    match = _DECIMAL.match(text)
    if match is None:
        raise ValueError(f'{text!r} is not a decimal number such as "0.12"')
    whole: str = match[1]
    fraction: str = match[2] or ""
    if len(fraction) > decimals:
        raise ValueError(f"{text!r} has {len(fraction)} decimals; at most {decimals}")
    scale: int = 10**decimals
    return int(whole) * scale + int(fraction.ljust(decimals, "0") or "0")


@dataclass(frozen=True, slots=True)
class Where:
    """The file and section being read: every error is raised through ``fail``."""

    file: str
    section: str
    error: type[DataFileError] = TariffError

    def fail(self, field: str, problem: str) -> DataFileError:
        return self.error(self.file, self.section, field, problem)

    def at(self, section: str) -> Where:
        """The same file, another section."""
        return Where(self.file, section, self.error)

    def table(self, value: object, field: str) -> dict[str, object]:
        if not isinstance(value, dict):
            raise self.fail(field, f"must be a table, not {kind_of(value)}")
        return value

    def keys(self, table: Mapping[str, object], field: str, allowed: frozenset[str], required: frozenset[str]) -> None:
        prefix = f"{field}." if field else ""
        for key in table:
            if key not in allowed:
                raise self.fail(f"{prefix}{key}", f"unknown key (allowed: {', '.join(sorted(allowed))})")
        for key in sorted(required - table.keys()):
            raise self.fail(f"{prefix}{key}", "missing")

    def text(self, value: object, field: str) -> str:
        if not isinstance(value, str):
            raise self.fail(field, f"must be a string, not {kind_of(value)}")
        return value

    def digits(self, value: object, field: str, *, empty: bool = True) -> str:
        text = self.text(value, field)
        if (text or not empty) and not (text.isascii() and text.isdigit()):
            raise self.fail(field, f"{text!r} must be digits 0-9")
        return text

    def integer(self, value: object, field: str, minimum: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(field, f"must be an integer, not {kind_of(value)}")
        if value < minimum:
            raise self.fail(field, f"{value} is below {minimum}")
        return value

    def decimal(self, value: object, field: str, decimals: int, example: str) -> int:
        """A decimal string -> an integer of 10**-decimals units, exactly (``parse_decimal``)."""
        if isinstance(value, float | int) and not isinstance(value, bool):
            raise self.fail(field, f'write it as a string ("{value}"), so it stays exact')
        text = self.text(value, field)
        try:
            return parse_decimal(text, decimals)
        except ValueError:
            if _DECIMAL.match(text) is None:
                raise self.fail(field, f'{text!r} is not a decimal such as "{example}"') from None
            raise self.fail(field, f"{text!r} has more than {decimals} decimals") from None

    def price_micros(self, value: object, field: str) -> int:
        """A decimal string in units of currency -> integer micros, exactly."""
        if isinstance(value, float | int) and not isinstance(value, bool):
            raise self.fail(field, f'write the price as a string ("{value}"), so it stays exact')
        text = self.text(value, field)
        if _DECIMAL.match(text) is None:
            raise self.fail(field, f'{text!r} is not a decimal price such as "0.12"')
        try:
            micros = parse_decimal(text, MICROS_DECIMALS)
        except ValueError:
            decimals = len(text.partition(".")[2])
            raise self.fail(field, f"{text!r} has {decimals} decimals; at most {MICROS_DECIMALS} (micros)") from None
        if micros > MAX_AMOUNT_MICROS:
            raise self.fail(field, f"{text!r} is above the engine's limit of {MAX_AMOUNT_MICROS} micros")
        return micros
