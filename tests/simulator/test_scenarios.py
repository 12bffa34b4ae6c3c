"""Every scenario in config/scenarios runs, shortened, against the real server, and its audit
passes: the faults change nothing in the books. Each test also checks that what the scenario is
about did happen (faults injected, top-ups and RARs, the closed loop), so a scenario that
silently stopped doing its job fails here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis
from ocs.config import Settings
from simulator.population import CustomerType
from simulator.records import Recorder, SessionOutcome
from simulator.report import render_text, summarize
from simulator.runner import RunResult, run_scenario
from simulator.scenario import Scenario, load_scenario
from tests.conftest import ADMIN_TOKEN
from tests.ocs.conftest import server_settings, server_with

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "config" / "scenarios"


def shortened(scenario: Scenario) -> Scenario:
    """A few seconds of the scenario on a small population, keeping what it is about."""
    faults = scenario.faults
    lifecycle = scenario.lifecycle
    duration_seconds = 3.0
    if lifecycle.interval_seconds:  # every step of the cycle within the shortened run, with a margin
        lifecycle = dataclasses.replace(lifecycle, interval_seconds=min(lifecycle.interval_seconds, 0.25))
        duration_seconds = max(duration_seconds, (len(lifecycle.steps) + 4) * lifecycle.interval_seconds)
    if faults.connection_drop_mean_seconds:
        faults = dataclasses.replace(faults, connection_drop_mean_seconds=0.6)
    duration_seconds, billing = 3.0, scenario.billing
    if billing.enabled:  # two months, quick days: bills, the quick ladder's restrict and bar, lifts
        billing = dataclasses.replace(billing, months=2, day_seconds=0.25)
        duration_seconds = billing.longest_wall_seconds
    return dataclasses.replace(
        scenario,
        duration_seconds=duration_seconds,
        arrival_rate_per_second=min(scenario.arrival_rate_per_second, 15.0),
        max_concurrent_sessions=min(scenario.max_concurrent_sessions, 24),
        connections=2,
        faults=faults,
        timing=dataclasses.replace(scenario.timing, step_seconds=min(scenario.timing.step_seconds, 0.01)),
        population=dataclasses.replace(scenario.population, size=min(scenario.population.size, 30), company_children=2),
        drain_timeout_seconds=30.0,
        lifecycle=lifecycle,
        billing=billing,
    )


async def run_shortened(embedded_redis: EmbeddedRedis, tmp_path: Path, name: str) -> tuple[RunResult, str]:
    scenario = shortened(load_scenario(SCENARIOS / f"{name}.toml"))
    quota = {key: value for key, value in scenario.server.get("quota", {}).items()}
    result = await run_on_server(embedded_redis, tmp_path, scenario, seed=11, run_number=2, **quota)  # type: ignore[arg-type]
    return result, render_text(summarize(result))


def _settings(redis_url: str, spool: Path, scenario: Scenario, **quota: int) -> Settings:
    """The test server's settings, with the scenario's [server.billing] and [server.loyalty] (as
    ``ocs demo`` applies them)."""
    settings = server_settings(redis_url, spool, **quota)
    billing = {key: str(value) for key, value in scenario.server.get("billing", {}).items()}
    loyalty = dict(scenario.server.get("loyalty", {}))
    return dataclasses.replace(
        settings,
        billing=dataclasses.replace(settings.billing, **billing),
        loyalty=dataclasses.replace(settings.loyalty, **loyalty),
    )


async def run_on_server(
    embedded_redis: EmbeddedRedis, tmp_path: Path, scenario: Scenario, *, seed: int, run_number: int, **quota: int
) -> RunResult:
    async with server_with(_settings(embedded_redis.url, tmp_path / "spool.sqlite3", scenario, **quota)) as server:
        assert server.state.http is not None
        return await run_scenario(
            scenario,
            diameter_host="127.0.0.1",
            diameter_port=server.port,
            api_url=server.state.http.url,
            api_token=ADMIN_TOKEN,
            seed=seed,
            run_number=run_number,
        )


def _check_busy_hour(recorder: Recorder, result: RunResult) -> None:
    assert result.scenario.timing.time_compression == 60.0 and len(result.scenario.profile) > 1
    assert sum(recorder.sessions.values()) >= 10


def _check_balance_exhaustion(recorder: Recorder, result: RunResult) -> None:
    assert recorder.topups_micros, "no line was topped up"
    assert recorder.server_requests["RAR"] >= 1, "no session was re-authorised"
    outcomes = {outcome for _, outcome in recorder.sessions}
    assert SessionOutcome.CUT in outcomes or SessionOutcome.REFUSED in outcomes, "no balance ran out"


def _check_retransmission_storm(recorder: Recorder, result: RunResult) -> None:
    assert recorder.replays["same"] >= 5 and recorder.replays["different"] == 0
    assert recorder.faults["duplicated requests"] >= 1 and recorder.faults["late updates"] >= 1
    # Repeats the duplicate cache cannot match (a new End-to-End id): the engine's replay answers.
    assert recorder.faults["retransmissions with a new End-to-End id"] >= 1
    late_codes = {code for (label, code), _ in recorder.requests.items() if label.endswith("late")}
    assert late_codes and 2001 not in late_codes


def _check_connection_loss(recorder: Recorder, result: RunResult) -> None:
    assert recorder.faults["connections dropped"] >= 1 and recorder.faults["reconnects"] >= 1
    assert recorder.faults["sessions abandoned"] >= 1
    assert sum(count for (_, outcome), count in recorder.sessions.items() if outcome is SessionOutcome.ABANDONED)


def _check_max_throughput(recorder: Recorder, result: RunResult) -> None:
    assert result.scenario.mode == "closed"
    assert not recorder.arrivals_dropped
    assert sum(recorder.requests.values()) >= 100


def _check_lifecycle(recorder: Recorder, result: RunResult) -> None:
    lifecycle = summarize(result)["lifecycle"]
    assert isinstance(lifecycle, dict)
    assert set(lifecycle["changes"]) == set(result.scenario.lifecycle.steps), lifecycle
    assert lifecycle["enforced"] >= 1, lifecycle
    assert 0 < lifecycle["enforcement_p50_ms"] <= lifecycle["enforcement_p99_ms"] <= 2000.0, lifecycle
    lines = lifecycle["lines"]
    assert lines["barred"] >= 1 and lines["terminated"] >= 1, lifecycle
    assert sum(lines.values()) == len(result.population.lines), lifecycle
    customers = lifecycle["customers"]  # customers by status: one terminated, the rest in the base
    assert customers["terminated"] >= 1, lifecycle
    assert sum(customers.values()) == len({line.owner_id for line in result.population.lines}), lifecycle
    assert recorder.server_requests["ASR"] >= 1 and recorder.server_requests["RAR"] >= 1
    assert lifecycle["problems"] == []


def untimed(problems: object) -> list[str]:
    """A verdict's problems less its latency targets (the billing calendar's payment-to-grant p99,
    loyalty's commit-to-credit p99): those are for the demo and the benchmarks to show on a full
    run, never a timed assertion of a shortened one on a shared test machine."""
    assert isinstance(problems, list), problems
    return [str(problem) for problem in problems if not str(problem).endswith("ms target")]


def _check_billing_cycle(recorder: Recorder, result: RunResult) -> None:
    billing = summarize(result)["billing"]
    assert isinstance(billing, dict)
    assert billing["invoices"] >= 10 and billing["billed_micros"] > 0 and billing["paid_micros"] > 0, billing
    assert billing["ledger_ok"] is True and untimed(billing["problems"]) == [], billing
    steps = billing["dunning_steps"]
    assert steps.get("letter", 0) >= 1 and steps.get("restrict", 0) >= 1 and steps.get("bar", 0) >= 1, billing
    assert billing["disputes"].get("opened", 0) >= 1, billing
    assert billing["lifted_by_payment"] >= 1 and billing["redirects"] >= 1, billing
    assert billing["payment_to_grant_timed"] >= 1, billing
    assert 0 < billing["payment_to_grant_p50_ms"] <= billing["payment_to_grant_p99_ms"], billing
    assert recorder.server_requests["RAR"] >= 1 and recorder.server_requests["ASR"] >= 1


def _check_loyalty(recorder: Recorder, result: RunResult) -> None:
    loyalty = summarize(result)["loyalty"]
    assert isinstance(loyalty, dict)
    assert loyalty["ledger_ok"] is True and untimed(loyalty["problems"]) == [], loyalty
    assert set(loyalty["members_by_segment"]) == {"ideal", "average", "bad"}, loyalty
    credits = loyalty["credits"]
    assert credits.get("ideal_cashback", 0) >= 1 and credits.get("company_rentals", 0) == 1, loyalty
    assert credits.get("voice_to_data", 0) >= 1, loyalty  # the cross-discount
    assert loyalty["bonus_issued_micros"] > 0 and loyalty["credits_timed"] >= 1, loyalty
    assert 0 <= loyalty["credit_latency_p50_ms"] <= loyalty["credit_latency_p99_ms"], loyalty


CHECKS: dict[str, Callable[[Recorder, RunResult], None]] = {
    "smoke": lambda recorder, result: None,
    "busy-hour": _check_busy_hour,
    "balance-exhaustion": _check_balance_exhaustion,
    "retransmission-storm": _check_retransmission_storm,
    "connection-loss": _check_connection_loss,
    "max-throughput": _check_max_throughput,
    "lifecycle": _check_lifecycle,
    "billing-cycle": _check_billing_cycle,
    "loyalty": _check_loyalty,
}


def test_every_scenario_file_has_a_test() -> None:
    assert {path.stem for path in SCENARIOS.glob("*.toml")} == set(CHECKS)


@pytest.mark.parametrize("name", sorted(CHECKS))
async def test_scenario_runs_and_its_audit_passes(embedded_redis: EmbeddedRedis, tmp_path: Path, name: str) -> None:
    result, report = await run_shortened(embedded_redis, tmp_path, name)
    summary = summarize(result)
    assert result.audit.ok, report
    assert untimed(summary["problems"]) == [], report
    assert result.session_errors == [], report
    assert SessionOutcome.FAILED not in {outcome for _, outcome in result.recorder.sessions}, report
    for subscriber in result.population.subscribers:
        closing = result.closing[subscriber.account_id]
        assert closing.held_micros == 0 and closing.reservations == 0, report
    CHECKS[name](result.recorder, result)


async def test_an_abandoned_line_waits_for_tcc_before_its_next_session(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """Half the data sessions of a few lines with allowances are abandoned: the OCS holds their
    allowance until Tcc, so a line reused at once would be charged money where the simulator's
    ledger expects allowance. The runner keeps such a line idle until Tcc has closed the session."""
    base = load_scenario(SCENARIOS / "connection-loss.toml")
    scenario = dataclasses.replace(
        base,
        duration_seconds=4.0,
        arrival_rate_per_second=10.0,
        connections=2,
        mix={"data": 1.0},
        data_mean_octets={10: 3_000_000, 20: 100_000},
        faults=dataclasses.replace(base.faults, abandon_share=0.5, connection_drop_mean_seconds=0.0),
        timing=dataclasses.replace(base.timing, step_seconds=0.01),
        population=dataclasses.replace(
            base.population,
            size=6,
            shares={CustomerType.MOBILE_PREPAID: 1.0},
            data_allowance_share=1.0,
            data_allowance_octets=8_000_000,
            company_children=1,
        ),
    )
    result = await run_on_server(embedded_redis, tmp_path, scenario, seed=5, run_number=3, validity_seconds=1)
    report = render_text(summarize(result))
    assert result.recorder.faults["sessions abandoned"] >= 2, report
    assert summarize(result)["problems"] == [], report
