"""The loyalty tables in the business database and their queries (ocs/loyalty/engine.py writes them).

Theory of operation: four tables, all written in the transaction that stores the events they
come from (the spool's batch for usage, the engine's own for payments):

- ``loyalty_member_counters``: one row per (member, period) holding every rule's counter of that
  member and period, a JSON object ``{"rule id": value}`` (migration 0017; 0016 kept a row per
  rule). A usage record moves about five counters of its member, over a day and a month: a row
  per rule wrote about five rows per record, a row per period writes one or two per member a
  batch touches. The engine reads the rows a batch needs (by member and period, the key) and
  writes back the counters it changed, absolute values, merged into the stored object by the
  database (``json_patch`` on SQLite, ``jsonb ||`` on PostgreSQL: ``upsert_counters``), so a
  transaction never rewrites a counter it did not change: a payment's transaction and the
  spool's, each moving its own rules' counters of one member and month, keep each other's.
- ``loyalty_applications``: one row per rule applied to one trigger, unique on (``rule_id``,
  ``trigger_id``): the same record or payment can never be applied twice by one rule. Its
  ``state`` is ``pending`` (a credit to make), ``credited`` (the balance engine took it,
  ``credited_at_ms``), ``recorded`` (nothing to credit: an invoice discount, whose row is in
  ``loyalty_invoice_discounts``) or ``refused`` (the engine refused the credit: an account gone;
  ``outcome`` says why). ``committed_at_ms`` is when the transaction that made it ran: with
  ``credited_at_ms`` it measures the commit-to-credit latency.
- ``loyalty_budgets``: per programme with a budget, what its applications cost so far; read with
  ``FOR UPDATE`` on PostgreSQL (SQLite serializes writers anyway) and written in the same transaction.
- ``loyalty_events``: events other than usage records (payments, birthdays), each once by its
  trigger id: a replayed payment is not evaluated again, and the audit finds every trigger.
- ``loyalty_invoice_discounts``: discounts for a later invoice, ``pending`` until the bill run
  takes one (``invoice_id``, state ``consumed``); ``pending_invoice_discounts`` is its query
  (``pending_invoice_discounts_of`` for a page of members at once: the bill run).

Times are epoch integers (seconds, or milliseconds where latency is measured), money integer micros.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from json.scanner import make_scanner
from typing import Any
from typing import cast as cast_type

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    cast,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ocs.db.schema import metadata
from ocs.db.usage import usage_records

ID_LENGTH = 64
# Ids per IN list: far below SQLite's 32,766 host parameters (https://sqlite.org/limits.html #9).
IDS_PER_STATEMENT = 1_000


class ApplicationState:
    PENDING = "pending"
    CREDITED = "credited"
    RECORDED = "recorded"
    REFUSED = "refused"


loyalty_member_counters = Table(
    "loyalty_member_counters",
    metadata,
    Column("member_id", String(ID_LENGTH), nullable=False),
    Column("period", String(16), nullable=False),  # "2026-12" or "2026-12-07" (ocs.loyalty.rules.period_of)
    Column("counters", Text, nullable=False),  # JSON object: rule id -> value (a counter never moved: absent)
    PrimaryKeyConstraint("member_id", "period"),
    sqlite_with_rowid=False,  # the key is the row: one B-tree to write per row, not two
)

loyalty_applications = Table(
    "loyalty_applications",
    metadata,
    Column("application_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("rule_id", String(ID_LENGTH), nullable=False),
    Column("programme_id", String(ID_LENGTH), nullable=False),
    Column("member_id", String(ID_LENGTH), nullable=False),
    Column("line_id", String(ID_LENGTH), nullable=False),  # the balance account credited ("": none)
    Column("trigger_id", Text, nullable=False),  # usage_records.record_id, or loyalty_events.trigger_id
    Column("trigger_kind", String(16), nullable=False),
    Column("action", String(24), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("unit_kind", String(16), nullable=True),
    Column("services", Text, nullable=False),  # ","-separated
    Column("valid_until", BigInteger, nullable=False),  # epoch seconds (0: no end)
    Column("cost_micros", BigInteger, nullable=False),
    Column("at_seconds", BigInteger, nullable=False),  # the trigger's time
    Column("committed_at_ms", BigInteger, nullable=False),
    Column("credited_at_ms", BigInteger, nullable=True),
    Column("state", String(16), nullable=False),
    Column("outcome", Text, nullable=True),
    UniqueConstraint("rule_id", "trigger_id"),
    Index(
        "ix_loyalty_applications_pending",
        "application_id",
        sqlite_where=text("state = 'pending'"),
        postgresql_where=text("state = 'pending'"),
    ),
    Index("ix_loyalty_applications_member_id", "member_id", "at_seconds"),
)

loyalty_budgets = Table(
    "loyalty_budgets",
    metadata,
    Column("programme_id", String(ID_LENGTH), primary_key=True),
    Column("spent_micros", BigInteger, nullable=False),
)

loyalty_events = Table(
    "loyalty_events",
    metadata,
    Column("trigger_id", String(128), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("member_id", String(ID_LENGTH), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("at_seconds", BigInteger, nullable=False),
)

loyalty_invoice_discounts = Table(
    "loyalty_invoice_discounts",
    metadata,
    Column("discount_id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("rule_id", String(ID_LENGTH), nullable=False),
    Column("trigger_id", Text, nullable=False),  # with rule_id: its application
    Column("programme_id", String(ID_LENGTH), nullable=False),
    Column("member_id", String(ID_LENGTH), nullable=False),
    Column("target", String(16), nullable=False),  # service | rentals
    Column("service", String(64), nullable=False),  # "" for rentals
    Column("percent_basis_points", Integer, nullable=False),
    Column("applies_from", BigInteger, nullable=False),  # [from, until), epoch seconds
    Column("applies_until", BigInteger, nullable=False),
    Column("state", String(16), nullable=False),  # pending | consumed
    Column("invoice_id", String(ID_LENGTH), nullable=True),
    UniqueConstraint("rule_id", "trigger_id"),
    Index("ix_loyalty_invoice_discounts_member_id", "member_id", "state", "applies_from"),
)

_INVOICE_DISCOUNT_COLUMNS = tuple(
    loyalty_invoice_discounts.c[name]
    for name in (
        "discount_id",
        "rule_id",
        "programme_id",
        "member_id",
        "target",
        "service",
        "percent_basis_points",
        "applies_from",
        "applies_until",
    )
)  # an ``InvoiceDiscount``'s fields, in order

LOYALTY_TABLES = (
    loyalty_member_counters,
    loyalty_applications,
    loyalty_budgets,
    loyalty_events,
    loyalty_invoice_discounts,
)

CounterKey = tuple[str, str, str]  # (rule id, member id, period)
CounterRow = tuple[str, str]  # (member id, period)


def _insert(connection: AsyncConnection, table: Table):  # type: ignore[no-untyped-def]
    if connection.dialect.name == "postgresql":
        return postgresql_insert(table)
    return sqlite_insert(table)


# -- counters and budgets ---------------------------------------------------------------------------


async def read_counters(connection: AsyncConnection, keys: Iterable[CounterKey]) -> dict[CounterKey, int]:
    """The stored values of these counters (a counter never written is absent: 0)."""
    wanted = set(keys)
    rows = await read_counter_rows(connection, {key[1] for key in wanted}, {key[2] for key in wanted})
    return {
        (rule_id, member_id, period): int(value)
        for (member_id, period), values in rows.items()
        for rule_id, value in values.items()
        if (rule_id, member_id, period) in wanted
    }


async def read_counter_rows(
    connection: AsyncConnection, member_ids: Iterable[str], periods: Iterable[str]
) -> dict[CounterRow, dict[str, int]]:
    """The stored counter rows of these members and periods, by (member, period): each rule's
    counter in the row (a counter never written is absent: 0). The engine's read: one statement
    per ``IDS_PER_STATEMENT`` members, however many rules, and the rows kept as decoded (the
    evaluation reads them by row). On SQLite (the spool's hot path) the statement is the
    driver's: SQLAlchemy's expansion of the IN list and its result rows cost more than SQLite's
    search."""
    members = list(set(member_ids))
    wanted_periods = list(set(periods))
    found: dict[CounterRow, dict[str, int]] = {}
    decode = _DECODE_OBJECT
    for start in range(0, len(members), IDS_PER_STATEMENT):
        chunk = members[start : start + IDS_PER_STATEMENT]
        for member_id, period, packed in await _counter_rows(connection, chunk, wanted_periods):
            found[(member_id, period)] = decode(packed, 0)[0]
    return found


# The JSON decoder's own scanner: ``json.loads`` of a row's small object spent two thirds of its
# time around it (the checks for whitespace before and after, which a stored object, written by
# ``packed_counters`` or PostgreSQL's jsonb, starting with its brace, does not need).
_DECODE_OBJECT = make_scanner(cast_type(Any, json.JSONDecoder()))  # the decoder is its context


async def _counter_rows(connection: AsyncConnection, members: Sequence[str], periods: Sequence[str]) -> Sequence[Any]:
    """(member, period, packed counters) of these members and periods."""
    if connection.dialect.name == "sqlite":
        result = await connection.exec_driver_sql(
            f"SELECT member_id, period, counters FROM loyalty_member_counters WHERE member_id IN"
            f" ({','.join('?' * len(members))}) AND period IN ({','.join('?' * len(periods))})",
            (*members, *periods),
        )
        return result.all()  # the driver's rows: (member_id, period, counters), strings
    table = loyalty_member_counters.c
    statement = select(table.member_id, table.period, table.counters).where(
        table.member_id.in_(members), table.period.in_(periods)
    )
    return [
        (str(member_id), str(period), str(packed)) for member_id, period, packed in await connection.execute(statement)
    ]


def packed_counters(rows: Mapping[CounterRow, Mapping[str, int]]) -> list[tuple[str, str, str]]:
    """The counter rows as stored: (member id, period, JSON object of rule -> value). The object is
    joined from each rule's JSON key (encoded once per rule id) and the values, integers: a third
    of the JSON encoder's time for the one to three counters of a row."""
    key = _json_key
    return [
        (member_id, period, "{" + ",".join([key(rule_id) + str(value) for rule_id, value in values.items()]) + "}")
        for (member_id, period), values in rows.items()
    ]


@functools.cache
def _json_key(rule_id: str) -> str:
    return json.dumps(rule_id) + ":"


async def upsert_counters(connection: AsyncConnection, values: Mapping[CounterKey, int]) -> None:
    """``upsert_counter_rows`` of counters keyed by (rule, member, period)."""
    rows: dict[CounterRow, dict[str, int]] = {}
    for (rule_id, member_id, period), value in values.items():
        rows.setdefault((member_id, period), {})[rule_id] = value
    await upsert_counter_rows(connection, rows)


async def upsert_counter_rows(connection: AsyncConnection, rows: Mapping[CounterRow, Mapping[str, int]]) -> None:
    """Write the counters' values (absolute: the engine read them in this transaction), one row
    per (member, period), merged into the stored row: the counters of rules not in ``rows``
    stay as they are."""
    if not rows:
        return
    packed = packed_counters(rows)
    if connection.dialect.name == "sqlite":
        # The spool's hot path, as ``usage.store_records``: the compiled statement run by the
        # driver's executemany; through Core's parameter handling it took about twice as long.
        await connection.exec_driver_sql(_SQLITE_UPSERT_COUNTERS, packed)
        return
    statement = postgresql_insert(loyalty_member_counters)
    stored = loyalty_member_counters.c.counters
    merged = cast(cast(stored, JSONB).op("||")(cast(statement.excluded.counters, JSONB)), Text)
    statement = statement.on_conflict_do_update(index_elements=["member_id", "period"], set_={"counters": merged})
    await connection.execute(
        statement, [{"member_id": member, "period": period, "counters": value} for member, period, value in packed]
    )


_SQLITE_UPSERT_COUNTERS = (
    "INSERT INTO loyalty_member_counters (member_id, period, counters) VALUES (?, ?, ?) "
    "ON CONFLICT (member_id, period) DO UPDATE SET counters = json_patch(counters, excluded.counters)"
)


async def read_spent(connection: AsyncConnection, programme_ids: Sequence[str]) -> dict[str, int]:
    """What each programme's applications cost so far, locked until the transaction ends (PostgreSQL)."""
    if not programme_ids:
        return {}
    table = loyalty_budgets.c
    statement = select(table.programme_id, table.spent_micros).where(table.programme_id.in_(programme_ids))
    statement = statement.with_for_update()
    return {str(programme_id): int(spent) for programme_id, spent in await connection.execute(statement)}


async def write_spent(connection: AsyncConnection, spent: Mapping[str, int]) -> None:
    if not spent:
        return
    statement = _insert(connection, loyalty_budgets)
    statement = statement.on_conflict_do_update(
        index_elements=["programme_id"], set_={"spent_micros": statement.excluded.spent_micros}
    )
    await connection.execute(statement, [{"programme_id": key, "spent_micros": value} for key, value in spent.items()])


# -- events other than usage ------------------------------------------------------------------------


async def record_events(connection: AsyncConnection, rows: Sequence[Mapping[str, object]]) -> set[str]:
    """Insert the events not seen before; returns the trigger ids that were new."""
    if not rows:
        return set()
    rows = list({str(row["trigger_id"]): row for row in reversed(rows)}.values())[::-1]  # each once, first kept
    ids = [str(row["trigger_id"]) for row in rows]
    seen = set(
        (
            await connection.execute(select(loyalty_events.c.trigger_id).where(loyalty_events.c.trigger_id.in_(ids)))
        ).scalars()
    )
    new = [row for row in rows if row["trigger_id"] not in seen]
    if new:
        await connection.execute(loyalty_events.insert(), list(new))
    return {str(row["trigger_id"]) for row in new}


# -- applications -----------------------------------------------------------------------------------


async def insert_applications(connection: AsyncConnection, rows: Sequence[Mapping[str, object]]) -> None:
    """Insert the applications; one already stored for its (rule, trigger) is left as it is."""
    await _insert_new(connection, loyalty_applications, rows)


async def insert_invoice_discounts(connection: AsyncConnection, rows: Sequence[Mapping[str, object]]) -> None:
    await _insert_new(connection, loyalty_invoice_discounts, rows)


async def _insert_new(connection: AsyncConnection, table: Table, rows: Sequence[Mapping[str, object]]) -> None:
    """Insert the rows (every row with the same keys), skipping one whose (rule, trigger) is stored."""
    if not rows:
        return
    if connection.dialect.name == "sqlite":  # the driver's executemany, as ``upsert_counters``
        names = tuple(rows[0])
        await connection.exec_driver_sql(
            _sqlite_insert_new_sql(table, names), [tuple(row[name] for name in names) for row in rows]
        )
        return
    statement = postgresql_insert(table).on_conflict_do_nothing(index_elements=["rule_id", "trigger_id"])
    await connection.execute(statement, list(rows))


@functools.cache
def _sqlite_insert_new_sql(table: Table, names: tuple[str, ...]) -> str:
    statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=["rule_id", "trigger_id"])
    return str(statement.compile(dialect=sqlite_dialect(), column_keys=list(names)))


@dataclass(frozen=True, slots=True)
class PendingCredit:
    """An application to credit into the balance engine."""

    rule_id: str
    trigger_id: str
    line_id: str
    action: str
    amount_micros: int
    units: int
    unit_kind: str | None
    services: tuple[str, ...]
    valid_until: int
    committed_at_ms: int


_CREDIT_COLUMNS = (
    loyalty_applications.c.rule_id,
    loyalty_applications.c.trigger_id,
    loyalty_applications.c.line_id,
    loyalty_applications.c.action,
    loyalty_applications.c.amount_micros,
    loyalty_applications.c.units,
    loyalty_applications.c.unit_kind,
    loyalty_applications.c.services,
    loyalty_applications.c.valid_until,
    loyalty_applications.c.committed_at_ms,
)


def pending_credit_of(row: Sequence[object]) -> PendingCredit:
    rule_id, trigger_id, line_id, action, amount, units, unit_kind, services, valid_until, committed = row
    return PendingCredit(
        str(rule_id),
        str(trigger_id),
        str(line_id),
        str(action),
        int(amount),  # type: ignore[call-overload]
        int(units),  # type: ignore[call-overload]
        None if unit_kind is None else str(unit_kind),
        tuple(item for item in str(services).split(",") if item),
        int(valid_until),  # type: ignore[call-overload]
        int(committed),  # type: ignore[call-overload]
    )


async def pending_credits(connection: AsyncConnection, limit: int) -> list[PendingCredit]:
    """The oldest ``limit`` applications still to credit."""
    statement = (
        select(*_CREDIT_COLUMNS)
        .where(loyalty_applications.c.state == ApplicationState.PENDING)
        .order_by(loyalty_applications.c.application_id)
        .limit(limit)
    )
    return [pending_credit_of(row) for row in await connection.execute(statement)]


@dataclass(frozen=True, slots=True)
class Mark:
    """What became of a pending application's credit: ``credited`` or ``refused`` (``outcome``)."""

    rule_id: str
    trigger_id: str
    state: str
    at_ms: int
    outcome: str | None = None


async def mark_applications(connection: AsyncConnection, marks: Sequence[Mark]) -> int:
    """Move pending applications to their marks' states; returns how many moved (one marked
    before, by an earlier pass, stays as it is)."""
    if not marks:
        return 0
    if connection.dialect.name == "sqlite":  # the driver's executemany, as ``upsert_counters``
        result = await connection.exec_driver_sql(
            _SQLITE_MARK_APPLICATIONS,
            [(mark.state, mark.at_ms, mark.outcome, mark.rule_id, mark.trigger_id) for mark in marks],
        )
        return int(result.rowcount)
    table = loyalty_applications.c
    statement = (
        update(loyalty_applications)
        .where(
            table.rule_id == bindparam("key_rule"),
            table.trigger_id == bindparam("key_trigger"),
            table.state == ApplicationState.PENDING,
        )
        .values(state=bindparam("new_state"), credited_at_ms=bindparam("at_ms"), outcome=bindparam("new_outcome"))
    )
    rows = [
        {
            "key_rule": mark.rule_id,
            "key_trigger": mark.trigger_id,
            "new_state": mark.state,
            "at_ms": mark.at_ms,
            "new_outcome": mark.outcome,
        }
        for mark in marks
    ]
    return int((await connection.execute(statement, rows)).rowcount)


_SQLITE_MARK_APPLICATIONS = (
    "UPDATE loyalty_applications SET state = ?, credited_at_ms = ?, outcome = ?"
    f" WHERE rule_id = ? AND trigger_id = ? AND state = '{ApplicationState.PENDING}'"
)


async def credit_latencies_ms(connection: AsyncConnection) -> list[int]:
    """Commit-to-credit time of every credited application, milliseconds (reports, the bench)."""
    table = loyalty_applications.c
    statement = select(table.credited_at_ms - table.committed_at_ms).where(table.state == ApplicationState.CREDITED)
    return [int(value) for value in (await connection.execute(statement)).scalars()]


async def application_counts(connection: AsyncConnection) -> dict[tuple[str, str], int]:
    """Applications per (programme, state)."""
    table = loyalty_applications.c
    statement = select(table.programme_id, table.state, func.count()).group_by(table.programme_id, table.state)
    return {(str(programme), str(state)): int(count) for programme, state, count in await connection.execute(statement)}


# -- invoice discounts (the bill run's side, issue 15 part 3) -----------------------------------------


@dataclass(frozen=True, slots=True)
class InvoiceDiscount:
    discount_id: int
    rule_id: str
    programme_id: str
    member_id: str
    target: str  # service | rentals
    service: str
    percent_basis_points: int
    applies_from: int
    applies_until: int


async def pending_invoice_discounts(
    connection: AsyncConnection, member_id: str, period_start: int, period_end: int
) -> list[InvoiceDiscount]:
    """The member's discounts not yet taken whose time overlaps [``period_start``, ``period_end``)."""
    table = loyalty_invoice_discounts.c
    statement = (
        select(*_INVOICE_DISCOUNT_COLUMNS)
        .where(
            table.member_id == member_id,
            table.state == "pending",
            table.applies_from < period_end,
            table.applies_until > period_start,
        )
        .order_by(table.discount_id)
    )
    return [InvoiceDiscount(*row) for row in await connection.execute(statement)]


async def pending_invoice_discounts_of(
    connection: AsyncConnection, member_ids: Sequence[str]
) -> dict[str, list[InvoiceDiscount]]:
    """Every discount not yet taken of each of ``member_ids`` that has some, by id: one query per
    ``IDS_PER_STATEMENT`` members (the bill run's page, which filters each by its own period)."""
    table = loyalty_invoice_discounts.c
    members = sorted(set(member_ids))
    found: dict[str, list[InvoiceDiscount]] = {}
    for first in range(0, len(members), IDS_PER_STATEMENT):
        statement = (
            select(*_INVOICE_DISCOUNT_COLUMNS)
            .where(table.member_id.in_(members[first : first + IDS_PER_STATEMENT]), table.state == "pending")
            .order_by(table.discount_id)
        )
        for row in await connection.execute(statement):
            discount = InvoiceDiscount(*row)
            found.setdefault(discount.member_id, []).append(discount)
    return found


async def consume_invoice_discount(connection: AsyncConnection, discount_id: int, invoice_id: str) -> bool:
    """Mark a discount taken by ``invoice_id`` in the bill run's transaction; False if taken before."""
    table = loyalty_invoice_discounts.c
    statement = (
        update(loyalty_invoice_discounts)
        .where(table.discount_id == discount_id, table.state == "pending")
        .values(state="consumed", invoice_id=invoice_id)
    )
    return int((await connection.execute(statement)).rowcount) == 1


# -- the audit (issue 15 "One ledger, extended") ---------------------------------------------------

PENDING_GRACE_MS = 60_000  # an application pending longer than this should have been credited
MAX_AUDIT_PROBLEMS = 100


async def audit_problems(
    connection: AsyncConnection, now_ms: int, pending_grace_ms: int = PENDING_GRACE_MS
) -> list[str]:
    """The loyalty ledger's problems (empty: whole):
    - no (rule, trigger) applied twice (the unique constraint's promise, checked);
    - every application points at its trigger: a usage record (``usage_records``; a record the
      retention deleted counts as missing, so audit before retention runs, as after a load run) or
      an event of ``loyalty_events``;
    - what the applications cost = each budget's spending (the credits recorded are exactly the
      ones a budget paid for);
    - nothing pending longer than ``pending_grace_ms`` (bonus credited = applications recorded)."""
    table = loyalty_applications.c
    problems: list[str] = []
    twice = select(table.rule_id, table.trigger_id, func.count()).group_by(table.rule_id, table.trigger_id)
    for rule_id, trigger_id, count in await connection.execute(twice.having(func.count() > 1)):
        problems.append(f"rule {rule_id} applied {count} times to {trigger_id}")
    missing_records = (
        select(table.rule_id, table.trigger_id)
        .select_from(loyalty_applications.outerjoin(usage_records, usage_records.c.record_id == table.trigger_id))
        .where(table.trigger_kind == "usage", usage_records.c.record_id.is_(None))
        .limit(MAX_AUDIT_PROBLEMS)
    )
    for rule_id, trigger_id in await connection.execute(missing_records):
        problems.append(f"rule {rule_id} applied to usage record {trigger_id}, which is not stored")
    missing_events = (
        select(table.rule_id, table.trigger_id)
        .select_from(loyalty_applications.outerjoin(loyalty_events, loyalty_events.c.trigger_id == table.trigger_id))
        .where(table.trigger_kind != "usage", loyalty_events.c.trigger_id.is_(None))
        .limit(MAX_AUDIT_PROBLEMS)
    )
    for rule_id, trigger_id in await connection.execute(missing_events):
        problems.append(f"rule {rule_id} applied to event {trigger_id}, which is not recorded")
    costs = dict(
        (
            await connection.execute(
                select(table.programme_id, func.sum(table.cost_micros)).group_by(table.programme_id)
            )
        ).all()
    )
    spent = dict(
        (await connection.execute(select(loyalty_budgets.c.programme_id, loyalty_budgets.c.spent_micros))).all()
    )
    for programme_id in sorted(set(spent)):
        if int(costs.get(programme_id, 0)) != int(spent[programme_id]):
            problems.append(
                f"programme {programme_id}: applications cost {int(costs.get(programme_id, 0))} micros,"
                f" its budget counts {int(spent[programme_id])}"
            )
    late = select(func.count()).where(
        table.state == ApplicationState.PENDING, table.committed_at_ms < now_ms - pending_grace_ms
    )
    overdue = int((await connection.execute(late)).scalar_one())
    if overdue:
        problems.append(f"{overdue} applications pending for more than {pending_grace_ms} ms: bonus not credited")
    return problems[:MAX_AUDIT_PROBLEMS]
