"""Fuzz the sans-IO Diameter core with 10**5 random and mutated frames.

Theory of operation: every input is made from (seed, index) alone by ``fuzz_input``, so one line
of the failure report regenerates it. Most inputs are real encoded messages (CER, DWR, DPR, Gy and
Ro CCRs, CCAs, RAR, ASR, STR, error answers, unknown AVPs, a request at the size limit) after one
to three mutations: bit flips, truncation, header length and version corruption, random header
bits, AVP length, flag and code corruption, duplicated, removed and reordered AVPs, garbage
payloads, deep Grouped nesting, AVP counts around the limit, splices and back-to-back frames.
The rest are random bytes, with or without a plausible header.

Each input goes through two pipelines:
1. FrameReader, then decode and grammar.validate of every whole frame. Only ``PeerError``
   subclasses may be raised. Every failure carries a Result-Code of the set RFC 6733 section 7.1
   gives decoding (3008, 3009, 5001, 5004, 5014) or validation (3001, 3007, 3008, 5005, 5008, 5009),
   with a Failed-AVP wherever an AVP is at fault, that we can encode; AVP count and nesting stay
   within the hard limits; what was decoded re-encodes and decodes to the same message.
2. A server-role ``PeerConnection`` opened by a real CER and acting as its own application
   (it answers what it delivers). It must raise nothing, and its reaction must match what
   pipeline 1 predicts frame by frame: close on an undelimitable or undecodable frame, answer a
   faulty request with the first failure's Result-Code and Failed-AVP (E bit for 3xxx), answer
   CER, DWR and DPR, deliver valid requests, close on CEA or DPA while open, drop stray answers.
   Every byte it sends must decode as an answer to the request it names.
Work is bounded twice: each input runs under a SIGALRM hang detector, and the structural limits
(one answer per request, AVP count, nesting depth) are asserted. Problems are collected by kind,
and the test fails with each kind's count and first input (seed, index, mutations, frame hex).
"""

from __future__ import annotations

import os
import random
import signal
import struct
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address
from types import FrameType

import pytest

from protocol.avp_types import AvpType, AvpValueError
from protocol.capabilities import LocalIdentity, PeerPolicy, base_answer_avps, build_cea, build_cer
from protocol.codec import Decoded, FrameReader, decode, encode, encode_avp
from protocol.constants import (
    MAX_AVP_COUNT,
    MAX_MESSAGE_LENGTH,
    MAX_NESTING_DEPTH,
    AvpFlag,
    CommandFlag,
    ResultCode,
    is_protocol_error,
)
from protocol.dictionary import DEFAULT_DICTIONARY
from protocol.disconnect import DisconnectCause, build_dpa, build_dpr, build_dwa, build_dwr
from protocol.duplicates import DuplicateCache
from protocol.errors import Failure, PeerError
from protocol.events import (
    DuplicateAnswered,
    Event,
    PeerClosed,
    RequestReceived,
    RequestRejected,
)
from protocol.grammar import validate
from protocol.message import Avp, Message, answer_to, avp, request
from protocol.peer import PeerConnection, PeerState, Role

FUZZ_SEED = int(os.environ.get("OCS_FUZZ_SEED", "6733"))
FUZZ_INPUT_COUNT = int(os.environ.get("OCS_FUZZ_INPUTS", "100000"))  # the issue asks for 10**5
# A hang detector, not a speed check: an input costs about 0.2 ms; only a loop that never ends
# (or work growing without bound) takes seconds.
INPUT_TIME_LIMIT_SECONDS = 5.0
MAX_EXAMPLE_HEX_BYTES = 4096  # longer frames are shown in part; fuzz_input(seed, index) has them whole

# Plain ints: IntFlag arithmetic costs microseconds, and these run millions of times.
VENDOR_BIT, MANDATORY_BIT, PROTECTED_BIT = int(AvpFlag.VENDOR), int(AvpFlag.MANDATORY), int(AvpFlag.PROTECTED)
REQUEST_BIT, ERROR_BIT = int(CommandFlag.REQUEST), int(CommandFlag.ERROR)

SERVER = LocalIdentity("ocs.fuzz", "fuzz")
CLIENT = LocalIdentity("pgw.fuzz", "fuzz")
APPLICATIONS = frozenset({0, 4})  # what SERVER and CLIENT share after the CER: base and Credit-Control
BASE_REQUESTS = frozenset({257, 280, 282})  # CER, DWR, DPR (RFC 6733 sections 5.3, 5.5, 5.4)
DECODE_RESULT_CODES = frozenset(
    {
        ResultCode.DIAMETER_INVALID_HDR_BITS,
        ResultCode.DIAMETER_INVALID_AVP_BITS,
        ResultCode.DIAMETER_AVP_UNSUPPORTED,
        ResultCode.DIAMETER_INVALID_AVP_VALUE,
        ResultCode.DIAMETER_INVALID_AVP_LENGTH,
        ResultCode.DIAMETER_UNSUPPORTED_VERSION,
    }
)
GRAMMAR_RESULT_CODES = frozenset(
    {
        ResultCode.DIAMETER_COMMAND_UNSUPPORTED,
        ResultCode.DIAMETER_APPLICATION_UNSUPPORTED,
        ResultCode.DIAMETER_INVALID_HDR_BITS,
        ResultCode.DIAMETER_MISSING_AVP,
        ResultCode.DIAMETER_AVP_NOT_ALLOWED,
        ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES,
    }
)
RESULT_CODES = frozenset(int(code) for code in ResultCode)
STRING_TYPES = frozenset({AvpType.UTF8_STRING, AvpType.DIAMETER_IDENTITY, AvpType.DIAMETER_URI, AvpType.IP_FILTER_RULE})
DEFINITIONS = DEFAULT_DICTIONARY.avps_by_key
GROUPED_KEYS = sorted(key for key, definition in DEFINITIONS.items() if definition.is_grouped)
KNOWN_KEYS = sorted(DEFINITIONS)
COMMAND_CODES = sorted(DEFAULT_DICTIONARY.commands)


# --- the seed corpus: real messages, encoded by the codec -------------------------------------


def _stamp(message: Message, hop_by_hop: int, end_to_end: int) -> Message:
    message.hop_by_hop, message.end_to_end = hop_by_hop, end_to_end
    return message


def _ccr(
    number: int, request_type: str, *extra: Avp, session: str = "pgw.fuzz;1;42", context: str = "32251"
) -> Message:
    head = [avp("Session-Id", session), *CLIENT.origin_avps(), avp("Destination-Realm", SERVER.origin_realm)]
    head += [avp("Auth-Application-Id", 4), avp("Service-Context-Id", f"{context}@3gpp.org")]
    head += [avp("CC-Request-Type", request_type), avp("CC-Request-Number", number)]
    return _stamp(request(272, 4, [*head, *extra]), 0x1000 + number, 0x2000 + number)


def _subscription(kind: int, data: str) -> Avp:
    return avp("Subscription-Id", [avp("Subscription-Id-Type", kind), avp("Subscription-Id-Data", data)])


def _mscc(*members: Avp) -> Avp:
    return avp("Multiple-Services-Credit-Control", list(members))


def _base_messages() -> dict[str, Message]:
    cer = _stamp(build_cer(CLIENT), 11, 12)
    dwr = _stamp(build_dwr(CLIENT), 21, 22)
    dpr = _stamp(build_dpr(CLIENT, DisconnectCause.BUSY), 31, 32)
    return {
        "CER": cer,
        "CEA": build_cea(SERVER, cer, ResultCode.DIAMETER_SUCCESS),
        "CEA-3010": build_cea(SERVER, cer, ResultCode.DIAMETER_UNKNOWN_PEER, "not allowed"),
        "DWR": dwr,
        "DWA": build_dwa(SERVER, dwr),
        "DPR": dpr,
        "DPA": build_dpa(SERVER, dpr),
    }


def _credit_control_requests() -> dict[str, Message]:
    """Gy data (TS 32.299 PS-Information), Ro voice and SMS, and two odd ones."""
    ps_information = [
        avp("3GPP-Charging-Id", b"\x00\x00\x30\x39"),
        avp("3GPP-PDP-Type", 0),
        avp("PDP-Address", IPv4Address("10.1.2.3")),
        avp("SGSN-Address", IPv6Address("2001:db8::5")),
        avp("3GPP-IMSI-MCC-MNC", "26201"),
        avp("Called-Station-Id", "internet"),
        avp("3GPP-User-Location-Info", bytes(range(13))),
    ]
    used = [avp("CC-Total-Octets", 1_500_000), avp("CC-Input-Octets", 500_000), avp("CC-Time", 60)]
    return {
        "CCR-I-data": _ccr(
            0,
            "INITIAL_REQUEST",
            avp("Event-Timestamp", datetime(2026, 1, 1, 12, 0, tzinfo=UTC)),
            _subscription(0, "491701234567"),
            _subscription(1, "262011234567890"),
            avp("Multiple-Services-Indicator", 1),
            _mscc(avp("Requested-Service-Unit", []), avp("Rating-Group", 10), avp("Service-Identifier", 1)),
            _mscc(avp("Requested-Service-Unit", []), avp("Rating-Group", 20)),
            avp("Service-Information", [avp("PS-Information", ps_information)]),
        ),
        "CCR-U-data": _ccr(
            1,
            "UPDATE_REQUEST",
            _subscription(0, "491701234567"),
            _mscc(
                avp("Used-Service-Unit", used),
                avp("Requested-Service-Unit", [avp("CC-Total-Octets", 2_000_000)]),
                avp("Rating-Group", 10),
                avp("Reporting-Reason", 3),
            ),
        ),
        "CCR-T-voice": _ccr(
            2,
            "TERMINATION_REQUEST",
            _subscription(2, "sip:alice@ims.example"),
            _mscc(avp("Used-Service-Unit", [avp("CC-Time", 125)])),
            avp("Termination-Cause", 1),
            session="ims.fuzz;7;9",
            context="32260",
        ),
        "CCR-E-sms": _ccr(
            0,
            "EVENT_REQUEST",
            _subscription(0, "491709999999"),
            avp("Requested-Action", "DIRECT_DEBITING"),
            _mscc(avp("Requested-Service-Unit", [avp("CC-Service-Specific-Units", 1)])),
            session="smsc.fuzz;3;1",
            context="32274",
        ),
        "CCR-unknown-AVPs": _ccr(
            3,
            "UPDATE_REQUEST",
            Avp(99_999, 0x00, 0, b"odd"),  # unknown, no flags: ignored
            Avp(4_242, 0x80, 10_415, b"\x01\x02\x03\x04\x05"),  # unknown 3GPP AVP, V bit
            Avp(77_777, 0xC0, 32_473, b"mandatory"),  # unknown with M: 5001
        ),
        # At half the size limit: an answer echoes the Session-Id, and Failed-AVP may echo it again.
        "CCR-at-the-limit": _ccr(4, "UPDATE_REQUEST", session="pgw.fuzz;" + "x" * 33_000),
    }


def _answers_and_session_requests(ccr: Message) -> dict[str, Message]:
    """CCAs (a grant, a 5004 with Failed-AVP) and the server-initiated RAR, ASR, and STR."""
    cca_head = [avp("Session-Id", "pgw.fuzz;1;42"), *SERVER.origin_avps(), avp("Auth-Application-Id", 4)]
    cca_head += [avp("CC-Request-Type", "UPDATE_REQUEST"), avp("CC-Request-Number", 1)]
    grant = _mscc(
        avp("Granted-Service-Unit", [avp("CC-Total-Octets", 2_000_000)]),
        avp("Rating-Group", 10),
        avp("Validity-Time", 600),
        avp("Result-Code", 2001),
        avp("Final-Unit-Indication", [avp("Final-Unit-Action", 0)]),
    )
    refusal = [avp("Error-Message", "CC-Request-Number: bad value"), avp("Failed-AVP", [Avp(415, 0x40, 0, b"\0\0\1")])]
    session = [avp("Session-Id", "pgw.fuzz;1;42"), *CLIENT.origin_avps(), avp("Destination-Realm", "fuzz")]
    towards_client = [*session, avp("Destination-Host", "pgw.fuzz"), avp("Auth-Application-Id", 4)]
    return {
        "CCA-U": answer_to(ccr, [*cca_head, avp("Result-Code", 2001), grant]),
        "CCA-5004": answer_to(ccr, [*cca_head, avp("Result-Code", 5004), *refusal]),
        "RAR": _stamp(request(258, 4, [*towards_client, avp("Re-Auth-Request-Type", 0)]), 41, 42),
        "ASR": _stamp(request(274, 4, towards_client), 51, 52),
        "STR": _stamp(request(275, 4, [*session, avp("Auth-Application-Id", 4), avp("Termination-Cause", 1)]), 61, 62),
    }


def _seed_messages() -> dict[str, Message]:
    requests = _credit_control_requests()
    return {**_base_messages(), **requests, **_answers_and_session_requests(requests["CCR-U-data"])}


SEED_MESSAGES = _seed_messages()
SEED_FRAMES: list[tuple[str, bytes]] = [(name, encode(message)) for name, message in SEED_MESSAGES.items()]


# --- frame surgery ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """One AVP inside a frame: [start, end) including padding, and the AVPs enclosing it."""

    start: int
    end: int
    header_length: int
    grouped: bool
    parents: tuple[int, ...]


@lru_cache(maxsize=64)  # the seed frames are walked again and again
def avp_spans(frame: bytes) -> tuple[Span, ...]:
    """Every AVP of a frame, Grouped members included, as far as the layout can be followed."""
    spans: list[Span] = []

    def walk(offset: int, end: int, parents: tuple[int, ...]) -> None:
        while end - offset >= 8:
            code, flags_length = struct.unpack_from(">II", frame, offset)
            flags, length = flags_length >> 24, flags_length & 0xFFFFFF
            header_length = 12 if flags & 0x80 else 8
            if length < header_length or offset + length > end:
                return
            vendor_id = struct.unpack_from(">I", frame, offset + 8)[0] if flags & 0x80 else 0
            definition = DEFINITIONS.get((code, vendor_id))
            grouped = definition is not None and definition.is_grouped
            padded_end = min(end, offset + length + (-length % 4))
            spans.append(Span(offset, padded_end, header_length, grouped, parents))
            if grouped and len(parents) < 40:
                walk(offset + header_length, offset + length, (*parents, offset))
            offset = padded_end

    walk(20, min(len(frame), _header_length(frame)), ())
    return tuple(spans)


def _header_length(frame: bytes | bytearray) -> int:
    return int.from_bytes(frame[1:4], "big") if len(frame) >= 4 else 0


def _set_length_field(frame: bytearray, offset: int, length: int) -> None:
    frame[offset : offset + 3] = (length & 0xFFFFFF).to_bytes(3, "big")


def _resize(frame: bytearray, span: Span, delta: int) -> None:
    """Keep the message and every enclosing Grouped AVP consistent after inserting or removing
    ``delta`` bytes inside ``span``'s parent."""
    for parent in span.parents:
        _set_length_field(frame, parent + 5, int.from_bytes(frame[parent + 5 : parent + 8], "big") + delta)
    _set_length_field(frame, 1, len(frame))


def with_true_length(frame: bytes | bytearray) -> bytes:
    fixed = bytearray(frame)
    if len(fixed) >= 4:
        _set_length_field(fixed, 1, len(fixed))
    return bytes(fixed)


def raw_avp(code: int, flags: int, payload: bytes, vendor_id: int | None = None) -> bytes:
    header_length = 12 if vendor_id is not None else 8
    length = header_length + len(payload)
    head = struct.pack(">II", code, (flags << 24) | length)
    if vendor_id is not None:
        head += struct.pack(">I", vendor_id)
    return head + payload + bytes(-length % 4)


Mutation = Callable[[random.Random, bytes], bytes]


def flip_bits(rng: random.Random, frame: bytes) -> bytes:
    mutated = bytearray(frame)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        position = rng.randrange(len(mutated) * 8)
        mutated[position // 8] ^= 1 << (position % 8)
    return bytes(mutated)


def flip_body_bits(rng: random.Random, frame: bytes) -> bytes:
    """Bit flips past the header, so the frame is still delimited and reaches the AVP decoder."""
    if len(frame) <= 20:
        return flip_bits(rng, frame)
    mutated = bytearray(frame)
    for _ in range(rng.choice((1, 1, 2, 4))):
        position = rng.randrange(20 * 8, len(mutated) * 8)
        mutated[position // 8] ^= 1 << (position % 8)
    return bytes(mutated)


def random_bytes(rng: random.Random, frame: bytes) -> bytes:
    mutated = bytearray(frame)
    for _ in range(rng.randint(1, 6)):
        mutated[rng.randrange(len(mutated))] = rng.choice((0x00, 0xFF, 0x80, 0x7F, rng.randrange(256)))
    return bytes(mutated)


def truncate(rng: random.Random, frame: bytes) -> bytes:
    cut = frame[: rng.randrange(len(frame))]
    if rng.random() < 0.6:  # say so in the header too, so the frame is delimited and decoded
        cut = cut[: len(cut) - len(cut) % 4]
        return with_true_length(cut)
    return cut


def extend(rng: random.Random, frame: bytes) -> bytes:
    tail = rng.randbytes(rng.choice((1, 4, 8, 13, 64)))
    return with_true_length(frame + tail) if rng.random() < 0.6 else frame + tail


def corrupt_message_length(rng: random.Random, frame: bytes) -> bytes:
    length = len(frame)
    choices = (0, 4, 19, 20, length - 4, length - 1, length + 1, length + 4, MAX_MESSAGE_LENGTH + 4, 0xFFFFFF)
    mutated = bytearray(frame)
    _set_length_field(mutated, 1, rng.choice((*choices, rng.randrange(1 << 24))))
    return bytes(mutated)


def corrupt_version(rng: random.Random, frame: bytes) -> bytes:
    return bytes([rng.choice((0, 2, 0xFF, rng.randrange(256)))]) + frame[1:]


def random_header_bits(rng: random.Random, frame: bytes) -> bytes:
    mutated = bytearray(frame)
    field_choice = rng.randrange(4)
    if field_choice == 0:  # command flags, reserved bits included
        mutated[4] = rng.randrange(256)
    elif field_choice == 1:
        mutated[5:8] = rng.choice((*COMMAND_CODES, 0, 271, rng.randrange(1 << 24))).to_bytes(3, "big")
    elif field_choice == 2:
        mutated[8:12] = rng.choice((0, 4, 3, 16777238, 0xFFFFFFFF, rng.getrandbits(32))).to_bytes(4, "big")
    else:  # identifiers: a different Hop-by-Hop / End-to-End pair
        mutated[12:20] = rng.randbytes(8)
    return bytes(mutated)


def _pick_span(rng: random.Random, frame: bytes) -> Span | None:
    spans = avp_spans(frame)
    return rng.choice(spans) if spans else None


def corrupt_avp_length(rng: random.Random, frame: bytes) -> bytes:
    span = _pick_span(rng, frame)
    if span is None:
        return corrupt_message_length(rng, frame)
    length = int.from_bytes(frame[span.start + 5 : span.start + 8], "big")
    remaining = _header_length(frame) - span.start
    choices = (0, 1, 7, 8, 11, 12, length - 1, length + 1, length - 4, length + 4, remaining, remaining + 1)
    mutated = bytearray(frame)
    _set_length_field(mutated, span.start + 5, rng.choice((*choices, rng.randrange(1 << 24))))
    return bytes(mutated)


def corrupt_avp_flags(rng: random.Random, frame: bytes) -> bytes:
    span = _pick_span(rng, frame)
    if span is None:
        return random_header_bits(rng, frame)
    mutated = bytearray(frame)
    flags = mutated[span.start + 4]
    mutated[span.start + 4] = rng.choice(
        (flags ^ VENDOR_BIT, flags ^ MANDATORY_BIT, flags | PROTECTED_BIT, flags | 0x01, rng.randrange(256))
    )
    return bytes(mutated)


def corrupt_avp_code(rng: random.Random, frame: bytes) -> bytes:
    """Another code: an unknown one, or a known one of another type (wrong sizes and values)."""
    span = _pick_span(rng, frame)
    if span is None:
        return random_header_bits(rng, frame)
    mutated = bytearray(frame)
    code, vendor_id = rng.choice(KNOWN_KEYS) if rng.random() < 0.7 else (rng.getrandbits(32), 0)
    mutated[span.start : span.start + 4] = code.to_bytes(4, "big")
    if span.header_length == 12 and vendor_id and rng.random() < 0.5:
        mutated[span.start + 8 : span.start + 12] = vendor_id.to_bytes(4, "big")
    return bytes(mutated)


def garbage_payload(rng: random.Random, frame: bytes) -> bytes:
    """Random bytes in place of one AVP's payload, the layout kept: value and nested failures."""
    span = _pick_span(rng, frame)
    if span is None:
        return random_bytes(rng, frame)
    length = int.from_bytes(frame[span.start + 5 : span.start + 8], "big")
    start, stop = span.start + span.header_length, span.start + length
    return frame[:start] + rng.randbytes(stop - start) + frame[stop:]


def duplicate_avp(rng: random.Random, frame: bytes) -> bytes:
    span = _pick_span(rng, frame)
    if span is None:
        return extend(rng, frame)
    copies = rng.choice((1, 1, 2, 5, 50))
    piece = frame[span.start : span.end]
    if len(piece) % 4 or len(frame) + copies * len(piece) > MAX_MESSAGE_LENGTH + 64:
        copies = 1
    mutated = bytearray(frame[: span.end] + piece * copies + frame[span.end :])
    _resize(mutated, span, copies * len(piece))
    return bytes(mutated)


def remove_avp(rng: random.Random, frame: bytes) -> bytes:
    span = _pick_span(rng, frame)
    if span is None:
        return truncate(rng, frame)
    mutated = bytearray(frame[: span.start] + frame[span.end :])
    _resize(mutated, span, -(span.end - span.start))
    return bytes(mutated)


def reorder_avps(rng: random.Random, frame: bytes) -> bytes:
    """Shuffle the top-level AVPs (fixed positions such as < Session-Id > move)."""
    top = [span for span in avp_spans(frame) if not span.parents]
    if len(top) < 2:
        return flip_body_bits(rng, frame)
    pieces = [frame[span.start : span.end] for span in top]
    rng.shuffle(pieces)
    return frame[: top[0].start] + b"".join(pieces) + frame[top[-1].end :]


def deep_nesting(rng: random.Random, frame: bytes) -> bytes:
    """Wrap the whole body in Grouped AVPs, around the nesting limit."""
    depth = rng.choice((MAX_NESTING_DEPTH - 1, MAX_NESTING_DEPTH, MAX_NESTING_DEPTH + 1, rng.randint(1, 60)))
    body = frame[20:]
    for _ in range(depth):
        code, vendor_id = rng.choice(GROUPED_KEYS)
        body = raw_avp(code, 0xC0 if vendor_id else 0x40, body, vendor_id or None)
        if len(body) > MAX_MESSAGE_LENGTH:
            break
    return with_true_length(frame[:20] + body)


def huge_count(rng: random.Random, frame: bytes) -> bytes:
    """Append tiny AVPs until the AVP count is around the limit (or far beyond it)."""
    tiny = rng.choice(
        (
            raw_avp(99_999, 0x00, b""),  # unknown, empty: 8 bytes
            raw_avp(415, 0x40, b"\x00\x00\x00\x01"),  # CC-Request-Number, repeated: 5009
            raw_avp(456, 0x40, raw_avp(432, 0x40, b"\x00\x00\x00\x0a")),  # MSCC holding a Rating-Group
        )
    )
    count = rng.choice((MAX_AVP_COUNT - 20, MAX_AVP_COUNT, MAX_AVP_COUNT + 1, rng.randint(1, 4 * MAX_AVP_COUNT)))
    count = min(count, (MAX_MESSAGE_LENGTH + 256 - len(frame)) // len(tiny))
    return with_true_length(frame + tiny * max(count, 0))


def splice(rng: random.Random, frame: bytes) -> bytes:
    """The head of this frame with the tail of another."""
    _, other = rng.choice(SEED_FRAMES)
    return with_true_length(frame[: rng.randrange(20, max(21, len(frame)))] + other[rng.randrange(20, len(other)) :])


def back_to_back(rng: random.Random, frame: bytes) -> bytes:
    """Two frames in one read, the second whole, cut, or mutated."""
    _, other = rng.choice(SEED_FRAMES)
    if rng.random() < 0.3:
        other = other[: rng.randrange(1, len(other))]
    elif rng.random() < 0.3:
        other = flip_bits(rng, other)
    return frame + other if rng.random() < 0.5 else other + frame


MUTATIONS: list[tuple[Mutation, float]] = [  # (mutation, weight); the costly ones are rare
    (flip_bits, 6),
    (flip_body_bits, 10),
    (random_bytes, 4),
    (truncate, 4),
    (extend, 2),
    (corrupt_message_length, 3),
    (corrupt_version, 1),
    (random_header_bits, 6),
    (corrupt_avp_length, 8),
    (corrupt_avp_flags, 6),
    (corrupt_avp_code, 5),
    (garbage_payload, 5),
    (duplicate_avp, 6),
    (remove_avp, 6),
    (reorder_avps, 3),
    (deep_nesting, 1),
    (huge_count, 0.15),
    (splice, 2),
    (back_to_back, 3),
]


def random_frame(rng: random.Random) -> tuple[str, bytes]:
    """A frame from nothing: random bytes, or a plausible header over random or AVP-shaped bytes."""
    kind = rng.randrange(3)
    if kind == 0:
        return "random bytes", rng.randbytes(rng.choice((0, 3, 4, 20, rng.randrange(400))))
    header = struct.pack(
        ">IIII",
        rng.choice((0x80, 0xC0, 0x00, 0x40, rng.randrange(256))) << 24
        | rng.choice((*COMMAND_CODES, rng.getrandbits(24))),
        rng.choice((0, 4, rng.getrandbits(32))),
        rng.getrandbits(32),
        rng.getrandbits(32),
    )
    if kind == 1:
        body = rng.randbytes(4 * rng.randrange(60))
        return "header + random body", with_true_length(b"\x01\x00\x00\x00" + header + body)
    avps: list[bytes] = []
    for _ in range(rng.randrange(1, 12)):
        code, vendor_id = rng.choice(KNOWN_KEYS) if rng.random() < 0.7 else (rng.getrandbits(32), rng.getrandbits(32))
        flags = rng.randrange(256) & 0x7F | (0x80 if vendor_id else 0)
        avps.append(raw_avp(code, flags, rng.randbytes(rng.choice((0, 1, 3, 4, 8, 16, 33))), vendor_id or None))
    return "header + random AVPs", with_true_length(b"\x01\x00\x00\x00" + header + b"".join(avps))


def fuzz_input(seed: int, index: int) -> tuple[str, bytes]:
    """The index-th input of a run: (how it was made, bytes). Depends on nothing else."""
    rng = random.Random(f"{seed}:{index}")
    if rng.random() < 0.12:
        return random_frame(rng)
    name, frame = rng.choice(SEED_FRAMES)
    steps: list[str] = []
    mutations = [mutation for mutation, _ in MUTATIONS]
    weights = [weight for _, weight in MUTATIONS]
    for mutation in rng.choices(mutations, weights, k=rng.choice((1, 1, 1, 2, 3))):
        if len(frame) < 20:  # nothing left to mutate as a message; it is fuzz as it is
            break
        frame = mutation(rng, frame)
        steps.append(mutation.__name__)
    return f"{name} + {' + '.join(steps)}", frame


# --- pipeline 1: FrameReader, decode, validate --------------------------------------------------


@dataclass(slots=True)
class FrameVerdict:
    """What the codec made of one delimited frame (``decoded`` is None: it raised PeerError)."""

    frame: bytes
    decoded: Decoded | None
    grammar: list[Failure] = field(default_factory=list)


@dataclass(slots=True)
class CodecVerdict:
    unframeable: bool
    frames: list[FrameVerdict]
    leftover: int  # bytes FrameReader keeps for a later read


def _without_reserved_avp_bits(avps: list[Avp]) -> list[Avp]:
    return [
        Avp(item.code, item.flags & 0xE0, item.vendor_id, _without_reserved_avp_bits(item.value))
        if isinstance(item.value, list)
        else Avp(item.code, item.flags & 0xE0, item.vendor_id, item.value)
        for item in avps
    ]


def _without_reserved_bits(message: Message) -> Message:
    """``message`` as a conforming sender writes it: reserved header and AVP flag bits zero."""
    return Message(
        message.command_code,
        message.flags & 0xF0,
        message.application_id,
        message.hop_by_hop,
        message.end_to_end,
        _without_reserved_avp_bits(message.avps),
    )


def _walk(avps: list[Avp], depth: int = 1) -> Iterator[tuple[Avp, int]]:
    for item in avps:
        yield item, depth
        if isinstance(item.value, list):
            yield from _walk(item.value, depth + 1)


def check_decode_failure(failure: Failure, frame: bytes) -> None:
    code = failure.result_code
    assert code in DECODE_RESULT_CODES, f"decode failure with Result-Code {code!r} outside RFC 6733 7.1"
    failed = failure.failed_avp
    if code == ResultCode.DIAMETER_INVALID_HDR_BITS:
        assert frame[4] & REQUEST_BIT and frame[4] & ERROR_BIT, "3008 without R and E bits"
        return
    if code == ResultCode.DIAMETER_UNSUPPORTED_VERSION:
        assert frame[0] != 1 and failed is None, "5011 for version 1, or with a Failed-AVP"
        return
    if failed is None:
        # Only a truncated AVP header (fewer than 8 bytes left) has no AVP to show.
        assert code == ResultCode.DIAMETER_INVALID_AVP_LENGTH, f"{ResultCode(code).name} without Failed-AVP"
        return
    assert isinstance(failed.value, bytes), "Failed-AVP payload is not the bytes as received"
    # RFC 6733 section 7.5: the offending AVP as received; for a length that cannot be right,
    # its header with a zero-filled minimal payload is enough.
    zero_filled = code == ResultCode.DIAMETER_INVALID_AVP_LENGTH and not any(failed.value)
    assert zero_filled or failed.value in frame, "Failed-AVP payload is not a part of the frame"
    encode_avp(failed)  # it goes into the answer
    definition = DEFINITIONS.get(failed.key)
    if code == ResultCode.DIAMETER_AVP_UNSUPPORTED:
        assert definition is None and failed.flags & MANDATORY_BIT, "5001 for a known AVP or one without M"
    elif code == ResultCode.DIAMETER_INVALID_AVP_VALUE:
        assert definition is not None and definition.type in STRING_TYPES, "5004 for a type without invalid values"
        with pytest.raises(AvpValueError):
            definition.decode(failed.value)
    elif code == ResultCode.DIAMETER_INVALID_AVP_BITS:
        # A missing M bit is accepted (informational, RFC 6733 section 4.1); the P bit is not.
        assert failed.flags & PROTECTED_BIT, "3009 on an AVP whose flags are fine"
    # 5014 is either a payload of the wrong size for its type or a header length that does not
    # fit; after the latter, the payload is cut wherever the frame ends, so nothing more to check.


def check_grammar_failure(failure: Failure, message: Message, present: set[int]) -> None:
    """``present``: the ids of every AVP object in ``message``, Grouped members included."""
    code = failure.result_code
    assert code in GRAMMAR_RESULT_CODES, f"grammar failure with Result-Code {code!r} outside RFC 6733 7.1"
    failed = failure.failed_avp
    if code == ResultCode.DIAMETER_COMMAND_UNSUPPORTED:
        assert message.command_code not in DEFAULT_DICTIONARY.commands, "3001 for a known command"
    elif code == ResultCode.DIAMETER_APPLICATION_UNSUPPORTED:
        # Either an application we do not serve, or a command sent in another application than
        # its own (a CCR is only valid in Credit-Control, 4).
        owner = DEFAULT_DICTIONARY.commands[message.command_code].application_id
        foreign = owner != 0 and message.application_id not in (owner, 0xFFFFFFFF)
        assert message.application_id not in APPLICATIONS or foreign, "3007 for an application we serve"
    elif code == ResultCode.DIAMETER_MISSING_AVP:
        # RFC 6733 section 7.5: an example AVP of the missing code with a minimal zero value.
        assert failed is not None and failed.key in DEFINITIONS, "5005 without a known Failed-AVP"
        assert isinstance(failed.value, bytes) and not any(failed.value), "5005 example AVP is not zero-filled"
    elif code != ResultCode.DIAMETER_INVALID_HDR_BITS:
        assert failed is not None, f"{ResultCode(code).name} without Failed-AVP"
        assert id(failed) in present, f"{ResultCode(code).name} names an AVP not in the message"
    if failed is not None:
        encode_avp(failed)


def run_codec(data: bytes) -> CodecVerdict:
    reader = FrameReader()
    try:
        frames = reader.feed(data)
    except PeerError:
        return CodecVerdict(True, [], 0)
    verdicts: list[FrameVerdict] = []
    for frame in frames:
        assert len(frame) <= MAX_MESSAGE_LENGTH, "FrameReader passed a frame over the limit"
        try:
            decoded = decode(frame)
        except PeerError:
            verdicts.append(FrameVerdict(frame, None))
            continue
        message = decoded.message
        walked = list(_walk(message.avps))
        assert len(walked) <= MAX_AVP_COUNT, "more AVPs decoded than MAX_AVP_COUNT"
        assert all(depth <= MAX_NESTING_DEPTH + 1 for _, depth in walked), "nesting beyond MAX_NESTING_DEPTH"
        for failure in decoded.failures:
            check_decode_failure(failure, frame)
        grammar = validate(message, APPLICATIONS)
        present = {id(item) for item, _ in walked}
        for failure in grammar:
            check_grammar_failure(failure, message, present)
        # What was decoded can be sent again (proxied, echoed in Failed-AVP) and reads back the same,
        # less the reserved flag bits, which a sender clears (RFC 6733 sections 3 and 4.1).
        sent = decode(encode(message)).message
        assert sent == _without_reserved_bits(message), "decode(encode(decoded)) differs from decoded"
        verdicts.append(FrameVerdict(frame, decoded, grammar))
    return CodecVerdict(False, verdicts, reader.buffered)


# --- pipeline 2: a server PeerConnection --------------------------------------------------------

CER_FRAME = encode(SEED_MESSAGES["CER"])


class ServerUnderTest:
    """A server peer after a successful CER, replaced whenever it closes or keeps stray bytes."""

    def __init__(self, duplicates: DuplicateCache) -> None:
        self.duplicates = duplicates
        self.peer = self._open()
        self.now = 1.0
        self.opened = 1

    def _open(self) -> PeerConnection:
        peer = PeerConnection(Role.SERVER, SERVER, PeerPolicy(), 0.0, duplicates=self.duplicates, rng=random.Random(0))
        peer.receive_data(CER_FRAME, 0.5)
        peer.data_to_send()
        assert peer.state is PeerState.OPEN
        return peer

    def renew(self) -> None:
        self.peer = self._open()
        self.now = 1.0
        self.opened += 1


@dataclass(slots=True)
class Expected:
    """The peer's reaction to one delimited frame, as pipeline 1 predicts it."""

    request: Message | None  # the request the peer answers itself, if any
    event: type | None  # RequestRejected, RequestReceived (or DuplicateAnswered), PeerClosed
    failure: Failure | None = None


def predict(verdict: CodecVerdict) -> list[Expected]:
    """RFC 6733 section 5.6 for a peer in R-Open, frame by frame, until it closes."""
    if verdict.unframeable:
        return [Expected(None, PeerClosed)]
    expected: list[Expected] = []
    for frame_verdict in verdict.frames:
        decoded = frame_verdict.decoded
        if decoded is None:
            expected.append(Expected(None, PeerClosed))
            break
        message = decoded.message
        code = message.command_code
        if not message.is_request:
            other_version = (
                decoded.failures and decoded.failures[0].result_code == ResultCode.DIAMETER_UNSUPPORTED_VERSION
            )
            if other_version or code in (257, 282):
                # An answer of another version cannot be read as ours (RFC 6733 section 7.1.5
                # answers only requests); CEA or DPA while open: no table row. Both close.
                expected.append(Expected(None, PeerClosed))
                break
            continue  # DWA counted by the watchdog; other answers match no request of ours
        failures = decoded.failures or frame_verdict.grammar
        if failures:
            expected.append(Expected(message, RequestRejected, failures[0]))
        elif code == 282:  # DPR: DPA, then close
            expected.append(Expected(message, None))
            expected.append(Expected(None, PeerClosed))
            break
        elif code in BASE_REQUESTS:  # CER answered with CEA, DWR with DWA
            expected.append(Expected(message, None))
        else:
            expected.append(Expected(message, RequestReceived))
    return expected


def _answers(data: bytes) -> list[tuple[bytes, Message]]:
    """What the peer sent, cut and decoded by our own codec, as the next hop would read it."""
    reader = FrameReader()
    try:
        frames = reader.feed(data)
        decoded = [(frame, decode(frame).message) for frame in frames]
    except PeerError as error:
        raise AssertionError(f"our own decoder refuses what the peer sent: {type(error).__name__}") from error
    assert reader.buffered == 0, "the peer sent a partial frame"
    return decoded


def _failed_avp_payload(frame: bytes) -> bytes | None:
    """The bytes inside the answer's Failed-AVP (279) as sent, before any decoding."""
    for span in avp_spans(frame):
        if not span.parents and frame[span.start : span.start + 4] == (279).to_bytes(4, "big"):
            length = int.from_bytes(frame[span.start + 5 : span.start + 8], "big")
            return frame[span.start + span.header_length : span.start + length]
    return None


def check_answer(
    sent: tuple[bytes, Message], request_message: Message, expected: Expected, event: Event | None
) -> None:
    frame, answer = sent
    assert not answer.is_request, "the peer sent a request in reply"
    assert (answer.hop_by_hop, answer.end_to_end) == (request_message.hop_by_hop, request_message.end_to_end), (
        "answer identifiers differ from the request's (RFC 6733 section 6.2)"
    )
    result_code = answer.get("Result-Code")
    assert isinstance(result_code, int) and result_code in RESULT_CODES, "answer without a known Result-Code"
    if isinstance(event, DuplicateAnswered):
        return  # the remembered answer, whatever request it first answered
    assert answer.command_code == request_message.command_code, "answer to another command"
    if expected.failure is None:
        return
    failure = expected.failure
    assert result_code == failure.result_code, "error answer with another Result-Code than the first failure"
    assert answer.is_error == is_protocol_error(result_code), "E bit does not match a 3xxx Result-Code"
    failed = _failed_avp_payload(frame)
    if failure.failed_avp is None:
        assert failed is None, "Failed-AVP in an answer whose failure names no AVP"
    else:
        whole = encode_avp(failure.failed_avp)
        assert failed is not None and failed[:4] == whole[:4], "error answer without the AVP at fault in Failed-AVP"
        if failed != whole:
            # RFC 6733 section 7.5 also accepts the AVP's header with a minimal zero-filled
            # payload; fine when the whole AVP would push the answer over MAX_MESSAGE_LENGTH.
            assert len(frame) - len(failed) + len(whole) > MAX_MESSAGE_LENGTH, "Failed-AVP is not the AVP at fault"


def run_peer(server: ServerUnderTest, data: bytes, verdict: CodecVerdict) -> None:
    peer = server.peer
    server.now += 0.001
    events = peer.receive_data(data, server.now)
    sent = _answers(peer.data_to_send())
    expected = predict(verdict)

    def kind(event: Event) -> type:
        return RequestReceived if isinstance(event, DuplicateAnswered) else type(event)

    predicted_events = [item for item in expected if item.event is not None]
    assert [kind(event) for event in events] == [item.event for item in predicted_events], (
        "the peer's events differ from the decode/validate prediction"
    )
    for item, event in zip(predicted_events, events, strict=True):
        if isinstance(event, RequestRejected):
            assert item.failure is not None and event.failure.result_code == item.failure.result_code, (
                "rejected with another failure than the first one found"
            )
    # Answers the peer wrote itself come first, in frame order; the application's come after.
    answered_by_peer = [
        (item, event)
        for item, event in zip(expected, _events_aligned(expected, events), strict=True)
        if item.request is not None and (item.event is not RequestReceived or isinstance(event, DuplicateAnswered))
    ]
    assert len(sent) == len(answered_by_peer), "the peer sent another number of answers than requests it owed"
    for answer, (item, produced) in zip(sent, answered_by_peer, strict=True):
        assert item.request is not None
        check_answer(answer, item.request, item, produced)
    for event in events:
        if isinstance(event, RequestReceived):  # the application's part: answer what is delivered
            peer.send_answer(answer_to(event.message, base_answer_avps(SERVER, event.message, 2001)))
    for _, application_answer in _answers(peer.data_to_send()):
        assert application_answer.get("Result-Code") == 2001
    assert peer.in_flight == 0, "a delivered request is still counted in flight after its answer"
    closed = any(isinstance(event, PeerClosed) for event in events)
    assert closed == (peer.state is PeerState.CLOSED), "PeerClosed event and CLOSED state disagree"
    if closed or verdict.leftover:
        server.renew()


def _events_aligned(expected: list[Expected], events: list[Event]) -> list[Event | None]:
    """The event each expected reaction produced (None for the silent ones: CEA, DWA, DPA)."""
    remaining = iter(events)
    return [next(remaining) if item.event is not None else None for item in expected]


# --- the driver --------------------------------------------------------------------------------


class InputTimeout(Exception):
    """Raised by the SIGALRM handler inside the work on one input."""


@contextmanager
def hang_detector(seconds: float) -> Iterator[None]:
    def expire(signal_number: int, frame: FrameType | None) -> None:
        raise InputTimeout(f"one input took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass(slots=True)
class Finding:
    count: int
    first: str  # the first input that showed it, ready to replay


@dataclass(slots=True)
class Findings:
    """Problems by kind: how often, and the first input that showed each."""

    seed: int
    kinds: dict[str, Finding] = field(default_factory=dict)

    def add(self, error: Exception, index: int, description: str, data: bytes) -> None:
        if isinstance(error, AssertionError) and str(error):
            kind = str(error).splitlines()[0]
        else:
            where = traceback.extract_tb(error.__traceback__)[-1]
            kind = f"{type(error).__name__} at {os.path.basename(where.filename)}:{where.lineno} ({where.name})"
        if kind in self.kinds:
            self.kinds[kind].count += 1
            return
        shown = data.hex() if len(data) <= MAX_EXAMPLE_HEX_BYTES else data[:MAX_EXAMPLE_HEX_BYTES].hex() + "..."
        detail = "".join(traceback.format_exception(error)[-3:]).strip()
        self.kinds[kind] = Finding(
            1, f"fuzz_input({self.seed}, {index}) [{description}], {len(data)} bytes: {shown}\n    {detail}"
        )

    def report(self) -> str:
        lines = [f"fuzz seed {self.seed} (set OCS_FUZZ_SEED to replay another run):"]
        for kind, finding in sorted(self.kinds.items(), key=lambda item: -item[1].count):
            lines.append(f"- {finding.count} x {kind}\n  first: {finding.first}")
        return "\n".join(lines)


def test_fuzz_frames_through_codec_and_peer() -> None:
    findings = Findings(FUZZ_SEED)
    server = ServerUnderTest(DuplicateCache(capacity=4096))
    counts = {"unframeable": 0, "undecodable": 0, "decode failures": 0, "grammar failures": 0, "clean": 0}
    with hang_detector(INPUT_TIME_LIMIT_SECONDS):
        for index in range(FUZZ_INPUT_COUNT):
            description, data = fuzz_input(FUZZ_SEED, index)
            signal.setitimer(signal.ITIMER_REAL, INPUT_TIME_LIMIT_SECONDS)
            try:
                verdict = run_codec(data)
                _count(counts, verdict)
                run_peer(server, data, verdict)
            except Exception as error:  # every kind of problem is collected, then reported together
                findings.add(error, index, description, data)
                server.renew()  # its state is unknown now
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    print(f"fuzz seed {FUZZ_SEED}: {FUZZ_INPUT_COUNT} inputs, {counts}, {server.opened} peers opened")
    # The mutations must reach every outcome, or the run proves little.
    assert all(counts.values()), counts
    assert not findings.kinds, findings.report()


def _count(counts: dict[str, int], verdict: CodecVerdict) -> None:
    if verdict.unframeable:
        counts["unframeable"] += 1
    for frame_verdict in verdict.frames:
        if frame_verdict.decoded is None:
            counts["undecodable"] += 1
        elif frame_verdict.decoded.failures:
            counts["decode failures"] += 1
        elif frame_verdict.grammar:
            counts["grammar failures"] += 1
        else:
            counts["clean"] += 1


def test_fuzz_inputs_are_reproducible_from_seed_and_index() -> None:
    assert [fuzz_input(FUZZ_SEED, index) for index in range(50)] == [
        fuzz_input(FUZZ_SEED, index) for index in range(50)
    ]
    assert fuzz_input(FUZZ_SEED, 0) != fuzz_input(FUZZ_SEED + 1, 0)


def test_seed_corpus_is_valid() -> None:
    """The mutations start from frames the codec and the grammar accept as they are."""
    for name, frame in SEED_FRAMES:
        decoded = decode(frame)
        expected_failures = {
            "CCR-unknown-AVPs": [ResultCode.DIAMETER_AVP_UNSUPPORTED],  # the unknown AVP with M
            "CCA-5004": [ResultCode.DIAMETER_INVALID_AVP_LENGTH],  # the 3-byte AVP its Failed-AVP echoes
        }
        assert [f.result_code for f in decoded.failures] == expected_failures.get(name, []), name
        assert validate(decoded.message, APPLICATIONS) == [], name
        assert len(avp_spans(frame)) == len(list(_walk(decoded.message.avps))), name


def test_error_answer_to_a_request_at_the_size_limit_is_sent() -> None:
    """A request near MAX_MESSAGE_LENGTH whose long Session-Id is not valid UTF-8 (5004): the
    answer copies the Session-Id and echoes it again in Failed-AVP, so it is about twice the
    request. The peer must still answer or close, never raise from receive_data."""
    server = ServerUnderTest(DuplicateCache())
    frame = bytearray(encode(SEED_MESSAGES["CCR-at-the-limit"]))
    frame[40] = 0xFF  # inside the Session-Id payload
    events = server.peer.receive_data(bytes(frame), 1.0)
    assert [type(event) for event in events] in ([RequestRejected], [PeerClosed])
    for _, answer in _answers(server.peer.data_to_send()):
        assert answer.get("Result-Code") == ResultCode.DIAMETER_INVALID_AVP_VALUE


def test_error_answer_for_a_bad_avp_length_is_readable_by_our_decoder() -> None:
    """An MSCC whose length runs past the message, followed by more tiny AVPs than MAX_AVP_COUNT.
    The request decodes (the AVPs after a bad length cannot be delimited, so they are not
    counted) and is answered 5014. RFC 6733 section 7.5 asks Failed-AVP to carry the offending
    AVP's header with a minimal zero-filled payload (an empty one for Grouped); an answer that
    echoes everything after the header instead holds 2,100 AVPs, which our own decoder refuses."""
    server = ServerUnderTest(DuplicateCache())
    request_message = _ccr(5, "UPDATE_REQUEST")
    tail = raw_avp(99_999, 0x00, b"") * (MAX_AVP_COUNT + 52)
    bad_mscc = struct.pack(">II", 456, (0x40 << 24) | 0xFFFFF0)  # length far past the end
    frame = with_true_length(encode(request_message) + bad_mscc + tail)
    decoded = decode(frame)
    assert [f.result_code for f in decoded.failures] == [ResultCode.DIAMETER_INVALID_AVP_LENGTH]
    events = server.peer.receive_data(frame, 1.0)
    assert [type(event) for event in events] == [RequestRejected]
    ((answer_frame, answer),) = _answers(server.peer.data_to_send())  # raises if our decoder refuses it
    assert answer.get("Result-Code") == ResultCode.DIAMETER_INVALID_AVP_LENGTH
    failed = _failed_avp_payload(answer_frame)
    assert failed is not None and failed[:4] == (456).to_bytes(4, "big")
