"""Sessions closed by Tcc supervision in one worker are forgotten by the worker that carried them
(ocs serve --workers 2; ocs/event_transport.py "Closed sessions").

The supervision duty runs in one worker; a session whose connection another worker holds was
kept, before, in that worker's notifier for ever: its ``ocs_sessions_open`` never came down, and
the next top-up sent a Re-Auth-Request to a session the OCS had closed. What no event reports
(a session's CCR-T answered by another worker) the notifier's sweep forgets after two Tcc.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from redis.asyncio import Redis

from ocs.charging.notifier import SessionNotifier
from ocs.cli.client import ApiClient
from ocs.event_transport import SESSIONS, SESSIONS_PER_ENTRY, STREAM_KEY, RedisStreamTransport
from ocs.events import SessionActive
from ocs.metrics import Metrics
from protocol.aio import DiameterClient
from protocol.capabilities import LocalIdentity
from protocol.message import Message
from tests.balance.conftest import PROCESS_DEADLINE_SECONDS, embedded_redis, redis_client
from tests.ocs.conftest import CLIENT
from tests.ocs.test_api import alice
from tests.ocs.test_credit_control import call_to, ccr, code, seconds
from tests.ocs.test_embedded_server import ServerProcess, servers
from tests.ocs.test_workers import MSISDN, _fresh_request, _metrics, _until, start_workers

__all__ = ["embedded_redis", "redis_client", "servers"]


async def _connect_away_from(server: ServerProcess, port: int, worker: object) -> tuple[DiameterClient, object]:
    """A Diameter connection that SO_REUSEPORT gave to a worker other than ``worker``."""
    for _ in range(40):
        opened = len(server.events("peer_open"))
        client = await DiameterClient.connect("127.0.0.1", port, CLIENT)
        await _until("the peer open", lambda: len(server.events("peer_open")) > opened)  # noqa: B023
        holder = server.events("peer_open")[opened]["worker"]
        if holder != worker:
            return client, holder
        await client.close()
    raise AssertionError(f"40 connections all landed on worker {worker}")


async def _open_sessions(url: str, token: str, worker: object) -> float | None:
    found = re.search(rf'^ocs_sessions_open{{worker="{worker}"}} (\S+)$', await _metrics(url, token), re.MULTILINE)
    return float(found.group(1)) if found else None


async def test_a_session_closed_by_tcc_in_another_worker_is_forgotten_where_it_was_carried(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    # Validity-Time 1 s: the session left open is closed by Tcc (2 s) within the test.
    server, diameter_port, url, supervisor = await start_workers(
        tmp_path, servers, "session_supervision", OCS_QUOTA_VALIDITY_SECONDS="1"
    )
    async with ApiClient(url, token=server.token) as api:
        identities = [{"kind": "msisdn", "value": MSISDN}]
        body = alice(buckets=[{"kind": "main", "amount": "0.09"}], identities=identities)
        assert (await api.create_subscriber(body)).status == 201
    client, holder = await _connect_away_from(server, diameter_port, supervisor)
    received: list[Message] = []
    client.on_request = lambda _, message: received.append(message)
    asked = seconds("Requested-Service-Unit", 300)
    silent = await client.request(ccr("silent", "INITIAL_REQUEST", 0, asked, call_to("4917612345678"), msisdn=MSISDN))
    assert silent.find("Final-Unit-Indication") is not None  # a top-up would re-authorise it

    await _until("closed by Tcc", lambda: server.events("sessions_expired", worker=supervisor))
    await _until_open_sessions(url, server.token, holder, 0.0)

    # A live final-unit session beside it: the top-up's RAR goes to it, and to it alone.
    live = await client.request(ccr("live", "INITIAL_REQUEST", 0, asked, call_to("4917612345678"), msisdn=MSISDN))
    assert live.find("Final-Unit-Indication") is not None
    status, answer = await _fresh_request(
        url, "POST", "/subscribers/alice/topups", server.token, {"id": "card-1", "amount": "0.01"}
    )
    assert status == 201, answer
    await _until("the RAR", lambda: received)
    assert [message.get("Session-Id") for message in received] == ["live"]
    assert not server.events("notify_sent", session_id="silent")
    await client.close()
    assert server.stop() == 0


async def test_a_session_ended_through_another_worker_is_swept_where_it_began(
    tmp_path: Path, servers: list[ServerProcess]
) -> None:
    """Its CCR-T came on a connection of the other worker: no event says so to the first, whose
    sweep (every Tcc, 2 s here) forgets it after two Tcc without a request."""
    server, diameter_port, url, _ = await start_workers(
        tmp_path, servers, "session_supervision", OCS_QUOTA_VALIDITY_SECONDS="1"
    )
    async with ApiClient(url, token=server.token) as api:
        identities = [{"kind": "msisdn", "value": MSISDN}]
        assert (await api.create_subscriber(alice(identities=identities))).status == 201
    first, began_on = await _connect_away_from(server, diameter_port, None)
    second, _ = await _connect_away_from(server, diameter_port, began_on)
    asked = seconds("Requested-Service-Unit", 60)
    began = await first.request(ccr("moved", "INITIAL_REQUEST", 0, asked, call_to("4917612345678"), msisdn=MSISDN))
    assert code(began) == 2001
    ended = await second.request(ccr("moved", "TERMINATION_REQUEST", 1, seconds("Used-Service-Unit", 5), msisdn=MSISDN))
    assert code(ended) == 2001
    await _until_open_sessions(url, server.token, began_on, 1.0)  # in its snapshot first
    await _until_open_sessions(url, server.token, began_on, 0.0)
    await _until("the sweep's line", lambda: server.events("idle_sessions_forgotten", worker=began_on))
    await first.close()
    await second.close()
    assert server.stop() == 0


async def _until_open_sessions(url: str, token: str, worker: object, expected: float) -> None:
    """Polls /metrics (each worker's snapshot is at most a second old) for the worker's gauge."""
    deadline = time.monotonic() + PROCESS_DEADLINE_SECONDS
    value = await _open_sessions(url, token, worker)
    while value != expected:
        assert time.monotonic() < deadline, f"worker {worker} still carries {value} open sessions"
        await asyncio.sleep(0.2)
        value = await _open_sessions(url, token, worker)


def test_the_sweep_forgets_sessions_not_answered_here_for_more_than_two_passes() -> None:
    """A session whose end no event reports (its CCR-T answered by another worker) leaves the
    notifier after SWEEP_IDLE_PASSES sweeps without a request; one still answered stays."""
    notifier = SessionNotifier(LocalIdentity("ocs.test", "test"), lambda: (), Metrics())
    notifier.observe(SessionActive("will", "ended-elsewhere", "pgw.test", "test"))
    notifier.observe(SessionActive("will", "still-here", "pgw.test", "test"))
    assert (notifier.sweep(), notifier.sweep()) == (0, 0)  # not yet two Tcc: the engine may hold them
    notifier.observe(SessionActive("will", "still-here", "pgw.test", "test"))  # its CCR-U, answered here
    assert notifier.sweep() == 1
    assert notifier.open_sessions == 1 and notifier.account_re_authorized("will") == 0  # no connection
    assert (notifier.sweep(), notifier.sweep()) == (0, 1)
    assert notifier.open_sessions == 0


def test_closed_sessions_are_forgotten_only_where_they_were_carried() -> None:
    notifier = SessionNotifier(LocalIdentity("ocs.test", "test"), lambda: (), Metrics())
    notifier.observe(SessionActive("will", "carried", "pgw.test", "test"))
    assert notifier.forget_sessions(["carried", "answered-by-another-worker"]) == 1
    assert notifier.open_sessions == 0


async def test_closed_sessions_travel_on_the_stream_to_the_other_workers_only(redis_client: Redis) -> None:
    """Two workers' ends of the stream on one real Redis: what one sends, the other hands to its
    notifier, in entries of at most SESSIONS_PER_ENTRY ids; the sender skips its own; an entry
    that is not a list of ids is logged and skipped."""
    closing, carrying = RedisStreamTransport(redis_client, "worker-0"), RedisStreamTransport(redis_client, "worker-1")
    heard: dict[str, list[list[str]]] = {"worker-0": [], "worker-1": []}
    for transport in (closing, carrying):
        transport.on_sessions_closed = heard[transport.origin].append  # type: ignore[assignment]
        await transport.start_at_end()
    session_ids = [f"closed-{index}" for index in range(SESSIONS_PER_ENTRY + 1)]
    closing.send_closed_sessions(session_ids)
    await closing.flush()
    await redis_client.xadd(STREAM_KEY, {"origin": "worker-0", "kind": SESSIONS, "data": b'{"not": "a list"}'})
    readers = [asyncio.create_task(transport.run_reader()) for transport in (closing, carrying)]
    try:
        await _until("the entries read", lambda: carrying.received == 3)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
    assert heard["worker-1"] == [session_ids[:SESSIONS_PER_ENTRY], session_ids[SESSIONS_PER_ENTRY:]]
    assert heard["worker-0"] == []
