"""Interoperability with an independent Diameter stack: python-diameter 0.9.0 (import name ``diameter``).

Theory of operation: our own tests only prove that our encoder and decoder agree with each other.
Here a second, unrelated implementation sits on the other side. python-diameter's ``Node`` (its
own sockets, threads and peer state machine) connects to our ``DiameterServer`` over TCP on
loopback and runs CER/CEA, DWR/DWA, DPR/DPA and CCR/CCA; its message classes are also driven by
hand over a raw socket, so header identifiers and the close after DPA can be checked exactly.
Messages are then crossed both ways, ours decoded by python-diameter and theirs by us, and
compared field by field and AVP by AVP.

Where the two stacks disagree, the tests pin down the disagreement and which side the
specification supports, instead of hiding it:
- python-diameter 0.9.0 clears the M bit on Origin-Host / Origin-Realm in CCR and CCA and on
  PDP-Address / SGSN-Address, where RFC 6733 section 4.5 and TS 32.299 table 7.2 set it. Our
  decoder accepts a missing M bit on an AVP it understands (RFC 6733 section 4.1: such an AVP is
  informational), so its messages decode with no failures, as network elements' must.
- python-diameter 0.9.0 converts Time AVPs after the NTP era rollover (7 Feb 2036) one hour off
  from RFC 6733 section 4.3.1 / RFC 4330 section 3; before 2036 both agree.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest
from diameter.message import Message as TheirMessage
from diameter.message import constants as their_constants
from diameter.message.commands import (
    CapabilitiesExchangeAnswer,
    CapabilitiesExchangeRequest,
    CreditControlAnswer,
    CreditControlRequest,
    DeviceWatchdogAnswer,
    DeviceWatchdogRequest,
    DisconnectPeerAnswer,
    DisconnectPeerRequest,
)

from bench.gy_messages import gy_cca_update, gy_ccr_update
from protocol.aio import DiameterServer, DiameterTransport
from protocol.capabilities import LocalIdentity
from protocol.codec import decode, encode
from protocol.constants import ResultCode
from protocol.events import Event, PeerClosed, PeerOpened
from protocol.grammar import validate
from protocol.message import Avp, Message, answer_to, avp
from tests.protocol.interop_support import (
    CREDIT_CONTROL_APPLICATION,
    M_BIT_CLEARED_BY_PYTHON_DIAMETER,
    connect_client_node,
    our_tree,
    read_frame,
    stop_client_node,
    their_cca,
    their_ccr,
    wire_tree,
    with_required_m_bits,
)

SERVER = LocalIdentity("ocs.test", "test")
CLIENT_HOST = "pgw.test"
APPLICATIONS = {0, CREDIT_CONTROL_APPLICATION}


class GyApplication:
    """Answers every CCR with a CCA granting 10 MB per Rating-Group; records what it saw."""

    def __init__(self) -> None:
        self.requests: list[Message] = []
        self.events: list[Event] = []

    def handle(self, transport: DiameterTransport, message: Message) -> None:
        self.requests.append(message)
        granted = [
            avp(
                "Multiple-Services-Credit-Control",
                [
                    avp("Granted-Service-Unit", [avp("CC-Total-Octets", 10_000_000)]),
                    avp("Rating-Group", mscc.get("Rating-Group") or 0),
                    avp("Result-Code", 2001),
                ],
            )
            for mscc in message.find_all("Multiple-Services-Credit-Control")
        ]
        transport.send_answer(
            answer_to(
                message,
                [
                    avp("Session-Id", message.get("Session-Id") or ""),
                    avp("Result-Code", 2001),
                    *SERVER.origin_avps(),
                    avp("Auth-Application-Id", CREDIT_CONTROL_APPLICATION),
                    avp("CC-Request-Type", message.get("CC-Request-Type") or 0),
                    avp("CC-Request-Number", message.get("CC-Request-Number") or 0),
                    *granted,
                ],
            )
        )

    def on_event(self, transport: DiameterTransport, event: Event) -> None:
        self.events.append(event)


@pytest.fixture
async def running() -> AsyncIterator[tuple[DiameterServer, GyApplication, int]]:
    application = GyApplication()
    server = DiameterServer(SERVER, application.handle, on_event=application.on_event)
    _, port = await server.start("127.0.0.1", 0)
    yield server, application, port
    await server.close(timeout_seconds=1.0)


async def _until_no_connections(server: DiameterServer) -> None:
    async def poll() -> None:
        while server.connections:
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), 3)


def _assert_answers(answer: Any, request: Any) -> None:
    """The identifiers and command of an answer are the request's (RFC 6733 section 6.2)."""
    assert not answer.header.is_request
    assert answer.header.command_code == request.header.command_code
    assert answer.header.hop_by_hop_identifier == request.header.hop_by_hop_identifier
    assert answer.header.end_to_end_identifier == request.header.end_to_end_identifier


# --- python-diameter as the client of our server ----------------------------------------------------
async def test_python_diameter_node_exchanges_cer_dwr_dpr_with_our_server(
    running: tuple[DiameterServer, GyApplication, int],
) -> None:
    server, application, port = running
    node, peer, _ = await connect_client_node(port, SERVER.origin_host, SERVER.origin_realm, CLIENT_HOST)
    try:
        cea = await node.next_base_answer()
        assert isinstance(cea, CapabilitiesExchangeAnswer)
        _assert_answers(cea, node.sent_request(257))
        assert cea.result_code == ResultCode.DIAMETER_SUCCESS
        assert (cea.origin_host, cea.origin_realm) == (b"ocs.test", b"test")
        assert cea.auth_application_id == [CREDIT_CONTROL_APPLICATION]
        assert cea.host_ip_address == [(1, "127.0.0.1")]
        assert (cea.product_name, cea.origin_state_id) == ("open-ocs", SERVER.origin_state_id)
        (opened,) = [e for e in application.events if isinstance(e, PeerOpened)]
        assert opened.capabilities.origin_host == CLIENT_HOST
        assert opened.capabilities.product_name == "python-diameter"

        node.send_dwr(peer.connection)
        dwa = await node.next_base_answer()
        assert isinstance(dwa, DeviceWatchdogAnswer)
        _assert_answers(dwa, node.sent_request(280))
        assert dwa.result_code == ResultCode.DIAMETER_SUCCESS
        assert (dwa.origin_host, dwa.origin_realm, dwa.origin_state_id) == (b"ocs.test", b"test", 1)

        node.send_dpr(peer.connection)
        dpa = await node.next_base_answer()
        assert isinstance(dpa, DisconnectPeerAnswer)
        _assert_answers(dpa, node.sent_request(282))
        assert dpa.result_code == ResultCode.DIAMETER_SUCCESS
        assert (dpa.origin_host, dpa.origin_realm) == (b"ocs.test", b"test")
        await _until_no_connections(server)
        closed = [e for e in application.events if isinstance(e, PeerClosed)]
        assert [e.reason for e in closed] == ["peer sent DPR (Disconnect-Cause 0)"]  # 0: REBOOTING
    finally:
        await stop_client_node(node)


async def test_python_diameter_node_ccr_over_the_wire(running: tuple[DiameterServer, GyApplication, int]) -> None:
    """Their CCR, exactly as python-diameter builds it (M bits clear on Origin-Host/Realm), reaches
    our application, and their Node reads our CCA."""
    _, application, port = running
    node, _, client_application = await connect_client_node(port, SERVER.origin_host, SERVER.origin_realm, CLIENT_HOST)
    try:
        as_built = their_ccr(CLIENT_HOST, SERVER.origin_realm, hop_by_hop=0, end_to_end=0x78)
        cca = await asyncio.to_thread(client_application.send_request, as_built, 3)
        assert isinstance(cca, CreditControlAnswer)
        assert not cca.header.is_error and cca.result_code == ResultCode.DIAMETER_SUCCESS
        assert cca.header.end_to_end_identifier == 0x78
        assert (cca.session_id, cca.cc_request_type, cca.cc_request_number) == (f"{CLIENT_HOST};1690000001;7;0", 2, 5)
        grants = [
            (m.rating_group, m.granted_service_unit.cc_total_octets) for m in cca.multiple_services_credit_control
        ]
        assert grants == [(10, 10_000_000), (20, 10_000_000)]
        (received,) = application.requests
        assert received.get("Origin-Host") == CLIENT_HOST
    finally:
        await stop_client_node(node)


async def test_python_diameter_messages_over_a_raw_socket(running: tuple[DiameterServer, GyApplication, int]) -> None:
    """CER, DWR and DPR built by python-diameter's classes; after the DPA our side closes the
    connection although this client keeps its end open."""
    _, application, port = running
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    cer = CapabilitiesExchangeRequest()
    cer.origin_host, cer.origin_realm = CLIENT_HOST.encode(), b"test"
    cer.host_ip_address = ["127.0.0.1"]
    cer.vendor_id, cer.product_name, cer.origin_state_id = 0, "raw-client", 9
    cer.auth_application_id = [CREDIT_CONTROL_APPLICATION]
    dwr = DeviceWatchdogRequest()
    dwr.origin_host, dwr.origin_realm, dwr.origin_state_id = CLIENT_HOST.encode(), b"test", 9
    dpr = DisconnectPeerRequest()
    dpr.origin_host, dpr.origin_realm = CLIENT_HOST.encode(), b"test"
    dpr.disconnect_cause = their_constants.E_DISCONNECT_CAUSE_DO_NOT_WANT_TO_TALK_TO_YOU
    answer_types = (CapabilitiesExchangeAnswer, DeviceWatchdogAnswer, DisconnectPeerAnswer)
    for number, (request, answer_type) in enumerate(zip((cer, dwr, dpr), answer_types, strict=True), start=1):
        request.header.hop_by_hop_identifier = 0xA0000000 + number
        request.header.end_to_end_identifier = 0x0B000000 + number
        writer.write(request.as_bytes())
        answer = TheirMessage.from_bytes(await read_frame(reader))
        assert isinstance(answer, answer_type)
        _assert_answers(answer, request)
        assert not answer.header.is_proxyable  # base commands are never proxied (RFC 6733 section 5)
        assert answer.result_code == ResultCode.DIAMETER_SUCCESS
        assert (answer.origin_host, answer.origin_realm) == (b"ocs.test", b"test")
        if answer_type is CapabilitiesExchangeAnswer:
            assert answer.auth_application_id == [CREDIT_CONTROL_APPLICATION]
    assert await asyncio.wait_for(reader.read(), 3) == b""  # closed by our server
    assert [e.reason for e in application.events if isinstance(e, PeerClosed)] == ["peer sent DPR (Disconnect-Cause 2)"]
    writer.close()


# --- our messages decoded by python-diameter -----------------------------------------------------
def test_our_ccr_decodes_in_python_diameter_with_the_same_values() -> None:
    ours = gy_ccr_update()
    frame = encode(ours)
    theirs = TheirMessage.from_bytes(frame)
    assert isinstance(theirs, CreditControlRequest)
    header = theirs.header
    assert (header.is_request, header.is_proxyable, header.application_id) == (True, True, 4)
    assert (header.hop_by_hop_identifier, header.end_to_end_identifier) == (ours.hop_by_hop, ours.end_to_end)
    assert theirs.session_id == ours.get("Session-Id") == "pgw01.operator.net;1690000000;42;0"
    assert theirs.origin_host == b"pgw01.operator.net"
    assert (theirs.origin_realm, theirs.destination_realm) == (b"operator.net", b"ocs.operator.net")
    assert theirs.service_context_id == "32251@3gpp.org"
    assert (theirs.cc_request_type, theirs.cc_request_number) == (2, 3)
    assert [(s.subscription_id_type, s.subscription_id_data) for s in theirs.subscription_id] == [
        (0, "491700000042"),
        (1, "262010000000042"),
    ]
    assert theirs.multiple_services_indicator == 1
    reported = [
        (
            mscc.rating_group,
            [
                (u.cc_total_octets, u.cc_input_octets, u.cc_output_octets, u.reporting_reason)
                for u in mscc.used_service_unit
            ],
        )
        for mscc in theirs.multiple_services_credit_control
    ]
    assert reported == [(10, [(1_500_000, 375_000, 1_125_000, 2)]), (20, [(250_000, 62_500, 187_500, 2)])]
    ps = theirs.service_information.ps_information
    assert (ps.tgpp_charging_id, ps.tgpp_pdp_type) == (b"\x00\x01\x02\x03", 0)
    assert (ps.pdp_address, ps.sgsn_address, ps.ggsn_address) == (
        [(1, "10.1.2.3")],
        [(1, "192.0.2.10")],
        [(1, "192.0.2.20")],
    )
    assert (ps.tgpp_sgsn_mcc_mnc, ps.called_station_id, ps.tgpp_rat_type) == ("26201", "internet", b"\x06")
    assert ps.tgpp_user_location_info == bytes.fromhex("8262f2100001a262f210001b2c01")
    # And every AVP, flags included, reads the same in their parser as in our message object.
    assert wire_tree(frame) == our_tree(ours.avps)


def test_our_cca_decodes_in_python_diameter_with_the_same_values() -> None:
    ours = gy_cca_update(gy_ccr_update())
    frame = encode(ours)
    theirs = TheirMessage.from_bytes(frame)
    assert isinstance(theirs, CreditControlAnswer)
    assert not theirs.header.is_request and not theirs.header.is_error
    assert (theirs.header.hop_by_hop_identifier, theirs.header.end_to_end_identifier) == (0x1234, 0x5678)
    assert (theirs.result_code, theirs.origin_host, theirs.auth_application_id) == (2001, b"ocs.operator.net", 4)
    assert (theirs.cc_request_type, theirs.cc_request_number) == (2, 3)
    grants = [
        (
            m.rating_group,
            m.granted_service_unit.cc_total_octets,
            m.validity_time,
            m.result_code,
            m.volume_quota_threshold,
        )
        for m in theirs.multiple_services_credit_control
    ]
    assert grants == [(10, 10_000_000, 3600, 2001, 1_000_000), (20, 10_000_000, 3600, 2001, 1_000_000)]
    assert wire_tree(frame) == our_tree(ours.avps)


# --- python-diameter's messages decoded by us ----------------------------------------------------
def _children(parent: Avp | None) -> list[Avp]:
    assert parent is not None
    return parent.children


def test_python_diameter_ccr_decodes_in_ours_with_the_same_values() -> None:
    frame = their_ccr("pgw02.operator.net", "ocs.operator.net", hop_by_hop=0x11, end_to_end=0x22).as_bytes()
    decoded = decode(frame)
    message = decoded.message
    assert (message.command_code, message.application_id, message.is_request) == (272, 4, True)
    assert (message.hop_by_hop, message.end_to_end) == (0x11, 0x22)
    assert message.get("Session-Id") == "pgw02.operator.net;1690000001;7;0"
    assert (message.get("Origin-Host"), message.get("Destination-Realm")) == ("pgw02.operator.net", "ocs.operator.net")
    assert (message.get("CC-Request-Type"), message.get("CC-Request-Number")) == (2, 5)
    assert message.get("Event-Timestamp") == datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    identities = [
        (s.get("Subscription-Id-Type"), s.get("Subscription-Id-Data")) for s in message.find_all("Subscription-Id")
    ]
    assert identities == [(0, "491700000007"), (1, "262010000000007")]
    msccs = list(message.find_all("Multiple-Services-Credit-Control"))
    assert [m.get("Rating-Group") for m in msccs] == [10, 20]
    first_used, second_used = (m.find("Used-Service-Unit") for m in msccs)
    assert first_used is not None and second_used is not None
    assert [first_used.get(n) for n in ("CC-Total-Octets", "CC-Input-Octets", "CC-Output-Octets")] == [
        3_000_000,
        1_000_000,
        2_000_000,
    ]
    assert (first_used.get("Reporting-Reason"), second_used.get("CC-Time"), second_used.get("Reporting-Reason")) == (
        2,
        120,
        3,
    )
    assert msccs[1].get("Service-Identifier") == 1
    ps = message.find("Service-Information")
    ps_information = ps.find("PS-Information") if ps is not None else None
    assert ps_information is not None
    assert [ps_information.get(n) for n in ("3GPP-Charging-Id", "3GPP-PDP-Type", "3GPP-SGSN-MCC-MNC")] == [
        b"\x00\x00\x00\x07",
        0,
        "26201",
    ]
    assert [str(ps_information.get(n)) for n in ("PDP-Address", "SGSN-Address", "GGSN-Address")] == [
        "10.9.8.7",
        "192.0.2.1",
        "192.0.2.2",
    ]
    assert (ps_information.get("Called-Station-Id"), ps_information.get("3GPP-RAT-Type")) == ("internet", b"\x06")
    assert ps_information.get("3GPP-User-Location-Info") == bytes.fromhex("8262f2100001a262f210001b2c01")
    assert wire_tree(frame) == our_tree(message.avps)
    assert validate(message, APPLICATIONS) == []
    # The M bits python-diameter leaves clear are accepted: the AVPs are understood.
    assert {(code, vendor) for code, vendor in M_BIT_CLEARED_BY_PYTHON_DIAMETER} <= {
        (item.code, item.vendor_id) for item in _all_avps(message.avps) if not item.flags & 0x40
    }
    assert decoded.failures == []


def test_python_diameter_ccr_with_the_required_m_bits_decodes_without_failures() -> None:
    ccr = with_required_m_bits(their_ccr("pgw02.operator.net", "ocs.operator.net", hop_by_hop=0x11, end_to_end=0x22))
    decoded = decode(ccr.as_bytes())
    assert decoded.failures == []
    assert validate(decoded.message, APPLICATIONS) == []
    assert len(list(decoded.message.find_all("Multiple-Services-Credit-Control"))) == 2


def _all_avps(avps: list[Avp]) -> list[Avp]:
    found: list[Avp] = []
    for item in avps:
        found.append(item)
        found += _all_avps(item.children)
    return found


def test_python_diameter_cca_decodes_in_ours_with_the_same_values() -> None:
    request = gy_ccr_update()
    frame = their_cca(encode(request), "ocs.operator.net", "operator.net").as_bytes()
    decoded = decode(frame)
    message = decoded.message
    assert not message.is_request and not message.is_error
    assert (message.hop_by_hop, message.end_to_end) == (request.hop_by_hop, request.end_to_end)
    assert (message.get("Session-Id"), message.get("Result-Code")) == (request.get("Session-Id"), 2001)
    assert (message.get("Origin-Host"), message.get("Auth-Application-Id")) == ("ocs.operator.net", 4)
    assert (message.get("CC-Request-Type"), message.get("CC-Request-Number")) == (2, 3)
    grants = [
        (
            m.get("Rating-Group"),
            _children(m.find("Granted-Service-Unit"))[0].value,
            m.get("Validity-Time"),
            m.get("Result-Code"),
            m.get("Volume-Quota-Threshold"),
        )
        for m in message.find_all("Multiple-Services-Credit-Control")
    ]
    assert grants == [(10, 10_000_000, 3600, 2001, 1_000_000), (20, 10_000_000, 3600, 2001, 1_000_000)]
    assert wire_tree(frame) == our_tree(message.avps)
    assert validate(message, APPLICATIONS) == []
    assert decoded.failures == []  # Origin-Host / Origin-Realm without M: accepted


# --- Time after the 2036 NTP rollover ---------------------------------------------------------------
def test_time_after_2036_is_one_hour_off_in_python_diameter() -> None:
    """RFC 6733 section 4.3.1 / RFC 4330 section 3: a Time with the top bit clear counts from
    2036-02-07 06:28:16 UTC, i.e. POSIX seconds = value + 2**32 - 2208988800. python-diameter 0.9.0
    uses 2085974896 instead of 2085978496 for that instant, one hour early, both ways. Before 2036
    the two stacks agree (the Event-Timestamp of the CCR test above)."""
    moment = datetime.datetime(2040, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)
    frame = encode(answer_to(gy_ccr_update(), [avp("Event-Timestamp", moment)]))
    payload = frame[-4:]
    assert int.from_bytes(payload, "big") + 2**32 - 2_208_988_800 == moment.timestamp()  # the RFC 4330 reading
    (their_reading,) = wire_tree(frame)
    assert their_reading[3] == moment.timestamp() - 3600
    their_answer = CreditControlAnswer()
    their_answer.event_timestamp = moment
    (their_event_timestamp,) = [a for a in their_answer.avps if a.code == 55]
    ours = decode(encode(answer_to(gy_ccr_update(), [Avp(55, 0x40, 0, their_event_timestamp.payload)])))
    assert ours.failures == []
    our_reading = ours.message.get("Event-Timestamp")
    assert isinstance(our_reading, datetime.datetime)
    assert our_reading == moment + datetime.timedelta(hours=1)
