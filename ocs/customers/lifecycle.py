"""The lifecycle of customers, company nodes and lines: suspend, resume, bar, terminate, with who,
why and a reason category, applied to every line below and to the engine, resumably.

Theory of operation: each of the three keeps its *own* status (``customers.status``,
``customer_nodes.status``, ``lines.own_status``); a line's *effective* status (``lines.status``,
what the balance engine applies to it) is the worst of its own, every node above it and its
customer's, in the order active < suspended < barred < terminated (a prospect counts as active).
So a customer suspended and then resumed does not resume a line that was suspended on its own,
and a line barred on its own stays barred (the engine keeps the same rule between its accounts:
balance/RULES.md "Effective status").

The allowed changes of an own status are one table, ``TRANSITIONS``; anything else is refused
(409 naming ``status``) before anything is written. Terminated is final. Asking for the status the
entity already has changes nothing (a client's retry), except that it finishes a step of that
entity left unfinished.

A change touches the database and Redis, so it is one recorded, idempotent step (DESIGN.md "The
customer side"):

1. one transaction: the own status, the status history row (``ocs.customers.history``, kinds
   ``customer``, ``node`` and ``line_own``: a line's own change is recorded even when its effective
   status does not move), and a ``lifecycle_steps`` row (who, why, category);
2. every line in scope whose effective status differs gets it, each in its own transaction with
   its history row (same who, why and category); a terminated line's identity rows go (the
   engine's quarantine holds the identities from here, as ``LineStatusMirror`` does);
3. every line's engine account, then every company pool in scope, is set to its effective status
   through the ``EngineStatuses`` port (the provisioning service: it writes only what differs and
   publishes one ``StatusChanged`` per account whose effective status changed, so the charging
   wing's notifier sends the RAR or ASR; the mirror finds the row already so and records nothing);
4. the step row is marked finished.

A crash or a Redis failure anywhere after 1 leaves the step unfinished; ``resume()``, run at
startup, runs 2 to 4 again for every such step (each part writes only what differs), so the
change is finished exactly once. Lines still ``provisioning`` are outside the scope: a new line is
refused under a customer or a node that is not active (``Customers.add_line``), and one that was
still being provisioned when its customer or a node above it changed takes its effective status
when its provisioning finishes, whoever finishes it (``Customers._provision_line``).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.customers import history, records
from ocs.customers.history import EntityKind, ReasonCategory, StatusChange
from ocs.customers.service import CustomerRefusal, EngineAnswer, EngineOutcome, Problem
from ocs.customers.values import Closed, Customer, CustomerStatus, Line, LineStatus, Node, Text, worst
from ocs.db.customers import customer_nodes, customers, lifecycle_steps, line_identities, lines
from ocs.db.schema import utc_naive

log = structlog.get_logger("ocs.customers.lifecycle")


class TargetStatus(enum.StrEnum):
    """What a change asks for: resume (active), suspend, bar, terminate."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    BARRED = "barred"
    TERMINATED = "terminated"


# (own status now, status asked) -> allowed; the rest is refused. Terminated is final; a barred
# entity is resumed or terminated, not "suspended" (that would lift the bar); a prospect has not
# joined: it can only be given up (activation is the first completed order, ocs.customers.orders).
TRANSITIONS = frozenset(
    {
        ("active", "suspended"),
        ("active", "barred"),
        ("active", "terminated"),
        ("suspended", "active"),
        ("suspended", "barred"),
        ("suspended", "terminated"),
        ("barred", "active"),
        ("barred", "terminated"),
        ("prospect", "terminated"),
    }
)
ACTION_OF_STATUS = {"active": "resume", "suspended": "suspend", "barred": "bar", "terminated": "terminate"}


class StatusRequest(Closed):
    """The body of ``PUT .../status``: the status asked, why, and the churn report's category."""

    status: TargetStatus
    reason: Text
    reason_category: ReasonCategory | None = None  # None: ``other`` where a category is counted


class EngineStatuses(Protocol):
    """The engine step: an account's own status in the balance engine (idempotent), published to
    live sessions as an account event. The API door fills it with the provisioning service."""

    async def set_status(
        self, account_id: str, status: LineStatus, reason: str, *, actor: str = ""
    ) -> EngineAnswer: ...


@dataclass(frozen=True, slots=True)
class Step:
    step_id: int
    entity_kind: str  # customer | node | line
    entity_id: str
    customer_id: str
    status: str
    reason: str
    reason_category: ReasonCategory | None
    author: str


def check_transition(now: str, asked: str, what: str) -> None:
    if (now, asked) not in TRANSITIONS:
        raise CustomerRefusal(
            Problem.CONFLICT,
            "status",
            f"{what} is {now}: it cannot be made {asked} ({ACTION_OF_STATUS[asked]} is refused from {now})",
        )


class Lifecycle:
    def __init__(
        self, engine: AsyncEngine, statuses: EngineStatuses, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.engine = engine
        self.statuses = statuses
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- the three doors ------------------------------------------------------------------------

    async def set_customer_status(self, customer_id: str, request: StatusRequest, author: str) -> Customer:
        customer = await records.get_customer(self.engine, customer_id)
        if customer is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "customer_id", f"no customer {customer_id!r}")
        await self._change(EntityKind.CUSTOMER, customer_id, customer_id, customer.status.value, request, author)
        found = await records.get_customer(self.engine, customer_id)
        assert found is not None
        return found

    async def set_node_status(self, customer_id: str, node_id: str, request: StatusRequest, author: str) -> Node:
        node = await records.get_node(self.engine, node_id)
        if node is None or node.customer_id != customer_id:
            raise CustomerRefusal(Problem.NOT_FOUND, "node_id", f"customer {customer_id!r} has no node {node_id!r}")
        await self._check_open_above(customer_id, node.parent_node_id, f"node {node_id!r}")
        await self._change(EntityKind.NODE, node_id, customer_id, node.status.value, request, author)
        found = await records.get_node(self.engine, node_id)
        assert found is not None
        return found

    async def set_line_status(self, line_id: str, request: StatusRequest, author: str) -> Line:
        line = await records.get_line(self.engine, line_id)
        if line is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "line_id", f"no line {line_id!r}")
        if line.status is LineStatus.PROVISIONING:
            raise CustomerRefusal(Problem.CONFLICT, "status", f"line {line_id!r} is still being provisioned")
        await self._check_open_above(line.customer_id, line.node_id, f"line {line_id!r}")
        await self._change(EntityKind.LINE, line_id, line.customer_id, line.own_status.value, request, author)
        found = await records.get_line(self.engine, line_id)
        assert found is not None
        return found

    async def _check_open_above(self, customer_id: str, node_id: str | None, what: str) -> None:
        """Terminated is final for everything under it: a node or line below a terminated customer
        or node takes no change (it could never be usable again)."""
        customer = await records.get_customer(self.engine, customer_id)
        closed = customer is not None and customer.status is CustomerStatus.TERMINATED
        while node_id is not None and not closed:
            node = await records.get_node(self.engine, node_id)
            closed = node is not None and node.status is CustomerStatus.TERMINATED
            node_id = node.parent_node_id if node is not None else None
        if closed:
            raise CustomerRefusal(Problem.CONFLICT, "status", f"{what} is under a terminated customer or node")

    async def _change(
        self, kind: EntityKind, entity_id: str, customer_id: str, now: str, request: StatusRequest, author: str
    ) -> None:
        asked = request.status.value
        if now == asked:  # nothing to change; a step left unfinished is finished now
            for step in await self._unfinished(kind, entity_id):
                await self._run(step)
            return
        check_transition(now, asked, f"{kind.value} {entity_id!r}")
        step = await self._record(kind, entity_id, customer_id, now, request, author)
        log.info("lifecycle_change", kind=kind.value, entity_id=entity_id, status=asked, author=author)
        await self._run(step)

    # -- step 1: recorded -----------------------------------------------------------------------

    async def _record(
        self, kind: EntityKind, entity_id: str, customer_id: str, now: str, request: StatusRequest, author: str
    ) -> Step:
        asked = request.status.value
        table, key, column = {
            EntityKind.CUSTOMER: (customers, customers.c.customer_id, customers.c.status),
            EntityKind.NODE: (customer_nodes, customer_nodes.c.node_id, customer_nodes.c.status),
            EntityKind.LINE: (lines, lines.c.line_id, lines.c.own_status),
        }[kind]
        when = self._now()
        async with self.engine.begin() as connection:
            changed = await connection.execute(
                update(table).where(and_(key == entity_id, column == now)).values({column.name: asked})
            )
            if not changed.rowcount:  # another request changed it meanwhile: nothing written
                raise CustomerRefusal(Problem.CONFLICT, "status", f"{kind.value} {entity_id!r} changed meanwhile")
            # A line's own status has its row too (its effective change gets another, step 2):
            # a change that leaves the effective status as it was is still recorded.
            recorded = EntityKind.LINE_OWN if kind is EntityKind.LINE else kind
            change = StatusChange(
                recorded, entity_id, customer_id, now, asked, when, author, request.reason, request.reason_category
            )
            await history.record(connection, change)
            values = {
                "entity_kind": kind.value,
                "entity_id": entity_id,
                "customer_id": customer_id,
                "status": asked,
                "reason": request.reason,
                "reason_category": request.reason_category.value if request.reason_category else None,
                "author": author,
                "created_at": utc_naive(when),
            }
            step_id = (await connection.execute(insert(lifecycle_steps).values(**values))).inserted_primary_key
        assert step_id is not None
        return Step(
            int(step_id[0]), kind.value, entity_id, customer_id, asked, request.reason, request.reason_category, author
        )

    async def _unfinished(self, kind: EntityKind | None = None, entity_id: str | None = None) -> list[Step]:
        query = select(lifecycle_steps).where(lifecycle_steps.c.finished_at.is_(None))
        if kind is not None:
            query = query.where(
                and_(lifecycle_steps.c.entity_kind == kind.value, lifecycle_steps.c.entity_id == entity_id)
            )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query.order_by(lifecycle_steps.c.step_id))).all()
        return [
            Step(
                row.step_id,
                row.entity_kind,
                row.entity_id,
                row.customer_id,
                row.status,
                row.reason,
                ReasonCategory(row.reason_category) if row.reason_category else None,
                row.author,
            )
            for row in rows
        ]

    # -- steps 2 to 4 ---------------------------------------------------------------------------

    async def _run(self, step: Step) -> None:
        customer = await records.get_customer(self.engine, step.customer_id)
        assert customer is not None
        nodes = {node.node_id: node for node in await records.nodes_of(self.engine, step.customer_id)}
        in_scope = _scope(step, nodes)
        scoped_lines = [
            line
            for line in await records.lines_of(self.engine, step.customer_id)
            if line.status is not LineStatus.PROVISIONING and _covers(step, in_scope, line)
        ]

        def effective(own: str, node_id: str | None) -> LineStatus:
            chain = [customer.status.value, own]
            while node_id is not None:
                chain.append(nodes[node_id].status.value)
                node_id = nodes[node_id].parent_node_id
            return worst(chain)

        wanted = {line.line_id: effective(line.own_status.value, line.node_id) for line in scoped_lines}
        for line in scoped_lines:  # step 2: the rows, each with its history
            if line.status is not wanted[line.line_id]:
                await self._line_row(line, wanted[line.line_id], step)
        for line in scoped_lines:  # step 3: the engine, lines first (their sessions are told)
            self._checked(line.line_id, await self._engine(line.line_id, wanted[line.line_id], step))
        for node in nodes.values():  # then the pools, so nothing new goes under a closed one
            if node.node_id in in_scope and node.account_id is not None and node.account_state == "active":
                status = effective(node.status.value, node.parent_node_id)
                self._checked(node.account_id, await self._engine(node.account_id, status, step))
        async with self.engine.begin() as connection:  # step 4
            await connection.execute(
                update(lifecycle_steps)
                .where(lifecycle_steps.c.step_id == step.step_id)
                .values(finished_at=utc_naive(self._now()))
            )

    async def _engine(self, account_id: str, status: LineStatus, step: Step) -> EngineAnswer:
        return await self.statuses.set_status(account_id, status, step.reason, actor=step.author)

    @staticmethod
    def _checked(account_id: str, answer: EngineAnswer) -> None:
        """A refusal here is the engine's state disagreeing (an account terminated through the
        older ``/subscribers`` status API): logged; the business database keeps its word."""
        if answer.outcome is not EngineOutcome.OK:
            log.error("lifecycle_engine_refused", account_id=account_id, reason=answer.reason)

    async def _line_row(self, line: Line, status: LineStatus, step: Step) -> None:
        async with self.engine.begin() as connection:
            changed = await connection.execute(
                update(lines)
                .where(and_(lines.c.line_id == line.line_id, lines.c.status == line.status.value))
                .values(status=status.value)
            )
            if not changed.rowcount:
                return
            if status is LineStatus.TERMINATED:
                await connection.execute(delete(line_identities).where(line_identities.c.line_id == line.line_id))
            await _line_history(connection, line, status, step, self._now())

    # -- the startup pass -----------------------------------------------------------------------

    async def resume(self) -> int:
        """Finish every step a crash (or Redis down) left unfinished, oldest first; how many."""
        steps = await self._unfinished()
        for step in steps:
            await self._run(step)
        if steps:
            log.warning("lifecycle_steps_resumed", steps=len(steps))
        return len(steps)


def _scope(step: Step, nodes: dict[str, Node]) -> set[str]:
    """The nodes a step covers: all for a customer, the node and those below it for a node."""
    if step.entity_kind == "customer":
        return set(nodes)
    if step.entity_kind == "line":
        return set()
    below: dict[str | None, list[str]] = {}
    for node in nodes.values():
        below.setdefault(node.parent_node_id, []).append(node.node_id)
    found: set[str] = set()
    waiting = [step.entity_id]
    while waiting:
        current = waiting.pop()
        found.add(current)
        waiting += below.get(current, [])
    return found


def _covers(step: Step, in_scope: set[str], line: Line) -> bool:
    if step.entity_kind == "customer":
        return True
    if step.entity_kind == "line":
        return line.line_id == step.entity_id
    return line.node_id in in_scope


async def _line_history(connection: AsyncConnection, line: Line, status: LineStatus, step: Step, now: datetime) -> None:
    category = step.reason_category or ReasonCategory.OTHER
    change = StatusChange(
        EntityKind.LINE,
        line.line_id,
        line.customer_id,
        line.status.value,
        status.value,
        now,
        author=step.author,
        reason=step.reason,
        reason_category=None if status is LineStatus.ACTIVE else category,
    )
    await history.record(connection, change)
