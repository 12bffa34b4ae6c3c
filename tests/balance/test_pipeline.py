"""The pipelined Redis client against a real private redis-server.

Each test starts its own embedded redis-server on a free port (never the machine's 6379) and drives the
client through the cases the hot path depends on: replies matched to callers in order under heavy
concurrency, a big batch written in pieces while it is still being packed, NOSCRIPT repaired,
error replies typed apart from failures, a killed server failing every pending call and a
restarted one serving the next, the pending bound, clean close.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from balance.callers import PipelinedCaller
from balance.embedded import EmbeddedRedis, pick_free_port
from balance.errors import BalanceUnavailable
from balance.pipeline import DEFAULT_FLUSH_BYTES, PipelinedRedis, RedisErrorReply, RedisReply
from tests.balance.conftest import skip_without_functions

ECHO_AND_COUNT = """
-- KEYS[1]: counter; ARGV[1]: caller's token. Returns {token, counter after INCR}.
return {ARGV[1], redis.call('INCR', KEYS[1])}
"""
REFUSE = "return redis.error_reply('INSUFFICIENT_FUNDS balance too low')"


def _port(server: EmbeddedRedis) -> int:
    assert server.port is not None
    return server.port


def _kill(server: EmbeddedRedis) -> None:
    """SIGKILL, as a crash would: no SHUTDOWN, no fsync, sockets reset."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGKILL)
    with pytest.raises(BalanceUnavailable):
        server.stop()  # reaps the child; it reports the unclean end, which is what we did


def _token_and_count(reply: RedisReply) -> tuple[bytes, int]:
    assert isinstance(reply, list) and len(reply) == 2
    token, count = reply
    assert isinstance(token, bytes) and isinstance(count, int)
    return token, count


def _integers(replies: list[RedisReply]) -> list[int]:
    assert all(isinstance(reply, int) for reply in replies)
    return [reply for reply in replies if isinstance(reply, int)]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path, port=0) as server:
        yield server


async def test_replies_reach_their_callers_in_order_under_10k_concurrent_calls(redis_server: EmbeddedRedis) -> None:
    async with PipelinedRedis(port=_port(redis_server)) as client:
        sha = client.register_script(ECHO_AND_COUNT)
        assert await client.evalsha(sha, ["{a}:counter"], ["warm-up"]) == [b"warm-up", 1]

        replies = await asyncio.gather(
            *(client.evalsha(sha, ["{a}:counter"], [f"caller-{index}"]) for index in range(10_000))
        )

        # Each caller got its own token back, and the counter shows Redis ran them in call order.
        assert replies == [[f"caller-{index}".encode(), index + 2] for index in range(10_000)]
        assert client.pending_count == 0


async def test_a_batch_past_flush_bytes_reaches_redis_before_its_loop_pass_ends(redis_server: EmbeddedRedis) -> None:
    # No reply timeout: the check below holds the loop, and must fail on its own assertion.
    async with PipelinedRedis(port=_port(redis_server), flush_bytes=1024, reply_timeout_seconds=None) as client:
        sha = client.register_script(ECHO_AND_COUNT)
        assert await client.evalsha(sha, ["{a}:counter"], ["warm-up"]) == [b"warm-up", 1]
        admin = redis_server.admin_client()
        seen_by_redis: list[int] = []

        def count_while_the_pass_runs() -> None:
            # Runs in the same loop pass as the calls below, after them: the pass's own flush has
            # not run yet, so whatever Redis has counted left in an early write.
            deadline = time.monotonic() + 2.0
            seen = 0
            while time.monotonic() < deadline:
                seen = int(admin.get("{a}:counter") or 0)
                if seen > 1:
                    break
                time.sleep(0.01)
            seen_by_redis.append(seen)

        try:
            calls = [
                asyncio.ensure_future(client.evalsha(sha, ["{a}:counter"], [f"caller-{index}"])) for index in range(500)
            ]
            asyncio.get_running_loop().call_soon(count_while_the_pass_runs)  # after the 500 calls have sent
            await asyncio.sleep(0)  # the pass that runs the calls and then the check
            assert seen_by_redis[0] > 1  # Redis ran calls of the batch before the pass that made them ended
            replies = await asyncio.gather(*calls)
        finally:
            admin.close()

        assert replies == [[f"caller-{index}".encode(), index + 2] for index in range(500)]


@pytest.mark.parametrize("flush_bytes", [DEFAULT_FLUSH_BYTES, 256], ids=["16KB", "256B"])
async def test_first_call_and_script_flush_are_repaired_by_loading_the_script(
    redis_server: EmbeddedRedis, flush_bytes: int
) -> None:
    async with PipelinedRedis(port=_port(redis_server), flush_bytes=flush_bytes) as client:
        sha = client.register_script(ECHO_AND_COUNT)
        assert await client.execute("SCRIPT", "EXISTS", sha) == [0]
        assert await client.evalsha(sha, ["{a}:counter"], ["first"]) == [b"first", 1]

        assert await client.execute("SCRIPT", "FLUSH") == b"OK"
        assert await client.execute("SCRIPT", "EXISTS", sha) == [0]
        replies = await asyncio.gather(*(client.evalsha(sha, ["{a}:counter"], [str(index)]) for index in range(500)))

        assert sorted(_token_and_count(reply)[1] for reply in replies) == list(range(2, 502))
        assert await client.execute("SCRIPT", "EXISTS", sha) == [1]


ECHO_LIBRARY = f"""#!lua name=echo_test
local function echo_and_count(KEYS, ARGV)
{ECHO_AND_COUNT}
end
redis.register_function('echo_and_count', echo_and_count)
"""


async def test_first_fcall_and_function_flush_are_repaired_by_loading_the_library(
    redis_server: EmbeddedRedis,
) -> None:
    skip_without_functions(redis_server)
    async with PipelinedRedis(port=_port(redis_server)) as client:
        client.register_function("echo_and_count", ECHO_LIBRARY)
        assert await client.execute("FUNCTION", "LIST") == []
        assert await client.fcall("echo_and_count", ["{a}:counter"], ["first"]) == [b"first", 1]

        assert await client.execute("FUNCTION", "FLUSH") == b"OK"
        # 500 calls in one loop pass: each meets "Function not found" and sends FUNCTION LOAD and
        # itself again; every load after the first is refused ("already exists"), and ignored.
        replies = await asyncio.gather(
            *(client.fcall("echo_and_count", ["{a}:counter"], [str(index)]) for index in range(500))
        )

        assert sorted(_token_and_count(reply)[1] for reply in replies) == list(range(2, 502))
        (library,) = await client.execute("FUNCTION", "LIST")
        assert b"echo_test" in library


async def test_fcall_of_an_unregistered_function_is_an_error_reply(redis_server: EmbeddedRedis) -> None:
    skip_without_functions(redis_server)
    async with PipelinedRedis(port=_port(redis_server)) as client:
        with pytest.raises(RedisErrorReply) as caught:
            await client.fcall("nowhere", [], [])
        assert caught.value.message == "ERR Function not found"


async def test_noscript_for_an_unregistered_sha_is_an_error_reply(redis_server: EmbeddedRedis) -> None:
    async with PipelinedRedis(port=_port(redis_server)) as client:
        with pytest.raises(RedisErrorReply) as caught:
            await client.evalsha("0" * 40, [], [])
        assert caught.value.code == "NOSCRIPT"


async def test_error_replies_are_typed_and_leave_the_connection_working(redis_server: EmbeddedRedis) -> None:
    async with PipelinedRedis(port=_port(redis_server)) as client:
        refuse = client.register_script(REFUSE)
        echo = client.register_script(ECHO_AND_COUNT)
        assert await client.execute("SET", "{a}:text", "not a number") == b"OK"

        results = await asyncio.gather(
            client.evalsha(refuse, ["{a}:x"], []),
            client.evalsha(echo, ["{a}:counter"], ["between"]),
            client.execute("HINCRBY", "{a}:text", "field", 1),
            return_exceptions=True,
        )

        refused, between, wrong_type = results
        assert isinstance(refused, RedisErrorReply)
        assert refused.code == "INSUFFICIENT_FUNDS"
        assert refused.message == "INSUFFICIENT_FUNDS balance too low"
        assert between == [b"between", 1]
        assert isinstance(wrong_type, RedisErrorReply)
        assert not isinstance(wrong_type, BalanceUnavailable)
        assert wrong_type.code == "WRONGTYPE"
        assert await client.evalsha(echo, ["{a}:counter"], ["after"]) == [b"after", 2]


async def test_killed_server_fails_every_pending_call_and_a_restarted_one_serves_the_next(
    redis_server: EmbeddedRedis,
) -> None:
    async with PipelinedRedis(port=_port(redis_server)) as client:
        sha = client.register_script(ECHO_AND_COUNT)
        assert await client.evalsha(sha, ["{a}:counter"], ["before"]) == [b"before", 1]

        # BLPOP holds this connection's later replies back, so every call below is surely in flight.
        blocked = asyncio.ensure_future(client.execute("BLPOP", "{a}:never", 0))
        calls = [asyncio.ensure_future(client.evalsha(sha, ["{a}:counter"], [str(index)])) for index in range(1000)]
        while client.pending_count < 1001:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # let the batch reach Redis
        assert not any(call.done() for call in calls)

        _kill(redis_server)
        results = await asyncio.gather(blocked, *calls, return_exceptions=True)
        assert all(isinstance(result, BalanceUnavailable) for result in results)
        assert client.pending_count == 0

        with pytest.raises(BalanceUnavailable):
            await client.evalsha(sha, ["{a}:counter"], ["while down"])

        redis_server.start()  # same port; the data comes back from the append-only file, the scripts do not
        assert await client.execute("SCRIPT", "EXISTS", sha) == [0]
        token, _ = _token_and_count(await client.evalsha(sha, ["{a}:counter"], ["after restart"]))
        assert token == b"after restart"


async def test_a_hung_server_fails_pending_calls_after_the_reply_timeout(redis_server: EmbeddedRedis) -> None:
    async with PipelinedRedis(port=_port(redis_server), reply_timeout_seconds=0.3) as client:
        assert await client.execute("PING") == b"PONG"
        assert redis_server.pid is not None
        os.kill(redis_server.pid, signal.SIGSTOP)  # alive and connected, but silent
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(client.execute("INCR", "{a}:counter") for _ in range(50)), return_exceptions=True
            )
            waited_seconds = time.monotonic() - started
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)

        assert all(isinstance(result, BalanceUnavailable) for result in results)
        assert "no reply" in str(results[0])
        assert 0.3 <= waited_seconds < 2.0
        # The calls may have run once Redis woke; the next call is on a new connection and works.
        assert isinstance(await client.execute("INCR", "{a}:counter"), int)


async def test_an_idle_connection_is_not_dropped_by_the_reply_timeout(redis_server: EmbeddedRedis) -> None:
    async with PipelinedRedis(port=_port(redis_server), reply_timeout_seconds=0.1) as client:
        assert await client.execute("INCR", "{a}:counter") == 1
        connection_before = await client.execute("CLIENT", "ID")
        await asyncio.sleep(0.3)  # idle for longer than the timeout: nothing pending, nothing to time out
        assert await client.execute("CLIENT", "ID") == connection_before
        assert await client.execute("INCR", "{a}:counter") == 2


async def test_close_during_connect_leaves_no_connection(redis_server: EmbeddedRedis) -> None:
    client = PipelinedRedis(port=_port(redis_server))
    call = asyncio.ensure_future(client.execute("PING"))
    await asyncio.sleep(0)  # the call is connecting

    await client.close()

    with pytest.raises(BalanceUnavailable, match="closed"):
        await call
    admin = redis_server.admin_client()
    try:
        for _ in range(100):  # the server sees the close a moment after we make it
            if admin.info("clients")["connected_clients"] == 1:  # the admin client alone
                break
            await asyncio.sleep(0.01)
        assert admin.info("clients")["connected_clients"] == 1
    finally:
        admin.close()


async def test_calls_over_the_pending_bound_fail_at_once(redis_server: EmbeddedRedis) -> None:
    async with (
        PipelinedRedis(port=_port(redis_server), max_pending=10) as client,
        PipelinedRedis(port=_port(redis_server)) as other,
    ):
        blocked = asyncio.ensure_future(client.execute("BLPOP", "{a}:queue", 0))
        calls = [asyncio.ensure_future(client.execute("INCR", "{a}:counter")) for _ in range(9)]
        await asyncio.sleep(0.05)

        with pytest.raises(BalanceUnavailable, match="pending"):
            await client.execute("INCR", "{a}:counter")

        assert await other.execute("RPUSH", "{a}:queue", "wake") == 1
        assert await blocked == [b"{a}:queue", b"wake"]
        assert sorted(_integers(await asyncio.gather(*calls))) == list(range(1, 10))
        assert await client.execute("INCR", "{a}:counter") == 10


async def test_a_cancelled_caller_does_not_shift_the_others_replies(redis_server: EmbeddedRedis) -> None:
    async with PipelinedRedis(port=_port(redis_server)) as client:
        sha = client.register_script(ECHO_AND_COUNT)
        await client.evalsha(sha, ["{a}:counter"], ["warm-up"])
        calls = [asyncio.ensure_future(client.evalsha(sha, ["{a}:counter"], [str(index)])) for index in range(300)]
        await asyncio.sleep(0)  # every call is queued
        for call in calls[::3]:
            call.cancel()

        results = await asyncio.gather(*calls, return_exceptions=True)

        for index, result in enumerate(results):
            if index % 3 == 0:
                assert isinstance(result, asyncio.CancelledError)
            else:
                assert result == [str(index).encode(), index + 2]
        assert await client.execute("GET", "{a}:counter") == b"301"


async def test_close_lets_pending_calls_finish_then_refuses_new_ones(redis_server: EmbeddedRedis) -> None:
    client = PipelinedRedis(port=_port(redis_server))
    assert await client.execute("PING") == b"PONG"
    calls = [asyncio.ensure_future(client.execute("INCR", "{a}:counter")) for _ in range(100)]
    await asyncio.sleep(0)

    await client.close()

    assert sorted(_integers(await asyncio.gather(*calls))) == list(range(1, 101))
    with pytest.raises(BalanceUnavailable, match="closed"):
        await client.execute("INCR", "{a}:counter")


async def test_unix_socket(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path, port=None, unix_socket=True) as server:
        assert server.unix_socket_path is not None
        async with PipelinedRedis(unix_socket_path=str(server.unix_socket_path)) as client:
            sha = client.register_script(ECHO_AND_COUNT)
            # The first calls meet NOSCRIPT and are retried; every caller still gets its own reply.
            replies = await asyncio.gather(
                *(client.evalsha(sha, ["{a}:counter"], [str(index)]) for index in range(100))
            )
            pairs = [_token_and_count(reply) for reply in replies]
            assert [token for token, _ in pairs] == [str(index).encode() for index in range(100)]
            assert sorted(count for _, count in pairs) == list(range(1, 101))


async def test_connect_refused_is_balance_unavailable() -> None:
    async with PipelinedRedis(port=pick_free_port(), connect_timeout_seconds=1.0) as client:
        with pytest.raises(BalanceUnavailable, match="cannot connect"):
            await client.execute("PING")


async def test_an_unparseable_stream_fails_pending_calls() -> None:
    """A peer that is not Redis (here a real TCP server answering garbage) is an infrastructure failure."""

    async def answer_garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"?this is not RESP\r\n")
        await writer.drain()
        await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(answer_garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with PipelinedRedis(port=port) as client:
            results = await asyncio.gather(client.execute("PING"), client.execute("PING"), return_exceptions=True)
            assert all(isinstance(result, BalanceUnavailable) for result in results)
            assert "unparseable" in str(results[0])
    finally:
        server.close()
        await server.wait_closed()


class _RefusingTransport:
    """The real transport, except that ``write`` raises, as a transport that cannot send would."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def write(self, data: bytes) -> None:
        raise RuntimeError("unable to perform operation: the handle is closed")

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def abort(self) -> None:
        self.transport.abort()

    def close(self) -> None:
        self.transport.close()


async def test_a_write_that_raises_fails_the_calls_as_unavailable_and_the_next_call_reconnects(
    redis_server: EmbeddedRedis,
) -> None:
    async with PipelinedRedis(port=_port(redis_server), flush_bytes=64) as client:
        assert await client.execute("PING") == b"PONG"
        connection = client._connection
        assert connection is not None and connection._transport is not None
        connection._transport = _RefusingTransport(connection._transport)  # type: ignore[assignment]

        # Past flush_bytes: the early write raises inside the call that crossed it, which then
        # fails as a lost connection would (calls after it in the pass open a new one).
        with pytest.raises(BalanceUnavailable, match="write to Redis failed"):
            await client.execute("SET", "key", "v" * 100)

        assert await client.execute("PING") == b"PONG"  # a new connection
        assert client._connection is not connection


@pytest.mark.parametrize(
    "reply", [b"-LOADING Redis is loading the dataset in memory", b"-MASTERDOWN Link with MASTER is down"]
)
async def test_a_redis_not_ready_to_serve_is_unavailable_not_a_script_error(reply: bytes) -> None:
    """A restarted Redis answers LOADING while it replays its append-only file: a caller must see it
    as unavailable (try again later), as redis-py does, not as a broken invariant."""

    async def answer_not_ready(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(reply + b"\r\n")
        await writer.drain()
        await reader.read(1024)
        writer.close()

    server = await asyncio.start_server(answer_not_ready, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with PipelinedRedis(port=port) as client:
            with pytest.raises(BalanceUnavailable, match=reply[1:8].decode()):
                await PipelinedCaller(client).execute("SMEMBERS", "ocs:outbox")
    finally:
        server.close()
        await server.wait_closed()
