"""The status history of customers and lines: one row per status entered, written in the
transaction that changes the status, so the history and the status never disagree.
A line has two: its own status (kind ``line_own``, every change asked of the line, recorded even
when its effective status does not move, e.g. suspended on its own while its customer is
suspended) and its effective status (kind ``line``, what the engine applies and the reports count).

Theory of operation: whatever changes a customer's or a line's status (creating it included)
calls ``record`` on its own connection, inside its own transaction (``ocs.customers.records``).
A row says which entity (``customer`` or ``line``), the customer it belongs to, the status left
(None when the entity was just made) and entered, who, when, and why: a free text and, for a
termination or a suspension, a ``ReasonCategory`` the churn report counts by
(``ocs.customers.reports``). Rows are never updated or deleted, except together with the
customer whose creation is undone (``records.delete_customer``: nothing was applied).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.db.interactions import status_changes
from ocs.db.schema import utc_aware, utc_naive

SYSTEM_AUTHOR = "ocs"  # a change the service makes itself (a line's provisioning step finished)


class EntityKind(enum.StrEnum):
    CUSTOMER = "customer"
    NODE = "node"  # a company node's own status (ocs.customers.lifecycle)
    LINE = "line"  # a line's effective status: what the engine applies, what the reports count
    LINE_OWN = "line_own"  # a line's own status, set on the line (ocs.customers.lifecycle)


class ReasonCategory(enum.StrEnum):
    """Why a customer or a line left (or was suspended): what the churn report counts by."""

    VOLUNTARY = "voluntary"  # the customer asked
    COLLECTIONS = "collections"  # unpaid bills (dunning)
    FRAUD = "fraud"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class StatusChange:
    entity_kind: EntityKind
    entity_id: str
    customer_id: str
    from_status: str | None
    to_status: str
    changed_at: datetime
    author: str = SYSTEM_AUTHOR
    reason: str = ""
    reason_category: ReasonCategory | None = None


async def record(connection: AsyncConnection, change: StatusChange) -> None:
    """One row, in the caller's transaction."""
    await connection.execute(
        insert(status_changes).values(
            entity_kind=change.entity_kind.value,
            entity_id=change.entity_id,
            customer_id=change.customer_id,
            from_status=change.from_status,
            to_status=change.to_status,
            reason_category=change.reason_category.value if change.reason_category is not None else None,
            reason=change.reason,
            author=change.author,
            changed_at=utc_naive(change.changed_at),
        )
    )


async def forget_customer(connection: AsyncConnection, customer_id: str) -> None:
    """The history of a customer whose creation is undone (its engine step was refused)."""
    await connection.execute(delete(status_changes).where(status_changes.c.customer_id == customer_id))


async def read(engine: AsyncEngine, *, until: datetime, entity_kind: EntityKind | None = None) -> list[StatusChange]:
    """Every change before ``until`` (exclusive), oldest first (ties in the order written)."""
    query = select(status_changes).where(status_changes.c.changed_at < utc_naive(until))
    if entity_kind is not None:
        query = query.where(status_changes.c.entity_kind == entity_kind.value)
    query = query.order_by(status_changes.c.changed_at, status_changes.c.record_id)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return [
        StatusChange(
            entity_kind=EntityKind(values["entity_kind"]),
            entity_id=values["entity_id"],
            customer_id=values["customer_id"],
            from_status=values["from_status"],
            to_status=values["to_status"],
            changed_at=utc_aware(values["changed_at"]),
            author=values["author"],
            reason=values["reason"],
            reason_category=ReasonCategory(values["reason_category"]) if values["reason_category"] else None,
        )
        for values in (row._mapping for row in rows)
    ]
