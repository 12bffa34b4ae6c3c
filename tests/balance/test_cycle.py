"""The billing cycle's operations on a real Redis (RULES.md "The billing cycle"): the usage cut,
the prepaid rental debit and the bundle renewal; each refusal, each replay, the 5-level company
tree, and the audit's ledger identity after cuts. Every store here runs on both callers and on
the EVAL scripts as well as the function library (tests/balance/test_store.py's ``store``).
"""

from __future__ import annotations

from balance import cycle
from balance.store import BalanceStore
from balance.types import (
    Account,
    AccountStatus,
    BalanceView,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    Outcome,
    PaymentType,
    PoolDraw,
    RentalPolicy,
    Tariff,
    Unit,
    UsageRecord,
)
from tests.balance.test_hierarchy import BRANCH, DEPARTMENT, GROUP, LINE, TEAM, TREE
from tests.balance.test_store import EUR, NOW, assert_audit_clean, store  # noqa: F401 (store: a fixture)

EVENT = Tariff(price_micros=EUR)
POSTPAID = Account("post", payment_type=PaymentType.POSTPAID, credit_limit_micros=3 * EUR)


def events(account_id: str, session_id: str, count: int) -> ChargeRequest:
    return ChargeRequest(
        account_id, session_id, 0, (ChargeItem(1, "sms", Unit.EVENTS, EVENT, used_units=count),), NOW, event=True
    )


async def view(balance_store: BalanceStore, account_id: str) -> BalanceView:
    found = await balance_store.balance(account_id, NOW)
    assert found is not None
    return found


def sources(records: list[UsageRecord]) -> tuple[int, dict[int, tuple[int, int]]]:
    """What the records drew from the own credit line, and per ancestor level (buckets, line)."""
    line, pools = 0, dict[int, tuple[int, int]]()
    for record in records:
        line += record.line_micros
        for pool in record.pools:
            bucket, from_line = pools.get(pool.level, (0, 0))
            pools[pool.level] = (bucket + pool.bucket_micros, from_line + pool.line_micros)
    return line, pools


# -- the usage cut ---------------------------------------------------------------------------


async def test_a_cut_gives_a_postpaid_line_its_credit_back(store: BalanceStore) -> None:  # noqa: F811
    assert (await store.provision(POSTPAID)).outcome is Outcome.OK
    assert (await store.charge(events("post", "e1", 3))).items[0].outcome is Outcome.OK
    assert (await store.charge(events("post", "e2", 1))).items[0].outcome is Outcome.INSUFFICIENT_FUNDS  # 4012
    records = await store.usage_records()
    assert [(record.line_micros, record.pools) for record in records] == [(3 * EUR, ())]
    # Usage goes on during the bill run: the cut takes off what the invoice covers, not all.
    assert (await cycle.cut(store, "post", "inv-1", 2 * EUR)).applied_micros == 2 * EUR
    after = await view(store, "post")
    assert (after.unbilled_micros, after.billed_micros, after.available_micros) == (EUR, 2 * EUR, 2 * EUR)
    assert (await store.charge(events("post", "e3", 2))).items[0].outcome is Outcome.OK
    await assert_audit_clean(store)


async def test_a_cut_id_applies_once(store: BalanceStore) -> None:  # noqa: F811
    await store.provision(POSTPAID)
    await store.charge(events("post", "e1", 3))
    first = await cycle.cut(store, "post", "inv-1", EUR)
    again = await cycle.cut(store, "post", "inv-1", 2 * EUR)  # a conflicting reuse shows in applied_micros
    assert (first.outcome, first.replayed, again.outcome, again.replayed) == (Outcome.OK, False, Outcome.OK, True)
    assert again.applied_micros == EUR
    assert (await view(store, "post")).unbilled_micros == 2 * EUR


async def test_cut_refusals_change_nothing(store: BalanceStore) -> None:  # noqa: F811
    await store.provision(POSTPAID)
    await store.provision(Account("pre", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    await store.charge(events("post", "e1", 2))
    await store.charge(events("pre", "e2", 2))
    before = (await view(store, "post"), await view(store, "pre"))
    assert (await cycle.cut(store, "nobody", "inv-1", EUR)).outcome is Outcome.UNKNOWN_ACCOUNT
    refusals = {
        "line_micros": await cycle.cut(store, "post", "inv-1", 2 * EUR + 1),  # more than unbilled
        "line_micros ": await cycle.cut(store, "pre", "inv-2", EUR),  # not postpaid
        "line_micros  ": await cycle.cut(store, "post", "inv-3", -1),
        "pools": await cycle.cut(store, "post", "inv-4", 0, (PoolDraw(1, EUR),)),  # a root has no ancestor
    }
    for field, result in refusals.items():
        assert result.outcome is Outcome.INVALID, field
        assert result.reason.startswith(field.strip()), result.reason
    assert (await view(store, "post"), await view(store, "pre")) == before
    # A refusal keeps no id: the same invoice's cut, once right, applies.
    assert (await cycle.cut(store, "post", "inv-1", 2 * EUR)).replayed is False
    assert (await view(store, "post")).unbilled_micros == 0


async def test_a_cut_through_five_levels_frees_every_cap_on_the_way(store: BalanceStore) -> None:  # noqa: F811
    """RULES.md's worked example: the line draws 1.00 of its own, 5.00 from the department's
    credit line and 5.00 from the group's main bucket; the cut of what its records say gives
    every cap on the path its room back and the department its credit."""
    for account in TREE:
        assert (await store.provision(account)).outcome is Outcome.OK
    assert (await store.charge(events(LINE, "e1", 11))).items[0].committed_units == 11
    line, pools = sources(await store.usage_records())
    assert (line, pools) == (0, {2: (0, 5 * EUR), 4: (5 * EUR, 0)})  # department: 2 up, group: 4 up
    assert (await store.charge(events(LINE, "e2", 1))).items[0].outcome is Outcome.INSUFFICIENT_FUNDS
    # Over what the line committed from a pool, or on a pool that is not a credit line: refused.
    too_much = await cycle.cut(store, LINE, "inv-1", 0, (PoolDraw(2, 0, 5 * EUR + 1),))
    not_a_line = await cycle.cut(store, LINE, "inv-1", 0, (PoolDraw(4, 0, EUR),))
    assert (too_much.outcome, not_a_line.outcome) == (Outcome.INVALID, Outcome.INVALID)
    assert not_a_line.reason.startswith("pools: level 4 line_micros"), not_a_line.reason
    cut = await cycle.cut(store, LINE, "inv-1", 0, tuple(PoolDraw(level, *parts) for level, parts in pools.items()))
    assert (cut.outcome, cut.applied_micros) == (Outcome.OK, 10 * EUR)
    pool_used = {node: (await view(store, node)).pool_used_micros for node in (LINE, TEAM, DEPARTMENT, BRANCH)}
    assert pool_used == {LINE: 0, TEAM: 0, DEPARTMENT: 0, BRANCH: 0}
    department = await view(store, DEPARTMENT)
    assert (department.unbilled_micros, department.billed_micros) == (0, 5 * EUR)
    assert (await view(store, LINE)).pool_drawn_micros == (0, 0, 0, 0)
    # The line has its caps back: 10.00 more from above (5.00 of the department, 5.00 of the group).
    assert (await view(store, LINE)).available_micros == 10 * EUR
    await assert_audit_clean(store)


async def test_a_cut_never_takes_what_a_live_session_holds(store: BalanceStore) -> None:  # noqa: F811
    for account in TREE:
        await store.provision(account)
    await store.charge(events(LINE, "e1", 3))  # 1.00 own, 2.00 from the department's line
    held = ChargeRequest(LINE, "s1", 0, (ChargeItem(1, "sms", Unit.EVENTS, EVENT, requested_units=2),), NOW)
    assert (await store.charge(held)).items[0].granted_units == 2  # 2.00 more held on the department
    assert (await view(store, LINE)).pool_used_micros == 4 * EUR
    refused = await cycle.cut(store, LINE, "inv-1", 0, (PoolDraw(2, 0, 3 * EUR),))
    assert refused.outcome is Outcome.INVALID
    assert (await cycle.cut(store, LINE, "inv-1", 0, (PoolDraw(2, 0, 2 * EUR),))).outcome is Outcome.OK
    ended = ChargeRequest(LINE, "s1", 1, (ChargeItem(1, "sms", Unit.EVENTS, EVENT, used_units=1),), NOW, terminate=True)
    assert (await store.charge(ended)).items[0].committed_units == 1
    assert (await view(store, LINE)).pool_used_micros == EUR
    await assert_audit_clean(store)


# -- the prepaid rental ------------------------------------------------------------------------


async def test_a_rental_with_restrict_debits_only_what_main_money_covers(store: BalanceStore) -> None:  # noqa: F811
    await store.provision(Account("pre", buckets=(Bucket(1, BucketKind.MAIN, 5 * EUR),)))
    paid = await cycle.debit_rental(store, "pre", "2027-01", 4 * EUR, RentalPolicy.RESTRICT)
    assert (paid.outcome, paid.applied_micros) == (Outcome.OK, 4 * EUR)
    refused = await cycle.debit_rental(store, "pre", "2027-02", 4 * EUR, RentalPolicy.RESTRICT)
    assert refused.outcome is Outcome.INSUFFICIENT_FUNDS
    assert (await view(store, "pre")).account.buckets[0].amount == EUR
    replay = await cycle.debit_rental(store, "pre", "2027-01", 4 * EUR, RentalPolicy.RESTRICT)
    assert (replay.outcome, replay.replayed, replay.applied_micros) == (Outcome.OK, True, 4 * EUR)
    await store.top_up("pre", "t1", 3 * EUR)
    assert (await cycle.debit_rental(store, "pre", "2027-02", 4 * EUR, RentalPolicy.RESTRICT)).outcome is Outcome.OK
    assert (await view(store, "pre")).account.buckets[0].amount == 0
    await assert_audit_clean(store)


async def test_a_rental_with_allow_negative_goes_below_zero_by_at_most_the_rental(store: BalanceStore) -> None:  # noqa: F811
    await store.provision(Account("pre", buckets=(Bucket(1, BucketKind.MAIN, EUR),)))
    assert (await cycle.debit_rental(store, "pre", "r1", 3 * EUR, RentalPolicy.ALLOW_NEGATIVE)).outcome is Outcome.OK
    after = await view(store, "pre")
    assert (after.account.buckets[0].amount, after.main_floor_micros, after.available_micros) == (-2 * EUR, 3 * EUR, 0)
    # One unpaid rental at a time: the next is refused while the bucket is below 0.
    second = await cycle.debit_rental(store, "pre", "r2", EUR, RentalPolicy.ALLOW_NEGATIVE)
    assert second.outcome is Outcome.INSUFFICIENT_FUNDS
    assert (await store.charge(events("pre", "e1", 1))).items[0].outcome is Outcome.INSUFFICIENT_FUNDS
    # A credit smaller than the debt pays part of it down: top-ups and adjustments are taken.
    assert (await store.top_up("pre", "t1", EUR)).outcome is Outcome.OK
    assert (await store.adjust("pre", "j1", EUR)).outcome is Outcome.OK
    assert (await view(store, "pre")).account.buckets[0].amount == 0
    await store.top_up("pre", "t2", EUR)
    assert (await view(store, "pre")).account.buckets[0].amount == EUR
    await assert_audit_clean(store)


async def test_rental_refusals(store: BalanceStore) -> None:  # noqa: F811
    await store.provision(Account("gone", status=AccountStatus.TERMINATED, buckets=(Bucket(1, BucketKind.MAIN, EUR),)))
    await store.provision(Account("empty"))
    restrict, negative = RentalPolicy.RESTRICT, RentalPolicy.ALLOW_NEGATIVE
    assert (await cycle.debit_rental(store, "nobody", "r1", EUR, restrict)).outcome is Outcome.UNKNOWN_ACCOUNT
    assert (await cycle.debit_rental(store, "gone", "r1", EUR, restrict)).outcome is Outcome.ACCOUNT_BLOCKED
    zero = await cycle.debit_rental(store, "gone", "r1", 0, restrict)
    assert (zero.outcome, zero.reason.split(":")[0]) == (Outcome.INVALID, "micros")
    assert (await cycle.debit_rental(store, "empty", "r1", EUR, restrict)).outcome is Outcome.INSUFFICIENT_FUNDS
    assert (await view(store, "empty")).account.buckets == ()
    made = await cycle.debit_rental(store, "empty", "r1", EUR, negative)  # no main bucket: made, below 0
    assert (made.outcome, (await view(store, "empty")).account.buckets[0].amount) == (Outcome.OK, -EUR)


# -- bundle renewal ----------------------------------------------------------------------------


async def renew(
    balance_store: BalanceStore, account_id: str, renewal_id: str, units: int, cap: int
) -> tuple[Outcome, int, int]:
    result = await cycle.renew_bundle(
        balance_store, account_id, "voice-100", BucketKind.SECONDS, units, ("voice",), 0, cap, renewal_id
    )
    return result.outcome, result.bucket_id, result.applied_units or 0


def call(number: int, used: int = 0, requested: int = 0, terminate: bool = False) -> ChargeRequest:
    item = ChargeItem(1, "voice", Unit.SECONDS, EVENT, used_units=used, requested_units=requested)
    return ChargeRequest("pre", "s1", number, (item,), NOW, terminate=terminate)


async def test_a_bundle_renews_in_place_with_rollover_up_to_its_cap(store: BalanceStore) -> None:  # noqa: F811
    await store.provision(Account("pre", buckets=(Bucket(1, BucketKind.MAIN, EUR),)))
    assert await renew(store, "pre", "2027-01", 600, 100) == (Outcome.OK, 2, 600)
    await store.charge(
        ChargeRequest("pre", "e1", 0, (ChargeItem(1, "voice", Unit.SECONDS, EVENT, 400),), NOW, event=True)
    )
    assert await renew(store, "pre", "2027-02", 600, 100) == (Outcome.OK, 2, 700)  # 200 left, 100 roll over
    assert await renew(store, "pre", "2027-02", 999, 999) == (Outcome.OK, 2, 700)  # a replay
    assert (await cycle.renew_bundle(store, "pre", "voice-100", BucketKind.SECONDS, 1, (), 0, 0, "2027-02")).replayed
    assert await renew(store, "pre", "2027-03", 600, 0) == (Outcome.OK, 2, 600)  # no rollover
    wrong = await cycle.renew_bundle(store, "pre", "voice-100", BucketKind.OCTETS, 1, (), 0, 0, "2027-04")
    assert (wrong.outcome, wrong.reason.split(":")[0]) == (Outcome.INVALID, "kind")
    money = await cycle.renew_bundle(store, "pre", "cash", BucketKind.MAIN, 1, (), 0, 0, "2027-04")
    assert (money.outcome, money.reason.split(":")[0]) == (Outcome.INVALID, "kind")
    assert await renew(store, "nobody", "2027-04", 1, 0) == (Outcome.UNKNOWN_ACCOUNT, 0, 0)
    assert [bucket.amount for bucket in (await view(store, "pre")).account.buckets] == [EUR, 600]


async def test_units_held_by_a_live_session_survive_a_renewal(store: BalanceStore) -> None:  # noqa: F811
    await store.provision(Account("pre"))
    await renew(store, "pre", "2027-01", 300, 1_000)
    assert (await store.charge(call(0, requested=200))).items[0].granted_units == 200  # 200 held, 100 left
    assert await renew(store, "pre", "2027-02", 300, 50) == (Outcome.OK, 1, 350)  # 50 of the free 100 roll over
    # The session goes on with its grant: it uses 150 of the 200 held; 50 come back into the bucket.
    ended = await store.charge(call(1, used=150, terminate=True))
    assert (ended.items[0].committed_units, ended.items[0].committed_micros) == (150, 0)
    assert [bucket.amount for bucket in (await view(store, "pre")).account.buckets] == [400]
    await assert_audit_clean(store)


# -- the ledger identity -------------------------------------------------------------------------


async def test_the_audit_ties_out_after_cuts(store: BalanceStore) -> None:  # noqa: F811
    """sum(committed) = sum(debits) + sum(unbilled) + sum(billed): without billed it breaks."""
    for account in TREE:
        await store.provision(account)
    await store.charge(events(LINE, "e1", 11))
    line, pools = sources(await store.usage_records())
    await cycle.cut(store, LINE, "inv-1", line, tuple(PoolDraw(level, *parts) for level, parts in pools.items()))
    assert (await view(store, GROUP)).debits_micros == 5 * EUR
    await assert_audit_clean(store)


async def test_cut_many_answers_as_cut_does_and_keeps_no_chain(store: BalanceStore) -> None:  # noqa: F811
    """The bill run's bulk cuts: the five-level line's pools, a root line, a replay, an unknown
    account and a refusal, answered in order in one call; the chains it read are not kept."""
    for account in (*TREE, POSTPAID):
        assert (await store.provision(account)).outcome is Outcome.OK
    await store.charge(events(LINE, "e1", 11))
    await store.charge(events("post", "e2", 3))
    _, pools = sources([record for record in await store.usage_records() if record.account_id == LINE])
    fresh = BalanceStore(store.caller, admin=store.admin)  # nothing cached
    orders = [
        cycle.CutOrder(LINE, "inv-1", 0, tuple(PoolDraw(level, *parts) for level, parts in sorted(pools.items()))),
        cycle.CutOrder("post", "inv-2", 2 * EUR),
        cycle.CutOrder("post", "inv-2", 2 * EUR),  # the same id again: a replay
        cycle.CutOrder("nobody", "inv-3", EUR),
        cycle.CutOrder("post", "inv-4", 2 * EUR),  # more than is left unbilled: refused
    ]
    answers = await cycle.cut_many(fresh, orders)
    assert [(answer.outcome, answer.replayed, answer.applied_micros) for answer in answers[:4]] == [
        (Outcome.OK, False, 10 * EUR),
        (Outcome.OK, False, 2 * EUR),
        (Outcome.OK, True, 2 * EUR),
        (Outcome.UNKNOWN_ACCOUNT, False, None),
    ]
    assert (answers[4].outcome, answers[4].reason.split(" ")[0]) == (Outcome.INVALID, "line_micros:")
    assert (await view(store, LINE)).available_micros == 10 * EUR
    assert (await view(store, "post")).unbilled_micros == EUR
    assert (fresh._hierarchies, fresh._ancestors) == ({}, {})
    await assert_audit_clean(store)
