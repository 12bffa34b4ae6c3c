"""The audit trail: who changed what, when, the values before and after, and the outcome.

Theory of operation: every state-changing API call (and every token made or revoked offline) is
one row of ``audit_trail``, written in the same request once the change is known (``ocs.api.server``).
A row names the actor (token id, name and role; for the offline CLI, no token and the name of the
local user), the call (method and route template, the resource id: the account), the values
before and after as JSON (a balance, a status), and the outcome (the HTTP status and a word:
``applied``, ``replayed``, or the error's code, with its message). Refused calls are recorded
too: who tried what is part of the trail. Rows are only ever inserted, never updated.

``read`` filters by time (``since`` inclusive, ``until`` exclusive), account and actor (a name,
or a token id), oldest first, at most ``limit`` rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import JSON, Column, DateTime, Integer, String, Table, Text, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db.schema import metadata, utc_aware, utc_naive

MAX_READ_ROWS = 10_000  # one answer; a longer period is read in pages (``since`` the last one)

audit_trail = Table(
    "audit_trail",
    metadata,
    Column("record_id", Integer, primary_key=True, autoincrement=True),
    Column("occurred_at", DateTime, nullable=False, index=True),  # naive UTC
    Column("token_id", Integer, nullable=True),
    Column("actor_name", String(256), nullable=False),
    Column("actor_role", String(16), nullable=False),
    Column("method", String(16), nullable=False),
    Column("route", String(256), nullable=False),
    Column("resource_id", String(256), nullable=True, index=True),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    Column("status", Integer, nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("detail", Text, nullable=False, default=""),
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    occurred_at: datetime
    token_id: int | None
    actor_name: str
    actor_role: str
    method: str
    route: str
    resource_id: str | None
    status: int
    outcome: str
    before: dict[str, object] | None = None
    after: dict[str, object] | None = None
    detail: str = ""
    record_id: int | None = field(default=None, compare=False)

    def as_json(self) -> dict[str, object]:
        return {
            "record_id": self.record_id,
            "occurred_at": self.occurred_at.isoformat(),
            "actor": {"token_id": self.token_id, "name": self.actor_name, "role": self.actor_role},
            "method": self.method,
            "route": self.route,
            "resource_id": self.resource_id,
            "before": self.before,
            "after": self.after,
            "status": self.status,
            "outcome": self.outcome,
            "detail": self.detail,
        }


def _row_values(entry: AuditEntry) -> dict[str, object]:
    return {
        "occurred_at": utc_naive(entry.occurred_at),
        "token_id": entry.token_id,
        "actor_name": entry.actor_name,
        "actor_role": entry.actor_role,
        "method": entry.method,
        "route": entry.route,
        "resource_id": entry.resource_id,
        "before": entry.before,
        "after": entry.after,
        "status": entry.status,
        "outcome": entry.outcome,
        "detail": entry.detail,
    }


async def record(engine: AsyncEngine, entries: list[AuditEntry]) -> None:
    """Insert the entries, all or none, in one transaction."""
    if not entries:
        return
    async with engine.begin() as connection:
        await connection.execute(insert(audit_trail), [_row_values(entry) for entry in entries])


async def read(
    engine: AsyncEngine,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    account_id: str | None = None,
    actor: str | None = None,
    limit: int = MAX_READ_ROWS,
) -> list[AuditEntry]:
    query = select(audit_trail).order_by(audit_trail.c.record_id).limit(min(limit, MAX_READ_ROWS))
    if since is not None:
        query = query.where(audit_trail.c.occurred_at >= utc_naive(since))
    if until is not None:
        query = query.where(audit_trail.c.occurred_at < utc_naive(until))
    if account_id is not None:
        query = query.where(audit_trail.c.resource_id == account_id)
    if actor is not None:
        by_name = audit_trail.c.actor_name == actor
        query = query.where(or_(by_name, audit_trail.c.token_id == int(actor)) if actor.isdigit() else by_name)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return [
        AuditEntry(
            occurred_at=utc_aware(values["occurred_at"]),
            token_id=values["token_id"],
            actor_name=values["actor_name"],
            actor_role=values["actor_role"],
            method=values["method"],
            route=values["route"],
            resource_id=values["resource_id"],
            status=values["status"],
            outcome=values["outcome"],
            before=values["before"],
            after=values["after"],
            detail=values["detail"],
            record_id=values["record_id"],
        )
        for values in (row._mapping for row in rows)
    ]
