"""The money the simulator believes it was charged, priced from its own usage reports.

Theory of operation: every ``Commit`` the elements recorded is units the OCS applied as used,
with the plan, service and destination they were rated for and the time of the grant they came
from (a reservation keeps the tariff of the moment it was made, balance/RULES.md). The price of
each commit is asked from the OCS's rating explanation (POST /rate), which states what the
engine charges for that many units; the engine itself is not consulted, so a commit priced
wrongly by the Lua scripts, charged twice, or lost shows up as a difference against the
balances.

Unit allowances are consumed before money (RULES.md "Drawing order"): a commit on the data
rating group of a line with a data allowance takes ``min(units, allowance left)`` from it and
only the rest is priced. This is exact because a line runs one session at a time (the scenario
guarantees it), so one reservation at most holds its allowance, and each commit is priced on
its own (the engine rounds every commit to the tariff's blocks separately).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence

from simulator.http_api import OcsApi
from simulator.population import DATA_RATING_GROUP, SimulatedSubscriber
from simulator.records import Commit

PRICING_CONCURRENCY = 16  # /rate calls in flight after the run

PriceKey = tuple[str, str, int | None, str | None, int, int]  # plan, context, group, called, at, units


def money_units(commits: Iterable[Commit], subscribers: Sequence[SimulatedSubscriber]) -> list[tuple[Commit, int]]:
    """Each commit with the units left to pay for once the data allowances have covered theirs."""
    allowance_left = {subscriber.account_id: subscriber.data_allowance_octets for subscriber in subscribers}
    priced: list[tuple[Commit, int]] = []
    for commit in commits:
        units = commit.units
        left = allowance_left.get(commit.account_id, 0)
        if commit.rating_group == DATA_RATING_GROUP and left:
            covered = min(units, left)
            allowance_left[commit.account_id] = left - covered
            units -= covered
        priced.append((commit, units))
    return priced


async def believed_charges(
    api: OcsApi, commits: Sequence[Commit], subscribers: Sequence[SimulatedSubscriber]
) -> dict[str, int]:
    """Micros per account that the simulator's own usage should have cost."""
    to_price = [(commit, units) for commit, units in money_units(commits, subscribers) if units]
    keys: set[PriceKey] = {_key(commit, units) for commit, units in to_price}
    limit = asyncio.Semaphore(PRICING_CONCURRENCY)
    prices: dict[PriceKey, int] = {}

    async def price(key: PriceKey) -> None:
        plan, context, rating_group, called, at_seconds, units = key
        async with limit:
            prices[key] = await api.price(plan, context, rating_group, called, at_seconds, units)

    await asyncio.gather(*(price(key) for key in keys))
    charges = {subscriber.account_id: 0 for subscriber in subscribers}
    for commit, units in to_price:
        charges[commit.account_id] = charges.get(commit.account_id, 0) + prices[_key(commit, units)]
    return charges


def _key(commit: Commit, units: int) -> PriceKey:
    return (commit.plan, commit.context, commit.rating_group, commit.called, commit.granted_at_seconds, units)
