"""Encode and decode Diameter messages (RFC 6733 sections 3 and 4).

Theory of operation: ``FrameReader`` cuts a byte stream into whole frames, judging each frame by
its 4-byte length word *before* reading its body, so a hostile length never makes us
buffer more than ``MAX_MESSAGE_LENGTH``. ``decode`` turns one frame into a ``Message`` plus a
list of ``Failure`` (problems as data: the caller answers with their Result-Code and Failed-AVP).
Only frames that cannot be delimited or that exceed the hard limits raise ``PeerError``: after
those the connection is closed. A frame of another Diameter version is delimited by its length
like any other and decoded with a 5011 failure first, so a request of it can be answered.
``encode`` is the inverse; unknown AVPs round-trip byte-exact, and reserved flag bits are cleared.

Both directions run for every request, so they are written for CPython's interpreter rather than
for elegance; the rules that keep them fast:

- The dictionary is compiled once into flat tables keyed by one integer (``packed_key``: the
  AVP code, plus the Vendor-ID shifted above it) whose entries are small tuples: for decoding, a
  *kind* that selects an inline branch and the flag bits to check; for encoding, a ``struct``
  that packs the header and a fixed-size integer value in one call.
- Decoding reads each AVP with one ``struct`` call of four words (code, flags+length, then the
  Vendor-ID or the first value word, then one more word), so a 32 or 64-bit value needs no
  second call.
  The frame is copied once with 16 zero bytes behind it so that read never runs off the end; every
  AVP is still checked against the end of its own enclosing frame or Grouped AVP.
- Every problem leaves the fast loop for a helper that rebuilds the exact failure (RFC 6733
  section 7.5 Failed-AVP as received), so the common case pays nothing for reporting.
- Encoding writes into one ``bytearray``: a Grouped AVP reserves its header, encodes its members
  in place and fills the length in afterwards. Integers and strings take the inline path; other
  values go through the type's own encoder in ``avp_types``. If the inline path meets a value out
  of range, the message is encoded again by the checking path, which raises ``EncodeError``
  naming the AVP.
- An AVP carries the Vendor-ID field when it has a Vendor-ID or its V bit is set (RFC 6733
  section 4.1: 0 is a valid Vendor-ID), so a decoded AVP re-encodes byte for byte.

What the profile showed, on the Gy CCR of ``bench/codec.py`` (42 AVPs): the interpreter's cost
per AVP (header read, table lookup, recursion into Grouped AVPs, one ``Avp`` object) is most of
the time; IntFlag arithmetic, per-AVP tuple keys and attribute lookups were the rest, and are gone.

The same source also compiles with mypyc (opt-in, protocol/README.md "Compiled build"), about three
times faster. Compiled, the one ``struct`` call per AVP header becomes the largest cost (a tuple
and four boxed integers, unboxed again), so there the header is read byte by byte
(``_read_word``), which compiles to array reads; ``MYPYC_COMPILED`` chooses, once per call. There
only the words a value needs are read (none for a string or a Grouped AVP), and Time, which a CCR
carries as Event-Timestamp, has its inline branch instead of the type's decoder.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, cast

from protocol.avp_types import MINIMUM_PAYLOAD_SIZE, NTP_EPOCH, AvpLengthError, AvpType, AvpValueError
from protocol.constants import (
    AVP_HEADER_LENGTH,
    AVP_VENDOR_HEADER_LENGTH,
    DIAMETER_VERSION,
    HEADER_LENGTH,
    MAX_AVP_COUNT,
    MAX_MESSAGE_LENGTH,
    MAX_NESTING_DEPTH,
    ResultCode,
)
from protocol.dictionary import DEFAULT_DICTIONARY, AvpDefinition, Dictionary, packed_key
from protocol.errors import (
    EncodeError,
    Failure,
    InvalidMessageLength,
    LimitExceeded,
)
from protocol.message import Avp, Message, Value

_HEADER: Final = struct.Struct(">IIIII")
_WORD: Final = struct.Struct(">I")
_AVP_HEADER: Final = struct.Struct(">II")
_AVP_VENDOR_HEADER: Final = struct.Struct(">III")
_FOUR_WORDS: Final = struct.Struct(">IIII")
_READ_AHEAD: Final = bytes(16)  # _FOUR_WORDS read at the last AVP of a frame stays inside the copy
_PADDING: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length % 4
_AVP_PLACEHOLDER: Final = bytes(AVP_HEADER_LENGTH)
_AVP_VENDOR_PLACEHOLDER: Final = bytes(AVP_VENDOR_HEADER_LENGTH)

# Raw flag bits as plain ints: IntFlag arithmetic costs microseconds on these paths. ``Final``
# literals cost nothing in CPython and let a compiler (mypyc) inline them.
_VENDOR_BIT: Final = 0x80  # RFC 6733 section 4.1
_MANDATORY_BIT: Final = 0x40
_PROTECTED_BIT: Final = 0x20
_VENDOR_BIT_IN_WORD: Final = 0x80000000  # the V bit in the flags-and-length word
# What the encoder keeps of the flags it is given. RFC 6733 section 4.1: "The sender of the AVP
# MUST set 'R' (reserved) bits to 0"; section 3: the header's reserved bits "MUST be set to zero".
# This holds inside Failed-AVP too: section 7.5 echoes the offending AVP, but a receiver ignores
# reserved bits, so they are never what made an AVP offend, and clearing them hides nothing.
_SENT_AVP_FLAGS: Final = 0xE0  # V, M, P
_SENT_COMMAND_FLAGS: Final = 0xF0  # R, P, E, T
_REQUEST_AND_ERROR_BITS: Final = 0xA0  # RFC 6733 section 3: R and E
_SIGN_BIT_32: Final = 0x80000000
_WRAP_32: Final = 0x100000000
# RFC 6733 section 4.3.1: Time wraps in 2036; values with the top bit clear are in NTP era 1
# (as ``avp_types.decode_time`` reads them).
_NTP_ERA_PIVOT: Final = 0x80000000
# In ``Decoded.shape``: the end of a Grouped AVP's members (packed keys are never negative).
SHAPE_GROUP_END: Final = -1

# True when this module runs as a mypyc-compiled extension rather than from its .py file.
MYPYC_COMPILED: Final = not __file__.endswith(".py")

# Decoding kinds: which inline branch turns the payload into a value.
_UNSIGNED32: Final = 0
_INTEGER32: Final = 1  # Integer32 and Enumerated (RFC 6733 section 4.3.1)
_UTF8: Final = 2
_ASCII: Final = 3  # DiameterIdentity, DiameterURI, IPFilterRule
_GROUPED: Final = 4
_OCTETS: Final = 5
_UNSIGNED64: Final = 6
_CALL: Final = 7  # Integer64, Float32/64, Address: the avp_types decoder
_TIME: Final = 8

_KINDS: dict[AvpType, int] = {
    AvpType.UNSIGNED32: _UNSIGNED32,
    AvpType.INTEGER32: _INTEGER32,
    AvpType.ENUMERATED: _INTEGER32,
    AvpType.UTF8_STRING: _UTF8,
    AvpType.DIAMETER_IDENTITY: _ASCII,
    AvpType.DIAMETER_URI: _ASCII,
    AvpType.IP_FILTER_RULE: _ASCII,
    AvpType.GROUPED: _GROUPED,
    AvpType.OCTET_STRING: _OCTETS,
    AvpType.UNSIGNED64: _UNSIGNED64,
    AvpType.TIME: _TIME,
}
# The fixed-size integer types the encoder packs in one call together with the AVP header.
_FIXED_FORMATS: dict[AvpType, str] = {
    AvpType.UNSIGNED32: "I",
    AvpType.INTEGER32: "i",
    AvpType.ENUMERATED: "i",
    AvpType.UNSIGNED64: "Q",
    AvpType.INTEGER64: "q",
}

# (kind, must flags, the flags checked against them (the V bit, and P unless allowed), definition,
# and the packed key as an object, which ``Decoded.shape`` takes without boxing it per AVP)
_DecodeEntry = tuple[int, int, int, AvpDefinition, object]
# (kind, whole-AVP packer without and with Vendor-ID (None unless fixed-size), their lengths, definition)
_EncodeEntry = tuple[int, struct.Struct | None, int, struct.Struct | None, int, AvpDefinition]


@dataclass(frozen=True, slots=True)
class _Tables:
    decoders: dict[int, _DecodeEntry]
    encoders: dict[int, _EncodeEntry]


def _compile(dictionary: Dictionary) -> _Tables:
    decoders: dict[int, _DecodeEntry] = {}
    encoders: dict[int, _EncodeEntry] = {}
    for (code, vendor_id), definition in dictionary.avps_by_key.items():
        key = packed_key(code, vendor_id)
        kind = _KINDS.get(definition.type, _CALL)
        # A missing M bit on an AVP we understand is accepted: RFC 6733 section 4.1 calls such AVPs
        # informational, and network elements (and python-diameter) leave it off Origin-Host and
        # friends. Only the V bit is structural (it decides whether a Vendor-ID follows).
        must = definition.must_flags & _VENDOR_BIT
        # The P bit is checked only where the AVP's flag table does not allow it.
        checked = must if definition.may_flags & _PROTECTED_BIT else must | _PROTECTED_BIT
        decoders[key] = (kind, must, checked, definition, key)
        fixed_format = _FIXED_FORMATS.get(definition.type)
        if fixed_format is None:
            encoders[key] = (kind, None, 0, None, 0, definition)
        else:
            plain = struct.Struct(">II" + fixed_format)
            vendored = struct.Struct(">III" + fixed_format)
            encoders[key] = (kind, plain, plain.size, vendored, vendored.size, definition)
    return _Tables(decoders, encoders)


_DEFAULT_TABLES: Final = _compile(DEFAULT_DICTIONARY)
# Other dictionaries (tests, extensions) are compiled on first use and the last few kept; an
# entry holds its dictionary so that the id is not reused by another one while it is cached.
_COMPILED_KEPT: Final = 8
_compiled: dict[int, tuple[Dictionary, _Tables]] = {}


def _tables(dictionary: Dictionary) -> _Tables:
    if dictionary is DEFAULT_DICTIONARY:
        return _DEFAULT_TABLES
    found = _compiled.get(id(dictionary))
    if found is None:
        if len(_compiled) >= _COMPILED_KEPT:
            del _compiled[next(iter(_compiled))]
        found = _compiled[id(dictionary)] = (dictionary, _compile(dictionary))
    return found[1]


class Decoded:
    """What ``decode`` returns: the message, and the problems found in it (empty when none).

    ``shape`` is the message's AVP keys as the decoder met them, each Grouped AVP's members
    followed by ``SHAPE_GROUP_END``: all ``protocol.grammar.validate`` needs to recognise a
    message shaped like one it found clean before (None: not known, as for a message not
    decoded). Derived from the message, so not compared.

    A plain class, as ``Message`` is, behaving as ``@dataclass(slots=True)`` would."""

    __slots__ = ("failures", "message", "shape")
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, message: Message, failures: list[Failure], shape: tuple[int, ...] | None = None) -> None:
        self.message = message
        self.failures = failures
        self.shape = shape

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Decoded):
            return NotImplemented
        return self.message == other.message and self.failures == other.failures

    def __reduce__(self) -> tuple[type[Decoded], tuple[Message, list[Failure], tuple[int, ...] | None]]:
        return (Decoded, (self.message, self.failures, self.shape))

    def __repr__(self) -> str:
        return f"Decoded(message={self.message!r}, failures={self.failures!r})"


def check_first_word(word: int) -> int:
    """Validate the length in the version/length word of a header; return the message length.

    The version is not judged here: a frame of another version whose length is sound can still
    be delimited, and so answered (``decode`` reports it as 5011, RFC 6733 section 7.1.5)."""
    length = word & 0xFFFFFF
    if length < HEADER_LENGTH or length % 4:
        raise InvalidMessageLength(f"length {length}")
    if length > MAX_MESSAGE_LENGTH:
        raise InvalidMessageLength(f"length {length} over the limit {MAX_MESSAGE_LENGTH}")
    return length


class FrameReader:
    """Accumulates stream bytes and yields whole Diameter frames."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        available = len(buffer)
        while available - offset >= 4:
            length = check_first_word(_WORD.unpack_from(buffer, offset)[0])
            if available - offset < length:
                break
            frames.append(bytes(buffer[offset : offset + length]))
            offset += length
        if offset:
            del buffer[:offset]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)


# --- decoding ---------------------------------------------------------------------------------


def _received_avp(buffer: bytes, offset: int, end: int) -> Avp | None:
    """The AVP at ``buffer[offset:end]`` as received, for Failed-AVP (RFC 6733 section 7.5)."""
    if end - offset < AVP_HEADER_LENGTH:
        return None
    code, flags_length = _AVP_HEADER.unpack_from(buffer, offset)
    flags = flags_length >> 24
    if flags & _VENDOR_BIT and end - offset >= AVP_VENDOR_HEADER_LENGTH:
        vendor_id = _WORD.unpack_from(buffer, offset + AVP_HEADER_LENGTH)[0]
        return Avp(code, flags, vendor_id, bytes(buffer[offset + AVP_VENDOR_HEADER_LENGTH : end]))
    return Avp(code, flags & ~_VENDOR_BIT, 0, bytes(buffer[offset + AVP_HEADER_LENGTH : end]))


def _fail(failures: list[Failure], result: ResultCode, buffer: bytes, offset: int, end: int, reason: str) -> None:
    failures.append(Failure(result, _received_avp(buffer, offset, end), reason))


def _fail_delimiting(
    failures: list[Failure], buffer: bytes, offset: int, end: int, table: dict[int, _DecodeEntry]
) -> None:
    """The AVP at ``offset`` cannot be delimited: its header is cut short or its length is wrong.

    Nothing after it can be delimited either, so the caller stops reading this level. RFC 6733
    section 7.1.5: Failed-AVP then carries the AVP's header with a zero-filled payload of the
    minimum size for its type (empty for Grouped or unknown AVPs), not whatever bytes follow,
    which could hold more AVPs than an answer may carry. A header cut short has no AVP to show.
    """
    if end - offset < AVP_HEADER_LENGTH:
        failures.append(Failure(ResultCode.DIAMETER_INVALID_AVP_LENGTH, None, "truncated AVP header"))
        return
    code, flags_length = _AVP_HEADER.unpack_from(buffer, offset)
    flags = flags_length >> 24
    vendor_id = 0
    if flags & _VENDOR_BIT and end - offset >= AVP_VENDOR_HEADER_LENGTH:
        vendor_id = _WORD.unpack_from(buffer, offset + AVP_HEADER_LENGTH)[0]
    entry = table.get(packed_key(code, vendor_id))
    size = 0 if entry is None else MINIMUM_PAYLOAD_SIZE.get(entry[3].type, 0)
    reason = f"AVP {code} length {flags_length & 0xFFFFFF}"
    failures.append(Failure(ResultCode.DIAMETER_INVALID_AVP_LENGTH, Avp(code, flags, vendor_id, bytes(size)), reason))


def _decode_checked(
    failures: list[Failure], definition: AvpDefinition, buffer: bytes, offset: int, start: int, end: int
) -> Value:
    """Decode with the type's own decoder: the types without an inline branch, and payloads the
    inline branch refused. A failure is recorded (5014 wrong size, 5004 bad bytes) and the value
    stays the raw payload, to be echoed in Failed-AVP (RFC 6733 section 7.5)."""
    data = buffer[start:end]
    # A name per handler: mypyc, should it compile this module, mistypes one name shared by two.
    try:
        return definition.decode(data)  # type: ignore[return-value]
    except AvpLengthError as length_error:
        _fail(
            failures, ResultCode.DIAMETER_INVALID_AVP_LENGTH, buffer, offset, end, f"{definition.name}: {length_error}"
        )
    except AvpValueError as value_error:
        _fail(failures, ResultCode.DIAMETER_INVALID_AVP_VALUE, buffer, offset, end, f"{definition.name}: {value_error}")
    return data


def _fail_flags(
    failures: list[Failure], definition: AvpDefinition | None, flags: int, buffer: bytes, offset: int, end: int
) -> None:
    code = _AVP_HEADER.unpack_from(buffer, offset)[0]
    if definition is None:
        if flags & _MANDATORY_BIT:
            vendor_id = _WORD.unpack_from(buffer, offset + 8)[0] if flags & _VENDOR_BIT else 0
            reason = f"unknown AVP {code} vendor {vendor_id} with M bit"
            _fail(failures, ResultCode.DIAMETER_AVP_UNSUPPORTED, buffer, offset, end, reason)
    elif flags & definition.must_flags & _VENDOR_BIT != definition.must_flags & _VENDOR_BIT:
        reason = f"{definition.name}: flags {flags:#04x} lack the V bit"
        _fail(failures, ResultCode.DIAMETER_INVALID_AVP_BITS, buffer, offset, end, reason)
        return
    if flags & _PROTECTED_BIT and (definition is None or not definition.may_flags & _PROTECTED_BIT):
        # RFC 6733 section 4.1: the P bit is reserved for an end-to-end security that was never
        # specified and SHOULD be 0. Where an AVP's flag table puts P in the MAY column (RFC 4006
        # section 8, TS 32.299 table 7.2: the dictionary's "may") it is accepted; elsewhere, and on
        # AVPs we do not know, it is a bit inconsistent with the definition (section 7.1.3, 3009).
        _fail(failures, ResultCode.DIAMETER_INVALID_AVP_BITS, buffer, offset, end, f"AVP {code} has the P bit")


def _read_word(buffer: bytes, offset: int) -> int:
    """The big-endian 32-bit word at ``offset``, as ``_WORD`` reads it: the compiled build's header
    read (no allocation there; interpreted, four of these cost several times one ``struct`` call)."""
    return (buffer[offset] << 24) | (buffer[offset + 1] << 16) | (buffer[offset + 2] << 8) | buffer[offset + 3]


def _decode_avps(
    buffer: bytes,
    offset: int,
    end: int,
    depth: int,
    table: dict[int, _DecodeEntry],
    failures: list[Failure],
    counter: list[int] | None,
    shape: list[object],
) -> list[Avp]:
    """The AVPs in ``buffer[offset:end]``; ``counter`` totals them when the frame is large
    enough to hold more than ``MAX_AVP_COUNT`` (checked per level: the frame size bounds the work).
    ``shape`` gets each AVP's packed key, and after a Grouped AVP's members ``SHAPE_GROUP_END``.

    Longer than a function should be, on purpose: a helper call per AVP would cost about as
    much as everything else the loop does for it; only the failure paths are split out."""
    if depth > MAX_NESTING_DEPTH:
        raise LimitExceeded(f"Grouped AVPs nested deeper than {MAX_NESTING_DEPTH}")
    avps: list[Avp] = []
    # Declared for a compiler (mypyc), which then keeps them as machine integers.
    code: int
    key: int
    flags_length: int
    word: int
    next_word: int
    value: Value
    compiled = MYPYC_COMPILED
    while offset < end:
        # Code, flags and length, then the Vendor-ID or the payload's first word, then one more;
        # compiled, only the header here, and the payload's words (-1: not read) by the branches
        # that take them.
        if compiled:
            code = _read_word(buffer, offset)
            flags_length = _read_word(buffer, offset + 4)
            word = -1
            next_word = -1
        else:
            code, flags_length, word, next_word = _FOUR_WORDS.unpack_from(buffer, offset)
        length = flags_length & 0xFFFFFF
        avp_end = offset + length
        if flags_length < _VENDOR_BIT_IN_WORD:
            # With fewer than 8 bytes left, any length >= 8 points past ``end``: caught here too.
            if length < AVP_HEADER_LENGTH or avp_end > end:
                _fail_delimiting(failures, buffer, offset, end, table)
                break
            vendor_id = 0
            start = offset + AVP_HEADER_LENGTH
            key = code
            entry = table.get(code)
        else:
            if length < AVP_VENDOR_HEADER_LENGTH or avp_end > end:
                _fail_delimiting(failures, buffer, offset, end, table)
                break
            vendor_id = _read_word(buffer, offset + AVP_HEADER_LENGTH) if compiled else word
            word = next_word  # -1 compiled
            next_word = -1  # the payload's second word was not read
            start = offset + AVP_VENDOR_HEADER_LENGTH
            key = (vendor_id << 32) | code
            entry = table.get(key)
        flags = flags_length >> 24
        if entry is None:
            shape.append(key)
            value = buffer[start:avp_end]
            if flags & 0x60:  # M or P bit on an AVP we do not know
                _fail_flags(failures, None, flags, buffer, offset, avp_end)
        else:
            kind, must, checked, definition, boxed_key = entry
            shape.append(boxed_key)
            if kind == _UNSIGNED32:
                if avp_end - start == 4:
                    value = word if word >= 0 else _read_word(buffer, start)
                else:
                    value = _decode_checked(failures, definition, buffer, offset, start, avp_end)
            elif kind == _INTEGER32:
                if avp_end - start == 4:
                    if word < 0:
                        word = _read_word(buffer, start)
                    value = word - _WRAP_32 if word & _SIGN_BIT_32 else word
                else:
                    value = _decode_checked(failures, definition, buffer, offset, start, avp_end)
            elif kind == _GROUPED:
                value = _decode_avps(buffer, start, avp_end, depth + 1, table, failures, counter, shape)
                shape.append(SHAPE_GROUP_END)
            elif kind == _UTF8:
                try:
                    value = buffer[start:avp_end].decode()
                except UnicodeDecodeError:
                    value = _decode_checked(failures, definition, buffer, offset, start, avp_end)
            elif kind == _UNSIGNED64 and avp_end - start == 8:
                if word < 0:
                    word = _read_word(buffer, start)
                if next_word < 0:
                    next_word = _read_word(buffer, start + 4)
                value = (word << 32) | next_word
            elif kind == _TIME and avp_end - start == 4:
                if word < 0:
                    word = _read_word(buffer, start)
                value = NTP_EPOCH + timedelta(seconds=word if word >= _NTP_ERA_PIVOT else word + _WRAP_32)
            elif kind == _ASCII:
                try:
                    value = buffer[start:avp_end].decode("ascii")
                except UnicodeDecodeError:
                    value = _decode_checked(failures, definition, buffer, offset, start, avp_end)
            elif kind == _OCTETS:
                value = buffer[start:avp_end]
            else:
                value = _decode_checked(failures, definition, buffer, offset, start, avp_end)
            if flags & checked != must:
                _fail_flags(failures, definition, flags, buffer, offset, avp_end)
        avps.append(Avp(code, flags, vendor_id, value))
        offset = avp_end + (-length & 3)
    if counter is not None:
        counter[0] += len(avps)
        if counter[0] > MAX_AVP_COUNT:
            raise LimitExceeded(f"more than {MAX_AVP_COUNT} AVPs")
    return avps


def decode(frame: bytes, dictionary: Dictionary = DEFAULT_DICTIONARY) -> Decoded:
    """Decode one whole frame (as cut by ``FrameReader``).

    Raises ``PeerError`` only when the header itself is unusable or a hard limit is exceeded.
    """
    size = len(frame)
    if size < HEADER_LENGTH:
        raise InvalidMessageLength(f"frame of {size} bytes")
    first, flags_code, application_id, hop_by_hop, end_to_end = _HEADER.unpack_from(frame)
    length = check_first_word(first)
    if length != size:
        raise InvalidMessageLength(f"header says {length}, frame has {size}")
    buffer = (frame if frame.__class__ is bytes else bytes(frame)) + _READ_AHEAD
    # Every AVP owns at least its 8 header bytes, so a small frame cannot exceed the count.
    counter = [0] if (length - HEADER_LENGTH) // AVP_HEADER_LENGTH > MAX_AVP_COUNT else None
    failures: list[Failure] = []
    table = _DEFAULT_TABLES.decoders if dictionary is DEFAULT_DICTIONARY else _tables(dictionary).decoders
    shape: list[object] = []  # packed keys (ints), some of them as the table holds them
    avps = _decode_avps(buffer, HEADER_LENGTH, length, 0, table, failures, counter, shape)
    flags = flags_code >> 24
    if flags & _REQUEST_AND_ERROR_BITS == _REQUEST_AND_ERROR_BITS:
        # RFC 6733 section 3: the E bit MUST NOT be set in request messages.
        failures.insert(0, Failure(ResultCode.DIAMETER_INVALID_HDR_BITS, None, "E bit on a request"))
    version = first >> 24
    if version != DIAMETER_VERSION:
        # RFC 6733 section 7.1.5, DIAMETER_UNSUPPORTED_VERSION: "a request was received, whose
        # version number is unsupported". The header is otherwise readable (its length delimited
        # the frame), so the answer can carry the identifiers; the body was read as version 1
        # only to echo the Session-Id, and this failure comes first: it is the one answered.
        failures.insert(0, Failure(ResultCode.DIAMETER_UNSUPPORTED_VERSION, None, f"version {version}"))
    message = Message(flags_code & 0xFFFFFF, flags, application_id, hop_by_hop, end_to_end, avps)
    return Decoded(message, failures, cast("tuple[int, ...]", tuple(shape)))


# --- encoding ---------------------------------------------------------------------------------


def encode(message: Message, dictionary: Dictionary = DEFAULT_DICTIONARY) -> bytes:
    """Encode a message; raises ``EncodeError`` for a value that does not fit its AVP."""
    out = _encode_body(message.avps, dictionary, bytearray(HEADER_LENGTH))
    length = len(out)
    if length > MAX_MESSAGE_LENGTH:
        raise EncodeError(f"message of {length} bytes is over the limit {MAX_MESSAGE_LENGTH}")
    _HEADER.pack_into(
        out,
        0,
        (DIAMETER_VERSION << 24) | length,
        ((message.flags & _SENT_COMMAND_FLAGS) << 24) | message.command_code,
        message.application_id,
        message.hop_by_hop,
        message.end_to_end,
    )
    return bytes(out)


def encode_avp(avp: Avp, dictionary: Dictionary = DEFAULT_DICTIONARY) -> bytes:
    return bytes(_encode_body([avp], dictionary, bytearray()))


class _Unusual(Exception):
    """Raised by the inline encoder for what only the checking path handles."""


def _encode_body(avps: list[Avp], dictionary: Dictionary, out: bytearray) -> bytearray:
    table = _DEFAULT_TABLES.encoders if dictionary is DEFAULT_DICTIONARY else _tables(dictionary).encoders
    prefix = len(out)
    try:
        _encode_avps(avps, table, out)
    except (struct.error, UnicodeEncodeError, _Unusual):
        # A value out of its type's range, or one the inline path does not take: encode again
        # through the checking path, which takes every value or names the AVP in its EncodeError.
        del out[prefix:]
        _encode_avps_checked(avps, table, out)
    return out


def _encode_avps(avps: list[Avp], table: dict[int, _EncodeEntry], out: bytearray) -> None:
    for item in avps:
        value = item.value
        value_class = value.__class__
        code = item.code
        vendor_id = item.vendor_id
        flags = item.flags & _SENT_AVP_FLAGS
        # RFC 6733 section 4.1: the V bit says a Vendor-ID field follows; 0 is a valid Vendor-ID.
        vendor_field = vendor_id or flags & _VENDOR_BIT
        if value_class is list:
            start = len(out)
            if vendor_field:
                out += _AVP_VENDOR_PLACEHOLDER
                _encode_avps(value, table, out)  # type: ignore[arg-type]
                word = ((flags | _VENDOR_BIT) << 24) | (len(out) - start)
                _AVP_VENDOR_HEADER.pack_into(out, start, code, word, vendor_id)
            else:
                out += _AVP_PLACEHOLDER
                _encode_avps(value, table, out)  # type: ignore[arg-type]
                _AVP_HEADER.pack_into(out, start, code, (flags << 24) | (len(out) - start))
            continue  # members are padded, so the group's length is a multiple of 4
        if value_class is bytes:
            data: bytes = value  # type: ignore[assignment]
        else:
            entry = table.get((vendor_id << 32) | code)
            if entry is None:
                raise _Unusual  # not in the dictionary: only bytes (or a subclass) can be sent
            kind, plain, plain_length, vendored, vendored_length, definition = entry
            if plain is not None and (value_class is int or isinstance(value, int)):
                # Header and a 4 or 8 byte payload (no padding) in one call.
                if vendor_field:
                    word = ((flags | _VENDOR_BIT) << 24) | vendored_length
                    out += vendored.pack(code, word, vendor_id, value)  # type: ignore[union-attr]
                else:
                    out += plain.pack(code, (flags << 24) | plain_length, value)
                continue
            if kind == _UTF8 and value_class is str:
                data = value.encode()  # type: ignore[union-attr]
            elif kind == _ASCII and value_class is str:
                data = value.encode("ascii")  # type: ignore[union-attr]
            elif isinstance(value, (bytes, list)):
                raise _Unusual  # a subclass: payload bytes or Grouped members, as for the exact types
            else:
                data = _encode_value(definition, value)
        if vendor_field:
            length = AVP_VENDOR_HEADER_LENGTH + len(data)
            out += _AVP_VENDOR_HEADER.pack(code, ((flags | _VENDOR_BIT) << 24) | length, vendor_id)
        else:
            length = AVP_HEADER_LENGTH + len(data)
            out += _AVP_HEADER.pack(code, (flags << 24) | length)
        out += data
        if length & 3:
            out += _PADDING[length & 3]


def _encode_value(definition: AvpDefinition, value: Value) -> bytes:
    try:
        return definition.encode(value)
    except (AvpValueError, TypeError, OverflowError, ValueError) as error:
        raise EncodeError(f"{definition.name}: {error}") from None


def _encode_avps_checked(avps: list[Avp], table: dict[int, _EncodeEntry], out: bytearray) -> None:
    """The plain path: every value through its type's checking encoder (errors name the AVP)."""
    for item in avps:
        value = item.value
        start = len(out)
        flags = item.flags & _SENT_AVP_FLAGS
        vendor_field = item.vendor_id or flags & _VENDOR_BIT
        out += _AVP_VENDOR_PLACEHOLDER if vendor_field else _AVP_PLACEHOLDER
        if isinstance(value, list):
            _encode_avps_checked(value, table, out)
        elif isinstance(value, bytes):
            out += value
        else:
            entry = table.get(packed_key(item.code, item.vendor_id))
            if entry is None:
                raise EncodeError(f"AVP {item.code}/{item.vendor_id} is not in the dictionary; give bytes")
            out += _encode_value(entry[5], value)
        length = len(out) - start
        try:
            if vendor_field:
                word = ((flags | _VENDOR_BIT) << 24) | length
                _AVP_VENDOR_HEADER.pack_into(out, start, item.code, word, item.vendor_id)
            else:
                _AVP_HEADER.pack_into(out, start, item.code, (flags << 24) | length)
        except struct.error as error:
            raise EncodeError(f"AVP {item.code}/{item.vendor_id} header: {error}") from None
        out += _PADDING[length & 3]
