"""The bill run's doors: ``POST /billRuns`` and ``GET /reports/ledger`` over the real server
(admin only for the run, read roles for the ledger, the audit trail, refusals naming the field,
a catalog that cannot be used answered 409 at the run), ``ocs bill run`` and ``ocs report ledger``,
the ``bill_run`` duty (registered at startup, once a day from its hour) and the startup pass."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.store import BalanceStore
from balance.types import Account, Outcome, PaymentType
from ocs.billing.bill_runs import BillRuns
from ocs.customers.service import CustomerRefusal
from ocs.db.billing import invoices
from ocs.db.tokens import Role
from ocs.rating.rate import load_book
from tests.balance.conftest import embedded_redis
from tests.ocs.bill_run_support import ROOT, UNIT, add_customer, add_line, balance_store, charge, database, spool
from tests.ocs.postgres_support import postgresql_url
from tests.ocs.test_access import call, token
from tests.ocs.test_api import Api, api
from tests.ocs.test_bill_run import KilledAfterCommit, RunKilledAfterCommit, catalog
from tests.ocs.test_cli import ocs
from tests.ocs.test_customers_api import BEA

__all__ = ["api", "balance_store", "database", "embedded_redis", "postgresql_url"]

CATALOG = ROOT / "config" / "catalog.toml"
IN_FEBRUARY = int(datetime(2026, 2, 10, tzinfo=UTC).timestamp())


async def test_a_bill_run_over_the_api_and_the_cli_then_the_ledger(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (await api.call("POST", "/customers", BEA))[0] == 201
    line = {"line_id": "bea-1", "payment_type": "postpaid", "identities": [{"kind": "msisdn", "value": "+4915500001"}]}
    status, made = await api.call("POST", "/customers/bea/lines", line)
    assert status == 201, made
    bill_runs = api.server.state.bill_runs
    assert bill_runs is not None
    bill_runs.catalog_path = Path("/nonexistent/catalog.toml")  # not loaded yet: loaded at the first run
    day = (datetime.now(UTC) + timedelta(days=40)).date().isoformat()  # the cycle of today has closed
    status, refused = await api.call("POST", "/billRuns", {"date": day})
    assert status == 409 and refused["error"].startswith("billing.catalog: cannot be used"), refused
    bill_runs.catalog_path = CATALOG
    for body in ({"date": "2026-13-01"}, {"date": "0001-01-19"}, {"day": day}, {}):
        status, refused = await api.call("POST", "/billRuns", body)
        assert status == 422 and "date" in refused["error"], (body, refused)
    status, first = await api.call("POST", "/billRuns", {"date": day})
    assert status == 200 and (first["date"], first["accounts"], first["invoices"]) == (day, 1, 1), first
    account = (await api.call("GET", "/customers/bea"))[1]["billing_account"]["billing_account_id"]
    status, bills = await api.call("GET", "/customerBills", query={"billing_account": account})
    assert status == 200 and len(bills["bills"]) == 1, bills
    status, again = await api.call("POST", "/billRuns", {"date": day})
    assert status == 200 and (again["invoices"], again["skipped"]) == (0, 1), again
    read_only = await token(api, Role.READ_ONLY)
    assert (await call(api, "POST", "/billRuns", read_only, {"date": day}))[0] == 403
    status, ledger, _ = await call(api, "GET", "/reports/ledger", read_only)
    assert status == 200 and ledger == {"ok": True, "failed": 0, "problems": []}, ledger
    status, trail = await api.call("GET", "/audit-trail")
    assert status == 200
    runs = [record for record in trail["records"] if record["route"] == "/billRuns" and record["status"] == 200]
    assert len(runs) == 2 and runs[0]["detail"] == f"bill run for {day}", runs
    url = ("--url", api.url)
    status, out, err = await ocs(capsys, *url, "bill", "run", "--date", day)
    assert status == 0 and f"bill run {day}: 1 account(s), 0 invoice(s)" in out, (out, err)
    status, out, err = await ocs(capsys, *url, "bill", "run", "--date", "tomorrow")
    assert status == 2 and "tomorrow" in err
    status, out, err = await ocs(capsys, *url, "report", "ledger")
    assert status == 0 and "the ledger ties out" in out, (out, err)


def test_the_bill_run_duty_is_registered_at_startup(api: Api) -> None:
    assert "bill_run" in api.server.state.duties.names


async def line_used_in_february(engine: AsyncEngine, store: BalanceStore) -> None:
    await add_customer(engine, "C1", billing_account_id="B1")
    await add_line(engine, "L1", "C1")
    await store.provision(Account("L1", payment_type=PaymentType.POSTPAID, credit_limit_micros=3 * UNIT))
    assert await charge(store, "L1", "s1", 2, IN_FEBRUARY) is Outcome.OK
    assert await spool(store, engine) == 1


async def count_invoices(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(select(func.count()).select_from(invoices))).scalar_one())


def bill_runs_of(engine: AsyncEngine, store: BalanceStore, catalog_path: Path = CATALOG) -> BillRuns:
    book = load_book(ROOT / "config" / "tariffs.toml")
    clock = datetime(2026, 3, 1, 3, tzinfo=UTC).timestamp
    return BillRuns(engine, store, book, catalog_path, run_hour=2, page_size=10, clock=clock)


async def test_the_daily_run_waits_for_its_hour_and_runs_once_a_day(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await line_used_in_february(database, balance_store)
    bill_runs = bill_runs_of(database, balance_store)
    assert await bill_runs.run_due(datetime(2026, 3, 1, 1, 59, tzinfo=UTC)) is None  # before 02:00 UTC
    assert await count_invoices(database) == 0
    report = await bill_runs.run_due(datetime(2026, 3, 1, 2, 0, tzinfo=UTC))
    assert report is not None and (report.day, report.invoices) == (date(2026, 3, 1), 1)
    assert await bill_runs.run_due(datetime(2026, 3, 1, 23, 0, tzinfo=UTC)) is None  # the same day again
    assert bill_runs.last_daily_run == date(2026, 3, 1) and await count_invoices(database) == 1
    following = await bill_runs.run_due(datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
    assert following is not None and following.invoices == 0


async def test_a_catalog_that_cannot_be_used_is_refused_at_the_run_naming_it(
    database: AsyncEngine, balance_store: BalanceStore, tmp_path: Path
) -> None:
    await line_used_in_february(database, balance_store)
    bad = tmp_path / "catalog.toml"
    bad.write_text(CATALOG.read_text().replace("[offers.fixed_postpaid]", "[offers.no_such_plan]"))
    bill_runs = bill_runs_of(database, balance_store, bad)
    with pytest.raises(CustomerRefusal, match=r"billing\.catalog: cannot be used") as refused:
        await bill_runs.run_due(datetime(2026, 3, 1, 3, tzinfo=UTC))
    assert refused.value.field == "billing.catalog"
    assert bill_runs.last_daily_run is None and await count_invoices(database) == 0  # tried again later
    bill_runs.catalog_path = CATALOG
    report = await bill_runs.run_due(datetime(2026, 3, 1, 3, tzinfo=UTC))
    assert report is not None and report.invoices == 1


async def test_the_startup_pass_applies_the_cuts_a_crashed_run_left(
    database: AsyncEngine, balance_store: BalanceStore
) -> None:
    await line_used_in_february(database, balance_store)
    with pytest.raises(KilledAfterCommit):
        await RunKilledAfterCommit(database, balance_store, catalog()).run(date(2026, 3, 1))
    view = await balance_store.balance("L1", IN_FEBRUARY)
    assert view is not None and view.unbilled_micros == 2 * UNIT
    await bill_runs_of(database, balance_store, Path("/no/catalog/needed")).startup_pass()
    view = await balance_store.balance("L1", IN_FEBRUARY)
    assert view is not None and (view.unbilled_micros, view.billed_micros) == (0, 2 * UNIT)
