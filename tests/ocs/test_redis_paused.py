"""A 3004 answer means nothing was applied, also when Redis wakes up after it (issue 17, faults 1).

The whole server over TCP on its own redis-server, which the test freezes with SIGSTOP: alive,
its socket accepting bytes, silent. A CCR sent meanwhile waits for the store's reply timeout, is
answered 3004 DIAMETER_TOO_BUSY, and the client does not retry (an SMS refused, a call cut). Then
Redis is let go and runs what it was sent while frozen. Whatever it runs must change nothing: the
balance, the usage records and the session are as before the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from pathlib import Path

from balance.embedded import EmbeddedRedis
from balance.pipeline import DEFAULT_REPLY_TIMEOUT_SECONDS
from ocs.db.engine import DATABASE_FILE_NAME
from protocol.message import Message, avp
from tests.ocs.conftest import server_settings, server_with
from tests.ocs.test_credit_control import EUR, balance_of, call_to, ccr, code, events, seconds, sms_to

_SMS_PRICE_MICROS = 90_000  # config/tariffs.toml, mobile_prepaid: an SMS to a national mobile
# Long enough for the server to give up (reply timeout) and settle (balance/store.py), bounded.
_ANSWER_WAIT_SECONDS = DEFAULT_REPLY_TIMEOUT_SECONDS + 5


async def _ping(redis_server: EmbeddedRedis) -> None:
    """A round trip on a new connection: Redis has read what the frozen connections held first."""
    reader, writer = await asyncio.open_connection("127.0.0.1", redis_server.port)
    writer.write(b"PING\r\n")
    await writer.drain()
    assert await reader.readline() == b"+PONG\r\n"
    writer.close()


def _spooled_sessions(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path.with_name(DATABASE_FILE_NAME))) as database:
        return [row[0] for row in database.execute("SELECT session_id FROM usage_records ORDER BY session_id")]


def _renamed(message: Message, session_id: str) -> Message:
    """The same request under another Session-Id."""
    avps = [avp("Session-Id", session_id) if item.code == 263 else item for item in message.avps]
    return Message(message.command_code, message.flags, message.application_id, 0, 0, avps)


async def test_requests_answered_3004_while_redis_sleeps_change_nothing_when_it_wakes(tmp_path: Path) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis")
    await asyncio.to_thread(redis_server.start)
    try:
        async with server_with(server_settings(redis_server.url, tmp_path / "spool.sqlite3")) as server:
            await server.subscriber("zoe", "4915100000031", micros=EUR)
            client = await server.client()
            sms = ccr(
                "sms-paused",
                "EVENT_REQUEST",
                0,
                events("Requested-Service-Unit", 1),
                sms_to("4917612345678"),
                msisdn="4915100000031",
                context="32274@3gpp.org",
            )
            call = ccr(
                "call-paused",
                "INITIAL_REQUEST",
                0,
                seconds("Requested-Service-Unit", 120),
                call_to("4917612345678"),
                msisdn="4915100000031",
            )
            # One SMS first: the subscriber's identity is looked up and cached, so what Redis is
            # sent while frozen is the charge itself.
            assert code(await client.request(_renamed(sms, "sms-first"))) == 2001
            assert server.state.store is not None
            assert redis_server.pid is not None
            os.kill(redis_server.pid, signal.SIGSTOP)
            try:
                async with asyncio.timeout(_ANSWER_WAIT_SECONDS):
                    answers = await asyncio.gather(client.request(sms), client.request(call))
            finally:
                os.kill(redis_server.pid, signal.SIGCONT)
            assert [code(answer) for answer in answers] == [3004, 3004]
            # Redis now runs what it received while frozen; wait until it has caught up.
            await _ping(redis_server)
            await asyncio.sleep(0.3)
            assert await balance_of(server, "zoe") == EUR - _SMS_PRICE_MICROS
            # No usage record of the refused requests, in the outbox or already in the spool.
            assert server.state.spool is not None
            await server.state.spool.drain_once(server.state.store, batch_size=100)
            assert await server.state.store.usage_records() == []
            assert _spooled_sessions(tmp_path / "spool.sqlite3") == ["sms-first"]
            view = await server.state.store.balance("zoe", 0)
            assert view is not None and (view.committed_micros, view.held_micros, view.reservations) == (
                _SMS_PRICE_MICROS,
                0,
                0,
            )
            # The session was never opened: a later request of it is unknown (5002).
            update = ccr(
                "call-paused",
                "UPDATE_REQUEST",
                1,
                seconds("Used-Service-Unit", 60),
                call_to("4917612345678"),
                msisdn="4915100000031",
            )
            assert code(await client.request(update)) == 5002
            await client.close()
    finally:
        await asyncio.to_thread(redis_server.stop)
