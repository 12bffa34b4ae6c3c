"""Interactions with a customer: notes, and trouble tickets (TMF621) with their status history.

Theory of operation: a note is a line of text a member of staff writes about a customer: the
channel the customer used (phone, email, shop, web, other), the author (the API token's name),
the time; notes are read newest first and never changed. A trouble ticket (TMF621 TroubleTicket)
is a problem a customer reported, optionally about one of its lines, with a severity and a
status that moves through ``TRANSITIONS``, a table as STYLE.md asks of the business's state
machines: a move not in the table is refused (422 naming ``status``), and every move, the opening
included, is one history row (who, when, why) written in the transaction that moves the status.
Two staff moving one ticket at once cannot both win: the update is conditional on the status
read, and the loser is told (409).

Refusals are ``CustomerRefusal`` (``ocs.customers.service``) naming the field; the API maps each
``Problem`` to one HTTP status (``ocs.api.customers.PROBLEM_ERRORS``).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field
from sqlalchemy import ColumnElement, and_, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.customers import records
from ocs.customers.service import CustomerRefusal, Problem, made_id
from ocs.customers.values import Closed, EntityId
from ocs.db.interactions import customer_notes, trouble_ticket_history, trouble_tickets
from ocs.db.schema import utc_aware, utc_naive

MAX_NOTE_CHARACTERS = 4_000  # a call summary, not a document
MAX_LIST_ROWS = 1_000

LongText = Annotated[str, Field(min_length=1, max_length=MAX_NOTE_CHARACTERS)]


class Channel(enum.StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    SHOP = "shop"
    WEB = "web"
    OTHER = "other"


class Severity(enum.StrEnum):
    """TMF621 ``severity`` is free text; these three are the values its examples use."""

    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"


class TicketStatus(enum.StrEnum):
    """TMF621 TroubleTicketStatusType values (camelCase as TMF621 writes them)."""

    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "inProgress"
    PENDING = "pending"  # waiting for the customer or a third party
    RESOLVED = "resolved"
    CLOSED = "closed"
    CANCELLED = "cancelled"


S = TicketStatus
# (from, to) -> why the move exists. Anything not here is refused; closed and cancelled are final.
TRANSITIONS: dict[tuple[TicketStatus, TicketStatus], str] = {
    (S.ACKNOWLEDGED, S.IN_PROGRESS): "work starts",
    (S.ACKNOWLEDGED, S.PENDING): "waiting before work can start",
    (S.ACKNOWLEDGED, S.CANCELLED): "not a problem, or withdrawn",
    (S.IN_PROGRESS, S.PENDING): "waiting for the customer or a third party",
    (S.IN_PROGRESS, S.RESOLVED): "fixed",
    (S.IN_PROGRESS, S.CANCELLED): "withdrawn",
    (S.PENDING, S.IN_PROGRESS): "the answer came",
    (S.PENDING, S.CANCELLED): "no answer came, or withdrawn",
    (S.RESOLVED, S.CLOSED): "the customer confirmed, or the wait ran out",
    (S.RESOLVED, S.IN_PROGRESS): "reopened: not fixed after all",
}
OPENED_AS = S.ACKNOWLEDGED


class NewNote(Closed):
    text: LongText
    channel: Channel = Channel.OTHER


class Note(Closed):
    note_id: int
    customer_id: str
    channel: Channel
    text: str
    author: str
    created_at: datetime


class NoteList(Closed):
    notes: list[Note]  # newest first


class NewTroubleTicket(Closed):
    ticket_id: EntityId | None = None  # None: one is made
    customer_id: EntityId
    line_id: EntityId | None = None  # the related line, one of the customer's
    name: Annotated[str, Field(min_length=1, max_length=256)]
    description: LongText
    ticket_type: Annotated[str, Field(pattern=r"^[a-z][a-z_]{0,31}$")] = "complaint"
    severity: Severity = Severity.MINOR


class TroubleTicketUpdate(Closed):
    """TMF621 PATCH: the new status and why (``statusChangeReason``)."""

    status: TicketStatus
    status_change_reason: LongText


class StatusChangeRecord(Closed):
    """TMF621 StatusChange: one move, the opening included (``from_status`` None)."""

    from_status: TicketStatus | None
    status: TicketStatus
    author: str
    reason: str
    changed_at: datetime


class TroubleTicket(Closed):
    ticket_id: str
    customer_id: str
    line_id: str | None
    name: str
    description: str
    ticket_type: str
    severity: Severity
    status: TicketStatus
    created_by: str
    created_at: datetime
    updated_at: datetime
    status_change_history: list[StatusChangeRecord]  # oldest first


class TroubleTicketList(Closed):
    tickets: list[TroubleTicket]


def _history_row(
    ticket_id: str, old: TicketStatus | None, new: TicketStatus, author: str, reason: str, now: datetime
) -> dict[str, object]:
    return {
        "ticket_id": ticket_id,
        "from_status": old.value if old is not None else None,
        "to_status": new.value,
        "author": author,
        "reason": reason,
        "changed_at": utc_naive(now),
    }


async def _tickets(connection: AsyncConnection, condition: Any, limit: int, offset: int) -> list[TroubleTicket]:
    query = select(trouble_tickets).where(condition).order_by(trouble_tickets.c.created_at.desc())
    rows = [dict(row._mapping) for row in (await connection.execute(query.limit(limit).offset(offset))).all()]
    ids = [values["ticket_id"] for values in rows]
    moves: dict[str, list[StatusChangeRecord]] = {}
    history = select(trouble_ticket_history).where(trouble_ticket_history.c.ticket_id.in_(ids))
    for row in (await connection.execute(history.order_by(trouble_ticket_history.c.record_id))).all():
        moves.setdefault(row.ticket_id, []).append(
            StatusChangeRecord(
                from_status=TicketStatus(row.from_status) if row.from_status is not None else None,
                status=TicketStatus(row.to_status),
                author=row.author,
                reason=row.reason,
                changed_at=utc_aware(row.changed_at),
            )
        )
    return [
        TroubleTicket(
            **{
                **values,
                "created_at": utc_aware(values["created_at"]),
                "updated_at": utc_aware(values["updated_at"]),
                "status_change_history": moves.get(values["ticket_id"], []),
            }
        )
        for values in rows
    ]


class Interactions:
    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.clock = clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def _customer_exists(self, customer_id: str, field: str) -> None:
        if await records.get_customer(self.engine, customer_id) is None:
            raise CustomerRefusal(Problem.NOT_FOUND, field, f"no customer {customer_id!r}")

    # -- notes ----------------------------------------------------------------------------------

    async def add_note(self, customer_id: str, new: NewNote, author: str) -> Note:
        await self._customer_exists(customer_id, "customer_id")
        now = utc_naive(self._now())
        row = {"customer_id": customer_id, "channel": new.channel.value, "text": new.text, "author": author}
        async with self.engine.begin() as connection:
            made = await connection.execute(insert(customer_notes).values(**row, created_at=now))
            note_id = made.inserted_primary_key[0] if made.inserted_primary_key else None
        assert note_id is not None
        return Note(note_id=note_id, **row, created_at=utc_aware(now))  # type: ignore[arg-type]

    async def notes(self, customer_id: str, *, limit: int = MAX_LIST_ROWS) -> NoteList:
        await self._customer_exists(customer_id, "customer_id")
        query = (
            select(customer_notes)
            .where(customer_notes.c.customer_id == customer_id)
            .order_by(customer_notes.c.created_at.desc(), customer_notes.c.note_id.desc())
            .limit(limit)
        )
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return NoteList(notes=[Note(**{**row._mapping, "created_at": utc_aware(row.created_at)}) for row in rows])

    # -- trouble tickets ------------------------------------------------------------------------

    async def open_ticket(self, new: NewTroubleTicket, author: str) -> TroubleTicket:
        await self._customer_exists(new.customer_id, "customer_id")
        if new.line_id is not None:
            line = await records.get_line(self.engine, new.line_id)
            if line is None or line.customer_id != new.customer_id:
                raise CustomerRefusal(
                    Problem.REFUSED, "line_id", f"customer {new.customer_id!r} has no line {new.line_id!r}"
                )
        ticket_id = new.ticket_id or made_id("TT")
        now = self._now()
        row = {**new.model_dump(mode="json"), "ticket_id": ticket_id, "status": OPENED_AS.value, "created_by": author}
        opened = _history_row(ticket_id, None, OPENED_AS, author, "opened", now)
        try:
            async with self.engine.begin() as connection:
                made = insert(trouble_tickets).values(**row, created_at=utc_naive(now), updated_at=utc_naive(now))
                await connection.execute(made)
                await connection.execute(insert(trouble_ticket_history).values(opened))
        except IntegrityError:  # the id is taken (the one key a valid ticket can break)
            raise CustomerRefusal(Problem.CONFLICT, "ticket_id", f"{ticket_id!r} already exists") from None
        return await self.ticket(ticket_id)

    async def ticket(self, ticket_id: str) -> TroubleTicket:
        async with self.engine.connect() as connection:
            found = await _tickets(connection, trouble_tickets.c.ticket_id == ticket_id, 1, 0)
        if not found:
            raise CustomerRefusal(Problem.NOT_FOUND, "ticket_id", f"no trouble ticket {ticket_id!r}")
        return found[0]

    async def tickets(
        self, *, customer_id: str | None, status: TicketStatus | None, limit: int, offset: int
    ) -> TroubleTicketList:
        condition: ColumnElement[bool] = trouble_tickets.c.ticket_id.is_not(None)
        if customer_id is not None:
            condition = and_(condition, trouble_tickets.c.customer_id == customer_id)
        if status is not None:
            condition = and_(condition, trouble_tickets.c.status == status.value)
        async with self.engine.connect() as connection:
            return TroubleTicketList(tickets=await _tickets(connection, condition, limit, offset))

    async def move_ticket(self, ticket_id: str, change: TroubleTicketUpdate, author: str) -> TroubleTicket:
        """One move of the table, recorded; refused (422) when the table has no such move."""
        current = (await self.ticket(ticket_id)).status
        if (current, change.status) not in TRANSITIONS:
            allowed = sorted(new.value for old, new in TRANSITIONS if old is current) or ["none: it is final"]
            raise CustomerRefusal(
                Problem.REFUSED,
                "status",
                f"a ticket {current.value} cannot become {change.status.value}; it may become {', '.join(allowed)}",
            )
        now = self._now()
        async with self.engine.begin() as connection:
            moved = await connection.execute(
                update(trouble_tickets)
                .where(and_(trouble_tickets.c.ticket_id == ticket_id, trouble_tickets.c.status == current.value))
                .values(status=change.status.value, updated_at=utc_naive(now))
            )
            if not moved.rowcount:  # another move came first: this one was decided on a stale status
                raise CustomerRefusal(
                    Problem.CONFLICT, "status", f"the ticket is no longer {current.value}; read it again"
                )
            row = _history_row(ticket_id, current, change.status, author, change.status_change_reason, now)
            await connection.execute(insert(trouble_ticket_history).values(row))
        return await self.ticket(ticket_id)
