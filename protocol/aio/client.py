"""A Diameter client connection (the simulator's network elements use it).

Theory of operation: ``connect`` opens TCP, runs the capabilities exchange and returns once the
peer is open. ``request`` stamps and sends a request and returns a future answer (the future is
the request's context in the sans-IO peer). Requests the server sends us (RAR, ASR) go to
``on_request``. ``close`` sends DPR and waits for the connection to end.

TLS (RFC 6733 section 13): with a ``tls`` context the client connects with TLS at once (the
server's TLS port, 5868), or, with ``inband_tls``, connects in the clear, offers
Inband-Security-Id TLS in its CER and runs the handshake right after a CEA that accepts it; a CEA
that does not is "no common security" and the connection closes. ``source_address`` binds the
local end (a node with several addresses picks the one its peer knows it by).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
from collections.abc import Callable

from protocol.aio.tls import TlsTransport
from protocol.aio.transport import DiameterTransport
from protocol.capabilities import InbandSecurity, LocalIdentity, PeerCapabilities, PeerPolicy
from protocol.disconnect import DisconnectCause
from protocol.events import AnswerReceived, Event, PeerClosed, PeerOpened, RequestReceived
from protocol.message import Message
from protocol.peer import PeerConnection, PeerState, Role
from protocol.watchdog import DEFAULT_TW_SECONDS


class RequestFailed(ConnectionError):
    """The connection closed before the answer came."""


ServerRequestHandler = Callable[["DiameterClient", Message], None]


def _no_server_requests(client: DiameterClient, message: Message) -> None:
    pass


class DiameterClient:
    def __init__(self, transport: DiameterTransport, capabilities: PeerCapabilities) -> None:
        self.transport = transport
        self.capabilities = capabilities
        self.on_request: ServerRequestHandler = _no_server_requests

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        identity: LocalIdentity,
        *,
        tw_seconds: float = DEFAULT_TW_SECONDS,
        timeout_seconds: float = 10.0,
        rng: random.Random | None = None,
        tls: ssl.SSLContext | None = None,
        inband_tls: bool = False,
        server_hostname: str | None = None,
        source_address: str | None = None,
    ) -> DiameterClient:
        """``server_hostname``: the name the server's certificate must carry (default ``host``)."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[PeerCapabilities] = loop.create_future()
        holder: list[DiameterClient] = []

        def on_events(transport: DiameterTransport, events: list[Event]) -> None:
            for event in events:
                if isinstance(event, PeerOpened):
                    if not opened.done():
                        opened.set_result(event.capabilities)
                elif isinstance(event, AnswerReceived):
                    future = event.context
                    if isinstance(future, asyncio.Future) and not future.done():
                        future.set_result(event.message)
                elif isinstance(event, RequestReceived):
                    if holder:
                        holder[0].on_request(holder[0], event.message)
                elif isinstance(event, PeerClosed):
                    if not opened.done():
                        opened.set_exception(ConnectionError(event.reason))
                    for context in event.unanswered:
                        if isinstance(context, asyncio.Future) and not context.done():
                            context.set_exception(RequestFailed(event.reason))

        assert tls is not None or not inband_tls, "inband_tls needs a TLS context"
        if inband_tls:
            identity = dataclasses.replace(identity, inband_security=(InbandSecurity.TLS,))
        hostname = server_hostname or host

        def factory() -> DiameterTransport:
            peer = PeerConnection(Role.CLIENT, identity, PeerPolicy(), loop.time(), tw_seconds=tw_seconds, rng=rng)
            if inband_tls:
                return TlsTransport(peer, on_events, tls, inband=True, server_hostname=hostname)
            return DiameterTransport(peer, on_events)

        connecting = loop.create_connection(
            factory,
            host,
            port,
            ssl=None if inband_tls else tls,
            server_hostname=hostname if tls is not None and not inband_tls else None,
            local_addr=(source_address, 0) if source_address else None,
        )
        _, transport = await asyncio.wait_for(connecting, timeout_seconds)
        capabilities = await asyncio.wait_for(opened, timeout_seconds)
        handshake = transport.handshake if isinstance(transport, TlsTransport) else None
        if handshake is not None and not await asyncio.wait_for(asyncio.shield(handshake), timeout_seconds):
            reason = transport.close_reason if isinstance(transport, TlsTransport) else ""
            raise ConnectionError(f"TLS handshake after CEA failed: {reason}")
        client = cls(transport, capabilities)
        holder.append(client)
        return client

    def send(self, message: Message) -> asyncio.Future[Message]:
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self.transport.send_request(message, future)
        return future

    async def request(self, message: Message, timeout_seconds: float | None = None) -> Message:
        return await asyncio.wait_for(self.send(message), timeout_seconds)

    def send_answer(self, answer: Message) -> None:
        self.transport.send_answer(answer)

    @property
    def is_open(self) -> bool:
        return self.transport.peer.state is PeerState.OPEN

    async def close(self, timeout_seconds: float = 5.0) -> None:
        if self.transport.peer.state is PeerState.OPEN:
            self.transport.disconnect(DisconnectCause.REBOOTING)
        try:
            await asyncio.wait_for(asyncio.shield(self.transport.closed), timeout_seconds)
        except TimeoutError:
            self.transport.abort()
