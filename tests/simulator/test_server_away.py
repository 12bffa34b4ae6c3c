"""The server goes away. While the simulator provisions: the API client retries for a bounded time
(a cut link that comes back costs nothing, and no account is created twice), and a server that
never answers ends the run with one line on stderr and exit code 2, never a traceback. During
traffic: requests the server applied but could not answer before it "died" are sent again once it
is back, so the simulator's ledger and the engine agree to the micro on data allowances."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis
from simulator.http_api import OcsApi
from simulator.population import CustomerType, build_population, provision
from simulator.records import SessionOutcome
from simulator.report import render_text, summarize
from simulator.runner import RunResult, run_scenario
from simulator.scenario import Scenario, load_scenario
from tests.conftest import ADMIN_TOKEN
from tests.ocs.conftest import RunningServer, running_server
from tests.simulator.link import Link

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "scenarios" / "smoke.toml"
CONNECTION_LOSS = ROOT / "config" / "scenarios" / "connection-loss.toml"


def data_on_allowances() -> Scenario:
    """Data sessions only, on mobile lines that all have a data allowance, and no faults of the
    simulator's own: what goes wrong is the server's crash."""
    base = load_scenario(CONNECTION_LOSS)
    return dataclasses.replace(
        base,
        duration_seconds=3.0,
        arrival_rate_per_second=15.0,
        connections=2,
        mix={"data": 1.0},
        faults=dataclasses.replace(base.faults, abandon_share=0.0, connection_drop_mean_seconds=0.0),
        timing=dataclasses.replace(base.timing, step_seconds=0.01),
        population=dataclasses.replace(
            base.population,
            size=16,
            shares={CustomerType.MOBILE_PREPAID: 0.5, CustomerType.MOBILE_POSTPAID: 0.5},
            data_allowance_share=1.0,
            data_allowance_octets=8_000_000,
            company_children=1,
        ),
    )


async def crash(link: Link, *, lost: int) -> None:
    """Once traffic flows: ``lost`` requests are applied without their answers getting out, then
    the link is cut (the server died) and comes back a moment later (it restarted)."""
    while link.requests_in < 20:
        await asyncio.sleep(0.001)
    link.lose_answers = True
    applied = link.requests_in
    while link.requests_in < applied + lost:
        await asyncio.sleep(0.001)
    link.cut()
    link.lose_answers = False
    await asyncio.sleep(0.5)
    await link.restore()


@pytest.fixture
async def hanging_up_endpoint() -> AsyncIterator[int]:
    """An HTTP port that reads each request and closes the connection without an answer."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65_536)
        writer.close()

    listener = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1]
    finally:
        listener.close()
        await listener.wait_closed()


async def test_provisioning_goes_on_after_the_server_comes_back(server: RunningServer) -> None:
    assert server.state.http is not None and server.state.store is not None
    link = Link(server.state.http.port, diameter=False)
    await link.start()
    population = build_population(load_scenario(SMOKE).population, random.Random(3), 4)
    try:
        async with OcsApi(f"http://127.0.0.1:{link.port}", token=ADMIN_TOKEN, retry_limit_seconds=30.0) as api:
            provisioning = asyncio.create_task(provision(api, population.subscribers))
            while link.requests_in < 5:  # some creates are on their way: the server "dies"
                await asyncio.sleep(0.001)
            link.cut()
            await asyncio.sleep(0.3)
            assert not provisioning.done()
            await link.restore()
            subscribers = await provisioning
            for subscriber in subscribers:
                view = await api.balance(subscriber.account_id)
                assert view.available_micros >= 0
    finally:
        await link.close()
    # Each account was created once: its credits are its opening money, not twice that.
    for subscriber in subscribers:
        balance = await server.state.store.balance(subscriber.account_id, 0)
        assert balance is not None and balance.credits_micros == subscriber.main_micros


async def test_a_server_that_keeps_hanging_up_ends_the_run_with_one_line(hanging_up_endpoint: int) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--scenario",
        str(SMOKE),
        "--api",
        f"http://127.0.0.1:{hanging_up_endpoint}",
        "--diameter",
        "127.0.0.1:9",
        "--api-retry-seconds",
        "0.5",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ),
        cwd=ROOT,
    )
    stdout, stderr = await process.communicate()
    lines = stderr.decode().splitlines()
    assert process.returncode == 2, stderr.decode()
    assert len(lines) == 1 and "Traceback" not in stderr.decode(), stderr.decode()
    assert lines[0].startswith("run failed: ApiUnreachable: ")
    assert "did not answer POST /customers" in lines[0] and "ServerDisconnectedError" in lines[0]
    assert stdout == b""


async def run_through_link(
    embedded_redis: EmbeddedRedis,
    tmp_path: Path,
    scenario: Scenario,
    fault: Callable[[Link], Awaitable[None]],
    *,
    seed: int,
    run_number: int,
) -> RunResult:
    """The scenario against the real server (Validity-Time 2 s: Tcc 4 s) with its Diameter
    traffic through a ``Link`` that ``fault`` breaks; the API is reached directly."""
    async with running_server(embedded_redis.url, tmp_path / "spool.sqlite3", validity_seconds=2) as server:
        assert server.state.http is not None
        link = Link(server.port, diameter=True)
        await link.start()
        breaking = asyncio.create_task(fault(link))
        try:
            result = await run_scenario(
                scenario,
                diameter_host="127.0.0.1",
                diameter_port=link.port,
                api_url=server.state.http.url,
                api_token=ADMIN_TOKEN,
                seed=seed,
                run_number=run_number,
            )
        finally:
            await link.close()
    assert breaking.done() and breaking.exception() is None
    return result


async def test_requests_applied_before_a_crash_are_counted_once_the_server_is_back(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    result = await run_through_link(
        embedded_redis, tmp_path, data_on_allowances(), lambda link: crash(link, lost=3), seed=12, run_number=5
    )
    summary = summarize(result)
    report = render_text(summary)
    assert result.recorder.faults["reconnects"] >= 1 and result.recorder.retransmissions >= 3, report
    assert result.recorder.uncertain_sessions == [], report
    assert summary["problems"] == [], report


async def hang_near_the_end(link: Link, traffic_seconds: float) -> None:
    """The server hangs for the last half second of traffic and after: Credit-Control requests
    reach nothing, so the sessions in progress fail with their reservations held, which Tcc
    (4 s) releases well after the last session has ended."""
    while link.requests_in < 1:
        await asyncio.sleep(0.001)
    await asyncio.sleep(traffic_seconds - 0.5)
    link.swallow_requests = True


async def test_the_end_of_run_check_waits_for_tcc_after_failed_sessions(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    base = data_on_allowances()
    scenario = dataclasses.replace(
        base,
        data_mean_octets={10: 30_000_000, 20: 20_000_000},  # long sessions: many in progress at the hang
        # Tx of 1 s: the hang lasts to the end, so the sessions in it fail whatever Tx is; a shorter
        # one made answers slowed by a loaded machine count as lost, though the server applied them.
        timing=dataclasses.replace(base.timing, step_seconds=0.05, request_timeout_seconds=1.0, retransmissions=1),
    )
    result = await run_through_link(
        embedded_redis,
        tmp_path,
        scenario,
        lambda link: hang_near_the_end(link, scenario.duration_seconds),
        seed=13,
        run_number=6,
    )
    summary = summarize(result)
    report = render_text(summary)
    failed = sum(count for (_, outcome), count in result.recorder.sessions.items() if outcome is SessionOutcome.FAILED)
    assert failed >= 1 and result.recorder.faults["sessions abandoned"] == 0, report
    assert f"{failed} failed and 0 abandoned session(s) held: all was released" in str(summary["tcc_wait"]), report
    assert result.audit.ok and summary["problems"] == [], report
