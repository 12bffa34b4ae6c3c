"""The server goes away while the simulator provisions: the API client retries for a bounded time
(a cut link that comes back costs nothing, and no account is created twice), and a server that
never answers ends the run with one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from simulator.http_api import OcsApi
from simulator.population import build_population, provision
from simulator.scenario import load_scenario
from tests.ocs.conftest import RunningServer
from tests.simulator.link import Link

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "config" / "scenarios" / "smoke.toml"


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
        async with OcsApi(f"http://127.0.0.1:{link.port}", retry_limit_seconds=30.0) as api:
            provisioning = asyncio.create_task(provision(api, population.subscribers))
            while link.requests_in < 5:  # some creates are on their way: the server "dies"
                await asyncio.sleep(0.001)
            link.cut()
            await asyncio.sleep(0.3)
            assert not provisioning.done()
            await link.restore()
            await provisioning
            for subscriber in population.subscribers:
                view = await api.balance(subscriber.account_id)
                assert view.available_micros >= 0
    finally:
        await link.close()
    # Each account was created once: its credits are its opening money, not twice that.
    for subscriber in population.subscribers:
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
    assert "did not answer POST /subscribers" in lines[0] and "ServerDisconnectedError" in lines[0]
    assert stdout == b""
