"""The same charging on a real 3-master Redis Cluster: every script touches one slot.

Each hierarchy's keys share the hash tag of its root, so each call lands on the master that owns
that slot; the test checks that the hierarchies spread over the masters and that the money rules
and the audit hold exactly as on a single Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis

from balance.audit import audit
from balance.cluster import EmbeddedRedisCluster
from balance.store import BalanceStore
from balance.types import Account, Bucket, BucketKind, ChargeItem, ChargeRequest, Outcome, PaymentType, Tariff, Unit

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


async def test_charging_on_a_cluster(cluster_store: BalanceStore, redis_cluster: EmbeddedRedisCluster) -> None:
    store = cluster_store
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
