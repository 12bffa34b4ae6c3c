"""Top-ups and lifecycle changes as loyalty events, taken from the account-event seam.

Theory of operation: ``AccountFeed.on_account_event`` subscribes to ``ocs.events.AccountEvents``
(``ocs.app``, like the scoring's rescore) and notes two kinds of event:

- a top-up (``BalanceChanged`` with operation ``top_up`` and its ``operation_id``, published by
  ``POST /subscribers/{id}/topups`` once per top-up id, never for a replay) becomes a ``top_up``
  event of the line's customer, worth the top-up's micros, trigger id ``top_up:<line>:<id>``
  (a top-up id is unique per account in the balance engine); the loyalty engine's own bonus
  credits publish operation ``loyalty_bonus`` and are not fed back;
- a status change (``StatusChanged``) becomes a ``lifecycle`` event of the line's customer whose
  ``service`` is the new status (so a rule's ``services`` filter names the statuses it wants:
  ``["active"]`` for an activation), trigger id ``lifecycle:<line>:<status>:<milliseconds>``.

The subscriber itself is synchronous (the seam's dispatch): it notes the event and a task feeds
what is noted to ``LoyaltyEngine.events_recorded`` in one transaction a round, resolving lines to
customers through the engine's member cache; a line no customer owns (an account provisioned
straight into the engine, a company node) is skipped. Every server process receives every
account event (the seam's transport), so the feed works only while ``active()`` says so: in
``ocs.app`` while this process holds the ``loyalty_credit`` duty, which one process holds at a
time (a single process always). A top-up's trigger id makes a second feeding harmless anyway; a
status change has no id of its own, so its trigger id carries the time the one feeding process
noted it. What fails to feed (the database away) is logged and dropped: these events are not
kept anywhere else to feed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from ocs.events import AccountEvent, BalanceChanged, StatusChanged
from ocs.loyalty.engine import LoyaltyEngine
from ocs.loyalty.rules import EventKind, LoyaltyEvent

log = structlog.get_logger("ocs.loyalty.account_feed")

TOP_UP_OPERATION = "top_up"


def _always() -> bool:
    return True


class AccountFeed:
    def __init__(
        self,
        engine: LoyaltyEngine,
        *,
        active: Callable[[], bool] = _always,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.active = active
        self.clock = clock
        self._noted: list[LoyaltyEvent] = []  # member_id not known yet: ""
        self._feeding: asyncio.Task[None] | None = None

    def on_account_event(self, event: AccountEvent) -> int:
        """The account-event subscriber: a top-up or a status change noted for the feeding task."""
        noted = self._loyalty_event(event)
        if noted is None or not self.active():
            return 0
        self._noted.append(noted)
        if self._feeding is None or self._feeding.done():
            with contextlib.suppress(RuntimeError):  # no loop (a synchronous caller): not fed
                self._feeding = asyncio.get_running_loop().create_task(self._feed_noted())
        return 0

    def _loyalty_event(self, event: AccountEvent) -> LoyaltyEvent | None:
        at_ms = int(self.clock() * 1000)
        if isinstance(event, BalanceChanged):
            if event.operation != TOP_UP_OPERATION or not event.operation_id or event.micros <= 0:
                return None
            trigger_id = f"top_up:{event.account_id}:{event.operation_id}"
            return LoyaltyEvent(EventKind.TOP_UP, trigger_id, "", event.account_id, at_ms // 1000, micros=event.micros)
        if isinstance(event, StatusChanged):
            status = event.status.value
            trigger_id = f"lifecycle:{event.account_id}:{status}:{at_ms}"
            return LoyaltyEvent(EventKind.LIFECYCLE, trigger_id, "", event.account_id, at_ms // 1000, service=status)
        return None

    async def _feed_noted(self) -> None:
        while self._noted:
            noted, self._noted = self._noted, []
            try:
                async with self.engine.database.connect() as connection:
                    members = await self.engine.members.of_lines(connection, {item.line_id for item in noted})
                events = [
                    LoyaltyEvent(
                        kind=item.kind,
                        trigger_id=item.trigger_id,
                        member_id=members[item.line_id].customer_id,
                        line_id=item.line_id,
                        at_seconds=item.at_seconds,
                        service=item.service,
                        micros=item.micros,
                    )
                    for item in noted
                    if item.line_id in members
                ]
                if events:
                    await self.engine.events_recorded(events)
            except Exception:  # the database away, or another process fed the same top-up meanwhile
                log.exception("loyalty_account_events_not_fed", events=len(noted))

    async def drain(self) -> None:
        """Wait until the events noted so far are fed (shutdown, tests)."""
        while self._feeding is not None and not self._feeding.done():
            await asyncio.shield(self._feeding)
