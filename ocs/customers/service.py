"""The customer side's operations: customers, company trees, lines, and the step that makes a
line (or a company node's pool) an account of the balance engine, resumably.

Theory of operation: every operation checks its input against what is stored (the customer and
node exist, the identities are free, the money tree is not deeper than the engine allows) before
anything is written, and refuses with ``CustomerRefusal`` naming the field and a ``Problem`` (the
API maps each to one HTTP status, ``ocs.api.customers``). A change that touches both the database
and Redis is one recorded, idempotent step (DESIGN.md "The customer side"):

1. the row is written with ``status = provisioning`` (a node: ``account_state``), in one transaction;
2. the engine account and its identities are made through ``EngineAccounts.ensure``, which is
   idempotent: an identical account already there counts as made;
3. the row is marked ``active``.

A client's retry of ``add_line`` with the same line id and exactly the same terms, while the row
is still ``provisioning`` (Redis did not answer the first try: a 503), repeats step 2 and 3 instead
of refusing the id as taken. A crash between 1 and 3 leaves the row ``provisioning``; ``resume()``,
run at startup, repeats step 2 and 3 for every such row (nodes first, parents before children, then lines), so the step
is finished exactly once whatever happened to the first try. When the engine refuses (a currency
that is not the plan's, an unknown plan) nothing was made there, so the row is deleted and the
caller told why: a refusal means nothing was applied. When the engine holds the account but an
identity is held elsewhere (``INCOMPLETE``), the row is kept ``provisioning`` (deleting it would
orphan the account) and the caller gets a conflict naming ``identities``; the pass finishes it once
the identity is free. When Redis does not answer, the exception goes up and the row stays
``provisioning`` for the next pass.

The engine's hierarchy mirrors the tree: a node with money is an engine account whose parent is
the nearest ancestor node with money; a line's parent is the nearest such node at or above its
own. The engine takes at most ``MAX_HIERARCHY_LEVELS`` levels, root included (balance/RULES.md
"Company money"), so a deeper money tree is refused (422) naming the field that would deepen it.
This wing reaches the engine only through the ``EngineAccounts`` port, which the API door fills
with the provisioning service: the wing imports no door.
"""

from __future__ import annotations

import enum
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import MAX_HIERARCHY_LEVELS
from ocs.customers import records
from ocs.customers.records import Duplicate
from ocs.customers.values import (
    Customer,
    CustomerList,
    CustomerStatus,
    CustomerTree,
    Line,
    LineStatus,
    NewCustomer,
    NewLine,
    NewNode,
    Node,
    NodeMoney,
    TreeNode,
    worst,
)

log = structlog.get_logger("ocs.customers")

# What a retry must repeat exactly to resume a line left provisioning (``Customers.add_line``).
_LINE_TERMS = (
    "customer_id",
    "node_id",
    "name",
    "network",
    "payment_type",
    "plan",
    "credit_limit_micros",
    "cap_micros",
    "engine_parent_id",
)
# A line's provisioning reads its customer's and nodes' statuses again after writing its row; a
# change seen there is applied and read again, at most this many times (a change after the last
# read finds the row finished and applies itself).
SETTLE_ROUNDS = 3
ID_RANDOM_BYTES = 8  # 64 bits: made ids never collide in practice; a collision is a 409, not a loss


class Problem(enum.StrEnum):
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    REFUSED = "refused"  # well-formed, but the rules refuse it


class CustomerRefusal(Exception):
    """A refused operation: nothing was applied. ``field`` names the input at fault."""

    def __init__(self, problem: Problem, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.problem = problem
        self.field = field
        self.message = f"{field}: {message}"


class EngineOutcome(enum.StrEnum):
    OK = "ok"  # made now, or already there exactly so
    CONFLICT = "conflict"  # an account with this id but other terms, or an identity held elsewhere
    REFUSED = "refused"  # the money rules refuse it (unknown plan, currency, depth)
    # The engine holds (or may hold) something of this id: the account made, an identity held
    # elsewhere. Not "nothing was applied": the row stays provisioning for a retry or the pass.
    INCOMPLETE = "incomplete"


@dataclass(frozen=True, slots=True)
class EngineAccount:
    """An account the engine is asked to hold, with the profile that leads identities to it."""

    account_id: str
    payment_type: str
    currency: str | None  # None: the plan's
    credit_limit_micros: int
    parent_id: str | None
    cap_micros: int
    plan: str | None  # None: the default plan
    network: str
    name: str
    identities: tuple[tuple[str, str], ...]  # (msisdn | imsi | sip, value)
    status: LineStatus = LineStatus.ACTIVE  # the account's (effective) status once made


@dataclass(frozen=True, slots=True)
class EngineAnswer:
    outcome: EngineOutcome
    reason: str = ""


class CreditTerms(Protocol):
    """What the customer's credit class may be offered (``ocs.customers.offers.CreditOffers``)."""

    def check_plan(self, customer: Customer, plan: str, where: str) -> None: ...

    def check_credit(self, customer: Customer, payment_type: str, limit: int, where: str, granted: int) -> None: ...

    async def granted(self, customer_id: str) -> int: ...

    async def deposit_due(
        self, customer: Customer, *, order_id: str | None, line_id: str | None, now: datetime
    ) -> dict[str, object] | None: ...


class EngineAccounts(Protocol):
    @property
    def default_plan(self) -> str: ...

    async def ensure(self, account: EngineAccount) -> EngineAnswer:
        """Make the account and its identities, or find them already made identically; then
        give it ``status`` if it has another (published to live sessions as any change is)."""
        ...


def made_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(ID_RANDOM_BYTES)}"


class Customers:
    def __init__(
        self,
        engine: AsyncEngine,
        accounts: EngineAccounts,
        *,
        clock: Callable[[], float] = time.time,
        credit: CreditTerms | None = None,
    ) -> None:
        self.engine = engine
        self.accounts = accounts
        self.clock = clock
        self.credit = credit  # None: no credit class checked (tests of the tree and the engine step)

    def _assessed(self, customer: Customer) -> CreditTerms | None:
        """The credit terms the direct routes hold this customer to, when it has a class (from an
        application's credit check). A customer the operator made directly, with no class, is not
        assessed (None): the operator's terms stand, recorded in the audit trail (a product order
        still asks for a class before postpaid: ``ocs.customers.orders``)."""
        return self.credit if customer.credit_profile.credit_class is not None else None

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- customers ------------------------------------------------------------------------------

    async def create_customer(self, new: NewCustomer) -> Customer:
        customer_id = new.customer_id or made_id("C")
        root = None
        if new.organization is not None:
            root = records.node_row(
                node_id=made_id("N"),
                customer_id=customer_id,
                parent_node_id=None,
                name=new.organization.name,
                kind="company",
                money=new.money,
                engine_parent_id=None,
                now=self._now(),
            )
            if new.money is not None and new.money.cap_micros:
                raise CustomerRefusal(Problem.REFUSED, "money.cap_micros", "the company's root has no pool above it")
        billing_id = made_id("B") if new.billing_account is not None else None
        try:
            await records.insert_customer(
                self.engine,
                customer_id=customer_id,
                party_id=made_id("P"),
                new=new,
                billing_account_id=billing_id,
                root=root,
                now=self._now(),
            )
        except Duplicate:
            raise CustomerRefusal(Problem.CONFLICT, "customer_id", f"{customer_id!r} already exists") from None
        if root is not None and root["account_id"] is not None:
            root_node = await records.get_node(self.engine, str(root["node_id"]))
            assert root_node is not None
            answer = await self._provision_node(root_node)
            if answer.outcome is not EngineOutcome.OK:
                if answer.outcome is not EngineOutcome.INCOMPLETE:  # else the pass finishes it
                    await records.delete_customer(self.engine, customer_id)
                raise _engine_refusal("money", answer)
        log.info("customer_created", customer_id=customer_id, kind="organization" if root else "individual")
        return await self.customer(customer_id)

    async def customer(self, customer_id: str) -> Customer:
        found = await records.get_customer(self.engine, customer_id)
        if found is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "customer_id", f"no customer {customer_id!r}")
        return found

    async def customers(self, *, status: CustomerStatus | None, limit: int, offset: int) -> CustomerList:
        return CustomerList(
            customers=await records.list_customers(self.engine, status=status, limit=limit, offset=offset)
        )

    # -- company nodes --------------------------------------------------------------------------

    async def add_node(self, customer_id: str, new: NewNode) -> Node:
        customer = await self.customer(customer_id)
        if customer.root_node_id is None:
            raise CustomerRefusal(Problem.REFUSED, "customer_id", "an individual has no company tree")
        parent = await self._node_of(customer_id, new.parent_node_id or customer.root_node_id, "parent_node_id")
        await self._check_open(customer, parent, "parent_node_id")
        money_above = await self._money_chain(parent)
        await self._check_pools_ready(money_above)
        if new.money is not None:
            self._check_depth(len(money_above) + 1, "parent_node_id")
            if new.money.cap_micros and not money_above:
                raise CustomerRefusal(Problem.REFUSED, "money.cap_micros", "no pool above this node to cap")
            credit = self._assessed(customer)
            if credit is not None and new.money.credit_limit_micros > 0:  # a credit line, not a cap
                money = new.money
                granted = await credit.granted(customer_id)
                credit.check_credit(customer, money.payment_type, money.credit_limit_micros, "money.", granted)
        node_id = new.node_id or made_id("N")
        row = records.node_row(
            node_id=node_id,
            customer_id=customer_id,
            parent_node_id=parent.node_id,
            name=new.name,
            kind=new.kind,
            money=new.money,
            engine_parent_id=money_above[0] if money_above else None,
            now=self._now(),
        )
        billing_id = made_id("B") if new.billing_account is not None else None
        try:
            await records.insert_node(self.engine, row, new.billing_account, billing_id, self._now())
        except Duplicate:
            raise CustomerRefusal(Problem.CONFLICT, "node_id", f"{node_id!r} already exists") from None
        node = await records.get_node(self.engine, node_id)
        assert node is not None
        if node.account_id is not None:
            answer = await self._provision_node(node)
            if answer.outcome is not EngineOutcome.OK:
                if answer.outcome is not EngineOutcome.INCOMPLETE:  # else the pass finishes it
                    await records.delete_node(self.engine, node_id)
                raise _engine_refusal("money", answer)
            node = await records.get_node(self.engine, node_id)
            assert node is not None
        log.info("customer_node_added", customer_id=customer_id, node_id=node_id, pool=node.account_id is not None)
        return node

    async def _check_open(self, customer: Customer, node: Node | None, field: str) -> None:
        """Nothing new under a customer or a node that is not active (``ocs.customers.lifecycle``):
        a line made there would be active in the engine while its customer is not."""
        if customer.status not in (CustomerStatus.ACTIVE, CustomerStatus.PROSPECT):
            raise CustomerRefusal(
                Problem.CONFLICT, "customer_id", f"customer {customer.customer_id!r} is {customer.status.value}"
            )
        while node is not None:
            if node.status is not CustomerStatus.ACTIVE:
                raise CustomerRefusal(Problem.CONFLICT, field, f"node {node.node_id!r} is {node.status.value}")
            node = await records.get_node(self.engine, node.parent_node_id) if node.parent_node_id else None

    async def _node_of(self, customer_id: str, node_id: str, field: str) -> Node:
        node = await records.get_node(self.engine, node_id)
        if node is None or node.customer_id != customer_id:
            raise CustomerRefusal(Problem.NOT_FOUND, field, f"customer {customer_id!r} has no node {node_id!r}")
        return node

    async def _money_chain(self, node: Node) -> list[str]:
        """The engine accounts at and above ``node``, nearest first (the engine's parent chain)."""
        chain: list[str] = []
        current: Node | None = node
        while current is not None:
            if current.account_id is not None:
                chain.append(current.account_id)
            current = await records.get_node(self.engine, current.parent_node_id) if current.parent_node_id else None
        return chain

    @staticmethod
    def _check_depth(levels: int, field: str) -> None:
        if levels > MAX_HIERARCHY_LEVELS:
            raise CustomerRefusal(
                Problem.REFUSED,
                field,
                f"the money tree would be {levels} levels deep; the engine holds at most "
                f"{MAX_HIERARCHY_LEVELS}, the root included (balance/types.py MAX_HIERARCHY_LEVELS)",
            )

    async def _provision_node(self, node: Node) -> EngineAnswer:
        """Steps 2 and 3 for a node's pool, with the node's effective status (the worst of its
        own, the nodes' above it and its customer's): the lifecycle skips a pool still
        provisioning, so the statuses are read again once the row is marked active, as for a line
        (``_provision_line``): a change committed before that read is applied here, one after it
        finds the pool active and applies itself."""
        assert node.money is not None and node.account_id is not None
        money: NodeMoney = node.money
        status = await self._chain_status(node.customer_id, [], node.node_id)
        for _ in range(SETTLE_ROUNDS):
            answer = await self.accounts.ensure(
                EngineAccount(
                    account_id=node.account_id,
                    payment_type=money.payment_type,
                    currency=money.currency,
                    credit_limit_micros=money.credit_limit_micros,
                    parent_id=node.engine_parent_id,
                    cap_micros=money.cap_micros,
                    plan=None,
                    network="mobile",
                    name=node.name,
                    identities=(),
                    status=status,
                )
            )
            if answer.outcome is not EngineOutcome.OK:
                return answer
            await records.set_node_account_state(self.engine, node.node_id, "active")
            now = await self._chain_status(node.customer_id, [], node.node_id)
            if now is status:
                break
            status = now
        return answer

    # -- lines ------------------------------------------------------------------------------------

    async def add_line(self, customer_id: str, new: NewLine) -> Line:
        customer = await self.customer(customer_id)
        node: Node | None = None
        if customer.root_node_id is None and new.node_id is not None:
            raise CustomerRefusal(Problem.REFUSED, "node_id", "an individual's lines hang under no node")
        if customer.root_node_id is not None:
            node = await self._node_of(customer_id, new.node_id or customer.root_node_id, "node_id")
        await self._check_open(customer, node, "node_id")
        money_above = await self._money_chain(node) if node is not None else []
        self._check_depth(len(money_above) + 1, "node_id")
        if new.cap_micros and not money_above:
            raise CustomerRefusal(Problem.REFUSED, "cap_micros", "no pool above this line to cap")
        await self._check_pools_ready(money_above)
        plan = new.plan or self.accounts.default_plan
        credit = self._assessed(customer)
        if credit is not None:
            granted = await credit.granted(customer_id)
            left = await records.get_line(self.engine, new.line_id) if new.line_id is not None else None
            if left is not None and left.status is LineStatus.PROVISIONING and left.payment_type == "postpaid":
                granted -= left.credit_limit_micros  # a retry's own line is not credit held besides it
            credit.check_credit(customer, new.payment_type, new.credit_limit_micros, "", granted)
            credit.check_plan(customer, plan, "plan")
        line_id = new.line_id or made_id("L")
        row: dict[str, object] = {
            "line_id": line_id,
            "customer_id": customer_id,
            "node_id": node.node_id if node is not None else None,
            "name": new.name,
            "network": new.network,
            "payment_type": new.payment_type,
            "plan": plan,
            "credit_limit_micros": new.credit_limit_micros,
            "cap_micros": new.cap_micros,
            "engine_parent_id": money_above[0] if money_above else None,
            "status": LineStatus.PROVISIONING.value,  # step 1: recorded before the engine is touched
            "created_at": self._now(),
        }
        left = await self._left_provisioning(row, new)
        line = left if left is not None else await self._recorded(row, new, customer)
        answer = await self._provision_line(line)
        if answer.outcome is EngineOutcome.INCOMPLETE:  # deleting the row would orphan the account
            raise CustomerRefusal(
                Problem.CONFLICT,
                "identities",
                f"{answer.reason}; line {line_id!r} stays provisioning until it is free "
                "(a retry or a restart finishes it)",
            )
        if answer.outcome is not EngineOutcome.OK:
            await records.delete_line(self.engine, line_id)
            raise _engine_refusal("line_id" if answer.outcome is EngineOutcome.CONFLICT else "plan", answer)
        log.info("line_added", customer_id=customer_id, line_id=line_id, plan=line.plan, resumed=left is not None)
        return await self.line(line_id)

    async def _left_provisioning(self, row: dict[str, object], new: NewLine) -> Line | None:
        """The line of this id left ``provisioning`` (Redis did not answer: a 503) with exactly
        these terms, which the client's retry resumes; None when there is none, or its terms differ
        (then the id is a duplicate, refused by ``_recorded``)."""
        if new.line_id is None:
            return None
        left = await records.get_line(self.engine, new.line_id)
        if left is None or left.status is not LineStatus.PROVISIONING:
            return None
        same = all(getattr(left, name) == row[name] for name in _LINE_TERMS)
        wanted = {identity.key for identity in new.identities}
        return left if same and {identity.key for identity in left.identities} == wanted else None

    async def _recorded(self, row: dict[str, object], new: NewLine, customer: Customer) -> Line:
        """Step 1: the row and its identities, after checking the identities are free, with the
        deposit a first postpaid line makes due (``ocs.customers.offers``)."""
        held = await records.identity_holders(self.engine, new.identities)
        for index, identity in enumerate(new.identities):
            if identity.key in held:
                raise CustomerRefusal(
                    Problem.CONFLICT, f"identities.{index}", f"{identity.value} belongs to line {held[identity.key]!r}"
                )
        line_id = str(row["line_id"])
        deposit = None
        credit = self._assessed(customer)
        if credit is not None and new.payment_type == "postpaid":
            deposit = await credit.deposit_due(customer, order_id=None, line_id=line_id, now=self._now())
        try:
            await records.insert_line(self.engine, row, new.identities, deposit)
        except Duplicate:  # the id, or an identity taken by a racing request
            raise CustomerRefusal(
                Problem.CONFLICT, "line_id", f"{line_id!r} or one of its identities is taken"
            ) from None
        line = await records.get_line(self.engine, line_id)
        assert line is not None
        return line

    async def _check_pools_ready(self, money_above: list[str]) -> None:
        for account_id in money_above:
            pool = await records.get_node(self.engine, account_id)  # a node's account id is its node id
            if pool is not None and pool.account_state != "active":
                raise CustomerRefusal(
                    Problem.CONFLICT, "node_id", f"the pool of node {account_id!r} is still being provisioned"
                )

    async def line(self, line_id: str) -> Line:
        found = await records.get_line(self.engine, line_id)
        if found is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "line_id", f"no line {line_id!r}")
        return found

    async def _provision_line(self, line: Line) -> EngineAnswer:
        """Steps 2 and 3: the engine account (idempotent), then the row, both with the line's
        effective status. The lifecycle skips a line still provisioning, so a customer or node
        whose status changed meanwhile is read again once the row is written: a change committed
        before that read is seen here, one committed after it sees the row finished and applies
        itself (``ocs.customers.lifecycle``), so the line never keeps an old status."""
        status = await self._effective_status(line)
        for _ in range(SETTLE_ROUNDS):
            answer = await self.accounts.ensure(
                EngineAccount(
                    account_id=line.line_id,
                    payment_type=line.payment_type,
                    currency=None,
                    credit_limit_micros=line.credit_limit_micros,
                    parent_id=line.engine_parent_id,
                    cap_micros=line.cap_micros,
                    plan=line.plan,
                    network=line.network,
                    name=line.name,
                    identities=tuple(identity.key for identity in line.identities),
                    status=status,
                )
            )
            if answer.outcome is not EngineOutcome.OK:
                return answer
            await records.settle_line(self.engine, line.line_id, status, self._now())
            now = await self._effective_status(line)
            if now is status:
                break
            status = now
        return answer

    async def _effective_status(self, line: Line) -> LineStatus:
        """The worst of the line's own status, its nodes' and its customer's, as stored now."""
        return await self._chain_status(line.customer_id, [line.own_status.value], line.node_id)

    async def _chain_status(self, customer_id: str, own: list[str], node_id: str | None) -> LineStatus:
        """The worst of ``own``, the customer's status and every node's from ``node_id`` up."""
        customer = await self.customer(customer_id)
        chain = [customer.status.value, *own]
        while node_id is not None:
            node = await records.get_node(self.engine, node_id)
            if node is None:
                break
            chain.append(node.status.value)
            node_id = node.parent_node_id
        return worst(chain)

    # -- reading a tree -------------------------------------------------------------------------

    async def tree(self, customer_id: str) -> CustomerTree:
        customer = await self.customer(customer_id)
        nodes = await records.nodes_of(self.engine, customer_id)
        all_lines = await records.lines_of(self.engine, customer_id)
        lines_under: dict[str | None, list[Line]] = {}
        for line in all_lines:
            lines_under.setdefault(line.node_id, []).append(line)
        children: dict[str | None, list[Node]] = {}
        for node in nodes:
            children.setdefault(node.parent_node_id, []).append(node)

        def grown(node: Node) -> TreeNode:
            below = [grown(child) for child in children.get(node.node_id, [])]
            return TreeNode(node=node, lines=lines_under.get(node.node_id, []), children=below)

        roots = children.get(None, [])
        return CustomerTree(customer=customer, lines=lines_under.get(None, []), root=grown(roots[0]) if roots else None)

    # -- the startup pass -----------------------------------------------------------------------

    async def resume(self) -> int:
        """Finish every node pool and line left ``provisioning`` (a crash between the row and the
        engine); how many were finished. Nodes go first, parents before children, since a line's
        or a node's engine parent must exist before it."""
        finished = 0
        pending_nodes = await records.nodes_provisioning(self.engine)
        for node in pending_nodes:  # oldest first: a pool is made only under a finished one (add_node)
            finished += await self._resumed(node.node_id, self._provision_node(node))
        for line in await records.lines_provisioning(self.engine):
            finished += await self._resumed(line.line_id, self._provision_line(line))
        if finished:
            log.warning("customer_provisioning_resumed", finished=finished)
        return finished

    async def _resumed(self, account_id: str, step: Awaitable[EngineAnswer]) -> int:
        answer = await step
        if answer.outcome is not EngineOutcome.OK:
            log.error(
                "customer_provisioning_stuck", account_id=account_id, outcome=answer.outcome, reason=answer.reason
            )
            return 0
        return 1


def _engine_refusal(field: str, answer: EngineAnswer) -> CustomerRefusal:
    problem = Problem.REFUSED if answer.outcome is EngineOutcome.REFUSED else Problem.CONFLICT
    return CustomerRefusal(problem, field, f"the balance engine refused it: {answer.reason}")
