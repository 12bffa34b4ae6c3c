"""The asyncio glue over real TCP on loopback (uvloop): requests, shutdown, hostile input."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator

import pytest

from protocol.aio import DiameterClient, DiameterServer, DiameterTransport, RequestFailed
from protocol.aio.transport import WRITE_BUFFER_HIGH_BYTES
from protocol.capabilities import LocalIdentity, build_cer
from protocol.codec import FrameReader, decode, encode
from protocol.constants import MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION
from protocol.events import Event, PeerClosed
from protocol.message import Message, answer_to, avp, request
from protocol.peer import PeerState

SERVER = LocalIdentity("ocs.test", "test")
CLIENT = LocalIdentity("pgw.test", "test")


def ccr(number: int) -> Message:
    return request(
        272,
        4,
        [
            avp("Session-Id", f"pgw.test;{number}"),
            avp("Origin-Host", "pgw.test"),
            avp("Origin-Realm", "test"),
            avp("Destination-Realm", "test"),
            avp("Auth-Application-Id", 4),
            avp("Service-Context-Id", "32251@3gpp.org"),
            avp("CC-Request-Type", "EVENT_REQUEST"),
            avp("CC-Request-Number", number),
        ],
    )


class EchoApplication:
    """Answers every CCR with its own CC-Request-Number; can hold answers back."""

    def __init__(self) -> None:
        self.hold = False
        self.held: list[tuple[DiameterTransport, Message]] = []
        self.events: list[Event] = []

    def handle(self, transport: DiameterTransport, message: Message) -> None:
        if self.hold:
            self.held.append((transport, message))
            return
        transport.send_answer(
            answer_to(
                message,
                [
                    avp("Session-Id", message.get("Session-Id") or ""),
                    avp("Result-Code", 2001),
                    *SERVER.origin_avps(),
                    avp("Auth-Application-Id", 4),
                    avp("CC-Request-Type", 4),
                    avp("CC-Request-Number", message.get("CC-Request-Number") or 0),
                ],
            )
        )

    def on_event(self, transport: DiameterTransport, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
async def running() -> AsyncIterator[tuple[DiameterServer, EchoApplication, int]]:
    application = EchoApplication()
    server = DiameterServer(SERVER, application.handle, on_event=application.on_event)
    _, port = await server.start("127.0.0.1", 0)
    yield server, application, port
    await server.close(timeout_seconds=1.0)


async def test_many_concurrent_requests_are_answered(running: tuple[DiameterServer, EchoApplication, int]) -> None:
    server, _, port = running
    client = await DiameterClient.connect("127.0.0.1", port, CLIENT)
    answers = await asyncio.gather(*(client.request(ccr(n), timeout_seconds=5) for n in range(500)))
    assert [a.get("CC-Request-Number") for a in answers] == list(range(500))
    assert all(a.get("Result-Code") == 2001 for a in answers)
    (transport,) = server.connections
    assert transport.peer.capabilities is not None and transport.peer.capabilities.origin_host == "pgw.test"
    await client.close()
    assert not server.connections


async def test_server_shutdown_sends_dpr_and_fails_unanswered(
    running: tuple[DiameterServer, EchoApplication, int],
) -> None:
    server, application, port = running
    client = await DiameterClient.connect("127.0.0.1", port, CLIENT)
    application.hold = True
    pending = client.send(ccr(1))
    while not application.held:
        await asyncio.sleep(0.001)
    await server.close(timeout_seconds=1.0)
    await asyncio.wait_for(asyncio.shield(client.transport.closed), 2)
    assert client.transport.peer.state is PeerState.CLOSED
    with pytest.raises(RequestFailed, match="DPR"):
        await pending
    assert not server.connections


async def _raw_connection(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_oversized_frame_closes_without_reading_the_body(
    running: tuple[DiameterServer, EchoApplication, int],
) -> None:
    _, application, port = running
    reader, writer = await _raw_connection(port)
    writer.write(struct.pack(">I", (1 << 24) | 0xFFFFF0))  # claims ~16 MiB; nothing follows
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the server
    assert any(isinstance(e, PeerClosed) and "protocol violation" in e.reason for e in application.events)
    writer.close()


async def test_garbage_before_cer_closes_the_connection(running: tuple[DiameterServer, EchoApplication, int]) -> None:
    _, _, port = running
    reader, writer = await _raw_connection(port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


async def test_raw_cer_then_malformed_ccr_gets_an_answer(running: tuple[DiameterServer, EchoApplication, int]) -> None:
    _, _, port = running
    reader, writer = await _raw_connection(port)
    cer = build_cer(CLIENT)
    cer.hop_by_hop, cer.end_to_end = 1, 1
    bad = ccr(3)
    bad.hop_by_hop, bad.end_to_end = 2, 2
    bad.avps = [a for a in bad.avps if a.code != 461]  # no Service-Context-Id
    writer.write(encode(cer) + encode(bad))
    await writer.drain()
    frames: list[bytes] = []
    frame_reader = FrameReader()
    while len(frames) < 2:
        frames += frame_reader.feed(await asyncio.wait_for(reader.read(4096), 2))
    cea, answer = (decode(f).message for f in frames)
    assert cea.get("Result-Code") == 2001
    assert answer.hop_by_hop == 2 and answer.get("Result-Code") == 5005
    failed = answer.find("Failed-AVP")
    assert failed is not None and failed.children[0].code == 461
    writer.close()


async def _send_without_reading(sock: socket.socket, sent: list[int]) -> None:
    """CER, then CCRs as fast as the server takes them; never reads what it answers."""
    loop = asyncio.get_running_loop()
    cer = build_cer(CLIENT)
    cer.hop_by_hop = cer.end_to_end = 1
    await loop.sock_sendall(sock, encode(cer))
    number = 2
    while True:
        message = ccr(number)
        message.hop_by_hop = message.end_to_end = number
        try:
            await loop.sock_sendall(sock, encode(message))
        except OSError:
            return  # the server aborted the connection
        sent[0] += 1
        number += 1


async def _read_until_closed(sock: socket.socket) -> None:
    """Read (what the kernel delivered before) until the connection ends, by reset or EOF."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(ConnectionResetError):
        while await loop.sock_recv(sock, 1 << 16):
            pass


async def test_a_peer_that_stops_reading_is_paused_then_aborted_when_the_watchdog_gives_up() -> None:
    application = EchoApplication()
    server = DiameterServer(
        SERVER, application.handle, on_event=application.on_event, tw_seconds=0.3, minimum_tw_seconds=0.1
    )
    _, port = await server.start("127.0.0.1", 0)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills fast: answers back up at once
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    sent = [0]
    sender = asyncio.create_task(_send_without_reading(sock, sent))
    try:
        while not server.connections:
            await asyncio.sleep(0.01)
        (transport,) = server.connections
        # The answers cannot be written: the server stops reading, so what it queues stays bounded.
        while not transport.reading_paused:
            await asyncio.sleep(0.01)
        assert transport.queued_bytes <= WRITE_BUFFER_HIGH_BYTES + MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION * 2_048
        # The watchdog's DWR is never answered: after 2 x Tw it gives up, and the transport is
        # aborted (a graceful close would wait forever for a drain), so the connection is gone.
        await asyncio.wait_for(asyncio.shield(transport.closed), 10)
        assert not server.connections
        closed = [event for event in application.events if isinstance(event, PeerClosed)]
        assert len(closed) == 1 and "watchdog" in closed[0].reason
        await asyncio.wait_for(_read_until_closed(sock), 10)  # the client sees its end too
    finally:
        sender.cancel()
        sock.close()
        await server.close(timeout_seconds=1.0)
