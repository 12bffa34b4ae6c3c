"""Leases in Redis: duties that must run in one server process at a time, and a mutex.

Theory of operation: with several worker processes (``ocs serve --workers N``), some jobs must
run once for the whole server: the spool writer (its acknowledgement trims the outbox, so two
writers would lose records), Tcc session supervision, the rescans, the spool's retention, and
later the schedulers of the bill run, dunning and loyalty. Each is a *duty* registered by name in
a ``Duties`` registry; a duty is a coroutine factory whose task runs until cancelled (or ends by
itself, as a one-shot rescan does).

A ``Lease`` is one Redis key, ``ocs:lease:<name>``, whose value is the holder's owner id (the
worker's host, pid and a random part, so a restarted worker never mistakes an old lease for its
own). It is taken with ``SET key owner NX PX ttl``: only one contender can create it. The holder
renews it every third of its time with an atomic compare-and-extend (a Lua script: ``PEXPIRE``
only while the value is still its owner id) and releases it on a graceful shutdown with a
compare-and-delete, so a lease that has passed to another holder is never extended or deleted
by the old one. When the holder dies (or stops renewing) the key expires, and another worker's
next attempt, made every third of the lease time too, takes it: the duty moves within about
1 1/3 of the lease time.

A holder that cannot prove it still holds the lease stops its duty: when a renewal answers "not
yours" (the key expired while the process was paused, and maybe another took it), and also when
Redis cannot be reached for longer than the lease time since the last renewal that succeeded
(measured on the monotonic clock from *before* that renewal was sent), since by then another
worker may hold it. Before each renewal the holder first checks that clock, so a process resumed
after a long pause stops the duty before asking Redis anything. A lease bounds how long two
holders can overlap to the time a paused process needs to notice; jobs whose overlap would do
harm (the spool's drain) also take the ``mutex`` around each pass.

``Duties.run_directly`` is the single-process form (``--workers 1``): every registered duty
starts at once and runs as today, with no lease and no Redis round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = structlog.get_logger("ocs.leases")

KEY_PREFIX = "ocs:lease:"
# How long a lease lasts without renewal: the longest a duty stays unattended when its holder
# dies. Ten seconds keeps a dead spool writer's backlog to seconds, yet is far above any pause
# of a healthy process (a GC pass, a slow disk).
DEFAULT_LEASE_SECONDS = 10.0
MUTEX_WAIT_SECONDS = 0.05  # between attempts at a mutex that another process holds

# KEYS[1] the lease; ARGV[1] the owner id, ARGV[2] the new time to live in milliseconds.
# Returns 1 when extended, 0 when the lease is gone or another's.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS[1] the lease; ARGV[1] the owner id. Returns 1 when deleted, 0 when not ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def new_owner_id(worker: str = "") -> str:
    """Unique per process life: host, pid, an optional worker name, and 8 random bytes."""
    return f"{socket.gethostname()}:{os.getpid()}:{worker}:{secrets.token_hex(8)}"


class Lease:
    """One named lease held (or not) by ``owner``."""

    def __init__(
        self,
        redis: Redis,
        name: str,
        owner: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, not {lease_seconds}")
        self.redis = redis
        self.name = name
        self.key = f"{KEY_PREFIX}{name}"
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.valid_until = 0.0  # on ``clock``: past it, this process cannot know it holds the lease

    @property
    def _milliseconds(self) -> int:
        return max(1, int(self.lease_seconds * 1000))

    @property
    def held(self) -> bool:
        """True while the last successful take or renewal is younger than the lease time."""
        return self.clock() < self.valid_until

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this owner holds it now."""
        started = self.clock()
        taken = await self.redis.set(self.key, self.owner, nx=True, px=self._milliseconds)
        if taken:
            self.valid_until = started + self.lease_seconds
        return bool(taken)

    async def renew(self) -> bool:
        """Extend the lease if it is still ours; False (and not held) when it is not."""
        started = self.clock()
        extended = await self.redis.eval(_RENEW, 1, self.key, self.owner, str(self._milliseconds))
        if extended == 1:
            self.valid_until = started + self.lease_seconds
            return True
        self.valid_until = 0.0
        return False

    async def release(self) -> bool:
        """Give the lease up if it is still ours (a graceful shutdown: the next holder need not wait)."""
        self.valid_until = 0.0
        released = await self.redis.eval(_RELEASE, 1, self.key, self.owner)
        return bool(released == 1)

    async def holder(self) -> str | None:
        value = await self.redis.get(self.key)
        return value.decode() if isinstance(value, bytes) else value


@contextlib.asynccontextmanager
async def mutex(redis: Redis, name: str, owner: str, *, lease_seconds: float = 30.0) -> AsyncIterator[Lease]:
    """Hold lease ``name`` for the block, waiting for it if another process holds it; renewed
    while the block runs, released after. For short critical sections across processes."""
    lease = Lease(redis, name, owner, lease_seconds=lease_seconds)
    while not await lease.acquire():
        await asyncio.sleep(MUTEX_WAIT_SECONDS)
    renewing = asyncio.create_task(_keep_renewed(lease))
    try:
        yield lease
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        with contextlib.suppress(RedisError, OSError):
            await lease.release()


async def _keep_renewed(lease: Lease) -> None:
    while True:
        await asyncio.sleep(lease.lease_seconds / 3)
        try:
            if not await lease.renew():
                log.warning("mutex_lost", lease=lease.name)
                return
        except (RedisError, OSError) as error:
            log.warning("mutex_renewal_failed", lease=lease.name, error=str(error))


DutyFactory = Callable[[], Coroutine[object, object, None]]


@dataclass(slots=True)
class _Duty:
    name: str
    factory: DutyFactory
    lease: Lease | None = None
    task: asyncio.Task[None] | None = None


class Duties:
    """The registry of duties that must run once for the whole server (see the module docstring).

    Register every duty before starting: ``run_directly`` (one process) or ``run_under_leases``
    (workers). ``held`` names the duties this process runs now (for /health and tests)."""

    def __init__(self) -> None:
        self._duties: dict[str, _Duty] = {}
        self.taken = 0  # leases this process has taken over its life
        self.lost = 0  # duties stopped because their lease could not be kept

    def register(self, name: str, factory: DutyFactory) -> None:
        if name in self._duties:
            raise ValueError(f"duty {name!r} is registered already")
        self._duties[name] = _Duty(name, factory)

    @property
    def names(self) -> list[str]:
        return list(self._duties)

    @property
    def held(self) -> list[str]:
        return [duty.name for duty in self._duties.values() if duty.task is not None]

    def run_directly(self) -> list[asyncio.Task[None]]:
        """One process: every duty starts now; the caller owns (and cancels) the tasks."""
        for duty in self._duties.values():
            duty.task = asyncio.create_task(duty.factory(), name=f"duty:{duty.name}")
        return [duty.task for duty in self._duties.values() if duty.task is not None]

    async def run_under_leases(
        self,
        redis: Redis,
        owner: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Several processes: try for each duty's lease every third of the lease time, run the
        duties held, stop any whose lease is lost. Runs until cancelled; then stops the duties
        and releases their leases."""
        for duty in self._duties.values():
            duty.lease = Lease(redis, duty.name, owner, lease_seconds=lease_seconds, clock=clock)
        try:
            while True:
                for duty in self._duties.values():
                    await self._tend(duty)
                await asyncio.sleep(lease_seconds / 3)
        finally:
            await self._stop_all()

    async def _tend(self, duty: _Duty) -> None:
        lease = duty.lease
        assert lease is not None
        try:
            if duty.task is None:
                if await lease.acquire():
                    self.taken += 1
                    log.info("duty_taken", duty=duty.name, owner=lease.owner)
                    duty.task = asyncio.create_task(duty.factory(), name=f"duty:{duty.name}")
                return
            if not lease.held or not await lease.renew():  # checked first: a long pause ends it at once
                await self._stop(duty, "lease_lost")
        except (RedisError, OSError) as error:
            if duty.task is not None and not lease.held:
                await self._stop(duty, f"redis_unreachable: {error}")

    async def _stop(self, duty: _Duty, reason: str) -> None:
        task, duty.task = duty.task, None
        if task is None:
            return
        self.lost += 1
        log.warning("duty_lost", duty=duty.name, reason=reason)
        task.cancel()
        await asyncio.wait({task})

    async def _stop_all(self) -> None:
        tasks = [duty.task for duty in self._duties.values() if duty.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        for duty in self._duties.values():
            if duty.task is not None and duty.lease is not None:
                # Bounded: a stop never waits on a Redis that does not answer (the lease then
                # runs out by itself within its time); a suite run hung here once for good.
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(duty.lease.release(), timeout=duty.lease.lease_seconds)
                log.info("duty_released", duty=duty.name)
            duty.task = None
