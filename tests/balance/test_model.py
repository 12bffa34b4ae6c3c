"""The money rules on the reference model alone: worked examples with numbers checked by hand.

Each test is one rule of balance/RULES.md played on ``balance.model.ReferenceModel`` (and the
tariff arithmetic of ``balance.tariff``), with the expected numbers worked out in the comments.
Every model operation also asserts the invariants of RULES.md, so each example checks them too.
The same rules are held against the Redis engine by tests/balance/test_model_vs_store.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from balance.errors import BalanceUnavailable
from balance.model import ReferenceModel
from balance.tariff import affordable, charged, cost, is_valid
from balance.types import (
    MAX_AMOUNT_MICROS,
    MAX_HIERARCHY_LEVELS,
    MAX_SERVICE_UNITS,
    Account,
    AccountStatus,
    BalanceView,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    ChargeResult,
    ItemResult,
    OperationResult,
    Outcome,
    PaymentType,
    Tariff,
    Unit,
    UsageRecord,
)

# -- tariff arithmetic -----------------------------------------------------------------------------

# 0.06 per minute, billed per started minute.
PER_MINUTE_60_60 = Tariff(price_micros=60_000, per_units=60, block_units=60, first_units=60)
# 0.06 per minute, first minute whole, then per second.
PER_MINUTE_60_1 = Tariff(price_micros=60_000, per_units=60, block_units=1, first_units=60)
# 0.001 per minute, per second from the first second: fractions of a micro round up.
PER_SECOND_1_1 = Tariff(price_micros=1_000, per_units=60, block_units=1, first_units=1)
# 0.01 per started megabyte.
PER_MEGABYTE = Tariff(price_micros=10_000, per_units=1_000_000, block_units=1_000_000, first_units=1_000_000)
FREE = Tariff(price_micros=0, per_units=60, block_units=60, first_units=60)


@pytest.mark.parametrize(
    ("tariff", "units", "expected_charged", "expected_cost"),
    [
        (PER_MINUTE_60_60, 0, 0, 0),
        (PER_MINUTE_60_60, 1, 60, 60_000),
        (PER_MINUTE_60_60, 60, 60, 60_000),
        (PER_MINUTE_60_60, 61, 120, 120_000),
        (PER_MINUTE_60_1, 1, 60, 60_000),
        (PER_MINUTE_60_1, 61, 61, 61_000),
        (PER_MINUTE_60_1, 125, 125, 125_000),
        # 7 s at 1000 micros per 60 s: 116.67 micros, rounded up to 117.
        (PER_SECOND_1_1, 7, 7, 117),
        # 61 s: one whole period (1000) + ceil(1 * 1000 / 60) = 17.
        (PER_SECOND_1_1, 61, 61, 1_017),
        (PER_MEGABYTE, 1, 1_000_000, 10_000),
        (PER_MEGABYTE, 1_500_000, 2_000_000, 20_000),
        (FREE, 3_600, 3_600, 0),
    ],
)
def test_charged_and_cost(tariff: Tariff, units: int, expected_charged: int, expected_cost: int) -> None:
    assert charged(units, tariff) == expected_charged
    assert cost(units, tariff) == expected_cost


@pytest.mark.parametrize(
    ("tariff", "money_micros", "expected_units"),
    [
        (PER_MINUTE_60_60, 0, 0),
        (PER_MINUTE_60_60, 59_999, 0),  # not even the first minute
        (PER_MINUTE_60_60, 60_000, 60),
        (PER_MINUTE_60_60, 179_999, 120),
        (PER_MINUTE_60_1, 59_999, 0),
        (PER_MINUTE_60_1, 61_500, 61),  # 61 s cost 61,000; 62 s would cost 62,000
        (PER_SECOND_1_1, 117, 7),  # 7 s cost 117; 8 s cost ceil(8000 / 60) = 134
        (PER_SECOND_1_1, 116, 6),  # 6 s cost 100
        (PER_MEGABYTE, 25_000, 2_000_000),
        (PER_MEGABYTE, 9_999, 0),
    ],
)
def test_affordable(tariff: Tariff, money_micros: int, expected_units: int) -> None:
    assert affordable(money_micros, tariff) == expected_units


def test_a_price_of_zero_affords_everything() -> None:
    assert affordable(0, FREE) == MAX_SERVICE_UNITS // 60 * 60
    assert cost(MAX_SERVICE_UNITS, FREE) == 0


def test_large_values_near_the_limits_are_exact() -> None:
    most_expensive = Tariff(price_micros=MAX_AMOUNT_MICROS, per_units=1, block_units=1, first_units=1)
    assert cost(MAX_SERVICE_UNITS, most_expensive) == 10**28  # exact: no float anywhere
    assert affordable(MAX_AMOUNT_MICROS, most_expensive) == 1
    assert affordable(MAX_AMOUNT_MICROS - 1, most_expensive) == 0
    cheapest = Tariff(price_micros=1, per_units=MAX_SERVICE_UNITS, block_units=1, first_units=1)
    assert cost(1, cheapest) == 1  # a fraction of a micro still costs one micro
    assert cost(MAX_SERVICE_UNITS, cheapest) == 1
    assert cost(MAX_SERVICE_UNITS + 1, cheapest) == 2
    assert affordable(1, cheapest) == MAX_SERVICE_UNITS
    # 10 TB of data at 0.01 per MB: 10^7 MB x 10,000 micros.
    assert cost(MAX_SERVICE_UNITS, PER_MEGABYTE) == 10**11
    assert affordable(10**11, PER_MEGABYTE) == MAX_SERVICE_UNITS


def test_is_valid_refuses_zero_divisors_and_out_of_range_values() -> None:
    assert is_valid(PER_MINUTE_60_60)
    assert is_valid(FREE)
    assert not is_valid(Tariff(price_micros=1, per_units=0))
    assert not is_valid(Tariff(price_micros=1, block_units=0))
    assert not is_valid(Tariff(price_micros=-1))
    assert not is_valid(Tariff(price_micros=MAX_AMOUNT_MICROS + 1))


@st.composite
def tariffs(draw: st.DrawFn, min_price: int = 0) -> Tariff:
    block = draw(st.sampled_from([1, 6, 30, 60, 1_000, 1_000_000]))
    return Tariff(
        price_micros=draw(st.integers(min_price, MAX_AMOUNT_MICROS)),
        per_units=draw(st.sampled_from([1, 60, 1_000_000, 1_000_000_000, MAX_SERVICE_UNITS])),
        block_units=block,
        first_units=block * draw(st.integers(0, 3)),
    )


@given(tariffs(), st.integers(0, MAX_SERVICE_UNITS))
def test_cost_is_the_rounded_up_price_of_the_charged_units(tariff: Tariff, units: int) -> None:
    charged_units = charged(units, tariff)
    assert charged_units >= units
    assert charged_units == 0 or charged_units % tariff.block_units == 0
    assert cost(units, tariff) == -(-charged_units * tariff.price_micros // tariff.per_units)


@given(tariffs(), st.integers(0, MAX_SERVICE_UNITS), st.integers(0, MAX_SERVICE_UNITS))
def test_cost_never_falls_as_usage_grows(tariff: Tariff, units: int, more_units: int) -> None:
    assert cost(units, tariff) <= cost(units + more_units, tariff)


@given(tariffs(min_price=1), st.integers(0, MAX_AMOUNT_MICROS))
def test_affordable_is_the_most_the_money_pays_for(tariff: Tariff, money_micros: int) -> None:
    units = affordable(money_micros, tariff)
    assert units % tariff.block_units == 0
    assert units == 0 or units >= tariff.first_units
    assert cost(units, tariff) <= money_micros
    assert cost(units + tariff.block_units, tariff) > money_micros


# -- the model: helpers ----------------------------------------------------------------------------

NOW = 1_000
SMS = Tariff(price_micros=50_000, per_units=1, block_units=1, first_units=1)


def voice(
    rating_group: int = 1,
    used: int = 0,
    requested: int = 0,
    *,
    service: str = "voice",
    tariff: Tariff = PER_MINUTE_60_60,
    release: bool = False,
) -> ChargeItem:
    return ChargeItem(rating_group, service, Unit.SECONDS, tariff, used, requested, release)


def data(rating_group: int = 2, used: int = 0, requested: int = 0) -> ChargeItem:
    return ChargeItem(rating_group, "data", Unit.OCTETS, PER_MEGABYTE, used, requested)


def sms(used: int) -> ChargeItem:
    return ChargeItem(3, "sms", Unit.EVENTS, SMS, used_units=used)


def request(
    account_id: str,
    session_id: str,
    number: int,
    *items: ChargeItem,
    now: int = NOW,
    validity: int = 900,
    terminate: bool = False,
    event: bool = False,
) -> ChargeRequest:
    return ChargeRequest(account_id, session_id, number, items, now, validity, terminate, event)


def money(
    bucket_id: int, amount: int, kind: BucketKind = BucketKind.MAIN, *, valid_from: int = 0, valid_until: int = 0
) -> Bucket:
    return Bucket(bucket_id, kind, amount, valid_from=valid_from, valid_until=valid_until)


def model_with(*accounts: Account) -> ReferenceModel:
    model = ReferenceModel()
    for account in accounts:
        assert model.provision(account) == OperationResult(Outcome.OK)
    return model


def view(model: ReferenceModel, account_id: str, now: int = NOW) -> BalanceView:
    found = model.balance(account_id, now)
    assert found is not None
    return found


def amounts(model: ReferenceModel, account_id: str) -> dict[int, int]:
    return {bucket.bucket_id: bucket.amount for bucket in view(model, account_id).account.buckets}


def only_item(result: ChargeResult) -> ItemResult:
    assert result.outcome is Outcome.OK
    (item,) = result.items
    return item


# -- provisioning ----------------------------------------------------------------------------------


def test_provision_counts_money_buckets_as_credits_and_refuses_bad_hierarchies() -> None:
    model = model_with(Account("co", buckets=(money(1, 700_000), money(2, 300_000, BucketKind.BONUS))))
    model.provision(Account("a", buckets=(Bucket(1, BucketKind.SECONDS, 600), money(2, 5_000))))
    assert view(model, "co").credits_micros == 1_000_000
    assert view(model, "a").credits_micros == 5_000  # allowance seconds are not money
    assert model.provision(Account("co")).outcome is Outcome.ALREADY_EXISTS
    assert model.provision(Account("x", parent_id="nobody")).outcome is Outcome.INVALID
    assert model.provision(Account("x", parent_id="co", currency="USD")).outcome is Outcome.INVALID
    assert model.provision(Account("x", buckets=(money(0, 1),))).outcome is Outcome.INVALID
    assert model.provision(Account("x", buckets=(money(1, 1), money(1, 2)))).outcome is Outcome.INVALID
    assert model.provision(Account("branch", parent_id="co", child_cap_micros=10)).outcome is Outcome.OK
    levels = ["co", "branch"]  # the hierarchy takes MAX_HIERARCHY_LEVELS levels, the root included
    while len(levels) < MAX_HIERARCHY_LEVELS:
        levels.append(f"level{len(levels)}")
        assert model.provision(Account(levels[-1], parent_id=levels[-2], child_cap_micros=10)).outcome is Outcome.OK
    assert model.provision(Account("x", parent_id=levels[-1])).outcome is Outcome.INVALID  # one too deep
    assert model.balance("x", NOW) is None
    assert model.root_of("branch") == "co"
    assert model.root_of(levels[-1]) == "co"
    assert model.root_of("co") == "co"


# -- drawing order ---------------------------------------------------------------------------------


def test_allowances_are_drawn_by_expiry_then_priority_then_id() -> None:
    model = model_with(
        Account(
            "a",
            buckets=(
                Bucket(1, BucketKind.SECONDS, 100),  # never expires: last
                Bucket(2, BucketKind.SECONDS, 50, valid_until=5_000, priority=5),
                Bucket(3, BucketKind.SECONDS, 30, valid_until=5_000, priority=1),
                Bucket(4, BucketKind.SECONDS, 20, valid_until=3_000, priority=9),
                Bucket(5, BucketKind.SECONDS, 10, valid_until=3_000, priority=9),
                money(6, 1_000_000),
            ),
        )
    )
    opened = model.charge(request("a", "s", 0, voice(requested=120)))
    assert only_item(opened) == ItemResult(1, Outcome.OK, granted_units=120)
    # 4 (20), 5 (10), 3 (30), 2 (50), then 10 of bucket 1; no money.
    assert amounts(model, "a") == {1: 90, 2: 0, 3: 0, 4: 0, 5: 0, 6: 1_000_000}
    assert opened.balance_micros == 1_000_000
    # 115 s used: the holds are used in the same order, 5 s go back to bucket 1.
    ended = model.charge(request("a", "s", 1, voice(used=115), terminate=True))
    assert only_item(ended) == ItemResult(1, Outcome.OK, committed_units=115, committed_micros=0)
    assert amounts(model, "a") == {1: 95, 2: 0, 3: 0, 4: 0, 5: 0, 6: 1_000_000}
    (record,) = model.usage_records()
    assert (record.units, record.micros) == (115, 0)


def test_bonus_is_drawn_before_main_and_commits_follow_the_holds() -> None:
    model = model_with(
        Account(
            "a",
            buckets=(
                money(1, 1_000_000),
                money(2, 100_000, BucketKind.BONUS),
                money(3, 30_000, BucketKind.BONUS, valid_until=2_000),  # expires first: drawn first
            ),
        )
    )
    opened = model.charge(request("a", "s", 0, voice(requested=180)))
    assert only_item(opened).granted_units == 180
    assert amounts(model, "a") == {1: 950_000, 2: 0, 3: 0}  # 30,000 + 100,000 + 50,000
    assert view(model, "a").held_micros == 180_000
    # 120 s cost 120,000: 30,000 from bucket 3, 90,000 from bucket 2; the rest goes back.
    model.charge(request("a", "s", 1, voice(used=120)))
    assert amounts(model, "a") == {1: 1_000_000, 2: 10_000, 3: 0}
    balance = view(model, "a")
    assert (balance.credits_micros, balance.debits_micros, balance.committed_micros) == (1_130_000, 120_000, 120_000)
    assert (balance.held_micros, balance.reservations) == (0, 0)


def test_allowances_only_serve_the_services_of_their_scope() -> None:
    model = model_with(
        Account(
            "a",
            buckets=(
                Bucket(1, BucketKind.SECONDS, 300, services=("voice-onnet",)),
                Bucket(2, BucketKind.OCTETS, 10**9),  # another unit: never serves seconds
                money(3, 1_000_000),
            ),
        )
    )
    model.charge(request("a", "s", 0, voice(1, requested=60, service="voice-offnet")))
    assert amounts(model, "a") == {1: 300, 2: 10**9, 3: 940_000}
    model.charge(request("a", "s", 1, voice(2, requested=60, service="voice-onnet")))
    assert amounts(model, "a") == {1: 240, 2: 10**9, 3: 940_000}
    assert view(model, "a").reservations == 2


def test_buckets_are_usable_only_inside_their_validity_window() -> None:
    model = model_with(Account("a", buckets=(money(1, 100_000, valid_from=2_000), money(2, 50_000, valid_until=3_000))))
    assert view(model, "a", now=1_999).available_micros == 50_000
    assert view(model, "a", now=2_000).available_micros == 150_000
    assert view(model, "a", now=3_000).available_micros == 100_000  # valid_until is exclusive
    model.charge(request("a", "s", 0, voice(requested=60), now=3_000))
    assert amounts(model, "a") == {1: 40_000, 2: 50_000}


# -- grants ----------------------------------------------------------------------------------------


def test_a_grant_the_balance_only_partly_covers_is_partial_and_final() -> None:
    model = model_with(Account("a", buckets=(money(1, 150_000),)))
    result = model.charge(request("a", "s", 0, voice(requested=300)))
    # 300 s cost 300,000; 150,000 affords two whole minutes, which hold 120,000.
    assert only_item(result) == ItemResult(1, Outcome.PARTIAL, granted_units=120, final=True, reserved_micros=120_000)
    assert view(model, "a").held_micros == 120_000
    assert result.balance_micros == 30_000


def test_a_partial_grant_adds_the_allowance_units_to_what_money_affords() -> None:
    model = model_with(Account("a", buckets=(Bucket(1, BucketKind.SECONDS, 30), money(2, 150_000))))
    result = model.charge(request("a", "s", 0, voice(requested=300)))
    # 30 s from the allowance; the other 270 s cost(270) = 300,000 > 150,000: 120 s more,
    # for which the reservation holds 120,000 (the allowance seconds are not money).
    assert only_item(result) == ItemResult(1, Outcome.PARTIAL, granted_units=150, final=True, reserved_micros=120_000)
    assert amounts(model, "a") == {1: 0, 2: 30_000}


def test_a_request_is_rounded_up_to_whole_blocks_before_granting() -> None:
    model = model_with(Account("a", buckets=(money(1, 150_000),)))
    result = model.charge(request("a", "s", 0, voice(requested=100)))
    assert only_item(result) == ItemResult(1, Outcome.OK, granted_units=120, reserved_micros=120_000)


def test_insufficient_funds_holds_nothing_and_opens_no_session() -> None:
    model = model_with(Account("a", buckets=(money(1, 50_000),)))
    result = model.charge(request("a", "s", 0, voice(requested=60)))
    assert only_item(result) == ItemResult(1, Outcome.INSUFFICIENT_FUNDS)
    balance = view(model, "a")
    assert (balance.held_micros, balance.reservations, amounts(model, "a")) == (0, 0, {1: 50_000})
    # RULES.md "unopened": the refused first request left no session (issue 17: 5002 afterwards).
    assert model.charge(request("a", "s", 1, voice(), terminate=True)).outcome is Outcome.UNKNOWN_SESSION


def test_a_first_request_with_one_item_served_opens_the_session() -> None:
    model = model_with(Account("a", buckets=(money(1, 50_000),)))
    other = ChargeItem(2, "voice", Unit.SECONDS, voice().tariff)  # nothing asked: served, not refused
    result = model.charge(request("a", "s", 0, voice(requested=60), other))
    assert [item.outcome for item in result.items] == [Outcome.INSUFFICIENT_FUNDS, Outcome.OK]
    assert model.charge(request("a", "s", 1, voice(), terminate=True)).outcome is Outcome.OK


# -- commits ---------------------------------------------------------------------------------------


def test_commit_within_the_reservation_returns_the_rest_and_reserves_again() -> None:
    model = model_with(Account("a", buckets=(money(1, 1_000_000),)))
    model.charge(request("a", "s", 0, voice(requested=180)))
    result = model.charge(request("a", "s", 1, voice(used=75, requested=180), now=NOW + 75))
    # 75 s are charged as 120 s: 120,000. 60,000 returns, then 180,000 is held again.
    assert only_item(result) == ItemResult(
        1, Outcome.OK, 180, committed_units=75, committed_micros=120_000, reserved_micros=180_000
    )
    balance = view(model, "a")
    assert (balance.debits_micros, balance.committed_micros, balance.held_micros) == (120_000, 120_000, 180_000)
    assert amounts(model, "a") == {1: 700_000}
    assert result.balance_micros == 700_000
    (record,) = model.usage_records()
    assert record == UsageRecord(
        record_id="s|1|1",
        account_id="a",
        session_id="s",
        request_number=1,
        rating_group=1,
        service="voice",
        unit=Unit.SECONDS,
        units=75,
        micros=120_000,
        payment_type=PaymentType.PREPAID,
        at_seconds=NOW + 75,
    )


def test_usage_beyond_the_reservation_is_charged_as_far_as_the_balance_affords() -> None:
    model = model_with(Account("a", buckets=(money(1, 130_000),)))
    model.charge(request("a", "s", 0, voice(requested=60)))
    result = model.charge(request("a", "s", 1, voice(used=150)))
    # 60 s from the reservation (60,000); 90 s beyond cost 120,000 but 70,000 is left: 60 s more.
    assert only_item(result) == ItemResult(1, Outcome.OK, committed_units=120, committed_micros=120_000)
    assert amounts(model, "a") == {1: 10_000}
    assert view(model, "a").committed_micros == 120_000


def test_usage_without_a_reservation_is_charged_directly() -> None:
    model = model_with(Account("a", buckets=(money(1, 1_000_000),)))
    model.charge(request("a", "s", 0, voice(1, requested=60)))
    result = model.charge(request("a", "s", 1, voice(1, used=60), voice(7, used=61)))
    assert [(item.committed_units, item.committed_micros) for item in result.items] == [(60, 60_000), (61, 120_000)]
    assert amounts(model, "a") == {1: 820_000}


def test_an_event_is_committed_all_or_nothing() -> None:
    model = model_with(Account("a", buckets=(money(1, 100_000),)))
    refused = model.charge(request("a", "e1", 0, sms(3), event=True))
    assert refused.outcome is Outcome.OK
    assert only_item(refused) == ItemResult(3, Outcome.INSUFFICIENT_FUNDS)  # 150,000 > 100,000
    assert amounts(model, "a") == {1: 100_000}
    assert model.usage_records() == []
    sent = model.charge(request("a", "e2", 0, sms(2), event=True))
    assert only_item(sent) == ItemResult(3, Outcome.OK, committed_units=2, committed_micros=100_000)
    assert amounts(model, "a") == {1: 0}
    # The event's session is closed: a follow-up is unknown, a retransmission is replayed.
    assert model.charge(request("a", "e2", 1, voice(requested=60))).outcome is Outcome.UNKNOWN_SESSION
    assert model.charge(request("a", "e2", 0, sms(2), event=True)) == replace(sent, replayed=True)


def test_an_event_uses_its_allowance_before_money() -> None:
    model = model_with(Account("a", buckets=(Bucket(1, BucketKind.EVENTS, 2, services=("sms",)), money(2, 60_000))))
    sent = model.charge(request("a", "e", 0, sms(3), event=True))
    assert only_item(sent) == ItemResult(3, Outcome.OK, committed_units=3, committed_micros=50_000)
    assert amounts(model, "a") == {1: 0, 2: 10_000}


def test_terminate_returns_every_reservation_and_closes_the_session() -> None:
    model = model_with(Account("a", buckets=(money(1, 1_000_000),)))
    model.charge(request("a", "s", 0, voice(requested=120), data(requested=2_000_000)))
    assert view(model, "a").held_micros == 140_000  # 120,000 voice + 2 MB at 10,000
    result = model.charge(request("a", "s", 1, voice(used=30), terminate=True))
    assert only_item(result) == ItemResult(1, Outcome.OK, committed_units=30, committed_micros=60_000)
    balance = view(model, "a")
    assert (balance.held_micros, balance.reservations, balance.debits_micros) == (0, 0, 60_000)
    assert amounts(model, "a") == {1: 940_000}
    assert model.charge(request("a", "s", 2, voice(used=10))).outcome is Outcome.UNKNOWN_SESSION


def test_release_ends_one_rating_group() -> None:
    model = model_with(Account("a", buckets=(money(1, 1_000_000),)))
    model.charge(request("a", "s", 0, voice(requested=120), data(requested=1_000_000)))
    result = model.charge(request("a", "s", 1, voice(used=60, requested=60, release=True)))
    assert only_item(result) == ItemResult(1, Outcome.OK, committed_units=60, committed_micros=60_000)
    assert (view(model, "a").held_micros, view(model, "a").reservations) == (10_000, 1)


# -- idempotency and refusals ----------------------------------------------------------------------


def test_a_retransmission_is_replayed_and_changes_nothing() -> None:
    model = model_with(Account("a", buckets=(money(1, 1_000_000),)))
    opened = model.charge(request("a", "s", 0, voice(requested=60)))
    updated = model.charge(request("a", "s", 1, voice(used=60, requested=60)))
    before = (view(model, "a"), model.usage_records())
    assert model.charge(request("a", "s", 1, voice(used=60, requested=60))) == replace(updated, replayed=True)
    assert (view(model, "a"), model.usage_records()) == before
    assert model.charge(request("a", "s", 0, voice(requested=60))) == ChargeResult(Outcome.STALE_REQUEST)
    assert not opened.replayed
    assert (view(model, "a"), model.usage_records()) == before


def test_unknown_accounts_and_sessions_are_refused() -> None:
    model = model_with(Account("a", buckets=(money(1, 1_000_000),)))
    assert model.charge(request("nobody", "s", 0, voice(requested=60))) == ChargeResult(Outcome.UNKNOWN_ACCOUNT)
    assert model.charge(request("a", "s", 1, voice(requested=60))) == ChargeResult(Outcome.UNKNOWN_SESSION)
    assert view(model, "a").held_micros == 0


def test_an_account_that_is_not_active_reserves_nothing_but_may_finish_its_sessions() -> None:
    model = model_with(Account("a", buckets=(money(1, 1_000_000),)))
    model.charge(request("a", "s", 0, voice(requested=60)))
    assert model.update("a", status=AccountStatus.SUSPENDED).outcome is Outcome.OK
    # Suspended: a new session opens (so the network can redirect) with nothing reserved.
    opened = model.charge(request("a", "t", 0, voice(requested=60)))
    assert opened.outcome is Outcome.OK and only_item(opened).outcome is Outcome.ACCOUNT_BLOCKED
    assert model.charge(request("a", "e", 0, sms(1), event=True)) == ChargeResult(Outcome.ACCOUNT_BLOCKED)
    result = model.charge(request("a", "s", 1, voice(used=60, requested=60)))
    assert only_item(result) == ItemResult(1, Outcome.ACCOUNT_BLOCKED, committed_units=60, committed_micros=60_000)
    assert view(model, "a").reservations == 0
    # Barred: nothing new opens at all.
    assert model.update("a", status=AccountStatus.BARRED).outcome is Outcome.OK
    assert model.charge(request("a", "u", 0, voice(requested=60))) == ChargeResult(Outcome.ACCOUNT_BLOCKED)
    assert model.update("nobody", status=AccountStatus.ACTIVE).outcome is Outcome.UNKNOWN_ACCOUNT


# -- postpaid and company hierarchies --------------------------------------------------------------


def test_postpaid_usage_is_held_and_committed_against_the_credit_limit() -> None:
    model = model_with(Account("p", payment_type=PaymentType.POSTPAID, credit_limit_micros=1_000_000))
    assert only_item(model.charge(request("p", "s1", 0, voice(requested=600)))).granted_units == 600
    second = only_item(model.charge(request("p", "s2", 0, voice(requested=600))))
    # 400,000 left on the line affords six whole minutes (360,000).
    assert second == ItemResult(1, Outcome.PARTIAL, granted_units=360, final=True, reserved_micros=360_000)
    assert (view(model, "p").limit_held_micros, view(model, "p").available_micros) == (960_000, 40_000)
    model.charge(request("p", "s1", 1, voice(used=300), terminate=True))
    balance = view(model, "p")
    assert (balance.unbilled_micros, balance.limit_held_micros, balance.available_micros) == (300_000, 360_000, 340_000)
    assert model.usage_records()[0].payment_type is PaymentType.POSTPAID
    # A lowered limit leaves 660,000 in use above it: nothing new is granted, open sessions finish.
    model.update("p", credit_limit_micros=500_000)
    assert only_item(model.charge(request("p", "s3", 0, voice(requested=60)))).outcome is Outcome.INSUFFICIENT_FUNDS
    model.charge(request("p", "s2", 1, voice(used=360), terminate=True))
    balance = view(model, "p")
    assert (balance.unbilled_micros, balance.limit_held_micros, balance.committed_micros) == (660_000, 0, 660_000)
    assert balance.debits_micros == 0


def test_a_child_draws_on_its_prepaid_parent_within_its_cap() -> None:
    model = model_with(
        Account("co", buckets=(money(1, 1_000_000),)),
        Account("branch", parent_id="co", child_cap_micros=200_000, buckets=(money(1, 50_000),)),
    )
    result = model.charge(request("branch", "s", 0, voice(requested=600)))
    # Own 50,000 + pool 200,000 = 250,000 affords 240 s: 50,000 own, 190,000 from the parent.
    assert only_item(result) == ItemResult(1, Outcome.PARTIAL, granted_units=240, final=True, reserved_micros=240_000)
    assert result.balance_micros == 10_000  # what is left of the cap
    assert view(model, "branch").pool_used_micros == 190_000
    assert (view(model, "co").held_micros, amounts(model, "co")) == (190_000, {1: 810_000})
    model.charge(request("branch", "s", 1, voice(used=240), terminate=True))
    child, parent = view(model, "branch"), view(model, "co")
    assert (child.committed_micros, child.debits_micros, child.pool_used_micros) == (240_000, 50_000, 190_000)
    assert (parent.committed_micros, parent.debits_micros, parent.held_micros) == (0, 190_000, 0)
    assert parent.available_micros == 810_000  # the parent's own use is not capped


def test_a_child_draws_on_its_postpaid_parents_credit_line_within_its_cap() -> None:
    model = model_with(
        Account("corp", payment_type=PaymentType.POSTPAID, credit_limit_micros=500_000),
        Account("dept", parent_id="corp", child_cap_micros=300_000),
    )
    result = model.charge(request("dept", "s", 0, voice(requested=600)))
    assert only_item(result) == ItemResult(1, Outcome.PARTIAL, granted_units=300, final=True, reserved_micros=300_000)
    assert (view(model, "corp").limit_held_micros, view(model, "dept").pool_used_micros) == (300_000, 300_000)
    model.charge(request("dept", "s", 1, voice(used=300), terminate=True))
    child, parent = view(model, "dept"), view(model, "corp")
    assert (parent.unbilled_micros, parent.limit_held_micros, parent.available_micros) == (300_000, 0, 200_000)
    assert (child.committed_micros, child.pool_used_micros, child.available_micros) == (300_000, 300_000, 0)


# -- money in --------------------------------------------------------------------------------------


def test_top_ups_are_idempotent_by_id() -> None:
    model = model_with(Account("a"))
    assert model.top_up("a", "t1", 500_000) == OperationResult(Outcome.OK, bucket_id=1, applied_micros=500_000)
    assert model.top_up("a", "t1", 900_000) == OperationResult(
        Outcome.OK, replayed=True, bucket_id=1, applied_micros=500_000
    )
    assert model.top_up("a", "t2", 100_000, kind=BucketKind.BONUS, valid_until=5_000).bucket_id == 2
    assert model.top_up("a", "t3", 200_000).bucket_id == 1
    assert amounts(model, "a") == {1: 700_000, 2: 100_000}
    assert view(model, "a").account.buckets[1].valid_until == 5_000
    assert view(model, "a").credits_micros == 800_000
    assert model.top_up("nobody", "t1", 1).outcome is Outcome.UNKNOWN_ACCOUNT
    assert model.top_up("a", "t4", 1, kind=BucketKind.SECONDS).outcome is Outcome.INVALID


def test_adjustments_are_signed_idempotent_and_never_take_a_bucket_below_zero() -> None:
    model = model_with(Account("a", buckets=(money(1, 700_000),)))
    assert model.adjust("a", "j1", -800_000) == OperationResult(Outcome.INSUFFICIENT_FUNDS)
    assert amounts(model, "a") == {1: 700_000}
    assert model.adjust("a", "j1", -200_000) == OperationResult(Outcome.OK, bucket_id=1, applied_micros=-200_000)
    assert model.adjust("a", "j1", -200_000) == OperationResult(
        Outcome.OK, replayed=True, bucket_id=1, applied_micros=-200_000
    )
    assert model.adjust("a", "j2", 50_000).bucket_id == 1
    assert (amounts(model, "a"), view(model, "a").credits_micros) == ({1: 550_000}, 550_000)


def test_add_bucket_takes_the_next_id_and_counts_money_as_credit() -> None:
    model = model_with(Account("a", buckets=(money(1, 100_000),)))
    allowance = Bucket(99, BucketKind.SECONDS, 600, services=("voice",))
    assert model.add_bucket("a", allowance) == OperationResult(Outcome.OK, bucket_id=2)
    assert model.add_bucket("a", money(0, 50_000, BucketKind.BONUS)) == OperationResult(Outcome.OK, bucket_id=3)
    assert view(model, "a").credits_micros == 150_000
    assert view(model, "a").account.buckets[1] == replace(allowance, bucket_id=2)


def test_a_refund_is_a_credit_idempotent_by_session_and_request_number() -> None:
    model = model_with(Account("a", buckets=(money(1, 100_000),)))
    refunded = model.refund("a", "r1", 0, 50_000, NOW)
    assert refunded == ChargeResult(Outcome.OK, balance_micros=150_000)
    assert model.refund("a", "r1", 0, 50_000, NOW) == replace(refunded, replayed=True)
    assert model.refund("a", "r1", 1, 50_000, NOW) == ChargeResult(Outcome.UNKNOWN_SESSION)
    model.refund("a", "r2", 5, 10_000, NOW)
    assert model.refund("a", "r2", 4, 10_000, NOW) == ChargeResult(Outcome.STALE_REQUEST)
    balance = view(model, "a")
    assert (amounts(model, "a"), balance.credits_micros, balance.committed_micros) == ({1: 160_000}, 160_000, 0)
    assert model.refund("nobody", "r3", 0, 1, NOW) == ChargeResult(Outcome.UNKNOWN_ACCOUNT)


def test_a_call_past_its_deadline_changes_nothing_but_a_replay_is_still_answered() -> None:
    """RULES.md "Deadlines": past the session checks, a late call raises and writes nothing."""
    model = model_with(Account("a", buckets=(money(1, 1_000_000),)))
    opened = model.charge(request("a", "s", 0, voice(requested=60)))
    with pytest.raises(BalanceUnavailable):
        model.charge(request("a", "s", 1, voice(used=60), terminate=True), late=True)
    with pytest.raises(BalanceUnavailable):
        model.charge(request("a", "e", 0, sms(1), event=True), late=True)
    with pytest.raises(BalanceUnavailable):
        model.refund("a", "r", 0, 10_000, NOW, late=True)
    assert model.charge(request("a", "s", 0, voice(requested=60)), late=True) == replace(opened, replayed=True)
    assert model.charge(request("a", "t", 3, voice(used=60)), late=True) == ChargeResult(Outcome.UNKNOWN_SESSION)
    assert (amounts(model, "a"), view(model, "a").committed_micros, model.usage_records()) == ({1: 940_000}, 0, [])
    assert model.charge(request("a", "s", 1, voice(used=60), terminate=True)).items[0].committed_micros == 60_000


# -- session supervision ---------------------------------------------------------------------------


def test_expire_closes_sessions_whose_last_request_is_older_than_its_validity() -> None:
    model = model_with(
        Account("co", buckets=(money(1, 1_000_000),)),
        Account("branch", parent_id="co", child_cap_micros=1_000_000),
    )
    model.charge(request("co", "s1", 0, voice(requested=60), now=1_000))  # expires at 1,900
    model.charge(request("branch", "s2", 0, voice(requested=60), now=1_500))  # expires at 2,400
    assert model.expire("co", 1_899) == []
    assert model.expire("co", 1_900) == ["s1"]
    assert view(model, "co").held_micros == 60_000
    assert model.charge(request("co", "s1", 1, voice(used=60))).outcome is Outcome.UNKNOWN_SESSION
    model.charge(request("branch", "s2", 1, voice(used=10, requested=60), now=2_000))  # now 2,900
    assert model.expire("co", 2_400) == []
    assert model.expire("co", 2_900) == ["s2"]
    parent, child = view(model, "co"), view(model, "branch")
    assert (parent.held_micros, child.reservations, child.pool_used_micros) == (0, 0, 60_000)
    assert amounts(model, "co") == {1: 940_000}


def test_the_invariant_check_names_the_account_and_the_rule() -> None:
    model = model_with(Account("a", buckets=(money(1, 100_000),)))
    model.charge(request("a", "s", 0, voice(used=60), event=True))
    model.check_invariants()
    model._ledger.accounts["a"].held += 1
    with pytest.raises(AssertionError, match=r"account a: rule 1 "):
        model.check_invariants()
    model._ledger.accounts["a"].held -= 1
    model._ledger.accounts["a"].committed += 1
    with pytest.raises(AssertionError, match=r"account a: rule 5 "):
        model.check_invariants()
