"""Scenario files: every shipped one loads; a misspelt field or a value that would make a run
send nothing (or divide by zero) is refused with the table and field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.scenario import ScenarioError, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "config" / "scenarios"
SMOKE = (SCENARIOS / "smoke.toml").read_text(encoding="utf-8")


def variant(tmp_path: Path, old: str, new: str) -> Path:
    assert old in SMOKE
    path = tmp_path / "variant.toml"
    path.write_text(SMOKE.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda path: path.stem)
def test_every_shipped_scenario_loads(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.name == path.stem and scenario.duration_seconds > 0


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("step_seconds = 0.02", "step_secnds = 0.02", "[run]: unknown field(s) ['step_secnds']"),
        ("retransmissions = 2", "retransmissions = -1", "[run] retransmissions >= 0"),
        ("mean_seconds = 120.0", "mean_seconds = 0.0", "[voice] values > 0"),
        ("request_timeout_seconds = 5.0", "request_timeout_seconds = 0", "[run] request_timeout_seconds > 0"),
        ("mobile_prepaid = 0.4", "mobile_prepiad = 0.4", "[population.shares]: unknown field(s)"),
        ("[mix]", "[mix]\nvideo_call = 1.0", "unknown service(s) ['video_call']"),
        ("[voice]", "[voise]\nx = 1\n[voice]", "the file: unknown field(s) ['voise']"),
        ("[mix]", "[lifecycle]\ninterval_seconds = 0\n[mix]", "[lifecycle] interval_seconds: a number of seconds > 0"),
        ("[mix]", '[lifecycle]\ninterval_seconds = 1\nsteps = ["ban_line"]\n[mix]', "[lifecycle] steps: a list of"),
        ("[mix]", "[lifecycle]\ninterval = 1\n[mix]", "[lifecycle]: unknown field(s) ['interval']"),
    ],
)
def test_a_bad_scenario_is_refused_with_the_field_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ScenarioError) as refused:
        load_scenario(variant(tmp_path, old, new))
    assert message in str(refused.value)
