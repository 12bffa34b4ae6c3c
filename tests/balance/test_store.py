"""The Redis money engine, operation by operation, on a private real Redis.

Every number here is worked out by hand from RULES.md; the model-based test covers the random
sequences. Tariffs: voice 0.60 per minute in 60/60 increments, data 0.01 per MB rounded to MB.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import pytest

from balance import keys
from balance.audit import audit
from balance.callers import Reply, ScriptCaller
from balance.embedded import EmbeddedRedis
from balance.errors import BalanceScriptError, BalanceUnavailable
from balance.keys import account_key, session_key
from balance.script_io import parse_charge_reply
from balance.scripts import SCRIPTS, Operation, Script
from balance.store import BalanceStore
from balance.types import (
    Account,
    AccountStatus,
    AuditReport,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    ChargeResult,
    ItemResult,
    Outcome,
    PaymentType,
    Tariff,
    TariffChange,
    Unit,
    UsageSplit,
)
from tests.balance.conftest import LosesMarks

EUR = 1_000_000
VOICE = Tariff(price_micros=600_000, per_units=60, block_units=60, first_units=60)
DATA = Tariff(price_micros=10_000, per_units=1_000_000, block_units=1_000_000, first_units=1_000_000)
NOW = 1_700_000_000


@pytest.fixture(params=["redis-py", "pipelined", "pipelined-eval"])
async def store(request: pytest.FixtureRequest, embedded_redis: EmbeddedRedis) -> AsyncIterator[BalanceStore]:
    """Every store test on both callers, and on the EVAL scripts as well as the function library."""
    balance_store = await BalanceStore.connect(
        embedded_redis.url, pipelined=request.param != "redis-py", functions=request.param != "pipelined-eval"
    )
    await balance_store.flush_all()
    try:
        yield balance_store
    finally:
        await balance_store.close()


def voice(used: int = 0, requested: int = 0, *, rating_group: int = 1, release: bool = False) -> ChargeItem:
    return ChargeItem(rating_group, "voice", Unit.SECONDS, VOICE, used, requested, release)


def data(rating_group: int, used: int = 0, requested: int = 0) -> ChargeItem:
    return ChargeItem(rating_group, "data", Unit.OCTETS, DATA, used, requested)


def ccr(account: str, session: str, number: int, *items: ChargeItem, **options: object) -> ChargeRequest:
    return ChargeRequest(account, session, number, items, now_seconds=int(str(options.pop("now", NOW))), **options)  # type: ignore[arg-type]


async def money(store: BalanceStore, account_id: str) -> int:
    view = await store.balance(account_id, NOW)
    assert view is not None
    return view.available_micros


def only(result: ChargeResult) -> tuple[Outcome, int, int, int]:
    (item,) = result.items
    return item.outcome, item.granted_units, item.committed_units, item.committed_micros


async def assert_audit_clean(store: BalanceStore, *, sessions_ended: bool = True) -> None:
    usage: dict[str, int] = {}
    for record in await store.usage_records():
        usage[record.account_id] = usage.get(record.account_id, 0) + record.micros
    report = await audit(store, now_seconds=NOW, usage_micros=usage, sessions_ended=sessions_ended)
    assert report.findings == []


# -- provisioning ----------------------------------------------------------------------------


async def test_provision_outcomes(store: BalanceStore) -> None:
    assert (
        await store.provision(Account("alice", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    ).outcome is Outcome.OK
    assert (await store.provision(Account("alice"))).outcome is Outcome.ALREADY_EXISTS
    assert (await store.provision(Account("orphan", parent_id="nobody"))).outcome is Outcome.INVALID
    assert (await store.provision(Account("bad id!"))).outcome is Outcome.INVALID
    assert (
        await store.provision(Account("dup", buckets=(Bucket(1, BucketKind.MAIN, 1), Bucket(1, BucketKind.MAIN, 1))))
    ).outcome is Outcome.INVALID
    assert (await store.provision(Account("acme"))).outcome is Outcome.OK
    assert (await store.provision(Account("acme-sales", parent_id="acme", child_cap_micros=EUR))).outcome is Outcome.OK
    # One currency, and an id belongs to one hierarchy (depth: tests/balance/test_hierarchy.py).
    assert (await store.provision(Account("dollar-child", currency="USD", parent_id="acme"))).outcome is Outcome.INVALID
    assert (await store.provision(Account("alice", parent_id="acme"))).outcome is Outcome.ALREADY_EXISTS
    view = await store.balance("alice", NOW)
    assert view is not None and view.credits_micros == 5 * EUR and view.available_micros == 5 * EUR


async def test_top_up_adjust_and_buckets_are_idempotent(store: BalanceStore) -> None:
    await store.provision(Account("alice"))
    first = await store.top_up("alice", "topup-1", 3 * EUR)
    again = await store.top_up("alice", "topup-1", 3 * EUR)
    assert (first.outcome, first.replayed, again.outcome, again.replayed) == (Outcome.OK, False, Outcome.OK, True)
    assert await money(store, "alice") == 3 * EUR
    assert (await store.adjust("alice", "fix-1", -4 * EUR)).outcome is Outcome.INSUFFICIENT_FUNDS
    assert (await store.adjust("alice", "fix-1", -1 * EUR)).outcome is Outcome.OK
    assert (await store.adjust("alice", "fix-1", -1 * EUR)).replayed
    added = await store.add_bucket("alice", Bucket(0, BucketKind.BONUS, 2 * EUR))
    assert added.bucket_id == 2
    assert await money(store, "alice") == 4 * EUR
    assert (await store.top_up("nobody", "t", EUR)).outcome is Outcome.UNKNOWN_ACCOUNT
    await assert_audit_clean(store)


# -- two-phase charging -------------------------------------------------------------------------


async def test_voice_call_reserve_commit_terminate(store: BalanceStore) -> None:
    await store.provision(
        Account("alice", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR), Bucket(2, BucketKind.SECONDS, 120, ("voice",))))
    )
    # 600 s: 120 from the allowance, 480 s = 8 minutes = 4.80 held.
    assert only(await store.charge(ccr("alice", "call-1", 0, voice(requested=600)))) == (Outcome.OK, 600, 0, 0)
    assert await money(store, "alice") == 5_200_000
    # 590 s used: 120 allowance + 470 s charged as 480 s = 4.80; then 6000 s asked, 5.20 affords 8 min.
    update = await store.charge(ccr("alice", "call-1", 1, voice(used=590, requested=6000)))
    assert only(update) == (Outcome.PARTIAL, 480, 590, 4_800_000)
    assert update.items[0].final and update.balance_micros == 400_000
    # Termination: 100 s used = 2 minutes = 1.20; the rest of the 4.80 held comes back.
    end = await store.charge(ccr("alice", "call-1", 2, voice(used=100), terminate=True))
    assert only(end) == (Outcome.OK, 0, 100, 1_200_000)
    assert await money(store, "alice") == 4 * EUR
    records = await store.usage_records()
    assert [(r.record_id, r.units, r.micros) for r in records] == [
        ("call-1|1|1", 590, 4_800_000),
        ("call-1|2|1", 100, 1_200_000),
    ]
    await assert_audit_clean(store)


async def test_balance_runs_out_partial_grant_then_no_credit(store: BalanceStore) -> None:
    await store.provision(Account("bob", buckets=(Bucket(1, BucketKind.MAIN, EUR),)))
    # 1.00 affords one minute of 0.60.
    first = await store.charge(ccr("bob", "call", 0, voice(requested=300)))
    assert only(first) == (Outcome.PARTIAL, 60, 0, 0) and first.items[0].final
    second = await store.charge(ccr("bob", "call", 1, voice(used=60, requested=300)))
    assert only(second) == (Outcome.INSUFFICIENT_FUNDS, 0, 60, 600_000)
    assert second.balance_micros == 400_000
    await store.charge(ccr("bob", "call", 2, terminate=True))
    await assert_audit_clean(store)


async def test_replay_stale_and_unknown_session(store: BalanceStore) -> None:
    await store.provision(Account("carol", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
    initial = await store.charge(ccr("carol", "s", 0, voice(requested=120)))
    update = ccr("carol", "s", 1, voice(used=60, requested=120))
    applied = await store.charge(update)
    balance_after = await money(store, "carol")
    replayed = await store.charge(update)
    assert replayed.replayed and replayed.items == applied.items and replayed.balance_micros == applied.balance_micros
    assert await money(store, "carol") == balance_after
    assert (await store.charge(ccr("carol", "s", 0, voice(requested=120)))).outcome is Outcome.STALE_REQUEST
    assert (await store.charge(ccr("carol", "never-opened", 3, voice(used=10)))).outcome is Outcome.UNKNOWN_SESSION
    await store.charge(ccr("carol", "s", 2, terminate=True))
    assert (await store.charge(ccr("carol", "s", 3, voice(used=10)))).outcome is Outcome.UNKNOWN_SESSION
    assert (await store.charge(ccr("nobody", "s", 0, voice(requested=1)))).outcome is Outcome.UNKNOWN_ACCOUNT
    assert initial.outcome is Outcome.OK
    await assert_audit_clean(store)


async def test_two_rating_groups_with_scoped_allowances(store: BalanceStore) -> None:
    await store.provision(
        Account(
            "dave",
            buckets=(
                Bucket(1, BucketKind.MAIN, 1 * EUR),
                Bucket(2, BucketKind.BONUS, 50_000),
                Bucket(3, BucketKind.OCTETS, 5_000_000, ("data",), valid_until=NOW + 100, priority=5),
                Bucket(4, BucketKind.OCTETS, 3_000_000, ("data",), priority=1),
                Bucket(5, BucketKind.OCTETS, 9_000_000, ("video",)),
            ),
        )
    )
    result = await store.charge(ccr("dave", "pdp", 0, data(10, requested=7_000_000), data(20, requested=4_000_000)))
    # RG 10: 5 MB from bucket 3 (expires first), 2 MB from bucket 4. RG 20: 1 MB left in bucket 4,
    # 3 MB priced 0.03: from the bonus bucket first.
    assert [(i.rating_group, i.outcome, i.granted_units) for i in result.items] == [
        (10, Outcome.OK, 7_000_000),
        (20, Outcome.OK, 4_000_000),
    ]
    view = await store.balance("dave", NOW)
    assert view is not None
    assert {b.bucket_id: b.amount for b in view.account.buckets} == {1: EUR, 2: 20_000, 3: 0, 4: 0, 5: 9_000_000}
    assert view.reservations == 2
    # Used 6.5 MB of RG 10 (all allowance) and 2.5 MB of RG 20: 1 MB allowance + 1.5 MB -> 2 MB = 0.02.
    end = await store.charge(ccr("dave", "pdp", 1, data(10, used=6_500_000), data(20, used=2_500_000), terminate=True))
    assert [(i.committed_units, i.committed_micros) for i in end.items] == [(6_500_000, 0), (2_500_000, 20_000)]
    view = await store.balance("dave", NOW)
    assert view is not None
    assert {b.bucket_id: b.amount for b in view.account.buckets} == {1: EUR, 2: 30_000, 3: 0, 4: 500_000, 5: 9_000_000}
    await assert_audit_clean(store)


async def test_event_direct_debit_is_all_or_nothing_and_refund_is_idempotent(store: BalanceStore) -> None:
    sms = Tariff(price_micros=90_000)
    await store.provision(Account("erin", buckets=(Bucket(1, BucketKind.MAIN, 200_000),)))
    item = ChargeItem(0, "sms", Unit.EVENTS, sms, used_units=1)
    assert only(await store.charge(ccr("erin", "sms-1", 0, item, event=True))) == (Outcome.OK, 0, 1, 90_000)
    three = ChargeItem(0, "sms", Unit.EVENTS, sms, used_units=3)
    assert only(await store.charge(ccr("erin", "sms-2", 0, three, event=True)))[0] is Outcome.INSUFFICIENT_FUNDS
    assert await money(store, "erin") == 110_000
    refund = await store.refund("erin", "refund-1", 0, 90_000, NOW)
    assert refund.outcome is Outcome.OK and refund.balance_micros == 200_000
    assert (await store.refund("erin", "refund-1", 0, 90_000, NOW)).replayed
    assert await money(store, "erin") == 200_000
    await assert_audit_clean(store)


async def test_suspended_account_commits_usage_but_gets_no_new_quota(store: BalanceStore) -> None:
    await store.provision(Account("fred", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    await store.charge(ccr("fred", "call", 0, voice(requested=120)))
    await store.update("fred", status=AccountStatus.SUSPENDED)
    update = await store.charge(ccr("fred", "call", 1, voice(used=60, requested=120)))
    assert only(update) == (Outcome.ACCOUNT_BLOCKED, 0, 60, 600_000)
    # A suspended account may open a session (to be redirected) but gets nothing reserved.
    opened = await store.charge(ccr("fred", "call-2", 0, voice(requested=60)))
    assert opened.outcome is Outcome.OK and only(opened) == (Outcome.ACCOUNT_BLOCKED, 0, 0, 0)
    await store.charge(ccr("fred", "call-2", 1, terminate=True))
    await store.update("fred", status=AccountStatus.BARRED)
    assert (await store.charge(ccr("fred", "call-3", 0, voice(requested=60)))).outcome is Outcome.ACCOUNT_BLOCKED
    await store.charge(ccr("fred", "call", 2, terminate=True))
    assert await money(store, "fred") == 4_400_000
    await assert_audit_clean(store)


@pytest.mark.parametrize(
    "session_id",
    ["pgw.op.net;1;2/3", 'pgw;"quoted"', "pgw;back\\slash", "pgw;tab\there", "pgw;ünïcode;\u2028", "pgw;\x7f;\x00"],
)
async def test_usage_records_carry_any_session_id(store: BalanceStore, session_id: str) -> None:
    """The record is JSON written by the script; the session id arrives escaped when it must be."""
    await store.provision(Account("ivan", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    assert only(await store.charge(ccr("ivan", session_id, 0, voice(requested=60)))) == (Outcome.OK, 60, 0, 0)
    assert only(await store.charge(ccr("ivan", session_id, 1, voice(used=60), terminate=True)))[2] == 60
    (record,) = await store.usage_records()
    assert record.session_id == session_id and record.record_id == f"{session_id}|1|1"
    await assert_audit_clean(store)


# -- postpaid and company hierarchies --------------------------------------------------------


async def test_postpaid_grants_against_the_credit_limit(store: BalanceStore) -> None:
    await store.provision(Account("gina", payment_type=PaymentType.POSTPAID, credit_limit_micros=3 * EUR))
    # 3.00 of credit affords 5 minutes.
    first = await store.charge(ccr("gina", "call", 0, voice(requested=600)))
    assert only(first) == (Outcome.PARTIAL, 300, 0, 0)
    end = await store.charge(ccr("gina", "call", 1, voice(used=150), terminate=True))
    assert only(end) == (Outcome.OK, 0, 150, 1_800_000)
    view = await store.balance("gina", NOW)
    assert view is not None
    assert (view.unbilled_micros, view.limit_held_micros, view.available_micros) == (1_800_000, 0, 1_200_000)
    (record,) = await store.usage_records()
    assert record.payment_type is PaymentType.POSTPAID and record.micros == 1_800_000
    await assert_audit_clean(store)


async def test_child_draws_on_prepaid_parent_within_its_cap(store: BalanceStore) -> None:
    await store.provision(Account("acme", buckets=(Bucket(1, BucketKind.MAIN, 100 * EUR),)))
    await store.provision(
        Account("acme-1", parent_id="acme", child_cap_micros=2 * EUR, buckets=(Bucket(1, BucketKind.MAIN, 600_000),))
    )
    # Own 0.60 + cap 2.00 = 2.60: 4 minutes (2.40).
    grant = await store.charge(ccr("acme-1", "call", 0, voice(requested=3600)))
    assert only(grant) == (Outcome.PARTIAL, 240, 0, 0)
    child = await store.balance("acme-1", NOW)
    parent = await store.balance("acme", NOW)
    assert child is not None and parent is not None
    assert (child.held_micros, child.pool_used_micros) == (600_000, 1_800_000)
    assert (parent.held_micros, parent.available_micros) == (1_800_000, 98_200_000)
    # 3 minutes used (1.80): 0.60 own, 1.20 from the pool; 0.60 goes back to the pool.
    end = await store.charge(ccr("acme-1", "call", 1, voice(used=180), terminate=True))
    assert only(end) == (Outcome.OK, 0, 180, 1_800_000)
    child = await store.balance("acme-1", NOW)
    parent = await store.balance("acme", NOW)
    assert child is not None and parent is not None
    assert (child.committed_micros, child.debits_micros, child.pool_used_micros) == (1_800_000, 600_000, 1_200_000)
    assert (parent.committed_micros, parent.debits_micros, parent.available_micros) == (0, 1_200_000, 98_800_000)
    assert child.available_micros == 800_000  # the cap left
    await assert_audit_clean(store)


async def test_a_cap_lowered_below_the_use_is_a_warning_until_the_use_grows(store: BalanceStore) -> None:
    """Review 13 A1: RULES.md invariant 4 allows a cap lowered below the current use (then nothing
    new is granted), but the audit reported it as a finding. Now it applies the model's tolerance:
    a warning, a finding only when the use grew since the previous audit."""
    await store.provision(Account("acme", buckets=(Bucket(1, BucketKind.MAIN, 100 * EUR),)))
    await store.provision(Account("acme-1", parent_id="acme", child_cap_micros=2 * EUR))
    await store.charge(ccr("acme-1", "call", 0, voice(requested=120)))  # 1.20 held from the pool
    assert (await store.update("acme-1", child_cap_micros=EUR)).outcome is Outcome.OK
    first = await audit(store, now_seconds=NOW)
    assert first.findings == [] and first.ok
    assert [(warning.account_id, warning.detail) for warning in first.warnings] == [
        ("acme-1", "pool used 1200000 over 1000000 (lowered), not grown since the previous audit")
    ]
    # Nothing new is granted above the cap, so the use cannot grow: the next audit agrees.
    assert only(await store.charge(ccr("acme-1", "call-2", 0, voice(requested=60))))[0] is not Outcome.OK
    second = await audit(store, now_seconds=NOW, previous=first)
    assert second.findings == [] and len(second.warnings) == 1
    # Had it grown since an earlier audit, that is a finding.
    earlier = AuditReport(usage_seen={"acme-1": (0, 900_000)})
    grown = await audit(store, now_seconds=NOW, previous=earlier)
    assert [(finding.account_id, finding.detail) for finding in grown.findings] == [
        ("acme-1", "pool used 1200000 over 1000000, grown from 900000 since the previous audit")
    ]


async def test_child_of_postpaid_company(store: BalanceStore) -> None:
    await store.provision(Account("corp", payment_type=PaymentType.POSTPAID, credit_limit_micros=EUR))
    await store.provision(Account("corp-1", parent_id="corp", child_cap_micros=5 * EUR))
    # The parent's limit (1.00) binds before the child's cap (5.00): one minute.
    assert only(await store.charge(ccr("corp-1", "call", 0, voice(requested=600)))) == (Outcome.PARTIAL, 60, 0, 0)
    await store.charge(ccr("corp-1", "call", 1, voice(used=60), terminate=True))
    parent = await store.balance("corp", NOW)
    assert parent is not None and parent.unbilled_micros == 600_000
    await assert_audit_clean(store)


# -- money held by new reservations (reserved_micros) -------------------------------------------


def reserved(result: ChargeResult) -> list[int]:
    return [item.reserved_micros for item in result.items]


async def held_now(store: BalanceStore, account_id: str) -> int:
    view = await store.balance(account_id, NOW)
    assert view is not None
    return view.held_micros + view.limit_held_micros


async def test_each_item_reports_the_money_its_new_reservation_holds(store: BalanceStore) -> None:
    await store.provision(
        Account(
            "lena",
            buckets=(
                Bucket(1, BucketKind.MAIN, 10 * EUR),
                Bucket(2, BucketKind.SECONDS, 120, ("voice",)),
                Bucket(3, BucketKind.OCTETS, 5_000_000, ("data",)),
            ),
        )
    )
    opening = ccr("lena", "s", 0, voice(requested=600), data(10, requested=5_000_000), data(20, requested=2_000_000))
    opened = await store.charge(opening)
    # Voice: 120 s of allowance, 480 s = 8 minutes of money (4.80). RG 10: all allowance. RG 20:
    # the allowance is gone, 2 MB of money (0.02).
    assert [item.granted_units for item in opened.items] == [600, 5_000_000, 2_000_000]
    assert reserved(opened) == [4_800_000, 0, 20_000]
    assert await held_now(store, "lena") == 4_820_000
    # A retransmission answers the same money and holds nothing more.
    replayed = await store.charge(opening)
    assert replayed.replayed and replayed.items == opened.items and reserved(replayed) == [4_800_000, 0, 20_000]
    assert await held_now(store, "lena") == 4_820_000
    # Commits, a release and a commit without a new request hold nothing new; the voice
    # reservation made anew is all money now (the 120 s of allowance were used).
    update = ccr(
        "lena",
        "s",
        1,
        voice(used=600, requested=60),
        ChargeItem(10, "data", Unit.OCTETS, DATA, 1_000_000, 1_000_000, release=True),
        data(20, used=1_000_000),
    )
    updated = await store.charge(update)
    assert [item.committed_micros for item in updated.items] == [4_800_000, 0, 10_000]
    assert reserved(updated) == [600_000, 0, 0]
    assert reserved(await store.charge(update)) == [600_000, 0, 0]
    assert await held_now(store, "lena") == 600_000
    end = await store.charge(ccr("lena", "s", 2, voice(used=60, requested=60), terminate=True))
    assert reserved(end) == [0] and end.items[0].committed_micros == 600_000
    assert await held_now(store, "lena") == 0
    await assert_audit_clean(store)


async def test_a_partial_grant_reports_what_the_balance_could_hold(store: BalanceStore) -> None:
    await store.provision(
        Account("mona", buckets=(Bucket(1, BucketKind.MAIN, 1_500_000), Bucket(2, BucketKind.SECONDS, 30)))
    )
    # 30 s of allowance; 1.50 affords 2 more minutes (1.20) of the 570 s left: granted 150 s.
    partial = await store.charge(ccr("mona", "a", 0, voice(requested=600)))
    assert only(partial) == (Outcome.PARTIAL, 150, 0, 0) and partial.items[0].final
    assert reserved(partial) == [1_200_000]
    # 0.30 left affords no minute: refused, nothing held.
    refused = await store.charge(ccr("mona", "b", 0, voice(requested=60)))
    assert only(refused)[0] is Outcome.INSUFFICIENT_FUNDS and reserved(refused) == [0]
    assert await held_now(store, "mona") == 1_200_000
    for session in ("a", "b"):
        await store.charge(ccr("mona", session, 1, terminate=True))
    await assert_audit_clean(store)


async def test_credit_lines_and_parent_pools_count_as_money_held(store: BalanceStore) -> None:
    await store.provision(Account("nora", payment_type=PaymentType.POSTPAID, credit_limit_micros=3 * EUR))
    await store.provision(Account("firm", buckets=(Bucket(1, BucketKind.MAIN, 100 * EUR),)))
    await store.provision(
        Account("firm-ops", parent_id="firm", child_cap_micros=EUR, buckets=(Bucket(1, BucketKind.MAIN, 200_000),))
    )
    # Postpaid: 3.00 of credit affords 5 minutes, held against the limit.
    postpaid = await store.charge(ccr("nora", "call", 0, voice(requested=600)))
    assert only(postpaid) == (Outcome.PARTIAL, 300, 0, 0) and reserved(postpaid) == [3 * EUR]
    assert await held_now(store, "nora") == 3 * EUR
    # A child: its own 0.20 and 1.00 of its parent's pool afford 2 minutes (1.20).
    child = await store.charge(ccr("firm-ops", "call", 0, voice(requested=600)))
    assert only(child) == (Outcome.PARTIAL, 120, 0, 0) and reserved(child) == [1_200_000]
    assert await held_now(store, "firm-ops") + await held_now(store, "firm") == 1_200_000
    await store.charge(ccr("nora", "call", 1, terminate=True))
    await store.charge(ccr("firm-ops", "call", 1, terminate=True))
    await assert_audit_clean(store)


async def test_a_reply_stored_before_reserved_micros_still_replays(store: BalanceStore) -> None:
    await store.provision(Account("olga", buckets=(Bucket(1, BucketKind.MAIN, EUR),)))
    # A session whose last answer was stored by the script of old: six fields per item.
    await store.admin.execute(
        "HSET", session_key("olga", "old"), "a", "olga", "n", "0", "r", "ok 400000 1 0 1 1 ok 60 0 0 0"
    )
    replayed = await store.charge(ccr("olga", "old", 0, voice(requested=60)))
    assert replayed.replayed and replayed.balance_micros == 400_000
    assert replayed.items == (ItemResult(1, Outcome.OK, 60),)
    assert parse_charge_reply("0 ok 5 1 0 2 1 ok 60 0 0 0 2 partial 9 0 0 1") == ChargeResult(
        Outcome.OK, (ItemResult(1, Outcome.OK, 60), ItemResult(2, Outcome.PARTIAL, 9, final=True)), False, 5, True
    )
    assert parse_charge_reply("0 ok 5 1 0 1 1 ok 60 0 0 0 600000").items == (
        ItemResult(1, Outcome.OK, 60, reserved_micros=600_000),
    )


# -- supervision, concurrency, failures ------------------------------------------------------


async def test_silent_session_is_expired_and_its_money_returned(store: BalanceStore) -> None:
    await store.provision(Account("hank", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    last = ccr("hank", "silent", 0, voice(requested=120), validity_seconds=60)
    answer = await store.charge(last)
    assert await money(store, "hank") == 3_800_000
    assert await store.expire("hank", NOW + 59) == []
    assert await store.expire_due(NOW + 59) == []
    assert await store.expire_due(NOW + 60) == [("hank", "silent")]
    assert await money(store, "hank") == 5 * EUR
    # The last answer still replays; anything newer finds the session closed.
    assert (await store.charge(last)).items == answer.items
    assert (await store.charge(ccr("hank", "silent", 1, voice(used=10)))).outcome is Outcome.UNKNOWN_SESSION
    await assert_audit_clean(store)


async def test_closed_sessions_live_as_long_as_the_tombstone_setting(embedded_redis: EmbeddedRedis) -> None:
    """A terminated call, an event, a refund and an expired session each leave a tombstone that
    Redis forgets after the store's ``tombstone_seconds`` (issue 17: it was a fixed hour)."""
    store = await BalanceStore.connect(embedded_redis.url, pipelined=True, tombstone_seconds=240)
    try:
        await store.flush_all()
        await store.provision(Account("tess", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
        await store.charge(ccr("tess", "call", 0, voice(requested=60)))
        await store.charge(ccr("tess", "call", 1, voice(used=30), terminate=True))
        await store.charge(ccr("tess", "sms", 0, ChargeItem(0, "sms", Unit.EVENTS, VOICE, used_units=1), event=True))
        await store.refund("tess", "refund", 0, 1_000, NOW)
        await store.charge(ccr("tess", "silent", 0, voice(requested=60), validity_seconds=60))
        assert await store.expire("tess", NOW + 60) == ["silent"]
        admin = embedded_redis.admin_client()
        lifetimes = [admin.ttl(session_key("tess", name)) for name in ("call", "sms", "refund", "silent")]
        admin.close()
        assert all(200 < seconds <= 240 for seconds in lifetimes), lifetimes
    finally:
        await store.close()


async def test_rescan_finds_the_work_a_crash_left_unmarked(store: BalanceStore) -> None:
    """A crash between a charge and its marks (separate commands) loses them: the startup
    rescan puts the hierarchy back under supervision and on the spool writer's list."""
    await store.provision(Account("jo", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    await store.charge(ccr("jo", "call", 0, voice(requested=60), validity_seconds=60))
    await store.charge(ccr("jo", "call", 1, voice(used=30, requested=60), validity_seconds=60))
    # The marks, as if never written.
    await store.admin.execute("DEL", keys.session_roots_key("jo"), keys.outbox_roots_key("jo"))
    assert await store.expire_due(NOW + 60) == [] and await store.outbox_roots() == []
    assert await store.rescan_work() == (1, 1)
    assert await store.outbox_roots() == ["jo"]
    assert await store.expire_due(NOW + 60) == [("jo", "call")]
    assert await money(store, "jo") == 5 * EUR - 600_000  # the 30 s used, rounded to a minute
    assert await store.rescan_work() == (0, 1)  # the session is closed; its record still waits
    await assert_audit_clean(store)


async def test_supervision_keeps_watching_a_hierarchy_after_closing_one_of_its_sessions(store: BalanceStore) -> None:
    """A pass that closes one session of an account must leave the account watched for its
    other sessions, and for a session whose updates moved its deadline past the first look."""
    await store.provision(Account("ivy", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    await store.charge(ccr("ivy", "first", 0, voice(requested=60), validity_seconds=60))
    await store.charge(ccr("ivy", "second", 0, voice(requested=60), validity_seconds=120))
    await store.charge(ccr("ivy", "kept", 0, voice(requested=60), validity_seconds=60))
    await store.charge(ccr("ivy", "kept", 1, voice(used=60, requested=60), validity_seconds=60, now=NOW + 50))
    assert await store.expire_due(NOW + 60) == [("ivy", "first")]
    assert await store.expire_due(NOW + 110) == [("ivy", "kept")]
    assert await store.expire_due(NOW + 120) == [("ivy", "second")]
    assert await money(store, "ivy") == 5 * EUR - 600_000  # only the minute used stays charged
    await assert_audit_clean(store)


async def test_concurrent_sessions_of_one_account_never_overspend(store: BalanceStore) -> None:
    await store.provision(Account("ivan", buckets=(Bucket(1, BucketKind.MAIN, 30 * EUR),)))
    sessions = [f"s{index}" for index in range(200)]
    grants = await asyncio.gather(*(store.charge(ccr("ivan", s, 0, voice(requested=600))) for s in sessions))
    granted = [result.items[0].granted_units for result in grants]
    # 30.00 affords 50 minutes: five full 10-minute grants, then nothing.
    assert sum(granted) == 3000
    assert await money(store, "ivan") == 0
    ends = await asyncio.gather(
        *(
            store.charge(ccr("ivan", s, 1, voice(used=g), terminate=True))
            for s, g in zip(sessions, granted, strict=True)
            if g
        )
    )
    assert sum(result.items[0].committed_micros for result in ends) == 30 * EUR
    # RULES.md "unopened": a session whose first request was refused outright was never opened.
    refused = next(s for s, g in zip(sessions, granted, strict=True) if not g)
    assert (await store.charge(ccr("ivan", refused, 1, voice(), terminate=True))).outcome is Outcome.UNKNOWN_SESSION
    await assert_audit_clean(store)


async def test_charge_arguments_that_are_not_whole_items_are_refused(
    store: BalanceStore, embedded_redis: EmbeddedRedis
) -> None:
    await store.provision(Account("kim", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    session_keys = ["{kim}:s:s", account_key("kim", "kim"), account_key("kim", "kim"), "{kim}:x", "{kim}:o"]
    header = ["kim", "s", "0", str(NOW), str(NOW + 60), "0", "0", "3600", "", "", str(10**13)]
    item = ["1", "", "voice", "seconds", "0", "60", "0", "600000 60 60 60", "", ""]
    with pytest.raises(BalanceScriptError, match="not 11 \\+ 10 per item"):
        await store.caller.run(SCRIPTS[Operation.CHARGE], session_keys, header + item[:-1])
    reply = await store.caller.run(SCRIPTS[Operation.CHARGE], session_keys, header + item)
    assert str(reply).startswith("0 ok ")  # the same arguments, whole: a reservation
    admin = embedded_redis.admin_client()
    assert admin.hget(account_key("kim", "kim"), "hd") == b"600000"
    admin.close()


async def test_a_broken_invariant_writes_nothing(store: BalanceStore, embedded_redis: EmbeddedRedis) -> None:
    await store.provision(Account("judy", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    admin = embedded_redis.admin_client()
    admin.hset(account_key("judy", "judy"), "cr", str(6 * EUR))  # corrupt: credits no longer add up
    with pytest.raises(BalanceScriptError, match="INVARIANT"):
        await store.charge(ccr("judy", "s", 0, voice(requested=60)))
    assert admin.exists("{judy}:s:s") == 0
    assert admin.hget(account_key("judy", "judy"), "q:1") == b"5000000"
    admin.close()


async def test_acknowledging_the_outbox_is_idempotent(store: BalanceStore) -> None:
    await store.provision(Account("kate", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
    for number in range(3):
        await store.charge(ccr("kate", f"call-{number}", 0, voice(used=60), event=True))
    first_two = (await store.read_outbox("kate", limit=2))[:2]
    assert await store.acknowledge_outbox("kate", first_two) == 2
    # A retried acknowledgement (or a second writer that read the same head) removes nothing more.
    assert await store.acknowledge_outbox("kate", first_two) == 0
    assert [record.session_id for record in await store.read_outbox("kate")] == ["call-2"]


class CountingCaller:
    """A real caller that counts the calls made through it."""

    def __init__(self, caller: ScriptCaller) -> None:
        self.caller = caller
        self.calls: list[str] = []

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        self.calls.append(script.operation.value)
        return await self.caller.run(script, keys, args)

    async def execute(self, *parts: str) -> Reply:
        self.calls.append(parts[0])
        return await self.caller.execute(*parts)

    async def scan_keys(self, pattern: str) -> list[str]:
        self.calls.append("SCAN")
        return await self.caller.scan_keys(pattern)

    async def close(self) -> None:
        await self.caller.close()


async def test_charging_and_draining_the_outbox_use_only_the_hot_path_caller(embedded_redis: EmbeddedRedis) -> None:
    """Work that grows with the traffic (charges, the hierarchy lookup of an account not yet
    seen, the spool's reads and trims) stays off the admin client (redis-py in the server)."""
    connected = await BalanceStore.connect(embedded_redis.url, pipelined=True)
    await connected.flush_all()
    await connected.provision(Account("lena", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
    hot, admin = CountingCaller(connected.caller), CountingCaller(connected.admin)
    store = BalanceStore(hot, admin=admin)  # a fresh store: no hierarchy cached yet
    try:
        assert only(await store.charge(ccr("lena", "call-1", 0, voice(requested=60)))) == (Outcome.OK, 60, 0, 0)
        end = await store.charge(ccr("lena", "call-1", 1, voice(used=60), terminate=True))
        assert only(end)[:3] == (Outcome.OK, 0, 60)
        assert await store.outbox_roots() == ["lena"]
        records = await store.read_outbox("lena")
        assert [record.units for record in records] == [60]
        assert await store.acknowledge_outbox("lena", records) == 1
        await store.prune_outbox_root("lena")
        assert await store.outbox_roots() == []
        assert admin.calls == []
        every_shard = ("SMEMBERS",) * keys.WORK_SHARDS  # the spool writer's list, read shard by shard
        assert hot.calls == [
            *("GET", "charge", "ZADD", "charge", "SADD"),
            *(*every_shard, "LRANGE", "ack", "SREM", "LLEN", *every_shard),
        ]
        assert hot.calls.count("GET") == 1  # the hierarchy is looked up once, then cached
    finally:
        await connected.close()


# -- tariff change (RULES.md "Tariff change") -----------------------------------------------------

PEAK_VOICE = Tariff(price_micros=40_000, per_units=60, block_units=60, first_units=60)  # 0.04 a minute
SWITCH = NOW + 60  # the band changes a minute after the grant: 0.02 a minute from then on
TO_OFF_PEAK = TariffChange(SWITCH, 20_000)


def across(
    used: int = 0, requested: int = 0, *, split: UsageSplit | None = None, unit: Unit = Unit.SECONDS
) -> ChargeItem:
    return ChargeItem(
        1,
        "voice",
        unit,
        PEAK_VOICE,
        used,
        requested,
        tariff_change=TO_OFF_PEAK if requested else None,
        used_split=split,
    )


@pytest.mark.parametrize(
    ("split", "reported_at", "micros"),
    [
        # 60 s before (one minute at 0.04) and 45 s after (charged as 60: one minute at 0.02).
        (UsageSplit(60, 45, 0), NOW + 110, 60_000),
        # Not itemised, seconds: used continuously from the grant, so the first 60 s are before.
        (None, NOW + 110, 60_000),
        # Straddling units are priced at the dearer side, here before: 75 s at 0.04 (50,000), then
        # 30 s after, charged with the rounding as 45 s at 0.02 (15,000); all 105 s as 120.
        (UsageSplit(30, 30, 45), NOW + 110, 65_000),
        # Not itemised but reported by the switch: all before.
        (None, SWITCH, 80_000),
    ],
)
async def test_usage_across_a_tariff_change_is_priced_on_each_side(
    store: BalanceStore, split: UsageSplit | None, reported_at: int, micros: int
) -> None:
    await store.provision(Account("tess", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
    opened = await store.charge(ccr("tess", "tc", 0, across(requested=120)))
    # The grant is priced at the dearer side: two minutes at 0.04, whatever the client reports.
    assert only(opened) == (Outcome.OK, 120, 0, 0) and opened.items[0].reserved_micros == 80_000
    ended = await store.charge(ccr("tess", "tc", 1, across(105, split=split), now=reported_at, terminate=True))
    assert only(ended) == (Outcome.OK, 0, 105, micros)
    assert await money(store, "tess") == 10 * EUR - micros
    await assert_audit_clean(store)


async def test_octets_not_itemised_after_a_change_are_priced_at_the_dearer_side(store: BalanceStore) -> None:
    await store.provision(Account("ugo", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
    cheap_then_dear = TariffChange(SWITCH, 20_000)  # 0.01 per MB, then 0.02
    opening = ChargeItem(3, "data", Unit.OCTETS, DATA, requested_units=5_000_000, tariff_change=cheap_then_dear)
    assert (await store.charge(ccr("ugo", "td", 0, opening))).items[0].reserved_micros == 100_000
    used = ChargeItem(3, "data", Unit.OCTETS, DATA, used_units=2_000_000)  # reported after the switch
    ended = await store.charge(ccr("ugo", "td", 1, used, now=SWITCH + 1, terminate=True))
    assert only(ended) == (Outcome.OK, 0, 2_000_000, 40_000)
    await assert_audit_clean(store)


async def test_a_change_that_is_not_ahead_or_a_split_that_does_not_add_up_is_refused(store: BalanceStore) -> None:
    await store.provision(Account("vic", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
    past = ChargeItem(1, "voice", Unit.SECONDS, PEAK_VOICE, requested_units=60, tariff_change=TariffChange(NOW, 1))
    assert (await store.charge(ccr("vic", "r1", 0, past))).outcome is Outcome.INVALID
    short = across(100, split=UsageSplit(60, 30, 0))
    assert (await store.charge(ccr("vic", "r2", 0, short, event=True))).outcome is Outcome.INVALID


async def test_a_charge_whose_marks_fail_stands_and_the_rescan_finds_its_work(store: BalanceStore) -> None:
    """The script applied, then the marks failed: the charge is answered as applied (an error
    here was answered 3004 for an SMS that was debited), and ``marks_lost`` calls for the rescan
    that puts the hierarchy back on both work lists."""
    caller, admin = LosesMarks(store.caller), LosesMarks(store.admin)
    losing = BalanceStore(caller, admin=admin)
    await losing.provision(Account("lou", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    opened = await losing.charge(ccr("lou", "call", 0, voice(used=60, requested=60), validity_seconds=60))
    sms = ChargeItem(0, "sms", Unit.EVENTS, Tariff(price_micros=90_000), used_units=1)
    event = await losing.charge(ccr("lou", "sms", 0, sms, event=True))
    assert only(opened) == (Outcome.OK, 60, 60, 600_000) and only(event) == (Outcome.OK, 0, 1, 90_000)
    assert await money(store, "lou") == 5 * EUR - 600_000 - 600_000 - 90_000  # used, held, the SMS
    assert losing.marks_lost
    assert await store.outbox_roots() == [] and await store.expire_due(NOW + 60) == []
    # Still failing: the rescan fails too and the flag stays up for the next pass.
    with pytest.raises(BalanceUnavailable):
        await losing.rescan_work()
    assert losing.marks_lost
    caller.losing = admin.losing = False
    assert await losing.rescan_work() == (1, 1) and not losing.marks_lost
    assert await store.outbox_roots() == ["lou"]
    assert await store.expire_due(NOW + 60) == [("lou", "call")]


@pytest.mark.parametrize("depth", [1, 2, 3])
async def test_on_one_redis_the_charge_marks_its_work_lists_in_the_same_call(store: BalanceStore, depth: int) -> None:
    """On a single Redis (``marks_in_charge``, as ``connect`` sets it) the charge script puts the
    hierarchy's root on both work lists itself: no separate mark to lose (``LosesMarks`` fails
    every one), whatever the depth of the hierarchy, and a replay marks again (its first call's
    marks may have been lost with the reply, on a cluster)."""
    assert store.marks_in_charge
    caller, admin = LosesMarks(store.caller), LosesMarks(store.admin)
    marking = BalanceStore(caller, admin=admin, marks_in_charge=True)
    names = ["top", "mid", "line"][-depth:]
    parent = ""
    for name in names:
        funds = (Bucket(1, BucketKind.MAIN, 5 * EUR),) if name == names[-1] else ()
        prepaid = Account(name, parent_id=parent, buckets=funds) if parent else Account(name, buckets=funds)
        assert (await store.provision(prepaid)).outcome is Outcome.OK
        parent = name
    root, line = names[0], names[-1]
    opened = await marking.charge(ccr(line, "call", 0, voice(used=60, requested=60), validity_seconds=60))
    assert opened.outcome is Outcome.OK and not marking.marks_lost
    assert await store.outbox_roots() == [root]
    assert await store.expire_due(NOW + 60) == [(root, "call")]
    await store.admin.execute("DEL", keys.session_roots_key(root), keys.outbox_roots_key(root))
    replayed = await marking.charge(ccr(line, "call", 0, voice(used=60, requested=60), validity_seconds=60))
    assert replayed.replayed and await store.outbox_roots() == [root]


async def test_a_refused_usage_report_commits_the_reservation_in_full(store: BalanceStore) -> None:
    """RULES.md "Refused usage": every unit the reservation granted, from allowances first, one
    usage record; nothing without a reservation, and nothing reserved anew."""
    allowance = Bucket(2, BucketKind.OCTETS, 400_000, ("data",))
    await store.provision(Account("rex", buckets=(Bucket(1, BucketKind.MAIN, EUR), allowance)))
    assert only(await store.charge(ccr("rex", "pdp", 0, data(10, requested=2_000_000)))) == (
        Outcome.OK,
        2_000_000,
        0,
        0,
    )
    refused = replace(data(10), commit_reserved=True)
    settled = await store.charge(ccr("rex", "pdp", 1, refused))
    # 400 kB of allowance, 1.6 MB priced: 2 MB at 0.01 (rounded up to MB).
    assert only(settled) == (Outcome.OK, 0, 2_000_000, 20_000)
    assert await money(store, "rex") == EUR - 20_000
    assert [(record.units, record.micros) for record in await store.usage_records()] == [(2_000_000, 20_000)]
    # No reservation left: the next refused report commits nothing.
    assert only(await store.charge(ccr("rex", "pdp", 2, refused, terminate=True))) == (Outcome.OK, 0, 0, 0)
    assert await money(store, "rex") == EUR - 20_000 and len(await store.usage_records()) == 1
    # Used or requested units beside it, and events, are refused.
    for item in (replace(refused, used_units=1), replace(refused, requested_units=1)):
        assert (await store.charge(ccr("rex", "other", 0, item))).outcome is Outcome.INVALID
    assert (await store.charge(ccr("rex", "event", 0, refused, event=True))).outcome is Outcome.INVALID
    await assert_audit_clean(store)


class PausesAfterUnlisting:
    """The store's real caller, except that it holds after the spool writer's unlisting (SREM
    on the outbox list) until ``go`` is set: the moment a writer can be cancelled."""

    def __init__(self, inner: ScriptCaller) -> None:
        self.inner = inner
        self.unlisted = asyncio.Event()
        self.go = asyncio.Event()

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        return await self.inner.run(script, keys, args)

    async def execute(self, *parts: str) -> Reply:
        reply = await self.inner.execute(*parts)
        if parts[0] == "SREM":
            self.unlisted.set()
            await self.go.wait()
        return reply

    async def scan_keys(self, pattern: str) -> list[str]:
        return await self.inner.scan_keys(pattern)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_writer_cancelled_while_unlisting_leaves_a_hierarchy_with_records_listed(store: BalanceStore) -> None:
    """Cancelled between taking the hierarchy off the list and the second look (a record came
    in meanwhile), the unlisting still finishes its look: the record's hierarchy stays listed for
    the final drain instead of waiting for the next rescan."""
    assert (await store.provision(Account("ann", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))).outcome is Outcome.OK
    assert (await store.charge(ccr("ann", "call", 0, voice(used=60, requested=60)))).outcome is Outcome.OK
    assert await store.outbox_roots() == ["ann"]
    caller = PausesAfterUnlisting(store.caller)
    pausing = BalanceStore(caller, admin=store.admin, marks_in_charge=True)
    unlisting = asyncio.create_task(pausing.prune_outbox_root("ann"))
    await caller.unlisted.wait()
    unlisting.cancel()
    await asyncio.sleep(0)
    caller.go.set()
    with pytest.raises(asyncio.CancelledError):
        await unlisting
    assert await store.outbox_roots() == ["ann"]
