"""What the bill run tests share: customers, nodes, billing accounts and lines written as rows
(with the status history the bill run reads), engine accounts on a real Redis charged for real,
and their usage records moved from the engine's outbox into the business database as the spool
writer does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.embedded import EmbeddedRedis
from balance.store import BalanceStore
from balance.types import ChargeItem, ChargeRequest, Outcome, Tariff, Unit
from ocs.billing.catalog import Catalog
from ocs.billing.catalog_load import load_catalog
from ocs.db import usage
from ocs.db.customers import billing_accounts, customer_nodes, customers, lines, parties
from ocs.db.interactions import status_changes
from ocs.rating.rate import load_book
from tests.ocs.billing_support import BILLING_TABLES
from tests.ocs.postgres_support import business_database

ROOT = Path(__file__).resolve().parents[2]
UNIT = 1_000_000
EVENT = Tariff(price_micros=UNIT)
CLEARED = (
    "bill_cuts",
    "prepaid_rentals",
    "statements",
    "usage_records",
    "status_changes",
    *BILLING_TABLES,
    "lines",
    "billing_accounts",
    "customer_nodes",
    "customers",
    "parties",
)


def catalog() -> Catalog:
    return load_catalog(ROOT / "config" / "catalog.toml", load_book(ROOT / "config" / "tariffs.toml"))


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, CLEARED) as made:
        yield made
        async with made.begin() as connection:  # the session's PostgreSQL is shared: leave no rows
            for table in CLEARED:
                await connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    class Only:
        param = "sqlite"

    async with business_database(Only(), tmp_path, CLEARED) as made:  # type: ignore[arg-type]
        yield made


@pytest.fixture
async def balance_store(embedded_redis: EmbeddedRedis) -> AsyncIterator[BalanceStore]:
    made = await BalanceStore.connect(embedded_redis.url)
    await made.flush_all()
    try:
        yield made
    finally:
        await made.close()


async def add_customer(
    engine: AsyncEngine,
    customer_id: str,
    *,
    billing_account_id: str | None,
    cycle_day: int = 1,
    kind: str = "individual",
) -> None:
    now = datetime(2026, 1, 1)
    async with engine.begin() as connection:
        await connection.execute(
            insert(parties).values(party_id=f"P-{customer_id}", kind=kind, contact_media=[], created_at=now)
        )
        await connection.execute(
            insert(customers).values(
                customer_id=customer_id, party_id=f"P-{customer_id}", kind=kind, status="active", created_at=now
            )
        )
        if billing_account_id is not None:
            await add_billing_account(
                engine, billing_account_id, customer_id, None, cycle_day=cycle_day, connection=connection
            )


async def add_billing_account(
    engine: AsyncEngine,
    billing_account_id: str,
    customer_id: str,
    node_id: str | None,
    *,
    cycle_day: int = 1,
    paid_by_parent: bool = False,
    connection: object = None,
) -> None:
    row = {
        "billing_account_id": billing_account_id,
        "customer_id": customer_id,
        "node_id": node_id,
        "currency": "EUR",
        "bill_cycle_day": cycle_day,
        "payment_method": "bank_transfer",
        "paid_by_parent": paid_by_parent,
        "created_at": datetime(2026, 1, 1),
    }
    if connection is not None:
        await connection.execute(insert(billing_accounts).values(**row))  # type: ignore[attr-defined]
        return
    async with engine.begin() as own:
        await own.execute(insert(billing_accounts).values(**row))


async def add_node(engine: AsyncEngine, node_id: str, customer_id: str, parent: str | None, kind: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(customer_nodes).values(
                node_id=node_id,
                customer_id=customer_id,
                parent_node_id=parent,
                name=node_id,
                kind=kind,
                created_at=datetime(2026, 1, 1),
            )
        )


async def add_line(
    engine: AsyncEngine,
    line_id: str,
    customer_id: str,
    *,
    node_id: str | None = None,
    plan: str = "fixed_postpaid",
    payment_type: str = "postpaid",
    activated: datetime = datetime(2026, 1, 1),
    terminated: datetime | None = None,
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(lines).values(
                line_id=line_id,
                customer_id=customer_id,
                node_id=node_id,
                name=line_id,
                network="fixed",
                payment_type=payment_type,
                plan=plan,
                credit_limit_micros=0,
                cap_micros=0,
                status="terminated" if terminated else "active",
                own_status="terminated" if terminated else "active",
                created_at=activated,
            )
        )
        changes = [("provisioning", "active", activated)]
        if terminated is not None:
            changes.append(("active", "terminated", terminated))
        for before, after, moment in changes:
            await connection.execute(
                insert(status_changes).values(
                    entity_kind="line",
                    entity_id=line_id,
                    customer_id=customer_id,
                    from_status=before,
                    to_status=after,
                    reason="test",
                    author="test",
                    changed_at=moment,
                )
            )


def events(account_id: str, session_id: str, count: int, now_seconds: int) -> ChargeRequest:
    item = ChargeItem(1, "sms", Unit.EVENTS, EVENT, used_units=count)
    return ChargeRequest(account_id, session_id, 0, (item,), now_seconds, event=True)


async def charge(store: BalanceStore, account_id: str, session_id: str, count: int, now_seconds: int) -> Outcome:
    return (await store.charge(events(account_id, session_id, count, now_seconds))).items[0].outcome


async def spool(store: BalanceStore, engine: AsyncEngine) -> int:
    """The engine's outbox into ``usage_records``, then acknowledged: the spool writer's job."""
    stored = 0
    for root in await store.outbox_roots():
        records = await store.read_outbox(root)
        async with engine.begin() as connection:
            stored += await usage.store_records(connection, [usage.row_of(record) for record in records])
        await store.acknowledge_outbox(root, records)
    return stored
