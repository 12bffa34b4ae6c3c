"""The loyalty wing's score history: one row each time a customer's score changed (the queries
are beside it; the scoring itself is ``ocs.loyalty.scoring``).

Theory of operation: a row is inserted when a customer is scored and the points of the score, or
of one of its factors, or the segment differ from the customer's newest row (``latest_scores``):
facts such as the tenure in days move every day, the points that follow from them rarely, so the
table grows with the changes of the customers' standing, not with the number of days times the
number of customers. Rows are never updated, so the score in effect at any moment is the newest
row before it (``scores_at``), and the movement report compares two such moments. ``factors`` is
the list of the factors as scored: name, measured value and its unit, points, explanation.
``cause`` says what made the score: the daily run, a payment, a status change, an operator.
Times are naive UTC (``ocs.db.schema``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Integer, String, Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from ocs.db.customers import ID_LENGTH
from ocs.db.schema import metadata

SEGMENT_LENGTH = 32  # customers.segment's length (0009)
IDS_PER_STATEMENT = 1_000  # ids bound per IN (...): far below SQLite's and PostgreSQL's limits

customer_scores = Table(
    "customer_scores",
    metadata,
    Column("score_id", Integer, primary_key=True, autoincrement=True),
    Column("customer_id", String(ID_LENGTH), nullable=False),
    Column("scored_at", DateTime, nullable=False, index=True),
    Column("points", Integer, nullable=False),
    Column("segment", String(SEGMENT_LENGTH), nullable=False),
    Column("factors", JSON, nullable=False),  # [{factor, value, unit, points, explanation}]
    Column("cause", String(32), nullable=False),  # daily | payment | status | request
    Index("ix_customer_scores_customer_id", "customer_id", "score_id"),
)

LOYALTY_SCORE_TABLES = (customer_scores,)


def chunks(ids: Sequence[str], size: int = IDS_PER_STATEMENT) -> Iterable[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


async def latest_scores(
    connection: AsyncConnection, customer_ids: Sequence[str] | None = None, *, before: datetime | None = None
) -> dict[str, dict[str, Any]]:
    """The newest row of each customer (of ``customer_ids``, else of everyone), or the newest
    before ``before``: the score in effect then. One grouped query (per 1,000 ids)."""
    if customer_ids is not None and not customer_ids:
        return {}
    groups: Iterable[Sequence[str] | None] = [None] if customer_ids is None else chunks(customer_ids)
    found: dict[str, dict[str, Any]] = {}
    for group in groups:
        newest = select(func.max(customer_scores.c.score_id)).group_by(customer_scores.c.customer_id)
        if before is not None:
            newest = newest.where(customer_scores.c.scored_at < before)
        if group is not None:
            newest = newest.where(customer_scores.c.customer_id.in_(group))
        query = select(customer_scores).where(customer_scores.c.score_id.in_(newest.scalar_subquery()))
        for row in (await connection.execute(query)).mappings():
            found[row["customer_id"]] = dict(row)
    return found


async def insert_scores(connection: AsyncConnection, rows: Sequence[dict[str, object]]) -> None:
    if rows:
        await connection.execute(insert(customer_scores), list(rows))


async def score_history(connection: AsyncConnection, customer_id: str, limit: int) -> list[dict[str, Any]]:
    """A customer's rows, newest first."""
    query = (
        select(customer_scores)
        .where(customer_scores.c.customer_id == customer_id)
        .order_by(customer_scores.c.score_id.desc())
        .limit(limit)
    )
    return [dict(row) for row in (await connection.execute(query)).mappings()]
