"""Company money (RULES.md "Company money"): a customer tree of up to MAX_HIERARCHY_LEVELS levels,
on a private real Redis and on the reference model, with the worked example of RULES.md.

The tree: a group (the root, 100.00 in its main bucket), a branch capped at 30.00 without money,
a postpaid department capped at 20.00 with a 5.00 credit line, a team capped at 12.00 without
money, and a line capped at 10.00 with 1.00 of its own; a second line right under the branch,
capped at 100.00. Events cost 1.00 each.
"""

from __future__ import annotations

import re
from pathlib import Path

from balance.model import ReferenceModel
from balance.store import BalanceStore
from balance.types import (
    MAX_HIERARCHY_LEVELS,
    Account,
    AccountStatus,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    ChargeResult,
    Outcome,
    PaymentType,
    Tariff,
    Unit,
)
from tests.balance.test_store import EUR, NOW, assert_audit_clean, store  # noqa: F401 (store: a fixture)

EVENT = Tariff(price_micros=EUR)
LINE, TEAM, DEPARTMENT, BRANCH, GROUP, BRANCH_LINE = "g.b.d.t.l", "g.b.d.t", "g.b.d", "g.b", "g", "g.b.l"
TREE = (
    Account(GROUP, buckets=(Bucket(1, BucketKind.MAIN, 100 * EUR),)),
    Account(BRANCH, parent_id=GROUP, child_cap_micros=30 * EUR),
    Account(
        DEPARTMENT,
        parent_id=BRANCH,
        child_cap_micros=20 * EUR,
        payment_type=PaymentType.POSTPAID,
        credit_limit_micros=5 * EUR,
    ),
    Account(TEAM, parent_id=DEPARTMENT, child_cap_micros=12 * EUR),
    Account(LINE, parent_id=TEAM, child_cap_micros=10 * EUR, buckets=(Bucket(1, BucketKind.MAIN, EUR),)),
    Account(BRANCH_LINE, parent_id=BRANCH, child_cap_micros=100 * EUR),
)


def reserve(account_id: str, session_id: str, events: int) -> ChargeRequest:
    return ChargeRequest(account_id, session_id, 0, (ChargeItem(1, "sms", Unit.EVENTS, EVENT, 0, events),), NOW)


def granted(result: ChargeResult) -> tuple[Outcome, int, int]:
    (item,) = result.items
    return item.outcome, item.granted_units, item.reserved_micros


def test_lua_and_python_name_the_same_depth_bound() -> None:
    library = (Path(__file__).parents[2] / "balance" / "lua" / "lib.lua").read_text()
    found = re.search(r"^local MAX_LEVELS = (\d+)$", library, re.MULTILINE)
    assert found is not None and int(found.group(1)) == MAX_HIERARCHY_LEVELS


async def test_the_worked_example_draws_up_the_tree_within_every_cap(store: BalanceStore) -> None:  # noqa: F811
    model = ReferenceModel()
    for account in TREE:
        assert (await store.provision(account)).outcome is model.provision(account).outcome is Outcome.OK
    # 20 events wanted: 1.00 own, the team has nothing, 5.00 from the department's credit line
    # (within the line's 10.00 and the team's 12.00), the branch has nothing, 5.00 from the group
    # (the line's cap has 5.00 left): 11 events, final.
    deep = await store.charge(reserve(LINE, "s1", 20))
    assert deep == model.charge(reserve(LINE, "s1", 20))
    assert granted(deep) == (Outcome.PARTIAL, 11, 11 * EUR)
    pools_used = {account_id: 0 for account_id in (LINE, TEAM, DEPARTMENT, BRANCH, GROUP)}
    pools_used.update({LINE: 10 * EUR, TEAM: 10 * EUR, DEPARTMENT: 5 * EUR, BRANCH: 5 * EUR})
    for account_id, pool_used in pools_used.items():
        view = await store.balance(account_id, NOW)
        assert view is not None and view == model.balance(account_id, NOW)
        assert view.pool_used_micros == pool_used, account_id
    # The branch's cap binds the other line: 30.00 - 5.00 already drawn from above the branch.
    wide = await store.charge(reserve(BRANCH_LINE, "s2", 40))
    assert wide == model.charge(reserve(BRANCH_LINE, "s2", 40))
    assert granted(wide) == (Outcome.PARTIAL, 25, 25 * EUR)
    # A cap lowered in the middle stops new grants below it; raised, it lets them through again.
    assert (await store.update(TEAM, child_cap_micros=10 * EUR)).outcome is Outcome.OK
    model.update(TEAM, child_cap_micros=10 * EUR)
    assert (await store.balance(LINE, NOW)) == model.balance(LINE, NOW)
    # Ending the sessions gives every pool back, all the way up.
    for account_id, session_id in ((LINE, "s1"), (BRANCH_LINE, "s2")):
        end = ChargeRequest(account_id, session_id, 1, (), NOW, terminate=True)
        assert await store.charge(end) == model.charge(end)
    for account_id in pools_used:
        view = await store.balance(account_id, NOW)
        assert view is not None and view == model.balance(account_id, NOW)
        assert view.pool_used_micros == view.limit_held_micros == view.held_micros == 0
    await assert_audit_clean(store)


async def test_a_tree_deeper_than_the_bound_is_refused_with_a_reason(store: BalanceStore) -> None:  # noqa: F811
    for account in TREE:
        await store.provision(account)
    too_deep = await store.provision(Account("g.b.d.t.l.x", parent_id=LINE, child_cap_micros=EUR))
    assert too_deep.outcome is Outcome.INVALID
    assert "parent_id" in too_deep.reason and str(MAX_HIERARCHY_LEVELS) in too_deep.reason
    assert await store.balance("g.b.d.t.l.x", NOW) is None
    assert (await store.provision(Account("g.b.d.x", currency="USD", parent_id=DEPARTMENT))).outcome is Outcome.INVALID
    # The refused ids are free again (their lookups were taken back).
    assert (await store.provision(Account("g.b.d.t.l.x"))).outcome is Outcome.OK


async def test_expiry_returns_a_deep_lines_holds_to_every_pool(store: BalanceStore) -> None:  # noqa: F811
    for account in TREE:
        await store.provision(account)
    request = ChargeRequest(LINE, "s1", 0, (ChargeItem(1, "sms", Unit.EVENTS, EVENT, 0, 8),), NOW, 30)
    assert granted(await store.charge(request)) == (Outcome.OK, 8, 8 * EUR)
    assert await store.expire(GROUP, NOW + 30) == ["s1"]
    for account_id in (LINE, TEAM, DEPARTMENT, BRANCH, GROUP):
        view = await store.balance(account_id, NOW)
        assert view is not None and view.pool_used_micros == view.limit_held_micros == view.held_micros == 0
    await assert_audit_clean(store)


async def test_a_node_status_holds_for_every_account_under_it(store: BalanceStore) -> None:  # noqa: F811
    """RULES.md "Effective status": a line counts as the worst of its own status and its ancestors',
    so a node's change needs no copy onto its lines (review 13 L1, L2): under a barred node a line
    still marked active opens nothing; under a suspended one it gets no reservation; a line barred
    on its own stays barred once its node is active again."""
    model = ReferenceModel()
    for account in TREE:
        assert (await store.provision(account)).outcome is model.provision(account).outcome is Outcome.OK

    async def both(request: ChargeRequest) -> ChargeResult:
        result = await store.charge(request)
        assert result == model.charge(request)
        return result

    async def set_status(account_id: str, status: AccountStatus) -> None:
        assert (await store.update(account_id, status=status)).outcome is Outcome.OK
        assert model.update(account_id, status=status).outcome is Outcome.OK

    await set_status(BRANCH, AccountStatus.BARRED)
    assert (await both(reserve(LINE, "s1", 1))).outcome is Outcome.ACCOUNT_BLOCKED
    assert (await both(reserve(BRANCH_LINE, "s2", 1))).outcome is Outcome.ACCOUNT_BLOCKED
    await set_status(BRANCH, AccountStatus.SUSPENDED)
    assert granted(await both(reserve(LINE, "s3", 1))) == (Outcome.ACCOUNT_BLOCKED, 0, 0)
    await set_status(BRANCH, AccountStatus.ACTIVE)
    await set_status(LINE, AccountStatus.BARRED)
    assert (await both(reserve(LINE, "s4", 1))).outcome is Outcome.ACCOUNT_BLOCKED
    assert granted(await both(reserve(BRANCH_LINE, "s5", 1))) == (Outcome.OK, 1, EUR)
    assert model.effective_status(LINE) is AccountStatus.BARRED
    assert model.effective_status(TEAM) is AccountStatus.ACTIVE
    await assert_audit_clean(store, sessions_ended=False)
