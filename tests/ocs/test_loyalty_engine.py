"""The loyalty engine on a private real Redis and a real SQLite business database: usage records
from real charges, drained by the spool with the engine as its hook, credited into the balance
engine and spent by the next charge; exactly once under a replayed spool batch, a crash between
the credit and its record, and a replayed payment; budgets kept across batches; the audit."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.embedded import EmbeddedRedis
from balance.store import BalanceStore
from balance.types import (
    Account,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    OperationResult,
    Outcome,
    Tariff,
    Unit,
    UsageRecord,
)
from ocs.billing.payments import Payments
from ocs.billing.spool import Spool
from ocs.billing.values import NewPayment
from ocs.config import LoyaltySettings
from ocs.db import loyalty as tables
from ocs.db.customers import billing_accounts, customers, lines, parties
from ocs.db.engine import MIGRATIONS
from ocs.events import AccountEvent, AccountEvents, BalanceChanged
from ocs.loyalty.engine import SPOOL_PAGE_CACHE_KIB, LoyaltyEngine, credit_id
from ocs.loyalty.rules import EventKind, LoyaltyEvent, LoyaltyRules, Member
from ocs.loyalty.rules_load import parse_loyalty_rules
from tests.balance.conftest import embedded_redis
from tests.ocs.conftest import server_settings, server_with
from tests.ocs.postgres_support import business_database, postgresql_url
from tests.ocs.schema_support import migration_differences
from tests.ocs.store_stand_in import StoreStandIn
from tests.ocs.test_spool import engine, store

__all__ = ["embedded_redis", "engine", "postgresql_url", "store"]

EUR = 1_000_000
NOW = int(datetime(2026, 12, 7, 12, 0, tzinfo=UTC).timestamp())
SMS = Tariff(price_micros=90_000)
DATA = Tariff(price_micros=10_000, per_units=1_000_000, block_units=1_000_000, first_units=1_000_000)

RULES = """
[[programmes]]
id = "sms_tenth"
name = "Every 10th SMS free"
valid_from = 2026-01-01

[[programmes.rules]]
id = "sms_every_10th"
event = "usage"
filters = { services = ["sms"] }
counter = { period = "month", measure = "events" }
condition = { every = 10 }
action = { kind = "unit_allowance", unit = "events", units = 1, services = ["sms"], expiry_days = 30, cost = "0.09" }

[[programmes]]
id = "cashback"
name = "Ideal customers: 50 % back"
valid_from = 2026-01-01
budget = "BUDGET"

[[programmes.rules]]
id = "ideal_half_back"
event = "usage"
filters = { segments = ["ideal"], services = ["data"] }
counter = { period = "day", measure = "events" }
condition = { every = 1 }
action = { kind = "bonus_money", percent = "50", percent_of = "trigger_spend", expiry_days = 30 }

[[programmes]]
id = "company"
name = "Companies: 10 % off rentals"
valid_from = 2026-01-01

[[programmes.rules]]
id = "company_rentals"
event = "usage"
filters = { customer_kinds = ["organization"] }
counter = { period = "month", measure = "spend" }
condition = { threshold = "0.20" }
action = { kind = "invoice_discount", percent = "10", target = "rentals" }

[[programmes]]
id = "payer"
name = "A bonus per payment"
valid_from = 2026-01-01

[[programmes.rules]]
id = "payment_bonus"
event = "payment"
counter = { period = "month", measure = "events" }
condition = { every = 1 }
action = { kind = "bonus_money", amount = "1.00" }
"""


def rules(budget: str = "1000.00") -> LoyaltyRules:
    return parse_loyalty_rules(RULES.replace("BUDGET", budget))


async def member(
    engine: AsyncEngine,
    store: BalanceStore,
    customer_id: str,
    line_ids: Sequence[str],
    *,
    segment: str | None = None,
    kind: str = "individual",
    main_micros: int = 10 * EUR,
) -> None:
    """A customer with lines in the engine, each line a prepaid engine account."""
    moment = datetime(2026, 1, 1)
    async with engine.begin() as connection:
        await connection.execute(
            insert(parties).values(party_id=f"P-{customer_id}", kind=kind, contact_media=[], created_at=moment)
        )
        await connection.execute(
            insert(customers).values(
                customer_id=customer_id,
                party_id=f"P-{customer_id}",
                kind=kind,
                status="active",
                segment=segment,
                created_at=moment,
            )
        )
        for line_id in line_ids:
            await connection.execute(
                insert(lines).values(
                    line_id=line_id,
                    customer_id=customer_id,
                    name=line_id,
                    network="mobile",
                    payment_type="prepaid",
                    plan="mobile_prepaid",
                    credit_limit_micros=0,
                    cap_micros=0,
                    status="active",
                    created_at=moment,
                )
            )
    for line_id in line_ids:
        account = Account(line_id, buckets=(Bucket(1, BucketKind.MAIN, main_micros),))
        assert (await store.provision(account)).outcome is Outcome.OK


async def sms(store: BalanceStore, account_id: str, session_id: str, *, now: int = NOW) -> int:
    """One SMS (a direct debit); returns the money it cost (0: an allowance paid)."""
    item = ChargeItem(1, "sms", Unit.EVENTS, SMS, used_units=1)
    result = await store.charge(ChargeRequest(account_id, session_id, 0, (item,), now_seconds=now, event=True))
    assert result.outcome is Outcome.OK, result
    return result.items[0].committed_micros


async def data(store: BalanceStore, account_id: str, session_id: str, megabytes: int, *, now: int = NOW) -> None:
    item = ChargeItem(2, "data", Unit.OCTETS, DATA, used_units=megabytes * 1_000_000)
    result = await store.charge(ChargeRequest(account_id, session_id, 0, (item,), now_seconds=now, event=True))
    assert result.outcome is Outcome.OK, result


async def buckets(store: BalanceStore, account_id: str) -> dict[BucketKind, int]:
    view = await store.balance(account_id, NOW)
    assert view is not None
    totals: dict[BucketKind, int] = {}
    for bucket in view.account.buckets:
        totals[bucket.kind] = totals.get(bucket.kind, 0) + bucket.amount
    return totals


async def applications(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(tables.loyalty_applications).order_by("application_id"))
        return [dict(row._mapping) for row in rows]


async def audit(engine: AsyncEngine, grace_ms: int = 60_000) -> list[str]:
    async with engine.connect() as connection:
        return await tables.audit_problems(connection, int(datetime.now(UTC).timestamp() * 1000), grace_ms)


async def drain(spool: Spool, store: BalanceStore, loyalty: LoyaltyEngine) -> int:
    """One drain of the outboxes, and the credits it started."""
    try:
        return await spool.drain_once(store)
    finally:
        await loyalty.settle()


def engine_of(engine: AsyncEngine, store: BalanceStore, loyalty: LoyaltyRules, **options: Any) -> LoyaltyEngine:
    return LoyaltyEngine(engine, loyalty, store, **options)


# -- credited and spendable ----------------------------------------------------------------------


async def test_the_tenth_sms_of_the_month_puts_a_free_sms_that_the_next_charge_uses(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"])
    loyalty = engine_of(engine, store, rules())
    spool = Spool(engine, on_stored=loyalty.usage_stored)
    for index in range(9):
        await sms(store, "L1", f"s{index}")
    assert await drain(spool, store, loyalty) == 9
    assert BucketKind.EVENTS not in await buckets(store, "L1")
    await sms(store, "L1", "s9")
    assert await drain(spool, store, loyalty) == 1
    assert (await buckets(store, "L1"))[BucketKind.EVENTS] == 1  # credited at once after the commit
    [application] = await applications(engine)
    assert (application["rule_id"], application["trigger_id"], application["state"]) == (
        "sms_every_10th",
        "s9|0|1",
        "credited",
    )
    assert application["credited_at_ms"] >= application["committed_at_ms"]
    assert await sms(store, "L1", "s10") == 0  # the free SMS pays
    assert await sms(store, "L1", "s11") == SMS.price_micros
    assert await audit(engine) == []


async def test_the_connection_a_spool_batch_ran_on_keeps_a_larger_page_cache_and_no_other_does(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"])
    loyalty = engine_of(engine, store, rules())
    await sms(store, "L1", "s1")
    assert await drain(Spool(engine, on_stored=loyalty.usage_stored), store, loyalty) == 1
    async with engine.connect() as used, engine.connect() as fresh:  # the pool's one, then a new one
        sizes = [(await connection.execute(text("PRAGMA cache_size"))).scalar_one() for connection in (used, fresh)]
    assert sizes == [-SPOOL_PAGE_CACHE_KIB, -2000]  # SQLite's default: 2,000 KiB


async def test_ideal_bonus_money_is_spent_before_main_money_by_the_next_charge(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"], segment="ideal")
    await member(engine, store, "C2", ["L2"], segment="average")
    events = AccountEvents()
    published: list[AccountEvent] = []

    def heard(event: AccountEvent) -> int:
        published.append(event)
        return 0

    events.subscribe(heard)
    loyalty = engine_of(engine, store, rules(), events=events)
    spool = Spool(engine, on_stored=loyalty.usage_stored)
    await data(store, "L1", "d1", 30)  # 0.30: 0.15 back
    await data(store, "L2", "d2", 30)
    await drain(spool, store, loyalty)
    assert (await buckets(store, "L1"))[BucketKind.BONUS] == 150_000
    assert BucketKind.BONUS not in await buckets(store, "L2")
    assert published == [BalanceChanged("L1", "loyalty_bonus", 150_000)]
    main_before = (await buckets(store, "L1"))[BucketKind.MAIN]
    await data(store, "L1", "d3", 10)  # 0.10, all from the bonus
    after = await buckets(store, "L1")
    assert (after[BucketKind.BONUS], after[BucketKind.MAIN]) == (50_000, main_before)


# -- exactly once --------------------------------------------------------------------------------


class AcknowledgementLost(StoreStandIn):
    """The real store whose outbox trims fail: the spool's commit went through, the process died
    before Redis forgot the records, which the next drain reads again."""

    async def acknowledge_outbox(self, root: str, records: Sequence[UsageRecord]) -> int:
        raise ConnectionError("crash before the acknowledgement")


async def test_a_replayed_spool_batch_counts_and_credits_nothing_twice(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"], segment="ideal")
    loyalty = engine_of(engine, store, rules())
    spool = Spool(engine, on_stored=loyalty.usage_stored)
    for index in range(10):
        await sms(store, "L1", f"s{index}")
    await data(store, "L1", "d1", 20)
    with pytest.raises(ConnectionError):
        await drain(spool, AcknowledgementLost(store), loyalty)
    assert len(await store.usage_records()) == 11  # still in the outbox
    assert await drain(spool, store, loyalty) == 0  # read again, nothing new stored
    assert len(await store.usage_records()) == 0
    assert [(row["rule_id"], row["state"]) for row in await applications(engine)] == [
        ("sms_every_10th", "credited"),
        ("ideal_half_back", "credited"),
    ]
    async with engine.connect() as connection:
        counters = await tables.read_counters(connection, [("sms_every_10th", "C1", "2026-12")])
    assert counters == {("sms_every_10th", "C1", "2026-12"): 10}
    held = await buckets(store, "L1")
    assert (held[BucketKind.EVENTS], held[BucketKind.BONUS]) == (1, 100_000)
    assert await audit(engine) == []


class CreditedThenCrashed(StoreStandIn):
    """The real store where a top-up or a bucket applies in Redis and the process dies before it
    hears back: the credit is made, its application is not marked."""

    async def top_up(self, *args: Any, **options: Any) -> OperationResult:
        await self.store.top_up(*args, **options)
        raise ConnectionError("crash after the credit")

    async def add_bucket(self, *args: Any, **options: Any) -> OperationResult:
        await self.store.add_bucket(*args, **options)
        raise ConnectionError("crash after the credit")


async def test_a_crash_between_the_credit_and_its_record_is_credited_again_once(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"], segment="ideal")
    crashing = engine_of(engine, CreditedThenCrashed(store), rules())
    for index in range(10):
        await sms(store, "L1", f"s{index}")
    await data(store, "L1", "d1", 20)
    await drain(Spool(engine, on_stored=crashing.usage_stored), store, crashing)
    assert [row["state"] for row in await applications(engine)] == ["pending", "pending"]
    assert any("pending for more than" in problem for problem in await audit(engine, grace_ms=-1))
    held = await buckets(store, "L1")
    assert (held[BucketKind.EVENTS], held[BucketKind.BONUS]) == (1, 100_000)  # credited already

    restarted = engine_of(engine, store, rules())
    assert await restarted.credit_pending() == 2
    assert [row["state"] for row in await applications(engine)] == ["credited", "credited"]
    held = await buckets(store, "L1")
    assert (held[BucketKind.EVENTS], held[BucketKind.BONUS]) == (1, 100_000)  # the engine's id: not twice
    assert await restarted.credit_pending() == 0
    assert await audit(engine, grace_ms=-1) == []


async def test_a_payment_is_evaluated_once_however_often_it_is_reported(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1", "L2"])
    loyalty = engine_of(engine, store, rules())
    payment = LoyaltyEvent(EventKind.PAYMENT, "PAY-1", "C1", "L1", NOW, micros=30 * EUR)
    assert await loyalty.events_recorded([payment]) == 1
    assert await loyalty.events_recorded([payment]) == 0
    assert (await buckets(store, "L1"))[BucketKind.BONUS] == EUR
    assert credit_id("payment_bonus", "PAY-1") == "loyalty|payment_bonus|PAY-1"
    assert await audit(engine) == []


# -- budgets, discounts -------------------------------------------------------------------------


async def test_a_programme_stops_crediting_when_its_budget_is_spent_across_batches(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    await member(engine, store, "C1", ["L1"], segment="ideal")
    loyalty = engine_of(engine, store, rules(budget="0.12"))
    spool = Spool(engine, on_stored=loyalty.usage_stored)
    await data(store, "L1", "d1", 10)  # 0.05 back
    await drain(spool, store, loyalty)
    await data(store, "L1", "d2", 10)  # 0.05 more: 0.10
    await data(store, "L1", "d3", 10)  # would be 0.15: refused
    await drain(spool, store, loyalty)
    await data(store, "L1", "d4", 4)  # 0.02: 0.12 exactly
    await drain(spool, store, loyalty)
    assert [row["trigger_id"] for row in await applications(engine)] == ["d1|0|2", "d2|0|2", "d4|0|2"]
    view = await store.balance("L1", NOW)
    assert view is not None and view.credits_micros == 10 * EUR + 120_000  # the provisioned main money, the bonus
    async with engine.connect() as connection:
        assert await tables.read_spent(connection, ["cashback"]) == {"cashback": 120_000}
    assert await audit(engine) == []


async def test_a_company_discount_is_recorded_for_the_next_invoice(store: BalanceStore, engine: AsyncEngine) -> None:
    await member(engine, store, "ORG", ["L1", "L2"], kind="organization")
    loyalty = engine_of(engine, store, rules())
    spool = Spool(engine, on_stored=loyalty.usage_stored)
    await data(store, "L1", "d1", 12)
    await drain(spool, store, loyalty)
    await data(store, "L2", "d2", 12)  # together 0.24 >= 0.20
    await data(store, "L2", "d3", 12)  # once a month
    await drain(spool, store, loyalty)
    [application] = await applications(engine)
    assert (application["trigger_id"], application["member_id"], application["state"]) == ("d2|0|2", "ORG", "recorded")
    january = int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())
    february = int(datetime(2027, 2, 1, tzinfo=UTC).timestamp())
    async with engine.begin() as connection:
        assert await tables.pending_invoice_discounts(connection, "ORG", NOW, january) == []  # not this month's
        [discount] = await tables.pending_invoice_discounts(connection, "ORG", january, february)
        assert (discount.target, discount.percent_basis_points) == ("rentals", 1_000)
        assert await tables.consume_invoice_discount(connection, discount.discount_id, "INV-1")
        assert not await tables.consume_invoice_discount(connection, discount.discount_id, "INV-2")
        assert await tables.pending_invoice_discounts(connection, "ORG", january, february) == []


async def test_records_of_accounts_without_a_line_are_stored_and_skipped(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    assert (await store.provision(Account("raw", buckets=(Bucket(1, BucketKind.MAIN, EUR),)))).outcome is Outcome.OK
    loyalty = engine_of(engine, store, rules())
    spool = Spool(engine, on_stored=loyalty.usage_stored)
    for index in range(10):
        await sms(store, "raw", f"s{index}")
    assert await drain(spool, store, loyalty) == 10
    assert await applications(engine) == []


async def test_the_audit_finds_an_application_without_its_trigger_and_a_budget_that_disagrees(
    store: BalanceStore, engine: AsyncEngine
) -> None:
    row = {
        "rule_id": "ideal_half_back",
        "programme_id": "cashback",
        "member_id": "C1",
        "line_id": "L1",
        "trigger_id": "nowhere|0|1",
        "trigger_kind": "usage",
        "action": "bonus_money",
        "amount_micros": 5,
        "units": 0,
        "unit_kind": None,
        "services": "",
        "valid_until": 0,
        "cost_micros": 5,
        "at_seconds": NOW,
        "committed_at_ms": 0,
        "credited_at_ms": 1,
        "state": "credited",
        "outcome": None,
    }
    async with engine.begin() as connection:
        await tables.insert_applications(connection, [row, {**row, "trigger_id": "PAY-9", "trigger_kind": "payment"}])
        await tables.write_spent(connection, {"cashback": 4})
        count = (await connection.execute(select(func.count()).select_from(tables.loyalty_applications))).scalar_one()
    assert count == 2
    assert await audit(engine) == [
        "rule ideal_half_back applied to usage record nowhere|0|1, which is not stored",
        "rule ideal_half_back applied to event PAY-9, which is not recorded",
        "programme cashback: applications cost 10 micros, its budget counts 4",
    ]


async def test_the_migration_makes_the_loyalty_tables_as_they_are_defined(engine: AsyncEngine) -> None:
    assert await migration_differences(engine, (table.name for table in tables.LOYALTY_TABLES)) == []


async def test_a_payment_recorded_by_billing_credits_its_bonus_once(store: BalanceStore, engine: AsyncEngine) -> None:
    await member(engine, store, "C1", ["L1"])
    async with engine.begin() as connection:
        await connection.execute(
            insert(billing_accounts).values(
                billing_account_id="BA1",
                customer_id="C1",
                currency="EUR",
                bill_cycle_day=1,
                payment_method="bank_transfer",
                paid_by_parent=False,
                created_at=datetime(2026, 1, 1),
            )
        )
    loyalty = engine_of(engine, store, rules())
    payments = Payments(engine, on_payment=(loyalty.on_payment,))
    paid = NewPayment(billing_account_id="BA1", reference="bank-1", amount_micros=30 * EUR)
    first = await payments.record_payment(paid, "test")
    assert (await payments.record_payment(paid, "test")).replayed  # the bank sent it twice
    assert (await buckets(store, "L1"))[BucketKind.BONUS] == EUR
    [application] = await applications(engine)
    assert (application["trigger_id"], application["trigger_kind"]) == (first.payment.payment_id, "payment")
    assert await audit(engine) == []


async def test_the_server_with_loyalty_enabled_credits_through_its_spool(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    rules_path = tmp_path / "loyalty.toml"
    rules_path.write_text(RULES.replace("BUDGET", "10.00"))
    settings = server_settings(embedded_redis.url, tmp_path / "data" / "spool.sqlite3")
    settings = replace(settings, loyalty=LoyaltySettings(enabled=True, rules=str(rules_path)))
    async with server_with(settings) as running:
        state = running.state
        assert state.store is not None and state.database is not None and state.loyalty is not None
        await member(state.database, state.store, "C1", ["L1"])
        for index in range(10):
            await sms(state.store, "L1", f"s{index}")
        for _ in range(500):  # the spool drains every 0.05 s; a bound, not a timing assertion
            if (await buckets(state.store, "L1")).get(BucketKind.EVENTS):
                break
            await asyncio.sleep(0.02)
        assert (await buckets(state.store, "L1"))[BucketKind.EVENTS] == 1
        await state.loyalty.settle()
        assert [row["state"] for row in await applications(state.database)] == ["credited"]


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The business database of each kind, the usage and loyalty tables emptied (the customers of
    other tests stay: each test here names its own)."""
    cleared = ("usage_records", *(table.name for table in tables.LOYALTY_TABLES))
    async with business_database(request, tmp_path, cleared) as made:
        yield made


async def test_on_each_database_a_replayed_batch_and_a_payment_apply_once(
    store: BalanceStore, any_database: AsyncEngine
) -> None:
    engine = any_database
    customer, line = f"C-{uuid.uuid4().hex[:12]}", f"L-{uuid.uuid4().hex[:12]}"
    await member(engine, store, customer, [line], segment="ideal")
    loyalty = engine_of(engine, store, rules(budget="0.15"))
    spool = Spool(engine, on_stored=loyalty.usage_stored)
    for index in range(10):
        await sms(store, line, f"s{index}")
    for index in range(4):
        await data(store, line, f"d{index}", 10)  # 0.05 back each: the budget takes three
    with pytest.raises(ConnectionError):
        await drain(spool, AcknowledgementLost(store), loyalty)
    assert await drain(spool, store, loyalty) == 0
    payment = LoyaltyEvent(EventKind.PAYMENT, f"PAY-{customer}", customer, line, NOW, micros=EUR)
    assert await loyalty.events_recorded([payment, payment]) == 1
    states = [(row["rule_id"], row["state"]) for row in await applications(engine)]
    assert states == [("sms_every_10th", "credited")] + [("ideal_half_back", "credited")] * 3 + [
        ("payment_bonus", "credited")
    ]
    view = await store.balance(line, NOW)
    assert view is not None and view.credits_micros == 10 * EUR + 150_000 + EUR
    assert (await buckets(store, line))[BucketKind.EVENTS] == 1
    assert await audit(engine) == []


# -- counters: a row per member and period (migration 0017) ---------------------------------------

NOVEMBER_LAST = int(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC).timestamp())
DECEMBER_FIRST = int(datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC).timestamp())


async def stored_counters(engine: AsyncEngine) -> dict[tuple[str, str], dict[str, int]]:
    """Every row of ``loyalty_member_counters``: (member, period) -> rule -> value."""
    async with engine.connect() as connection:
        rows = await connection.execute(select(tables.loyalty_member_counters))
        return {(row.member_id, row.period): json.loads(row.counters) for row in rows}


async def test_counters_are_a_row_per_member_and_period_and_start_again_in_the_next_period(
    store: BalanceStore, any_database: AsyncEngine
) -> None:
    """The last second of November and the first of December: each day and month a row of its
    own holding every rule's counter; the second transaction adds to December's row without
    losing the counter the first wrote there, and a replayed payment moves nothing."""
    engine = any_database
    customer, line = f"C-{uuid.uuid4().hex[:12]}", f"L-{uuid.uuid4().hex[:12]}"
    await member(engine, store, customer, [line], segment="ideal", kind="organization")
    loyalty = engine_of(engine, store, rules())
    company = Member(customer, "organization", "ideal")

    def usage(trigger_id: str, at_seconds: int, service: str, micros: int) -> tuple[LoyaltyEvent, Member]:
        return LoyaltyEvent(EventKind.USAGE, trigger_id, customer, line, at_seconds, service, 1, micros), company

    async with engine.begin() as connection:
        made = await loyalty.apply(
            connection,
            [usage("r1", NOVEMBER_LAST, "sms", 90_000), usage("r2", DECEMBER_FIRST, "data", 40_000)],
        )
    assert [item.trigger_id for item in made] == ["r2"]  # ideal_half_back on the data record
    async with engine.begin() as connection:
        await loyalty.apply(connection, [usage("r3", DECEMBER_FIRST + 1, "sms", 90_000)])
    payment = LoyaltyEvent(EventKind.PAYMENT, f"PAY-{customer}", customer, line, DECEMBER_FIRST, micros=EUR)
    assert await loyalty.events_recorded([payment]) == 1
    assert await loyalty.events_recorded([payment]) == 0  # a replay: evaluated once
    assert await stored_counters(engine) == {
        (customer, "2026-11"): {"sms_every_10th": 1, "company_rentals": 90_000},
        (customer, "2026-12-01"): {"ideal_half_back": 1},
        (customer, "2026-12"): {"company_rentals": 130_000, "sms_every_10th": 1, "payment_bonus": 1},
    }
    async with engine.connect() as connection:
        wanted = [("company_rentals", customer, "2026-12"), ("sms_every_10th", customer, "2026-12-01")]
        assert await tables.read_counters(connection, wanted) == {("company_rentals", customer, "2026-12"): 130_000}


async def test_a_transaction_writes_only_the_counters_it_changed(any_database: AsyncEngine) -> None:
    """Two transactions moving different rules' counters of one member and month (a payment's and
    the spool's, which PostgreSQL may run at once) each keep the other's."""
    engine = any_database
    async with engine.begin() as connection:
        await tables.upsert_counters(connection, {("a", "C-merge", "2026-12"): 5, ("b", "C-merge", "2026-12"): 1})
    async with engine.begin() as connection:
        await tables.upsert_counters(connection, {("b", "C-merge", "2026-12"): 7, ("c", "C-merge", "2026-12"): 2})
    assert await stored_counters(engine) == {("C-merge", "2026-12"): {"a": 5, "b": 7, "c": 2}}


def _migrate_to(connection: Connection, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    if revision == "head":
        command.upgrade(config, revision)
    else:
        command.downgrade(config, revision)


async def test_the_migration_packs_the_counters_by_member_and_period_and_back(any_database: AsyncEngine) -> None:
    engine = any_database
    old = [("C1", "2026-12", "r1", 3), ("C1", "2026-12", "r2", 10**12), ("C1", "2026-12-07", "r1", 1)]
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to, "0016")
            for row in old:
                await connection.execute(
                    text("INSERT INTO loyalty_counters (member_id, period, rule_id, value) VALUES (:m, :p, :r, :v)"),
                    dict(zip("mprv", row, strict=True)),
                )
            await connection.run_sync(_migrate_to, "head")
        assert await stored_counters(engine) == {
            ("C1", "2026-12"): {"r1": 3, "r2": 10**12},
            ("C1", "2026-12-07"): {"r1": 1},
        }
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to, "0016")
            unpacked = await connection.execute(text("SELECT member_id, period, rule_id, value FROM loyalty_counters"))
            assert sorted(tuple(row) for row in unpacked) == sorted(old)
    finally:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to, "head")
            await connection.execute(tables.loyalty_member_counters.delete())
