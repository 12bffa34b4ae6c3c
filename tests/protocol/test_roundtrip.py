"""Round-trip properties of the codec, checked with hypothesis (no event loop).

Theory of operation: three layers of the same promise, each from random inputs.
1. Every AVP data format of RFC 6733 sections 4.2 and 4.3: a random value encodes and decodes to
   the same value (NaN stays NaN, a Time keeps its instant whatever its time zone), and a payload
   that decodes re-encodes to the same bytes. The formats no default dictionary AVP uses
   (Float32, Float64) are also taken through the codec with a test dictionary that adds them.
2. Messages built from dictionary AVPs with ``avp()`` and ``request()``: decode(encode(m)) equals
   m field by field, with no failures.
3. Frames written byte by byte by this file (not by the codec): known AVPs with valid or invalid
   payloads, unknown AVPs with and without the V bit, any header and AVP flag bits, Grouped AVPs
   nested: encode(decode(frame)) gives back the frame byte for byte; and FrameReader cuts any split
   of a stream of such frames into the same frames.
Frames here are well formed in their layout (lengths right, padding zero): what the codec may
normalise in malformed frames is the fuzz test's business (test_fuzz.py).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from ipaddress import IPv4Address, IPv6Address
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol.avp_types import (
    DECODERS,
    ENCODERS,
    NTP_EPOCH,
    AvpLengthError,
    AvpType,
    AvpValueError,
    OtherAddress,
)
from protocol.codec import FrameReader, decode, encode
from protocol.constants import AvpFlag, CommandFlag, ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY, AvpDefinition, Dictionary, load_dictionary
from protocol.message import Avp, Message, Value, answer_to, avp, request

# Generated frames and messages are small; a slow first example (imports, a busy 2-core machine)
# must not fail a property, so no per-example deadline.
PROPERTY_SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# RFC 6733 section 4.3.1 with the era rule of avp_types: encodable Time values lie in
# [NTP seconds 2**31, 2**31 + 2**32), that is 1968-01-20T03:14:08Z .. 2104-02-26T09:42:23Z.
TIME_FIRST = NTP_EPOCH + timedelta(seconds=2**31)
TIME_LAST = NTP_EPOCH + timedelta(seconds=2**31 + 2**32 - 1)
DOCUMENTATION_VENDOR_ID = 32473  # RFC 5612: the enterprise number reserved for documentation


# --- value strategies, one per AVP data format ------------------------------------------------


def _int_range(bits: int, signed: bool) -> st.SearchStrategy[int]:
    if signed:
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


def _times() -> st.SearchStrategy[datetime]:
    # Whole seconds (the wire carries seconds), shown in any fixed UTC offset: the instant counts.
    offsets = st.integers(-14 * 60, 14 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
    instants = st.datetimes(
        min_value=TIME_FIRST.replace(tzinfo=None),
        max_value=TIME_LAST.replace(tzinfo=None),
        timezones=st.just(UTC),
    ).map(lambda moment: moment.replace(microsecond=0))
    return st.tuples(instants, offsets).map(lambda pair: pair[0].astimezone(pair[1]))


def _addresses() -> st.SearchStrategy[IPv4Address | IPv6Address | OtherAddress]:
    # Families 1 and 2 decode to ipaddress objects; any other family keeps its bytes (E.164 is 8).
    other = st.builds(OtherAddress, st.integers(0, 0xFFFF).filter(lambda family: family not in (1, 2)), st.binary())
    return st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6), other)


ASCII_TEXT = st.text(st.characters(max_codepoint=127), max_size=60)
# DiameterIdentity is an FQDN (RFC 6733 section 4.3.1).
IDENTITIES = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,20}\.){0,4}[a-z]{2,10}\Z")
# DiameterURI, RFC 6733 section 4.3.1: "aaa://" FQDN [port] [transport] [protocol].
URIS = st.builds(
    lambda scheme, host, port, transport: f"{scheme}://{host}{port}{transport}",
    st.sampled_from(["aaa", "aaas"]),
    IDENTITIES,
    st.one_of(st.just(""), st.integers(1, 65535).map(lambda port: f":{port}")),
    st.sampled_from(["", ";transport=tcp", ";transport=sctp", ";protocol=diameter"]),
)

VALUES: dict[AvpType, st.SearchStrategy[Value]] = {
    AvpType.OCTET_STRING: st.binary(max_size=80),
    AvpType.INTEGER32: _int_range(32, True),
    AvpType.INTEGER64: _int_range(64, True),
    AvpType.UNSIGNED32: _int_range(32, False),
    AvpType.UNSIGNED64: _int_range(64, False),
    AvpType.FLOAT32: st.floats(width=32),  # NaN and the infinities included
    AvpType.FLOAT64: st.floats(),
    AvpType.ADDRESS: _addresses(),
    AvpType.TIME: _times(),
    AvpType.UTF8_STRING: st.text(st.characters(codec="utf-8"), max_size=40),
    AvpType.DIAMETER_IDENTITY: IDENTITIES,
    AvpType.DIAMETER_URI: URIS,
    AvpType.ENUMERATED: _int_range(32, True),
    AvpType.IP_FILTER_RULE: ASCII_TEXT,
}
SIMPLE_TYPES = sorted(VALUES, key=str)
PAYLOAD_SIZES = {  # fixed payload sizes, RFC 6733 section 4.2
    AvpType.INTEGER32: 4,
    AvpType.INTEGER64: 8,
    AvpType.UNSIGNED32: 4,
    AvpType.UNSIGNED64: 8,
    AvpType.FLOAT32: 4,
    AvpType.FLOAT64: 8,
    AvpType.TIME: 4,
    AvpType.ENUMERATED: 4,
}


def same_value(left: object, right: object) -> bool:
    """Equality that treats NaN as equal to NaN and tells -0.0 from 0.0 (floats are compared by
    what they put on the wire), and descends into Grouped AVPs."""
    if isinstance(left, float) and isinstance(right, float):
        if math.isnan(left) or math.isnan(right):
            return math.isnan(left) and math.isnan(right)
        return left == right and math.copysign(1.0, left) == math.copysign(1.0, right)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(same_avp(a, b) for a, b in zip(left, right, strict=True))
    return type(left) is type(right) and left == right


def same_avp(left: Avp, right: Avp) -> bool:
    return (left.code, left.flags, left.vendor_id) == (right.code, right.flags, right.vendor_id) and same_value(
        left.value, right.value
    )


def same_message(left: Message, right: Message) -> bool:
    header = ("command_code", "flags", "application_id", "hop_by_hop", "end_to_end")
    return all(getattr(left, name) == getattr(right, name) for name in header) and same_value(left.avps, right.avps)


# --- 1. every data format ----------------------------------------------------------------------


@pytest.mark.parametrize("avp_type", SIMPLE_TYPES, ids=str)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_type_value_round_trips(avp_type: AvpType, data: st.DataObject) -> None:
    value = data.draw(VALUES[avp_type], label="value")
    payload = ENCODERS[avp_type](value)
    if avp_type in PAYLOAD_SIZES:
        assert len(payload) == PAYLOAD_SIZES[avp_type]
    decoded = DECODERS[avp_type](payload)
    assert same_value(decoded, value), (value, decoded, payload.hex())


def _is_signalling_nan32(payload: bytes) -> bool:
    bits = int.from_bytes(payload, "big")
    return (bits >> 23) & 0xFF == 0xFF and bits & 0x7FFFFF != 0 and not bits & 0x400000


@pytest.mark.parametrize("avp_type", SIMPLE_TYPES, ids=str)
@PROPERTY_SETTINGS
@given(payload=st.binary(max_size=24))
@example(payload=b"\x7f\xc0\x00\x00")  # quiet NaN (Float32)
@example(payload=b"\x7f\x80\x00\x01")  # signalling NaN (Float32)
@example(payload=b"\xff\xf8\x00\x00\x00\x00\x00\x01")  # negative NaN with a payload
@example(payload=b"\x80\x00\x00\x00")  # -0.0 (Float32); -2**31 (Integer32)
@example(payload=b"\x00\x01\xc0\x00\x02\x01")  # IPv4 Address
@example(payload=b"\x00\x01\xc0\x00\x02")  # IPv4 family with 3 address bytes
@example(payload=b"\x7f\xff\xff\xff")  # Time: last second of NTP era 0 read as era 1
def test_every_decodable_payload_reencodes_to_the_same_bytes(avp_type: AvpType, payload: bytes) -> None:
    try:
        value = DECODERS[avp_type](payload)
    except AvpLengthError:
        assert avp_type in PAYLOAD_SIZES or avp_type is AvpType.ADDRESS
        return
    except AvpValueError:
        # Only the string formats have byte sequences that are no value (RFC 6733 section 4.3).
        assert avp_type in (
            AvpType.UTF8_STRING,
            AvpType.DIAMETER_IDENTITY,
            AvpType.DIAMETER_URI,
            AvpType.IP_FILTER_RULE,
        )
        return
    if avp_type is AvpType.FLOAT32 and _is_signalling_nan32(payload):
        # CPython 3.11 converts a float32 to a double through the C cast, which sets the quiet bit
        # of a signalling NaN (see the report); the value stays NaN, its payload bits may not.
        assert math.isnan(DECODERS[avp_type](ENCODERS[avp_type](value)))  # type: ignore[arg-type]
        return
    assert ENCODERS[avp_type](value) == payload


@PROPERTY_SETTINGS
@given(
    moment=st.datetimes(timezones=st.just(UTC)).filter(lambda moment: not TIME_FIRST <= moment <= TIME_LAST),
)
@example(moment=TIME_FIRST - timedelta(seconds=1))
@example(moment=TIME_LAST + timedelta(seconds=1))
def test_time_outside_the_encodable_range_is_refused_not_wrapped(moment: datetime) -> None:
    # A wrapped Time would decode to another instant, 136 years away.
    with pytest.raises(AvpValueError):
        ENCODERS[AvpType.TIME](moment)


def _test_dictionary() -> Dictionary:
    """The package dictionary plus one AVP of every data format, under the documentation vendor,
    so the codec sees the two formats (Float32, Float64) no shipped AVP uses."""
    shipped = sorted(
        (entry.name, entry.read_bytes())
        for entry in resources.files("protocol.dictionary").iterdir()
        if entry.name.endswith(".toml")
    )
    extra = "\n".join(
        f'[[avp]]\nname = "Test-{avp_type}"\ncode = {number}\ntype = "{avp_type}"\n'
        f'vendor = {DOCUMENTATION_VENDOR_ID}\nmust = "V"\n'
        + ("grammar = ['*[ AVP ]']\n" if avp_type is AvpType.GROUPED else "")
        for number, avp_type in enumerate(AvpType, start=1)
    )
    return load_dictionary([*shipped, ("zz_roundtrip_test.toml", extra.encode())])


TEST_DICTIONARY = _test_dictionary()


@pytest.mark.parametrize("avp_type", SIMPLE_TYPES, ids=str)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_every_type_round_trips_through_the_codec(avp_type: AvpType, data: st.DataObject) -> None:
    values = data.draw(st.lists(VALUES[avp_type], min_size=1, max_size=3), label="values")
    member = avp(f"Test-{avp_type}", values[0], TEST_DICTIONARY)
    # The same type once at the top and again inside a Grouped AVP of the same dictionary.
    inner = [avp(f"Test-{avp_type}", value, TEST_DICTIONARY) for value in values[1:]]
    group = avp(f"Test-{AvpType.GROUPED}", inner, TEST_DICTIONARY)
    message = request(272, 4, [member, group], hop_by_hop=1, end_to_end=2, dictionary=TEST_DICTIONARY)
    frame = encode(message, TEST_DICTIONARY)
    decoded = decode(frame, TEST_DICTIONARY)
    assert decoded.failures == []
    assert same_message(decoded.message, message), (message, decoded.message)
    assert encode(decoded.message, TEST_DICTIONARY) == frame


# --- 2. messages of dictionary AVPs ----------------------------------------------------------

DEFINITIONS: list[AvpDefinition] = sorted(DEFAULT_DICTIONARY.avps_by_key.values(), key=lambda d: d.key)
COMMAND_CODES = sorted(DEFAULT_DICTIONARY.commands)
GROUPED_DEPTH = 3  # enough to cover MSCC > USU > member, small enough to keep examples fast


def _value_for(definition: AvpDefinition) -> st.SearchStrategy[Value]:
    if definition.type is AvpType.ENUMERATED and definition.enum_values:
        # Known names mostly, but an unknown number must survive too.
        return st.one_of(st.sampled_from(sorted(definition.enum_values.values())), VALUES[AvpType.ENUMERATED])
    return VALUES[definition.type]


@st.composite
def dictionary_avps(draw: st.DrawFn, depth: int = 0) -> Avp:
    definition = draw(st.sampled_from(DEFINITIONS))
    value: Value
    if definition.is_grouped:
        value = [] if depth >= GROUPED_DEPTH else draw(st.lists(dictionary_avps(depth + 1), max_size=4))
    else:
        value = draw(_value_for(definition))
    item = avp(definition.name, value)
    # M may be set on any AVP (only must-flags are required); the V bit follows the Vendor-Id.
    if draw(st.booleans()):
        item.flags |= AvpFlag.MANDATORY
    return item


@st.composite
def dictionary_messages(draw: st.DrawFn) -> Message:
    command_code = draw(st.one_of(st.sampled_from(COMMAND_CODES), st.integers(0, 0xFFFFFF)))
    built = request(
        command_code,
        draw(_int_range(32, False)),
        draw(st.lists(dictionary_avps(), max_size=12)),
        hop_by_hop=draw(_int_range(32, False)),
        end_to_end=draw(_int_range(32, False)),
    )
    if draw(st.booleans()):
        built = answer_to(built, built.avps, error=draw(st.booleans()))
    if draw(st.booleans()):
        built.flags |= CommandFlag.RETRANSMITTED
    return built


@PROPERTY_SETTINGS
@given(message=dictionary_messages())
def test_dictionary_messages_round_trip_field_by_field(message: Message) -> None:
    frame = encode(message)
    decoded = decode(frame)
    assert decoded.failures == []
    assert same_message(decoded.message, message)
    assert decoded.message == message  # no floats in the shipped dictionary: plain equality holds too
    assert encode(decoded.message) == frame
    assert len(frame) % 4 == 0 and int.from_bytes(frame[1:4], "big") == len(frame)


@PROPERTY_SETTINGS
@given(message=dictionary_messages(), error_bit=st.booleans())
def test_request_with_e_bit_is_reported_3008_and_still_round_trips(message: Message, error_bit: bool) -> None:
    message.flags |= CommandFlag.REQUEST
    message.flags = message.flags | CommandFlag.ERROR if error_bit else message.flags & ~CommandFlag.ERROR
    decoded = decode(encode(message))
    assert [f.result_code for f in decoded.failures] == ([ResultCode.DIAMETER_INVALID_HDR_BITS] if error_bit else [])
    assert decoded.message == message


# --- 3. frames written byte by byte ----------------------------------------------------------


def raw_avp(code: int, flags: int, vendor_id: int | None, payload: bytes) -> bytes:
    """One AVP as RFC 6733 section 4.1 lays it out, zero padding included."""
    header_length = 12 if vendor_id is not None else 8
    length = header_length + len(payload)
    head = struct.pack(">II", code, (flags << 24) | length)
    if vendor_id is not None:
        head += struct.pack(">I", vendor_id)
    return head + payload + bytes(-length % 4)


def raw_frame(flags: int, command_code: int, application_id: int, hop: int, end: int, body: bytes) -> bytes:
    return (
        struct.pack(">IIIII", (1 << 24) | (20 + len(body)), (flags << 24) | command_code, application_id, hop, end)
        + body
    )


KNOWN_KEYS = frozenset(DEFAULT_DICTIONARY.avps_by_key)
# Flag bytes as a conforming sender writes them: the reserved bits (RFC 6733 sections 3 and 4.1)
# are zero, because the encoder clears them and so cannot give them back byte for byte
# (tests/protocol/test_codec.py checks that it does).
AVP_FLAG_BYTES = st.integers(0, 0xFF).map(lambda bits: bits & 0xE0)
COMMAND_FLAG_BYTES = st.integers(0, 0xFF).map(lambda bits: bits & 0xF0)


@st.composite
def unknown_raw_avps(draw: st.DrawFn) -> bytes:
    """An AVP the dictionary does not define: with the V bit (a non-zero Vendor-Id) or without,
    any other flag bits (M, P) and any payload, of any length."""
    with_vendor = draw(st.booleans())
    vendor_id = draw(st.integers(1, 0xFFFFFFFF)) if with_vendor else None
    code = draw(st.integers(0, 0xFFFFFFFF).filter(lambda c: (c, vendor_id or 0) not in KNOWN_KEYS))
    flags = (draw(AVP_FLAG_BYTES) & 0x7F) | (0x80 if with_vendor else 0)
    return raw_avp(code, flags, vendor_id, draw(st.binary(max_size=40)))


@st.composite
def known_raw_avps(draw: st.DrawFn, depth: int) -> bytes:
    """A dictionary AVP with any flag bits besides V: a valid value, or bytes that may not be one
    (wrong size, bad UTF-8), or for Grouped a run of further AVPs."""
    definition = draw(st.sampled_from(DEFINITIONS))
    flags = (draw(AVP_FLAG_BYTES) & 0x7F) | (0x80 if definition.vendor_id else 0)
    vendor_id = definition.vendor_id or None
    if definition.is_grouped:
        children = [] if depth >= GROUPED_DEPTH else draw(st.lists(raw_avps(depth + 1), max_size=4))
        payload = b"".join(children)
    elif draw(st.booleans()):
        payload = definition.encode(draw(_value_for(definition)))
    else:
        payload = draw(st.binary(max_size=24))
    return raw_avp(definition.code, flags, vendor_id, payload)


def raw_avps(depth: int = 0) -> st.SearchStrategy[bytes]:
    return st.one_of(unknown_raw_avps(), known_raw_avps(depth))


@st.composite
def raw_frames(draw: st.DrawFn) -> bytes:
    return raw_frame(
        draw(COMMAND_FLAG_BYTES),
        draw(st.one_of(st.sampled_from(COMMAND_CODES), st.integers(0, 0xFFFFFF))),
        draw(_int_range(32, False)),
        draw(_int_range(32, False)),
        draw(_int_range(32, False)),
        b"".join(draw(st.lists(raw_avps(), max_size=10))),
    )


@PROPERTY_SETTINGS
@given(frame=raw_frames())
def test_decoded_frames_reencode_byte_exact(frame: bytes) -> None:
    decoded = decode(frame)
    assert encode(decoded.message) == frame
    # Whatever failed to decode is kept as its bytes, so it is also what Failed-AVP echoes.
    for failure in decoded.failures:
        if failure.failed_avp is not None:
            value = failure.failed_avp.value
            assert isinstance(value, bytes) and value in frame


def _unknown_avps(avps: list[Avp]) -> Iterator[Avp]:
    for item in avps:
        if item.key not in KNOWN_KEYS:
            yield item
        elif isinstance(item.value, list):
            yield from _unknown_avps(item.value)


@PROPERTY_SETTINGS
@given(avps=st.lists(unknown_raw_avps(), min_size=1, max_size=6), hop=_int_range(32, False))
def test_unknown_avps_are_kept_as_bytes(avps: list[bytes], hop: int) -> None:
    frame = raw_frame(0x80, 272, 4, hop, hop, b"".join(avps))
    decoded = decode(frame)
    unknown = list(_unknown_avps(decoded.message.avps))
    assert len(unknown) == len(avps)
    for item, raw in zip(unknown, avps, strict=True):
        header_length = 12 if raw[4] & 0x80 else 8
        length = int.from_bytes(raw[5:8], "big")
        assert item.value == raw[header_length:length]
        assert item.flags == raw[4]
        assert item.vendor_id == (int.from_bytes(raw[8:12], "big") if header_length == 12 else 0)
    # RFC 6733 section 4.1: an unknown AVP with the M bit is 5001, one without is ignored;
    # the P bit is reserved and must be zero on any AVP (3009).
    expected: list[ResultCode] = []
    for raw in avps:
        if raw[4] & AvpFlag.MANDATORY:
            expected.append(ResultCode.DIAMETER_AVP_UNSUPPORTED)
        if raw[4] & AvpFlag.PROTECTED:
            expected.append(ResultCode.DIAMETER_INVALID_AVP_BITS)
    assert [f.result_code for f in decoded.failures] == expected
    assert encode(decoded.message) == frame


@pytest.mark.parametrize("code", [263, 99999], ids=["Session-Id", "unknown"])
def test_v_bit_with_vendor_id_zero_round_trips(code: int) -> None:
    """RFC 6733 section 4.1: the V bit says the Vendor-ID field is present; 0 is a valid
    Vendor-ID (IETF). The header must come back with its 4-byte Vendor-ID field and V bit."""
    frame = raw_frame(0x80, 272, 4, 1, 2, raw_avp(code, 0x80, 0, b"s;1"))
    decoded = decode(frame)
    (item,) = decoded.message.avps
    assert (item.code, item.flags, item.vendor_id) == (code, 0x80, 0)
    assert encode(decoded.message) == frame


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cut % (len(stream) + 1) for cut in cuts), len(stream)]
    return [stream[start:stop] for start, stop in pairwise(points)]


@PROPERTY_SETTINGS
@given(
    frames=st.lists(st.one_of(raw_frames(), dictionary_messages().map(encode)), min_size=1, max_size=6),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=12),
)
def test_frame_reader_reassembles_any_split(frames: list[bytes], cuts: list[int]) -> None:
    reader = FrameReader()
    received: list[bytes] = []
    for piece in _split(b"".join(frames), cuts):
        received += reader.feed(piece)
    assert received == frames
    assert reader.buffered == 0


@PROPERTY_SETTINGS
@given(frames=st.lists(raw_frames(), min_size=1, max_size=3))
def test_frame_reader_byte_by_byte(frames: list[bytes]) -> None:
    stream = b"".join(frames)
    reader = FrameReader()
    received: list[bytes] = []
    for index in range(len(stream)):
        got = reader.feed(stream[index : index + 1])
        # A frame comes out on exactly its last byte, never before.
        assert all(frame == frames[len(received) + n] for n, frame in enumerate(got))
        received += got
        assert reader.buffered == (index + 1) - sum(len(frame) for frame in received)
    assert received == frames
