"""Notes and trouble tickets on the real stores (SQLite and a private PostgreSQL): notes newest
first, the ticket workflow's table (every allowed move recorded with who, when, why; every other
move refused naming the field), a race of two moves, and the status history customers and lines
write as they are made."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.api.customers import ProvisioningAccounts
from ocs.api.provisioning import Provisioning
from ocs.customers import history
from ocs.customers.interactions import (
    TRANSITIONS,
    Channel,
    Interactions,
    NewNote,
    NewTroubleTicket,
    TicketStatus,
    TroubleTicketUpdate,
)
from ocs.customers.service import CustomerRefusal, Customers, Problem
from ocs.customers.values import NewLine
from tests.ocs.postgres_support import business_database, postgresql_url
from tests.ocs.test_customers import CLEARED, ana, provisioning

__all__ = ["postgresql_url", "provisioning"]

INTERACTION_TABLES = ("trouble_ticket_history", "trouble_tickets", "customer_notes", "status_changes")


class Clock:
    """A clock the test moves: times in the store are exact, never read from the wall."""

    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 9, 0, tzinfo=UTC).timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, (*INTERACTION_TABLES, *CLEARED)) as made:
        yield made
        async with made.begin() as connection:  # the session's PostgreSQL is shared: leave no rows
            for table in (*INTERACTION_TABLES, *CLEARED):  # that another module's cleanup would trip on
                await connection.execute(text(f"DELETE FROM {table}"))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def customers(database: AsyncEngine, provisioning: Provisioning, clock: Clock) -> Customers:
    return Customers(database, ProvisioningAccounts(provisioning), clock=clock)


@pytest.fixture
def interactions(database: AsyncEngine, clock: Clock) -> Interactions:
    return Interactions(database, clock=clock)


async def test_notes_are_listed_newest_first_with_their_author_and_channel(
    customers: Customers, interactions: Interactions, clock: Clock
) -> None:
    await customers.create_customer(ana())
    first = await interactions.add_note("ana", NewNote(text="asked about roaming", channel=Channel.PHONE), "carla")
    clock.advance(60)
    second = await interactions.add_note("ana", NewNote(text="sent the tariff sheet", channel=Channel.EMAIL), "dan")
    listed = (await interactions.notes("ana")).notes
    assert listed == [second, first]
    assert (first.author, first.channel, first.created_at) == (
        "carla",
        Channel.PHONE,
        datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    )
    with pytest.raises(CustomerRefusal) as refused:
        await interactions.add_note("nobody", NewNote(text="x"), "carla")
    assert (refused.value.problem, refused.value.field) == (Problem.NOT_FOUND, "customer_id")


async def test_a_ticket_moves_through_its_table_and_keeps_every_move(
    customers: Customers, interactions: Interactions, clock: Clock
) -> None:
    await customers.create_customer(ana())
    await customers.add_line("ana", NewLine(line_id="ana-1"))
    ticket = await interactions.open_ticket(
        NewTroubleTicket(
            ticket_id="T1", customer_id="ana", line_id="ana-1", name="no data", description="since Monday"
        ),
        "carla",
    )
    assert ticket.status is TicketStatus.ACKNOWLEDGED and ticket.line_id == "ana-1"
    path = [TicketStatus.IN_PROGRESS, TicketStatus.PENDING, TicketStatus.IN_PROGRESS, TicketStatus.RESOLVED]
    for status in [*path, TicketStatus.CLOSED]:
        clock.advance(10)
        ticket = await interactions.move_ticket(
            "T1", TroubleTicketUpdate(status=status, status_change_reason=f"to {status}"), "dan"
        )
    moves = [(move.from_status, move.status, move.author) for move in ticket.status_change_history]
    assert moves[0] == (None, TicketStatus.ACKNOWLEDGED, "carla")
    assert [move[1] for move in moves[1:]] == [*path, TicketStatus.CLOSED]
    assert ticket.status_change_history[-1].reason == "to closed" and ticket.updated_at > ticket.created_at
    with pytest.raises(CustomerRefusal) as refused:  # closed is final
        await interactions.move_ticket(
            "T1", TroubleTicketUpdate(status=TicketStatus.IN_PROGRESS, status_change_reason="again"), "dan"
        )
    assert (refused.value.problem, refused.value.field) == (Problem.REFUSED, "status")
    assert "final" in refused.value.message
    assert (await interactions.ticket("T1")).status_change_history == ticket.status_change_history  # nothing written


@pytest.mark.parametrize("old", list(TicketStatus))
@pytest.mark.parametrize("new", list(TicketStatus))
def test_the_table_allows_the_workflow_and_nothing_else(old: TicketStatus, new: TicketStatus) -> None:
    final = {TicketStatus.CLOSED, TicketStatus.CANCELLED}
    if old in final or old is new:
        assert (old, new) not in TRANSITIONS
    reachable = {TicketStatus.ACKNOWLEDGED} | {to for _, to in TRANSITIONS}
    assert set(TicketStatus) == reachable


async def test_a_ticket_refuses_a_line_of_another_customer_and_a_taken_id(
    customers: Customers, interactions: Interactions
) -> None:
    await customers.create_customer(ana())
    await customers.create_customer(
        ana(customer_id="bea", individual={"given_name": "B", "family_name": "E", "birth_date": "1991-01-01"})
    )
    await customers.add_line("bea", NewLine(line_id="bea-1"))
    with pytest.raises(CustomerRefusal) as refused:
        await interactions.open_ticket(
            NewTroubleTicket(customer_id="ana", line_id="bea-1", name="n", description="d"), "c"
        )
    assert (refused.value.problem, refused.value.field) == (Problem.REFUSED, "line_id")
    new = NewTroubleTicket(ticket_id="T2", customer_id="ana", name="n", description="d")
    await interactions.open_ticket(new, "c")
    with pytest.raises(CustomerRefusal) as taken:
        await interactions.open_ticket(new, "c")
    assert (taken.value.problem, taken.value.field) == (Problem.CONFLICT, "ticket_id")
    listed = await interactions.tickets(customer_id="ana", status=TicketStatus.ACKNOWLEDGED, limit=10, offset=0)
    assert [ticket.ticket_id for ticket in listed.tickets] == ["T2"]


async def test_two_moves_decided_on_one_status_cannot_both_apply(
    customers: Customers, interactions: Interactions
) -> None:
    await customers.create_customer(ana())
    await interactions.open_ticket(NewTroubleTicket(ticket_id="T3", customer_id="ana", name="n", description="d"), "c")
    stale = Interactions(interactions.engine)
    real_ticket = stale.ticket

    async def read_before_the_other_move(ticket_id: str):  # type: ignore[no-untyped-def]
        found = await real_ticket(ticket_id)
        await interactions.move_ticket(
            ticket_id, TroubleTicketUpdate(status=TicketStatus.CANCELLED, status_change_reason="dup"), "x"
        )
        return found

    stale.ticket = read_before_the_other_move  # type: ignore[method-assign]
    with pytest.raises(CustomerRefusal) as refused:
        await stale.move_ticket(
            "T3", TroubleTicketUpdate(status=TicketStatus.IN_PROGRESS, status_change_reason="go"), "y"
        )
    assert refused.value.problem is Problem.CONFLICT
    final = await interactions.ticket("T3")
    assert final.status is TicketStatus.CANCELLED and len(final.status_change_history) == 2


async def test_customers_and_lines_record_their_status_history(customers: Customers, clock: Clock) -> None:
    await customers.create_customer(ana())
    clock.advance(3600)
    await customers.add_line("ana", NewLine(line_id="ana-1"))
    changes = await history.read(customers.engine, until=datetime(2027, 1, 1, tzinfo=UTC))
    start = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
    assert [(c.entity_kind, c.entity_id, c.from_status, c.to_status, c.changed_at) for c in changes] == [
        (history.EntityKind.CUSTOMER, "ana", None, "active", start),
        (history.EntityKind.LINE, "ana-1", "provisioning", "active", start + timedelta(hours=1)),
    ]
