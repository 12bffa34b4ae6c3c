"""Codec: header and AVP byte layout, decode failures as data, framing and hard limits."""

from __future__ import annotations

import struct

import pytest

from protocol import codec
from protocol.codec import SHAPE_GROUP_END, FrameReader, decode, encode, encode_avp
from protocol.constants import MAX_AVP_COUNT, MAX_MESSAGE_LENGTH, MAX_NESTING_DEPTH, ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY, packed_key
from protocol.errors import EncodeError, InvalidMessageLength, LimitExceeded, PeerError
from protocol.message import Avp, Message, avp, request
from tests.protocol.test_fuzz import FUZZ_SEED, fuzz_input


def header(length: int, flags: int, code: int, application: int, hop: int, end: int) -> bytes:
    return struct.pack(">IIIII", (1 << 24) | length, (flags << 24) | code, application, hop, end)


def raw_avp(code: int, flags: int, payload: bytes, vendor: int | None = None) -> bytes:
    size = (12 if vendor is not None else 8) + len(payload)
    head = struct.pack(">II", code, (flags << 24) | size)
    if vendor is not None:
        head += struct.pack(">I", vendor)
    return head + payload + b"\0" * (-size % 4)


def frame_of(flags: int, code: int, application: int, body: bytes) -> bytes:
    return header(20 + len(body), flags, code, application, 0x11223344, 0x55667788) + body


def test_header_layout() -> None:
    message = Message(272, 0xC0, 4, 0x11223344, 0x55667788, [])
    assert encode(message) == bytes.fromhex("01000014c0000110000000041122334455667788")


def test_avp_layout_with_padding() -> None:
    # Session-Id 263, M bit, 5 bytes of data: length 13, padded to 16 (RFC 6733 section 4.1)
    assert encode_avp(avp("Session-Id", "abcde")) == bytes.fromhex("000001074000000d") + b"abcde\0\0\0"


def test_vendor_avp_layout() -> None:
    # Quota-Holding-Time 871, vendor 10415, V and M bits, Unsigned32
    encoded = encode_avp(avp("Quota-Holding-Time", 30))
    assert encoded == bytes.fromhex("00000367c0000010000028af0000001e")


def test_grouped_layout() -> None:
    encoded = encode_avp(avp("Subscription-Id", [avp("Subscription-Id-Type", 0), avp("Subscription-Id-Data", "4917")]))
    inner = raw_avp(450, 0x40, b"\0\0\0\0") + raw_avp(444, 0x40, b"4917")
    assert encoded == raw_avp(443, 0x40, inner)


def test_decode_header_fields_and_values() -> None:
    body = raw_avp(263, 0x40, b"s;1") + raw_avp(415, 0x40, b"\0\0\0\x07")
    decoded = decode(frame_of(0x80, 272, 4, body))
    message = decoded.message
    assert decoded.failures == []
    assert (message.command_code, message.application_id, message.hop_by_hop, message.end_to_end) == (
        272,
        4,
        0x11223344,
        0x55667788,
    )
    assert message.is_request and not message.is_error and not message.is_retransmission
    assert message.get("Session-Id") == "s;1"
    assert message.get("CC-Request-Number") == 7


def test_unknown_avps_round_trip_byte_exact() -> None:
    body = (
        raw_avp(263, 0x40, b"s;1")
        + raw_avp(99999, 0x00, b"\x01\x02\x03")  # unknown, no vendor, odd length
        + raw_avp(5, 0x80, b"xyz", vendor=424242)  # unknown vendor
    )
    frame = frame_of(0x80, 272, 4, body)
    decoded = decode(frame)
    assert decoded.failures == []
    assert decoded.message.avps[1] == Avp(99999, 0x00, 0, b"\x01\x02\x03")
    assert decoded.message.avps[2] == Avp(5, 0x80, 424242, b"xyz")
    assert encode(decoded.message) == frame


def failures_of(body: bytes, flags: int = 0x80) -> list[tuple[ResultCode, int | None]]:
    decoded = decode(frame_of(flags, 272, 4, body))
    return [(f.result_code, f.failed_avp.code if f.failed_avp else None) for f in decoded.failures]


def test_unknown_avp_with_m_bit_is_5001_with_failed_avp() -> None:
    assert failures_of(raw_avp(99999, 0x40, b"abcd")) == [(ResultCode.DIAMETER_AVP_UNSUPPORTED, 99999)]


def test_wrong_size_value_is_5014() -> None:
    assert failures_of(raw_avp(415, 0x40, b"\0\0\x01")) == [(ResultCode.DIAMETER_INVALID_AVP_LENGTH, 415)]


def test_invalid_utf8_is_5004_and_failed_avp_carries_the_bytes() -> None:
    decoded = decode(frame_of(0x80, 272, 4, raw_avp(263, 0x40, b"\xff\xfe")))
    assert [f.result_code for f in decoded.failures] == [ResultCode.DIAMETER_INVALID_AVP_VALUE]
    assert decoded.failures[0].failed_avp == Avp(263, 0x40, 0, b"\xff\xfe")


def test_avp_length_beyond_message_is_5014() -> None:
    bad = struct.pack(">II", 263, (0x40 << 24) | 200) + b"abcd"
    assert failures_of(bad) == [(ResultCode.DIAMETER_INVALID_AVP_LENGTH, 263)]


def test_avp_length_below_header_is_5014() -> None:
    bad = struct.pack(">II", 263, (0x40 << 24) | 4) + b"abcd"
    assert failures_of(bad) == [(ResultCode.DIAMETER_INVALID_AVP_LENGTH, 263)]


def test_missing_m_bit_on_a_known_avp_is_accepted() -> None:
    # RFC 6733 section 4.1: without M the AVP is informational; we understand it, so we use it.
    assert failures_of(raw_avp(415, 0x00, b"\0\0\0\x01")) == []


def test_p_bit_where_the_flag_table_forbids_it_is_3009() -> None:
    # Base protocol AVPs (RFC 6733 section 4.5 has no MAY column; section 4.1: P SHOULD be 0),
    # TS 29.061 AVPs outside TS 32.299 table 7.2, and AVPs we do not know.
    assert failures_of(raw_avp(263, 0x60, b"s")) == [(ResultCode.DIAMETER_INVALID_AVP_BITS, 263)]
    assert failures_of(raw_avp(21, 0xA0, b"\0\0\0\x06", vendor=10415)) == [(ResultCode.DIAMETER_INVALID_AVP_BITS, 21)]
    assert failures_of(raw_avp(99999, 0x20, b"x")) == [(ResultCode.DIAMETER_INVALID_AVP_BITS, 99999)]


@pytest.mark.parametrize(
    ("code", "flags", "vendor", "payload"),
    [
        (416, 0x60, None, b"\0\0\0\x01"),  # CC-Request-Type: RFC 4006 section 8 table, P is MAY
        (415, 0x60, None, b"\0\0\0\x01"),  # CC-Request-Number, likewise
        (871, 0xE0, 10415, b"\0\0\0\x1e"),  # Quota-Holding-Time: TS 32.299 table 7.2, P is MAY
    ],
    ids=["CC-Request-Type", "CC-Request-Number", "Quota-Holding-Time"],
)
def test_p_bit_where_the_flag_table_allows_it_is_accepted(
    code: int, flags: int, vendor: int | None, payload: bytes
) -> None:
    assert failures_of(raw_avp(code, flags, payload, vendor=vendor)) == []


def test_e_bit_on_request_is_3008() -> None:
    assert failures_of(raw_avp(263, 0x40, b"s"), flags=0xA0) == [(ResultCode.DIAMETER_INVALID_HDR_BITS, None)]


def test_failure_inside_grouped_avp_names_the_inner_avp() -> None:
    inner = raw_avp(450, 0x40, b"\0\0\0")  # Subscription-Id-Type of 3 bytes
    assert failures_of(raw_avp(443, 0x40, inner)) == [(ResultCode.DIAMETER_INVALID_AVP_LENGTH, 450)]


def test_frame_reader_reassembles_split_input() -> None:
    one = encode(request(280, 0, [avp("Origin-Host", "a"), avp("Origin-Realm", "b")]))
    two = encode(request(282, 0, [avp("Origin-Host", "a"), avp("Origin-Realm", "b"), avp("Disconnect-Cause", 0)]))
    stream = one + two
    for cut in range(len(stream) + 1):
        reader = FrameReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == [one, two]
        assert reader.buffered == 0


@pytest.mark.parametrize(
    ("first_word", "error"),
    [
        ((1 << 24) | 16, InvalidMessageLength),  # shorter than a header
        ((1 << 24) | 22, InvalidMessageLength),  # not a multiple of 4
        ((1 << 24) | (MAX_MESSAGE_LENGTH + 4), InvalidMessageLength),
    ],
)
def test_frame_reader_refuses_bad_first_word_before_the_body(first_word: int, error: type[Exception]) -> None:
    reader = FrameReader()
    with pytest.raises(error):
        reader.feed(struct.pack(">I", first_word))  # only 4 bytes: judged before any body arrives


def test_too_many_avps_exceeds_the_limit() -> None:
    body = raw_avp(99999, 0, b"") * (MAX_AVP_COUNT + 1)
    with pytest.raises(LimitExceeded):
        decode(frame_of(0x80, 272, 4, body))


def test_nesting_beyond_the_limit() -> None:
    inner = raw_avp(450, 0x40, b"\0\0\0\0")
    for _ in range(MAX_NESTING_DEPTH + 1):
        inner = raw_avp(443, 0x40, inner)  # Subscription-Id inside Subscription-Id...
    with pytest.raises(LimitExceeded):
        decode(frame_of(0x80, 272, 4, inner))


def test_nesting_at_the_limit_is_decoded() -> None:
    inner = raw_avp(450, 0x40, b"\0\0\0\0")
    for _ in range(MAX_NESTING_DEPTH):
        inner = raw_avp(443, 0x40, inner)
    assert decode(frame_of(0x80, 272, 4, inner)).failures == []


def test_undelimitable_avp_is_echoed_as_header_with_minimal_zero_payload() -> None:
    # RFC 6733 section 7.1.5: for a length past the message, the header and a zero-filled payload
    # of the type's minimum size (empty for Grouped) are enough, and the bytes that follow are not
    # the AVP's: echoing them could put any number of AVPs into the answer.
    tail = raw_avp(263, 0x40, b"s;1") * 3
    grouped = struct.pack(">II", 456, (0x40 << 24) | 0xFFF0) + tail  # Multiple-Services-Credit-Control
    unsigned = struct.pack(">II", 415, (0x40 << 24) | 0xFFF0) + tail  # CC-Request-Number
    vendor = struct.pack(">III", 871, (0xC0 << 24) | 0xFFF0, 10415) + tail  # Quota-Holding-Time
    for body, expected in [
        (grouped, Avp(456, 0x40, 0, b"")),
        (unsigned, Avp(415, 0x40, 0, b"\0\0\0\0")),
        (vendor, Avp(871, 0xC0, 10415, b"\0\0\0\0")),
    ]:
        decoded = decode(frame_of(0x80, 272, 4, body))
        assert [(f.result_code, f.failed_avp) for f in decoded.failures] == [
            (ResultCode.DIAMETER_INVALID_AVP_LENGTH, expected)
        ]


def test_value_out_of_range_is_an_encode_error_naming_the_avp() -> None:
    message = request(272, 4, [avp("Session-Id", "s"), avp("CC-Request-Number", 1 << 32)])
    with pytest.raises(EncodeError, match="CC-Request-Number"):
        encode(message)
    inside = request(272, 4, [avp("Subscription-Id", [avp("Subscription-Id-Type", 1 << 31)])])
    with pytest.raises(EncodeError, match="Subscription-Id-Type"):
        encode(inside)
    with pytest.raises(EncodeError, match="Origin-Host"):
        encode(request(280, 0, [avp("Origin-Host", "höst")]))  # DiameterIdentity is ASCII


def test_int_subclasses_encode_like_ints() -> None:
    as_enum = encode(request(272, 4, [avp("Result-Code", ResultCode.DIAMETER_SUCCESS)]))
    assert as_enum == encode(request(272, 4, [avp("Result-Code", 2001)]))
    assert decode(as_enum).message.get("Result-Code") == 2001


def test_v_bit_without_vendor_id_encodes_its_vendor_field() -> None:
    # RFC 6733 section 4.1: the V bit means a Vendor-ID field is present, and 0 is a valid one.
    encoded = encode_avp(Avp(415, 0xC0, 0, 7))
    assert encoded == struct.pack(">IIII", 415, (0xC0 << 24) | 16, 0, 7)
    # ... and a non-zero Vendor-ID always travels in that field, with the V bit.
    assert encode_avp(Avp(9, 0x40, 10415, b"\0\0\0\x07")) == struct.pack(">IIII", 9, (0xC0 << 24) | 16, 10415, 7)


def test_subclasses_of_bytes_and_list_mean_payload_and_members() -> None:
    class Payload(bytes):
        pass

    class Members(list[Avp]):
        pass

    assert encode_avp(Avp(263, 0x40, 0, Payload(b"abc"))) == encode_avp(Avp(263, 0x40, 0, b"abc"))
    assert encode_avp(Avp(99999, 0, 0, Payload(b"abc"))) == raw_avp(99999, 0, b"abc")
    members = [avp("Subscription-Id-Type", 0)]
    assert encode_avp(Avp(443, 0x40, 0, Members(members))) == encode_avp(Avp(443, 0x40, 0, members))
    with pytest.raises(EncodeError, match="not in the dictionary"):
        encode_avp(Avp(99999, 0, 0, 5))


# --- the compiled build's header read -------------------------------------------------------------


def test_read_word_reads_big_endian_words_like_struct() -> None:
    data = bytes(range(256)) + bytes.fromhex("ffffffff80000000")
    for offset in (0, 1, 3, 100, 252, 256, 260):
        assert codec._read_word(data, offset) == struct.unpack_from(">I", data, offset)[0], offset
    with pytest.raises(IndexError):
        codec._read_word(data, len(data) - 3)


@pytest.mark.skipif(
    codec.MYPYC_COMPILED, reason="compiled, MYPYC_COMPILED is a constant and the whole suite runs that path"
)
def test_both_header_reads_decode_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreted build reads AVP headers with ``struct`` and the compiled one byte by byte;
    forcing the compiled path here keeps it checked by the default (pure Python) test run."""
    frames: list[bytes] = []
    for index in range(3_000):
        try:
            frames += FrameReader().feed(fuzz_input(FUZZ_SEED, index)[1])
        except PeerError:
            continue

    def outcomes() -> list[str]:
        results: list[str] = []
        for frame in frames:
            try:
                results.append(repr(decode(frame)))  # repr: a NaN Float equals itself there
            except PeerError as error:
                results.append(f"{type(error).__name__}: {error}")
        return results

    by_struct = outcomes()
    monkeypatch.setattr(codec, "MYPYC_COMPILED", True)
    by_bytes = outcomes()
    assert len(frames) > 2_000
    assert sum(text.startswith("Decoded(") for text in by_struct) > 1_000
    assert by_bytes == by_struct


def _all_flags(avps: list[Avp]) -> list[int]:
    return [flags for item in avps for flags in (item.flags, *_all_flags(item.children))]


class _Payload(bytes):
    """A bytes subclass: the inline encoder leaves it to the checking path."""


def test_reserved_avp_flag_bits_are_never_sent() -> None:
    # RFC 6733 section 4.1: the sender MUST set the reserved bits to 0, whatever the AVP object
    # holds (an AVP echoed from a request keeps the flags it arrived with), at every level,
    # Failed-AVP included, and on both encoding paths (inline, and the checking one).
    echoed = Avp(415, 0x5F, 0, 7)
    vendor = Avp(871, 0xDF, 10415, 30)  # Quota-Holding-Time with V, M and every reserved bit
    failed = Avp(279, 0x41, 0, [Avp(263, 0x47, 0, "s"), Avp(99999, 0x03, 0, b"raw")])
    for extra in (Avp(1, 0x5F, 0, "user"), Avp(1, 0x5F, 0, _Payload(b"user"))):
        decoded = decode(encode(Message(272, 0x80, 4, 1, 2, [echoed, vendor, failed, extra])))
        flags = _all_flags(decoded.message.avps)
        assert len(flags) == 6 and all(bits & 0x1F == 0 for bits in flags), [hex(bits) for bits in flags]
    assert encode_avp(failed)[4] == 0x40 and encode_avp(vendor)[4] == 0xC0


def test_reserved_command_flag_bits_are_never_sent() -> None:
    # RFC 6733 section 3: the header's reserved bits MUST be set to zero.
    assert encode(Message(272, 0xCF, 4, 1, 2, []))[4] == 0xC0


def test_another_version_is_delimited_and_decoded_with_5011_first() -> None:
    # RFC 6733 section 7.1.5: DIAMETER_UNSUPPORTED_VERSION is an answer, so the frame must be
    # delimited (its length is sound) rather than refused before its body.
    body = raw_avp(263, 0x40, b"pgw;1")
    frame = struct.pack(">I", (2 << 24) | (20 + len(body))) + frame_of(0x80, 272, 4, body)[4:]
    (delimited,) = FrameReader().feed(frame)
    decoded = decode(delimited)
    assert [(f.result_code, f.failed_avp) for f in decoded.failures] == [
        (ResultCode.DIAMETER_UNSUPPORTED_VERSION, None)
    ]
    assert decoded.message.get("Session-Id") == "pgw;1" and decoded.message.hop_by_hop == 0x11223344


def test_decoded_shape_lists_the_keys_with_the_end_of_each_grouped_avp() -> None:
    subscription = avp("Subscription-Id", [avp("Subscription-Id-Type", 0), avp("Subscription-Id-Data", "49")])
    information = avp("Service-Information", [avp("IMS-Information", [avp("Node-Functionality", "AS")])])
    message = request(272, 4, [avp("Session-Id", "s"), subscription, information, Avp(99999, 0, 0, b"x")])
    keys = {name: packed_key(*DEFAULT_DICTIONARY.key(name)) for name in _SHAPE_NAMES}
    assert decode(encode(message)).shape == (
        keys["Session-Id"],
        keys["Subscription-Id"],
        keys["Subscription-Id-Type"],
        keys["Subscription-Id-Data"],
        SHAPE_GROUP_END,
        keys["Service-Information"],
        keys["IMS-Information"],
        keys["Node-Functionality"],
        SHAPE_GROUP_END,
        SHAPE_GROUP_END,
        99999,  # not in the dictionary: its key all the same
    )


_SHAPE_NAMES = (
    "Session-Id",
    "Subscription-Id",
    "Subscription-Id-Type",
    "Subscription-Id-Data",
    "Service-Information",
    "IMS-Information",
    "Node-Functionality",
)
