"""Queries on the order tables (``ocs.db.orders``): rows in, ``ProductOrder`` values out.

Theory of operation: one function per query, each its own transaction, on SQLite and PostgreSQL
alike. ``complete_item`` and ``fail_item`` are the fulfilment's commit points: the item's state
and what the item changed in this database (a line's status) are written in one transaction, so
after a crash an item is either recorded done, with its effect, or not recorded at all (and its
engine step, idempotent by the item's operation id, is simply run again).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.customers.records import Duplicate
from ocs.customers.values import CustomerStatus
from ocs.db.customers import customers, lines
from ocs.db.orders import deposits, product_order_items, product_orders
from ocs.db.schema import utc_aware, utc_naive


async def insert_order(
    engine: AsyncEngine,
    order: dict[str, object],
    items: list[dict[str, object]],
    deposit: dict[str, object] | None = None,
) -> None:
    """The order, its items and the deposit it makes due, all or none; ``Duplicate`` when its id
    or external id is taken (or a racing order recorded the customer's deposit first)."""
    try:
        async with engine.begin() as connection:
            await connection.execute(insert(product_orders).values(**order))
            for item in items:
                await connection.execute(insert(product_order_items).values(**item))
            if deposit is not None:
                await connection.execute(insert(deposits).values(**deposit))
    except IntegrityError as error:
        raise Duplicate(str(error.orig)) from None


async def deposit_of(engine: AsyncEngine, *, customer_id: str, credit_class: str) -> dict[str, Any] | None:
    """The customer's deposit for this credit class, if one was recorded."""
    query = select(deposits).where(and_(deposits.c.customer_id == customer_id, deposits.c.credit_class == credit_class))
    async with engine.connect() as connection:
        row = (await connection.execute(query)).first()
    return dict(row._mapping) if row is not None else None


async def deposit_of_order(engine: AsyncEngine, order_id: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (await connection.execute(select(deposits).where(deposits.c.order_id == order_id))).first()
    return dict(row._mapping) if row is not None else None


async def order_row(engine: AsyncEngine, order_id: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (await connection.execute(select(product_orders).where(product_orders.c.order_id == order_id))).first()
    return dict(row._mapping) if row is not None else None


async def order_id_of_external(engine: AsyncEngine, external_id: str) -> str | None:
    async with engine.connect() as connection:
        query = select(product_orders.c.order_id).where(product_orders.c.external_id == external_id)
        found: str | None = (await connection.execute(query)).scalar_one_or_none()
    return found


async def item_rows(engine: AsyncEngine, order_id: str) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        query = (
            select(product_order_items)
            .where(product_order_items.c.order_id == order_id)
            .order_by(product_order_items.c.position)
        )
        return [dict(row._mapping) for row in (await connection.execute(query)).all()]


async def order_ids_in_state(engine: AsyncEngine, states: tuple[str, ...]) -> list[str]:
    async with engine.connect() as connection:
        query = (
            select(product_orders.c.order_id)
            .where(product_orders.c.state.in_(states))
            .order_by(product_orders.c.created_at, product_orders.c.order_id)
        )
        return list((await connection.execute(query)).scalars().all())


async def set_order_state(engine: AsyncEngine, order_id: str, state: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(product_orders).where(product_orders.c.order_id == order_id).values(state=state)
        )


async def _item_state(connection: AsyncConnection, order_id: str, item_id: str, values: dict[str, object]) -> None:
    key = and_(product_order_items.c.order_id == order_id, product_order_items.c.item_id == item_id)
    await connection.execute(update(product_order_items).where(key).values(**values))


async def complete_item(
    engine: AsyncEngine, order_id: str, item_id: str, line_status: tuple[str, str] | None, now: datetime
) -> None:
    """The item ``completed`` and, when it changed a line's status, that status, in one transaction."""
    async with engine.begin() as connection:
        await _item_state(connection, order_id, item_id, {"state": "completed", "completed_at": utc_naive(now)})
        if line_status is not None:
            line_id, status = line_status
            await connection.execute(update(lines).where(lines.c.line_id == line_id).values(status=status))


async def fail_item(engine: AsyncEngine, order_id: str, item_id: str, failure: str, now: datetime) -> None:
    """The item and its order ``failed``, with why, in one transaction."""
    async with engine.begin() as connection:
        await _item_state(connection, order_id, item_id, {"state": "failed", "failure": failure})
        await connection.execute(
            update(product_orders)
            .where(product_orders.c.order_id == order_id)
            .values(state="failed", failure=f"item {item_id}: {failure}", completed_at=utc_naive(now))
        )


async def complete_order(engine: AsyncEngine, order_id: str, customer_id: str, now: datetime) -> None:
    """The order ``completed``; its customer, if still a prospect, ``active`` (the first completed
    order activates it), in one transaction."""
    async with engine.begin() as connection:
        await connection.execute(
            update(product_orders)
            .where(product_orders.c.order_id == order_id)
            .values(state="completed", completed_at=utc_naive(now))
        )
        await connection.execute(
            update(customers)
            .where(and_(customers.c.customer_id == customer_id, customers.c.status == CustomerStatus.PROSPECT.value))
            .values(status=CustomerStatus.ACTIVE.value)
        )


def stored_time(value: datetime | None) -> datetime | None:
    return utc_aware(value) if value is not None else None
