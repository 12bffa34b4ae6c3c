"""The pipelined client on a real 3-master Redis Cluster: charges routed by slot, the work-list
marks spread over the masters, MOVED from a stale map and ASK during a slot migration followed,
the old global work lists moved into their shards once; a node that accepts connections and
never answers (a frozen host) does not hold up the slot map."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis
from redis.crc import key_slot

from balance import keys
from balance.callers import PipelinedCaller
from balance.cluster import EmbeddedRedisCluster
from balance.pipeline_cluster import ClusterPipelinedRedis, startup_nodes_of
from balance.store import BalanceStore
from balance.types import Account, Bucket, BucketKind, ChargeItem, ChargeRequest, Outcome, Tariff, Unit
from tests.balance.conftest import PROCESS_DEADLINE_SECONDS
from tests.balance.test_cluster import ROOTS, command_calls, play_on_a_cluster, reset_stats

EUR = 1_000_000
VOICE = Tariff(price_micros=600_000, per_units=60, block_units=60, first_units=60)
NOW = 1_700_000_000


@pytest.fixture
async def pipelined_store(redis_cluster: EmbeddedRedisCluster) -> AsyncIterator[BalanceStore]:
    url = "redis://" + ",".join(f"{host}:{port}" for host, port in redis_cluster.startup_nodes)
    store = await BalanceStore.connect(url, cluster=True, pipelined=True)
    await store.flush_all()
    try:
        yield store
    finally:
        await store.close()


def cluster_client(store: BalanceStore) -> ClusterPipelinedRedis:
    assert isinstance(store.caller, PipelinedCaller) and isinstance(store.caller.client, ClusterPipelinedRedis)
    return store.caller.client


def call(account: str, session: str, number: int, used: int = 0, requested: int = 0, **options: bool) -> ChargeRequest:
    item = ChargeItem(1, "voice", Unit.SECONDS, VOICE, used, requested)
    return ChargeRequest(account, session, number, (item,), now_seconds=NOW, validity_seconds=60, **options)


def test_a_cluster_url_may_name_several_nodes() -> None:
    assert startup_nodes_of("redis://a:7000,b:7001/0") == [("a", 7000), ("b", 7001)]
    assert startup_nodes_of("redis://127.0.0.1:7000") == [("127.0.0.1", 7000)]


def test_each_work_list_shard_lies_in_its_own_range_of_slots() -> None:
    width = 16_384 // keys.WORK_SHARDS
    assert [key_slot(name.encode()) // width for name in keys.OUTBOX_ROOTS_SHARDS] == list(range(keys.WORK_SHARDS))
    assert all(keys.work_shard(root) == key_slot(root.encode()) // width for root in ROOTS)


async def test_charging_on_the_pipelined_cluster_client(
    pipelined_store: BalanceStore, redis_cluster: EmbeddedRedisCluster
) -> None:
    """The money rules and the audit as with redis-py, every charge on the pipelined client, each
    sent to its root's master; the marks spread over the masters, no global key takes them all."""
    reset_stats(redis_cluster)
    await play_on_a_cluster(pipelined_store, redis_cluster)
    calls = command_calls(redis_cluster)
    script = "fcall" if any(stats.get("fcall") for stats in calls) else "evalsha"
    assert all(stats.get(script, 0) > 0 for stats in calls)
    assert all(stats.get("sadd", 0) > 0 and stats.get("zadd", 0) > 0 for stats in calls)
    client = cluster_client(pipelined_store)
    assert client.redirections == 0 and client.map_loads == 1 and len(client.masters()) == 3
    for host, port in redis_cluster.startup_nodes:
        node = redis.Redis(host=host, port=port)
        assert not node.keys("ocs:outbox") and not node.keys("ocs:sessions")
        node.close()


async def provision_roots(store: BalanceStore) -> None:
    for root in ROOTS:
        account = Account(root, buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),))
        assert (await store.provision(account)).outcome is Outcome.OK


async def test_a_stale_slot_map_is_corrected_by_moved(pipelined_store: BalanceStore) -> None:
    """A map that names one master for every slot (as after a resharding the client missed):
    each call to the wrong master is answered MOVED and sent on to the right one."""
    await provision_roots(pipelined_store)
    client = cluster_client(pipelined_store)
    await client.load_slots()
    wrong = client.masters()[0]
    client._slots = [wrong] * 16_384  # the stale map under test
    for root in ROOTS:
        result = await pipelined_store.charge(call(root, "s1", 0, used=60, event=True))
        assert (result.outcome, result.items[0].committed_micros) == (Outcome.OK, 600_000)
    assert client.redirections >= 1  # 12 roots over 3 masters: some were elsewhere
    assert len(client.masters()) == 3  # the map was loaded again after the first MOVED
    for root in ROOTS:
        view = await pipelined_store.balance(root, NOW)
        assert view is not None and view.available_micros == 10 * EUR - 600_000


def migrate_slot(cluster: EmbeddedRedisCluster, slot: int, source_port: int, target_port: int, *, finish: bool) -> None:
    """Move a slot's keys from one master to another (the steps of redis-cli --cluster reshard);
    with ``finish`` false the slot stays MIGRATING at the source and IMPORTING at the target."""
    nodes = {port: redis.Redis(host=host, port=port) for host, port in cluster.startup_nodes}
    try:
        source, target = nodes[source_port], nodes[target_port]
        source_id, target_id = source.cluster("MYID"), target.cluster("MYID")
        target.cluster("SETSLOT", slot, "IMPORTING", source_id)
        source.cluster("SETSLOT", slot, "MIGRATING", target_id)
        names = source.cluster("GETKEYSINSLOT", slot, 1000)
        if names:
            source.migrate("127.0.0.1", target_port, names, 0, 5000)
        if finish:
            for node in nodes.values():
                node.cluster("SETSLOT", slot, "NODE", target_id)
    finally:
        for node in nodes.values():
            node.close()


def master_port_of(cluster: EmbeddedRedisCluster, slot: int) -> int:
    host, port = cluster.startup_nodes[0]
    node = redis.Redis(host=host, port=port)
    try:
        for start, end, master, *_ in node.cluster("SLOTS"):
            if start <= slot <= end:
                return int(master[1])
    finally:
        node.close()
    raise AssertionError(f"no master serves slot {slot}")


async def test_a_slot_migrated_during_a_run_is_followed_by_ask_then_moved(
    pipelined_store: BalanceStore, redis_cluster: EmbeddedRedisCluster
) -> None:
    """Every key of a call must be at the importing node for it to run there (a new session's key
    is nowhere: Redis answers TRYAGAIN until the migration ends), so the call during the
    migration ends a session opened before it."""
    root = ROOTS[0]
    await provision_roots(pipelined_store)
    assert (await pipelined_store.charge(call(root, "before", 0, used=60, event=True))).outcome is Outcome.OK
    assert (await pipelined_store.charge(call(root, "s1", 0, requested=60))).outcome is Outcome.OK
    client = cluster_client(pipelined_store)
    slot = key_slot(root.encode())
    source = master_port_of(redis_cluster, slot)
    target = next(port for _, port in redis_cluster.startup_nodes if port != source)
    try:
        migrate_slot(redis_cluster, slot, source, target, finish=False)
        # The keys are at the target, the slot still the source's: ASK, then ASKING + the call.
        during = await pipelined_store.charge(call(root, "s1", 1, used=60, terminate=True))
        assert (during.outcome, during.items[0].committed_micros) == (Outcome.OK, 600_000)
        assert client.redirections == 1
        migrate_slot(redis_cluster, slot, source, target, finish=True)
        after = await pipelined_store.charge(call(root, "after", 0, used=60, event=True))
        assert after.outcome is Outcome.OK and client.redirections == 2  # MOVED, and the map updated
        assert (await pipelined_store.charge(call(root, "later", 0, used=60, event=True))).outcome is Outcome.OK
        assert client.redirections == 2
        view = await pipelined_store.balance(root, NOW)
        assert view is not None and view.available_micros == 10 * EUR - 4 * 600_000
    finally:
        migrate_slot(redis_cluster, slot, target, source, finish=True)  # the next tests expect the usual layout


async def test_the_old_global_work_lists_are_moved_into_their_shards(pipelined_store: BalanceStore) -> None:
    """What a server of the version before the shards left: the startup rescan moves it, once."""
    await provision_roots(pipelined_store)
    admin = pipelined_store.admin
    await admin.execute("SADD", keys.LEGACY_OUTBOX_ROOTS, ROOTS[0], ROOTS[1])
    await admin.execute("ZADD", keys.LEGACY_SESSION_ROOTS, str(NOW + 60), ROOTS[2])
    assert await pipelined_store.outbox_roots() == []
    await pipelined_store.rescan_work()
    assert await pipelined_store.outbox_roots() == sorted(ROOTS[:2])
    due = await admin.execute("ZSCORE", keys.session_roots_key(ROOTS[2]), ROOTS[2])
    assert due is not None and float(str(due)) == NOW + 60
    assert await admin.execute("EXISTS", keys.LEGACY_OUTBOX_ROOTS) == 0
    assert await admin.execute("EXISTS", keys.LEGACY_SESSION_ROOTS) == 0
    await pipelined_store.rescan_work()  # again: nothing more to move, nothing lost
    assert await pipelined_store.outbox_roots() == sorted(ROOTS[:2])


@contextlib.asynccontextmanager
async def frozen_node() -> AsyncIterator[tuple[str, int]]:
    """A TCP listener that accepts connections and never answers: a Redis whose host froze."""
    accepted: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield "127.0.0.1", server.sockets[0].getsockname()[1]
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_node_that_never_answers_does_not_hold_up_the_slot_map(
    redis_cluster: EmbeddedRedisCluster,
) -> None:
    # Named first, as a frozen master is when the map lists it first; the reply timeout is long
    # (a minute), so only the map's own bound on each question lets the next node be asked.
    async with frozen_node() as frozen:
        client = ClusterPipelinedRedis([frozen, *redis_cluster.startup_nodes], reply_timeout_seconds=60.0)
        try:
            await asyncio.wait_for(client.load_slots(), PROCESS_DEADLINE_SECONDS)
            assert len(client.masters()) == len(redis_cluster.nodes)
        finally:
            await client.close()
