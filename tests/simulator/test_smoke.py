"""A shortened smoke scenario against the real server: traffic in, balances and audit checked."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from simulator.records import SessionOutcome
from simulator.report import render_text, summarize
from simulator.runner import run_scenario
from simulator.scenario import SERVICES, load_scenario
from tests.conftest import ADMIN_TOKEN
from tests.ocs.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "scenarios" / "smoke.toml"
EXPECTED_RESULT_CODES = {2001, 4012}  # success, and credit limit reached for the low balances


async def test_smoke_scenario_balances_agree_and_the_audit_passes(server: RunningServer) -> None:
    full = load_scenario(SMOKE)
    scenario = dataclasses.replace(
        full,
        duration_seconds=3.0,
        arrival_rate_per_second=15.0,
        connections=2,
        timing=dataclasses.replace(full.timing, step_seconds=0.005),
        # A third of the prepaid lines on a low balance, so partial grants and 4012 happen.
        population=dataclasses.replace(full.population, size=24, low_balance_share=0.35),
    )
    assert server.state.http is not None
    result = await run_scenario(
        scenario,
        diameter_host="127.0.0.1",
        diameter_port=server.port,
        api_url=server.state.http.url,
        api_token=ADMIN_TOKEN,
        seed=7,
        run_number=1,
    )
    summary = summarize(result)
    report = render_text(summary)
    assert result.audit.ok, report
    assert summary["problems"] == [], report
    assert result.session_errors == [] and result.recorder.uncertain_sessions == [], report
    recorder = result.recorder
    assert recorder.result_codes() <= EXPECTED_RESULT_CODES, report
    # Every session ended: completed, cut by the OCS (final units / 4012), or refused at once.
    outcomes = {outcome for _, outcome in recorder.sessions}
    assert SessionOutcome.FAILED not in outcomes, report
    assert sum(recorder.sessions.values()) >= 30, report
    assert {service for service, _ in recorder.sessions} >= {*SERVICES, "fixed_voice"}, report
    assert recorder.retransmissions == 0
    # The OCS grants with a quota threshold: elements re-authorise before a grant runs out.
    assert recorder.reporting_reasons["THRESHOLD"] > 0 and recorder.reporting_reasons["FINAL"] > 0
    # The money the simulator believes it spent is what each account committed and what its
    # balance shows (checked per account and per customer type by summarize, asserted above).
    for subscriber in result.population.subscribers:
        opening, closing = result.opening[subscriber.account_id], result.closing[subscriber.account_id]
        committed = closing.committed_micros - opening.committed_micros
        assert result.believed_micros[subscriber.account_id] == committed, subscriber.account_id
        assert closing.held_micros == 0 and closing.reservations == 0
    prepaid = [s for s in result.population.subscribers if s.prepaid and not s.parent_id and s.msisdn]
    assert (
        sum(
            result.opening[s.account_id].available_micros - result.closing[s.account_id].available_micros
            for s in prepaid
        )
        == sum(result.believed_micros[s.account_id] for s in prepaid)
        > 0
    )
    postpaid = [s for s in result.population.subscribers if not s.prepaid]
    assert (
        sum(result.closing[s.account_id].unbilled_micros for s in postpaid)
        == sum(result.believed_micros[s.account_id] for s in postpaid)
        > 0
    )
    company_pool = next(s for s in result.population.subscribers if s.msisdn is None)
    children = [s for s in result.population.subscribers if s.parent_id]
    pool_drop = (
        result.opening[company_pool.account_id].available_micros
        - result.closing[company_pool.account_id].available_micros
    )
    assert pool_drop == sum(result.believed_micros[s.account_id] for s in children)
    # A difference of one micro is caught: the check is live.
    some_account = prepaid[0].account_id
    skewed = dict(result.believed_micros, **{some_account: result.believed_micros[some_account] + 1})
    assert summarize(dataclasses.replace(result, believed_micros=skewed))["problems"] != []
