"""The pipelined client on a Redis Cluster: one pipelined connection per master, calls routed by slot.

Theory of operation: ``ClusterPipelinedRedis`` keeps one ``PipelinedRedis`` (balance/pipeline.py:
one connection, commands coalesced per loop pass) per master, and a slot map, 16384 entries each
naming the client of the master that serves the slot. The map comes from ``CLUSTER SLOTS`` (Redis
6.2 and 7 both answer it), asked of any node it knows, at the first call. A call is routed by the
slot of its first key (CRC16 of the key's hash tag, ``redis.crc.key_slot``), so every charge of a
hierarchy goes to the master of its root's tag, and the calls of one loop pass bound for one
master still leave in one write. The cost over the single client is one CRC16 and one list index
per call.

What the cluster answers instead of a reply (the cluster specification, "Redirection and
resharding"):

- ``MOVED <slot> <host:port>``: the slot lives elsewhere now (a resharding, a failover). The
  slot's entry is pointed at the new master at once, the whole map is asked for again in the
  background (a MOVED seldom comes alone), and the call is sent to the new master.
- ``ASK <slot> <host:port>``: the slot is being migrated and this key is already at the target.
  The call is sent once to that node, preceded on the same connection by ``ASKING``; the map is
  not changed (the slot still belongs to the source until the migration ends).
- ``TRYAGAIN`` (a multi-key command during a migration) and ``CLUSTERDOWN`` (the cluster lost a
  master and has not failed over yet): the call is sent again after a short backoff, with a fresh
  map for CLUSTERDOWN.

At most ``MAX_REDIRECTIONS`` redirections per call (a loop of MOVED means a broken cluster).

The map is asked of one node at a time, each given ``MAP_ASK_SECONDS``: a node that stops
answering without closing its connections (a frozen host, one cut off by the network; a failover
follows) would otherwise hold every map load, and with it every call waiting for a new map, for
its connection's whole reply timeout before the next node is asked.

A node that cannot be reached (connection refused, lost) gets the map refreshed and the call
resent, within ``RESEND_WINDOW_SECONDS`` and with backoff. A call refused before it was sent
(``BalanceUnreached``) is always resent: nothing can have applied. A call whose connection was
lost after it was sent may have run, so it is resent only when the caller says it is
``idempotent``: every money script but CREDIT is (balance/scripts.py ``retry_safe``): a charge is
keyed by (session, request number), an outbox acknowledgement by the last record id, so a second
copy answers the stored reply and changes nothing, whichever copy runs first; and so are the plain
commands of ``balance.callers.RETRY_SAFE_COMMANDS``. Anything else fails as
``BalanceUnavailable``, and the store settles it past its deadline as on a single Redis
(balance/store.py). A call that gives up after any attempt may have been sent raises
``BalanceUnavailable``, never ``BalanceUnreached``.

Keyless commands (PING, INFO) go to one master. Scripts and function libraries registered here
are registered with every node's client, so each master is repaired (NOSCRIPT, unknown function)
by its own client. Clients of nodes that leave the map are kept, idle, until ``close``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from balance.deadline import within
from balance.errors import BalanceUnavailable, BalanceUnreached
from balance.pipeline import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    DEFAULT_FLUSH_BYTES,
    DEFAULT_MAX_PENDING,
    DEFAULT_REPLY_TIMEOUT_SECONDS,
    PipelinedRedis,
    RedisErrorReply,
    RedisReply,
)
from balance.resp import CommandPart

Address = tuple[str, int]
# redis-py's cluster client follows up to 16 redirections, the Redis cluster tutorial's clients 5;
# one resharding step moves a slot once, so more than a few in a row is a broken cluster.
MAX_REDIRECTIONS: Final = 5
# How long a call keeps trying other nodes and a fresh map after a node failed it. A failover
# takes the cluster's node timeout (15 s by default) and more: far past what a CCR can wait,
# so this only rides out a restart's reconnect and a map that is stale by a moved slot. The
# store's deadline and its settling look (balance/store.py) come on top; both end before the
# client's Tx timer (RFC 4006 section 13, 10 s).
RESEND_WINDOW_SECONDS: Final = 1.0
# How long the slot map's question waits for one node before it asks the next (module
# docstring): a live node answers CLUSTER SLOTS within a millisecond or two, a loaded one within
# tens; a frozen one never, and its connection's silence check takes the whole reply timeout.
MAP_ASK_SECONDS: Final = 0.5
# Backoff between attempts after a failure (not after a redirection, which is followed at once).
FIRST_BACKOFF_SECONDS: Final = 0.01
MAX_BACKOFF_SECONDS: Final = 0.2


class ClusterPipelinedRedis:
    """``PipelinedRedis``'s calls on a Redis Cluster (module docstring)."""

    def __init__(
        self,
        startup_nodes: Sequence[Address],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        reply_timeout_seconds: float | None = DEFAULT_REPLY_TIMEOUT_SECONDS,
        flush_bytes: int = DEFAULT_FLUSH_BYTES,
    ) -> None:
        if not startup_nodes:
            raise ValueError("startup_nodes: at least one cluster node is needed")
        self.startup_nodes = list(startup_nodes)
        self.max_pending = max_pending  # per node
        self.connect_timeout_seconds = connect_timeout_seconds
        self.reply_timeout_seconds = reply_timeout_seconds
        self.flush_bytes = flush_bytes
        self._nodes: dict[Address, PipelinedRedis] = {}
        self._slots: list[PipelinedRedis | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        self._refreshing: asyncio.Future[None] | None = None
        self._scripts: dict[str, bytes] = {}
        self._libraries: dict[str, bytes] = {}
        self._closed = False
        # Counters, for tests and benchmarks: redirections followed, maps loaded, calls resent.
        self.redirections = 0
        self.map_loads = 0
        self.resends = 0

    async def __aenter__(self) -> ClusterPipelinedRedis:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def pending_count(self) -> int:
        return sum(node.pending_count for node in self._nodes.values())

    def register_script(self, source: str | bytes) -> str:
        encoded = source.encode() if isinstance(source, str) else source
        sha = hashlib.sha1(encoded, usedforsecurity=False).hexdigest()
        self._scripts[sha] = encoded
        for node in self._nodes.values():
            node.register_script(encoded)
        return sha

    def register_function(self, function: str, library_source: str | bytes) -> None:
        encoded = library_source.encode() if isinstance(library_source, str) else library_source
        self._libraries[function] = encoded
        for node in self._nodes.values():
            node.register_function(function, encoded)

    async def evalsha(
        self, sha: str, keys: Sequence[CommandPart], args: Sequence[CommandPart], *, idempotent: bool = False
    ) -> RedisReply:
        def send(node: PipelinedRedis, asking: bool) -> Awaitable[RedisReply]:
            return node.evalsha(sha, keys, args, asking=asking)

        return await self._routed(keys[0] if keys else None, send, idempotent)

    async def fcall(
        self, function: str, keys: Sequence[CommandPart], args: Sequence[CommandPart], *, idempotent: bool = False
    ) -> RedisReply:
        def send(node: PipelinedRedis, asking: bool) -> Awaitable[RedisReply]:
            return node.fcall(function, keys, args, asking=asking)

        return await self._routed(keys[0] if keys else None, send, idempotent)

    async def execute(self, *parts: CommandPart, idempotent: bool = False) -> RedisReply:
        """A command whose first key, if any, is its second part (GET, HGETALL, SADD, ZADD, ...)."""

        def send(node: PipelinedRedis, asking: bool) -> Awaitable[RedisReply]:
            return node.execute(*parts, asking=asking)

        return await self._routed(parts[1] if len(parts) > 1 else None, send, idempotent)

    def masters(self) -> list[PipelinedRedis]:
        """The client of every master in the slot map (after the first call or ``load_slots``)."""
        found: dict[int, PipelinedRedis] = {}
        for node in self._slots:
            if node is not None:
                found.setdefault(id(node), node)
        return list(found.values())

    async def load_slots(self) -> None:
        """Ask for the slot map now (once, for every caller that asks while it is asked)."""
        if self._closed:
            raise BalanceUnreached("Redis client is closed")
        attempt = self._refreshing
        if attempt is None:
            attempt = asyncio.ensure_future(self._ask_slots())
            attempt.add_done_callback(self._load_finished)
            self._refreshing = attempt
        await asyncio.shield(attempt)

    async def close(self) -> None:
        self._closed = True
        if self._refreshing is not None:
            self._refreshing.cancel()
        await asyncio.gather(*(node.close() for node in self._nodes.values()))

    # --- routing --------------------------------------------------------------------------------

    async def _routed(
        self, key: CommandPart | None, send: Callable[[PipelinedRedis, bool], Awaitable[RedisReply]], idempotent: bool
    ) -> RedisReply:
        slot = _slot_of(key) if key is not None else -1
        node = self._slots[slot] if slot >= 0 else None
        if node is None:
            node = await self._node_for(slot)
        try:
            return await send(node, False)  # the hot path: one routed call, no redirection
        except RedisErrorReply as error:
            if error.code not in _REDIRECTED:
                raise
            first_failure: Exception = error
        except BalanceUnavailable as failure:
            first_failure = failure
        return await self._recover(slot, node, send, idempotent, first_failure)

    async def _recover(
        self,
        slot: int,
        node: PipelinedRedis,
        send: Callable[[PipelinedRedis, bool], Awaitable[RedisReply]],
        idempotent: bool,
        failure: Exception,
    ) -> RedisReply:
        """Follow redirections and ride out node failures (module docstring) until a reply."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + RESEND_WINDOW_SECONDS
        redirections = 0
        backoff = FIRST_BACKOFF_SECONDS
        maybe_sent = not isinstance(failure, (BalanceUnreached, RedisErrorReply))
        while True:
            asking = False
            if isinstance(failure, RedisErrorReply) and failure.code in ("MOVED", "ASK"):
                redirections += 1
                if redirections > MAX_REDIRECTIONS:
                    raise BalanceUnavailable(f"more than {MAX_REDIRECTIONS} cluster redirections: {failure.message}")
                self.redirections += 1
                node, asking = self._redirected(failure), failure.code == "ASK"
            else:
                sent_and_lost = isinstance(failure, BalanceUnavailable) and not isinstance(failure, BalanceUnreached)
                if sent_and_lost and not idempotent:
                    raise failure
                if loop.time() + backoff > give_up_at:
                    raise _given_up(failure, maybe_sent)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                try:
                    if not isinstance(failure, RedisErrorReply) or failure.code == "CLUSTERDOWN":
                        await self.load_slots()
                    node = await self._node_for(slot)
                except BalanceUnavailable as refused:
                    failure = refused
                    continue
                self.resends += 1
            try:
                return await send(node, asking)
            except RedisErrorReply as error:
                if error.code not in _REDIRECTED:
                    raise
                failure = error
            except BalanceUnavailable as lost:
                maybe_sent = maybe_sent or not isinstance(lost, BalanceUnreached)
                failure = lost

    def _redirected(self, error: RedisErrorReply) -> PipelinedRedis:
        """The node a MOVED or ASK names; a MOVED also repoints its slot and refreshes the map."""
        try:
            _, slot_text, target = error.message.split(" ")
            host, _, port_text = target.rpartition(":")
            slot, port = int(slot_text), int(port_text)
        except ValueError:
            raise BalanceUnavailable(f"unreadable cluster redirection: {error.message}") from None
        node = self._node((host, port))
        if error.code == "MOVED":
            self._slots[slot] = node
            if self._refreshing is None and not self._closed:
                # In the background: the call goes on to the node named; others follow the new map.
                refresh = asyncio.ensure_future(self.load_slots())
                refresh.add_done_callback(_retrieve)
        return node

    async def _node_for(self, slot: int) -> PipelinedRedis:
        """The client of the slot's master (any master for a keyless command), the map loaded
        first if it has no entry."""
        if slot < 0:
            if not self._nodes:
                await self.load_slots()
            masters = self.masters()
            return masters[0] if masters else self._node(self.startup_nodes[0])
        node = self._slots[slot]
        if node is None:
            await self.load_slots()
            node = self._slots[slot]
            if node is None:
                raise BalanceUnreached(f"no cluster node serves slot {slot}")
        return node

    def _node(self, address: Address) -> PipelinedRedis:
        node = self._nodes.get(address)
        if node is None:
            node = PipelinedRedis(
                host=address[0],
                port=address[1],
                max_pending=self.max_pending,
                connect_timeout_seconds=self.connect_timeout_seconds,
                reply_timeout_seconds=self.reply_timeout_seconds,
                flush_bytes=self.flush_bytes,
            )
            for source in self._scripts.values():
                node.register_script(source)
            for function, library in self._libraries.items():
                node.register_function(function, library)
            self._nodes[address] = node
        return node

    # --- the slot map ---------------------------------------------------------------------------

    def _load_finished(self, attempt: asyncio.Future[None]) -> None:
        self._refreshing = None
        _retrieve(attempt)

    async def _ask_slots(self) -> None:
        """CLUSTER SLOTS from the first node that answers: the masters of the map first, then the
        startup nodes."""
        candidates = list(dict.fromkeys([*self._known_master_addresses(), *self.startup_nodes]))
        problems: list[str] = []
        for address in candidates:
            try:
                reply = await within(MAP_ASK_SECONDS, self._node(address).execute("CLUSTER", "SLOTS"))
            except (BalanceUnavailable, RedisErrorReply) as error:
                problems.append(f"{address[0]}:{address[1]}: {error}")
                continue
            except TimeoutError:  # its late reply, if any, is read and dropped (balance/pipeline.py)
                problems.append(f"{address[0]}:{address[1]}: no answer within {MAP_ASK_SECONDS} s")
                continue
            slots = self._slot_map(reply, address[0])
            if slots is not None:
                self._slots = slots
                self.map_loads += 1
                return
            problems.append(f"{address[0]}:{address[1]}: unreadable CLUSTER SLOTS reply")
        raise BalanceUnreached("no cluster node gave its slot map: " + "; ".join(problems))

    def _known_master_addresses(self) -> list[Address]:
        by_node = {id(node): address for address, node in self._nodes.items()}
        return [by_node[id(node)] for node in self.masters() if id(node) in by_node]

    def _slot_map(self, reply: RedisReply, asked_host: str) -> list[PipelinedRedis | None] | None:
        """CLUSTER SLOTS (ranges of [start, end, [host, port, id, ...], replicas...]) as a map;
        None if the reply does not read as one. An empty host means the node asked."""
        if not isinstance(reply, list):
            return None
        slots: list[PipelinedRedis | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        for entry in reply:
            if not isinstance(entry, list) or len(entry) < 3:
                return None
            start, end, master = entry[0], entry[1], entry[2]
            if not (isinstance(start, int) and isinstance(end, int) and isinstance(master, list) and len(master) >= 2):
                return None
            host, port = master[0], master[1]
            if not isinstance(host, bytes) or not isinstance(port, int):
                return None
            node = self._node((host.decode() or asked_host, port))
            slots[start : end + 1] = [node] * (end - start + 1)
        return slots


# Error replies the cluster answers instead of running a command; anything else is the command's.
_REDIRECTED = frozenset({"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN"})


def _slot_of(key: CommandPart) -> int:
    if isinstance(key, str):
        return key_slot(key.encode())
    if isinstance(key, int):
        return key_slot(str(key).encode())
    return key_slot(key)


def _given_up(failure: Exception, maybe_sent: bool) -> BalanceUnavailable:
    text = failure.message if isinstance(failure, RedisErrorReply) else str(failure)
    if maybe_sent:
        return BalanceUnavailable(f"Redis Cluster: {text}")
    return BalanceUnreached(f"Redis Cluster: {text}")


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def startup_nodes_of(url: str) -> list[Address]:
    """The nodes a cluster URL names: ``redis://host:port`` or several, comma-separated
    (``redis://a:7000,b:7001``), as an operator lists a few in case one is down."""
    addresses = url.removeprefix("redis://").split("/", 1)[0]
    found: list[Address] = []
    for address in addresses.split(","):
        host, _, port = address.strip().rpartition(":")
        found.append((host or "127.0.0.1", int(port or 6379)))
    return found
