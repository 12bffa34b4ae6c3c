"""Helpers for the interoperability tests against python-diameter (``diameter``, an independent stack).

Theory of operation: python-diameter plays the other end. ``ClientNode`` is its own ``Node``
(threads, sockets, CER/DWR/DPR state machine) connected to our server, with the base answers it
receives put on a queue so an async test can wait for them without blocking our event loop.
``wire_tree`` parses a frame with python-diameter's AVP parser and ``our_tree`` walks one of our
``Message`` objects; both reduce every AVP to ``(code, vendor, flags, value)`` with values in one
canonical form (text as bytes, addresses as strings, times as POSIX seconds), so two stacks'
readings of the same bytes can be compared AVP by AVP. ``their_ccr`` / ``their_cca`` build Gy
messages with python-diameter's own command classes.

python-diameter is untyped and thread based: everything it calls back runs on its threads, so the
callbacks here only append to thread-safe queues and lists.
"""

from __future__ import annotations

import asyncio
import datetime
import queue
import struct
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from diameter.message import Message as TheirMessage
from diameter.message import constants as their_constants
from diameter.message.avp import Avp as TheirAvp
from diameter.message.avp import AvpAddress, AvpGrouped, AvpTime
from diameter.message.avp.grouped import (
    GrantedServiceUnit,
    MultipleServicesCreditControl,
    PsInformation,
    RequestedServiceUnit,
    ServiceInformation,
    UsedServiceUnit,
)
from diameter.message.commands import CreditControlAnswer, CreditControlRequest, DeviceWatchdogRequest
from diameter.message.packer import Unpacker
from diameter.node import Node
from diameter.node.application import Application
from diameter.node.peer import Peer, PeerConnection

from protocol.avp_types import OtherAddress
from protocol.message import Avp, Value

HEADER_LENGTH = 20  # RFC 6733 section 3
CREDIT_CONTROL_APPLICATION = 4  # RFC 4006 section 1.3
# One wait for anything the other stack does on loopback; generous against a loaded CI machine.
EXCHANGE_TIMEOUT_SECONDS = 3.0

CanonicalValue = int | float | bytes | str | tuple["CanonicalAvp", ...]
CanonicalAvp = tuple[int, int, int, CanonicalValue]  # (code, vendor_id, flags, value)


# --- python-diameter's Node as the client ---------------------------------------------------------
class ClientNode(Node):  # type: ignore[misc]  # python-diameter ships no type information
    """python-diameter's Node, recording what it sends and the base answers it receives."""

    def __init__(self, origin_host: str, realm: str) -> None:
        super().__init__(origin_host, realm, vendor_ids=[10415])
        # The Node polls its peers' timers every wakeup_interval; a short one makes connect and
        # shutdown take milliseconds instead of seconds in a test.
        self.wakeup_interval = 0.05
        self.sent: list[Any] = []
        self.base_answers: queue.Queue[Any] = queue.Queue()
        self.opened_connections: list[PeerConnection] = []

    def send_message(self, conn: PeerConnection, message: Any) -> None:
        self.sent.append(message)
        super().send_message(conn, message)

    def receive_cea(self, conn: PeerConnection, message: Any) -> None:
        self.opened_connections.append(conn)
        self.base_answers.put(message)
        super().receive_cea(conn, message)

    def receive_dwa(self, conn: PeerConnection, message: Any) -> None:
        self.base_answers.put(message)
        super().receive_dwa(conn, message)

    def receive_dpa(self, conn: PeerConnection, message: Any) -> None:
        self.base_answers.put(message)
        super().receive_dpa(conn, message)

    async def next_base_answer(self) -> Any:
        return await asyncio.to_thread(self.base_answers.get, True, EXCHANGE_TIMEOUT_SECONDS)

    def sent_request(self, command_code: int) -> Any:
        return next(m for m in self.sent if m.header.is_request and m.header.command_code == command_code)


async def connect_client_node(
    port: int, server_host: str, realm: str, origin_host: str
) -> tuple[ClientNode, Peer, Application]:
    """Start a python-diameter Node that connects to our server and completes CER/CEA."""
    node = ClientNode(origin_host, realm)
    peer = node.add_peer(f"aaa://{server_host}:{port};transport=tcp", realm, ["127.0.0.1"], is_persistent=True)
    application = Application(CREDIT_CONTROL_APPLICATION, is_auth_application=True)
    node.add_application(application, [peer])
    node.start()
    await asyncio.to_thread(application.wait_for_ready, EXCHANGE_TIMEOUT_SECONDS)
    return node, peer, application


async def stop_client_node(node: ClientNode) -> None:
    # Node.stop joins its statistics thread, which sleeps in 2 s steps: this is where the
    # python-diameter tests spend most of their time.
    await asyncio.to_thread(node.stop, EXCHANGE_TIMEOUT_SECONDS)
    # Each closed connection still has a reader and a writer thread blocked for up to 5 s on
    # its queue, and they are not daemons, so the interpreter would wait for them at exit. One
    # item in each queue wakes them and they see they were stopped.
    for conn in node.opened_connections:
        conn.add_in_bytes(b"")
        conn.add_out_msg(DeviceWatchdogRequest())


# --- raw frames -------------------------------------------------------------------------------
async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """One whole Diameter message from a stream, cut by its header length (RFC 6733 section 3)."""
    first = await asyncio.wait_for(reader.readexactly(4), EXCHANGE_TIMEOUT_SECONDS)
    length = struct.unpack(">I", first)[0] & 0xFFFFFF
    rest = await asyncio.wait_for(reader.readexactly(length - 4), EXCHANGE_TIMEOUT_SECONDS)
    return first + rest


# --- AVP trees in canonical form ------------------------------------------------------------------
def _canonical_time(value: datetime.datetime) -> int:
    # python-diameter returns naive local datetimes, we return aware UTC ones; both name an instant.
    return int(value.timestamp())


def _their_avp(item: Any) -> CanonicalAvp:
    value: CanonicalValue
    if isinstance(item, AvpGrouped):
        value = tuple(_their_avp(child) for child in item.value)
    elif isinstance(item, AvpAddress):
        value = item.value[1]
    elif isinstance(item, AvpTime):
        value = _canonical_time(item.value)
    elif type(item) is TheirAvp:  # not in python-diameter's dictionary: raw payload
        value = item.payload
    else:
        raw = item.value
        value = raw.encode() if isinstance(raw, str) else raw
    return (item.code, item.vendor_id, item.flags, value)


def wire_tree(frame: bytes) -> tuple[CanonicalAvp, ...]:
    """Every AVP of a frame as python-diameter's parser reads it."""
    unpacker = Unpacker(frame)
    unpacker.set_position(HEADER_LENGTH)
    avps: list[CanonicalAvp] = []
    while unpacker.get_position() < len(frame):
        avps.append(_their_avp(TheirAvp.from_unpacker(unpacker)))
    return tuple(avps)


def _our_value(value: Value) -> CanonicalValue:
    if isinstance(value, list):
        return our_tree(value)
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, OtherAddress):
        return value.data
    if isinstance(value, datetime.datetime):
        return _canonical_time(value)
    return value


def our_tree(avps: Sequence[Avp]) -> tuple[CanonicalAvp, ...]:
    """Every AVP of one of our messages (or groups) in the same canonical form."""
    return tuple((item.code, item.vendor_id, item.flags, _our_value(item.value)) for item in avps)


# --- Gy messages built with python-diameter's command classes -------------------------------------
def their_ccr(origin_host: str, destination_realm: str, hop_by_hop: int, end_to_end: int) -> Any:
    """A CCR-UPDATE as a PGW would send it (TS 32.299 PS charging): two MSCCs, two identities."""
    ccr = CreditControlRequest()
    # python-diameter's Application.send_request fills the header's Application-Id; the command
    # class alone leaves it 0, so set it as that method would.
    ccr.header.application_id = CREDIT_CONTROL_APPLICATION
    ccr.header.hop_by_hop_identifier = hop_by_hop
    ccr.header.end_to_end_identifier = end_to_end
    ccr.session_id = f"{origin_host};1690000001;7;0"
    ccr.origin_host = origin_host.encode()
    ccr.origin_realm = b"operator.net"
    ccr.destination_realm = destination_realm.encode()
    ccr.service_context_id = "32251@3gpp.org"
    ccr.cc_request_type = their_constants.E_CC_REQUEST_TYPE_UPDATE_REQUEST
    ccr.cc_request_number = 5
    ccr.event_timestamp = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    ccr.add_subscription_id(their_constants.E_SUBSCRIPTION_ID_TYPE_END_USER_E164, "491700000007")
    ccr.add_subscription_id(their_constants.E_SUBSCRIPTION_ID_TYPE_END_USER_IMSI, "262010000000007")
    ccr.multiple_services_indicator = 1
    ccr.add_multiple_services_credit_control(
        requested_service_unit=RequestedServiceUnit(),
        used_service_unit=UsedServiceUnit(
            cc_total_octets=3_000_000, cc_input_octets=1_000_000, cc_output_octets=2_000_000, reporting_reason=2
        ),
        rating_group=10,
    )
    ccr.add_multiple_services_credit_control(
        used_service_unit=UsedServiceUnit(cc_time=120, reporting_reason=3), rating_group=20, service_identifier=1
    )
    ccr.service_information = ServiceInformation(
        ps_information=PsInformation(
            tgpp_charging_id=b"\x00\x00\x00\x07",
            tgpp_pdp_type=0,
            pdp_address=["10.9.8.7"],
            sgsn_address=["192.0.2.1"],
            ggsn_address=["192.0.2.2"],
            tgpp_sgsn_mcc_mnc="26201",
            called_station_id="internet",
            tgpp_ms_timezone=b"\x40\x00",
            tgpp_user_location_info=bytes.fromhex("8262f2100001a262f210001b2c01"),
            tgpp_rat_type=b"\x06",
        )
    )
    return ccr


def their_cca(request_frame: bytes, origin_host: str, origin_realm: str) -> Any:
    """A CCA-UPDATE granting 10 MB per Rating-Group, built from the request python-diameter read."""
    ccr = TheirMessage.from_bytes(request_frame)
    cca = ccr.to_answer()
    cca.session_id = ccr.session_id
    cca.origin_host = origin_host.encode()
    cca.origin_realm = origin_realm.encode()
    cca.result_code = their_constants.E_RESULT_CODE_DIAMETER_SUCCESS
    cca.cc_request_type = ccr.cc_request_type
    cca.cc_request_number = ccr.cc_request_number
    for mscc in ccr.multiple_services_credit_control:
        cca.multiple_services_credit_control.append(
            MultipleServicesCreditControl(
                granted_service_unit=GrantedServiceUnit(cc_total_octets=10_000_000),
                rating_group=mscc.rating_group,
                validity_time=3600,
                result_code=their_constants.E_RESULT_CODE_DIAMETER_SUCCESS,
                volume_quota_threshold=1_000_000,
            )
        )
    assert isinstance(cca, CreditControlAnswer)
    return cca


# RFC 6733 section 4.5 (Origin-Host 264, Origin-Realm 296) and TS 32.299 table 7.2 (PDP-Address
# 1227, SGSN-Address 1228) require the M bit; python-diameter 0.9.0 leaves it clear on these.
M_BIT_CLEARED_BY_PYTHON_DIAMETER = frozenset({(264, 0), (296, 0), (1227, 10415), (1228, 10415)})


def with_required_m_bits(message: Any) -> Any:
    """The same message with the M bit set where the specifications require it, and nothing else
    changed: python-diameter's own AVP objects, re-encoded by python-diameter."""

    def fix(avps: list[Any]) -> list[Any]:
        for item in avps:
            if (item.code, item.vendor_id) in M_BIT_CLEARED_BY_PYTHON_DIAMETER:
                item.is_mandatory = True
            if isinstance(item, AvpGrouped):
                item.value = fix(item.value)  # children are re-read from the payload on access
        return avps

    return TheirMessage(message.header, fix(message.avps))


def failed_keys(failures: Sequence[Any]) -> set[tuple[int, int, int]]:
    """(Result-Code, AVP code, vendor) of each decode failure."""
    return {
        (int(failure.result_code), failure.failed_avp.code, failure.failed_avp.vendor_id)
        for failure in failures
        if failure.failed_avp is not None
    }
