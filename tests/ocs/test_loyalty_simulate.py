"""``ocs loyalty simulate`` (ocs/loyalty/simulate.py, ocs/cli/loyalty.py) on real stores (SQLite, a
real Redis): a rule set evaluated over the usage records of a period gives its applications, bonus
and units per programme and segment, and nothing is credited or written: no loyalty row, no bucket
in the balance engine, the database file's content unchanged."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.store import BalanceStore
from balance.types import Account, BucketKind, Outcome, PaymentType
from ocs.cli.main import main
from ocs.db.customers import customers
from ocs.db.loyalty import LOYALTY_TABLES
from ocs.loyalty.rules_load import load_loyalty_rules
from ocs.loyalty.simulate import simulate
from tests.balance.conftest import embedded_redis
from tests.ocs.bill_run_support import UNIT, add_customer, add_line, balance_store, charge, spool, sqlite_database

__all__ = ["balance_store", "embedded_redis", "sqlite_database"]

RULES = """
[[programmes]]
id = "sms_bonus"
name = "0.10 for every 3rd SMS of the month"
valid_from = 2026-01-01

[[programmes.rules]]
id = "sms_every_3rd"
event = "usage"
filters = { services = ["sms"] }
counter = { period = "month", measure = "events" }
condition = { every = 3 }
action = { kind = "bonus_money", amount = "0.10", expiry_days = 30 }

[[programmes]]
id = "ideal_minutes"
name = "Ideal customers: 60 free seconds for every 2.00 spent"
valid_from = 2026-01-01

[[programmes.rules]]
id = "ideal_spend"
event = "usage"
filters = { segments = ["ideal"] }
counter = { period = "month", measure = "spend" }
condition = { every = "2.00" }
action = { kind = "unit_allowance", unit = "seconds", units = 60, services = ["voice"], cost = "0.05" }
"""


def _at(day: int) -> int:
    return int(datetime(2026, 2, day, 12, tzinfo=UTC).timestamp())


async def _usage(database: AsyncEngine, store: BalanceStore) -> None:
    """C1 (ideal) sends 7 SMS of 1.00 each in February (one on the 20th); C2 (no segment) sends 3."""
    for customer_id, segment in (("C1", "ideal"), ("C2", None)):
        await add_customer(database, customer_id, billing_account_id=None)
        await add_line(database, f"{customer_id}-L1", customer_id)
        await store.provision(
            Account(f"{customer_id}-L1", payment_type=PaymentType.POSTPAID, credit_limit_micros=50 * UNIT)
        )
        async with database.begin() as connection:
            await connection.execute(
                update(customers).where(customers.c.customer_id == customer_id).values(segment=segment)
            )
    for number in range(6):
        assert await charge(store, "C1-L1", f"a{number}", 1, _at(5)) is Outcome.OK
    assert await charge(store, "C1-L1", "late", 1, _at(20)) is Outcome.OK
    for number in range(3):
        assert await charge(store, "C2-L1", f"b{number}", 1, _at(6)) is Outcome.OK
    assert await spool(store, database) == 10


async def _written(database: AsyncEngine) -> int:
    written = 0
    async with database.connect() as connection:
        for table in LOYALTY_TABLES:
            written += int((await connection.execute(select(func.count()).select_from(table))).scalar_one())
    return written


async def test_a_dry_run_counts_per_programme_and_segment_and_credits_nothing(
    sqlite_database: AsyncEngine, balance_store: BalanceStore, tmp_path: Path
) -> None:
    database = sqlite_database
    await _usage(database, balance_store)
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(RULES, encoding="utf-8")

    result = await simulate(database, load_loyalty_rules(rules_path), date(2026, 2, 1), date(2026, 2, 10))
    assert (result.records, result.records_with_member) == (9, 9)  # the 20th's record is outside
    body = result.as_json()
    assert body["programmes"] == {
        "sms_bonus": {
            "ideal": {"applications": 2, "bonus_micros": 200_000, "units": {}, "invoice_discounts": 0},
            "none": {"applications": 1, "bonus_micros": 100_000, "units": {}, "invoice_discounts": 0},
        },
        "ideal_minutes": {
            "ideal": {"applications": 3, "bonus_micros": 0, "units": {"seconds": 180}, "invoice_discounts": 0}
        },
    }
    assert await _written(database) == 0
    for line_id in ("C1-L1", "C2-L1"):
        view = await balance_store.balance(line_id, _at(21))
        assert view is not None
        assert [
            bucket for bucket in view.account.buckets if bucket.kind in (BucketKind.BONUS, BucketKind.SECONDS)
        ] == []


async def test_the_command_prints_the_dry_run_and_leaves_the_database_as_it_was(
    sqlite_database: AsyncEngine, balance_store: BalanceStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database = sqlite_database
    await _usage(database, balance_store)
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(RULES, encoding="utf-8")
    data = Path(str(database.url.database)).parent
    await database.dispose()  # every page written to the file: its bytes are what the command finds
    before = hashlib.sha256((data / "ocs.sqlite3").read_bytes()).hexdigest()

    arguments = ["loyalty", "simulate", str(rules_path), "--from", "2026-02-01", "--to", "2026-02-28"]
    assert await asyncio.to_thread(main, [*arguments, "--data", str(data), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["records"] == 10 and body["programmes"]["sms_bonus"]["ideal"]["applications"] == 2
    assert hashlib.sha256((data / "ocs.sqlite3").read_bytes()).hexdigest() == before
    assert await _written(database) == 0

    assert await asyncio.to_thread(main, [*arguments, "--data", str(data)]) == 0
    text = capsys.readouterr().out
    assert "nothing credited" in text and "sms_bonus" in text and "ideal_minutes" in text
    missing = ["loyalty", "simulate", str(tmp_path / "missing.toml"), "--from", "2026-02-01", "--to", "2026-02-28"]
    assert await asyncio.to_thread(main, missing) == 2
    backwards = [*arguments[:4], "2026-03-01", "--to", "2026-02-01", "--data", str(data)]
    assert await asyncio.to_thread(main, backwards) == 2
    assert "--to: before --from" in capsys.readouterr().err
