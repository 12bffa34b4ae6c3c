"""Encode and decode Diameter messages (RFC 6733 sections 3 and 4).

Theory of operation: ``FrameReader`` cuts a byte stream into whole frames, judging each frame by
its 4-byte version/length word *before* reading its body, so a hostile length never makes us
buffer more than ``MAX_MESSAGE_LENGTH``. ``decode`` turns one frame into a ``Message`` plus a
list of ``Failure`` (problems as data: the caller answers with their Result-Code and Failed-AVP).
Only frames that cannot be delimited or that exceed the hard limits raise ``PeerError``: after
those the connection is closed. ``encode`` is the inverse; unknown AVPs round-trip byte-exact.

The decode loop is the hottest code of the server, so it is written flat: one ``struct`` call per
AVP header, the dictionary looked up once per AVP, no per-AVP objects besides the ``Avp``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from protocol.avp_types import AvpLengthError, AvpValueError
from protocol.constants import (
    AVP_HEADER_LENGTH,
    AVP_VENDOR_HEADER_LENGTH,
    DIAMETER_VERSION,
    HEADER_LENGTH,
    MAX_AVP_COUNT,
    MAX_MESSAGE_LENGTH,
    MAX_NESTING_DEPTH,
    AvpFlag,
    CommandFlag,
    ResultCode,
)
from protocol.dictionary import DEFAULT_DICTIONARY, AvpDefinition, AvpKey, Dictionary
from protocol.errors import (
    EncodeError,
    Failure,
    InvalidMessageLength,
    LimitExceeded,
    UnsupportedVersion,
)
from protocol.message import Avp, Message, Value

_HEADER = struct.Struct(">IIIII")
_TWO_WORDS = struct.Struct(">II")
_WORD = struct.Struct(">I")
_AVP_HEADER = struct.Struct(">II")
_AVP_VENDOR_HEADER = struct.Struct(">III")
_PROTECTED = int(AvpFlag.PROTECTED)
_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length % 4


@dataclass(slots=True)
class Decoded:
    message: Message
    failures: list[Failure]


def check_first_word(word: int) -> int:
    """Validate the version/length word of a header; return the message length."""
    version = word >> 24
    length = word & 0xFFFFFF
    if version != DIAMETER_VERSION:
        raise UnsupportedVersion(f"version {version}")
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


class _AvpDecoder:
    __slots__ = ("count", "definitions", "failures")

    def __init__(self, dictionary: Dictionary) -> None:
        self.definitions = dictionary.avps_by_key
        self.failures: list[Failure] = []
        self.count = 0

    def fail(self, result: ResultCode, buffer: bytes, offset: int, end: int, reason: str) -> None:
        """Record a failure whose Failed-AVP is the AVP at ``buffer[offset:end]`` as received."""
        failed: Avp | None = None
        if end - offset >= AVP_HEADER_LENGTH:
            code, flags_length = _AVP_HEADER.unpack_from(buffer, offset)
            flags = flags_length >> 24
            vendor_id = 0
            start = offset + AVP_HEADER_LENGTH
            if flags & 0x80 and end - offset >= AVP_VENDOR_HEADER_LENGTH:
                vendor_id = _WORD.unpack_from(buffer, start)[0]
                start += 4
            failed = Avp(code, flags if vendor_id else flags & 0x7F, vendor_id, bytes(buffer[start:end]))
        self.failures.append(Failure(result, failed, reason))

    def decode(self, buffer: bytes, offset: int, end: int, depth: int) -> list[Avp]:
        if depth > MAX_NESTING_DEPTH:
            raise LimitExceeded(f"Grouped AVPs nested deeper than {MAX_NESTING_DEPTH}")
        avps: list[Avp] = []
        definitions = self.definitions
        unpack_header = _AVP_HEADER.unpack_from
        while offset < end:
            if end - offset < AVP_HEADER_LENGTH:
                self.fail(ResultCode.DIAMETER_INVALID_AVP_LENGTH, buffer, offset, end, "truncated AVP header")
                break
            code, flags_length = unpack_header(buffer, offset)
            flags = flags_length >> 24
            length = flags_length & 0xFFFFFF
            if flags & 0x80:
                header_length = AVP_VENDOR_HEADER_LENGTH
                vendor_id = _WORD.unpack_from(buffer, offset + 8)[0] if end - offset >= 12 else 0
            else:
                header_length = AVP_HEADER_LENGTH
                vendor_id = 0
            avp_end = offset + length
            if length < header_length or avp_end > end:
                # The length cannot be trusted, so nothing after it can be delimited either.
                self.fail(
                    ResultCode.DIAMETER_INVALID_AVP_LENGTH,
                    buffer,
                    offset,
                    min(max(avp_end, offset + header_length), end),
                    f"AVP {code} length {length}",
                )
                break
            self.count += 1
            if self.count > MAX_AVP_COUNT:
                raise LimitExceeded(f"more than {MAX_AVP_COUNT} AVPs")
            definition = definitions.get((code, vendor_id))
            value: Value
            if definition is None:
                value = buffer[offset + header_length : avp_end]
                if flags & 0x40:
                    self.fail(
                        ResultCode.DIAMETER_AVP_UNSUPPORTED,
                        buffer,
                        offset,
                        avp_end,
                        f"unknown AVP {code} vendor {vendor_id} with M bit",
                    )
            elif definition.grouped_flag:
                value = self.decode(buffer, offset + header_length, avp_end, depth + 1)
            else:
                data = buffer[offset + header_length : avp_end]
                try:
                    value = definition.decode(data)  # type: ignore[assignment]
                except AvpLengthError as error:
                    value = data
                    self.fail(
                        ResultCode.DIAMETER_INVALID_AVP_LENGTH, buffer, offset, avp_end, f"{definition.name}: {error}"
                    )
                except AvpValueError as error:
                    value = data
                    self.fail(
                        ResultCode.DIAMETER_INVALID_AVP_VALUE, buffer, offset, avp_end, f"{definition.name}: {error}"
                    )
            if definition is not None and (flags & definition.must_flags) != definition.must_flags:
                self.fail(
                    ResultCode.DIAMETER_INVALID_AVP_BITS,
                    buffer,
                    offset,
                    avp_end,
                    f"{definition.name}: flags {flags:#04x} lack required {definition.must_flags:#04x}",
                )
            elif flags & _PROTECTED:
                # RFC 6733 section 4.1: the P bit is reserved for end-to-end security,
                # which was never specified; a sender MUST set it to zero.
                self.fail(ResultCode.DIAMETER_INVALID_AVP_BITS, buffer, offset, avp_end, f"AVP {code} has the P bit")
            avps.append(Avp(code, flags, vendor_id, value))
            offset = avp_end + ((4 - (length & 3)) & 3)
        return avps


def decode(frame: bytes, dictionary: Dictionary = DEFAULT_DICTIONARY) -> Decoded:
    """Decode one whole frame (as cut by ``FrameReader``).

    Raises ``PeerError`` only when the header itself is unusable or a hard limit is exceeded.
    """
    if len(frame) < HEADER_LENGTH:
        raise InvalidMessageLength(f"frame of {len(frame)} bytes")
    first, flags_code, application_id, hop_by_hop, end_to_end = _HEADER.unpack_from(frame)
    length = check_first_word(first)
    if length != len(frame):
        raise InvalidMessageLength(f"header says {length}, frame has {len(frame)}")
    flags = flags_code >> 24
    message = Message(flags_code & 0xFFFFFF, flags, application_id, hop_by_hop, end_to_end, [])
    decoder = _AvpDecoder(dictionary)
    message.avps = decoder.decode(frame, HEADER_LENGTH, length, 0)
    failures = decoder.failures
    if flags & CommandFlag.REQUEST and flags & CommandFlag.ERROR:
        # RFC 6733 section 3: the E bit MUST NOT be set in request messages.
        failures.insert(0, Failure(ResultCode.DIAMETER_INVALID_HDR_BITS, None, "E bit on a request"))
    return Decoded(message, failures)


def encode(message: Message, dictionary: Dictionary = DEFAULT_DICTIONARY) -> bytes:
    """Encode a message; raises ``EncodeError`` for a value that does not fit its AVP."""
    parts: list[bytes] = [b""]
    _encode_avps(message.avps, dictionary.avps_by_key, parts)
    body_length = sum(len(part) for part in parts)
    length = HEADER_LENGTH + body_length
    if length > MAX_MESSAGE_LENGTH:
        raise EncodeError(f"message of {length} bytes is over the limit {MAX_MESSAGE_LENGTH}")
    parts[0] = _HEADER.pack(
        (DIAMETER_VERSION << 24) | length,
        (message.flags << 24) | message.command_code,
        message.application_id,
        message.hop_by_hop,
        message.end_to_end,
    )
    return b"".join(parts)


def encode_avp(avp: Avp, dictionary: Dictionary = DEFAULT_DICTIONARY) -> bytes:
    parts: list[bytes] = []
    _encode_avps([avp], dictionary.avps_by_key, parts)
    return b"".join(parts)


def _encode_avps(avps: list[Avp], definitions: Mapping[AvpKey, AvpDefinition], parts: list[bytes]) -> None:
    lookup = definitions.get
    for item in avps:
        value = item.value
        if isinstance(value, bytes):
            data = value
        elif isinstance(value, list):
            children: list[bytes] = []
            _encode_avps(value, definitions, children)
            data = b"".join(children)
        else:
            definition = lookup((item.code, item.vendor_id))
            if definition is None:
                raise EncodeError(f"AVP {item.code}/{item.vendor_id} is not in the dictionary; give bytes")
            try:
                data = definition.encode(value)
            except (AvpValueError, TypeError, OverflowError, ValueError) as error:
                raise EncodeError(f"{definition.name}: {error}") from None
        flags = item.flags
        if item.vendor_id:
            length = AVP_VENDOR_HEADER_LENGTH + len(data)
            parts.append(_AVP_VENDOR_HEADER.pack(item.code, ((flags | 0x80) << 24) | length, item.vendor_id))
        else:
            length = AVP_HEADER_LENGTH + len(data)
            parts.append(_AVP_HEADER.pack(item.code, ((flags & 0x7F) << 24) | length))
        parts.append(data)
        parts.append(_PADDING[length & 3])
