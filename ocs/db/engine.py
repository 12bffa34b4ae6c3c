"""The business database's engine, from ``[database] url``, and its migrations.

Theory of operation: ``database_url(settings)`` is ``[database] url`` when set (for example
``postgresql+asyncpg://ocs@db.example/ocs``), else a SQLite file ``ocs.sqlite3`` in the data
directory: the directory of the usage spool (``[spool] path``, ``data/`` by default), the
business side's other SQLite file, so one directory holds all a host's business data and a demo or
a test that moves the spool moves the database with it. ``open_database`` makes the engine (the
SQLite file's directory created, WAL and a busy timeout on every SQLite connection, so the server
and an offline ``ocs token`` command can share the file; ``synchronous=FULL``, so a commit survives a
power loss: ``ocs.billing.spool``) and runs ``migrate``.

``migrate`` brings the schema to the newest Alembic revision in ``ocs/db/migrations`` (package
data, so an installed ``ocs`` carries them) on the engine's own connection, in one transaction:
a migration that fails leaves the schema as it was. On PostgreSQL, several servers starting at
once take turns through an advisory lock (``migrations/env.py``).

Transactions on SQLite. Python's sqlite3 driver (under aiosqlite) by default runs in its legacy
mode: it sends ``BEGIN`` itself, deferred, and only before an INSERT, UPDATE or DELETE. A
transaction's reads before its first write then ran outside it (a writer that committed between
them and the write went unseen: a lost update), and a ``SAVEPOINT`` before any write opened a
transaction of its own that its ``RELEASE`` committed (the enclosing rollback did not undo it).
A deferred ``BEGIN`` sent for every transaction would fix that and break concurrency instead: a
transaction that reads and then writes holds a WAL snapshot, and if another connection of the
pool committed meanwhile, its first write fails at once with ``SQLITE_BUSY_SNAPSHOT`` ("database
is locked"), since the busy timeout does not apply to upgrading a read into a write. So the
engine takes the job from the driver (SQLAlchemy's documented recipe: ``isolation_level = None``
on the driver connection, and a ``begin`` listener that sends the ``BEGIN``):

- a transaction opened with ``begin()`` (``engine.begin()``, every write path here) sends
  ``BEGIN IMMEDIATE``: it takes the write lock first, waiting up to the busy timeout for the
  writer before it, so what it reads stays true until it commits and its writes never fail on
  an upgrade; writers take turns, as SQLite allows one at a time anyway;
- a transaction SQLAlchemy opens by itself at the first statement of a connection used without
  ``begin()`` (``engine.connect()``, the read paths) sends a deferred ``BEGIN``: a WAL reader,
  one consistent snapshot, never waiting for a writer nor making one wait. Such a connection
  must not write (its transaction is never committed here; a read path that wrote would be
  rolled back). A statement sent with ``exec_driver_sql`` outside ``begin()`` counts as a
  writer's: the safe side.

The two are told apart by ``before_execute``, which runs before SQLAlchemy's own begin and marks
the connection when a statement arrives outside a transaction; the mark is cleared at every
check-out, so a failed statement cannot leave it for the next user. PostgreSQL keeps its driver's
transactions (READ COMMITTED) and no listener.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import Connection, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ocs.config import Settings

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
DATABASE_FILE_NAME = "ocs.sqlite3"
SQLITE_BUSY_TIMEOUT_MILLISECONDS = 10_000  # a writer waits this long for another's lock, then fails
_READER = "ocs_sqlite_reader"  # connection info: the transaction about to begin is a reader's


def database_url(settings: Settings) -> str:
    if settings.database.url:
        return settings.database.url
    return sqlite_url(Path(settings.spool.path).parent)


def sqlite_url(directory: Path) -> str:
    """The URL of the business database file in a data ``directory`` (the server's default)."""
    return f"sqlite+aiosqlite:///{directory.resolve() / DATABASE_FILE_NAME}"


def _sqlite_pragmas(connection: Any, record: object) -> None:
    connection.isolation_level = None  # the driver sends no BEGIN: ``_sqlite_begin`` does
    cursor = connection.cursor()
    # First: the journal mode may need the database's lock, worth waiting for as any other.
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MILLISECONDS}")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    # A commit here often precedes an act outside the database (the spool's acknowledgement that
    # deletes a record's only other copy, a Redis cut, a RAR): it must survive a power loss, which
    # WAL's default NORMAL does not promise; FULL syncs the WAL at each commit (ocs.billing.spool).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def _sqlite_checkout(connection: Any, record: Any, proxy: object) -> None:
    record.info.pop(_READER, None)


def _sqlite_mark_reader(connection: Connection, *statement: object) -> None:
    if not connection.in_transaction():  # SQLAlchemy is about to begin for this statement
        connection.info[_READER] = True


def _sqlite_begin(connection: Connection) -> None:
    reader = connection.info.pop(_READER, False)
    connection.exec_driver_sql("BEGIN" if reader else "BEGIN IMMEDIATE")


def make_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "checkout", _sqlite_checkout)
        event.listen(engine.sync_engine, "before_execute", _sqlite_mark_reader)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(engine: AsyncEngine) -> None:
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


class DatabaseUnavailable(Exception):
    """The business database cannot be opened or migrated (the message says which and why)."""


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def open_database(url: str) -> AsyncEngine:
    """The engine on ``url``, its schema migrated to the newest revision; ``DatabaseUnavailable``
    (one line, no password) when it cannot be."""
    try:
        engine = make_engine(url)
    except (ArgumentError, ImportError, OSError) as error:
        raise DatabaseUnavailable(f"database {_shown(url)}: {error}") from None
    try:
        await migrate(engine)
    except (SQLAlchemyError, OSError, CommandError) as error:
        await engine.dispose()
        raise DatabaseUnavailable(f"database {_shown(url)}: {type(error).__name__}: {error}") from None
    except BaseException:
        await engine.dispose()
        raise
    return engine
