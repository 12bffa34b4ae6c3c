"""Many rows in one statement run: the driver's own executemany on SQLite, Core's elsewhere.

Theory of operation: SQLAlchemy Core's executemany prepares every row's parameters in Python
(``construct_params`` and the type processors, per row and per call), which costs more than
SQLite spends storing the row. For the bill run's pages (tens of thousands of rows a
transaction) ``execute_many`` compiles the statement once per set of keys (cached), finds each
parameter's type processor once (the same ones Core would apply: JSON serialized as Core does,
dates and times in SQLAlchemy's SQLite text format, so rows read back through Core come out as
they went in), and hands the driver a list of tuples: one ``executemany`` in sqlite3's C code.
``ocs.db.usage.store_records`` does the same for the spool. On any other database the statement
runs through Core unchanged (asyncpg's executemany is fast already).

Reading, ``rows_of_ids`` does the same for a select of the rows whose column is one of many ids
(the bill run's facts of a page): on SQLite one statement, the ids one JSON array
(``json_each``), compiled once, its rows the driver's own values without Core's result
processing (a date or time read as SQLAlchemy's SQLite text: ``day_of`` reads either form).

The answer is the rows the statement changed, summed over the parameter sets (sqlite3's
``executemany`` rowcount; Core's ``rowcount`` elsewhere, which the caller must not rely on for
an exact count on PostgreSQL).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import ColumnElement, Insert, Select, Table, TextClause, bindparam, func, insert, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.base import Executable

Processor = Callable[[Any], Any] | None


@functools.cache
def insert_of(table: Table) -> Insert:
    """One ``INSERT INTO table`` per table, so ``execute_many``'s cache holds one entry for it."""
    return insert(table)


Compiled = tuple[str, tuple[str, ...], tuple[Processor, ...], dict[str, Any]]  # sql, names, processors, constants
_compiled: dict[tuple[int, tuple[str, ...]], Compiled] = {}
_kept: dict[int, Executable] = {}  # the statements of ``_compiled``, so their ids stay theirs


def _compile(statement: Executable, names: tuple[str, ...], dialect: Dialect) -> Compiled:
    key = (id(statement), names)
    found = _compiled.get(key)
    if found is None:
        compiled = statement.compile(dialect=dialect, column_keys=list(names))  # type: ignore[attr-defined]
        order = tuple(compiled.positiontup or ())
        processors = tuple(compiled.binds[name].type.bind_processor(dialect) for name in order)
        constants = {name: value for name, value in compiled.params.items() if name in order and name not in names}
        found = (str(compiled), order, processors, constants)
        _kept[id(statement)] = statement
        _compiled[key] = found
    return found


def _once_per_object(processor: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """``processor`` that converts each value object once for one ``execute_many``: rows that
    share one value object (the bill run's invoice lines share their rental's explanation, a
    page's rows their period's dates and their time of writing) convert it once. Only values of
    columns with a processor come here (JSON, dates, times: a processor is a pure function of
    its value). The rows hold their values for the whole call, so an id stays its object's;
    the cache dies with the call."""
    done: dict[int, Any] = {}

    def process(value: Any) -> Any:
        found = done.get(id(value), done)
        if found is done:
            found = done[id(value)] = processor(value)
        return found

    return process


async def execute_many(connection: AsyncConnection, statement: Executable, rows: Sequence[Mapping[str, Any]]) -> int:
    """``statement`` once per row of ``rows`` (every row with the same keys), in the caller's
    transaction; answers the rows changed (module docstring). ``statement`` should be built once
    (a module constant, ``insert_of``): the compiled form is cached by it."""
    if not rows:
        return 0
    if connection.dialect.name != "sqlite":
        return int((await connection.execute(statement, list(rows))).rowcount)
    sql, order, processors, constants = _compile(statement, tuple(rows[0]), connection.dialect)
    if constants:  # values written in the statement itself (``column == "ok"``)
        rows = [{**constants, **row} for row in rows]
    getter = itemgetter(*order)
    if len(order) == 1:
        values: list[Sequence[Any]] = [(getter(row),) for row in rows]
    else:
        values = [getter(row) for row in rows]
    result = await connection.exec_driver_sql(sql, _processed(values, processors))
    return int(result.rowcount)


def _processed(rows: Sequence[Sequence[Any]], processors: Sequence[Processor]) -> Sequence[Sequence[Any]]:
    """``rows`` with each value through its column's type processor, where it has one."""
    processed = [(index, _once_per_object(processor)) for index, processor in enumerate(processors) if processor]
    if not processed:
        return rows
    changed: list[Sequence[Any]] = []
    for row_values in rows:
        row_list = list(row_values)
        for index, processor in processed:
            row_list[index] = processor(row_list[index])
        changed.append(tuple(row_list))
    return changed


async def execute_many_values(
    connection: AsyncConnection, statement: Executable, names: tuple[str, ...], rows: Sequence[Sequence[Any]]
) -> int:
    """``execute_many`` with each row the values of ``names`` in that order: no dict a row (the
    bill run's invoice lines, hundreds of thousands a run). Answers the rows changed."""
    if not rows:
        return 0
    if connection.dialect.name != "sqlite":
        return await execute_many(connection, statement, [dict(zip(names, row, strict=True)) for row in rows])
    sql, order, processors, constants = _compile(statement, names, connection.dialect)
    if constants or len(order) < 2:
        return await execute_many(connection, statement, [dict(zip(names, row, strict=True)) for row in rows])
    if order != names:  # the statement's placeholders in another order than the caller's values
        reorder = itemgetter(*(names.index(name) for name in order))
        rows = [reorder(row) for row in rows]
    return int((await connection.exec_driver_sql(sql, _processed(rows, processors))).rowcount)


IDS_PER_STATEMENT = 1_000  # ids bound per IN (...) where they are not one JSON array
_selects: dict[tuple[int, int], tuple[TextClause, dict[str, Any]]] = {}  # the SQL as text, its constants
_kept_selects: dict[tuple[int, int], tuple[Select[Any], ColumnElement[Any]]] = {}  # so the ids stay theirs
_NAMED = sqlite.dialect(paramstyle="named")  # so the compiled SQL can be a ``text`` clause


def _compile_select(statement: Select[Any], column: ColumnElement[Any]) -> tuple[TextClause, dict[str, Any]]:
    key = (id(statement), id(column))
    found = _selects.get(key)
    if found is None:
        ids = func.json_each(bindparam("ids")).table_valued("value")
        compiled = statement.where(column.in_(select(ids.c.value))).compile(dialect=_NAMED)
        found = (text(str(compiled)), {name: value for name, value in compiled.params.items() if name != "ids"})
        _kept_selects[key] = (statement, column)
        _selects[key] = found
    return found


async def rows_of_ids(
    connection: AsyncConnection, statement: Select[Any], column: ColumnElement[Any], ids: Sequence[str]
) -> list[Sequence[Any]]:
    """The rows of ``statement`` whose ``column`` is one of ``ids`` (the module docstring):
    on SQLite in the statement's order, as the driver gives them (dates and times as text);
    elsewhere Core's rows, ``IDS_PER_STATEMENT`` ids a statement, each statement's rows in its
    order. ``statement`` should be built once (a module constant): its compiled form is cached.
    On SQLite the SQL goes as a ``text`` clause, not by ``exec_driver_sql``: a statement that
    opens the connection's transaction must reach the engine's ``before_execute`` to begin it as
    a reader's (``ocs.db.engine``), or the read would hold the write lock."""
    if not ids:
        return []
    if connection.dialect.name != "sqlite":
        found: list[Sequence[Any]] = []
        for start in range(0, len(ids), IDS_PER_STATEMENT):
            part = ids[start : start + IDS_PER_STATEMENT]
            found += list(await connection.execute(statement.where(column.in_(part))))
        return found
    clause, constants = _compile_select(statement, column)
    return list((await connection.execute(clause, {**constants, "ids": json.dumps(list(ids))})).all())


def day_of(moment: datetime | str) -> date:
    """The day of a time read by ``rows_of_ids``: a ``datetime``, or SQLAlchemy's SQLite text of
    one (``YYYY-MM-DD HH:MM:SS.ffffff``)."""
    if isinstance(moment, str):
        return date.fromisoformat(moment[:10])
    return moment.date()
