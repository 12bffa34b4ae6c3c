"""AVP data formats of RFC 6733 sections 4.2 (basic) and 4.3 (derived), as pure functions.

Theory of operation: each type has one decoder ``bytes -> value`` and one encoder
``value -> bytes``. Decoders raise ``AvpLengthError`` when the payload has the wrong size for its
type (the caller answers 5014, DIAMETER_INVALID_AVP_LENGTH) and ``AvpValueError`` when the bytes
are the right size but not a valid value (5004, DIAMETER_INVALID_AVP_VALUE). Grouped AVPs are
decoded by the codec, which knows about nesting; here Grouped only names the type.

Python values: integers for Integer*/Unsigned*/Enumerated, float for Float*, bytes for
OctetString, str for UTF8String/DiameterIdentity/DiameterURI/IPFilterRule, ``datetime`` (UTC)
for Time, ``ipaddress`` objects (or ``OtherAddress``) for Address.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address


class AvpType(StrEnum):
    OCTET_STRING = "OctetString"
    INTEGER32 = "Integer32"
    INTEGER64 = "Integer64"
    UNSIGNED32 = "Unsigned32"
    UNSIGNED64 = "Unsigned64"
    FLOAT32 = "Float32"
    FLOAT64 = "Float64"
    GROUPED = "Grouped"
    ADDRESS = "Address"
    TIME = "Time"
    UTF8_STRING = "UTF8String"
    DIAMETER_IDENTITY = "DiameterIdentity"
    DIAMETER_URI = "DiameterURI"
    ENUMERATED = "Enumerated"
    IP_FILTER_RULE = "IPFilterRule"


@dataclass(frozen=True, slots=True)
class OtherAddress:
    """An Address whose family is neither IPv4 nor IPv6 (IANA address family numbers)."""

    family: int
    data: bytes


AddressValue = IPv4Address | IPv6Address | OtherAddress
# list[Any] stands for list[Avp] (Grouped); typed precisely in protocol.message.
AvpValue = int | float | bytes | str | datetime | AddressValue | list  # type: ignore[type-arg]


class AvpLengthError(ValueError):
    """Payload size does not fit the type (answer 5014)."""


class AvpValueError(ValueError):
    """Payload bytes are not a valid value of the type (answer 5004)."""


ADDRESS_FAMILY_IPV4 = 1  # IANA "Address Family Numbers"
ADDRESS_FAMILY_IPV6 = 2
NTP_EPOCH = datetime(1900, 1, 1, tzinfo=UTC)
# RFC 6733 section 4.3.1: Time wraps in 2036; values with the top bit clear are in NTP era 1
# (RFC 5905 section 6 / RFC 4330 section 3), which is how we read times after 7 Feb 2036.
_NTP_ERA_PIVOT = 0x80000000
_NTP_ERA_SECONDS = 1 << 32

_INT32 = struct.Struct(">i")
_INT64 = struct.Struct(">q")
_FLOAT32 = struct.Struct(">f")
_FLOAT64 = struct.Struct(">d")


def _fixed_int(size: int, signed: bool) -> tuple[Callable[[bytes], int], Callable[[object], bytes]]:
    low = -(1 << (size * 8 - 1)) if signed else 0
    high = (1 << (size * 8 - 1)) - 1 if signed else (1 << (size * 8)) - 1

    def decode(data: bytes) -> int:
        if len(data) != size:
            raise AvpLengthError(f"expected {size} bytes, got {len(data)}")
        return int.from_bytes(data, "big", signed=signed)

    def encode(value: object) -> bytes:
        if not isinstance(value, int) or not low <= value <= high:
            raise AvpValueError(f"{value!r} is not an integer in [{low}, {high}]")
        return value.to_bytes(size, "big", signed=signed)

    return decode, encode


decode_integer32, encode_integer32 = _fixed_int(4, True)
decode_integer64, encode_integer64 = _fixed_int(8, True)
decode_unsigned32, encode_unsigned32 = _fixed_int(4, False)
decode_unsigned64, encode_unsigned64 = _fixed_int(8, False)


def _real(value: object) -> float:
    if not isinstance(value, (int, float)):
        raise AvpValueError(f"a Float needs a number, got {type(value).__name__}")
    return value


def decode_float32(data: bytes) -> float:
    if len(data) != 4:
        raise AvpLengthError(f"expected 4 bytes, got {len(data)}")
    return float(_FLOAT32.unpack(data)[0])


def encode_float32(value: object) -> bytes:
    return _FLOAT32.pack(_real(value))


def decode_float64(data: bytes) -> float:
    if len(data) != 8:
        raise AvpLengthError(f"expected 8 bytes, got {len(data)}")
    return float(_FLOAT64.unpack(data)[0])


def encode_float64(value: object) -> bytes:
    return _FLOAT64.pack(_real(value))


def decode_octet_string(data: bytes) -> bytes:
    return data


def encode_octet_string(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise AvpValueError(f"OctetString needs bytes, got {type(value).__name__}")
    return bytes(value)


def decode_utf8_string(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise AvpValueError(f"invalid UTF-8: {error.reason}") from None


def encode_utf8_string(value: object) -> bytes:
    if not isinstance(value, str):
        raise AvpValueError(f"UTF8String needs str, got {type(value).__name__}")
    return value.encode("utf-8")


def decode_ascii_string(data: bytes) -> str:
    """DiameterIdentity, DiameterURI and IPFilterRule are ASCII (RFC 6733 sections 4.3.1, 4.3.2)."""
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise AvpValueError("not ASCII") from None


def encode_ascii_string(value: object) -> bytes:
    if not isinstance(value, str):
        raise AvpValueError(f"expected str, got {type(value).__name__}")
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise AvpValueError(f"{value!r} is not ASCII") from None


def decode_address(data: bytes) -> AddressValue:
    if len(data) < 2:
        raise AvpLengthError("Address shorter than its 2-byte family")
    family = int.from_bytes(data[:2], "big")
    body = data[2:]
    if family == ADDRESS_FAMILY_IPV4:
        if len(body) != 4:
            raise AvpLengthError(f"IPv4 address of {len(body)} bytes")
        return IPv4Address(body)
    if family == ADDRESS_FAMILY_IPV6:
        if len(body) != 16:
            raise AvpLengthError(f"IPv6 address of {len(body)} bytes")
        return IPv6Address(body)
    return OtherAddress(family, body)


def encode_address(value: object) -> bytes:
    if isinstance(value, IPv4Address):
        return ADDRESS_FAMILY_IPV4.to_bytes(2, "big") + value.packed
    if isinstance(value, IPv6Address):
        return ADDRESS_FAMILY_IPV6.to_bytes(2, "big") + value.packed
    if isinstance(value, OtherAddress):
        return value.family.to_bytes(2, "big") + value.data
    raise AvpValueError(f"Address needs an ipaddress object, got {type(value).__name__}")


def decode_time(data: bytes) -> datetime:
    seconds = decode_unsigned32(data)
    if seconds < _NTP_ERA_PIVOT:
        seconds += _NTP_ERA_SECONDS
    return NTP_EPOCH + timedelta(seconds=seconds)


def encode_time(value: object) -> bytes:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise AvpValueError("Time needs a timezone-aware datetime")
    seconds = int((value - NTP_EPOCH).total_seconds())
    # Decoding reads top-bit-clear values as era 1, so only [1968-01-20, 2104-02-26) round-trips.
    if not _NTP_ERA_PIVOT <= seconds < _NTP_ERA_PIVOT + _NTP_ERA_SECONDS:
        raise AvpValueError(f"{value.isoformat()} is outside 1968-01-20 .. 2104-02-26 (RFC 6733 section 4.3.1)")
    return (seconds % _NTP_ERA_SECONDS).to_bytes(4, "big")


# The smallest valid payload of each type, in bytes (0 for the rest: strings and Grouped). RFC 6733
# section 7.5 and 7.1.5: a Failed-AVP for a missing AVP, or for one whose length cannot be right,
# carries the AVP's header with a zero-filled payload of this size.
MINIMUM_PAYLOAD_SIZE: dict[AvpType, int] = {
    AvpType.INTEGER32: 4,
    AvpType.UNSIGNED32: 4,
    AvpType.ENUMERATED: 4,
    AvpType.TIME: 4,
    AvpType.FLOAT32: 4,
    AvpType.INTEGER64: 8,
    AvpType.UNSIGNED64: 8,
    AvpType.FLOAT64: 8,
    AvpType.ADDRESS: 6,  # a 2-byte family and an IPv4 address
}


def _grouped_placeholder(data: bytes) -> bytes:
    return data


Decoder = Callable[[bytes], object]
Encoder = Callable[[object], bytes]

DECODERS: dict[AvpType, Decoder] = {
    AvpType.OCTET_STRING: decode_octet_string,
    AvpType.INTEGER32: decode_integer32,
    AvpType.INTEGER64: decode_integer64,
    AvpType.UNSIGNED32: decode_unsigned32,
    AvpType.UNSIGNED64: decode_unsigned64,
    AvpType.FLOAT32: decode_float32,
    AvpType.FLOAT64: decode_float64,
    AvpType.GROUPED: _grouped_placeholder,
    AvpType.ADDRESS: decode_address,
    AvpType.TIME: decode_time,
    AvpType.UTF8_STRING: decode_utf8_string,
    AvpType.DIAMETER_IDENTITY: decode_ascii_string,
    AvpType.DIAMETER_URI: decode_ascii_string,
    AvpType.ENUMERATED: decode_integer32,
    AvpType.IP_FILTER_RULE: decode_ascii_string,
}

ENCODERS: dict[AvpType, Encoder] = {
    AvpType.OCTET_STRING: encode_octet_string,
    AvpType.INTEGER32: encode_integer32,
    AvpType.INTEGER64: encode_integer64,
    AvpType.UNSIGNED32: encode_unsigned32,
    AvpType.UNSIGNED64: encode_unsigned64,
    AvpType.FLOAT32: encode_float32,
    AvpType.FLOAT64: encode_float64,
    AvpType.ADDRESS: encode_address,
    AvpType.TIME: encode_time,
    AvpType.UTF8_STRING: encode_utf8_string,
    AvpType.DIAMETER_IDENTITY: encode_ascii_string,
    AvpType.DIAMETER_URI: encode_ascii_string,
    AvpType.ENUMERATED: encode_integer32,
    AvpType.IP_FILTER_RULE: encode_ascii_string,
}
