"""Loyalty rules as data and their pure evaluation (ocs/loyalty/rules.py, rules_load.py): each
condition and action kind, counters across day and month boundaries, validity dates, budgets,
filters, and the loader's errors naming the field."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from balance.types import BucketKind
from ocs.loyalty.rules import (
    ActionKind,
    DiscountTarget,
    EventKind,
    LoyaltyEvent,
    LoyaltyRules,
    Member,
    counter_keys,
    evaluate,
    next_period_bounds,
    period_of,
)
from ocs.loyalty.rules_load import LoyaltyRulesError, load_loyalty_rules, parse_loyalty_rules

ROOT = Path(__file__).resolve().parents[2]
EUR = 1_000_000
PERSON = Member("C1", "individual", "ideal")
COMPANY = Member("ORG", "organization", None)


def at(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())


def programme(rule: str, *, budget: str | None = None, valid_until: str | None = None, event: str = "usage") -> str:
    """One programme of one rule, its body given as TOML lines."""
    lines = ["[[programmes]]", 'id = "p"', 'name = "P"', "valid_from = 2026-01-01"]
    if budget is not None:
        lines.append(f'budget = "{budget}"')
    if valid_until is not None:
        lines.append(f"valid_until = {valid_until}")
    lines += ["[[programmes.rules]]", 'id = "r"', f'event = "{event}"', rule]
    return "\n".join(lines)


def usage(
    trigger: str, when: str, *, service: str = "sms", micros: int = 90_000, units: int = 1, member: Member = PERSON
) -> tuple[LoyaltyEvent, Member]:
    event = LoyaltyEvent(
        EventKind.USAGE, trigger, member.customer_id, "L1", at(when), service, units, micros, "prepaid"
    )
    return event, member


def run(rules: LoyaltyRules, events: list[tuple[LoyaltyEvent, Member]]) -> list[str]:
    """The triggers that made an application, evaluating one event at a time on stored state (as
    batches of one would), checking ``counter_keys`` names every counter ``evaluate`` touched."""
    counters: dict[tuple[str, str, str], int] = {}
    spent: dict[str, int] = {}
    fired = []
    for item in events:
        outcome = evaluate(rules, [item], counters, spent)
        assert set(outcome.counters) <= counter_keys(rules, [item])
        counters.update(outcome.counters)
        spent.update(outcome.spent)
        fired += [application.trigger_id for application in outcome.applications]
    return fired


EVERY_10TH_SMS = programme(
    'filters = { services = ["sms"] }\n'
    'counter = { period = "month", measure = "events" }\n'
    "condition = { every = 10 }\n"
    'action = { kind = "unit_allowance", unit = "events", units = 1, services = ["sms"],'
    ' expiry_days = 30, cost = "0.09" }'
)


def test_every_tenth_sms_of_a_month_gives_a_free_sms_and_the_count_restarts_next_month() -> None:
    rules = parse_loyalty_rules(EVERY_10TH_SMS)
    december = [usage(f"d{index}", f"2026-12-31T23:00:{index:02d}") for index in range(1, 16)]
    january = [usage(f"j{index}", f"2027-01-01T00:00:{index:02d}") for index in range(1, 11)]
    voice = [usage("v1", "2026-12-31T23:30:00", service="voice")]  # not an SMS: not counted
    assert run(rules, december[:5] + voice + december[5:] + january) == ["d10", "j10"]
    outcome = evaluate(rules, december[:10], {}, {})
    [application] = outcome.applications
    assert application.action is ActionKind.UNIT_ALLOWANCE and application.unit_kind is BucketKind.EVENTS
    assert (application.units, application.services, application.cost_micros) == (1, ("sms",), 90_000)
    assert application.valid_until == at("2026-12-31T23:00:10") + 30 * 86_400
    assert outcome.counters == {("r", "C1", "2026-12"): 10}


def test_a_day_counter_restarts_at_midnight_utc() -> None:
    rules = parse_loyalty_rules(EVERY_10TH_SMS.replace('period = "month"', 'period = "day"'))
    evening = [usage(f"e{index}", f"2026-12-07T23:59:{index:02d}") for index in range(1, 10)]
    morning = [usage(f"m{index}", f"2026-12-08T00:00:{index:02d}") for index in range(1, 11)]
    assert run(rules, evening + morning) == ["m10"]
    assert period_of(rules.rules["r"].counter.period, at("2026-12-08T00:00:00")) == "2026-12-08"


def test_a_spend_counter_passing_several_multiples_fires_that_many_times() -> None:
    rules = parse_loyalty_rules(
        programme(
            'counter = { period = "month", measure = "spend" }\n'
            'condition = { every = "1.00" }\n'
            'action = { kind = "bonus_money", amount = "0.10" }'
        )
    )
    outcome = evaluate(
        rules, [usage("big", "2026-12-01T10:00:00", micros=3_500_000)], {("r", "C1", "2026-12"): 600_000}, {}
    )
    [application] = outcome.applications
    assert application.amount_micros == 4 * 100_000  # 0.60 -> 4.10 passes 1, 2, 3 and 4


def test_voice_spend_of_twenty_in_a_month_gives_ten_percent_off_data_next_month_once() -> None:
    rules = parse_loyalty_rules((ROOT / "config" / "loyalty.toml").read_text())
    calls = [
        usage(f"c{index}", f"2026-12-{index + 10:02d}T12:00:00", service="voice", micros=6 * EUR) for index in range(6)
    ]
    outcome = evaluate(rules, calls, {}, {})
    discounts = [item for item in outcome.applications if item.rule_id == "voice_spend_data_discount"]
    assert [item.trigger_id for item in discounts] == ["c3"]  # 24.00 >= 20.00 at the 4th call; once
    [discount] = discounts
    assert (discount.action, discount.target, discount.service) == (
        ActionKind.INVOICE_DISCOUNT,
        DiscountTarget.SERVICE,
        "data",
    )
    assert discount.percent_basis_points == 1_000
    assert (discount.applies_from, discount.applies_until) == (at("2027-01-01T00:00:00"), at("2027-02-01T00:00:00"))


def test_ideal_customers_get_five_percent_of_each_spend_back_and_others_nothing() -> None:
    rules = parse_loyalty_rules((ROOT / "config" / "loyalty.toml").read_text())
    average = Member("C2", "individual", "average")
    unscored = Member("C3", "individual", None)
    events = [
        usage("ideal", "2026-12-01T10:00:00", service="data", micros=1_234_567),
        usage("average", "2026-12-01T10:00:00", service="data", micros=1_234_567, member=average),
        usage("unscored", "2026-12-01T10:00:00", service="data", micros=1_234_567, member=unscored),
        usage("free", "2026-12-01T10:00:00", service="data", micros=0),
    ]
    bonus = [item for item in evaluate(rules, events, {}, {}).applications if item.rule_id == "ideal_five_percent"]
    assert [(item.trigger_id, item.amount_micros) for item in bonus] == [("ideal", 61_728)]  # rounded down
    assert bonus[0].valid_until == at("2026-12-01T10:00:00") + 90 * 86_400


def test_a_company_whose_lines_spend_over_the_threshold_gets_a_rental_discount() -> None:
    rules = parse_loyalty_rules((ROOT / "config" / "loyalty.toml").read_text())
    lines = [
        usage(f"l{index}", "2026-11-20T09:00:00", service="voice", micros=200 * EUR, member=COMPANY)
        for index in range(3)
    ]
    person = [usage("p", "2026-11-20T09:00:00", service="voice", micros=600 * EUR)]
    applications = evaluate(rules, person + lines, {}, {}).applications
    rentals = [item for item in applications if item.rule_id == "company_spend_rental_discount"]
    assert [(item.trigger_id, item.member_id, item.target) for item in rentals] == [
        ("l2", "ORG", DiscountTarget.RENTALS)
    ]


def test_percent_of_counted_spend_is_of_the_period_total() -> None:
    rules = parse_loyalty_rules(
        programme(
            'counter = { period = "month", measure = "spend" }\n'
            'condition = { threshold = "10.00" }\n'
            'action = { kind = "bonus_money", percent = "2.5", percent_of = "counted_spend" }'
        )
    )
    outcome = evaluate(
        rules, [usage("x", "2026-12-01T00:00:00", micros=4 * EUR)], {("r", "C1", "2026-12"): 8 * EUR}, {}
    )
    assert [item.amount_micros for item in outcome.applications] == [300_000]  # 2.5 % of 12.00


def test_a_birthday_bonus_is_an_event_of_its_own_kind() -> None:
    rules = parse_loyalty_rules((ROOT / "config" / "loyalty.toml").read_text())
    birthday = LoyaltyEvent(EventKind.BIRTHDAY, "birthday|C1|2026", "C1", "L1", at("2026-12-07T00:00:00"))
    [application] = evaluate(rules, [(birthday, PERSON)], {}, {}).applications
    assert (application.rule_id, application.amount_micros) == ("birthday_bonus", 2 * EUR)


def test_a_rating_discount_is_loaded_but_applies_nothing_yet() -> None:
    rules = parse_loyalty_rules(
        programme(
            'counter = { period = "month", measure = "events" }\n'
            "condition = { every = 1 }\n"
            'action = { kind = "rating_discount", percent = "10", service = "data" }'
        )
    )
    assert rules.rules["r"].action.kind is ActionKind.RATING_DISCOUNT
    assert evaluate(rules, [usage("x", "2026-12-01T00:00:00")], {}, {}).applications == []


def test_events_outside_the_validity_dates_count_for_nothing() -> None:
    rules = parse_loyalty_rules(
        EVERY_10TH_SMS.replace("valid_from = 2026-01-01", "valid_from = 2026-12-02\nvalid_until = 2026-12-02")
    )
    before = [usage(f"b{index}", "2026-12-01T23:59:59") for index in range(5)]
    during = [usage(f"d{index}", "2026-12-02T12:00:00") for index in range(10)]
    after = [usage(f"a{index}", "2026-12-03T00:00:00") for index in range(10)]
    assert run(rules, before + during + after) == ["d9"]


def test_a_budget_refuses_what_would_pass_it_and_the_counters_still_move() -> None:
    rules = parse_loyalty_rules(
        programme(
            'counter = { period = "month", measure = "events" }\n'
            "condition = { every = 1 }\n"
            'action = { kind = "bonus_money", amount = "0.40" }',
            budget="1.00",
        )
    )
    events = [usage(f"e{index}", "2026-12-01T00:00:00") for index in range(4)]
    outcome = evaluate(rules, events, {}, {})
    assert [item.trigger_id for item in outcome.applications] == ["e0", "e1"]
    assert (outcome.spent, outcome.over_budget) == ({"p": 800_000}, 2)
    assert outcome.counters == {("r", "C1", "2026-12"): 4}
    later = evaluate(rules, [usage("e4", "2026-12-02T00:00:00")], outcome.counters, {"p": 800_000})
    assert later.applications == [] and later.over_budget == 1


def test_filters_on_segment_customer_kind_and_payment_type() -> None:
    rules = parse_loyalty_rules(
        programme(
            'filters = { segments = ["ideal"], customer_kinds = ["individual"], payment_types = ["postpaid"] }\n'
            'counter = { period = "month", measure = "events" }\n'
            "condition = { every = 1 }\n"
            'action = { kind = "bonus_money", amount = "0.01" }'
        )
    )
    prepaid, member = usage("prepaid", "2026-12-01T00:00:00")
    postpaid = LoyaltyEvent(EventKind.USAGE, "postpaid", "C1", "L1", prepaid.at_seconds, "sms", 1, 1, "postpaid")
    company = LoyaltyEvent(EventKind.USAGE, "company", "ORG", "L2", prepaid.at_seconds, "sms", 1, 1, "postpaid")
    ideal_company = Member("ORG", "organization", "ideal")
    events = [(prepaid, member), (postpaid, member), (company, ideal_company)]
    assert [item.trigger_id for item in evaluate(rules, events, {}, {}).applications] == ["postpaid"]


def test_the_next_period_of_december_is_january() -> None:
    from ocs.loyalty.rules import Period

    assert next_period_bounds(Period.MONTH, at("2026-12-31T23:59:59")) == (
        at("2027-01-01T00:00:00"),
        at("2027-02-01T00:00:00"),
    )
    assert next_period_bounds(Period.DAY, at("2026-12-31T10:00:00")) == (
        at("2027-01-01T00:00:00"),
        at("2027-01-02T00:00:00"),
    )


def test_the_shipped_programmes_load() -> None:
    rules = load_loyalty_rules(ROOT / "config" / "loyalty.toml")
    assert {
        "sms_every_10th",
        "voice_spend_data_discount",
        "ideal_five_percent",
        "company_spend_rental_discount",
    } <= set(rules.rules)
    assert rules.programmes["sms_tenth_free"].budget_micros == 100_000 * EUR


@pytest.mark.parametrize(
    ("change", "where", "field"),
    [
        (("every = 10", "every = 0"), "programmes[1].rules[1].condition", "every: 0 is below 1"),
        (("every = 10", "treshold = 10"), "programmes[1].rules[1].condition", "treshold: unknown key"),
        (('unit = "events"', 'unit = "bonus"'), "programmes[1].rules[1].action", "unit: 'bonus' is money"),
        (('cost = "0.09"', "cost = 0.09"), "programmes[1].rules[1].action", "cost: write the price as a string"),
        (
            ('measure = "events"', 'measure = "minutes"'),
            "programmes[1].rules[1].counter",
            "measure: 'minutes' is not one of",
        ),
        (('event = "usage"', 'event = "sms"'), "programmes[1].rules[1]", "event: 'sms' is not one of"),
        (("valid_from = 2026-01-01", 'valid_from = "2026"'), "programmes[1]", "valid_from: must be a TOML date"),
        (
            ('services = ["sms"] }\n', 'services = "sms" }\n'),
            "programmes[1].rules[1].filters",
            "services: must be a list",
        ),
    ],
)
def test_a_mistake_is_named_by_file_section_and_field(change: tuple[str, str], where: str, field: str) -> None:
    with pytest.raises(LoyaltyRulesError) as refused:
        parse_loyalty_rules(EVERY_10TH_SMS.replace(*change, 1), "loyalty.toml")
    assert str(refused.value).startswith(f"loyalty.toml: {where}: {field}"), str(refused.value)


def test_ids_are_unique_and_a_discount_counts_by_month() -> None:
    twice = EVERY_10TH_SMS + "\n" + EVERY_10TH_SMS.replace('id = "r"', 'id = "r2"')
    with pytest.raises(LoyaltyRulesError, match=r"programmes\[2\]: id: 'p' is the id of another programme"):
        parse_loyalty_rules(twice)
    daily_discount = programme(
        'counter = { period = "day", measure = "events" }\n'
        "condition = { every = 1 }\n"
        'action = { kind = "invoice_discount", percent = "10", target = "rentals" }'
    )
    with pytest.raises(LoyaltyRulesError, match=r"counter: period: an invoice discount applies to the next month"):
        parse_loyalty_rules(daily_discount)
