"""The loyalty scenario's own ledger (simulator/loyalty.py) and its table in the scenario file: the
bonus a member should get from priced usage (a spend counter's firings whatever the split into
records, a threshold once a period, a percent per record, discounts counted), a wrong bonus or a
discount too many reported, rules it cannot check refused, and [loyalty] without the server's
programmes refused with the field named (the full run is in test_scenarios.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from simulator.http_api import OcsApi
from simulator.ledger import PricedCommit
from simulator.loyalty import (
    Applied,
    LoyaltyLedger,
    LoyaltyScenarioError,
    LoyaltySettings,
    MemberFacts,
    expected,
    read_rules,
)
from simulator.population import CustomerType, SimulatedSubscriber
from simulator.records import Commit
from simulator.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "config" / "scenarios" / "loyalty.toml"
AT = 1_796_000_000  # 2026-11-29, mid-month


def priced(line: str, micros: int, service: str = "voice", at: int = AT) -> PricedCommit:
    return PricedCommit(Commit(line, "mobile_prepaid", "c", None, None, at, 1), micros, service)


def test_the_scenario_programmes_give_what_the_rules_say_whatever_the_split() -> None:
    rules = read_rules(ROOT / "config" / "scenarios" / "programmes" / "loyalty.toml")
    members = {
        "i1": MemberFacts("ideal", "individual", "ideal", "prepaid"),
        "b1": MemberFacts("bad", "individual", "bad", "prepaid"),
        "c1": MemberFacts("company", "organization", "average", "postpaid"),
        "c2": MemberFacts("company", "organization", "average", "postpaid"),
    }
    split = [priced("i1", 150_000), priced("i1", 150_000), priced("i1", 150_000)]  # 0.45: two 0.20s
    whole = [priced("i1", 450_000)]
    for usage in (split, whole):
        made = expected(rules, usage, members)
        assert made.bonus["ideal"] == 2 * 20_000
        assert made.discounts[("ideal", "voice_spend_data_discount")] == 1  # 0.30 of calls: once
    made = expected(rules, [priced("b1", 99_999), priced("b1", 50_000, "data")], members)
    assert made.bonus["bad"] == 99_999 * 2 // 100 + 1_000  # 2 % of each record
    made = expected(rules, [priced("c1", 60_000, "data"), priced("c2", 60_000, "data")], members)
    assert made.discounts[("company", "company_spend_rental_discount")] == 1  # the lines together
    assert made.bonus["company"] == 0


def _ledger() -> LoyaltyLedger:
    line = SimulatedSubscriber("i1", CustomerType.MOBILE_PREPAID, "mobile_prepaid", True, "4915100000001")
    rules = read_rules(ROOT / "config" / "scenarios" / "programmes" / "loyalty.toml")
    ledger = LoyaltyLedger(LoyaltySettings(enabled=True), OcsApi("http://unused"), [line], rules, random.Random(1))
    ledger.segments = {line.owner_id: "ideal"}
    return ledger


def test_a_wrong_bonus_or_a_discount_too_many_is_a_problem() -> None:
    ledger = _ledger()
    owner = "i1-customer"
    wanted = expected(ledger.rules, [priced("i1", 200_000)], ledger._members())
    right = Applied("ideal_every_20_cents", "ideal_cashback", owner, "i1", "bonus_money", 20_000, "credited", 0, 5)
    assert ledger._differences(wanted, [right]) == []
    wrong = Applied("ideal_every_20_cents", "ideal_cashback", owner, "i1", "bonus_money", 40_000, "credited", 0, 5)
    discount = Applied(
        "voice_spend_data_discount", "voice_to_data", owner, "i1", "invoice_discount", 0, "recorded", 0, None
    )
    problems = ledger._differences(wanted, [wrong, discount])
    assert problems == [
        f"member {owner}: bonus 0.040000 applied, the simulator expected 0.020000",
        f"member {owner}: 1 discount(s) of rule voice_spend_data_discount, the simulator expected 0",
    ]
    elsewhere = Applied("ideal_every_20_cents", "ideal_cashback", owner, "x9", "bonus_money", 20_000, "credited", 0, 5)
    assert (
        ledger._differences(wanted, [elsewhere])[-1]
        == f"rule ideal_every_20_cents credited line x9, not a line of {owner}"
    )


def test_rules_the_ledger_cannot_check_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[programmes]]\nid = "p"\nname = "n"\nvalid_from = 2026-01-01\nbudget = "1.00"\nrules = []\n', encoding="utf-8"
    )
    with pytest.raises(LoyaltyScenarioError, match="programme p: budget"):
        read_rules(path)


def test_loyalty_without_the_servers_programmes_is_refused(tmp_path: Path) -> None:
    text = SCENARIO.read_text(encoding="utf-8").replace("enabled = true\n", "", 1)
    variant = tmp_path / "loyalty.toml"
    variant.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"\[server.loyalty\] enabled = true and rules"):
        load_scenario(variant)
    variant.write_text(SCENARIO.read_text(encoding="utf-8").replace("ideal = 0.3", "ideal = -1"), encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"\[loyalty.segments\]"):
        load_scenario(variant)
