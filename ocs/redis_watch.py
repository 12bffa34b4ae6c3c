"""Keeping the embedded Redis up, and telling the operator about it once per change.

Theory of operation: ``RedisSupervisor.run`` is a background task of the server when it runs its
own redis-server (``balance.embedded``). Every ``check_interval_seconds`` it asks whether the
child still runs (a non-blocking ``waitpid``, no Redis round trip). When the child has died it
restarts it on the same port, so every client keeps its URL and reconnects on its next call
(the pipelined client on next use, redis-py's pool on a fresh connection): attempts are spaced
by a backoff that starts at ``RESTART_BACKOFF_FIRST_SECONDS`` and doubles up to
``RESTART_BACKOFF_MAX_SECONDS``, so a Redis that cannot start (disk full, port taken) costs a
try every 30 s, not a busy loop. The backoff starts over only after Redis stayed up for the
longest delay; a Redis that dies again at once is not restarted faster and faster.

The restart keeps the data directory locked throughout (``EmbeddedRedis.restart``), and runs in a
thread since starting waits for the append-only file to be replayed. A shutdown that cancels the
supervisor mid-restart waits for that thread, so the server it started is the one shutdown stops.

Log lines, one per state change and never one per attempt or per pass: ``embedded_redis_down``
(with how it ended), ``embedded_redis_restarting``, ``embedded_redis_restart_failing`` (the first
failed attempt of an outage, with the reason; later ones are counted, not logged) and
``embedded_redis_up``. ``Outage`` gives the server's polling loops (spool writer, Tcc supervision)
the same manners: one ``redis_unavailable`` line when a pass first fails for want of Redis, one
``redis_available`` when a pass works again.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from balance.embedded import EmbeddedRedis
from balance.errors import BalanceUnavailable

log = structlog.get_logger("ocs")

# How often the supervisor looks at the child: a dead Redis already fails every call with 3004
# (RFC 4006 section 5.7), so half a second of detection adds little to the outage.
CHECK_INTERVAL_SECONDS = 0.5
RESTART_BACKOFF_FIRST_SECONDS = 0.5
RESTART_BACKOFF_MAX_SECONDS = 30.0


class Outage:
    """A loop's view of Redis: logs when it becomes unavailable and when it is back, nothing between."""

    def __init__(self, loop_name: str) -> None:
        self.loop_name = loop_name
        self.since: float | None = None  # monotonic time of the first failed pass
        self.failed_passes = 0

    def failed(self, error: BalanceUnavailable) -> None:
        self.failed_passes += 1
        if self.since is None:
            self.since = time.monotonic()
            log.warning("redis_unavailable", loop=self.loop_name, error=str(error))

    def succeeded(self) -> None:
        if self.since is not None:
            log.info(
                "redis_available",
                loop=self.loop_name,
                unavailable_seconds=round(time.monotonic() - self.since, 3),
                failed_passes=self.failed_passes,
            )
            self.since = None
            self.failed_passes = 0


class RedisSupervisor:
    """Restarts the embedded redis-server when it dies (see the module's theory of operation)."""

    def __init__(
        self,
        redis: EmbeddedRedis,
        *,
        check_interval_seconds: float = CHECK_INTERVAL_SECONDS,
        first_backoff_seconds: float = RESTART_BACKOFF_FIRST_SECONDS,
        max_backoff_seconds: float = RESTART_BACKOFF_MAX_SECONDS,
    ) -> None:
        self.redis = redis
        self.check_interval_seconds = check_interval_seconds
        self.first_backoff_seconds = first_backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.restarts = 0  # successful restarts
        self.failed_attempts = 0  # over the supervisor's life

    async def run(self) -> None:
        backoff = self.first_backoff_seconds
        up_since = time.monotonic()
        while True:
            await asyncio.sleep(self.check_interval_seconds)
            if self.redis.running:
                continue
            up_seconds = time.monotonic() - up_since
            log.warning("embedded_redis_down", exit_status=self.redis.exit_status, up_seconds=round(up_seconds, 3))
            if up_seconds >= self.max_backoff_seconds:
                backoff = self.first_backoff_seconds
            backoff = await self._restart(backoff)
            up_since = time.monotonic()

    async def _restart(self, backoff: float) -> float:
        """Try until Redis is up, ``backoff`` before each attempt, doubling; returns the next one."""
        log.info("embedded_redis_restarting", first_delay_seconds=backoff, max_delay_seconds=self.max_backoff_seconds)
        attempts = 0
        while True:
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_seconds)
            attempts += 1
            try:
                await self._restart_once()
            except Exception as error:  # any failure to start is retried, never fatal
                self.failed_attempts += 1
                if attempts == 1:
                    log.warning("embedded_redis_restart_failing", error=str(error), next_delay_seconds=backoff)
                continue
            self.restarts += 1
            log.info("embedded_redis_up", pid=self.redis.pid, url=self.redis.url, attempts=attempts)
            return backoff

    async def _restart_once(self) -> None:
        restart = asyncio.ensure_future(asyncio.to_thread(self.redis.restart))
        try:
            await asyncio.shield(restart)
        except asyncio.CancelledError:
            # Shutting down: let the thread finish, so that shutdown stops the server it starts
            # instead of finding none and leaving it to the parent-death signal.
            await asyncio.wait({restart})
            if not restart.cancelled():
                restart.exception()  # retrieved: a failed start is no news during shutdown
            raise
