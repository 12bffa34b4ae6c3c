"""Diameter over TLS/TCP (RFC 6733 sections 2.1, 5.6 and 13): contexts, names, and the handshake.

Theory of operation: ``server_context`` and ``client_context`` build ``ssl.SSLContext`` objects
that authenticate both ends (RFC 6733 section 13.1: the TLS server MUST request the client's
certificate). ``certificate_names`` reads the DNS names a verified peer certificate proves, which
the capabilities exchange compares with the peer's Origin-Host.

TLS at connect (the server's TLS port, RFC 6733 section 5.6: TLS "SHOULD be established before
sending any CER or CEA message") is the event loop's own: ``create_server`` / ``create_connection``
with ``ssl=``; the protocol sees the connection only once the handshake has succeeded.

``TlsTransport`` is a ``DiameterTransport`` that can also move a clear connection under TLS in
place, inband (``inband``, for peers of RFC 3588 age): the first frame received (the CER on the
server, the CEA on the client) is cut off and judged alone; when the exchange chose
Inband-Security-Id TLS, reading stops at once, the CEA goes out in the clear and the handshake
follows (RFC 6733 section 13). A byte that came after that first frame in the clear would be read
as if it were protected (the STARTTLS injection flaw), so it closes the connection.

Bytes the TLS layer hands over before our handshake step has finished are held back until the
owner's ``_on_secured`` check has run (it sees the certificate first). A failed handshake closes
the connection with one ``PeerClosed`` that says why (RFC 6733 section 13: "If the handshake
fails, both ends MUST move to the closed state").
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping

from protocol.aio.transport import DiameterTransport, EventCallback
from protocol.capabilities import InbandSecurity
from protocol.constants import HEADER_LENGTH
from protocol.events import PeerClosed
from protocol.peer import CAPABILITIES_TIMEOUT_SECONDS, PeerConnection, Role

# RFC 6733 section 13.1 names RC4 and 3DES suites that RFC 7465 and RFC 8996 have since retired
# along with TLS before 1.2; OpenSSL's defaults from TLS 1.2 up are what peers negotiate today.
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2


def server_context(certificate: str, private_key: str, ca_file: str) -> ssl.SSLContext:
    """Our certificate and key (PEM files; an empty key: the key is in the certificate file), and
    the trust store that peers' certificates must chain to."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_TLS_VERSION
    context.load_cert_chain(certificate, private_key or None)
    context.load_verify_locations(cafile=ca_file)
    context.verify_mode = ssl.CERT_REQUIRED  # RFC 6733 section 13.1: mutual authentication
    return context


def client_context(ca_file: str, certificate: str = "", private_key: str = "") -> ssl.SSLContext:
    """Trust store for the server's certificate, and our own certificate (the server asks)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = MINIMUM_TLS_VERSION
    if certificate:
        context.load_cert_chain(certificate, private_key or None)
    return context


def certificate_names(peer_certificate: Mapping[str, object] | None) -> frozenset[str]:
    """The subjectAltName DNS names of a verified certificate, lower case; the subject's common
    names only when it has none (RFC 6125 section 6.4.4). Empty for no certificate."""
    if not peer_certificate:
        return frozenset()
    alternative = peer_certificate.get("subjectAltName", ())
    names = {
        str(value).lower() for kind, value in (alternative if isinstance(alternative, tuple) else ()) if kind == "DNS"
    }
    if names:
        return frozenset(names)
    subject = peer_certificate.get("subject", ())
    return frozenset(
        str(value).lower()
        for rdn in (subject if isinstance(subject, tuple) else ())
        for key, value in rdn
        if key == "commonName"
    )


def peer_certificate(transport: asyncio.BaseTransport | None) -> dict[str, object] | None:
    """The verified certificate of the peer on a TLS transport (None on a clear one)."""
    certificate = transport.get_extra_info("peercert") if transport is not None else None
    return certificate if isinstance(certificate, dict) else None


class TlsTransport(DiameterTransport):
    def __init__(
        self,
        peer: PeerConnection,
        on_events: EventCallback,
        context: ssl.SSLContext | None = None,
        *,
        inband: bool = False,
        server_hostname: str | None = None,
    ) -> None:
        super().__init__(peer, on_events)
        assert context is not None or not inband, "inband TLS needs a context"
        self._context = context
        self._server_hostname = server_hostname
        self._first_frame: bytearray | None = bytearray() if inband else None
        self._handshaking: asyncio.Transport | None = None
        self._held: bytearray = bytearray()
        self.handshake: asyncio.Task[bool] | None = None  # set once a handshake has started
        self.secured = False  # set by the owner for TLS at connect
        self.close_reason = ""  # why close_with_reason closed it

    def data_received(self, data: bytes) -> None:
        if self._handshaking is not None or (self.handshake is not None and not self.secured):
            self._held += data
        elif self._first_frame is not None:
            self._cut_first_frame(data)
        else:
            super().data_received(data)

    def abort(self) -> None:
        if self._handshaking is not None:
            self._handshaking.abort()
        super().abort()

    def close_with_reason(self, reason: str, transport: asyncio.Transport | None = None) -> None:
        """Abort the connection and report it closed once, for ``reason``."""
        self.close_reason = reason
        events = self.peer.connection_lost(self._loop.time())
        self._on_events(
            self, [PeerClosed(reason, event.unanswered) if isinstance(event, PeerClosed) else event for event in events]
        )
        if transport is not None:
            transport.abort()
        else:
            self.abort()

    def peer_certificate(self) -> dict[str, object] | None:
        return peer_certificate(self._transport)

    def _on_secured(self) -> str:
        """After the handshake, before any protected byte is read: why to refuse (empty: go on)."""
        return ""

    # --- internals ----------------------------------------------------------------------------
    def _cut_first_frame(self, data: bytes) -> None:
        held = self._first_frame
        assert held is not None
        held += data
        if len(held) < 4:
            return
        length = int.from_bytes(held[1:4], "big")  # RFC 6733 section 3: Message Length, 3 octets
        if length >= HEADER_LENGTH and len(held) < length:
            return
        self._first_frame = None
        if length < HEADER_LENGTH:  # not a frame: the peer's reader will say so and close
            super().data_received(bytes(held))
            return
        first, rest = bytes(held[:length]), bytes(held[length:])
        super().data_received(first)
        capabilities = self.peer.capabilities
        if capabilities is None or capabilities.inband_security is not InbandSecurity.TLS:
            if rest:
                super().data_received(rest)
            return
        if rest:
            self.close_with_reason("clear-text bytes after the capabilities exchange chose TLS")
            return
        self._start_tls()

    def _start_tls(self) -> None:
        transport = self._transport
        assert transport is not None and self._context is not None
        self._flush()  # the CEA goes out in the clear, before the handshake
        transport.pause_reading()
        self._transport = None  # nothing more is written in the clear
        self._handshaking = transport
        self.handshake = asyncio.ensure_future(self._handshake(transport, self._context))

    async def _handshake(self, transport: asyncio.Transport, context: ssl.SSLContext) -> bool:
        failure = "connection closed"
        secured: asyncio.BaseTransport | None = None
        try:
            secured = await self._loop.start_tls(
                transport,
                self,
                context,
                server_side=self.peer.role is Role.SERVER,
                server_hostname=self._server_hostname,
                ssl_handshake_timeout=CAPABILITIES_TIMEOUT_SECONDS,
            )
        except (OSError, TimeoutError) as error:  # ssl.SSLError is an OSError
            failure = str(error) or type(error).__name__
        finally:
            self._handshaking = None
        if secured is None or secured.is_closing():
            # The TLS layer does not tell the protocol of a loss during the handshake: we do.
            self.close_with_reason(f"TLS handshake failed: {failure}", transport)
            self.connection_lost(None)
            return False
        self._transport = secured  # type: ignore[assignment]
        refusal = self._on_secured()
        if refusal:
            self.close_with_reason(refusal)
            return False
        self.secured = True
        held, self._held = bytes(self._held), bytearray()
        if held:
            super().data_received(held)
        self._after([])
        return True
