"""Currency minor units (ISO 4217) and the rounding of invoice amounts to them.

Theory of operation: the engine, the spool and the bill run price in integer micros (1 unit =
1,000,000), finer than any currency's coin; an invoice is written in the currency's minor unit
(cents for EUR and USD, whole yen for JPY, fils for KWD). ``minor_unit_micros`` is that unit in
micros, from the currency's ISO 4217 exponent: 2 for most currencies, the exceptions in
``EXPONENTS`` (the ISO 4217 list's codes whose minor unit is not the hundredth; a currency not
listed is taken at 2, as nearly all are).

``round_to_minor_unit`` rounds half away from zero ("commercial rounding": 0.005 EUR is 0.01 EUR,
-0.005 EUR is -0.01 EUR). Chosen over half-even because it is what invoices and tax authorities
use and what a customer recomputes with a calculator (the euro's rules, Council Regulation (EC)
No 1103/97 article 5, round a half up; DIN 1333), and symmetric, so a discount rounds as the
charge it takes from. Half-even's advantage, no drift over many roundings, does not matter here:
each line is rounded once, and what rounding moved is kept on the line (``priced`` amounts beside
the rounded ones, ``ocs.billing.invoices``), so the ledger still ties out to the micro.
"""

from __future__ import annotations

MICROS_PER_UNIT = 1_000_000
DEFAULT_EXPONENT = 2
# ISO 4217 currencies whose minor unit is not 1/100 (the exponent is the decimals written).
ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
FOUR_DECIMALS = "CLF UYW"
EXPONENTS: dict[str, int] = {
    **dict.fromkeys(ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(THREE_DECIMALS.split(), 3),
    **dict.fromkeys(FOUR_DECIMALS.split(), 4),
}


def exponent(currency: str) -> int:
    """The decimals of ``currency``'s minor unit (ISO 4217): 2 unless ``EXPONENTS`` says."""
    return EXPONENTS.get(currency.upper(), DEFAULT_EXPONENT)


def minor_unit_micros(currency: str) -> int:
    """The currency's minor unit in micros: 10,000 for EUR, 1,000,000 for JPY, 1,000 for KWD."""
    return int(MICROS_PER_UNIT // 10 ** exponent(currency))


def round_to_minor_unit(micros: int, currency: str) -> int:
    """``micros`` rounded to a whole number of the currency's minor units, half away from zero."""
    return round_to_unit(micros, minor_unit_micros(currency))


def round_to_unit(micros: int, unit: int) -> int:
    """``micros`` rounded to a whole number of ``unit`` (``minor_unit_micros``), half away from zero."""
    units, rest = divmod(abs(micros), unit)
    if 2 * rest >= unit:
        units += 1
    return units * unit if micros >= 0 else -units * unit
