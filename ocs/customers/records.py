"""Queries on the customer tables (``ocs.db.customers``): rows in, values (``ocs.customers.values``) out.

Theory of operation: one function per query, each its own transaction (``engine.begin``) or read
(``engine.connect``), on SQLite and PostgreSQL alike (SQLAlchemy Core, no ORM session state). A
write that breaks a key or a unique rule (an id taken, an identity held by another line) raises
``Duplicate``, the database's own word, so two callers racing for one id or identity cannot both
win. Reads return frozen values, or None for an unknown id.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ocs.customers import history
from ocs.customers.history import EntityKind, ReasonCategory, StatusChange
from ocs.customers.values import (
    BillingAccount,
    BillingAccountSpec,
    ContactMedium,
    CreditProfile,
    Customer,
    CustomerStatus,
    IdentityDocument,
    Individual,
    Line,
    LineIdentity,
    LineStatus,
    NewCustomer,
    Node,
    NodeMoney,
    Organization,
)
from ocs.db.customers import billing_accounts, customer_nodes, customers, line_identities, lines, parties
from ocs.db.orders import deposits
from ocs.db.schema import utc_aware, utc_naive

MAX_LIST_ROWS = 1_000  # one page of a customer list


class Duplicate(Exception):
    """A key or unique rule was broken: the id, or an identity, is taken."""


def _values(row: Any) -> dict[str, Any]:
    return dict(row._mapping)


# -- customers ----------------------------------------------------------------------------------


def _party_row(party_id: str, new: NewCustomer, now: datetime) -> dict[str, object]:
    person, company = new.individual, new.organization
    document = person.identity_document if person is not None else None
    media = person.contact_media if person is not None else company.contact_media if company is not None else []
    return {
        "party_id": party_id,
        "kind": "individual" if person is not None else "organization",
        "given_name": person.given_name if person else None,
        "family_name": person.family_name if person else None,
        "birth_date": person.birth_date if person else None,
        "organization_name": company.name if company else None,
        "registration_number": company.registration_number if company else None,
        "document_type": document.type if document else None,
        "document_number": document.number if document else None,
        "document_country": document.issuing_country if document else None,
        "contact_media": [medium.model_dump() for medium in media],
        "created_at": utc_naive(now),
    }


def _billing_row(
    billing_account_id: str, customer_id: str, node_id: str | None, spec: BillingAccountSpec, now: datetime
) -> dict[str, object]:
    return {
        "billing_account_id": billing_account_id,
        "customer_id": customer_id,
        "node_id": node_id,
        **spec.model_dump(),
        "created_at": utc_naive(now),
    }


async def _insert(connection: AsyncConnection, table: Any, row: dict[str, object]) -> None:
    await connection.execute(insert(table).values(**row))


async def insert_customer(
    engine: AsyncEngine,
    *,
    customer_id: str,
    party_id: str,
    new: NewCustomer,
    billing_account_id: str | None,
    root: dict[str, object] | None,
    now: datetime,
) -> None:
    """The party, the customer, its billing account and an organization's root node, all or none."""
    try:
        async with engine.begin() as connection:
            await _insert(connection, parties, _party_row(party_id, new, now))
            await _insert(
                connection,
                customers,
                {
                    "customer_id": customer_id,
                    "party_id": party_id,
                    "kind": "individual" if new.individual is not None else "organization",
                    "status": new.status.value,
                    "credit_score": new.credit_profile.credit_score,
                    "credit_class": new.credit_profile.credit_class,
                    "created_at": utc_naive(now),
                },
            )
            status = StatusChange(EntityKind.CUSTOMER, customer_id, customer_id, None, new.status.value, now)
            await history.record(connection, status)
            if root is not None:
                await _insert(connection, customer_nodes, root)
            if new.billing_account is not None and billing_account_id is not None:
                row = _billing_row(billing_account_id, customer_id, None, new.billing_account, now)
                await _insert(connection, billing_accounts, row)
    except IntegrityError as error:
        raise Duplicate(str(error.orig)) from None


async def delete_customer(engine: AsyncEngine, customer_id: str) -> None:
    """Undo ``insert_customer`` (its engine step was refused): the customer has no lines yet."""
    async with engine.begin() as connection:
        party_id = (
            await connection.execute(select(customers.c.party_id).where(customers.c.customer_id == customer_id))
        ).scalar_one_or_none()
        await connection.execute(delete(billing_accounts).where(billing_accounts.c.customer_id == customer_id))
        await connection.execute(delete(customer_nodes).where(customer_nodes.c.customer_id == customer_id))
        await connection.execute(delete(customers).where(customers.c.customer_id == customer_id))
        await history.forget_customer(connection, customer_id)
        if party_id is not None:
            await connection.execute(delete(parties).where(parties.c.party_id == party_id))


def _billing_of(values: dict[str, Any] | None) -> BillingAccount | None:
    if values is None:
        return None
    names = ("billing_account_id", "currency", "bill_cycle_day", "payment_method", "paid_by_parent")
    return BillingAccount(**{name: values[name] for name in names})


def _customer_of(values: dict[str, Any], billing: BillingAccount | None, root_node_id: str | None) -> Customer:
    media = [ContactMedium(**medium) for medium in values["contact_media"]]
    individual = organization = None
    if values["kind"] == "individual":
        document = None
        if values["document_type"] is not None:
            document = IdentityDocument(
                type=values["document_type"],
                number=values["document_number"],
                issuing_country=values["document_country"],
            )
        individual = Individual(
            given_name=values["given_name"],
            family_name=values["family_name"],
            birth_date=values["birth_date"],
            contact_media=media,
            identity_document=document,
        )
    else:
        organization = Organization(
            name=values["organization_name"], registration_number=values["registration_number"], contact_media=media
        )
    return Customer(
        customer_id=values["customer_id"],
        party_id=values["party_id"],
        kind=values["kind"],
        individual=individual,
        organization=organization,
        status=CustomerStatus(values["status"]),
        credit_profile=CreditProfile(credit_score=values["credit_score"], credit_class=values["credit_class"]),
        billing_account=billing,
        root_node_id=root_node_id,
        created_at=utc_aware(values["created_at"]),
    )


_CUSTOMER_COLUMNS = (*customers.c, *(column for column in parties.c if column.name not in ("party_id", "kind")))


async def _customers(connection: AsyncConnection, condition: Any, limit: int, offset: int) -> list[Customer]:
    query = (
        select(*_CUSTOMER_COLUMNS)
        .join(parties, parties.c.party_id == customers.c.party_id)
        .where(condition)
        .order_by(customers.c.created_at, customers.c.customer_id)
        .limit(limit)
        .offset(offset)
    )
    rows = [_values(row) for row in (await connection.execute(query)).all()]
    ids = [values["customer_id"] for values in rows]
    bills = (
        await connection.execute(
            select(billing_accounts).where(
                billing_accounts.c.customer_id.in_(ids), billing_accounts.c.node_id.is_(None)
            )
        )
    ).all()
    billing = {row.customer_id: _values(row) for row in bills}
    roots = (
        await connection.execute(
            select(customer_nodes.c.customer_id, customer_nodes.c.node_id).where(
                customer_nodes.c.customer_id.in_(ids), customer_nodes.c.parent_node_id.is_(None)
            )
        )
    ).all()
    root_of = {row.customer_id: row.node_id for row in roots}
    return [
        _customer_of(values, _billing_of(billing.get(values["customer_id"])), root_of.get(values["customer_id"]))
        for values in rows
    ]


async def get_customer(engine: AsyncEngine, customer_id: str) -> Customer | None:
    async with engine.connect() as connection:
        found = await _customers(connection, customers.c.customer_id == customer_id, 1, 0)
    return found[0] if found else None


async def list_customers(
    engine: AsyncEngine, *, status: CustomerStatus | None = None, limit: int = MAX_LIST_ROWS, offset: int = 0
) -> list[Customer]:
    condition = customers.c.status == status.value if status is not None else customers.c.customer_id.is_not(None)
    async with engine.connect() as connection:
        return await _customers(connection, condition, min(limit, MAX_LIST_ROWS), offset)


# -- nodes --------------------------------------------------------------------------------------


def _node_of(values: dict[str, Any], billing: BillingAccount | None) -> Node:
    money = None
    if values["payment_type"] is not None:
        money = NodeMoney(
            payment_type=values["payment_type"],
            credit_limit_micros=values["credit_limit_micros"],
            cap_micros=values["cap_micros"],
            currency=values["currency"],
        )
    return Node(
        node_id=values["node_id"],
        customer_id=values["customer_id"],
        parent_node_id=values["parent_node_id"],
        name=values["name"],
        kind=values["kind"],
        money=money,
        account_id=values["account_id"],
        engine_parent_id=values["engine_parent_id"],
        account_state=values["account_state"],
        billing_account=billing,
        status=CustomerStatus(values["status"]),
    )


def node_row(
    *,
    node_id: str,
    customer_id: str,
    parent_node_id: str | None,
    name: str,
    kind: str,
    money: NodeMoney | None,
    engine_parent_id: str | None,
    now: datetime,
) -> dict[str, object]:
    """A node's row; one with money is an engine account (its id the node's), still to be made."""
    return {
        "node_id": node_id,
        "customer_id": customer_id,
        "parent_node_id": parent_node_id,
        "name": name,
        "kind": kind,
        "account_id": node_id if money is not None else None,
        "engine_parent_id": engine_parent_id if money is not None else None,
        "account_state": "provisioning" if money is not None else None,
        "payment_type": money.payment_type if money else None,
        "currency": money.currency if money else None,
        "credit_limit_micros": money.credit_limit_micros if money else None,
        "cap_micros": money.cap_micros if money else None,
        "created_at": utc_naive(now),
    }


async def insert_node(
    engine: AsyncEngine,
    row: dict[str, object],
    billing: BillingAccountSpec | None,
    billing_account_id: str | None,
    now: datetime,
) -> None:
    try:
        async with engine.begin() as connection:
            await _insert(connection, customer_nodes, row)
            if billing is not None and billing_account_id is not None:
                billing_row = _billing_row(
                    billing_account_id, str(row["customer_id"]), str(row["node_id"]), billing, now
                )
                await _insert(connection, billing_accounts, billing_row)
    except IntegrityError as error:
        raise Duplicate(str(error.orig)) from None


async def delete_node(engine: AsyncEngine, node_id: str) -> None:
    """Undo ``insert_node`` (its engine step was refused): the node has no children or lines yet."""
    async with engine.begin() as connection:
        await connection.execute(delete(billing_accounts).where(billing_accounts.c.node_id == node_id))
        await connection.execute(delete(customer_nodes).where(customer_nodes.c.node_id == node_id))


async def _nodes(connection: AsyncConnection, condition: Any) -> list[Node]:
    rows = [_values(row) for row in (await connection.execute(select(customer_nodes).where(condition))).all()]
    ids = [values["node_id"] for values in rows]
    bills = (await connection.execute(select(billing_accounts).where(billing_accounts.c.node_id.in_(ids)))).all()
    billing = {row.node_id: _values(row) for row in bills}
    ordered = sorted(rows, key=lambda values: (values["created_at"], values["node_id"]))
    return [_node_of(values, _billing_of(billing.get(values["node_id"]))) for values in ordered]


async def get_node(engine: AsyncEngine, node_id: str) -> Node | None:
    async with engine.connect() as connection:
        found = await _nodes(connection, customer_nodes.c.node_id == node_id)
    return found[0] if found else None


async def nodes_of(engine: AsyncEngine, customer_id: str) -> list[Node]:
    async with engine.connect() as connection:
        return await _nodes(connection, customer_nodes.c.customer_id == customer_id)


async def nodes_provisioning(engine: AsyncEngine) -> list[Node]:
    async with engine.connect() as connection:
        return await _nodes(connection, customer_nodes.c.account_state == "provisioning")


async def set_node_account_state(engine: AsyncEngine, node_id: str, state: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            update(customer_nodes).where(customer_nodes.c.node_id == node_id).values(account_state=state)
        )


# -- lines --------------------------------------------------------------------------------------


async def insert_line(
    engine: AsyncEngine,
    row: dict[str, object],
    identities: Sequence[LineIdentity],
    deposit: dict[str, object] | None = None,
) -> None:
    """The line, its identities and the deposit it makes due, all or none; ``Duplicate`` when the
    id or an identity is taken (or a racing line recorded the customer's deposit first)."""
    try:
        async with engine.begin() as connection:
            await _insert(connection, lines, {**row, "created_at": utc_naive(row["created_at"])})  # type: ignore[arg-type]
            for identity in identities:
                kind, value = identity.key
                await _insert(connection, line_identities, {"kind": kind, "value": value, "line_id": row["line_id"]})
            if deposit is not None:
                await _insert(connection, deposits, deposit)
    except IntegrityError as error:
        raise Duplicate(str(error.orig)) from None


async def delete_line(engine: AsyncEngine, line_id: str) -> None:
    """Undo ``insert_line`` (its engine step was refused), the deposit it made due included."""
    async with engine.begin() as connection:
        await connection.execute(delete(deposits).where(deposits.c.line_id == line_id))
        await connection.execute(delete(line_identities).where(line_identities.c.line_id == line_id))
        await connection.execute(delete(lines).where(lines.c.line_id == line_id))


async def _lines(connection: AsyncConnection, condition: Any) -> list[Line]:
    rows = [_values(row) for row in (await connection.execute(select(lines).where(condition))).all()]
    ids = [values["line_id"] for values in rows]
    held: dict[str, list[LineIdentity]] = {}
    found = await connection.execute(
        select(line_identities).where(line_identities.c.line_id.in_(ids)).order_by(line_identities.c.kind)
    )
    for row in found.all():
        held.setdefault(row.line_id, []).append(LineIdentity(kind=row.kind, value=row.value))
    ordered = sorted(rows, key=lambda values: (values["created_at"], values["line_id"]))
    return [
        Line(
            **{
                **values,
                "created_at": utc_aware(values["created_at"]),
                "status": LineStatus(values["status"]),
                "own_status": LineStatus(values["own_status"]),
            },
            identities=held.get(values["line_id"], []),
        )
        for values in ordered
    ]


async def get_line(engine: AsyncEngine, line_id: str) -> Line | None:
    async with engine.connect() as connection:
        found = await _lines(connection, lines.c.line_id == line_id)
    return found[0] if found else None


async def lines_of(engine: AsyncEngine, customer_id: str) -> list[Line]:
    async with engine.connect() as connection:
        return await _lines(connection, lines.c.customer_id == customer_id)


async def lines_provisioning(engine: AsyncEngine) -> list[Line]:
    async with engine.connect() as connection:
        return await _lines(connection, lines.c.status == LineStatus.PROVISIONING.value)


async def settle_line(engine: AsyncEngine, line_id: str, status: LineStatus, now: datetime) -> bool:
    """The line's row takes ``status``, its effective status, from whatever it is (``provisioning``
    when its engine account was just made), recorded in the status history; a terminated line's
    identity rows go (the engine's quarantine holds them). False when it had it already."""
    async with engine.begin() as connection:
        row = (
            await connection.execute(select(lines.c.customer_id, lines.c.status).where(lines.c.line_id == line_id))
        ).first()
        if row is None or row.status == status.value:
            return False
        result = await connection.execute(
            update(lines)
            .where(and_(lines.c.line_id == line_id, lines.c.status == row.status))
            .values(status=status.value)
        )
        if not result.rowcount:  # changed meanwhile (the lifecycle): its writer recorded it
            return False
        if status is LineStatus.TERMINATED:
            await connection.execute(delete(line_identities).where(line_identities.c.line_id == line_id))
        joined = row.status == LineStatus.PROVISIONING.value and status is not LineStatus.ACTIVE
        change = StatusChange(
            EntityKind.LINE,
            line_id,
            row.customer_id,
            row.status,
            status.value,
            now,
            reason=f"made while its customer or a node above it was {status.value}" if joined else "",
            reason_category=None if status is LineStatus.ACTIVE else ReasonCategory.OTHER,
        )
        await history.record(connection, change)
    return True


async def set_line_plan(engine: AsyncEngine, line_id: str, plan: str) -> None:
    async with engine.begin() as connection:
        await connection.execute(update(lines).where(lines.c.line_id == line_id).values(plan=plan))


async def identity_holders(engine: AsyncEngine, identities: Sequence[LineIdentity]) -> dict[tuple[str, str], str]:
    """Which of these identities a line already holds, and which line."""
    keys = [identity.key for identity in identities]
    if not keys:
        return {}
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(line_identities).where(
                    line_identities.c.kind.in_({kind for kind, _ in keys}),
                    line_identities.c.value.in_({value for _, value in keys}),
                )
            )
        ).all()
    return {(row.kind, row.value): row.line_id for row in rows if (row.kind, row.value) in keys}
