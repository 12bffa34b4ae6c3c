"""A private PostgreSQL for the database tests, started from the installed binaries.

``postgresql_url`` (session scope) runs ``initdb`` into a fresh directory and ``pg_ctl start``
on a free loopback port (trust authentication, nothing reachable from elsewhere), and stops it
with ``pg_ctl stop -m fast`` at the end. PostgreSQL refuses to run as root, so under root the
binaries run as the ``postgres`` user (``runuser``). Where no binaries are found the tests that
need it are skipped, saying so.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.embedded import pick_free_port
from ocs.db.engine import DATABASE_FILE_NAME, open_database

SEARCHED = [Path("/usr/lib/postgresql") / version / "bin" for version in ("17", "16", "15", "14")]
START_DEADLINE_SECONDS = 60  # pg_ctl -w waits for the server to accept connections, at most this


def find_postgres_binaries() -> Path | None:
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).parent
    return next((directory for directory in SEARCHED if (directory / "initdb").is_file()), None)


def _as_owner(command: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *command] if user else command


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    binaries = find_postgres_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL binaries (initdb) on PATH or under /usr/lib/postgresql/*/bin")
    user: str | None = None
    directory = Path(tempfile.mkdtemp(prefix="ocs-postgres-"))
    if os.geteuid() == 0:  # initdb: "cannot be run as root"
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
        user = "postgres"
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    data = directory / "data"
    port = pick_free_port()
    run = {"check": True, "capture_output": True}
    subprocess.run(
        _as_owner([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"], user),
        **run,
    )
    options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = [str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w"]
    subprocess.run(_as_owner([*start, "-t", str(START_DEADLINE_SECONDS), "start"], user), **run)
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], user), **run)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.asynccontextmanager
async def business_database(
    request: pytest.FixtureRequest, tmp_path: Path, cleared: tuple[str, ...]
) -> AsyncIterator[AsyncEngine]:
    """The business database for a test parametrized over "sqlite" and "postgresql": migrated,
    the ``cleared`` tables emptied (the schema stays), disposed of at the end."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'business' / DATABASE_FILE_NAME}"
    else:
        url = request.getfixturevalue("postgresql_url")
    made = await open_database(url)
    async with made.begin() as connection:
        for table in cleared:
            await connection.execute(text(f"DELETE FROM {table}"))
    try:
        yield made
    finally:
        await made.dispose()
