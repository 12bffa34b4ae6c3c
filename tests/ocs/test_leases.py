"""Leases in Redis (ocs/leases.py) on a real Redis: one holder at a time, a dead holder's duty
taken over within the lease time, a paused holder stops its duty, a mutex across processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio

from balance.embedded import EmbeddedRedis
from ocs.leases import KEY_PREFIX, Duties, Lease, mutex, new_owner_id
from tests.balance.conftest import embedded_redis, redis_client

__all__ = ["embedded_redis", "redis_client"]

ROOT = Path(__file__).resolve().parents[2]
LEASE_SECONDS = 0.6
DEADLINE_SECONDS = 30.0  # how long a test waits for a process; never a measure of speed


async def test_two_contenders_never_both_hold(redis_client: redis.asyncio.Redis) -> None:
    for round_number in range(20):
        leases = [Lease(redis_client, f"race-{round_number}", new_owner_id(str(i))) for i in range(8)]
        taken = await asyncio.gather(*(lease.acquire() for lease in leases))
        assert sum(taken) == 1
        winner = leases[taken.index(True)]
        assert await winner.holder() == winner.owner
        for loser in (lease for lease, won in zip(leases, taken, strict=True) if not won):
            assert not loser.held
            assert not await loser.renew()  # compare-and-extend: never extends another's lease
            assert not await loser.release()  # compare-and-delete: never deletes another's lease
        assert await winner.holder() == winner.owner


async def test_a_lease_not_renewed_expires_and_another_takes_it(redis_client: redis.asyncio.Redis) -> None:
    first = Lease(redis_client, "spool", "first", lease_seconds=0.2)
    second = Lease(redis_client, "spool", "second", lease_seconds=0.2)
    assert await first.acquire()
    assert not await second.acquire()
    assert await first.renew()
    await asyncio.sleep(0.3)  # first stops renewing
    assert await second.acquire()
    assert not await first.renew() and not first.held  # the old holder learns it lost it
    assert await second.holder() == "second"


async def test_a_released_lease_is_taken_at_once(redis_client: redis.asyncio.Redis) -> None:
    first = Lease(redis_client, "spool", "first", lease_seconds=60)
    assert await first.acquire()
    assert await first.release()
    assert await Lease(redis_client, "spool", "second", lease_seconds=60).acquire()


async def _until(condition: object, seconds: float = DEADLINE_SECONDS) -> None:
    deadline = time.monotonic() + seconds
    while not callable(condition) or not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class Running:
    """A duty that counts how many of its instances run at once."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.started = 0

    async def duty(self) -> None:
        self.now += 1
        self.started += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.Event().wait()
        finally:
            self.now -= 1


async def test_only_one_registry_runs_a_duty_and_a_graceful_stop_hands_it_over(
    redis_client: redis.asyncio.Redis,
) -> None:
    running = Running()
    registries = [Duties() for _ in range(3)]
    for registry in registries:
        registry.register("spool_writer", running.duty)
    tasks = [
        asyncio.create_task(registry.run_under_leases(redis_client, new_owner_id(), lease_seconds=LEASE_SECONDS))
        for registry in registries
    ]
    await _until(lambda: running.now == 1)
    await asyncio.sleep(LEASE_SECONDS * 2)  # several renewal rounds: still one
    holder = next(index for index, registry in enumerate(registries) if registry.held)
    tasks[holder].cancel()
    await asyncio.wait({tasks[holder]})
    await _until(lambda: running.now == 1, LEASE_SECONDS)  # released: taken within a lease time
    assert running.most == 1 and running.started == 2
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)
    assert running.now == 0


async def test_a_paused_holder_stops_its_duty_and_another_takes_it(redis_client: redis.asyncio.Redis) -> None:
    running = Running()
    first, second = Duties(), Duties()
    first.register("tcc", running.duty)
    second.register("tcc", running.duty)
    holder = asyncio.create_task(first.run_under_leases(redis_client, "first", lease_seconds=LEASE_SECONDS))
    await _until(lambda: first.held == ["tcc"])
    other = asyncio.create_task(second.run_under_leases(redis_client, "second", lease_seconds=LEASE_SECONDS))
    await asyncio.sleep(LEASE_SECONDS)
    assert second.held == []
    time.sleep(LEASE_SECONDS * 2)  # the whole process stops (as a GC pause or SIGSTOP); the key expires
    await _until(lambda: first.held == [] and first.lost == 1, LEASE_SECONDS)
    await _until(lambda: second.held == ["tcc"], LEASE_SECONDS * 2)
    assert running.now == 1
    holder.cancel()
    other.cancel()
    await asyncio.wait({holder, other})


HOLDER_PROGRAM = """
import asyncio, sys
import redis.asyncio
from ocs.leases import Duties

async def duty():
    client = redis.asyncio.Redis.from_url(sys.argv[1])
    while True:
        await client.set("duty-ran-in", sys.argv[2])
        await asyncio.sleep(0.02)

async def main():
    duties = Duties()
    duties.register("spool_writer", duty)
    client = redis.asyncio.Redis.from_url(sys.argv[1])
    await duties.run_under_leases(client, sys.argv[2], lease_seconds=float(sys.argv[3]))

asyncio.run(main())
"""


def _holder(url: str, owner: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER_PROGRAM, url, owner, str(LEASE_SECONDS)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


async def test_a_killed_holder_process_hands_its_duty_over_within_the_lease_time(
    embedded_redis: EmbeddedRedis, redis_client: redis.asyncio.Redis
) -> None:
    first = _holder(embedded_redis.url, "first")
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while await redis_client.get("duty-ran-in") != b"first":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        second = _holder(embedded_redis.url, "second")
        try:
            await asyncio.sleep(LEASE_SECONDS)  # the second tries and fails while the first renews
            assert await redis_client.get(f"{KEY_PREFIX}spool_writer") == b"first"
            os.kill(first.pid, signal.SIGKILL)  # no release: the lease must expire
            killed_at = time.monotonic()
            first.wait()
            while await redis_client.get("duty-ran-in") != b"second":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            # The lease time, plus one attempt interval (a third), plus a process's scheduling slack.
            taken_after = time.monotonic() - killed_at
            assert taken_after < LEASE_SECONDS * 4 / 3 + 1.0, taken_after
        finally:
            second.kill()
            second.wait()
    finally:
        first.kill()
        first.wait()


async def test_a_mutex_lets_one_process_in_at_a_time(redis_client: redis.asyncio.Redis) -> None:
    inside = 0
    most = 0

    async def critical(owner: str) -> None:
        nonlocal inside, most
        async with mutex(redis_client, "spool-drain", owner):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(critical(f"owner-{i}") for i in range(10)))
    assert most == 1
    assert not await redis_client.exists(f"{KEY_PREFIX}spool-drain")


def test_a_lease_needs_a_positive_time() -> None:
    with pytest.raises(ValueError, match="lease_seconds"):
        Lease(redis.asyncio.Redis(), "x", "y", lease_seconds=0)
