"""How the store reaches Redis: run a script, run a plain command, close.

Theory of operation: ``BalanceStore`` speaks to Redis only through a ``ScriptCaller``, so the same
store runs on redis-py (a single Redis or a Redis Cluster, which routes each call by its first
key) or on the pipelined client of ``balance.pipeline`` (one Redis, the hot path). Both callers
translate failures the same way, and nothing above them imports redis: a connection problem is
``BalanceUnavailable`` (the outcome is unknown; every script is idempotent, so a retry is safe),
an error reply is ``BalanceScriptError`` (the script refused to write). Replies come back as
``str`` or ``int`` (or lists of them).

redis-py's asyncio client bounds its own waits with ``asyncio.timeout`` (its pool, its reads), as
``RedisPyCaller.run`` bounds a script call, and that needs a current task; a CCR is answered
without one (ocs/in_flight.py), so a call made where no task runs (a balance query or a refund
of the request path) is run as a task of its own.

The pipelined caller tells its ``observer`` (the server's metrics: ``CallObserver``) of every
call it made, timed inside its own methods: a wrapper caller would put a coroutine of its own
around every call of the hot path. It is compiled with the charge's path (ocs/build.py).

Both run an operation as a function of the library (FCALL, balance/scripts.py) unless made with
``functions=False``; the first time Redis answers that it does not know FCALL (before 7.0), a
caller runs the EVAL scripts from then on. Either way a script or library Redis does not have is
loaded and the call sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from time import perf_counter
from typing import Protocol

import redis.asyncio as redis_asyncio
import redis.exceptions as redis_exceptions
from redis.asyncio.cluster import ClusterNode

from balance.errors import BalanceScriptError, BalanceUnavailable
from balance.pipeline import (
    PipelinedRedis,
    RedisErrorReply,
    RedisReply,
    function_not_found,
    library_exists,
    unknown_command,
)
from balance.pipeline_cluster import ClusterPipelinedRedis
from balance.scripts import Script

Reply = str | int | None | list["Reply"]
_POOL_SIZE = 32  # redis-py connections for the off-hot-path work; plenty for admin and tests
# Commands that change nothing, or whose repetition changes nothing more: one retry on a fresh
# connection is safe for them when a pooled connection turns out dead (e.g. after a Redis
# restart). LTRIM, HSET of counters and the like are never retried.
RETRY_SAFE_COMMANDS = frozenset(
    {
        "GET",
        "HGETALL",
        "HKEYS",
        "HMGET",
        "SMEMBERS",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "LRANGE",
        "LLEN",
        "SCAN",
        "EXISTS",
        "PING",
        "SADD",
        "ZADD",
        "ZREM",
        "INFO",
        "DBSIZE",
    }
)


def hash_fields(reply: Reply) -> dict[str, str]:
    """An HGETALL reply (RESP's field, value list) as a dict; empty for a missing key."""
    if not isinstance(reply, list):
        return {}
    return {str(reply[index]): str(reply[index + 1]) for index in range(0, len(reply) - 1, 2)}


class CallObserver(Protocol):
    """Told of each call a caller made: the script's operation ("charge") or the command's name
    in lower case ("get"), its seconds, and whether it failed (the server's metrics,
    ocs/metrics.py ``Metrics.redis_call``). A cancelled call is not told."""

    def __call__(self, operation: str, seconds: float, *, failed: bool = False) -> None: ...


class ScriptCaller(Protocol):
    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply: ...

    async def execute(self, *parts: str) -> Reply: ...

    async def scan_keys(self, pattern: str) -> list[str]: ...

    async def close(self) -> None: ...


def _text(reply: RedisReply | object) -> Reply:
    if isinstance(reply, bytes):
        return reply.decode("utf-8")
    if isinstance(reply, list):
        return [_text(item) for item in reply]
    if isinstance(reply, dict):  # redis-py's HGETALL: flatten back to RESP's field, value list
        return [_text(part) for pair in reply.items() for part in pair]
    if isinstance(reply, (set, frozenset)):  # redis-py's SMEMBERS
        return [*sorted(str(_text(member)) for member in reply)]
    if reply is None or isinstance(reply, (str, int)):
        return reply
    return str(reply)


class RedisPyCaller:
    """redis-py asyncio: a single Redis or a Redis Cluster (``cluster=True``)."""

    def __init__(
        self,
        client: redis_asyncio.Redis | redis_asyncio.RedisCluster,
        *,
        functions: bool = True,
        reply_timeout_seconds: float | None = None,
    ) -> None:
        self.client = client
        self.functions = functions  # FCALL until Redis says it has no functions
        # A script call (retry included) with no reply by then fails as BalanceUnavailable, as the
        # pipelined client's calls do; None waits for ever. Plain commands are not bounded.
        self.reply_timeout_seconds = reply_timeout_seconds

    @classmethod
    def from_url(
        cls, url: str, *, cluster: bool = False, functions: bool = True, reply_timeout_seconds: float | None = None
    ) -> RedisPyCaller:
        if cluster:
            client = redis_asyncio.RedisCluster.from_url(url, decode_responses=True)
            return cls(client, functions=functions, reply_timeout_seconds=reply_timeout_seconds)
        # Callers beyond the pool wait for a connection rather than fail (redis-py 8 raises
        # "Too many connections" with its default pool).
        pool = redis_asyncio.BlockingConnectionPool.from_url(url, max_connections=_POOL_SIZE, decode_responses=True)
        return cls(
            redis_asyncio.Redis(connection_pool=pool), functions=functions, reply_timeout_seconds=reply_timeout_seconds
        )

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        if asyncio.current_task() is None:  # module docstring: redis-py needs a current task
            return await asyncio.ensure_future(self.run(script, keys, args))
        try:
            async with asyncio.timeout(self.reply_timeout_seconds):
                try:
                    reply = await self._call(script, keys, args)
                except (redis_exceptions.ConnectionError, OSError):
                    if not script.retry_safe:
                        raise
                    reply = await self._call(script, keys, args)
        except TimeoutError:  # asyncio's; redis-py cancelled mid-call drops that connection
            raise BalanceUnavailable(f"{script.operation}: no reply from Redis in time") from None
        except (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError) as error:
            raise BalanceUnavailable(f"{script.operation}: {error}") from None
        except redis_exceptions.ResponseError as error:
            raise BalanceScriptError(f"{script.operation}: {error}") from None
        except redis_exceptions.RedisError as error:  # redis-py's own (a cluster it cannot route, say)
            raise BalanceUnavailable(f"{script.operation}: {error}") from None
        return _text(reply)

    async def _call(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> object:
        if self.functions:
            try:
                return await self._fcall(script, keys, args)
            except redis_exceptions.ResponseError as error:
                if not unknown_command(str(error)):
                    raise
                self.functions = False
        return await self._evalsha(script, keys, args)

    async def _fcall(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> object:
        try:
            return await self._send_fcall(script, keys, args)
        except redis_exceptions.ResponseError as error:
            if not function_not_found(str(error)):
                raise
        try:
            await self._load(keys[0], "FUNCTION", script.library.source)
        except redis_exceptions.ResponseError as error:
            if not library_exists(str(error)):  # loaded meanwhile, by another call or client
                raise
        return await self._send_fcall(script, keys, args)

    async def _send_fcall(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> object:
        if isinstance(self.client, redis_asyncio.RedisCluster):
            # Sent to the node of its first key, as redis-py routes EVALSHA: left to redis-py, an
            # FCALL's keys are asked of a node (COMMAND GETKEYS) before every call, and a Redis
            # without FCALL fails in redis-py's own command table instead of answering "unknown
            # command". A MOVED answer is followed as for any command.
            node = await self._node_of(keys[0])
            return await self.client.execute_command(
                "FCALL", script.function, len(keys), *keys, *args, target_nodes=node
            )
        return await self.client.fcall(script.function, len(keys), *keys, *args)

    async def _node_of(self, key: str) -> ClusterNode:
        assert isinstance(self.client, redis_asyncio.RedisCluster)
        await self.client.initialize()  # at once if it is; the slots map is needed to route by key
        node = self.client.get_node_from_key(key)
        if node is None:
            raise redis_exceptions.ConnectionError(f"no cluster node serves the slot of {key}")
        return node

    async def _evalsha(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> object:
        try:
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)
        except redis_exceptions.NoScriptError:
            await self._load(keys[0], "SCRIPT", script.source)
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)

    async def _load(self, first_key: str, kind: str, source: str) -> None:
        """SCRIPT LOAD or FUNCTION LOAD (``kind``) of ``source``; on a cluster to the node that
        owns the key's slot, where the call will run."""
        if isinstance(self.client, redis_asyncio.RedisCluster):
            await self.client.execute_command(kind, "LOAD", source, target_nodes=await self._node_of(first_key))
        elif kind == "FUNCTION":
            await self.client.function_load(source)
        else:
            await self.client.script_load(source)

    async def execute(self, *parts: str) -> Reply:
        if asyncio.current_task() is None:
            return await asyncio.ensure_future(self.execute(*parts))
        if isinstance(self.client, redis_asyncio.RedisCluster) and len(parts) > 1:
            # redis-py's cluster routes a command with a subcommand (FUNCTION LIST: to every
            # master) only when the two come as one word; it splits them again to send them.
            pair = f"{parts[0]} {parts[1]}".upper()
            if pair in self.client.command_flags:
                parts = (pair, *parts[2:])
        try:
            try:
                return _text(await self.client.execute_command(*parts))
            except (redis_exceptions.ConnectionError, OSError):
                if parts[0].upper() not in RETRY_SAFE_COMMANDS:
                    raise
                return _text(await self.client.execute_command(*parts))
        except (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError) as error:
            raise BalanceUnavailable(f"{parts[0]}: {error}") from None
        except redis_exceptions.ResponseError as error:
            raise BalanceScriptError(f"{parts[0]}: {error}") from None
        except (redis_exceptions.RedisError, redis_exceptions.RedisClusterException) as error:
            raise BalanceUnavailable(f"{parts[0]}: {error}") from None

    async def scan_keys(self, pattern: str) -> list[str]:
        """Every key matching ``pattern``; on a cluster, from every master. SCAN changes nothing,
        so a pooled connection found dead (e.g. after a Redis restart) gets one retry, as
        ``execute`` gives the commands of ``RETRY_SAFE_COMMANDS``."""
        if asyncio.current_task() is None:
            return await asyncio.ensure_future(self.scan_keys(pattern))
        try:
            try:
                return await self._scan(pattern)
            except (redis_exceptions.ConnectionError, OSError):
                return await self._scan(pattern)
        except (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError) as error:
            raise BalanceUnavailable(f"SCAN: {error}") from None

    async def _scan(self, pattern: str) -> list[str]:
        return sorted({str(_text(name)) async for name in self.client.scan_iter(match=pattern, count=1_000)})

    async def close(self) -> None:
        await self.client.aclose()


# Error replies of a Redis that cannot serve yet or now (still replaying its append-only file, a
# replica without its master, a script over its time, a master whose replicas lag past
# min-replicas-max-lag): like no answer, the caller may try again later; redis-py maps LOADING to
# a ConnectionError the same way (BusyLoadingError).
UNAVAILABLE_REPLIES = ("LOADING", "MASTERDOWN", "BUSY", "NOREPLICAS")


def _reply_error(operation: str, error: RedisErrorReply) -> Exception:
    if error.message.split(" ", 1)[0] in UNAVAILABLE_REPLIES:
        return BalanceUnavailable(f"{operation}: {error}")
    return BalanceScriptError(f"{operation}: {error}")


class PipelinedCaller:
    """The pipelined client of ``balance.pipeline``: many calls per loop pass on one connection;
    on a Redis Cluster, ``balance.pipeline_cluster``'s: one such connection per master, each call
    routed by its first key. The cluster client may resend a call after a node failed it if it is
    safe to run twice: a script that is ``retry_safe``, a command of ``RETRY_SAFE_COMMANDS``."""

    def __init__(self, client: PipelinedRedis | ClusterPipelinedRedis, *, functions: bool = True) -> None:
        self.client = client
        self.functions = functions  # FCALL until Redis says it has no functions
        self._registered: set[str] = set()
        self.observer: CallObserver | None = None  # told of every call (module docstring)

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        # The observer's timing is written out here, not in a wrapper: a coroutine of its own
        # around every call of the hot path cost some 4 us a call (bench/README.md).
        started = perf_counter()
        try:
            if self.functions:
                if script.function not in self._registered:
                    self.client.register_function(script.function, script.library.source)
                    self._registered.add(script.function)
                try:
                    reply = _text(await self._fcall(script, keys, args))
                except RedisErrorReply as error:
                    if not unknown_command(error.message):
                        raise
                    self.functions = False
                else:
                    self._observe(script.operation.value, started, False)
                    return reply
            if script.sha not in self._registered:
                self.client.register_script(script.source)
                self._registered.add(script.sha)
            reply = _text(await self._evalsha(script, keys, args))
        except RedisErrorReply as error:
            self._observe(script.operation.value, started, True)
            raise _reply_error(script.operation, error) from None
        except Exception:  # BalanceUnavailable, passed on unchanged
            self._observe(script.operation.value, started, True)
            raise
        self._observe(script.operation.value, started, False)
        return reply

    def _observe(self, name: str, started: float, failed: bool) -> None:
        observer = self.observer
        if observer is not None:
            observer(name, perf_counter() - started, failed=failed)

    async def run_all(self, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[Reply]:
        """``run`` of each (keys, args) of ``calls``, answers in order. On one Redis they leave
        together, with no task each (``PipelinedRedis.execute_all``); a call answered with an
        error (the function not loaded yet, a script's refusal) goes again through ``run``,
        which loads the function or raises as it would have. On a cluster, or once Redis said it
        has no functions, each is a ``run``."""
        if isinstance(self.client, ClusterPipelinedRedis) or not self.functions:
            return list(await asyncio.gather(*(self.run(script, keys, args) for keys, args in calls)))
        if script.function not in self._registered:
            self.client.register_function(script.function, script.library.source)
            self._registered.add(script.function)
        operation = script.operation.value
        started = perf_counter()
        try:
            replies = await self.client.execute_all(
                [(b"FCALL", script.function, len(keys), *keys, *args) for keys, args in calls]
            )
        except Exception:
            for _ in calls:
                self._observe(operation, started, True)
            raise
        answers: list[Reply] = []
        for (keys, args), reply in zip(calls, replies, strict=True):
            if isinstance(reply, RedisErrorReply):
                answers.append(await self.run(script, keys, args))  # observed there
            else:
                self._observe(operation, started, False)
                answers.append(_text(reply))
        return answers

    async def execute_all(self, commands: Sequence[tuple[str, ...]]) -> list[Reply]:
        """``execute`` of each command, answers in order, sent together as ``run_all`` sends."""
        if isinstance(self.client, ClusterPipelinedRedis):
            return list(await asyncio.gather(*(self.execute(*command) for command in commands)))
        started = perf_counter()
        try:
            replies = await self.client.execute_all(commands)
        except Exception:
            for command in commands:
                self._observe(command[0].lower(), started, True)
            raise
        for command, reply in zip(commands, replies, strict=True):
            self._observe(command[0].lower(), started, isinstance(reply, RedisErrorReply))
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, RedisErrorReply):
                raise _reply_error(command[0], reply)
        return [_text(reply) for reply in replies]

    # The client's own coroutine, not one of ours around it (one await fewer per call).
    def _fcall(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Awaitable[RedisReply]:
        if isinstance(self.client, ClusterPipelinedRedis):
            return self.client.fcall(script.function, keys, args, idempotent=script.retry_safe)
        return self.client.fcall(script.function, keys, args)

    def _evalsha(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Awaitable[RedisReply]:
        if isinstance(self.client, ClusterPipelinedRedis):
            return self.client.evalsha(script.sha, keys, args, idempotent=script.retry_safe)
        return self.client.evalsha(script.sha, keys, args)

    async def execute(self, *parts: str) -> Reply:
        started = perf_counter()
        try:
            if isinstance(self.client, ClusterPipelinedRedis):
                idempotent = parts[0].upper() in RETRY_SAFE_COMMANDS
                reply = _text(await self.client.execute(*parts, idempotent=idempotent))
            else:
                reply = _text(await self.client.execute(*parts))
        except RedisErrorReply as error:
            self._observe(parts[0].lower(), started, True)
            raise _reply_error(parts[0], error) from None
        except Exception:
            self._observe(parts[0].lower(), started, True)
            raise
        self._observe(parts[0].lower(), started, False)
        return reply

    async def scan_keys(self, pattern: str) -> list[str]:
        """Every key matching ``pattern``, from every master on a cluster."""
        started = perf_counter()
        try:
            return await self._scan_keys(pattern)
        finally:
            self._observe("scan", started, False)

    async def _scan_keys(self, pattern: str) -> list[str]:
        if isinstance(self.client, ClusterPipelinedRedis):
            await self.client.load_slots()
        found: set[str] = set()
        for node in self.client.masters():
            cursor = "0"
            while True:
                try:
                    reply = await node.execute("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
                except RedisErrorReply as error:
                    raise BalanceScriptError(f"SCAN: {error}") from None
                if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], list):
                    raise BalanceScriptError(f"SCAN: unexpected reply {reply!r}")
                cursor = str(_text(reply[0]))
                found.update(str(_text(name)) for name in reply[1])
                if cursor == "0":
                    break
        return sorted(found)

    async def close(self) -> None:
        await self.client.close()
