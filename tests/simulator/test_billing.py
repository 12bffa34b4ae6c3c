"""The billing calendar's own rules, without a server: the calendar's length, behaviours in their
shares, the scenario's [billing] table refused with the field named, the audit of charging while
barred, a dispute asking at most what is left open, payment_to_grant timed from the payment to
the normal grant after the RAR, and the verdict failing on ledger problems and on a slow lift
(the full run is in test_scenarios.py)."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date
from pathlib import Path

import pytest

from simulator.billing import (
    Bill,
    BillingCycle,
    BillingSettings,
    Enforcement,
    PaymentCall,
    add_months,
    behaviour_draw,
)
from simulator.http_api import OcsApi
from simulator.records import Recorder
from simulator.scenario import ScenarioError, load_scenario

SCENARIOS = Path(__file__).resolve().parents[2] / "config" / "scenarios"
BILLING = (SCENARIOS / "billing-cycle.toml").read_text(encoding="utf-8")


def test_months_are_calendar_months() -> None:
    assert add_months(date(2027, 1, 31), 1) == date(2027, 2, 28)
    assert add_months(date(2027, 11, 15), 3) == date(2028, 2, 15)
    settings = BillingSettings(enabled=True, start_date=date(2027, 1, 1), months=3, day_seconds=0.5)
    assert settings.days(date(2026, 12, 7)) == 31 + 28 + 31
    assert settings.longest_wall_seconds == 90 * 0.5
    tomorrow = BillingSettings(enabled=True, months=2, day_seconds=1.0)
    assert tomorrow.first_day(date(2026, 12, 7)) == date(2026, 12, 8)
    assert tomorrow.longest_wall_seconds == 62.0


def test_behaviours_come_in_their_shares_whatever_the_seed() -> None:
    weights = {"on_time": 0.45, "late": 0.3, "partial": 0.1, "never": 0.15}
    for seed in range(20):
        drawn = behaviour_draw(weights, 25, random.Random(seed))
        assert Counter(drawn) == {"on_time": 11, "late": 8, "partial": 2, "never": 4}
    assert behaviour_draw(weights, 25, random.Random(1)) == behaviour_draw(weights, 25, random.Random(1))


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    assert old in BILLING
    path = tmp_path / "billing.toml"
    path.write_text(BILLING.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("months = 3", "monts = 3", "[billing]: unknown field(s) ['monts']"),
        ("months = 3", "months = 0", "[billing] months: 1 to 24"),
        ('start_date = "tomorrow"', 'start_date = "soon"', "[billing] start_date: a TOML date"),
        ("day_seconds = 0.6", "day_seconds = 0", "[billing] day_seconds > 0"),
        ("late = 0.3", "lately = 0.3", "[billing.behaviours]: unknown field(s) ['lately']"),
        ("dispute_share = 0.15", "dispute_share = 1.5", "[billing] dispute_share: a share between 0 and 1"),
        ("day_seconds = 0.6", "day_seconds = 5.0", "[run] duration_seconds: the traffic must last the [billing]"),
        ("bill_cycle_days = [1,", "bill_cycle_days = [31,", "[population] bill_cycle_days: a list of days"),
        ("company_postpaid = true", 'company_postpaid = "yes"', "[population] company_postpaid: true or false"),
    ],
)
def test_a_bad_billing_table_is_refused_with_the_field_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ScenarioError) as refused:
        load_scenario(_variant(tmp_path, old, new))
    assert message in str(refused.value)


def _cycle(recorder: Recorder) -> BillingCycle:
    settings = BillingSettings(enabled=True, months=1, day_seconds=0.1)
    return BillingCycle(settings, OcsApi("http://127.0.0.1:9"), recorder, (), set, set(), random.Random(1))


def test_a_success_while_barred_is_a_problem_and_after_the_lift_it_is_not() -> None:
    recorder = Recorder()
    for sent, kind, code in [(9.0, "CCR-U", 2001), (10.5, "CCR-U", 2001), (10.6, "CCR-I", 4010), (10.7, "CCR-T", 2001)]:
        recorder.line_request("line-1", sent, kind, code)
    recorder.line_request("line-1", 12.5, "CCR-I", 2001)  # after the payment lifted the bar
    cycle = _cycle(recorder)
    cycle.enforcements[7] = Enforcement(7, "bar", "B-1", ("line-1",), since=10.0, requested_at=9.5, until=12.0)
    cycle.audit_charging()
    assert len(cycle.problems) == 1 and "CCR-U sent 0.500 s into its bar (dunning step 7)" in cycle.problems[0]


def test_payment_to_grant_runs_from_the_payment_to_the_normal_grant_after_the_rar() -> None:
    recorder = Recorder()
    recorder.grant_seen("line-1", 19.0, 1)  # redirected while restricted
    recorder.server_request_seen("line-1", 20.3)  # the lift's RAR
    recorder.grant_seen("line-1", 20.35, 1)  # an answer to a request sent before the lift
    recorder.grant_seen("line-1", 20.4, None)  # the normal grant
    cycle = _cycle(recorder)
    cycle.lifted_calls.append(PaymentCall("B-1", 20.0, ("line-1",)))
    cycle.lifted_calls.append(PaymentCall("B-2", 20.0, ("line-2",)))  # its line saw no RAR: not timed
    times = cycle.payment_to_grant_ms()
    assert times == [pytest.approx(400.0)]
    assert recorder.final_unit_actions == {"REDIRECT": 2}


def test_the_verdict_fails_on_ledger_problems_a_slow_lift_and_no_invoice() -> None:
    recorder = Recorder()
    cycle = _cycle(recorder)
    assert "the calendar made no invoice" in cycle.verdict_problems()
    cycle.listed_invoices = 3
    assert cycle.verdict_problems() == []
    cycle.ledger_problems = ["invoice main-1: usage lines 5 micros, records 4"]
    assert cycle.verdict_problems() == ["invoice main-1: usage lines 5 micros, records 4"]
    assert cycle.summary()["ledger_ok"] is False
    cycle.ledger_problems = []
    recorder.server_request_seen("line-1", 20.1)
    recorder.grant_seen("line-1", 22.5, None)
    cycle.lifted_calls.append(PaymentCall("B-1", 20.0, ("line-1",)))
    assert cycle.summary()["payment_to_grant_p99_ms"] == pytest.approx(2500.0)
    assert any("over the 2000 ms target" in problem for problem in cycle.verdict_problems())


class _BillsApi(OcsApi):
    """The API as the calendar's disputes see it: one bill with what is left on it, and the
    disputes asked for (a stand-in for the HTTP client only: no money is kept here)."""

    def __init__(self, remaining_micros: int, disputed_micros: int) -> None:
        super().__init__("http://127.0.0.1:9")
        self.listed = {
            "remaining_amount": {"unit": "EUR", "value_micros": remaining_micros},
            "disputed_amount": {"unit": "EUR", "value_micros": disputed_micros},
        }
        self.disputed: list[int] = []

    async def bill(self, bill_id: str) -> dict[str, object]:
        return dict(self.listed)

    async def open_dispute(self, bill_id: str, dispute_id: str, amount_micros: int, reason: str) -> dict[str, object]:
        self.disputed.append(amount_micros)
        return {"dispute_id": dispute_id}


@pytest.mark.parametrize(
    ("remaining", "disputed", "expected"),
    [
        (50_000_000, 0, [10_000_000]),  # open in full: dispute_percent (20) of the bill
        (0, 0, []),  # a payment settled it before the dispute day: nothing left to dispute
        (4_000_000, 1_000_000, [3_000_000]),  # partly paid, partly disputed: at most what is left
    ],
)
async def test_a_dispute_asks_at_most_what_is_left_open_on_the_bill(
    remaining: int, disputed: int, expected: list[int]
) -> None:
    """Before, a payment that came first (a task that found a line busy at once, or a late payer
    paying all it owed) left nothing to dispute, the OCS refused the dispute (422) and the run's
    verdict failed, now and then, with the timing."""
    api = _BillsApi(remaining, disputed)
    settings = BillingSettings(enabled=True, months=1, day_seconds=0.1, dispute_percent=20, dispute_resolved_share=0.0)
    cycle = BillingCycle(settings, api, Recorder(), (), set, set(), random.Random(1))
    await cycle._dispute(Bill("main-1", "B-1", 50_000_000, date(2027, 1, 20)), date(2027, 1, 6))
    assert api.disputed == expected
    assert cycle.disputes["opened"] == len(expected) and cycle.problems == []
