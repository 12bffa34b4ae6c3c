"""The loyalty events no usage record brings, fed by a duty: the day's birthdays and customer
anniversaries, and the payments whose event a crash lost.

Theory of operation: the duty ``loyalty_feed`` (``ocs.app``; one process at a time under the
duties' leases) wakes every ``DUTY_WAKE_SECONDS``:

1. Occasions, once a day from ``[loyalty] occasions_hour`` UTC: one set-based query
   (``ocs.db.loyalty_feeds.occasions_on``) finds every individual customer whose birth date and
   every customer whose anniversary (``customers.created_at``, whole years) is today, and each
   becomes one event of its customer, credited to the customer's main line (``main_lines``),
   with the trigger id ``birthday:<customer>:<year>`` or ``anniversary:<customer>:<year>``. The
   engine evaluates a trigger id once (``loyalty_events``): a rerun the same day, a restart, or a
   second worker after a lease moved credits nothing twice. The event's ``units`` are the years
   (the age reached, the years as a customer). A day the server was down has no occasions fed.
2. Payments, at the duty's start and every ``PAYMENT_CATCH_UP_SECONDS``: the payment service
   calls the engine after the payment's commit (``LoyaltyEngine.on_payment``), so a crash between
   the two loses the event. The catch-up reads the payments recorded since its watermark (at
   start ``PAYMENT_LOOKBACK_DAYS`` back) and up to ``PAYMENT_GRACE_SECONDS`` ago (the listener's
   own time to run) that have no loyalty event under their payment id, the trigger id
   ``on_payment`` uses, a page of ``PAYMENT_PAGE`` at a time, and feeds them as ``on_payment``
   would. Each fed payment gets its event row (member or not), so the next page no longer finds
   it; once a pass is through, the watermark moves to its end. Should the listener and the
   catch-up both feed one payment, the second insert of its event fails and its transaction
   rolls back: nothing is applied twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db.loyalty_feeds import Occasion, OccasionKind, UnfedPayment, occasions_on, unfed_payments
from ocs.db.schema import utc_aware, utc_naive
from ocs.loyalty.engine import LoyaltyEngine
from ocs.loyalty.members import main_lines
from ocs.loyalty.rules import EventKind, LoyaltyEvent

log = structlog.get_logger("ocs.loyalty.daily_feed")

DUTY_WAKE_SECONDS = 60.0  # how often the duty looks at the clock
PAYMENT_CATCH_UP_SECONDS = 600.0  # how often payments without their event are looked for
PAYMENT_LOOKBACK_DAYS = 7  # how far back the first catch-up after a start looks
PAYMENT_GRACE_SECONDS = 60  # a payment younger than this is left to its listener
PAYMENT_PAGE = 500  # payments fed per transaction
OCCASIONS_PER_CALL = 1_000  # occasions fed per transaction
_EVENT_KINDS = {OccasionKind.BIRTHDAY: EventKind.BIRTHDAY, OccasionKind.ANNIVERSARY: EventKind.ANNIVERSARY}


def occasion_trigger_id(occasion: Occasion, day: date) -> str:
    return f"{occasion.kind.value}:{occasion.customer_id}:{day.year}"


class DailyFeed:
    def __init__(
        self,
        database: AsyncEngine,
        engine: LoyaltyEngine,
        *,
        occasions_hour: int = 8,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 0 <= occasions_hour <= 23:
            raise ValueError(f"occasions_hour must be 0 to 23 (UTC), not {occasions_hour}")
        self.database = database
        self.engine = engine
        self.occasions_hour = occasions_hour
        self.clock = clock
        self.last_occasions_day: date | None = None
        self.payments_since: datetime | None = None  # the catch-up's watermark (naive UTC)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def feed_occasions(self, day: date) -> int:
        """Feed ``day``'s birthdays and anniversaries; returns the applications credited."""
        async with self.database.connect() as connection:
            occasions = await occasions_on(connection, day)
            lines = await main_lines(connection, {occasion.customer_id for occasion in occasions})
        at_seconds = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
        events = [
            LoyaltyEvent(
                kind=_EVENT_KINDS[occasion.kind],
                trigger_id=occasion_trigger_id(occasion, day),
                member_id=occasion.customer_id,
                line_id=lines.get(occasion.customer_id, ""),
                at_seconds=at_seconds,
                units=occasion.years,
            )
            for occasion in occasions
        ]
        credited = 0
        for start in range(0, len(events), OCCASIONS_PER_CALL):
            credited += await self.engine.events_recorded(events[start : start + OCCASIONS_PER_CALL])
        log.info("loyalty_occasions_fed", day=day.isoformat(), occasions=len(events), credited=credited)
        return credited

    async def catch_up_payments(self) -> int:
        """Feed the payments since the watermark that have no loyalty event; returns how many."""
        now = utc_naive(self._now())
        since = self.payments_since or now - timedelta(days=PAYMENT_LOOKBACK_DAYS)
        until = now - timedelta(seconds=PAYMENT_GRACE_SECONDS)
        fed = 0
        while True:
            async with self.database.connect() as connection:
                page = await unfed_payments(connection, since, until, PAYMENT_PAGE)
                lines = await main_lines(connection, {payment.customer_id for payment in page})
            if page:
                await self.engine.events_recorded(_payment_events(page, lines))
                fed += len(page)
            if len(page) < PAYMENT_PAGE:
                break
        self.payments_since = max(since, until)
        if fed:
            log.warning("loyalty_payments_caught_up", payments=fed)
        return fed

    async def run_due(self, now: datetime) -> int | None:
        """Today's occasions if ``now`` is past the hour and they were not fed today, else None."""
        today = now.astimezone(UTC).date()
        if now.astimezone(UTC).hour < self.occasions_hour or self.last_occasions_day == today:
            return None
        credited = await self.feed_occasions(today)
        self.last_occasions_day = today
        return credited

    async def run(self) -> None:
        """The ``loyalty_feed`` duty: the payment catch-up at once and every
        ``PAYMENT_CATCH_UP_SECONDS``, the occasions when due, for ever; cancel to stop."""
        last_catch_up = float("-inf")
        while True:
            try:
                if self.clock() - last_catch_up >= PAYMENT_CATCH_UP_SECONDS:
                    await self.catch_up_payments()
                    last_catch_up = self.clock()
                await self.run_due(self._now())
            except Exception as error:  # the database away: tried again at the next wake-up
                log.error("loyalty_feed_failed", reason=str(error))
            await asyncio.sleep(DUTY_WAKE_SECONDS)


def _payment_events(page: Sequence[UnfedPayment], lines: dict[str, str]) -> list[LoyaltyEvent]:
    """The payments as ``LoyaltyEngine.on_payment`` makes their events."""
    return [
        LoyaltyEvent(
            kind=EventKind.PAYMENT,
            trigger_id=payment.payment_id,
            member_id=payment.customer_id,
            line_id=lines.get(payment.customer_id, ""),
            at_seconds=int(utc_aware(payment.received_at).timestamp()),
            micros=payment.amount_micros,
        )
        for payment in page
    ]
