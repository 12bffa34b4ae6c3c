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


def database_url(settings: Settings) -> str:
    if settings.database.url:
        return settings.database.url
    return sqlite_url(Path(settings.spool.path).parent)


def sqlite_url(directory: Path) -> str:
    """The URL of the business database file in a data ``directory`` (the server's default)."""
    return f"sqlite+aiosqlite:///{directory.resolve() / DATABASE_FILE_NAME}"


def _sqlite_pragmas(connection: Any, record: object) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    # A commit here often precedes an act outside the database (the spool's acknowledgement that
    # deletes a record's only other copy, a Redis cut, a RAR): it must survive a power loss, which
    # WAL's default NORMAL does not promise; FULL syncs the WAL at each commit (ocs.billing.spool).
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MILLISECONDS}")
    cursor.close()


def make_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
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
