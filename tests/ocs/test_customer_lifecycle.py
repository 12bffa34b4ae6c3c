"""The customer lifecycle (ocs/customers/lifecycle.py) on the real stores: every query on SQLite and
on a private PostgreSQL, every engine account in a real Redis through the provisioning service.

A customer's, a node's and a line's own statuses; a line's effective status (the worst of them) in
its row and in the engine; the transition table; the history with who, why and the category; and
the recorded step a crash half-way through the lines leaves for the startup pass to finish."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.errors import BalanceUnavailable
from balance.types import AccountStatus
from ocs.api.orders import EngineLines
from ocs.api.provisioning import Provisioning
from ocs.customers import history
from ocs.customers.history import EntityKind, ReasonCategory
from ocs.customers.lifecycle import Lifecycle, StatusRequest, TargetStatus, worst
from ocs.customers.service import CustomerRefusal, Customers, EngineAccount, EngineAnswer, Problem
from ocs.customers.values import CustomerStatus, LineStatus, NewLine, NewNode
from ocs.db.customers import lifecycle_steps
from tests.ocs.postgres_support import business_database, postgresql_url
from tests.ocs.test_customers import acme, ana, customers, provisioning

__all__ = ["customers", "postgresql_url", "provisioning"]

CLEARED = (
    "lifecycle_steps",
    "status_changes",
    "line_identities",
    "lines",
    "billing_accounts",
    "customer_nodes",
    "customers",
    "parties",
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, CLEARED) as made:
        yield made


@pytest.fixture
def lifecycle(database: AsyncEngine, provisioning: Provisioning) -> Lifecycle:
    return Lifecycle(database, EngineLines(provisioning))


def _far() -> datetime:
    return datetime(2200, 1, 1, tzinfo=UTC)


def asked(status: str, reason: str = "asked", category: str | None = None) -> StatusRequest:
    return StatusRequest.model_validate({"status": status, "reason": reason, "reason_category": category})


def line(line_id: str, msisdn: str, **fields: object) -> NewLine:
    return NewLine.model_validate({"line_id": line_id, "identities": [{"kind": "msisdn", "value": msisdn}], **fields})


async def engine_status(provisioning: Provisioning, account_id: str) -> AccountStatus:
    return (await provisioning.view(account_id)).account.status


async def statuses(customers: Customers, *line_ids: str) -> list[tuple[str, str]]:
    """Each line's (effective, own) status in its row."""
    found = [await customers.line(line_id) for line_id in line_ids]
    return [(one.status.value, one.own_status.value) for one in found]


def test_the_effective_status_is_the_worst() -> None:
    assert worst(["active", "suspended", "active"]) is LineStatus.SUSPENDED
    assert worst(["barred", "suspended"]) is LineStatus.BARRED
    assert worst(["prospect", "active"]) is LineStatus.ACTIVE
    assert worst(["terminated", "barred"]) is LineStatus.TERMINATED


async def test_a_customer_suspended_then_resumed_keeps_a_line_suspended_on_its_own(
    customers: Customers, lifecycle: Lifecycle, provisioning: Provisioning
) -> None:
    await customers.create_customer(ana())
    await customers.add_line("ana", line("ana-1", "4915100000301"))
    await customers.add_line("ana", line("ana-2", "4915100000302"))
    await lifecycle.set_line_status("ana-1", asked("suspended", "lost phone", "voluntary"), "care-1")

    customer = await lifecycle.set_customer_status("ana", asked("suspended", "invoice unpaid", "collections"), "care-2")
    assert customer.status is CustomerStatus.SUSPENDED
    assert await statuses(customers, "ana-1", "ana-2") == [("suspended", "suspended"), ("suspended", "active")]
    assert await engine_status(provisioning, "ana-2") is AccountStatus.SUSPENDED

    await lifecycle.set_customer_status("ana", asked("active", "paid"), "care-2")
    assert await statuses(customers, "ana-1", "ana-2") == [("suspended", "suspended"), ("active", "active")]
    assert await engine_status(provisioning, "ana-1") is AccountStatus.SUSPENDED  # its own suspension stands
    assert await engine_status(provisioning, "ana-2") is AccountStatus.ACTIVE

    # Who, why and the category: on the customer's row and on each line it changed.
    changes = [
        (change.entity_kind, change.entity_id, change.to_status, change.author, change.reason, change.reason_category)
        for change in await history.read(lifecycle.engine, until=_far())
        if change.from_status is not None and change.from_status != "provisioning"
    ]
    collections = ReasonCategory.COLLECTIONS
    assert changes == [
        (EntityKind.LINE_OWN, "ana-1", "suspended", "care-1", "lost phone", ReasonCategory.VOLUNTARY),
        (EntityKind.LINE, "ana-1", "suspended", "care-1", "lost phone", ReasonCategory.VOLUNTARY),
        (EntityKind.CUSTOMER, "ana", "suspended", "care-2", "invoice unpaid", collections),
        (EntityKind.LINE, "ana-2", "suspended", "care-2", "invoice unpaid", collections),
        (EntityKind.CUSTOMER, "ana", "active", "care-2", "paid", None),
        (EntityKind.LINE, "ana-2", "active", "care-2", "paid", None),
    ]


async def test_a_line_s_own_change_that_leaves_its_effective_status_is_in_the_status_history(
    customers: Customers, lifecycle: Lifecycle
) -> None:
    """Suspended on its own while its customer is suspended: the effective status stays
    ``suspended``, but the change asked of the line is recorded with who, when and why."""
    await customers.create_customer(ana())
    await customers.add_line("ana", line("ana-1", "4915100000305"))
    await lifecycle.set_customer_status("ana", asked("suspended", "invoice unpaid", "collections"), "care-2")
    before = await history.read(lifecycle.engine, until=_far(), entity_kind=EntityKind.LINE)

    await lifecycle.set_line_status("ana-1", asked("suspended", "lost phone", "voluntary"), "care-1")
    assert await statuses(customers, "ana-1") == [("suspended", "suspended")]
    assert await history.read(lifecycle.engine, until=_far(), entity_kind=EntityKind.LINE) == before
    own = await history.read(lifecycle.engine, until=_far(), entity_kind=EntityKind.LINE_OWN)
    assert [
        (change.entity_id, change.from_status, change.to_status, change.author, change.reason, change.reason_category)
        for change in own
    ] == [("ana-1", "active", "suspended", "care-1", "lost phone", ReasonCategory.VOLUNTARY)]


@pytest.mark.parametrize(
    ("path", "refused"),
    [
        (["terminated"], "active"),
        (["terminated"], "suspended"),
        (["barred"], "suspended"),
        ([], "prospect"),
    ],
)
async def test_a_transition_the_table_refuses_changes_nothing(
    customers: Customers, lifecycle: Lifecycle, provisioning: Provisioning, path: list[str], refused: str
) -> None:
    await customers.create_customer(ana())
    await customers.add_line("ana", line("ana-1", "4915100000311"))
    for status in path:
        await lifecycle.set_customer_status("ana", asked(status), "care")
    before = await history.read(lifecycle.engine, until=_far())
    line_before = await customers.line("ana-1")
    if refused == "prospect":  # not a status anyone may ask for: the body is refused
        with pytest.raises(ValueError, match="status"):
            asked(refused)
        return
    with pytest.raises(CustomerRefusal) as refusal:
        await lifecycle.set_customer_status("ana", asked(refused), "care")
    assert refusal.value.problem is Problem.CONFLICT and refusal.value.field == "status"
    assert await history.read(lifecycle.engine, until=_far()) == before
    assert await customers.line("ana-1") == line_before
    assert (await customers.customer("ana")).status.value == path[-1]


async def test_asking_again_changes_nothing(customers: Customers, lifecycle: Lifecycle) -> None:
    await customers.create_customer(ana())
    await customers.add_line("ana", line("ana-1", "4915100000321"))
    await lifecycle.set_customer_status("ana", asked("barred", "fraud: sim box", "fraud"), "care")
    before = await history.read(lifecycle.engine, until=_far())
    again = await lifecycle.set_customer_status("ana", asked("barred", "fraud: sim box", "fraud"), "care")
    assert again.status is CustomerStatus.BARRED
    assert await history.read(lifecycle.engine, until=_far()) == before


class FailingAfter:
    """The engine port, failing (Redis gone) after ``calls`` calls: a crash half-way."""

    def __init__(self, real: EngineLines, calls: int) -> None:
        self.real = real
        self.left = calls

    async def set_status(self, account_id: str, status: LineStatus, reason: str, *, actor: str = "") -> EngineAnswer:
        if self.left == 0:
            raise BalanceUnavailable("Redis went away")
        self.left -= 1
        return await self.real.set_status(account_id, status, reason, actor=actor)


async def test_a_crash_half_way_through_the_lines_is_finished_by_the_restart_pass(
    customers: Customers, database: AsyncEngine, provisioning: Provisioning
) -> None:
    await customers.create_customer(acme())
    made = [f"acme-{number}" for number in range(4)]
    for number, line_id in enumerate(made):
        await customers.add_line("acme", line(line_id, f"49151000004{number:02d}"))
    real = EngineLines(provisioning)
    crashing = Lifecycle(database, FailingAfter(real, 2))
    with pytest.raises(BalanceUnavailable):
        await crashing.set_customer_status("acme", asked("barred", "fraud ring", "fraud"), "risk")
    engine_now = [await engine_status(provisioning, line_id) for line_id in made]
    assert engine_now.count(AccountStatus.BARRED) == 2 and engine_now.count(AccountStatus.ACTIVE) == 2
    async with database.connect() as connection:
        unfinished = (await connection.execute(select(lifecycle_steps.c.finished_at))).scalars().all()
    assert unfinished == [None]

    assert await Lifecycle(database, real).resume() == 1  # the startup pass
    assert [await engine_status(provisioning, line_id) for line_id in made] == [AccountStatus.BARRED] * 4
    root = (await customers.customer("acme")).root_node_id
    assert root is not None and await engine_status(provisioning, root) is AccountStatus.BARRED  # the pool too
    assert all(status == ("barred", "active") for status in await statuses(customers, *made))
    line_changes = [
        change
        for change in await history.read(database, until=_far(), entity_kind=EntityKind.LINE)
        if change.to_status == "barred"
    ]
    assert sorted(change.entity_id for change in line_changes) == made  # each recorded once
    assert await Lifecycle(database, real).resume() == 0


class RedisDown:
    """The engine-accounts port while Redis does not answer: a line's step 1 is left provisioning."""

    default_plan = "mobile_prepaid"

    async def ensure(self, account: EngineAccount) -> EngineAnswer:
        raise BalanceUnavailable("Redis went away")


async def test_a_line_still_provisioning_takes_its_customer_s_status_when_it_is_finished(
    customers: Customers, database: AsyncEngine, lifecycle: Lifecycle, provisioning: Provisioning
) -> None:
    """The lifecycle skips a line still provisioning; the pass that finishes it gives it the
    status its customer has by then, in its row and in the engine, and the customer's resume then
    resumes it like any other line."""
    await customers.create_customer(ana())
    await customers.add_line("ana", line("ana-1", "4915100000331"))
    with pytest.raises(BalanceUnavailable):
        await Customers(database, RedisDown()).add_line("ana", line("ana-2", "4915100000332"))
    assert (await customers.line("ana-2")).status is LineStatus.PROVISIONING

    await lifecycle.set_customer_status("ana", asked("suspended", "invoice unpaid", "collections"), "care")
    assert await customers.resume() == 1  # the startup pass (or the client's retry) finishes it
    assert await statuses(customers, "ana-1", "ana-2") == [("suspended", "active"), ("suspended", "active")]
    assert await engine_status(provisioning, "ana-2") is AccountStatus.SUSPENDED
    made = [
        (change.from_status, change.to_status)
        for change in await history.read(database, until=_far(), entity_kind=EntityKind.LINE)
        if change.entity_id == "ana-2"
    ]
    assert made == [("provisioning", "suspended")]

    await lifecycle.set_customer_status("ana", asked("active", "paid"), "care")
    assert await statuses(customers, "ana-1", "ana-2") == [("active", "active"), ("active", "active")]
    assert await engine_status(provisioning, "ana-2") is AccountStatus.ACTIVE


async def test_a_company_node_changes_every_line_under_it_and_only_those(
    customers: Customers, lifecycle: Lifecycle, provisioning: Provisioning
) -> None:
    await customers.create_customer(acme())
    await customers.add_node("acme", NewNode(node_id="sales", name="Sales"))
    await customers.add_node("acme", NewNode(node_id="north", parent_node_id="sales", name="North", kind="department"))
    await customers.add_line("acme", line("s-1", "4915100000501", node_id="north"))
    await customers.add_line("acme", line("hq-1", "4915100000502"))

    node = await lifecycle.set_node_status("acme", "sales", asked("suspended", "budget spent", "other"), "admin")
    assert node.status is CustomerStatus.SUSPENDED
    assert await statuses(customers, "s-1", "hq-1") == [("suspended", "active"), ("active", "active")]
    assert await engine_status(provisioning, "s-1") is AccountStatus.SUSPENDED
    assert await engine_status(provisioning, "hq-1") is AccountStatus.ACTIVE
    with pytest.raises(CustomerRefusal) as refusal:  # nothing new under a suspended node
        await customers.add_line("acme", line("s-2", "4915100000503", node_id="north"))
    assert refusal.value.field == "node_id" and refusal.value.problem is Problem.CONFLICT

    # The customer's termination is final for everything it has; the node's own status stays.
    await lifecycle.set_customer_status("acme", asked("terminated", "moved away", "voluntary"), "admin")
    assert await statuses(customers, "s-1", "hq-1") == [("terminated", "active"), ("terminated", "active")]
    assert await engine_status(provisioning, "hq-1") is AccountStatus.TERMINATED
    with pytest.raises(CustomerRefusal) as refusal:  # nothing under a terminated customer comes back
        await lifecycle.set_node_status("acme", "sales", asked("active", "back"), "admin")
    assert refusal.value.field == "status"
    with pytest.raises(CustomerRefusal) as refusal:
        await customers.add_line("acme", line("hq-2", "4915100000504"))
    assert refusal.value.field == "customer_id"


async def test_unknown_entities_are_not_found(customers: Customers, lifecycle: Lifecycle) -> None:
    await customers.create_customer(ana())
    for call, field in (
        (lifecycle.set_customer_status("nobody", asked("suspended"), "care"), "customer_id"),
        (lifecycle.set_node_status("ana", "none", asked("suspended"), "care"), "node_id"),
        (lifecycle.set_line_status("none", asked("suspended"), "care"), "line_id"),
    ):
        with pytest.raises(CustomerRefusal) as refusal:
            await call
        assert refusal.value.problem is Problem.NOT_FOUND and refusal.value.field == field


def test_a_status_request_names_each_field_it_refuses() -> None:
    for body, field in (
        ({"status": "paused", "reason": "x"}, "status"),
        ({"status": "suspended", "reason": ""}, "reason"),
        ({"status": "suspended", "reason": "x", "reason_category": "whim"}, "reason_category"),
        ({"status": "suspended", "reason": "x", "colour": "red"}, "colour"),
    ):
        with pytest.raises(ValueError, match=field):
            StatusRequest.model_validate(body)
    assert StatusRequest(status=TargetStatus.BARRED, reason="x").reason_category is None
