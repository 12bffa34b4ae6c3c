"""The dunning wing's records: the values its doors answer, and the queries on ``ocs.db.dunning``
that ``ocs.billing.dunning`` runs (steps, lifts, promises to pay, exemptions, whom to look at).

Theory of operation: every function here is one query or one short transaction on the connection
or engine it is given; the decisions are in ``ocs.billing.dunning``. ``record_step`` inserts a
step row and answers ``None`` when the row exists already (the unique episode/position key): two
runs racing record a step once, and the loser applies nothing. ``enforcing`` answers the restrict
and bar steps applied and not yet lifted: what a payment may lift.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.billing.values import PositiveMicros, Reason
from ocs.customers.values import Closed, EntityId
from ocs.db.billing import invoices
from ocs.db.customers import billing_accounts, customers, lifecycle_steps
from ocs.db.dunning import dunning_exemptions, dunning_steps, promises_to_pay
from ocs.db.schema import utc_aware, utc_naive

MAX_HISTORY_ROWS = 1_000
ENFORCING_ACTIONS = ("restrict", "bar")


class DunningStep(Closed):
    """One row of a billing account's dunning history: a ladder step, or a lift (action ``lift``)."""

    step_id: int
    billing_account_id: str
    customer_id: str
    episode_due_date: date
    ladder: str
    position: int  # the ladder step's, 1-based; a lift of step n is -n
    action: str
    target_kind: str
    target_id: str
    run_date: date
    days_past_due: int
    overdue_micros: int
    invoice_id: str | None
    template: str | None
    lifts_step_id: int | None
    outcome: str | None  # None: recorded, its effect not yet finished (the restart pass finishes it)
    created_at: datetime
    finished_at: datetime | None


class DunningHistory(Closed):
    billing_account_id: str
    steps: list[DunningStep]
    promises: list[PromiseToPay]
    exempt: bool


class DunningRunResult(Closed):
    date: date
    accounts_overdue: int  # billing accounts with an amount past due
    steps_applied: int
    steps_by_action: dict[str, int]
    held_by_disputes: int  # overdue invoices, all of it disputed
    paused_by_promises: int
    exempt: int
    lifted: int  # restrictions and bars lifted (a payment whose lift was missed)
    resumed: int  # steps a crash left unfinished, finished now
    failed: int  # accounts whose step could not be finished (Redis down): the next run finishes them


class NewPromiseToPay(Closed):
    """``POST /billingAccounts/{id}/promisesToPay``: the ladder pauses until ``promised_date``."""

    promise_id: EntityId | None = None  # the idempotency key: None, one is made
    amount_micros: PositiveMicros
    promised_date: date
    reason: Reason = "promise to pay"


class PromiseToPay(Closed):
    promise_id: str
    billing_account_id: str
    amount_micros: int
    promised_date: date
    reason: str
    author: str
    created_at: datetime


class NewExemption(Closed):
    reason: Reason


class Exemption(Closed):
    customer_id: str
    reason: str
    author: str
    created_at: datetime


class DunningRunRequest(Closed):
    """``POST /dunningRuns``."""

    date: date


DunningHistory.model_rebuild()


def step_of(row: Any) -> DunningStep:
    values = dict(row._mapping)
    values["created_at"] = utc_aware(values["created_at"])
    values["finished_at"] = utc_aware(values["finished_at"]) if values["finished_at"] is not None else None
    return DunningStep.model_validate(values)


async def overdue_accounts(connection: AsyncConnection, day: date, after: str, limit: int) -> list[Any]:
    """Billing accounts with an unpaid invoice due before ``day``, with what the run needs of the
    customer: credit class, segment, node, exemption; a page of at most ``limit`` by id, from the
    first after ``after`` (keyset pagination: ``""`` for the first page, then the page's last id)."""
    overdue = exists().where(
        and_(
            invoices.c.billing_account_id == billing_accounts.c.billing_account_id,
            invoices.c.remaining_micros > 0,
            invoices.c.due_date < day,
        )
    )
    query = (
        select(
            billing_accounts.c.billing_account_id,
            billing_accounts.c.customer_id,
            billing_accounts.c.node_id,
            billing_accounts.c.currency,
            customers.c.credit_class,
            customers.c.segment,
            dunning_exemptions.c.customer_id.label("exempt_customer"),
        )
        .join(customers, customers.c.customer_id == billing_accounts.c.customer_id)
        .outerjoin(dunning_exemptions, dunning_exemptions.c.customer_id == customers.c.customer_id)
        .where(overdue, billing_accounts.c.billing_account_id > after)
        .order_by(billing_accounts.c.billing_account_id)
        .limit(limit)
    )
    return list((await connection.execute(query)).all())


async def oldest_overdue_invoice(connection: AsyncConnection, billing_account_id: str, due: date) -> str | None:
    query = (
        select(invoices.c.invoice_id)
        .where(
            and_(
                invoices.c.billing_account_id == billing_account_id,
                invoices.c.remaining_micros > 0,
                invoices.c.due_date == due,
            )
        )
        .order_by(invoices.c.invoice_id)
        .limit(1)
    )
    return (await connection.execute(query)).scalar_one_or_none()


async def positions_done(connection: AsyncConnection, billing_account_id: str, episode: date) -> set[int]:
    query = select(dunning_steps.c.position).where(
        and_(dunning_steps.c.billing_account_id == billing_account_id, dunning_steps.c.episode_due_date == episode)
    )
    return set((await connection.execute(query)).scalars().all())


async def record_step(connection: AsyncConnection, values: dict[str, object]) -> int | None:
    """The step row (see the module docstring); ``None``: another run recorded it first."""
    try:
        async with connection.begin_nested():
            made = await connection.execute(insert(dunning_steps).values(**values))
    except IntegrityError:
        return None
    key = made.inserted_primary_key
    assert key is not None
    return int(key[0])


async def finish_step(engine: AsyncEngine, step_id: int, outcome: str, now: datetime) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(dunning_steps)
            .where(dunning_steps.c.step_id == step_id)
            .values(outcome=outcome[:1_000], finished_at=utc_naive(now))
        )


async def step(connection: AsyncConnection, step_id: int) -> DunningStep:
    return step_of((await connection.execute(select(dunning_steps).where(dunning_steps.c.step_id == step_id))).one())


async def unfinished_steps(engine: AsyncEngine) -> list[DunningStep]:
    query = select(dunning_steps).where(dunning_steps.c.finished_at.is_(None)).order_by(dunning_steps.c.step_id)
    async with engine.connect() as connection:
        return [step_of(row) for row in (await connection.execute(query)).all()]


def _enforcing() -> ColumnElement[bool]:
    """A restrict or bar step applied and not lifted."""
    lift = dunning_steps.alias("lift")
    lifted = exists().where(lift.c.lifts_step_id == dunning_steps.c.step_id)
    return and_(dunning_steps.c.action.in_(ENFORCING_ACTIONS), dunning_steps.c.outcome == "applied", ~lifted)


async def enforcing(connection: AsyncConnection, billing_account_id: str) -> list[DunningStep]:
    """The account's restrict and bar steps applied and not lifted, oldest first."""
    condition = and_(_enforcing(), dunning_steps.c.billing_account_id == billing_account_id)
    query = select(dunning_steps).where(condition).order_by(dunning_steps.c.step_id)
    return [step_of(row) for row in (await connection.execute(query)).all()]


async def enforcing_accounts(connection: AsyncConnection, after: str, limit: int) -> list[str]:
    """Billing accounts with a restrict or bar applied and not lifted: a page of ``limit`` ids
    after ``after``, in order (as ``overdue_accounts``)."""
    query = (
        select(dunning_steps.c.billing_account_id)
        .where(_enforcing(), dunning_steps.c.billing_account_id > after)
        .group_by(dunning_steps.c.billing_account_id)
        .order_by(dunning_steps.c.billing_account_id)
        .limit(limit)
    )
    return list((await connection.execute(query)).scalars().all())


async def last_lifecycle_step(connection: AsyncConnection, kind: str, entity_id: str) -> Any:
    """The latest lifecycle change of a customer or node: who made its status what it is."""
    query = (
        select(lifecycle_steps)
        .where(and_(lifecycle_steps.c.entity_kind == kind, lifecycle_steps.c.entity_id == entity_id))
        .order_by(lifecycle_steps.c.step_id.desc())
        .limit(1)
    )
    return (await connection.execute(query)).first()


async def paused_until(connection: AsyncConnection, billing_account_id: str, day: date) -> date | None:
    """The latest promised date on or after ``day``: the ladder waits until it has passed."""
    query = select(promises_to_pay.c.promised_date).where(
        and_(promises_to_pay.c.billing_account_id == billing_account_id, promises_to_pay.c.promised_date >= day)
    )
    found = (await connection.execute(query.order_by(promises_to_pay.c.promised_date.desc()).limit(1))).first()
    return found[0] if found is not None else None


def promise_of(row: Any) -> PromiseToPay:
    values = dict(row._mapping)
    return PromiseToPay.model_validate({**values, "created_at": utc_aware(values["created_at"])})


async def history(engine: AsyncEngine, billing_account_id: str) -> DunningHistory | None:
    async with engine.connect() as connection:
        account = (
            await connection.execute(
                select(billing_accounts.c.customer_id, dunning_exemptions.c.customer_id.label("exempt"))
                .outerjoin(dunning_exemptions, dunning_exemptions.c.customer_id == billing_accounts.c.customer_id)
                .where(billing_accounts.c.billing_account_id == billing_account_id)
            )
        ).first()
        if account is None:
            return None
        steps = await connection.execute(
            select(dunning_steps)
            .where(dunning_steps.c.billing_account_id == billing_account_id)
            .order_by(dunning_steps.c.step_id)
            .limit(MAX_HISTORY_ROWS)
        )
        promises = await connection.execute(
            select(promises_to_pay)
            .where(promises_to_pay.c.billing_account_id == billing_account_id)
            .order_by(promises_to_pay.c.created_at, promises_to_pay.c.promise_id)
        )
        return DunningHistory(
            billing_account_id=billing_account_id,
            steps=[step_of(row) for row in steps.all()],
            promises=[promise_of(row) for row in promises.all()],
            exempt=account.exempt is not None,
        )
