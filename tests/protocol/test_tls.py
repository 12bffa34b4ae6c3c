"""Diameter security over real TCP on loopback (RFC 6733 sections 2.1, 5.3, 6.10 and 13):
TLS at connect, the inband upgrade after CEA, the certificate naming the Origin-Host, and
admission by source address. Certificates come from a private CA made at test time."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator
from ipaddress import ip_address, ip_network

import pytest

from protocol.aio import DiameterClient, DiameterServer, RequestFailed
from protocol.aio.server import _address_of
from protocol.aio.tls import TlsTransport, certificate_names, client_context, server_context
from protocol.capabilities import InbandSecurity, LocalIdentity, PeerPolicy, build_cer, choose_inband_security
from protocol.codec import FrameReader, decode, encode
from protocol.errors import PeerError
from protocol.events import PeerClosed
from protocol.message import Message, avp
from tests.protocol.test_aio import CLIENT, SERVER, EchoApplication, ccr
from tests.protocol.tls_support import Authority, Credential, make_authority


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("pki"))


def tls_of(authority: Authority, credential: Credential) -> ssl.SSLContext:
    return client_context(str(authority.ca_file), str(credential.certificate), str(credential.key))


@dataclasses.dataclass
class Running:
    server: DiameterServer
    application: EchoApplication
    clear_port: int
    tls_port: int

    authority: Authority | None

    def closed_reasons(self) -> list[str]:
        return [event.reason for event in self.application.events if isinstance(event, PeerClosed)]

    async def connect(
        self, credential: Credential, *, inband: bool = False, identity: LocalIdentity = CLIENT
    ) -> DiameterClient:
        """A TLS client presenting ``credential``: at connect on the TLS port, or inband."""
        assert self.authority is not None
        return await DiameterClient.connect(
            "127.0.0.1", self.clear_port if inband else self.tls_port, identity, tls=tls_of(self.authority, credential),
            inband_tls=inband, server_hostname="ocs.test", timeout_seconds=5,
        )  # fmt: skip

    async def assert_secured_and_answered(self, client: DiameterClient) -> None:
        assert await answered(client) == 2001
        (connection,) = self.server.connections
        assert isinstance(connection, TlsTransport) and connection.secured
        await client.close()


@contextlib.asynccontextmanager
async def running_server(
    authority: Authority | None, *, require_tls: bool = False, policy: PeerPolicy | None = None
) -> AsyncIterator[Running]:
    """The echo server on a clear port and, with an authority, a TLS port (both port 0)."""
    application = EchoApplication()
    context = None
    if authority is not None:
        server_credential = authority.server
        context = server_context(str(server_credential.certificate), str(server_credential.key), str(authority.ca_file))
    server = DiameterServer(
        SERVER, application.handle, on_event=application.on_event, tls_context=context, require_tls=require_tls,
        policy=policy,
    )  # fmt: skip
    _, clear_port = await server.start("127.0.0.1", 0)
    tls_port = (await server.listen_tls("127.0.0.1", 0))[1] if context is not None else 0
    try:
        yield Running(server, application, clear_port, tls_port, authority)
    finally:
        await server.close(timeout_seconds=1.0)


async def answered(client: DiameterClient) -> int | None:
    answer = await client.request(ccr(1), timeout_seconds=5)
    result = answer.get("Result-Code")
    return result if isinstance(result, int) else None


async def raw_exchange(port: int, *messages: Message, expect: int | None = None) -> list[Message]:
    """Send messages in one write; return the Diameter messages read until the server closes
    (or, with ``expect``, until that many came). Bytes that are not Diameter (a TLS alert, say)
    are no message."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for number, message in enumerate(messages, start=1):
        message.hop_by_hop = message.end_to_end = number
    writer.write(b"".join(encode(message) for message in messages))
    await writer.drain()
    frame_reader = FrameReader()
    frames: list[bytes] = []
    with contextlib.suppress(ConnectionError):
        while (expect is None or len(frames) < expect) and (chunk := await asyncio.wait_for(reader.read(4096), 5)):
            try:
                frames += frame_reader.feed(chunk)
            except PeerError:
                break
    writer.close()
    return [decode(frame).message for frame in frames]


def cer_offering(*security: InbandSecurity) -> Message:
    cer = build_cer(CLIENT)
    cer.avps += [avp("Inband-Security-Id", int(value)) for value in security]
    return cer


# --- TLS at connect, on the TLS port ------------------------------------------------------------


async def test_a_tls_peer_opens_and_is_answered(authority: Authority) -> None:
    async with running_server(authority) as running:
        client = await running.connect(authority.pgw)
        assert client.capabilities.origin_host == "ocs.test"
        await running.assert_secured_and_answered(client)


async def test_a_clear_text_peer_on_the_tls_port_gets_no_cea(authority: Authority) -> None:
    async with running_server(authority) as running:
        assert await raw_exchange(running.tls_port, build_cer(CLIENT)) == []
        assert not running.server.connections and running.application.events == []  # never opened


async def test_a_certificate_from_an_untrusted_ca_fails_the_handshake(authority: Authority) -> None:
    async with running_server(authority) as running:
        with pytest.raises((ConnectionError, ssl.SSLError)):
            client = await running.connect(authority.stranger)
            await answered(client)  # TLS 1.3: the client may learn of the refusal only now


async def test_a_certificate_not_naming_the_origin_host_gets_3010(authority: Authority) -> None:
    async with running_server(authority) as running:
        with pytest.raises(ConnectionError, match="3010"):
            await running.connect(authority.other)
        assert any("not a name in the peer's certificate" in reason for reason in running.closed_reasons())
        other = LocalIdentity("other.test", "test")  # the name the certificate does carry
        await running.assert_secured_and_answered(await running.connect(authority.other, identity=other))


# --- inband upgrade on the clear port (RFC 3588 peers) ---------------------------------------------


async def test_inband_tls_upgrade_on_the_clear_port(authority: Authority) -> None:
    async with running_server(authority) as running:
        client = await running.connect(authority.pgw, inband=True)
        assert client.capabilities.inband_security is InbandSecurity.TLS
        assert isinstance(client.transport, TlsTransport) and client.transport.secured
        await running.assert_secured_and_answered(client)


async def test_inband_upgrade_with_a_certificate_not_naming_the_origin_host_is_closed(authority: Authority) -> None:
    async with running_server(authority) as running:
        with contextlib.suppress(ConnectionError):  # the client may or may not see the close first
            client = await running.connect(authority.other, inband=True)
            with pytest.raises((RequestFailed, ConnectionError, TimeoutError)):
                await answered(client)
        assert running.application.held == [] and not running.server.connections
        assert any("not a name in the peer's certificate" in reason for reason in running.closed_reasons())


async def test_the_cea_chooses_tls_and_clear_bytes_after_the_cer_close_the_connection(authority: Authority) -> None:
    async with running_server(authority) as running:
        # A request in the clear behind a CER that asks for TLS would be read as if protected.
        assert await raw_exchange(running.clear_port, cer_offering(InbandSecurity.TLS), ccr(7)) == []
        assert any("clear-text bytes after" in reason for reason in running.closed_reasons())


async def test_a_clear_peer_still_opens_when_tls_is_optional(authority: Authority) -> None:
    async with running_server(authority) as running:
        answers = await raw_exchange(running.clear_port, build_cer(CLIENT), ccr(2), expect=2)
        assert [answer.get("Result-Code") for answer in answers] == [2001, 2001]
        assert answers[0].find("Inband-Security-Id") is None  # not offered: not answered (section 6.10)


async def test_require_tls_answers_a_clear_only_cer_with_5017(authority: Authority) -> None:
    async with running_server(authority, require_tls=True) as running:
        for cer in (build_cer(CLIENT), cer_offering(InbandSecurity.NO_INBAND_SECURITY)):
            (cea,) = await raw_exchange(running.clear_port, cer, ccr(3))  # and nothing else: the CCR is unread
            assert cea.get("Result-Code") == 5017 and not cea.is_error
            assert cea.get("Inband-Security-Id") == InbandSecurity.TLS  # what we would accept
        await running.assert_secured_and_answered(await running.connect(authority.pgw, inband=True))


async def test_a_server_without_tls_answers_a_tls_only_cer_with_5017() -> None:
    async with running_server(None) as running:
        answers = await raw_exchange(running.clear_port, cer_offering(InbandSecurity.TLS))
        assert [answer.get("Result-Code") for answer in answers] == [5017]
        answers = await raw_exchange(
            running.clear_port, cer_offering(InbandSecurity.TLS, InbandSecurity.NO_INBAND_SECURITY), expect=1
        )
        assert answers[0].get("Result-Code") == 2001
        assert answers[0].get("Inband-Security-Id") == InbandSecurity.NO_INBAND_SECURITY


# --- admission by source address ---------------------------------------------------------------


async def test_a_peer_from_an_address_off_the_list_is_closed_at_accept() -> None:
    policy = PeerPolicy(allowed_networks=(ip_network("127.0.0.1/32"),))
    async with running_server(None, policy=policy) as running:
        with pytest.raises(ConnectionError):
            await DiameterClient.connect("127.0.0.1", running.clear_port, CLIENT, source_address="127.0.0.2")
        await asyncio.sleep(0.05)  # the server's own close callback
        assert running.closed_reasons() == ["address 127.0.0.2 is not in allowed_addresses"]  # logged once
        client = await DiameterClient.connect("127.0.0.1", running.clear_port, CLIENT, source_address="127.0.0.1")
        assert await answered(client) == 2001
        await client.close()


async def test_an_origin_host_bound_to_addresses_is_unknown_elsewhere() -> None:
    policy = PeerPolicy(host_networks={"pgw.test": (ip_network("127.0.0.1/32"),)})
    async with running_server(None, policy=policy) as running:
        with pytest.raises(ConnectionError, match="3010"):
            await DiameterClient.connect("127.0.0.1", running.clear_port, CLIENT, source_address="127.0.0.2")
        other = await DiameterClient.connect(
            "127.0.0.1", running.clear_port, LocalIdentity("other.test", "test"), source_address="127.0.0.2"
        )
        await other.close()


# --- the pure parts ---------------------------------------------------------------------------


def test_certificate_names_prefer_the_subject_alternative_names() -> None:
    both = {"subject": ((("commonName", "CN.test"),),), "subjectAltName": (("DNS", "PGW.test"), ("IP Address", "1"))}
    assert certificate_names(both) == {"pgw.test"}
    assert certificate_names({"subject": ((("commonName", "CN.test"),),)}) == {"cn.test"}
    assert certificate_names(None) == frozenset()


@pytest.mark.parametrize(
    ("offered", "accepted", "chosen"),
    [
        ((), (InbandSecurity.NO_INBAND_SECURITY,), InbandSecurity.NO_INBAND_SECURITY),  # absent AVP = 0
        ((InbandSecurity.TLS,), (InbandSecurity.NO_INBAND_SECURITY,), None),
        ((InbandSecurity.TLS, InbandSecurity.NO_INBAND_SECURITY), (InbandSecurity.TLS,), InbandSecurity.TLS),
        ((), (InbandSecurity.TLS,), None),
        ((InbandSecurity.NO_INBAND_SECURITY, InbandSecurity.TLS), (InbandSecurity.TLS, 0), InbandSecurity.TLS),
        ((InbandSecurity.TLS,), (), InbandSecurity.NO_INBAND_SECURITY),  # already TLS: no second handshake
    ],
)
def test_inband_security_choice(
    offered: tuple[InbandSecurity, ...], accepted: tuple[InbandSecurity, ...], chosen: InbandSecurity | None
) -> None:
    identity = dataclasses.replace(SERVER, inband_security=tuple(InbandSecurity(value) for value in accepted))
    assert choose_inband_security(cer_offering(*offered), identity) == chosen


@pytest.mark.parametrize(
    ("peername", "address"),
    [
        (("127.0.0.2", 40000), "127.0.0.2"),
        (("::ffff:127.0.0.2", 40000, 0, 0), "127.0.0.2"),  # an IPv4 peer on a dual-stack listener
        (("fe80::1%eth0", 40000, 0, 2), "fe80::1"),
        ("/run/socket", None),
    ],
)
def test_the_peer_address_as_the_allow_list_sees_it(peername: object, address: str | None) -> None:
    assert _address_of(peername) == (ip_address(address) if address else None)
