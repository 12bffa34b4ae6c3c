"""``ocs demo`` end to end, as a user runs it: a fresh data directory, the embedded Redis, the
server and the simulator in its own process, the report and the audit verdict, a clean stop."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "scenarios" / "smoke.toml"


def short_smoke(directory: Path) -> Path:
    """The smoke scenario for two seconds on a small population."""
    text = SMOKE.read_text(encoding="utf-8")
    for old, new in (("duration_seconds = 20.0", "duration_seconds = 2.0"), ("size = 60", "size = 16")):
        assert old in text
        text = text.replace(old, new)
    path = directory / "short-smoke.toml"
    path.write_text(text, encoding="utf-8")
    return path


def demo(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ocs", "demo", *arguments], cwd=ROOT, capture_output=True, text=True, timeout=240
    )


def test_demo_runs_server_and_simulator_and_prints_the_audit_verdict(tmp_path: Path) -> None:
    data = tmp_path / "data"
    finished = demo("--scenario", str(short_smoke(tmp_path)), "--data", str(data))
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "audit: PASS" in finished.stdout and "verdict: OK" in finished.stdout
    assert "ocs demo: server up" in finished.stderr and "ocs demo: stopping the server" in finished.stderr
    report = json.loads((data / "report.json").read_text())
    assert report["ok"] is True and report["audit"]["ok"] is True
    assert sum(row["count"] for row in report["requests"]) > 0
    assert (data / "ocs.sqlite3").is_file() and (data / "redis").is_dir()  # the spool's table is in it
    log_lines = [json.loads(line) for line in (data / "server.log").read_text().splitlines()]
    assert {"listening", "stopped"} <= {line.get("event") for line in log_lines}


def test_demo_with_a_missing_scenario_says_so(tmp_path: Path) -> None:
    finished = demo("--scenario", str(tmp_path / "nope.toml"))
    assert finished.returncode == 2
    assert "nope.toml" in finished.stderr


def test_demo_that_cannot_start_the_server_says_so_with_status_2(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    finished = demo("--scenario", str(short_smoke(tmp_path)), "--data", str(not_a_directory))
    assert finished.returncode == 2
    assert "the server could not start" in finished.stderr and "Traceback" not in finished.stderr


def test_demo_json_prints_the_report_alone_on_stdout(tmp_path: Path) -> None:
    finished = demo("--scenario", str(short_smoke(tmp_path)), "--json")
    assert finished.returncode == 0, finished.stderr
    report = json.loads(finished.stdout)  # nothing else on stdout
    assert report["ok"] is True and report["audit"]["ok"] is True
    assert "ocs demo: server up" in finished.stderr and "audit: PASS" in finished.stderr


def test_a_failed_demo_keeps_its_directory_and_names_it(tmp_path: Path) -> None:
    scenario = tmp_path / "unknown-field.toml"
    scenario.write_text("colour = 'blue'\n")  # the simulator refuses it: a failed run
    finished = demo("--scenario", str(scenario))
    assert finished.returncode == 2
    kept = re.search(r"ocs demo: kept (\S+)", finished.stderr)
    assert kept is not None, finished.stderr
    directory = Path(kept.group(1))
    try:
        assert (directory / "server.log").is_file()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
