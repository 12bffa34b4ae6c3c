"""The subscriber cache (ocs.charging.subscribers) and where the directory's reads go (balance.directory).

The cache is driven with a directory that counts its lookups and a clock the test moves; the
directory's own test runs on the real embedded Redis, through callers that record each command.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest

from balance.callers import RedisPyCaller, Reply, ScriptCaller
from balance.directory import Directory, Identity, IdentityKind, Subscriber
from balance.embedded import EmbeddedRedis
from balance.scripts import Script
from ocs.charging.subscribers import SubscriberCache

ALICE = Identity(IdentityKind.E164, "4915100000001")
ALICE_IMSI = Identity(IdentityKind.IMSI, "262010000000001")
NOBODY = Identity(IdentityKind.E164, "4915199999999")
ALICE_SUBSCRIBER = Subscriber("alice", "mobile_prepaid", "mobile", "Alice", (ALICE, ALICE_IMSI))


class CountingDirectory(Directory):
    """Knows ALICE (both identities); counts every lookup that would go to Redis."""

    def __init__(self) -> None:
        self.lookups: list[Identity] = []

    async def lookup(self, identity: Identity) -> Subscriber | None:
        self.lookups.append(identity)
        return ALICE_SUBSCRIBER if identity in ALICE_SUBSCRIBER.identities else None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def directory() -> CountingDirectory:
    return CountingDirectory()


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_a_hit_asks_the_directory_nothing_until_the_ttl_passes(
    directory: CountingDirectory, clock: Clock
) -> None:
    cache = SubscriberCache(directory, ttl_seconds=60, negative_ttl_seconds=2, clock=clock)
    assert await cache.find([ALICE]) is ALICE_SUBSCRIBER
    for _ in range(3):
        clock.now += 19
        assert await cache.find([ALICE]) is ALICE_SUBSCRIBER
    assert directory.lookups == [ALICE]
    clock.now += 4  # 61 s after the first lookup
    assert await cache.find([ALICE]) is ALICE_SUBSCRIBER
    assert directory.lookups == [ALICE, ALICE]


async def test_an_unknown_identity_is_remembered_briefly(directory: CountingDirectory, clock: Clock) -> None:
    cache = SubscriberCache(directory, ttl_seconds=60, negative_ttl_seconds=2, clock=clock)
    assert await cache.find([NOBODY]) is None
    clock.now += 1.5
    assert await cache.find([NOBODY]) is None
    assert directory.lookups == [NOBODY]
    clock.now += 1
    assert await cache.find([NOBODY]) is None
    assert directory.lookups == [NOBODY, NOBODY]


async def test_the_first_known_identity_decides(directory: CountingDirectory, clock: Clock) -> None:
    cache = SubscriberCache(directory, clock=clock)
    assert await cache.find([NOBODY, ALICE_IMSI, ALICE]) is ALICE_SUBSCRIBER
    assert directory.lookups == [NOBODY, ALICE_IMSI]
    assert await cache.find([NOBODY, ALICE_IMSI]) is ALICE_SUBSCRIBER
    assert await cache.find([]) is None
    assert directory.lookups == [NOBODY, ALICE_IMSI]


async def test_forget_and_capacity_send_the_next_find_to_the_directory(
    directory: CountingDirectory, clock: Clock
) -> None:
    cache = SubscriberCache(directory, capacity=2, clock=clock)
    await cache.find([ALICE])
    cache.forget([ALICE])
    await cache.find([ALICE])
    assert directory.lookups == [ALICE, ALICE]
    await cache.find([ALICE_IMSI])
    await cache.find([NOBODY])  # the third entry pushes out the oldest, ALICE
    await cache.find([ALICE_IMSI])
    assert directory.lookups == [ALICE, ALICE, ALICE_IMSI, NOBODY]
    await cache.find([ALICE])
    assert directory.lookups[-1] == ALICE


class RecordingCaller:
    """A real caller that also records the name of every command it runs."""

    def __init__(self, caller: ScriptCaller) -> None:
        self.caller = caller
        self.commands: list[str] = []

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        self.commands.append(f"script {script.operation.value}")
        return await self.caller.run(script, keys, args)

    async def execute(self, *parts: str) -> Reply:
        self.commands.append(parts[0])
        return await self.caller.execute(*parts)

    async def scan_keys(self, pattern: str) -> list[str]:
        self.commands.append("SCAN")
        return await self.caller.scan_keys(pattern)

    async def close(self) -> None:
        await self.caller.close()


@pytest.fixture
async def redis_caller(embedded_redis: EmbeddedRedis) -> AsyncIterator[RedisPyCaller]:
    caller = RedisPyCaller.from_url(embedded_redis.url)
    await caller.execute("FLUSHALL")
    try:
        yield caller
    finally:
        await caller.close()


async def test_the_directory_writes_through_its_caller_and_reads_through_its_reader(
    redis_caller: RedisPyCaller,
) -> None:
    writer, reader = RecordingCaller(redis_caller), RecordingCaller(redis_caller)
    directory = Directory(writer, reader=reader)
    assert (await directory.register(ALICE_SUBSCRIBER)).value == "ok"
    assert reader.commands == []
    assert await directory.lookup(ALICE_IMSI) == ALICE_SUBSCRIBER
    assert await directory.lookup(NOBODY) is None
    # Each identity is claimed in one script (a quarantined one is refused; balance/lua/claim.lua),
    # after a GET of its owner: only what this registration bound is released if a claim fails.
    assert writer.commands == ["GET", "script claim", "GET", "script claim", "HSET"]
    assert reader.commands == ["GET", "HGETALL", "GET"]
    alone = RecordingCaller(redis_caller)
    assert await Directory(alone).lookup(ALICE) == ALICE_SUBSCRIBER  # no reader: the one caller does both
    assert alone.commands == ["GET", "HGETALL"]
