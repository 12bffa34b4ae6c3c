"""The loyalty events the daily duty feeds, on a private real Redis and a real SQLite business
database: birthdays and anniversaries credited once however often the day is fed, and a payment
whose listener never ran (a crash after its commit) caught up once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.store import BalanceStore
from balance.types import BucketKind
from ocs.billing.payments import Payments
from ocs.billing.values import NewPayment
from ocs.db.customers import billing_accounts, customers, parties
from ocs.loyalty.daily_feed import DailyFeed
from ocs.loyalty.engine import LoyaltyEngine
from ocs.loyalty.rules_load import parse_loyalty_rules
from tests.balance.conftest import embedded_redis
from tests.ocs.test_loyalty_engine import EUR, applications, audit, buckets, member
from tests.ocs.test_loyalty_engine import RULES as ENGINE_RULES
from tests.ocs.test_spool import engine, store

__all__ = ["embedded_redis", "engine", "store"]

OCCASION_RULE = """
[[programmes.rules]]
id = "{kind}_bonus"
event = "{kind}"
counter = {{ period = "month", measure = "events" }}
condition = {{ every = 1 }}
action = {{ kind = "bonus_money", amount = "{amount}" }}
"""
# The engine tests' programmes (their payment bonus: 1.00 a payment) and one for the occasions.
RULES = (
    ENGINE_RULES.replace("BUDGET", "1000.00")
    + '\n[[programmes]]\nid = "occasions"\nname = "Birthdays and anniversaries"\nvalid_from = 2026-01-01\n'
    + OCCASION_RULE.format(kind="birthday", amount="5.00")
    + OCCASION_RULE.format(kind="anniversary", amount="2.00")
)

TODAY = date(2026, 12, 7)


def clock_at(moment: datetime) -> float:
    return moment.timestamp()


async def born(engine: AsyncEngine, customer_id: str, birth_date: date | None, created_at: datetime) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(parties).where(parties.c.party_id == f"P-{customer_id}").values(birth_date=birth_date)
        )
        await connection.execute(
            update(customers).where(customers.c.customer_id == customer_id).values(created_at=created_at)
        )


async def billing_account(engine: AsyncEngine, billing_account_id: str, customer_id: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(billing_accounts).values(
                billing_account_id=billing_account_id,
                customer_id=customer_id,
                currency="EUR",
                bill_cycle_day=1,
                payment_method="bank_transfer",
                paid_by_parent=False,
                created_at=datetime(2026, 1, 1),
            )
        )


async def test_birthdays_and_anniversaries_of_the_day_are_credited_once_however_often_fed(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"])  # born today, customer since 2026: no anniversary yet
    await born(engine, "C1", date(1990, 12, 7), datetime(2026, 3, 1))
    await member(engine, store, "C2", ["L2"])  # customer for three years today, born another day
    await born(engine, "C2", date(1985, 5, 1), datetime(2023, 12, 7, 15, 30))
    await member(engine, store, "C3", ["L3"], kind="organization")  # no birthday; anniversary 2 years
    await born(engine, "C3", date(2000, 12, 7), datetime(2024, 12, 7))
    await member(engine, store, "C4", ["L4"])  # nothing today
    await born(engine, "C4", date(1990, 12, 8), datetime(2025, 12, 6))
    loyalty = LoyaltyEngine(engine, parse_loyalty_rules(RULES), store)
    noon = datetime(2026, 12, 7, 12, tzinfo=UTC)
    feed = DailyFeed(engine, loyalty, occasions_hour=8, clock=lambda: clock_at(noon))
    assert await feed.run_due(datetime(2026, 12, 7, 7, tzinfo=UTC)) is None  # before the hour
    assert await feed.run_due(noon) == 3
    assert await feed.run_due(noon) is None  # fed today already
    second_worker = DailyFeed(engine, loyalty, occasions_hour=8)  # a lease moved: fed again
    assert await second_worker.feed_occasions(TODAY) == 0
    assert (await buckets(store, "L1"))[BucketKind.BONUS] == 5 * EUR
    assert (await buckets(store, "L2"))[BucketKind.BONUS] == 2 * EUR
    assert (await buckets(store, "L3"))[BucketKind.BONUS] == 2 * EUR
    assert BucketKind.BONUS not in await buckets(store, "L4")
    found = sorted((row["trigger_id"], row["trigger_kind"]) for row in await applications(engine))
    assert found == [
        ("anniversary:C2:2026", "anniversary"),
        ("anniversary:C3:2026", "anniversary"),
        ("birthday:C1:2026", "birthday"),
    ]
    assert await audit(engine) == []


async def test_a_29_february_birthday_is_fed_on_28_february_of_a_common_year(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"])
    await born(engine, "C1", date(2004, 2, 29), datetime(2026, 1, 1))
    loyalty = LoyaltyEngine(engine, parse_loyalty_rules(RULES.replace("2026-01-01", "2027-01-01")), store)
    feed = DailyFeed(engine, loyalty)
    assert await feed.feed_occasions(date(2027, 2, 27)) == 0
    assert await feed.feed_occasions(date(2027, 2, 28)) == 1
    [application] = await applications(engine)
    assert application["trigger_id"] == "birthday:C1:2027"


async def test_a_payment_whose_listener_never_ran_is_caught_up_once(store: BalanceStore, engine: AsyncEngine) -> None:
    await member(engine, store, "C1", ["L1"])
    await billing_account(engine, "BA1", "C1")
    loyalty = LoyaltyEngine(engine, parse_loyalty_rules(RULES), store)
    lost = await Payments(engine).record_payment(  # committed; the server died before its listener
        NewPayment(billing_account_id="BA1", reference="bank-1", amount_micros=30 * EUR), "test"
    )
    heard = await Payments(engine, on_payment=(loyalty.on_payment,)).record_payment(
        NewPayment(billing_account_id="BA1", reference="bank-2", amount_micros=20 * EUR), "test"
    )
    later = datetime.now(UTC) + timedelta(minutes=5)
    feed = DailyFeed(engine, loyalty, clock=lambda: clock_at(later))
    assert await feed.catch_up_payments() == 1  # the lost one; the heard one has its event
    assert await feed.catch_up_payments() == 0
    assert await DailyFeed(engine, loyalty, clock=lambda: clock_at(later)).catch_up_payments() == 0  # a restart
    assert (await buckets(store, "L1"))[BucketKind.BONUS] == 2 * EUR
    triggers = sorted(row["trigger_id"] for row in await applications(engine))
    assert triggers == sorted([lost.payment.payment_id, heard.payment.payment_id])
    assert await audit(engine) == []


async def test_the_catch_up_leaves_a_payment_younger_than_its_grace_to_the_listener(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"])
    await billing_account(engine, "BA1", "C1")
    loyalty = LoyaltyEngine(engine, parse_loyalty_rules(RULES), store)
    await Payments(engine).record_payment(
        NewPayment(billing_account_id="BA1", reference="bank-1", amount_micros=30 * EUR), "test"
    )
    assert await DailyFeed(engine, loyalty).catch_up_payments() == 0
