"""Account events and cache invalidations between server processes, on a Redis stream.

Theory of operation: with several worker processes, a top-up made through worker A's HTTP API
must reach the notifier of worker B, which holds the Diameter connection of the session
(ocs/events.py "Between server processes"). ``RedisStreamTransport`` is the ``EventTransport``
given to each worker's ``AccountEvents``: ``send`` (synchronous, as ``publish`` is) queues the
encoded event, and one sender task appends what is queued to the stream ``ocs:events`` with
``XADD`` (one pipelined round trip for all that is queued), each entry naming its origin (the
worker's owner id). One reader task per worker follows the stream with a blocking ``XREAD`` from
the last entry it has seen, hands every entry of another origin to ``AccountEvents.receive``,
and skips its own (already dispatched locally by ``publish``).

Why a stream and not Pub/Sub: Pub/Sub delivers only to subscribers connected at that moment, so
an event published while a worker's subscription reconnects (a Redis restart, a dropped
connection) is lost for it, and a RAR it should have sent never goes. A stream keeps the entries:
the reader asks again from the last id it saw and gets what it missed. The stream is trimmed
approximately to ``STREAM_MAX_ENTRIES`` at each append (``MAXLEN ~``), minutes of events at any
plausible rate of top-ups and status changes; a worker started now begins at the stream's end
(it carries no sessions yet, so older events concern it not).

Caches: provisioning tells the subscriber cache to forget identities whose mapping it changed.
``SharedSubscriberCache`` does that locally and sends the identities on the same stream
(``kind`` "identities"); every other worker's reader makes its own cache forget them. The tariff
book has no change at run time yet (it is read from its file at startup); a reload would travel
the same way.

Closed sessions: the Tcc supervision duty (ocs/app.py) runs in one worker and closes the
sessions that went silent, whichever worker carried them. Each worker's notifier keeps the
sessions it answered (ocs/charging/notifier.py) so that a top-up or a status change reaches them;
a session closed elsewhere would stay there for ever (memory, and a RAR or ASR to a session the
OCS has closed). ``send_closed_sessions`` puts the closed session ids on the stream (kind
"sessions", at most ``SESSIONS_PER_ENTRY`` to an entry) and every other worker's reader hands
them to ``on_sessions_closed`` (the notifier's ``forget_sessions``). Nothing is sent per CCR: a
CCR-T answered by another worker, or an entry lost with a stream trimmed past it, is caught by
the notifier's own sweep (``SessionNotifier.sweep``, run by ocs/worker.py every Tcc).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from balance.directory import Directory, Identity, IdentityKind
from ocs.charging.subscribers import SubscriberCache
from ocs.events import AccountEvents

log = structlog.get_logger("ocs.event_transport")

STREAM_KEY = "ocs:events"
STREAM_MAX_ENTRIES = 100_000  # approximate (MAXLEN ~): Redis trims whole nodes of the stream
READ_BLOCK_MILLISECONDS = 1_000  # a reader's XREAD waits this long, then asks again
RETRY_SECONDS = 0.5  # after a failed read or append: Redis is away; the entries wait
SESSIONS_PER_ENTRY = 1_000  # closed session ids in one stream entry: tens of kilobytes at most
ACCOUNT = "account"
IDENTITIES = "identities"
SESSIONS = "sessions"


def encode_identities(identities: Sequence[Identity]) -> bytes:
    return json.dumps([[identity.kind.value, identity.value] for identity in identities]).encode()


def decode_identities(data: bytes) -> list[Identity]:
    return [Identity(IdentityKind(kind), value) for kind, value in json.loads(data)]


class RedisStreamTransport:
    """One worker's end of the stream (see the module docstring)."""

    def __init__(self, redis: Redis, origin: str, *, key: str = STREAM_KEY) -> None:
        self.redis = redis
        self.origin = origin
        self.key = key
        self.events: AccountEvents | None = None
        self.cache: SubscriberCache | None = None
        self.on_sessions_closed: Callable[[Sequence[str]], object] | None = None
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._last_id = "0-0"
        self.received = 0  # entries of other workers handled

    def attach(self, events: AccountEvents, cache: SubscriberCache | None = None) -> None:
        events.transport = self
        self.events = events
        self.cache = cache

    def send(self, data: bytes) -> None:
        self._queue.put_nowait((ACCOUNT, data))

    def send_identities(self, identities: Sequence[Identity]) -> None:
        if identities:
            self._queue.put_nowait((IDENTITIES, encode_identities(identities)))

    def send_closed_sessions(self, session_ids: Sequence[str]) -> None:
        for start in range(0, len(session_ids), SESSIONS_PER_ENTRY):
            chunk = list(session_ids[start : start + SESSIONS_PER_ENTRY])
            self._queue.put_nowait((SESSIONS, json.dumps(chunk).encode()))

    async def start_at_end(self) -> None:
        """Begin after the newest entry: older events concern sessions this worker never had."""
        newest: Any = await self.redis.xrevrange(self.key, count=1)
        self._last_id = bytes(newest[0][0]).decode() if newest else "0-0"

    async def run_sender(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    await self._append(batch)
                    break
                except (RedisError, OSError) as error:
                    log.warning("event_append_failed", entries=len(batch), error=str(error))
                    await asyncio.sleep(RETRY_SECONDS)

    async def _append(self, batch: list[tuple[str, bytes]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for kind, data in batch:
                fields: dict[Any, Any] = {"origin": self.origin, "kind": kind, "data": data}
                pipe.xadd(self.key, fields, maxlen=STREAM_MAX_ENTRIES, approximate=True)
            await pipe.execute()

    async def flush(self) -> None:
        """Append what is queued now (a graceful shutdown: events published last still go)."""
        batch = []
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        if batch:
            await self._append(batch)

    async def run_reader(self) -> None:
        failing = False
        while True:
            try:
                streams: Any = {self.key: self._last_id}
                replies: Any = await self.redis.xread(streams, block=READ_BLOCK_MILLISECONDS, count=500)
            except (RedisError, OSError) as error:
                if not failing:
                    log.warning("event_read_failed", error=str(error), resume_after=self._last_id)
                failing = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if failing:
                log.info("event_read_resumed", resume_after=self._last_id)
                failing = False
            for _, entries in replies or ():
                for entry_id, fields in entries:
                    self._last_id = bytes(entry_id).decode()
                    self._handle(fields)

    def _handle(self, fields: dict[bytes, bytes]) -> None:
        if fields.get(b"origin", b"").decode() == self.origin:
            return  # published here: dispatched locally already
        self.received += 1
        kind, data = fields.get(b"kind", b"").decode(), fields.get(b"data", b"")
        if kind == ACCOUNT and self.events is not None:
            self.events.receive(data)
        elif kind == IDENTITIES and self.cache is not None:
            try:
                identities = decode_identities(data)
            except (ValueError, TypeError) as error:
                log.warning("identities_unreadable", reason=str(error))
                return
            SubscriberCache.forget(self.cache, identities)  # this worker's cache only: no echo
        elif kind == SESSIONS and self.on_sessions_closed is not None:
            try:
                session_ids = json.loads(data)
            except ValueError as error:
                log.warning("closed_sessions_unreadable", reason=str(error))
                return
            if isinstance(session_ids, list) and all(isinstance(session_id, str) for session_id in session_ids):
                self.on_sessions_closed(session_ids)
            else:
                log.warning("closed_sessions_unreadable", reason="not a list of session ids")
        else:
            log.warning("event_kind_unknown", kind=kind)


class SharedSubscriberCache(SubscriberCache):
    """A subscriber cache whose ``forget`` also reaches every other worker's cache."""

    def __init__(self, directory: Directory, transport: RedisStreamTransport) -> None:
        super().__init__(directory)
        self.transport = transport

    def forget(self, identities: Sequence[Identity]) -> None:
        super().forget(identities)
        self.transport.send_identities(identities)
