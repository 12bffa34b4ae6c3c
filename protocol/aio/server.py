"""A Diameter server: accepts connections and hands valid requests to the application.

Theory of operation: each accepted connection gets a ``PeerConnection`` in the server role and a
``DiameterTransport``. ``RequestReceived`` events go to ``handler(transport, message)``, which
answers with ``transport.send_answer`` now or later; every other event goes to ``on_event`` (for
logs and metrics). All connections share one duplicate cache. ``close`` is the graceful path:
stop accepting, send DPR on every open connection, wait for them to finish (bounded), then abort
what is left.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from protocol.aio.transport import DiameterTransport
from protocol.capabilities import LocalIdentity, PeerPolicy
from protocol.constants import MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION
from protocol.disconnect import DisconnectCause
from protocol.duplicates import DuplicateCache
from protocol.events import Event, RequestReceived
from protocol.message import Message
from protocol.peer import PeerConnection, PeerState, Role
from protocol.watchdog import DEFAULT_TW_SECONDS, MINIMUM_TW_SECONDS

RequestHandler = Callable[[DiameterTransport, Message], None]
EventListener = Callable[[DiameterTransport, Event], None]


def _ignore(transport: DiameterTransport, event: Event) -> None:
    pass


class DiameterServer:
    def __init__(
        self,
        identity: LocalIdentity,
        handler: RequestHandler,
        *,
        policy: PeerPolicy | None = None,
        on_event: EventListener = _ignore,
        tw_seconds: float = DEFAULT_TW_SECONDS,
        minimum_tw_seconds: float = MINIMUM_TW_SECONDS,
        max_in_flight_per_connection: int = MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION,
        duplicates: DuplicateCache | None = None,
    ) -> None:
        self.identity = identity
        self.policy = policy or PeerPolicy()
        self.handler = handler
        self.on_event = on_event
        self.tw_seconds = tw_seconds
        self.minimum_tw_seconds = minimum_tw_seconds  # the RFC 3539 floor; lowered by tests only
        self.max_in_flight = max_in_flight_per_connection
        self.duplicates = duplicates if duplicates is not None else DuplicateCache()
        self.connections: set[DiameterTransport] = set()
        self._server: asyncio.Server | None = None
        self._rng = random.Random()

    async def start(self, host: str = "127.0.0.1", port: int = 3868) -> tuple[str, int]:
        """Listen (port 0 picks a free port); returns the bound address."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._new_connection, host, port)
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    def _new_connection(self) -> DiameterTransport:
        loop = asyncio.get_running_loop()
        peer = PeerConnection(
            Role.SERVER,
            self.identity,
            self.policy,
            loop.time(),
            duplicates=self.duplicates,
            tw_seconds=self.tw_seconds,
            minimum_tw_seconds=self.minimum_tw_seconds,
            max_in_flight=self.max_in_flight,
            rng=self._rng,
        )
        transport = DiameterTransport(peer, self._dispatch)
        self.connections.add(transport)
        transport.closed.add_done_callback(lambda _: self.connections.discard(transport))
        return transport

    def _dispatch(self, transport: DiameterTransport, events: list[Event]) -> None:
        handler = self.handler
        for event in events:
            if type(event) is RequestReceived:
                handler(transport, event.message)
            else:
                self.on_event(transport, event)

    async def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop accepting, DPR every peer, wait for them to go, abort stragglers."""
        if self._server is not None:
            self._server.close()
        for transport in list(self.connections):
            if transport.peer.state is PeerState.OPEN:
                transport.disconnect(DisconnectCause.REBOOTING)
            elif transport.peer.state is not PeerState.CLOSED:
                transport.abort()
        waiting = [transport.closed for transport in self.connections]
        if waiting:
            _, still_open = await asyncio.wait(waiting, timeout=timeout_seconds)
            for transport in list(self.connections):
                if transport.closed in still_open:
                    transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
