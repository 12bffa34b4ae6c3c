"""A tiny pipelined asyncio Redis client for the charging hot path.

Theory of operation: one connection (``asyncio.Protocol``) carries every call. A call packs its
command (``balance.resp``: ``FCALL name`` or ``EVALSHA sha`` packed once per function or script,
the lengths from a table instead of hiredis's ``sprintf`` per part), appends it to an outgoing
buffer and a FIFO of pending futures, and awaits its future. The first call in a loop pass
schedules one ``flush`` with ``call_soon``, so the commands issued in that pass leave together:
under load dozens of calls share one syscall and one Redis read. A pass that has packed
``flush_bytes`` (16 KB, what Redis reads from a fresh client at a time) writes them at once and
goes on: Redis starts on them while the rest of the pass is still packing, instead of idling
until the whole batch is built (with 384 calls in flight, Redis's main thread went from 81-88 %
busy to 92-94 %: bench/balance.py prints it, ``--flush-bytes 0`` for the old way). Redis answers
the commands of one connection in order (RESP, "pipelining"), so each reply parsed by
``hiredis.Reader`` resolves the oldest pending future. This is why it is fast: redis-py spends
about 100 us of Python per call on its connection pool and command machinery; here a call is a
pack, two appends and an await (the numbers are in bench/redis_client.py and the README). The
module is compiled with mypyc in the default install (ocs/build.py).

Rules it keeps:

- A Redis error reply (``-ERR ...``, ``-NOSCRIPT ...``, a script's ``redis.error_reply``) is a
  ``RedisErrorReply``: the command ran (or was refused) and the connection is fine.
- An infrastructure failure (cannot connect, connection lost, a write that fails, unparseable
  stream, too many calls pending, client closed) is ``BalanceUnavailable``, and callers never see
  redis or hiredis types. A call refused before anything was sent (cannot connect, too many
  pending, closed) is its subclass ``BalanceUnreached``: it certainly did not apply. When the
  connection is lost (or dropped for silence) every pending call fails at once, though Redis may
  run what it already received, even later: the money scripts carry a deadline for that, and the
  store settles such a call (balance/store.py, RULES.md "Deadlines"). The next call reconnects.
- EVALSHA of a script registered with ``register_script`` survives a ``SCRIPT FLUSH`` or a Redis
  restart: on NOSCRIPT the call sends SCRIPT LOAD and the EVALSHA again, back to back on the same
  connection, so the retry is answered after the load without waiting a round trip in between.
  FCALL of a function registered with ``register_function`` does the same with FUNCTION LOAD of
  its library when Redis answers that the function is not found.
- The number of pending calls is bounded; over the bound a call fails at once (as the server
  answers 3004 over its own in-flight limit rather than queueing, DESIGN.md) instead of growing
  memory while Redis is stalled.
- A cancelled caller leaves its slot in the FIFO; its reply is read and dropped, so the order of
  the others is kept. Per-call deadlines are therefore the caller's (``balance.deadline.within``,
  which needs no current task, or ``asyncio.timeout``); the
  client's own deadline is for the connection: calls pending and not one byte from Redis for
  ``reply_timeout_seconds`` (a hung server, a half-open TCP connection) drops the connection and
  fails them all. Blocking commands (BLPOP and the like) therefore do not belong on this client.

Everything off the hot path (provisioning, audits, admin) uses redis-py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final, TypeAlias

import hiredis

from balance import resp
from balance.errors import BalanceUnavailable, BalanceUnreached
from balance.resp import CommandPart

# Twice the number of calls the server can have in flight at 75k calls/s with a 100 ms Redis
# stall; each pending call holds one future and one packed command (a few hundred bytes), so the
# bound keeps a stalled Redis from costing more than a few MB.
DEFAULT_MAX_PENDING: Final = 16_384
# A charging answer is due long before the client's Tx timer (RFC 4006 section 13, default
# 10 s) fires; a connect that takes longer than this is treated as Redis being unavailable.
DEFAULT_CONNECT_TIMEOUT_SECONDS: Final = 2.0
# redis.conf "busy-reply-threshold" (5000 ms): past it Redis itself reports a script as stuck. A
# connection with calls pending that hears nothing for this long (a hung server, a half-open TCP
# connection) is dropped, so its calls fail as BalanceUnavailable (3004) before the client's Tx
# timer (RFC 4006 section 13, 10 s) fires, instead of waiting for TCP to notice.
DEFAULT_REPLY_TIMEOUT_SECONDS: Final = 5.0
# The silence check runs this many times per reply timeout (so it fires within 1.25 timeouts).
STALL_CHECKS_PER_TIMEOUT: Final = 4
# Packed commands waiting for the end of the loop pass are written at once from this size, so
# Redis runs the first pieces of a big batch while the client packs the rest. A measured choice:
# 8, 16 and 32 KB did alike in bench/balance.py; 16 KB is Redis's PROTO_IOBUF_LEN, its first read
# from a client (it reads more once the client's query buffer has grown).
DEFAULT_FLUSH_BYTES: Final = 16 * 1024
# How long ``close`` waits for pending replies before cutting the connection.
DEFAULT_CLOSE_TIMEOUT_SECONDS: Final = 5.0


# What Redis answers about functions, read here for both clients: redis-py hands over an error's
# text without its "ERR " code, this client with it.
def function_not_found(message: str) -> bool:
    """FCALL of a function Redis does not have (Redis 7.0: "ERR Function not found")."""
    return message.removeprefix("ERR ") == "Function not found"


def library_exists(message: str) -> bool:
    """FUNCTION LOAD of a library Redis has ("ERR Library '<name>' already exists")."""
    return message.endswith("already exists")


def unknown_command(message: str) -> bool:
    """A command Redis does not have, FCALL before 7.0: "ERR unknown command 'FCALL', with args..."."""
    return message.removeprefix("ERR ").startswith("unknown command")


class RedisErrorReply(Exception):
    """Redis answered this command with an error reply; the connection is still usable."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        """The error prefix: ``ERR``, ``NOSCRIPT``, ``WRONGTYPE``, or a script's own code."""
        return self.message.split(" ", 1)[0]


# RESP2 as hiredis decodes it: status and bulk strings are bytes, nil is None, an error nested in
# an array (a script may return one) is a RedisErrorReply value.
RedisReply: TypeAlias = bytes | int | RedisErrorReply | list["RedisReply"] | None

_ASKING: Final = resp.pack((b"ASKING",))


class _StreamCorrupt(Exception):
    """hiredis could not parse the stream: the connection cannot be resynchronised."""


def _retrieve(future: asyncio.Future[RedisReply]) -> None:
    # A future whose caller gave up still gets its exception read, so asyncio logs nothing.
    if not future.cancelled():
        future.exception()


class _Connection(asyncio.Protocol):
    """One Redis connection: pending futures in command order, writes coalesced per loop pass
    (in pieces of ``flush_bytes`` at most, give or take a command)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reply_timeout_seconds: float | None, flush_bytes: int) -> None:
        self._loop = loop
        self._flush_bytes = flush_bytes if flush_bytes > 0 else sys.maxsize  # 0: one write per loop pass
        self._reply_timeout_seconds = reply_timeout_seconds
        self._stall_timer: asyncio.TimerHandle | None = None
        # Since when we have been waiting with calls pending and no byte from Redis.
        self._silent_since = loop.time()
        self._reader = hiredis.Reader(protocolError=_StreamCorrupt, replyError=RedisErrorReply)
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[bytes] = []
        self._outgoing_bytes = 0
        self._flush_scheduled = False
        self.pending: deque[asyncio.Future[RedisReply]] = deque()
        self.failure: BalanceUnavailable | None = None
        self.lost: asyncio.Future[None] = loop.create_future()

    # --- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # Each flush is a whole batch; Nagle would only delay it.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm_stall_check()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        pending = self.pending
        self._silent_since = self._loop.time()
        reader.feed(data)
        try:
            reply = reader.gets()
            while reply is not False:  # False is hiredis's "need more data"; RESP2 has no booleans
                future = pending.popleft()
                if not future.done():
                    if isinstance(reply, RedisErrorReply):
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
                reply = reader.gets()
        except _StreamCorrupt as error:
            self.abort(f"unparseable reply from Redis: {error}")
        except IndexError:
            self.abort("Redis sent a reply to no command")

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_pending(f"connection to Redis lost: {exc}" if exc else "connection to Redis closed")
        self._transport = None
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if not self.lost.done():
            self.lost.set_result(None)

    # --- client API -----------------------------------------------------------------------------
    def send(self, command: bytes) -> asyncio.Future[RedisReply]:
        future: asyncio.Future[RedisReply] = self._loop.create_future()
        if not self.pending:
            self._silent_since = self._loop.time()
        self.pending.append(future)
        self._outgoing.append(command)
        self._outgoing_bytes += len(command)
        if self._outgoing_bytes >= self._flush_bytes:
            self._write_outgoing()  # the pass's scheduled flush, if any, finds less or nothing
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def abort(self, reason: str) -> None:
        """Fail every pending call now and drop the connection without flushing."""
        self._fail_pending(reason)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # --- internals ------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._flush_scheduled = False
        self._write_outgoing()

    def _write_outgoing(self) -> None:
        outgoing = self._outgoing
        self._outgoing_bytes = 0
        transport = self._transport
        if transport is None or self.failure is not None or not outgoing or transport.is_closing():
            outgoing.clear()  # a closing connection fails its pending calls in connection_lost
            return
        data = outgoing[0] if len(outgoing) == 1 else b"".join(outgoing)
        outgoing.clear()
        try:
            transport.write(data)
        except Exception as error:  # the callers get BalanceUnavailable, as for a lost connection
            self.abort(f"write to Redis failed: {error}")

    def _arm_stall_check(self) -> None:
        if self._reply_timeout_seconds is not None:
            interval = self._reply_timeout_seconds / STALL_CHECKS_PER_TIMEOUT
            self._stall_timer = self._loop.call_later(interval, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_timer = None
        if self.failure is not None or self._reply_timeout_seconds is None:
            return
        if self.pending and self._loop.time() - self._silent_since > self._reply_timeout_seconds:
            self.abort(f"no reply from Redis in {self._reply_timeout_seconds} s")
            return
        self._arm_stall_check()

    def _fail_pending(self, reason: str) -> None:
        if self.failure is None:
            self.failure = BalanceUnavailable(reason)
        self._outgoing.clear()
        self._outgoing_bytes = 0
        pending = self.pending
        while pending:
            future = pending.popleft()
            if not future.done():
                future.set_exception(BalanceUnavailable(reason))


class PipelinedRedis:
    """EVALSHA, FCALL (and any other command) over one pipelined connection; reconnects on next use."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        unix_socket_path: str | os.PathLike[str] | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        reply_timeout_seconds: float | None = DEFAULT_REPLY_TIMEOUT_SECONDS,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,  # 0 or less: one write per loop pass
    ) -> None:
        self.host = host
        self.port = port
        self.unix_socket_path = unix_socket_path
        self.max_pending = max_pending
        self.connect_timeout_seconds = connect_timeout_seconds
        self.reply_timeout_seconds = reply_timeout_seconds
        self.flush_bytes = flush_bytes
        self._scripts: dict[str, bytes] = {}
        self._libraries: dict[str, bytes] = {}  # function name -> the library's source
        # "EVALSHA sha" and "FCALL name", packed once per script and function (balance.resp).
        self._prepared_evalsha: dict[str, resp.Prepared] = {}
        self._prepared_fcall: dict[str, resp.Prepared] = {}
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._closed = False

    async def __aenter__(self) -> PipelinedRedis:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def pending_count(self) -> int:
        connection = self._connection
        return len(connection.pending) if connection is not None else 0

    def register_script(self, source: str | bytes) -> str:
        """Remember a script's source so NOSCRIPT can be repaired; returns its SHA1 for ``evalsha``."""
        encoded = source.encode() if isinstance(source, str) else source
        sha = hashlib.sha1(encoded, usedforsecurity=False).hexdigest()
        self._scripts[sha] = encoded
        return sha

    def register_function(self, function: str, library_source: str | bytes) -> None:
        """Remember the library that defines ``function``, so that ``fcall`` can load it when
        Redis does not know the function (never loaded, FUNCTION FLUSH, a new Redis)."""
        self._libraries[function] = library_source.encode() if isinstance(library_source, str) else library_source

    async def evalsha(
        self, sha: str, keys: Sequence[CommandPart], args: Sequence[CommandPart], *, asking: bool = False
    ) -> RedisReply:
        """EVALSHA; ``asking`` sends ASKING right before it (a Redis Cluster ASK redirection:
        balance/pipeline_cluster.py), and before its retry after a repair."""
        prepared = self._prepared_evalsha.get(sha)
        if prepared is None:
            prepared = self._prepared_evalsha[sha] = resp.prepare(b"EVALSHA", sha)
        return await self._call_repairing(resp.pack_call(prepared, keys, args), self._script_load_for, sha, asking)

    async def fcall(
        self, function: str, keys: Sequence[CommandPart], args: Sequence[CommandPart], *, asking: bool = False
    ) -> RedisReply:
        """FCALL; a RedisErrorReply "unknown command" if Redis has no functions (before 7.0)."""
        prepared = self._prepared_fcall.get(function)
        if prepared is None:
            prepared = self._prepared_fcall[function] = resp.prepare(b"FCALL", function)
        return await self._call_repairing(
            resp.pack_call(prepared, keys, args), self._function_load_for, function, asking
        )

    def _script_load_for(self, sha: str, error: RedisErrorReply) -> bytes | None:
        source = self._scripts.get(sha)
        if source is None or error.code != "NOSCRIPT":
            return None
        return resp.pack((b"SCRIPT", b"LOAD", source))

    def _function_load_for(self, function: str, error: RedisErrorReply) -> bytes | None:
        source = self._libraries.get(function)
        if source is None or not function_not_found(error.message):
            return None
        return resp.pack((b"FUNCTION", b"LOAD", source))

    async def _call_repairing(
        self,
        command: bytes,
        repair_for: Callable[[str, RedisErrorReply], bytes | None],
        name: str,
        asking: bool = False,
    ) -> RedisReply:
        """``command``; if Redis answers an error that ``repair_for`` knows how to repair (a
        script or function it does not have), the repair and ``command`` again, back to back."""
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = await self._connect()
        try:
            return await self._submit(connection, command, asking)
        except RedisErrorReply as error:
            repair = repair_for(name, error)
            if repair is None:
                raise
        # The connection may have been replaced while we waited; repair and retry on the current one.
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = await self._connect()
        load = self._submit(connection, repair, asking)
        retry = self._submit(connection, command, asking)
        try:
            await load
        except RedisErrorReply as error:
            if not library_exists(error.message):  # loaded meanwhile, by another call or client
                retry.add_done_callback(_retrieve)
                raise
        except BaseException:
            retry.add_done_callback(_retrieve)
            raise
        return await retry

    async def execute(self, *parts: CommandPart, asking: bool = False) -> RedisReply:
        """Any command, pipelined like ``evalsha`` (for the few non-script calls of the hot path)."""
        command = resp.pack(parts)
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = await self._connect()
        return await self._submit(connection, command, asking)

    async def execute_all(self, commands: Sequence[tuple[CommandPart, ...]]) -> list[RedisReply]:
        """Every command of ``commands`` at once, answers in order, an error reply as its
        ``RedisErrorReply`` in its place: one future a command and no task, for a caller that
        sends thousands together (``balance.cycle.cut_many``). Nothing is repaired here: a
        caller that gets NOSCRIPT or an unknown function sends that one again by ``fcall``."""
        connection = self._connection
        if connection is None or connection.failure is not None:
            connection = await self._connect()
        futures: list[asyncio.Future[RedisReply]] = []
        try:
            for command in commands:
                futures.append(self._submit(connection, resp.pack(command)))
        except BaseException:
            for future in futures:
                future.add_done_callback(_retrieve)
            raise
        replies: list[RedisReply] = []
        for answer in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(answer, RedisErrorReply) or not isinstance(answer, BaseException):
                replies.append(answer)
            else:
                raise answer  # the connection's failure: every call of it failed the same way
        return replies

    def masters(self) -> list[PipelinedRedis]:
        """The clients of every node holding data: this one (a cluster client lists its masters)."""
        return [self]

    async def close(self, timeout_seconds: float = DEFAULT_CLOSE_TIMEOUT_SECONDS) -> None:
        """Refuse new calls, let pending ones finish (up to the timeout), then close the connection."""
        self._closed = True
        connection = self._connection
        if connection is None:
            return
        if connection.pending:
            await asyncio.wait(list(connection.pending), timeout=timeout_seconds)
        if connection.pending:
            connection.abort("Redis client closed before the reply came")
        else:
            connection.close()
        await connection.lost

    # --- internals ------------------------------------------------------------------------------
    def _submit(self, connection: _Connection, command: bytes, asking: bool = False) -> asyncio.Future[RedisReply]:
        if connection.failure is not None:
            raise BalanceUnreached(str(connection.failure))
        if self._closed:
            raise BalanceUnreached("Redis client is closed")
        if len(connection.pending) >= self.max_pending:
            raise BalanceUnreached(f"more than {self.max_pending} Redis calls pending")
        if asking:
            # The same connection, right before the command: Redis lets the next command in a
            # slot being imported run there (cluster spec, "ASK redirection"). Its "+OK" is dropped.
            connection.send(_ASKING).add_done_callback(_retrieve)
        return connection.send(command)

    async def _connect(self) -> _Connection:
        # Every caller that finds no connection awaits the same attempt, so they all resume in one
        # loop pass and their commands leave in one batch, in the order they were issued.
        if self._closed:
            raise BalanceUnreached("Redis client is closed")
        attempt = self._connecting
        if attempt is None:
            attempt = asyncio.ensure_future(self._open())
            attempt.add_done_callback(self._connect_finished)
            self._connecting = attempt
        try:
            return await asyncio.shield(attempt)  # a cancelled caller does not cancel the others' attempt
        except BalanceUnavailable as error:
            raise BalanceUnreached(str(error)) from error.__cause__

    def _connect_finished(self, attempt: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # read here too, in case every caller was cancelled

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        reply_timeout_seconds, flush_bytes = self.reply_timeout_seconds, self.flush_bytes

        def new_connection() -> _Connection:
            return _Connection(loop, reply_timeout_seconds, flush_bytes)

        try:
            async with asyncio.timeout(self.connect_timeout_seconds):
                if self.unix_socket_path is not None:
                    path = os.fspath(self.unix_socket_path)
                    _, connection = await loop.create_unix_connection(new_connection, path)
                else:
                    _, connection = await loop.create_connection(new_connection, self.host, self.port)
        except (OSError, TimeoutError) as error:
            where = self.unix_socket_path or f"{self.host}:{self.port}"
            raise BalanceUnavailable(f"cannot connect to Redis at {where}: {error}") from error
        if self._closed:  # close() ran while we were connecting: nobody would ever close this one
            connection.close()
            raise BalanceUnavailable("Redis client is closed")
        self._connection = connection
        return connection
