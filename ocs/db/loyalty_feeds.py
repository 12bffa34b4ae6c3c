"""The queries behind loyalty events that no usage record brings: the day's birthdays and customer
anniversaries, and payments whose loyalty event was lost (ocs/loyalty/daily_feed.py feeds them).

Theory of operation: each is one set-based statement over the whole population, never one per
customer, and returns plain rows; the feed turns them into events whose trigger ids make them
idempotent (``loyalty_events`` holds each trigger id once).

- ``occasions_on(day)``: every individual customer (``parties.kind``) whose ``birth_date`` falls
  on ``day`` (a 29 February birthday falls on 28 February in a year without one), and every
  customer whose ``created_at`` falls on ``day`` in an earlier year (the whole years are
  returned). Prospects and terminated customers have no occasions. Month and day are compared
  with ``EXTRACT`` (``strftime`` on SQLite), the same statement on both databases.
- ``unfed_payments(since, until)``: payments recorded in ``[since, until)`` with no row in
  ``loyalty_events`` under their payment id (the trigger id ``LoyaltyEngine.on_payment`` uses),
  oldest first, at most ``limit``, with the customer their billing account belongs to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import and_, extract, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from ocs.db.billing import payments
from ocs.db.customers import billing_accounts, customers, parties
from ocs.db.loyalty import loyalty_events

WITHOUT_OCCASIONS = ("prospect", "terminated")  # customer statuses that get no birthday or anniversary


class OccasionKind(enum.StrEnum):
    BIRTHDAY = "birthday"
    ANNIVERSARY = "anniversary"


@dataclass(frozen=True, slots=True)
class Occasion:
    kind: OccasionKind
    customer_id: str
    years: int  # the age reached, or the whole years as a customer


@dataclass(frozen=True, slots=True)
class UnfedPayment:
    payment_id: str
    customer_id: str
    amount_micros: int
    received_at: datetime
    recorded_at: datetime


def _falls_on(column: ColumnElement[object], day: date) -> ColumnElement[bool]:
    same_day = and_(extract("month", column) == day.month, extract("day", column) == day.day)
    if (day.month, day.day) == (2, 28) and not _leap(day.year):
        return or_(same_day, and_(extract("month", column) == 2, extract("day", column) == 29))
    return same_day


def _leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


async def occasions_on(connection: AsyncConnection, day: date) -> list[Occasion]:
    """The day's birthdays and anniversaries (module docstring), ordered by customer."""
    customer = customers.c
    living = customer.status.not_in(WITHOUT_OCCASIONS)
    birthdays = (
        select(customer.customer_id, parties.c.birth_date)
        .join(parties, parties.c.party_id == customer.party_id)
        .where(living, parties.c.kind == "individual", parties.c.birth_date.is_not(None))
        .where(_falls_on(parties.c.birth_date, day))
    )
    found = [
        Occasion(OccasionKind.BIRTHDAY, str(customer_id), day.year - _year(born))
        for customer_id, born in await connection.execute(birthdays)
    ]
    anniversaries = select(customer.customer_id, customer.created_at).where(
        living, _falls_on(customer.created_at, day), extract("year", customer.created_at) < day.year
    )
    found += [
        Occasion(OccasionKind.ANNIVERSARY, str(customer_id), day.year - _year(created))
        for customer_id, created in await connection.execute(anniversaries)
    ]
    return sorted(found, key=lambda item: (item.customer_id, item.kind.value))


def _year(value: object) -> int:
    if isinstance(value, date):  # datetime is a date too
        return value.year
    return int(str(value)[:4])  # a driver that hands back the stored text


async def unfed_payments(
    connection: AsyncConnection, since: datetime, until: datetime, limit: int
) -> list[UnfedPayment]:
    """Payments recorded in [``since``, ``until``) without their loyalty event, oldest first."""
    payment = payments.c
    statement = (
        select(payment.payment_id, billing_accounts.c.customer_id, payment.amount_micros, payment.received_at)
        .add_columns(payment.recorded_at)
        .join(billing_accounts, billing_accounts.c.billing_account_id == payment.billing_account_id)
        .outerjoin(loyalty_events, loyalty_events.c.trigger_id == payment.payment_id)
        .where(payment.recorded_at >= since, payment.recorded_at < until, loyalty_events.c.trigger_id.is_(None))
        .order_by(payment.recorded_at, payment.payment_id)
        .limit(limit)
    )
    return [
        UnfedPayment(str(payment_id), str(customer_id), int(amount), received_at, recorded_at)
        for payment_id, customer_id, amount, received_at, recorded_at in await connection.execute(statement)
    ]
