"""The whole server on a real 3-master Redis Cluster (``[redis] cluster = true``), charges on the
pipelined cluster client: the core credit-control cases, usage through the spool into the
database, the smoke scenario with its audit, and a master restarted mid-run (SIGTERM, then the
same port and its append-only file) that loses nothing.

The credit-control cases are the single-Redis tests themselves, imported: here their ``server``
fixture is this module's, on the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from balance.callers import PipelinedCaller
from balance.cluster import EmbeddedRedisCluster
from balance.pipeline_cluster import ClusterPipelinedRedis
from ocs.config import RedisSettings
from simulator.report import render_text, summarize
from simulator.runner import run_scenario
from simulator.scenario import load_scenario
from tests.balance.conftest import redis_cluster, wait_until_gone
from tests.conftest import ADMIN_TOKEN
from tests.ocs.conftest import RunningServer, server_settings, server_with
from tests.ocs.test_credit_control import (
    test_check_balance_price_enquiry_and_refund,
    test_data_session_with_two_rating_groups_and_an_allowance,
    test_postpaid_usage_lands_in_the_spool_exactly_once,
    test_prepaid_call_until_the_balance_runs_out,
    test_retransmitted_update_is_charged_once,
    test_sms_as_direct_debit_event_and_as_ecur,
    test_top_up_sends_rar_to_a_session_in_final_unit_state_then_barring_sends_asr,
    test_unknown_subscriber_is_5030,
)
from tests.simulator.test_smoke import SMOKE, test_smoke_scenario_balances_agree_and_the_audit_passes

__all__ = [
    "redis_cluster",
    "test_check_balance_price_enquiry_and_refund",
    "test_data_session_with_two_rating_groups_and_an_allowance",
    "test_postpaid_usage_lands_in_the_spool_exactly_once",
    "test_prepaid_call_until_the_balance_runs_out",
    "test_retransmitted_update_is_charged_once",
    "test_smoke_scenario_balances_agree_and_the_audit_passes",
    "test_sms_as_direct_debit_event_and_as_ecur",
    "test_top_up_sends_rar_to_a_session_in_final_unit_state_then_barring_sends_asr",
    "test_unknown_subscriber_is_5030",
]


@pytest.fixture
async def server(redis_cluster: EmbeddedRedisCluster, tmp_path: Path) -> AsyncIterator[RunningServer]:
    async with server_on_cluster(redis_cluster.startup_node_urls[1], tmp_path) as running:
        yield running


@contextlib.asynccontextmanager
async def server_on_cluster(node_url: str, tmp_path: Path) -> AsyncIterator[RunningServer]:
    """The server of tests/ocs/conftest.py, on the cluster: any node's URL, ``cluster = true``."""
    settings = server_settings(node_url, tmp_path / "spool.sqlite3")
    settings = dataclasses.replace(settings, redis=RedisSettings(url=settings.redis.url, cluster=True))
    async with server_with(settings) as running:
        cluster_client(running)  # charges on the pipelined cluster client
        yield running


async def restart_node(cluster: EmbeddedRedisCluster, index: int) -> None:
    """SIGTERM to one master (Redis writes its append-only file and exits), then the same node
    started again: same directory, same port, its data and cluster config from disk."""
    node = cluster.nodes[index]
    assert node.pid is not None
    pid = node.pid
    os.kill(pid, signal.SIGTERM)
    assert await asyncio.to_thread(wait_until_gone, pid, node.data_directory)
    await asyncio.to_thread(node.restart)


@pytest.mark.slow
async def test_a_master_restarted_mid_run_loses_nothing_and_the_audit_passes(
    server: RunningServer, redis_cluster: EmbeddedRedisCluster
) -> None:
    # Once traffic flows (the population is provisioned first), restart the master of slots
    # 5461-10922; calls in flight on it fail as 3004 and are retried by the elements.
    await smoke_run_with(server, 6.0, lambda: restart_node(redis_cluster, 1))
    # The restart happened under traffic: calls to the master were resent once it was back (and
    # those it was down for too long were answered 3004, which the elements retried).
    assert cluster_client(server).resends > 0


async def smoke_run_with(
    server: RunningServer, duration_seconds: float, disturb: Callable[[], Awaitable[None]]
) -> None:
    """The smoke scenario, small, against ``server``; ``disturb`` runs once traffic flows (the
    population provisioned, usage in the outboxes). Then the audit passes and nothing is lost."""
    full = load_scenario(SMOKE)
    scenario = dataclasses.replace(
        full,
        duration_seconds=duration_seconds,
        arrival_rate_per_second=15.0,
        connections=2,
        timing=dataclasses.replace(full.timing, step_seconds=0.005),
        population=dataclasses.replace(full.population, size=24),
        drain_timeout_seconds=30.0,
    )
    assert server.state.http is not None
    run = asyncio.ensure_future(
        run_scenario(
            scenario,
            diameter_host="127.0.0.1",
            diameter_port=server.port,
            api_url=server.state.http.url,
            api_token=ADMIN_TOKEN,
            seed=5,
            run_number=1,
        )
    )
    store = server.state.store
    assert store is not None
    while not run.done() and not await store.outbox_roots():
        await asyncio.sleep(0.05)
    assert not run.done()
    await disturb()
    result = await run
    report = render_text(summarize(result))
    assert result.audit.ok, report
    assert summarize(result)["problems"] == [], report
    assert result.recorder.uncertain_sessions == [], report
    assert sum(result.recorder.sessions.values()) >= 30, report


def cluster_client(running: RunningServer) -> ClusterPipelinedRedis:
    caller = running.state.store.caller if running.state.store is not None else None
    inner = getattr(caller, "caller", caller)  # behind the metrics' timing wrapper
    assert isinstance(inner, PipelinedCaller) and isinstance(inner.client, ClusterPipelinedRedis)
    return inner.client
