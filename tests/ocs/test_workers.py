"""``ocs serve --workers 2`` as an operator runs it: a supervisor, two worker processes on the
same ports, the embedded Redis (ocs/supervisor.py, ocs/worker.py).

- A top-up through the worker that does not hold the session's connection still sends the RAR,
  from the worker that does (the account event travels on the Redis stream).
- A worker killed with SIGKILL under load is restarted with the same Origin-State-Id; the
  traffic goes on and the audit passes; its lease-held duties move to the other worker within
  the lease time.
- /health and /metrics speak for the whole server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from ocs.cli.client import ApiClient
from ocs.leases import DEFAULT_LEASE_SECONDS
from protocol.aio import DiameterClient
from protocol.message import Message
from tests.balance.conftest import PROCESS_DEADLINE_SECONDS
from tests.ocs.conftest import CLIENT
from tests.ocs.test_api import alice
from tests.ocs.test_credit_control import call_to, ccr, code, seconds
from tests.ocs.test_embedded_server import ServerProcess, servers

__all__ = ["servers"]

WORKERS = {"OCS_SERVER_WORKERS": "2"}
MSISDN = "4915100000009"


async def _until(what: str, check: object) -> None:
    deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
    while not (callable(check) and check()):
        assert time.monotonic() < deadline, f"not in time: {what}"
        await asyncio.sleep(0.02)


def _workers_up(server: ServerProcess) -> dict[int, int]:
    """Worker index -> pid of the workers started so far (the last start of each)."""
    return {int(line["worker"]): int(line["pid"]) for line in server.events("worker_started")}  # type: ignore[call-overload]


async def start_workers(
    tmp_path: Path, servers: list[ServerProcess], duty: str, **environment: str
) -> tuple[ServerProcess, int, str, object]:
    """``ocs serve --workers 2`` up, with both workers listening and ``duty`` taken: the server,
    its Diameter port, its HTTP URL and the index of the worker holding the duty."""
    server = ServerProcess.start(tmp_path, **environment, **WORKERS)
    servers.append(server)
    diameter_port, http_port = server.port("listening"), server.port("http_listening")
    await _until("two workers listening", lambda: len(server.events("http_listening")) == 2)
    await _until(f"{duty} taken", lambda: server.events("duty_taken", duty=duty))
    holder = server.events("duty_taken", duty=duty)[0]["worker"]
    return server, diameter_port, f"http://127.0.0.1:{http_port}", holder


async def _fresh_request(url: str, method: str, path: str, token: str, body: object = None) -> tuple[int, object]:
    """One request on a new connection: SO_REUSEPORT hashes each new connection to a worker."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.request(method, url + path, json=body, headers=headers) as response:
            return response.status, await response.json()


async def test_a_top_up_on_one_worker_sends_the_rar_from_the_worker_holding_the_connection(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    server = ServerProcess.start(tmp_path, **WORKERS)
    servers.append(server)
    diameter_port, http_port = server.port("listening"), server.port("http_listening")
    await _until("two workers listening", lambda: len(server.events("http_listening")) == 2)
    url = f"http://127.0.0.1:{http_port}"
    async with ApiClient(url, token=server.token) as api:
        identities = [{"kind": "msisdn", "value": MSISDN}]
        body = alice(buckets=[{"kind": "main", "amount": "0.09"}], identities=identities)
        assert (await api.create_subscriber(body)).status == 201
    client = await DiameterClient.connect("127.0.0.1", diameter_port, CLIENT)
    received: list[Message] = []
    client.on_request = lambda _, message: received.append(message)
    await _until("the peer open", lambda: server.events("peer_open"))
    holder = server.events("peer_open")[0]["worker"]
    asked = seconds("Requested-Service-Unit", 300)
    # Top-ups on new connections until one lands on the other worker: it notifies no session
    # itself (notified_sessions counts this process's requests), yet the RAR must come.
    for attempt in range(60):
        session = f"call-{attempt}"  # a new call each time: its grant is final (little money)
        initial = await client.request(
            ccr(session, "INITIAL_REQUEST", 0, asked, call_to("4917612345678"), msisdn=MSISDN)
        )
        assert initial.find("Final-Unit-Indication") is not None
        status, answer = await _fresh_request(
            url, "POST", "/subscribers/alice/topups", server.token, {"id": f"card-{attempt}", "amount": "0.01"}
        )
        assert status == 201 and isinstance(answer, dict), answer
        expected = attempt + 1
        await _until("the RAR", lambda: len(received) == expected)  # noqa: B023 (awaited at once)
        assert received[-1].get("Session-Id") == session
        if answer["notified_sessions"] == 0:
            break  # the other worker took the top-up; the holder sent the RAR
        ended = await client.request(
            ccr(session, "TERMINATION_REQUEST", 1, seconds("Used-Service-Unit", 0), msisdn=MSISDN)
        )
        assert code(ended) == 2001  # its reservation returned: the next call is final again
    else:
        raise AssertionError("60 top-ups all landed on the worker holding the connection")
    sent = server.events("notify_sent", session_id=session)
    assert len(sent) == 1 and sent[0]["worker"] == holder
    assert received[-1].command_code == 258  # RAR
    await client.close()
    assert server.stop() == 0


async def test_a_killed_worker_is_restarted_and_its_duties_move_within_the_lease_time(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    # Validity-Time 1 s: the calls the kill cuts are closed by Tcc (2 s) before the audit.
    server, diameter_port, url, writer = await start_workers(
        tmp_path, servers, "spool_writer", OCS_QUOTA_VALIDITY_SECONDS="1"
    )
    origin_state_id = server.wait_for("supervising")["origin_state_id"]
    async with ApiClient(url, token=server.token) as api:
        assert (await api.create_subscriber(alice(buckets=[{"kind": "main", "amount": "100000.00"}]))).status == 201

    stop = asyncio.Event()
    answered: list[int | None] = []  # the Result-Code of each TERMINATION

    async def load(connection: int) -> None:
        """Calls on one connection until told to stop; a connection the kill cuts opens again."""
        number = 0
        while not stop.is_set():
            try:
                client = await DiameterClient.connect("127.0.0.1", diameter_port, CLIENT)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                while not stop.is_set():
                    number += 1
                    session = f"load-{connection}-{number}"
                    asked = seconds("Requested-Service-Unit", 60)
                    begin = ccr(session, "INITIAL_REQUEST", 0, asked, call_to("4917612345678"))
                    if code(await client.request(begin)) != 2001:
                        continue
                    end = ccr(session, "TERMINATION_REQUEST", 1, seconds("Used-Service-Unit", 7))
                    answered.append(code(await client.request(end)))
            except Exception:  # the connection's worker was killed: reconnect, as a PGW does
                await asyncio.sleep(0.05)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close(), 2)

    loads = [asyncio.create_task(load(index)) for index in range(6)]
    await _until("traffic", lambda: len(answered) > 50)
    victim = _workers_up(server)[int(writer)]  # type: ignore[call-overload]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    await _until("the worker restarted", lambda: len(server.events("worker_started", worker=writer)) == 2)
    restarted = server.events("worker_started", worker=writer)[1]
    assert restarted["origin_state_id"] == origin_state_id  # a peer sees the same node, not a reboot
    await _until("the spool writer taken again", lambda: len(server.events("duty_taken", duty="spool_writer")) >= 2)
    taken_after = time.monotonic() - killed_at
    # Within the lease time, plus one attempt interval (a third of it), plus scheduling slack.
    assert taken_after < DEFAULT_LEASE_SECONDS * 4 / 3 + 2.0, taken_after
    assert server.events("worker_exited", worker=writer)
    count = len(answered)
    await _until("traffic after the restart", lambda: len(answered) > count + 50)
    stop.set()
    await asyncio.gather(*loads)

    await _poll("both workers alive", lambda: _fresh_request(url, "GET", "/health", server.token), _whole)
    # The calls the kill cut end by Tcc; then nothing is held and every invariant holds.
    report = await _poll(
        "the audit", lambda: _fresh_request(url, "GET", "/audit?sessions_ended=true", server.token), _ok
    )
    assert report["findings"] == []
    metrics = await _metrics(url, server.token)
    assert 'ocs_worker_restarts_total{worker="' + str(writer) + '"} 1.0' in metrics
    assert 'worker="0"' in metrics and 'worker="1"' in metrics
    assert server.stop() == 0


def _whole(answer: dict[str, object]) -> bool:
    return answer["status"] == "ok" and answer["workers"] == {"expected": 2, "alive": 2}


def _ok(answer: dict[str, object]) -> bool:
    return answer["ok"] is True


async def _poll(
    what: str,
    ask: Callable[[], Awaitable[tuple[int, object]]],
    good: Callable[[dict[str, object]], bool],
) -> dict[str, object]:
    deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
    while True:
        status, answer = await ask()
        assert status == 200 and isinstance(answer, dict), answer
        if good(answer):
            return answer
        assert time.monotonic() < deadline, f"not in time: {what}: {answer}"
        await asyncio.sleep(0.2)


async def _metrics(url: str, token: str) -> str:
    connector = aiohttp.TCPConnector(force_close=True)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(url + "/metrics", headers=headers) as response,
    ):
        return await response.text()
