"""What the business database's SQLite transactions cost readers and writers
(ocs/db/engine.py "Transactions on SQLite").

Theory of operation: one business database (migrated, WAL, ``synchronous=FULL``) in a temporary
directory, on the engine of ``ocs.db.engine``. For ``SECONDS`` seconds, ``WRITERS`` tasks each
repeat a writer's transaction (``engine.begin()``: read a row, then insert one party) while
``READERS`` tasks each repeat a reader's (``engine.connect()``: two reads). It counts the
transactions done and the writers' failures (``database is locked``). Run it on two checkouts to
compare engines: ``PYTHONPATH=<checkout> python bench/sqlite_transactions.py``.

Measured on the 2-core shared machine (one 10 s run each, noisy): before this engine (the
driver's legacy transactions) 424 reads/s, 198 writes/s, no failure, but 14 of 16 concurrent
read-then-write increments lost (tests/ocs/test_db_concurrency.py); with it 361 reads/s (a reader
now sends its own BEGIN and COMMIT around its snapshot), 128 writes/s (a writer holds the lock
from its first read to its commit), no failure, no update lost.

The last line is ``RESULT reads_per_s=<n> writes_per_s=<n> write_failures=<n>``.

Run from the project root: ``.venv/bin/python bench/sqlite_transactions.py`` (about 10 seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# Run as a script, this directory comes first on sys.path, and bench/balance.py would then shadow
# the balance package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from sqlalchemy import func, insert, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.db.customers import parties
from ocs.db.engine import open_database, sqlite_url

SECONDS = 10.0
WRITERS = 16  # the concurrent creates of issue 16
READERS = 8
MOMENT = datetime(2026, 3, 1, 12, 0)


async def writer(engine: AsyncEngine, number: int, deadline: float, counts: dict[str, int]) -> None:
    made = 0
    while time.monotonic() < deadline:
        made += 1
        try:
            async with engine.begin() as connection:
                await connection.execute(select(func.count()).select_from(parties))
                await asyncio.sleep(0)  # another request's turn, as in a server
                party = {"party_id": f"P-{number}-{made}", "kind": "individual", "contact_media": []}
                await connection.execute(insert(parties).values(**party, created_at=MOMENT))
            counts["writes"] += 1
        except OperationalError:
            counts["write_failures"] += 1


async def reader(engine: AsyncEngine, deadline: float, counts: dict[str, int]) -> None:
    while time.monotonic() < deadline:
        async with engine.connect() as connection:
            await connection.execute(select(func.count()).select_from(parties))
            await connection.execute(select(parties.c.party_id).limit(1))
        counts["reads"] += 1


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SECONDS)
    arguments = parser.parse_args()
    counts = {"reads": 0, "writes": 0, "write_failures": 0}
    with tempfile.TemporaryDirectory() as directory:
        engine = await open_database(sqlite_url(Path(directory)))
        try:
            deadline = time.monotonic() + arguments.seconds
            await asyncio.gather(
                *(writer(engine, number, deadline, counts) for number in range(WRITERS)),
                *(reader(engine, deadline, counts) for _ in range(READERS)),
            )
        finally:
            await engine.dispose()
    seconds = arguments.seconds
    print(f"{WRITERS} writers, {READERS} readers, {seconds:.0f} s: {counts}")
    print(
        f"RESULT reads_per_s={counts['reads'] / seconds:.0f} writes_per_s={counts['writes'] / seconds:.0f}"
        f" write_failures={counts['write_failures']}"
    )


if __name__ == "__main__":
    asyncio.run(main())
