"""A Diameter server: accepts connections and hands valid requests to the application.

Theory of operation: each accepted connection gets a ``PeerConnection`` in the server role and a
``ServerConnection`` (a ``TlsTransport``). ``RequestReceived`` events go to
``handler(transport, message)``, which answers with ``transport.send_answer`` now or later; every
other event goes to ``on_event`` (for logs and metrics). All connections share one duplicate
cache. ``close`` is the graceful path: stop accepting, send DPR on every open connection, wait for
them to finish (bounded), then abort what is left.

Two listeners (RFC 6733 section 2.1): ``start`` opens the clear TCP port (3868), ``listen_tls``
the TLS/TCP port (5868, section 11.4), where the handshake comes before any Diameter byte. With a
TLS context the clear port also offers the inband upgrade of RFC 3588 peers (Inband-Security-Id
TLS, then the handshake after CEA); with ``require_tls`` it offers nothing else, so a CER without
it is answered 5017 DIAMETER_NO_COMMON_SECURITY (section 5.3). The certificate a peer shows must
name its Origin-Host (``PeerPolicy.refusal``).

Admission by address: a connection from outside ``policy.allowed_networks`` is closed as soon as
the protocol is given it, before a byte of CER is read (RFC 6733 section 5.3: a CER from an
unknown peer MAY be silently discarded, the connection is closed; section 5.6.1 puts that
decision in the logic that accepts connections, apart from the peer state machine). On the TLS
port that is after the event loop's handshake: asyncio hands over the connection only then. It is
reported once, as a ``PeerClosed`` that names the address. A failed handshake on the TLS port
never reaches the protocol (the loop closes it), so it adds no connection and no event.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import ssl
import typing
from collections.abc import Callable
from ipaddress import IPv6Address, ip_address

from protocol.aio.tls import TlsTransport, certificate_names, peer_certificate
from protocol.aio.transport import DiameterTransport, EventCallback
from protocol.capabilities import DEFAULT_INBAND_SECURITY, InbandSecurity, IpAddress, LocalIdentity, PeerPolicy
from protocol.constants import MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION
from protocol.disconnect import DisconnectCause
from protocol.duplicates import DuplicateCache
from protocol.events import Event, RequestReceived
from protocol.message import Message
from protocol.peer import CAPABILITIES_TIMEOUT_SECONDS, PeerConnection, PeerState, Role
from protocol.watchdog import DEFAULT_TW_SECONDS, MINIMUM_TW_SECONDS

RequestHandler = Callable[[DiameterTransport, Message], None]
EventListener = Callable[[DiameterTransport, Event], None]


def _ignore(transport: DiameterTransport, event: Event) -> None:
    pass


def _address_of(peername: object) -> IpAddress | None:
    if not (isinstance(peername, tuple) and peername and isinstance(peername[0], str)):
        return None
    try:
        address = ip_address(peername[0].partition("%")[0])  # an IPv6 scope id is not part of it
    except ValueError:
        return None
    # A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d; the allow-list names them in IPv4.
    return address.ipv4_mapped or address if isinstance(address, IPv6Address) else address


class ServerConnection(TlsTransport):
    """One accepted connection: the address check at accept, the certificate's names given to the
    capabilities exchange, the inband upgrade on the clear port."""

    def __init__(
        self,
        peer: PeerConnection,
        on_events: EventCallback,
        policy: PeerPolicy,
        context: ssl.SSLContext | None,
        *,
        tls_port: bool,
        on_made: Callable[[ServerConnection], None],
    ) -> None:
        super().__init__(peer, on_events, context, inband=context is not None and not tls_port)
        self._policy = policy
        self._tls_port = tls_port
        self._on_made = on_made
        self._address: IpAddress | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._on_made(self)
        self.peername = transport.get_extra_info("peername")
        self._address = _address_of(self.peername)
        if self._address is not None and not self._policy.admits_address(self._address):
            refused = typing.cast(asyncio.Transport, transport)  # uvloop's is not a subclass
            self.close_with_reason(f"address {self._address} is not in allowed_addresses", refused)
            return
        names = None
        if self._tls_port:  # the loop ran the handshake before calling us
            self.secured = True
            names = certificate_names(peer_certificate(transport))
        self.peer.policy = self._policy.for_connection(self._address, names)
        super().connection_made(transport)

    def _on_secured(self) -> str:
        # Inband: the CER came before the certificate; judge its Origin-Host now.
        self.peer.policy = self._policy.for_connection(self._address, certificate_names(self.peer_certificate()))
        capabilities = self.peer.capabilities
        assert capabilities is not None, "inband TLS starts after an accepted CER"
        return self.peer.policy.refusal(capabilities.origin_host, capabilities.origin_realm)


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
        tls_context: ssl.SSLContext | None = None,
        require_tls: bool = False,
        reuse_port: bool = False,
    ) -> None:
        assert tls_context is not None or not require_tls, "require_tls needs a TLS context"
        self.identity = identity
        self.policy = policy or PeerPolicy()
        self.tls_context = tls_context
        self.require_tls = require_tls
        # SO_REUSEPORT: several processes listen on one port, the kernel spreads new connections.
        self.reuse_port = reuse_port
        self.handler = handler
        self.on_event = on_event
        self.tw_seconds = tw_seconds
        self.minimum_tw_seconds = minimum_tw_seconds  # the RFC 3539 floor; lowered by tests only
        self.max_in_flight = max_in_flight_per_connection
        self.duplicates = duplicates if duplicates is not None else DuplicateCache()
        self.connections: set[DiameterTransport] = set()
        self._servers: list[asyncio.Server] = []
        self.tls_address: tuple[str, int] | None = None  # where listen_tls listens
        self._rng = random.Random()

    async def start(self, host: str = "127.0.0.1", port: int = 3868) -> tuple[str, int]:
        """Listen on the clear TCP port (port 0 picks a free port); returns the bound address."""
        return await self._listen(host, port, tls_port=False)

    async def listen_tls(self, host: str = "127.0.0.1", port: int = 5868) -> tuple[str, int]:
        """Listen on the TLS/TCP port (RFC 6733 section 11.4, errata 3997: 5868)."""
        assert self.tls_context is not None, "listen_tls needs a TLS context"
        self.tls_address = await self._listen(host, port, tls_port=True)
        return self.tls_address

    async def _listen(self, host: str, port: int, *, tls_port: bool) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: self._new_connection(tls_port),
            host,
            port,
            ssl=self.tls_context if tls_port else None,
            ssl_handshake_timeout=CAPABILITIES_TIMEOUT_SECONDS if tls_port else None,
            reuse_port=self.reuse_port or None,
        )
        self._servers.append(server)
        # uvloop's Server.sockets is a list, asyncio's (and typeshed's) a tuple: read untyped, or the
        # compiled build's check for a tuple refuses uvloop's.
        address = typing.cast(typing.Any, server).sockets[0].getsockname()
        return str(address[0]), int(address[1])

    def _inband_security(self, tls_port: bool) -> tuple[InbandSecurity, ...]:
        """What a CER may choose on this port (RFC 6733 section 6.10), preferred first."""
        if tls_port:
            return ()  # protected already: nothing to negotiate
        if self.tls_context is None:
            return DEFAULT_INBAND_SECURITY
        if self.require_tls:
            return (InbandSecurity.TLS,)
        return (InbandSecurity.TLS, InbandSecurity.NO_INBAND_SECURITY)

    def _new_connection(self, tls_port: bool) -> DiameterTransport:
        loop = asyncio.get_running_loop()
        peer = PeerConnection(
            Role.SERVER,
            dataclasses.replace(self.identity, inband_security=self._inband_security(tls_port)),
            self.policy,
            loop.time(),
            duplicates=self.duplicates,
            tw_seconds=self.tw_seconds,
            minimum_tw_seconds=self.minimum_tw_seconds,
            max_in_flight=self.max_in_flight,
            rng=self._rng,
        )
        return ServerConnection(
            peer, self._dispatch, self.policy, self.tls_context, tls_port=tls_port, on_made=self._register
        )

    def _register(self, transport: ServerConnection) -> None:
        """Called from connection_made: on the TLS port, after a successful handshake only."""
        self.connections.add(transport)
        transport.closed.add_done_callback(lambda _: self.connections.discard(transport))

    def _dispatch(self, transport: DiameterTransport, events: list[Event]) -> None:
        handler = self.handler
        for event in events:
            if type(event) is RequestReceived:
                handler(transport, event.message)
            else:
                self.on_event(transport, event)

    async def close(self, timeout_seconds: float = 5.0) -> None:
        """Stop accepting, DPR every peer, wait for them to go, abort stragglers."""
        for server in self._servers:
            server.close()
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
        for server in self._servers:
            await server.wait_closed()
