"""The peer connection state machine: every (state, input) pair, then two peers back to back."""

from __future__ import annotations

import random
from collections.abc import Callable
from itertools import product

import pytest

from protocol.capabilities import LocalIdentity, PeerPolicy, build_cea, build_cer
from protocol.codec import decode, encode
from protocol.constants import ResultCode
from protocol.disconnect import DisconnectCause, build_dpa, build_dpr, build_dwa, build_dwr
from protocol.duplicates import DuplicateCache
from protocol.events import (
    AnswerReceived,
    DuplicateAnswered,
    Event,
    PeerClosed,
    PeerOpened,
    RequestReceived,
    RequestRejected,
)
from protocol.message import Message, answer_to, avp, request
from protocol.peer import TRANSITIONS, PeerConnection, PeerInput, PeerState, Role

SERVER = LocalIdentity("ocs.test", "test")
CLIENT = LocalIdentity("pgw.test", "test")


def server(policy: PeerPolicy | None = None, **options: object) -> PeerConnection:
    return PeerConnection(Role.SERVER, SERVER, policy or PeerPolicy(), 0.0, rng=random.Random(1), **options)  # type: ignore[arg-type]


def client() -> PeerConnection:
    return PeerConnection(Role.CLIENT, CLIENT, PeerPolicy(), 0.0, rng=random.Random(2))


def stamped(message: Message, hop: int = 77, end: int = 88) -> Message:
    message.hop_by_hop, message.end_to_end = hop, end
    return message


def ccr(number: int = 0, session: str = "pgw.test;1") -> Message:
    return stamped(
        request(
            272,
            4,
            [
                avp("Session-Id", session),
                avp("Origin-Host", "pgw.test"),
                avp("Origin-Realm", "test"),
                avp("Destination-Realm", "test"),
                avp("Auth-Application-Id", 4),
                avp("Service-Context-Id", "32251@3gpp.org"),
                avp("CC-Request-Type", "INITIAL_REQUEST"),
                avp("CC-Request-Number", number),
            ],
        ),
        hop=1000 + number,
        end=2000 + number,
    )


def cca_for(request_message: Message, result: int = 2001) -> Message:
    return answer_to(
        request_message,
        [
            avp("Session-Id", request_message.get("Session-Id") or ""),
            avp("Result-Code", result),
            *SERVER.origin_avps(),
            avp("Auth-Application-Id", 4),
            avp("CC-Request-Type", 1),
            avp("CC-Request-Number", request_message.get("CC-Request-Number") or 0),
        ],
    )


def opened_pair() -> tuple[PeerConnection, PeerConnection]:
    s, c = server(), client()
    c.connection_made(0.0)
    assert isinstance(s.receive_data(c.data_to_send(), 0.1)[0], PeerOpened)
    assert isinstance(c.receive_data(s.data_to_send(), 0.2)[0], PeerOpened)
    return s, c


# --- every (state, input) pair ------------------------------------------------------------------


def in_state(state: PeerState) -> PeerConnection:
    if state is PeerState.WAIT_CER:
        return server()
    if state is PeerState.WAIT_CONNECTION:
        return client()
    if state is PeerState.WAIT_CEA:
        c = client()
        c.connection_made(0.0)
        c.data_to_send()
        return c
    s, c = opened_pair()
    if state is PeerState.OPEN:
        return s
    c.disconnect(1.0)
    c.data_to_send()
    assert c.state is PeerState.CLOSING
    return c


def cer_bytes(identity: LocalIdentity = CLIENT) -> bytes:
    return encode(stamped(build_cer(identity)))


def input_feeders() -> dict[PeerInput, Callable[[PeerConnection], list[Event]]]:
    refusing_cer = LocalIdentity("pgw.test", "test", auth_application_ids=(16777238,))  # Gx only: 5010
    cer = stamped(build_cer(CLIENT))
    return {
        PeerInput.CONNECTED: lambda p: (
            p.connection_made(1.0) if p.role is Role.CLIENT else _apply(p, PeerInput.CONNECTED)
        ),
        PeerInput.CER_ACCEPTED: lambda p: p.receive_data(cer_bytes(), 1.0),
        PeerInput.CER_REFUSED: lambda p: p.receive_data(cer_bytes(refusing_cer), 1.0),
        PeerInput.CEA_ACCEPTED: lambda p: p.receive_data(
            encode(build_cea(SERVER, cer, ResultCode.DIAMETER_SUCCESS)), 1.0
        ),
        PeerInput.CEA_REFUSED: lambda p: p.receive_data(
            encode(build_cea(SERVER, cer, ResultCode.DIAMETER_UNKNOWN_PEER)), 1.0
        ),
        PeerInput.DWR: lambda p: p.receive_data(encode(stamped(build_dwr(CLIENT))), 1.0),
        PeerInput.DWA: lambda p: p.receive_data(encode(build_dwa(SERVER, stamped(build_dwr(CLIENT)))), 1.0),
        PeerInput.DPR: lambda p: p.receive_data(encode(stamped(build_dpr(CLIENT, DisconnectCause.BUSY))), 1.0),
        PeerInput.DPA: lambda p: p.receive_data(
            encode(build_dpa(SERVER, stamped(build_dpr(CLIENT, DisconnectCause.BUSY)))), 1.0
        ),
        PeerInput.APPLICATION_REQUEST: lambda p: p.receive_data(encode(ccr()), 1.0),
        PeerInput.APPLICATION_ANSWER: lambda p: p.receive_data(encode(cca_for(ccr())), 1.0),
        PeerInput.DISCONNECT: lambda p: p.disconnect(1.0),
        PeerInput.TIMEOUT: lambda p: _apply(p, PeerInput.TIMEOUT),
        PeerInput.CONNECTION_LOST: lambda p: p.connection_lost(1.0),
    }


def _apply(peer: PeerConnection, event: PeerInput) -> list[Event]:
    peer._apply(event, None)
    return peer._take_events()


LIVE_STATES = [s for s in PeerState if s is not PeerState.CLOSED]
_S, _I = PeerState, PeerInput
# Written from RFC 6733 section 5.6, independently of protocol.peer.TRANSITIONS:
# (state, input) -> next state. Every pair not listed is a protocol violation.
EXPECTED_NEXT: dict[tuple[PeerState, PeerInput], PeerState] = {
    (_S.WAIT_CONNECTION, _I.CONNECTED): _S.WAIT_CEA,
    (_S.WAIT_CONNECTION, _I.CONNECTION_LOST): _S.CLOSED,
    (_S.WAIT_CONNECTION, _I.DISCONNECT): _S.CLOSED,
    (_S.WAIT_CER, _I.CER_ACCEPTED): _S.OPEN,
    (_S.WAIT_CER, _I.CER_REFUSED): _S.CLOSED,
    (_S.WAIT_CER, _I.TIMEOUT): _S.CLOSED,
    (_S.WAIT_CER, _I.CONNECTION_LOST): _S.CLOSED,
    (_S.WAIT_CER, _I.DISCONNECT): _S.CLOSED,
    (_S.WAIT_CEA, _I.CEA_ACCEPTED): _S.OPEN,
    (_S.WAIT_CEA, _I.CEA_REFUSED): _S.CLOSED,
    (_S.WAIT_CEA, _I.TIMEOUT): _S.CLOSED,
    (_S.WAIT_CEA, _I.CONNECTION_LOST): _S.CLOSED,
    (_S.WAIT_CEA, _I.DISCONNECT): _S.CLOSED,
    (_S.OPEN, _I.CER_ACCEPTED): _S.OPEN,
    (_S.OPEN, _I.CER_REFUSED): _S.OPEN,
    (_S.OPEN, _I.DWR): _S.OPEN,
    (_S.OPEN, _I.DWA): _S.OPEN,
    (_S.OPEN, _I.DPR): _S.CLOSED,
    (_S.OPEN, _I.APPLICATION_REQUEST): _S.OPEN,
    (_S.OPEN, _I.APPLICATION_ANSWER): _S.OPEN,
    (_S.OPEN, _I.DISCONNECT): _S.CLOSING,
    (_S.OPEN, _I.CONNECTION_LOST): _S.CLOSED,
    (_S.CLOSING, _I.DPA): _S.CLOSED,
    (_S.CLOSING, _I.TIMEOUT): _S.CLOSED,
    (_S.CLOSING, _I.CONNECTION_LOST): _S.CLOSED,
    (_S.CLOSING, _I.APPLICATION_REQUEST): _S.CLOSING,
    (_S.CLOSING, _I.APPLICATION_ANSWER): _S.CLOSING,
    (_S.CLOSING, _I.DWR): _S.CLOSING,
    (_S.CLOSING, _I.DWA): _S.CLOSING,
    (_S.CLOSING, _I.DPR): _S.CLOSED,
    (_S.CLOSING, _I.DISCONNECT): _S.CLOSING,
}


def test_table_has_exactly_the_expected_rows() -> None:
    assert {key: row[1] for key, row in TRANSITIONS.items()} == EXPECTED_NEXT


@pytest.mark.parametrize(("state", "event"), list(product(LIVE_STATES, PeerInput)), ids=lambda v: v.name)
def test_every_state_input_pair(state: PeerState, event: PeerInput) -> None:
    peer = in_state(state)
    events = input_feeders()[event](peer)
    closed = [e for e in events if isinstance(e, PeerClosed)]
    expected = EXPECTED_NEXT.get((state, event))
    if expected is None:
        assert peer.state is PeerState.CLOSED and peer.close_requested
        assert closed and closed[0].reason.startswith("protocol violation")
    else:
        assert peer.state is expected
        assert peer.close_requested == (expected is PeerState.CLOSED)
        assert not any(e.reason.startswith("protocol violation") for e in closed)


@pytest.mark.parametrize("event", list(PeerInput), ids=lambda v: v.name)
def test_closed_ignores_everything(event: PeerInput) -> None:
    peer = in_state(PeerState.OPEN)
    peer.connection_lost(0.5)
    peer.data_to_send()
    assert input_feeders()[event](peer) == []
    assert peer.state is PeerState.CLOSED and peer.data_to_send() == b""


# --- scenarios --------------------------------------------------------------------------------


def answers(peer: PeerConnection) -> list[Message]:
    from protocol.codec import FrameReader

    return [decode(frame).message for frame in FrameReader().feed(peer.data_to_send())]


def test_request_and_answer_flow_both_ways() -> None:
    s, c = opened_pair()
    sent = c.send_request(ccr(), context="ctx-1")
    events = s.receive_data(c.data_to_send(), 1.0)
    assert events == [RequestReceived(decode(encode(sent)).message)]
    assert s.in_flight == 1
    s.send_answer(cca_for(events[0].message))  # type: ignore[union-attr]
    assert s.in_flight == 0
    got = c.receive_data(s.data_to_send(), 1.1)
    assert len(got) == 1 and isinstance(got[0], AnswerReceived)
    assert got[0].context == "ctx-1" and got[0].message.get("Result-Code") == 2001
    assert c.awaiting_answers == 0


def test_unknown_peer_gets_3010_and_is_closed() -> None:
    s = server(PeerPolicy(allowed_hosts=frozenset({"pgw.allowed"})))
    events = s.receive_data(cer_bytes(), 0.1)
    (cea,) = answers(s)
    assert cea.get("Result-Code") == ResultCode.DIAMETER_UNKNOWN_PEER and cea.is_error
    assert s.close_requested and isinstance(events[-1], PeerClosed)


@pytest.mark.parametrize(
    ("allowed", "origin_host", "origin_realm"),
    [("PGW.Allowed", "pgw.allowed", "test"), ("pgw.allowed", "PGW.ALLOWED", "TEST")],
)
def test_allowed_hosts_and_realms_compare_without_regard_to_case(
    allowed: str, origin_host: str, origin_realm: str
) -> None:
    """DiameterIdentity is an FQDN (RFC 6733 section 4.3.1), matched case-insensitively (RFC
    4343), as host networks and certificate names already were: a configured "PGW.Allowed" was
    compared as written and refused "pgw.allowed" with 3010."""
    policy = PeerPolicy(allowed_hosts=frozenset({allowed}), allowed_realms=frozenset({"Test"}))
    s = server(policy)
    events = s.receive_data(cer_bytes(LocalIdentity(origin_host, origin_realm)), 0.1)
    (cea,) = answers(s)
    assert cea.get("Result-Code") == 2001 and isinstance(events[0], PeerOpened)
    assert policy.refusal("PGW.ALLOWED", "test") == "" and policy.refusal("pgw.other", "test") != ""


def test_no_common_application_gets_5010() -> None:
    s = server()
    s.receive_data(cer_bytes(LocalIdentity("pgw.test", "test", auth_application_ids=(16777238,))), 0.1)
    (cea,) = answers(s)
    assert cea.get("Result-Code") == ResultCode.DIAMETER_NO_COMMON_APPLICATION
    assert s.close_requested


def test_relay_peer_is_accepted_with_our_applications() -> None:
    s = server()
    events = s.receive_data(cer_bytes(LocalIdentity("dra.test", "test", auth_application_ids=(0xFFFFFFFF,))), 0.1)
    assert isinstance(events[0], PeerOpened) and 4 in events[0].capabilities.applications
    (cea,) = answers(s)
    assert cea.get("Result-Code") == 2001
    assert [a.value for a in cea.avps if a.code == 258] == [4]  # we advertise Auth-Application-Id 4


def test_cea_carries_the_capabilities() -> None:
    s = server()
    s.receive_data(cer_bytes(), 0.1)
    (cea,) = answers(s)
    assert cea.get("Origin-Host") == "ocs.test" and cea.get("Product-Name") == "open-ocs"
    assert cea.find("Host-IP-Address") is not None and cea.get("Vendor-Id") == 0
    assert cea.get("Supported-Vendor-Id") == 10415 and cea.get("Origin-State-Id") == 1


def test_malformed_request_is_answered_with_failed_avp_and_not_delivered() -> None:
    s, _ = opened_pair()
    bad = ccr()
    bad.avps = [a for a in bad.avps if a.code != 415]  # no CC-Request-Number
    events = s.receive_data(encode(bad), 1.0)
    assert [type(e) for e in events] == [RequestRejected]
    (answer,) = answers(s)
    assert answer.get("Result-Code") == ResultCode.DIAMETER_MISSING_AVP
    assert answer.hop_by_hop == bad.hop_by_hop and answer.get("Session-Id") == "pgw.test;1"
    failed = answer.find("Failed-AVP")
    assert failed is not None and failed.children[0].code == 415


def test_protocol_errors_set_the_e_bit() -> None:
    s, _ = opened_pair()
    bad = ccr()
    bad.application_id = 16777238
    s.receive_data(encode(bad), 1.0)
    (answer,) = answers(s)
    assert answer.get("Result-Code") == ResultCode.DIAMETER_APPLICATION_UNSUPPORTED and answer.is_error


def test_over_the_in_flight_limit_answers_3004_at_once() -> None:
    s = server(max_in_flight=2)
    s.receive_data(cer_bytes(), 0.1)
    s.data_to_send()
    events = s.receive_data(b"".join(encode(ccr(n, f"s;{n}")) for n in range(3)), 1.0)
    assert [type(e) for e in events] == [RequestReceived, RequestReceived, RequestRejected]
    (busy,) = answers(s)
    assert busy.get("Result-Code") == ResultCode.DIAMETER_TOO_BUSY and busy.hop_by_hop == 1002


def answered_once(cache: DuplicateCache) -> tuple[PeerConnection, Message, Message]:
    """An open server peer that received ``ccr()`` and answered it: (peer, request, answer)."""
    peer = server(duplicates=cache)
    peer.receive_data(cer_bytes(), 0.1)
    peer.data_to_send()
    (received,) = peer.receive_data(encode(ccr()), 1.0)
    assert isinstance(received, RequestReceived)
    peer.send_answer(cca_for(received.message))
    return peer, received.message, answers(peer)[0]


def test_retransmission_is_answered_from_the_duplicate_cache_once_answered() -> None:
    cache = DuplicateCache()
    _, _, original = answered_once(cache)
    # The client fails over: same End-to-End id, T flag, new Hop-by-Hop, another connection.
    second = server(duplicates=cache)
    second.receive_data(cer_bytes(), 2.0)
    second.data_to_send()
    again = ccr()
    again.flags |= 0x10
    again.hop_by_hop = 4242
    events = second.receive_data(encode(again), 2.1)
    assert events == [DuplicateAnswered("pgw.test", again.end_to_end)]
    (replayed,) = answers(second)
    assert replayed.hop_by_hop == 4242
    assert (replayed.end_to_end, replayed.avps) == (original.end_to_end, original.avps)


def test_a_protocol_error_answer_is_not_replayed_to_a_retransmission() -> None:
    cache = DuplicateCache()
    peer = server(duplicates=cache)
    peer.receive_data(cer_bytes(), 0.1)
    peer.data_to_send()
    (received,) = peer.receive_data(encode(ccr()), 1.0)
    assert isinstance(received, RequestReceived)
    busy = answer_to(received.message, [avp("Result-Code", int(ResultCode.DIAMETER_TOO_BUSY))], error=True)
    peer.send_answer(busy)
    peer.data_to_send()
    # 3004 means "not processed": the retry must reach the application again.
    again = ccr()
    again.flags |= 0x10
    (retried,) = peer.receive_data(encode(again), 2.0)
    assert isinstance(retried, RequestReceived)


def test_answer_with_unknown_hop_by_hop_is_discarded() -> None:
    _, c = opened_pair()
    assert c.receive_data(encode(cca_for(ccr())), 1.0) == []
    assert c.state is PeerState.OPEN


def test_dwr_is_answered_with_dwa() -> None:
    s, _ = opened_pair()
    s.receive_data(encode(stamped(build_dwr(CLIENT))), 1.0)
    (dwa,) = answers(s)
    assert (dwa.command_code, dwa.is_request, dwa.get("Result-Code")) == (280, False, 2001)


def test_watchdog_sends_dwr_then_closes_a_silent_peer() -> None:
    s, _ = opened_pair()
    deadline = s.next_deadline()
    assert deadline is not None and 28 <= deadline <= 32.2
    s.handle_timer(deadline)
    (dwr,) = answers(s)
    assert dwr.command_code == 280 and dwr.is_request
    closed: list[Event] = []
    for _ in range(3):
        next_deadline = s.next_deadline()
        if next_deadline is None:
            break
        closed += s.handle_timer(next_deadline)
    assert s.state is PeerState.CLOSED and any(isinstance(e, PeerClosed) for e in closed)


def test_cer_timeout_closes_a_silent_connection() -> None:
    s = server()
    deadline = s.next_deadline()
    assert deadline is not None
    assert s.handle_timer(deadline - 0.01) == []
    events = s.handle_timer(deadline)
    assert s.state is PeerState.CLOSED and isinstance(events[0], PeerClosed)


def test_graceful_disconnect_returns_unanswered_requests() -> None:
    s, c = opened_pair()
    c.send_request(ccr(), context="pending")
    c.disconnect(1.0, DisconnectCause.REBOOTING)
    s.receive_data(c.data_to_send(), 1.1)  # CCR, then DPR
    assert s.state is PeerState.CLOSED
    events = c.receive_data(s.data_to_send(), 1.2)  # DPA
    assert c.state is PeerState.CLOSED
    assert events == [PeerClosed("disconnected (DPA received)", ("pending",))]


def test_request_before_capabilities_exchange_closes_the_connection() -> None:
    s = server()
    events = s.receive_data(encode(ccr()), 0.1)
    assert s.close_requested and isinstance(events[0], PeerClosed)
    assert s.data_to_send() == b""


def test_an_echoed_avp_is_answered_without_its_reserved_flag_bits() -> None:
    # A CCR whose Session-Id carries reserved bits (0x47: M plus three reserved): the answer
    # echoes the Session-Id (RFC 6733 section 6.2) with only the M bit (section 4.1).
    s, _ = opened_pair()
    bad = ccr()
    bad.avps = [a for a in bad.avps if a.code != 415]  # no CC-Request-Number: answered here, 5005
    bad.avps[0].flags = 0x47
    s.receive_data(encode(bad), 1.0)
    (answer,) = answers(s)
    session = answer.find("Session-Id")
    assert session is not None and session.flags == 0x40


def test_a_ccr_with_the_p_bit_on_cc_request_type_is_delivered() -> None:
    # RFC 4006 section 8 table: P is in the MAY column for CC-Request-Type.
    s, _ = opened_pair()
    message = ccr()
    request_type = message.find("CC-Request-Type")
    assert request_type is not None
    request_type.flags |= 0x20
    (event,) = s.receive_data(encode(message), 1.0)
    assert isinstance(event, RequestReceived)


def with_version(frame: bytes, version: int) -> bytes:
    return bytes([version]) + frame[1:]


def test_a_request_of_another_version_is_answered_5011_and_the_connection_stays_open() -> None:
    s, _ = opened_pair()
    events = s.receive_data(with_version(encode(ccr(1)), 2), 1.0)
    assert [type(e) for e in events] == [RequestRejected]
    (answer,) = answers(s)
    # A permanent failure (RFC 6733 section 7.1.5), so no E bit; the identifiers and the
    # Session-Id of the request (section 6.2), our version in the header.
    assert answer.get("Result-Code") == ResultCode.DIAMETER_UNSUPPORTED_VERSION and not answer.is_error
    assert (answer.hop_by_hop, answer.end_to_end, answer.get("Session-Id")) == (1001, 2001, "pgw.test;1")
    (delivered,) = s.receive_data(encode(ccr(2)), 1.1)
    assert isinstance(delivered, RequestReceived) and s.state is PeerState.OPEN


def test_an_answer_of_another_version_closes_the_connection() -> None:
    s, c = opened_pair()
    (received,) = s.receive_data(c.send_request(ccr(1)) and c.data_to_send(), 1.0)
    assert isinstance(received, RequestReceived)
    s.send_answer(cca_for(received.message))
    events = c.receive_data(with_version(s.data_to_send(), 2), 1.1)
    assert [type(e) for e in events] == [PeerClosed] and c.state is PeerState.CLOSED


@pytest.mark.parametrize(
    ("number", "session"), [(0, "pgw.test;2"), (1, "pgw.test;1")], ids=["other Session-Id", "other CC-Request-Number"]
)
def test_another_request_under_an_answered_end_to_end_id_is_processed(number: int, session: str) -> None:
    # RFC 6733 section 6.1.1: a duplicate is the same request again, not any request that reuses
    # (Origin-Host, End-to-End id), as a restarted client may. Replaying the old answer would
    # leave the new request unprocessed (never charged).
    peer, first, _ = answered_once(DuplicateCache())
    other = stamped(ccr(number, session), hop=5000, end=first.end_to_end)  # no T flag
    (event,) = peer.receive_data(encode(other), 2.0)
    assert isinstance(event, RequestReceived) and event.message.get("Session-Id") == session
    # Its answer replaces the old one: a retransmission of it is answered from the cache.
    peer.send_answer(cca_for(event.message, result=4012))
    peer.data_to_send()
    other.flags |= 0x10
    other.hop_by_hop = 4343
    assert peer.receive_data(encode(other), 3.0) == [DuplicateAnswered("pgw.test", other.end_to_end)]
    (replayed,) = answers(peer)
    assert replayed.get("Result-Code") == 4012 and replayed.hop_by_hop == 4343
