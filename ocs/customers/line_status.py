"""Lines' status changes in the engine, mirrored into the business database (review 13 L5).

Theory of operation: the lifecycle (``set_status`` and the termination) changes an account's status
in the engine and publishes one ``StatusChanged`` per account whose effective status changed (the
worst of its own and its ancestors', balance/RULES.md "Effective status"). ``LineStatusMirror``
subscribes to those account events, so the customers wing learns the change without knowing who
made it (it must not import the api): ``lines.status`` becomes the line's effective status, the
change is recorded in the status history (``history.record``, same transaction) with a reason
category, and a terminated line's ``line_identities`` rows are deleted. Its identities stay held
by the engine's quarantine (balance/directory.py); a new line claiming one of them gets the
engine's answer at step 2 (refused until the quarantine ends), the same answer /subscribers gives.

The seam dispatches synchronously; the database is async, so each event becomes a write chained
after the previous one (changes of one line apply in the order published). Every server process
receives every event (the transport): the write is conditional (``status`` differs, the row is
not ``provisioning``), so only the first process to apply it records history. Events for accounts
that are not lines (company nodes) change nothing. ``drain`` waits for the writes queued so far.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import structlog
from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import AccountStatus
from ocs.customers import history
from ocs.customers.history import EntityKind, ReasonCategory, StatusChange
from ocs.customers.values import LineStatus
from ocs.db.customers import line_identities, lines
from ocs.events import AccountEvent, StatusChanged

log = structlog.get_logger("ocs.customers.line_status")


def reason_category(status: AccountStatus, reason: str) -> ReasonCategory | None:
    """The churn report's category: the one the reason text starts with ("fraud: sim box"), else
    ``other``; None for a change back to active (nothing to count)."""
    if status is AccountStatus.ACTIVE:
        return None
    words = reason.strip().lower()
    for category in ReasonCategory:
        if words.startswith(category.value):
            return category
    return ReasonCategory.OTHER


class LineStatusMirror:
    """An account-events subscriber (``ocs.events.AccountEvents.subscribe``)."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], float]) -> None:
        self.engine = engine
        self.clock = clock
        self._last: asyncio.Task[None] | None = None

    def on_account_event(self, event: AccountEvent) -> int:
        """Queue the write; it sends nothing to the network (returns 0)."""
        if isinstance(event, StatusChanged):
            self._last = asyncio.get_running_loop().create_task(self._after(self._last, event))
        return 0

    async def drain(self) -> None:
        """Wait for every write queued so far (shutdown, tests)."""
        if self._last is not None:
            await self._last

    async def _after(self, previous: asyncio.Task[None] | None, event: StatusChanged) -> None:
        if previous is not None:
            await asyncio.gather(previous, return_exceptions=True)
        try:
            await self.apply(event)
        except Exception:  # the engine's change stands; the next change of the line mirrors it
            log.exception("line_status_unmirrored", line_id=event.account_id, status=event.status.value)

    async def apply(self, event: StatusChanged) -> bool:
        """The line's row takes the status, recorded; False when nothing changed (no such line,
        still provisioning, or already so)."""
        status = LineStatus(event.status.value)
        async with self.engine.begin() as connection:
            row = (
                await connection.execute(
                    select(lines.c.customer_id, lines.c.status).where(lines.c.line_id == event.account_id)
                )
            ).first()
            if row is None or row.status in (LineStatus.PROVISIONING.value, status.value):
                return False
            result = await connection.execute(
                update(lines)
                .where(and_(lines.c.line_id == event.account_id, lines.c.status == row.status))
                .values(status=status.value)
            )
            if not result.rowcount:  # another process mirrored it meanwhile
                return False
            if status is LineStatus.TERMINATED:  # the engine's quarantine holds them from here
                await connection.execute(delete(line_identities).where(line_identities.c.line_id == event.account_id))
            now = datetime.fromtimestamp(self.clock(), UTC)
            change = StatusChange(
                EntityKind.LINE,
                event.account_id,
                row.customer_id,
                row.status,
                status.value,
                now,
                author=event.actor or history.SYSTEM_AUTHOR,
                reason=event.reason,
                reason_category=reason_category(event.status, event.reason),
            )
            await history.record(connection, change)
        return True
