"""A call the store gave up on changes nothing when it reaches Redis later (issue 17, item 1).

Each test runs its own private redis-server and stops it with SIGSTOP: alive, connected, its
sockets still accepting bytes, but silent. The store's reply timeout is short, so the call fails
as ``BalanceUnavailable`` (3004 at the server) while Redis sleeps; SIGCONT then lets Redis read
and run what was sent. Whatever it runs must leave the account, the usage records and the
session as they were before the call: the script sees that its deadline has passed (Redis's own
``TIME``) and refuses, writing nothing. A retransmission of a call that did apply still replays.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from balance import keys
from balance.callers import PipelinedCaller, RedisPyCaller
from balance.embedded import EmbeddedRedis
from balance.errors import BalanceUnavailable
from balance.pipeline import PipelinedRedis
from balance.store import BalanceStore
from balance.types import Account, Bucket, BucketKind, ChargeItem, ChargeRequest, Outcome, Tariff, Unit

EUR = 1_000_000
VOICE = Tariff(price_micros=600_000, per_units=60, block_units=60, first_units=60)
NOW = 1_700_000_000
REPLY_TIMEOUT_SECONDS = 0.3
# How long a call may wait for the script Redis runs on waking: far above the few milliseconds
# it takes, so that only a Redis that never runs it fails the test (not a timed assertion).
WAKE_WAIT_SECONDS = 10.0

Result = TypeVar("Result")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path, port=0) as server:
        yield server


@pytest.fixture(params=["pipelined", "pipelined-eval", "redis-py"])
async def store(request: pytest.FixtureRequest, redis_server: EmbeddedRedis) -> AsyncIterator[BalanceStore]:
    """The store as the server builds it, with a short reply timeout, on each caller and form."""
    functions = request.param != "pipelined-eval"
    # The reply timeout on redis-py too, so that its variant fails by its own bound on a silent
    # Redis (as the server builds it: BalanceStore.connect), not by some other timeout later.
    admin = RedisPyCaller.from_url(redis_server.url, functions=functions, reply_timeout_seconds=REPLY_TIMEOUT_SECONDS)
    caller = admin
    if request.param != "redis-py":
        assert redis_server.port is not None
        client = PipelinedRedis(port=redis_server.port, reply_timeout_seconds=REPLY_TIMEOUT_SECONDS)
        caller = PipelinedCaller(client, functions=functions)  # type: ignore[assignment]
    balance_store = BalanceStore(caller, admin=admin, reply_timeout_seconds=REPLY_TIMEOUT_SECONDS)
    try:
        yield balance_store
    finally:
        await balance_store.close()


def voice(used: int = 0, requested: int = 0) -> ChargeItem:
    return ChargeItem(1, "voice", Unit.SECONDS, VOICE, used, requested)


def snapshot(server: EmbeddedRedis) -> dict[bytes, object]:
    """Every key of the engine with its value: accounts, sessions, expiry sets, outboxes."""
    client = server.admin_client()
    try:
        found: dict[bytes, object] = {}
        for name in sorted(client.scan_iter("{*")):
            kind = client.type(name)
            if kind == b"hash":
                found[name] = client.hgetall(name)
            elif kind == b"list":
                found[name] = client.lrange(name, 0, -1)
            elif kind == b"zset":
                found[name] = client.zrange(name, 0, -1, withscores=True)
            else:
                found[name] = kind
        return found
    finally:
        client.close()


def script_calls(server: EmbeddedRedis) -> int:
    """How many FCALL and EVALSHA calls Redis has run (INFO commandstats)."""
    client = server.admin_client()
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("fcall", "evalsha"))


async def account_with_one_euro(store: BalanceStore, server: EmbeddedRedis, account_id: str) -> dict[bytes, object]:
    """Provision the account and make the store know it (so that the script is the one call a
    charge makes); returns the snapshot of Redis then."""
    await store.provision(Account(account_id, buckets=(Bucket(1, BucketKind.MAIN, EUR),)))
    await store.balance(account_id, NOW)
    return snapshot(server)


async def fails_while_redis_sleeps(server: EmbeddedRedis, call: Awaitable[Result]) -> None:
    """Run ``call`` with Redis stopped: it must fail as BalanceUnavailable. Then wake Redis and
    wait until it has run what was sent to it meanwhile."""
    assert server.pid is not None
    calls_before = script_calls(server)
    os.kill(server.pid, signal.SIGSTOP)
    try:
        with pytest.raises(BalanceUnavailable):
            await call
    finally:
        os.kill(server.pid, signal.SIGCONT)
    async with asyncio.timeout(WAKE_WAIT_SECONDS):
        while script_calls(server) <= calls_before:
            await asyncio.sleep(0.01)


async def test_a_charge_that_reaches_redis_after_the_store_gave_up_changes_nothing(
    store: BalanceStore, redis_server: EmbeddedRedis
) -> None:
    await store.provision(Account("alice", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
    opened = await store.charge(ChargeRequest("alice", "call", 0, (voice(requested=120),), NOW))
    assert opened.outcome is Outcome.OK
    before = snapshot(redis_server)

    update = ChargeRequest("alice", "call", 1, (voice(used=120, requested=120),), NOW + 120)
    await fails_while_redis_sleeps(redis_server, store.charge(update))

    assert snapshot(redis_server) == before  # no debit, no usage record, the session as it was
    # The call was refused, not lost: the client's retransmission applies it, once.
    again = await store.charge(update)
    assert (again.outcome, again.replayed, again.items[0].committed_micros) == (Outcome.OK, False, 1_200_000)


async def test_an_event_that_reaches_redis_late_charges_nothing(
    store: BalanceStore, redis_server: EmbeddedRedis
) -> None:
    """An SMS refused with 3004 is not sent by a client that does not retry: it must cost nothing."""
    before = await account_with_one_euro(store, redis_server, "bob")
    sms = ChargeItem(0, "sms", Unit.EVENTS, Tariff(price_micros=90_000), used_units=1)
    await fails_while_redis_sleeps(redis_server, store.charge(ChargeRequest("bob", "sms", 0, (sms,), NOW, event=True)))
    assert snapshot(redis_server) == before


async def test_a_refund_that_reaches_redis_late_credits_nothing(
    store: BalanceStore, redis_server: EmbeddedRedis
) -> None:
    before = await account_with_one_euro(store, redis_server, "carol")
    await fails_while_redis_sleeps(redis_server, store.refund("carol", "refund", 0, 500_000, NOW))
    assert snapshot(redis_server) == before


async def test_a_late_call_of_a_request_already_applied_still_replays(
    store: BalanceStore, redis_server: EmbeddedRedis
) -> None:
    """The deadline refuses only what would change something: a retransmission that arrives
    late gets the stored answer, as a retransmission in time does."""
    await store.provision(Account("dave", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
    request = ChargeRequest("dave", "call", 0, (voice(requested=60),), NOW)
    first = await store.charge(request)
    late = BalanceStore(store.caller, admin=store.admin, clock=lambda: 0.0)  # its deadlines are long past
    replay = await late.charge(request)
    assert replay.replayed and replay.items == first.items
    with pytest.raises(BalanceUnavailable, match="deadline"):
        await late.charge(ChargeRequest("dave", "call", 1, (voice(used=60),), NOW + 60, terminate=True))
    assert (await store.balance("dave", NOW)) is not None
    client = redis_server.admin_client()
    try:
        assert client.hget("{dave}:s:call", "n") == b"0"
    finally:
        client.close()


async def test_charges_survive_a_restart_from_the_append_only_file(
    store: BalanceStore, redis_server: EmbeddedRedis
) -> None:
    """The scripts read TIME before writing, which Redis allows since 5.0 because it logs and
    replicates a script's writes, not the script: the append-only file replays the writes, and
    the clock is not read again."""
    await store.provision(Account("erin", buckets=(Bucket(1, BucketKind.MAIN, 10 * EUR),)))
    await store.charge(ChargeRequest("erin", "call", 0, (voice(requested=60),), NOW))
    await store.charge(ChargeRequest("erin", "call", 1, (voice(used=60),), NOW + 60, terminate=True))
    await store.refund("erin", "refund", 0, 100_000, NOW)
    before = snapshot(redis_server)
    redis_server.stop()
    redis_server.start()
    after = snapshot(redis_server)
    assert after == before and after[b"{erin}:o"] != []


SMS = ChargeItem(0, "sms", Unit.EVENTS, Tariff(price_micros=90_000), used_units=1)
# A request whose reply is lost: an SMS event (writes a usage record), and the first request of a
# session that also reports usage (opens a session and writes a record); what each costs.
LOST_REPLIES = {
    "event": (ChargeRequest("fay", "sms", 0, (SMS,), NOW, event=True), 90_000),
    "opening": (ChargeRequest("fay", "call", 0, (voice(used=60),), NOW), 600_000),
}


@pytest.mark.parametrize("kind", sorted(LOST_REPLIES))
async def test_a_call_that_applied_before_its_deadline_is_answered_not_failed(
    redis_server: EmbeddedRedis, kind: str
) -> None:
    """The pipelined client drops a silent connection after its own (short) timeout, and Redis,
    woken before the store's deadline, still runs the call: the store's settling look, once the
    deadline has passed, finds it applied and answers its result instead of 3004. The marks the
    lost reply would have led to are sent for the replay: the hierarchy is on the spool writer's
    list (its record waits in the outbox) and, for a session opened, on the supervisor's."""
    assert redis_server.port is not None and redis_server.pid is not None
    client = PipelinedRedis(port=redis_server.port, reply_timeout_seconds=REPLY_TIMEOUT_SECONDS)
    admin = RedisPyCaller.from_url(redis_server.url)
    store = BalanceStore(PipelinedCaller(client), admin=admin, reply_timeout_seconds=10 * REPLY_TIMEOUT_SECONDS)
    request, cost = LOST_REPLIES[kind]
    try:
        await account_with_one_euro(store, redis_server, "fay")
        os.kill(redis_server.pid, signal.SIGSTOP)
        try:
            charge = asyncio.ensure_future(store.charge(request))
            async with asyncio.timeout(WAKE_WAIT_SECONDS):
                while client.pending_count == 0:  # sent
                    await asyncio.sleep(0.01)
                while client.pending_count > 0:  # dropped by the client for silence
                    await asyncio.sleep(0.01)
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        result = await charge
        assert (result.outcome, result.replayed) == (Outcome.OK, True)
        assert (await store.balance("fay", NOW)).available_micros == EUR - cost  # type: ignore[union-attr]
        assert await store.outbox_roots() == ["fay"]
        sessions = await admin.execute("ZRANGE", keys.session_roots_key("fay"), "0", "-1")
        assert sessions == (["fay"] if kind == "opening" else [])
    finally:
        await store.close()
