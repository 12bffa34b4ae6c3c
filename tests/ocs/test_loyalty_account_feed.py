"""Top-ups made through the API and status changes reach the loyalty programmes as ``top_up`` and
``lifecycle`` events: the whole server on a private real Redis and a real SQLite database."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import aiohttp
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.embedded import EmbeddedRedis
from balance.store import BalanceStore
from balance.types import AccountStatus, BucketKind
from ocs.config import LoyaltySettings
from ocs.events import AccountEvents, BalanceChanged, StatusChanged
from ocs.loyalty.account_feed import AccountFeed
from ocs.loyalty.engine import LoyaltyEngine
from ocs.loyalty.rules_load import parse_loyalty_rules
from tests.balance.conftest import embedded_redis
from tests.conftest import ADMIN_HEADERS
from tests.ocs.conftest import server_settings, server_with
from tests.ocs.test_loyalty_engine import EUR, applications, audit, buckets, member
from tests.ocs.test_spool import engine, store

__all__ = ["embedded_redis", "engine", "store"]

RULES = """
[[programmes]]
id = "account_events"
name = "Top-ups and activations"
valid_from = 2026-01-01

[[programmes.rules]]
id = "top_up_back"
event = "top_up"
counter = { period = "month", measure = "events" }
condition = { every = 1 }
action = { kind = "bonus_money", percent = "10", percent_of = "trigger_spend" }

[[programmes.rules]]
id = "welcome_back"
event = "lifecycle"
filters = { services = ["active"] }
counter = { period = "month", measure = "events" }
condition = { every = 1 }
action = { kind = "bonus_money", amount = "3.00" }
"""


async def test_a_top_up_through_the_api_and_an_activation_credit_their_programmes_once(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    rules_path = tmp_path / "loyalty.toml"
    rules_path.write_text(RULES)
    settings = server_settings(embedded_redis.url, tmp_path / "data" / "spool.sqlite3")
    settings = replace(settings, loyalty=LoyaltySettings(enabled=True, rules=str(rules_path)))
    async with server_with(settings) as running:
        state = running.state
        assert state.store is not None and state.database is not None and state.http is not None
        assert state.loyalty is not None and state.loyalty_accounts is not None
        await member(state.database, state.store, "C1", ["L1"])
        url = f"http://127.0.0.1:{state.http.port}/subscribers/L1/topups"
        async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
            for expected in (201, 200):  # the second a replay of the same top-up id
                async with session.post(url, json={"id": "shop-1", "amount": "20.00"}) as response:
                    assert response.status == expected, await response.text()
        await state.loyalty_accounts.drain()
        state.events.publish(StatusChanged("L1", AccountStatus.ACTIVE, AccountStatus.SUSPENDED))
        state.events.publish(StatusChanged("L1", AccountStatus.SUSPENDED, AccountStatus.ACTIVE))
        await state.loyalty_accounts.drain()
        await state.loyalty.settle()
        assert (await buckets(state.store, "L1"))[BucketKind.BONUS] == 2 * EUR + 3 * EUR
        found = sorted(
            (row["rule_id"], row["trigger_kind"], row["state"]) for row in await applications(state.database)
        )
        assert found == [("top_up_back", "top_up", "credited"), ("welcome_back", "lifecycle", "credited")]
        [top_up] = [row for row in await applications(state.database) if row["trigger_kind"] == "top_up"]
        assert top_up["trigger_id"] == "top_up:L1:shop-1"
        assert await audit(state.database) == []


async def test_a_process_not_crediting_feeds_nothing_and_its_own_bonus_is_not_fed_back(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"])
    loyalty = LoyaltyEngine(engine, parse_loyalty_rules(RULES), store)
    crediting = True
    feed = AccountFeed(loyalty, active=lambda: crediting)
    events = AccountEvents()
    events.subscribe(feed.on_account_event)
    crediting = False  # another worker holds the loyalty_credit duty
    events.publish(BalanceChanged("L1", "top_up", 10 * EUR, "shop-1"))
    crediting = True
    events.publish(BalanceChanged("L1", "loyalty_bonus", 5 * EUR))  # the engine's own credit
    events.publish(BalanceChanged("L1", "adjustment", 5 * EUR, "fix-1"))
    events.publish(BalanceChanged("L1", "top_up", 10 * EUR, "shop-2"))
    events.publish(BalanceChanged("L1", "top_up", 10 * EUR, "shop-2"))  # heard twice: one event
    await feed.drain()
    assert [row["trigger_id"] for row in await applications(engine)] == ["top_up:L1:shop-2"]
