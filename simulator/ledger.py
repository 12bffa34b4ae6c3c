"""The money the simulator believes it was charged, priced from its own usage reports.

Theory of operation: every ``Commit`` the elements recorded is units the OCS applied as used,
with the plan, service and destination they were rated for and the time of the grant they came
from (a reservation keeps the tariff of the moment it was made, balance/RULES.md). The price of
each commit is asked from the OCS's rating (POST /rate), which states what the
engine charges for that many units; the engine itself is not consulted, so a commit priced
wrongly by the Lua scripts, charged twice, or lost shows up as a difference against the
balances.

Unit allowances are consumed before money (RULES.md "Drawing order"): a commit on the data
rating group of a line with a data allowance takes ``min(units, allowance left)`` from it and
only the rest is priced. This is exact because a line runs one session at a time (the scenario
guarantees it), so one reservation at most holds its allowance, and each commit is priced on
its own (the engine rounds every commit to the tariff's blocks separately).

A grant across a switch of tariff (Tariff-Time-Change, RFC 4006 section 5.1.1) was used on both
sides of it, and the element itemised its report (Tariff-Change-Usage, section 8.27). RULES.md
"Tariff change" prices such a commit once: the allowance covers the first units; of the ``M``
money units the first ``Mb = clamp(before - allowance units, 0, M)`` are at the tariff of the
grant and the rest, with the rounding of the usage (``C = charged(M)``), at the tariff from the
switch on: ``ceil((Mb x price + (C - Mb) x after price) / per)``, one rounding to the micro.
When one side has every unit this is the plain cost at that side's tariff, which POST /rate
states. When both have some, /rate (a cost for N units at one moment) cannot state it: the
tariff of each side comes with its quote, checked against the quote's own cost (``C`` at its
price must cost what the server says), and the two are combined here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from simulator.http_api import OcsApi, RateQuote
from simulator.population import DATA_RATING_GROUP, SimulatedSubscriber
from simulator.records import Commit

PRICING_CONCURRENCY = 16  # /rate calls in flight after the run

QuoteKey = tuple[str, str, int | None, str | None, int, int]  # plan, context, group, called, at, units


class LedgerError(RuntimeError):
    """The OCS's rating answer could not be used to price a commit."""


@dataclass(frozen=True, slots=True)
class MoneyUnits:
    """A commit's units left to pay for once its allowance covered theirs, and how many of
    those were used before the grant's tariff change (all of them without one)."""

    commit: Commit
    units: int
    before: int


def money_units(commits: Iterable[Commit], subscribers: Sequence[SimulatedSubscriber]) -> list[MoneyUnits]:
    """Each commit with the units left to pay for once the data allowances have covered theirs."""
    allowance_left = {subscriber.account_id: subscriber.data_allowance_octets for subscriber in subscribers}
    priced: list[MoneyUnits] = []
    for commit in commits:
        units = commit.units
        left = allowance_left.get(commit.account_id, 0)
        covered = 0
        if commit.rating_group == DATA_RATING_GROUP and left:
            covered = min(units, left)
            allowance_left[commit.account_id] = left - covered
            units -= covered
        before = units
        if commit.tariff_change_at_seconds is not None:
            # Allowances cover the first units used (RULES.md "Tariff change").
            before = min(max(commit.units_before_change - covered, 0), units)
        priced.append(MoneyUnits(commit, units, before))
    return priced


def _quote_keys(item: MoneyUnits) -> tuple[QuoteKey, ...]:
    """The quotes pricing ``item``: at the grant's moment, at the switch, or both."""
    commit = item.commit
    where = (commit.plan, commit.context, commit.rating_group, commit.called)
    granted = (*where, commit.granted_at_seconds, item.units)
    change_at = commit.tariff_change_at_seconds
    if change_at is None or item.before == item.units:
        return (granted,)
    after = (*where, change_at, item.units)
    return (after,) if item.before == 0 else (granted, after)


@dataclass(frozen=True, slots=True)
class PricedCommit:
    """A commit with what it cost (one usage record's micros) and the service it was rated as."""

    commit: Commit
    micros: int
    service: str


async def priced_commits(
    api: OcsApi, commits: Sequence[Commit], subscribers: Sequence[SimulatedSubscriber]
) -> list[PricedCommit]:
    """Each commit with money units to pay, priced (commits an allowance covered cost nothing and
    are left out)."""
    to_price = [item for item in money_units(commits, subscribers) if item.units]
    keys: set[QuoteKey] = {key for item in to_price for key in _quote_keys(item)}
    limit = asyncio.Semaphore(PRICING_CONCURRENCY)
    quotes: dict[QuoteKey, RateQuote] = {}

    async def quote(key: QuoteKey) -> None:
        async with limit:
            quotes[key] = await api.quote(*key)

    await asyncio.gather(*(quote(key) for key in keys))
    priced: list[PricedCommit] = []
    for item in to_price:
        sides = [quotes[key] for key in _quote_keys(item)]
        micros = sides[0].cost_micros if len(sides) == 1 else cost_across(item.before, sides[0], sides[1])
        priced.append(PricedCommit(item.commit, micros, sides[0].service))
    return priced


def charges_of(priced: Iterable[PricedCommit], subscribers: Sequence[SimulatedSubscriber]) -> dict[str, int]:
    """Micros per account of the priced commits (every subscriber, 0 when it used nothing)."""
    charges = {subscriber.account_id: 0 for subscriber in subscribers}
    for item in priced:
        account_id = item.commit.account_id
        charges[account_id] = charges.get(account_id, 0) + item.micros
    return charges


async def believed_charges(
    api: OcsApi, commits: Sequence[Commit], subscribers: Sequence[SimulatedSubscriber]
) -> dict[str, int]:
    """Micros per account that the simulator's own usage should have cost."""
    return charges_of(await priced_commits(api, commits, subscribers), subscribers)


def cost_across(before_units: int, before: RateQuote, after: RateQuote) -> int:
    """Micros for one usage across a tariff change (module docstring): ``before`` and ``after``
    quote all its money units at the tariff of the grant and at the one after the switch."""
    price_micros, per_units = tariff_price(before)
    after_price_micros, after_per_units = tariff_price(after)
    charged_units = before.charged_units
    if after_per_units != per_units or after.charged_units != charged_units:
        raise LedgerError(f"the tariffs before and after a switch differ in more than price: {before} / {after}")
    numerator = before_units * price_micros + (charged_units - before_units) * after_price_micros
    return -(-numerator // per_units)


def tariff_price(quote: RateQuote) -> tuple[int, int]:
    """(price in micros, per how many units) of the tariff that ``quote`` was rated with, checked
    against its cost."""
    price_micros, per_units = quote.price_micros, quote.per_units
    if per_units <= 0 or -(-quote.charged_units * price_micros // per_units) != quote.cost_micros:
        raise LedgerError(f"the tariff of {quote} does not give its quoted cost")
    return price_micros, per_units
