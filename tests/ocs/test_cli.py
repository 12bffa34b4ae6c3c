"""The ``ocs`` command line against a running server (its HTTP API) and offline (tariffs, spool).

``main`` runs its own event loop, so each call runs in a worker thread while the server keeps
serving on the test's loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis, pick_free_port
from balance.types import ChargeItem, ChargeRequest, Outcome, Tariff, Unit
from ocs.billing.spool import Spool
from ocs.cli.main import main
from tests.conftest import ADMIN_TOKEN
from tests.ocs.test_api import Api, api

__all__ = ["api"]

ROOT = Path(__file__).resolve().parents[2]
TARIFFS = str(ROOT / "config" / "tariffs.toml")


# The server runs in this process and logs to the same streams: structlog's console renderer
# ("2026-01-01 10:00:00 [info ...") or JSON lines ('{"event": ...'); neither is CLI output.
SERVER_LOG_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[|\{".*"event": )')


def without_server_log(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not SERVER_LOG_LINE.match(line))


async def ocs(capsys: pytest.CaptureFixture[str], *arguments: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``ocs ARGUMENTS``."""
    capsys.readouterr()
    status = await asyncio.to_thread(main, list(arguments))
    captured = capsys.readouterr()
    return status, without_server_log(captured.out), without_server_log(captured.err)


async def test_subscriber_lifecycle(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    url = api.url
    status, out, err = await ocs(
        capsys,
        *("--url", url, "subscriber", "add", "olga", "--name", "Olga", "--msisdn", "+4915100000077"),
        *("--imsi", "262019999999999", "--balance", "7.50", "--allowance", "seconds:600:voice"),
    )
    assert (status, err) == (0, "")
    assert "ids       msisdn 4915100000077, imsi 262019999999999" in out
    assert "available 7.50 EUR" in out and "bucket    #2 seconds 600 [voice]" in out
    status, out, _ = await ocs(capsys, "subscriber", "show", "olga", "--url", url)  # --url after the command
    assert status == 0 and "profile   plan mobile_prepaid, mobile, name 'Olga'" in out
    status, out, _ = await ocs(capsys, "--url", url, "topup", "olga", "2.50", "--id", "card-1")
    assert status == 0 and out == "olga: top-up card-1 applied 2.50; available 10.00 EUR\n"
    status, out, _ = await ocs(capsys, "--url", url, "topup", "olga", "2.50", "--id", "card-1")
    assert status == 0 and "already applied, nothing changed; available 10.00 EUR" in out
    status, out, err = await ocs(capsys, "--url", url, "topup", "olga", "25.00", "--id", "card-1")
    assert status == 1 and out == "" and "already applied with 2.50, not 25.00" in err and "HTTP 409" in err
    status, out, _ = await ocs(capsys, "--url", url, "adjust", "olga", "-1.25", "--id", "fix-1", "--reason", "x")
    assert status == 0 and "available 8.75 EUR" in out
    status, out, _ = await ocs(capsys, "--url", url, "balance", "olga")
    assert status == 0 and out.startswith("account   olga (prepaid, active, EUR)\navailable 8.75 EUR\n")
    for action, expected in (
        ("suspend", "active -> suspended"),
        ("reactivate", "suspended -> active"),
        ("bar", "active -> barred"),
        ("terminate", "barred -> terminated"),
    ):
        status, out, _ = await ocs(capsys, "--url", url, "subscriber", action, "olga")
        assert (status, out) == (0, f"olga: {expected}\n")
    status, out, err = await ocs(capsys, "--url", url, "subscriber", "reactivate", "olga")
    assert status == 1 and out == "" and err.count("\n") == 1 and "terminated" in err and "HTTP 422" in err


async def test_a_status_change_takes_a_reason_into_the_audit_trail(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    await ocs(capsys, "--url", api.url, "subscriber", "add", "rhea")
    status, out, _ = await ocs(capsys, "--url", api.url, "subscriber", "suspend", "rhea", "--reason", "lost phone")
    assert (status, out) == (0, "rhea: active -> suspended\n")
    code, trail = await api.call("GET", "/audit-trail", query={"account": "rhea"})
    assert code == 200 and [record["detail"] for record in trail["records"]][-1] == "reason: lost phone"


async def test_json_output_is_the_answer(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    await ocs(capsys, "--url", api.url, "subscriber", "add", "pia", "--balance", "1")
    status, out, _ = await ocs(capsys, "--url", api.url, "--json", "balance", "pia")
    assert status == 0 and json.loads(out)["available_micros"] == 1_000_000


async def test_default_url_comes_from_the_configuration(
    api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "ocs.toml"
    config.write_text(f'[http]\nhost = "0.0.0.0"\nport = {api.http.port}\n')
    await ocs(capsys, "--url", api.url, "subscriber", "add", "quinn")
    status, out, _ = await ocs(capsys, "--config", str(config), "balance", "quinn")
    assert status == 0 and "account   quinn" in out


async def test_refusals_and_an_unreachable_server_exit_1(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = await ocs(capsys, "--url", api.url, "subscriber", "show", "nobody")
    assert (status, out) == (1, "") and err == "ocs: no account 'nobody' (HTTP 404)\n"
    await ocs(capsys, "--url", api.url, "subscriber", "add", "rob", "--msisdn", "4915100000088")
    status, _, err = await ocs(capsys, "--url", api.url, "subscriber", "add", "sam", "--msisdn", "4915100000088")
    assert status == 1 and "belongs to account 'rob'" in err and "HTTP 409" in err
    status, _, err = await ocs(capsys, "--url", api.url, "subscriber", "add", "sam", "--plan", "gold")
    assert status == 1 and "HTTP 422" in err
    dead = f"http://127.0.0.1:{pick_free_port()}"  # nothing listens there
    status, out, err = await ocs(capsys, "--url", dead, "balance", "rob")
    assert (
        (status, out) == (1, "") and err.startswith(f"ocs: cannot reach the server at {dead}") and err.count("\n") == 1
    )


@pytest.mark.parametrize(
    "arguments",
    [
        ("topup", "rob", "1.2345678", "--id", "t"),  # more than 6 decimals
        ("topup", "rob", "1.00"),  # no --id
        ("topup", "rob", "ten", "--id", "t"),
        ("subscriber", "add", "x", "--allowance", "minutes:10"),
        ("subscriber", "add", "x", "--type", "satellite"),
        ("subscriber", "frobnicate", "x"),
        ("rate", "--context", "32260@3gpp.org"),  # no --units
        ("rate", "--context", "32260@3gpp.org", "--units", "1", "--at", "yesterday"),
        ("cdr", "export", "--since", "2026-01-01"),  # no --until
        (),
    ],
)
async def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], arguments: tuple[str, ...]) -> None:
    status, out, err = await ocs(capsys, "--url", "http://127.0.0.1:9", *arguments)
    assert status == 2 and out == "" and "usage: ocs" in err


async def test_bad_configuration_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "ocs.toml"
    config.write_text("[http]\nport = 99999\n")
    status, _, err = await ocs(capsys, "--config", str(config), "balance", "x")
    assert status == 2 and err == f"ocs: configuration: {config}: http.port is out of range\n"


async def test_load_prints_a_summary_and_each_bad_row(
    api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    file = tmp_path / "subscribers.csv"
    file.write_text("account_id,balance,msisdn\ntina,5.00,4915100000101\nuwe,5.000.00,4915100000102\n")
    status, out, err = await ocs(capsys, "--url", api.url, "subscriber", "load", str(file))
    assert status == 1 and out == "2 rows: 1 created, 1 failed\n"
    assert err.startswith("ocs: line 3 (uwe): ") and err.count("\n") == 1
    file.write_text("account_id,balance\nvic,5.00\n")
    assert (await ocs(capsys, "--url", api.url, "subscriber", "load", str(file)))[:2] == (
        0,
        "1 rows: 1 created, 0 failed\n",
    )
    status, _, err = await ocs(capsys, "--url", api.url, "subscriber", "load", str(tmp_path / "missing.csv"))
    assert status == 1 and "missing.csv" in err


async def test_rate_works_offline(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = await ocs(
        capsys,
        *("rate", "--tariffs", TARIFFS, "--plan", "mobile_prepaid", "--context", "32260@3gpp.org"),
        *("--called", "+4917612345678", "--at", "2026-11-23T09:00:00Z", "--units", "90"),
    )
    assert (status, err) == (0, "")
    # National mobile at peak: 0.09 per minute, 60/1: 90 s cost 0.135.
    assert out.endswith("90 s charged as 90 s: 0.135 EUR (135000 micros)\n") and "band peak" in out
    status, out, err = await ocs(
        capsys, "rate", "--tariffs", TARIFFS, "--context", "32251@3gpp.org", "--rating-group", "99", "--units", "1"
    )
    assert (status, out) == (1, "") and err.startswith("ocs: cannot rate: Rating-Group 99")
    status, _, err = await ocs(capsys, "rate", "--tariffs", "/nonexistent.toml", "--context", "x", "--units", "1")
    assert status == 2 and err.startswith("ocs: tariffs:")


async def test_cdr_export_from_the_spool(api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    await ocs(capsys, "--url", api.url, "subscriber", "add", "wes", "--balance", "5")
    await ocs(capsys, "--url", api.url, "subscriber", "add", "xia", "--balance", "5")
    store = api.server.state.store
    assert store is not None
    # The server's own spool writer drains the outboxes every 50 ms; this test's spool must be the
    # only one, or the records race to whichever drains first.
    background = api.server.state.background
    (writer,) = [task for task in background if getattr(task.get_coro(), "__name__", "") == "_write_spool"]
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    at = int(datetime(2026, 3, 3, 10, tzinfo=UTC).timestamp())
    sms = Tariff(price_micros=90_000)
    for number, account in enumerate(("wes", "xia", "wes")):
        item = ChargeItem(0, "sms", Unit.EVENTS, sms, used_units=1)
        request = ChargeRequest(account, f"sms-{number}", 0, (item,), now_seconds=at + number, event=True)
        assert (await store.charge(request)).outcome is Outcome.OK
    assert api.server.state.database is not None
    spool = Spool(api.server.state.database)  # the server's business database, as its writer does
    assert await spool.drain_once(store) == 3
    await spool.close()
    data = str(Path(api.server.state.settings.spool.path).parent)  # the server's data directory
    output = tmp_path / "wes.csv"
    status, out, err = await ocs(
        capsys,
        *("cdr", "export", "--data", data, "--since", "2026-03-03T00:00:00Z"),
        *("--until", "2026-03-04", "--account", "wes", "--output", str(output)),
    )
    assert (status, out) == (0, "") and err == f"ocs: 2 record(s) exported to {output}\n"
    lines = output.read_text().splitlines()
    assert lines[0].startswith("record_id,account_id,") and len(lines) == 3
    status, out, _ = await ocs(
        capsys,
        *("cdr", "export", "--data", data, "--format", "jsonl"),
        *("--since", str(at + 1), "--until", str(at + 3)),
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and [(record["account_id"], record["amount"]) for record in records] == [
        ("xia", "0.090000"),
        ("wes", "0.090000"),
    ]
    status, _, err = await ocs(
        capsys, "cdr", "export", "--data", str(tmp_path / "none"), "--since", "0", "--until", "1"
    )
    assert status == 1 and err.startswith("ocs: cdr export: no business database at")
    (tmp_path / "spool.sqlite3").write_bytes(b"")  # an older server's spool file, not yet copied in
    status, _, err = await ocs(capsys, "cdr", "export", "--data", str(tmp_path), "--since", "0", "--until", "1")
    assert status == 1 and "is not yet copied into the business database: start the server once" in err


async def test_an_ocs_variable_that_is_no_setting_is_named_in_a_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCS_SHUTDOWN_TIMEOUT", "3")  # the setting is OCS_SHUTDOWN_TIMEOUT_SECONDS
    status, out, err = await ocs(capsys, "rate", "--tariffs", TARIFFS, "--context", "32260@3gpp.org", "--units", "60")
    assert status == 0 and out
    assert err == "ocs: warning: OCS_SHUTDOWN_TIMEOUT names no setting; ignored\n"


async def test_the_pure_python_switch_is_no_setting_and_no_warning(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCS_PURE_PYTHON", "1")  # protocol/build.py: read at import, not a setting
    status, out, err = await ocs(capsys, "rate", "--tariffs", TARIFFS, "--context", "32260@3gpp.org", "--units", "60")
    assert status == 0 and out and err == ""


# -- the command as a user starts it: its own process, one line on stderr, never a traceback ------


def run_ocs(*arguments: str, cwd: Path = ROOT, **environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocs", *arguments],
        cwd=cwd,
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=120,
    )


def serve_environment(redis_url: str, directory: Path) -> dict[str, str]:
    return {
        "OCS_REDIS_URL": redis_url,
        "OCS_SERVER_WORKERS": "1",  # one process (tests/ocs/test_workers.py runs several)
        "OCS_DIAMETER_PORT": "0",
        "OCS_HTTP_PORT": "0",
        "OCS_SPOOL_PATH": str(directory / "spool.sqlite3"),
    }


def test_serve_on_a_port_in_use_says_so_in_one_line(embedded_redis: EmbeddedRedis, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        environment = serve_environment(embedded_redis.url, tmp_path) | {
            "OCS_DIAMETER_PORT": str(taken.getsockname()[1])
        }
        finished = run_ocs("serve", cwd=tmp_path, **environment)
    assert finished.returncode == 1 and "Traceback" not in finished.stderr, finished.stderr
    last = finished.stderr.splitlines()[-1]
    assert last.startswith("ocs serve: cannot start:") and "address already in use" in last


def test_serve_without_its_tariff_file_says_so_in_one_line(embedded_redis: EmbeddedRedis, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tariffs.toml"
    finished = run_ocs(
        "serve", cwd=tmp_path, **serve_environment(embedded_redis.url, tmp_path), OCS_TARIFFS_PATH=str(missing)
    )
    assert finished.returncode == 1 and "Traceback" not in finished.stderr, finished.stderr
    assert str(missing) in finished.stderr.splitlines()[-1]


def test_outside_the_repository_the_shipped_tariffs_are_found(tmp_path: Path) -> None:
    finished = run_ocs("rate", "--context", "32260@3gpp.org", "--units", "60", cwd=tmp_path)
    assert finished.returncode == 0 and "Traceback" not in finished.stderr, finished.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """``ocs rate ... | head -0``: the pipe is closed before anything is written."""
    command = [
        sys.executable,
        "-m",
        "ocs",
        "rate",
        "--tariffs",
        TARIFFS,
        "--context",
        "32260@3gpp.org",
        "--units",
        "60",
    ]
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()
        errors = process.stderr.read()
        status = process.wait(timeout=120)
    assert (status, errors) == (141, "")


async def test_tokens_are_made_listed_and_revoked_offline(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OCS_SPOOL_PATH", str(tmp_path / "data" / "spool.sqlite3"))  # the database beside it
    status, out, err = await ocs(capsys, "token", "create", "--role", "care", "--name", "ana", "--adjust-limit", "20")
    assert status == 0 and out.startswith("ocs_") and "token 1 (ana, care) made; it is shown once" in err
    assert (tmp_path / "data" / "ocs.sqlite3").is_file()
    status, _, err = await ocs(capsys, "token", "create", "--role", "self-care", "--name", "bo")
    assert status == 1 and "a self-care token names the account it may see (--account)" in err
    status, out, _ = await ocs(capsys, "token", "list")
    assert status == 0 and out.split() == ["1", "care", "valid", "ana", "adjust_limit=20.00"]
    assert (await ocs(capsys, "token", "revoke", "1"))[:2] == (0, "ocs: token 1 (ana) revoked\n")
    status, out, _ = await ocs(capsys, "token", "list", "--json")
    assert status == 0 and json.loads(out)[0]["state"] == "revoked"
    status, _, err = await ocs(capsys, "token", "revoke", "7")
    assert status == 1 and err == "ocs token revoke: no token 7\n"


async def test_without_a_token_the_cli_says_where_to_give_one(
    api: Api, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OCS_TOKEN")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no ~/.config/ocs/token either
    status, _, err = await ocs(capsys, "--url", api.url, "balance", "alice")
    assert status == 1 and "this call needs a token" in err and "give a token: --token, --token-file" in err
    token_file = tmp_path / "ocs" / "token"
    token_file.parent.mkdir()
    token_file.write_text(ADMIN_TOKEN + "\n")
    token_file.chmod(0o600)
    status, _, err = await ocs(capsys, "--url", api.url, "balance", "alice")  # the default file
    assert status == 1 and "no account 'alice'" in err
    status, _, err = await ocs(capsys, "--url", api.url, "--token", "ocs_wrong", "balance", "alice")
    assert status == 1 and "the token is not known (HTTP 401)" in err
