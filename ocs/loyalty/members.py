"""Who a loyalty event belongs to: a line's customer, with the customer's kind and segment.

Theory of operation: a member is a customer (``customers.customer_id``); a usage record names a
line (its ``account_id`` is ``lines.line_id``), and the lines table gives the customer. A line never
moves to another customer, so the line -> customer map is cached for good; a customer's segment is
rewritten by scoring (daily, and on events that matter), so the customer part is cached for
``segment_ttl_seconds`` only (five minutes by default: a segment move reaches the rules within
it, and a population of 100,000 customers costs a few hundred ids a second to read again).
``preload`` fills the cache with every line and customer in one query (the engine's start), so
the first hour of traffic does not read its members a batch at a time.
Misses of a batch are read in one query per ``IDS_PER_STATEMENT`` ids, on the caller's connection
(inside the spool's transaction). A record of an account no line names (a subscriber provisioned
straight into the engine) has no member: the rules skip it.

Crediting an event that names no line (a payment, a birthday) goes to the customer's main line:
its oldest line not terminated (``main_lines``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from ocs.db.customers import billing_accounts, customers, lines
from ocs.loyalty.rules import Member

IDS_PER_STATEMENT = 1_000
SEGMENT_TTL_SECONDS = 300.0


class MemberDirectory:
    def __init__(
        self, *, segment_ttl_seconds: float = SEGMENT_TTL_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        self.segment_ttl_seconds = segment_ttl_seconds
        self.clock = clock
        self._customer_of_line: dict[str, str | None] = {}  # None: no such line (cached too)
        self._members: dict[str, tuple[float, Member]] = {}  # customer id -> (read at, member)

    async def of_lines(self, connection: AsyncConnection, line_ids: Iterable[str]) -> dict[str, Member]:
        """The member of each line that has one."""
        wanted = set(line_ids)
        unknown = [line_id for line_id in wanted if line_id not in self._customer_of_line]
        for start in range(0, len(unknown), IDS_PER_STATEMENT):
            chunk = unknown[start : start + IDS_PER_STATEMENT]
            statement = select(lines.c.line_id, lines.c.customer_id).where(lines.c.line_id.in_(chunk))
            found = {str(line_id): str(customer_id) for line_id, customer_id in await connection.execute(statement)}
            for line_id in chunk:
                self._customer_of_line[line_id] = found.get(line_id)
        customer_ids = {self._customer_of_line[line_id] for line_id in wanted} - {None}
        members = await self.of_customers(connection, [item for item in customer_ids if item is not None])
        result: dict[str, Member] = {}
        for line_id in wanted:
            customer_id = self._customer_of_line[line_id]
            if customer_id is not None and customer_id in members:
                result[line_id] = members[customer_id]
        return result

    async def of_customers(self, connection: AsyncConnection, customer_ids: Iterable[str]) -> dict[str, Member]:
        now = self.clock()
        result: dict[str, Member] = {}
        stale: list[str] = []
        for customer_id in set(customer_ids):
            cached = self._members.get(customer_id)
            if cached is not None and now - cached[0] < self.segment_ttl_seconds:
                result[customer_id] = cached[1]
            else:
                stale.append(customer_id)
        for start in range(0, len(stale), IDS_PER_STATEMENT):
            chunk = stale[start : start + IDS_PER_STATEMENT]
            table = customers.c
            statement = select(table.customer_id, table.kind, table.segment).where(table.customer_id.in_(chunk))
            for customer_id, kind, segment in await connection.execute(statement):
                member = Member(str(customer_id), str(kind), None if segment is None else str(segment))
                self._members[member.customer_id] = (now, member)
                result[member.customer_id] = member
        return result

    async def preload(self, connection: AsyncConnection) -> int:
        """Every line's customer, and every customer's kind and segment; returns how many lines."""
        now = self.clock()
        statement = select(lines.c.line_id, customers.c.customer_id, customers.c.kind, customers.c.segment).join(
            customers, customers.c.customer_id == lines.c.customer_id
        )
        count = 0
        for line_id, customer_id, kind, segment in await connection.execute(statement):
            self._customer_of_line[str(line_id)] = str(customer_id)
            if customer_id not in self._members:
                member = Member(str(customer_id), str(kind), None if segment is None else str(segment))
                self._members[member.customer_id] = (now, member)
            count += 1
        return count

    def forget(self) -> None:
        """Drop every cached member (tests, and after a bulk segment change)."""
        self._customer_of_line.clear()
        self._members.clear()


async def customer_of_billing_account(connection: AsyncConnection, billing_account_id: str) -> str | None:
    statement = select(billing_accounts.c.customer_id).where(
        billing_accounts.c.billing_account_id == billing_account_id
    )
    found = (await connection.execute(statement)).scalar_one_or_none()
    return None if found is None else str(found)


async def main_lines(connection: AsyncConnection, customer_ids: Iterable[str]) -> dict[str, str]:
    """Each customer's oldest line not terminated (where a credit without a line of its own goes)."""
    wanted = list(set(customer_ids))
    found: dict[str, str] = {}
    for start in range(0, len(wanted), IDS_PER_STATEMENT):
        statement = (
            select(lines.c.customer_id, lines.c.line_id)
            .where(lines.c.customer_id.in_(wanted[start : start + IDS_PER_STATEMENT]), lines.c.status != "terminated")
            .order_by(lines.c.customer_id, lines.c.created_at, lines.c.line_id)
        )
        for customer_id, line_id in await connection.execute(statement):
            found.setdefault(str(customer_id), str(line_id))
    return found
