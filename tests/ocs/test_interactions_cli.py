"""``ocs note``, ``ocs ticket`` and ``ocs report customers`` against a running server, and the
report offline on the data directory that server made, after it stopped."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis
from ocs.billing.spool import Spool
from ocs.billing.spool_upgrade import import_old_spool
from ocs.db.engine import open_database, sqlite_url
from ocs.db.usage import last_usage_by_account
from tests.ocs.conftest import running_server
from tests.ocs.test_api import Api, api, open_api
from tests.ocs.test_cli import ocs
from tests.ocs.test_customers_api import BEA
from tests.ocs.test_spool_upgrade import NOW, old_spool

__all__ = ["api"]


async def test_notes_and_a_ticket_through_its_workflow(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    url = ("--url", api.url)
    assert (await api.call("POST", "/customers", BEA))[0] == 201
    assert (await api.call("POST", "/customers/bea/lines", {"line_id": "bea-1"}))[0] == 201
    status, out, err = await ocs(capsys, *url, "note", "list", "bea")
    assert (status, out, err) == (0, "no notes\n", "")
    status, out, err = await ocs(capsys, *url, "note", "add", "bea", "called about a bill", "--channel", "phone")
    assert status == 0 and " bea " in out and "phone by tests: called about a bill" in out, err
    status, out, _ = await ocs(capsys, *url, "note", "list", "bea")
    assert status == 0 and out.count("note      #") == 1 and "called about a bill" in out
    status, _, err = await ocs(capsys, *url, "note", "add", "bea", "x", "--channel", "fax")
    assert status == 2 and "fax" in err  # a usage error: nothing sent
    status, out, err = await ocs(capsys, *url, "note", "add", "nobody", "hello")
    assert status == 1 and out == "" and "HTTP 404" in err and len(err.splitlines()) == 1
    status, out, err = await ocs(
        capsys,
        *url,
        *("ticket", "open", "bea", "--severity", "major", "--description", "no data since Monday"),
        *("--line", "bea-1", "--ticket-id", "T1"),
    )
    assert status == 0, err
    assert "ticket    T1 (complaint, major, acknowledged) for bea, line bea-1: no data since Monday" in out
    status, out, err = await ocs(capsys, *url, "ticket", "move", "T1", "inProgress", "--reason", "on it")
    assert status == 0 and "acknowledged -> inProgress by tests: on it" in out, err
    status, out, err = await ocs(capsys, *url, "ticket", "move", "T1", "closed", "--reason", "skip")
    assert status == 1 and out == "" and "status: " in err and "HTTP 422" in err and len(err.splitlines()) == 1
    status, out, _ = await ocs(capsys, *url, "ticket", "show", "T1")
    assert status == 0 and "(complaint, major, inProgress)" in out and "closed" not in out
    status, _, err = await ocs(capsys, *url, "ticket", "show", "T9")
    assert status == 1 and "HTTP 404" in err
    status, _, err = await ocs(capsys, *url, "ticket", "open", "bea", "--description", "x")
    assert status == 2 and "--severity" in err
    status, _, err = await ocs(capsys, *url, "ticket", "move", "T1", "done", "--reason", "x")
    assert status == 2 and "done" in err


async def test_the_report_remote_and_offline_on_the_server_s_data_directory(
    embedded_redis: EmbeddedRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    today = datetime.now(UTC).date().isoformat()
    period = ("report", "customers", "--from", today, "--to", today)
    async with running_server(embedded_redis.url, tmp_path / "spool.sqlite3") as server:
        http, owned = await open_api(server)
        try:
            url = ("--url", http.url)
            status, _, err = await ocs(
                capsys,
                *url,
                "customer",
                "add",
                "bea",
                "--given-name",
                "Bea",
                "--family-name",
                "B",
                "--birth-date",
                "1980-01-01",
            )
            assert status == 0, err
            status, _, err = await ocs(capsys, *url, "line", "add", "bea", "--line-id", "bea-1")
            assert status == 0, err
            status, remote, err = await ocs(capsys, *url, *period, "--json")
            assert status == 0, err
            status, text, err = await ocs(capsys, *url, *period)
            assert status == 0, err
            status, _, err = await ocs(capsys, *url, "report", "customers", "--from", today, "--to", "2000-01-01")
            assert status == 1 and "to: " in err and "HTTP 422" in err
        finally:
            if owned:
                await http.close()
    totals = json.loads(remote)["totals"]
    assert (totals["opening"], totals["gross_additions"], totals["terminations"], totals["closing"]) == (0, 1, 0, 1)
    assert "total                   0         1            0        1    0.00%" in text
    assert "mobile_prepaid          0         1            0        1" in text
    # The server has stopped: the same report from its files alone.
    status, offline, err = await ocs(capsys, *period, "--data", str(tmp_path), "--json")
    assert (status, err) == (0, "") and json.loads(offline) == json.loads(remote)
    status, offline_text, _ = await ocs(capsys, *period, "--data", str(tmp_path))
    assert status == 0 and offline_text == text
    status, _, err = await ocs(
        capsys, "report", "customers", "--from", today, "--to", "2000-01-01", "--data", str(tmp_path)
    )
    assert status == 2 and "to: " in err and len(err.splitlines()) == 1
    status, _, err = await ocs(capsys, *period, "--data", str(tmp_path / "nowhere"))
    assert status == 1 and "no business database at" in err and len(err.splitlines()) == 1
    old_spool(tmp_path / "spool.sqlite3", 2)  # an older server's file, not yet copied in
    status, _, err = await ocs(capsys, *period, "--data", str(tmp_path))
    assert status == 1 and "is not yet copied into the business database" in err and len(err.splitlines()) == 1
    status, _, err = await ocs(capsys, "report", "customers", "--from", "yesterday", "--to", today)
    assert status == 2 and "'yesterday': expected a day, YYYY-MM-DD" in err


async def test_the_offline_report_reads_the_newest_usage_per_line_as_the_server_does(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite3"
    old_spool(path, 2)
    engine = await open_database(sqlite_url(tmp_path))
    try:
        assert await import_old_spool(engine, path) == 1  # as the server does at startup
        async with engine.connect() as connection:
            assert await last_usage_by_account(connection) == await Spool(engine).last_usage_by_account()
        assert await Spool(engine).last_usage_by_account() == {"kay": NOW}
    finally:
        await engine.dispose()
