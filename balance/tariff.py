"""Tariff arithmetic: how many units are charged, what they cost, and how many units money buys.

Theory of operation: three pure integer functions, written exactly as balance/RULES.md "Units and
arithmetic" states them, shared by the reference model and (for validation) the Redis store.

- ``charged(U)``: 0 for U = 0, else ``max(first_units, ceil(U / block_units) * block_units)``.
- ``cost(U)``: ``floor(C / per) * price + ceil((C mod per) * price / per)`` with ``C = charged(U)``,
  which equals ``ceil(C * price / per)``; written in the split form so the Lua scripts can follow
  it line by line.
- ``affordable(M)``: the largest U that is a multiple of ``block_units``, at least
  ``first_units``, with ``cost(U) <= M``; 0 if not even the first units are affordable.

For such a U, ``charged(U) == U`` and ``cost(U) <= M`` is ``U * price <= M * per`` (``ceil(x) <= M``
holds exactly when ``x <= M`` for an integer M), so the largest one is found by one division,
not a search. Python integers are exact at any size; the bound of 2^53 that the Lua side lives
under is checked by ``is_valid`` on inputs, not here.
"""

from __future__ import annotations

from balance.types import MAX_AMOUNT_MICROS, MAX_SERVICE_UNITS, Tariff


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def is_valid(tariff: Tariff) -> bool:
    """True when every field is inside the engine's limits (balance/types.py, RULES.md "Units")."""
    return (
        0 <= tariff.price_micros <= MAX_AMOUNT_MICROS
        and 1 <= tariff.per_units <= MAX_SERVICE_UNITS
        and 1 <= tariff.block_units <= MAX_SERVICE_UNITS
        and 0 <= tariff.first_units <= MAX_SERVICE_UNITS
    )


def charged(units: int, tariff: Tariff) -> int:
    """The units a usage of ``units`` is charged as (also: a requested amount rounded for granting)."""
    if units <= 0:
        return 0
    # RULES.md ambiguity: RULES.md says max(first, ceil(U / block) * block); the Tariff docstring in
    # balance/types.py says "at least first_units, then rounded up to a multiple of block_units",
    # which differs when first_units is not a multiple of block_units (first 90, block 60, U 50:
    # 90 here, 120 there). RULES.md is implemented; real tariffs (60/60, 60/1, 30/6) agree on both.
    return max(tariff.first_units, _ceil_div(units, tariff.block_units) * tariff.block_units)


def cost(units: int, tariff: Tariff) -> int:
    """Micros charged for a usage of ``units``, rounded up to a whole micro."""
    charged_units = charged(units, tariff)
    whole_periods, rest_units = divmod(charged_units, tariff.per_units)
    return whole_periods * tariff.price_micros + _ceil_div(rest_units * tariff.price_micros, tariff.per_units)


def cost_across(before_units: int, after_units: int, tariff: Tariff, after_price_micros: int) -> int:
    """Micros for one usage of ``before_units`` then ``after_units`` across a tariff change
    (RULES.md "Tariff change"): charged once, as ``charged(before + after)``; the before units at
    the tariff's price, the rest of the charged units (the after units and the rounding, which
    belongs to the end of the usage) at ``after_price_micros``; rounded up to a whole micro once.
    With no after units it is ``cost(before)``: the rounding stays at the price it was used at.
    """
    total = before_units + after_units
    if after_units <= 0:
        return cost(total, tariff)
    charged_units = charged(total, tariff)
    numerator = before_units * tariff.price_micros + (charged_units - before_units) * after_price_micros
    return _ceil_div(numerator, tariff.per_units)


def affordable(money_micros: int, tariff: Tariff) -> int:
    """The most units (a multiple of ``block_units``, at least ``first_units``) ``money_micros`` pays for."""
    if tariff.price_micros == 0:
        # RULES.md ambiguity: "a price of 0 affords everything" has no number; the largest
        # grantable amount is the per-item limit of balance/types.py, rounded down to a block.
        return MAX_SERVICE_UNITS // tariff.block_units * tariff.block_units
    if money_micros <= 0:
        return 0
    blocks = money_micros * tariff.per_units // (tariff.block_units * tariff.price_micros)
    units = blocks * tariff.block_units
    return units if units >= tariff.first_units else 0
