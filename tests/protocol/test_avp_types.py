"""Byte tables for every RFC 6733 AVP data format: value <-> payload bytes, and the errors."""

from __future__ import annotations

from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv6Address

import pytest

from protocol.avp_types import (
    DECODERS,
    ENCODERS,
    AvpLengthError,
    AvpType,
    AvpValueError,
    OtherAddress,
)

# (type, python value, payload bytes)
TABLE: list[tuple[AvpType, object, bytes]] = [
    (AvpType.OCTET_STRING, b"\x00\xffab", b"\x00\xffab"),
    (AvpType.OCTET_STRING, b"", b""),
    (AvpType.INTEGER32, -1, b"\xff\xff\xff\xff"),
    (AvpType.INTEGER32, 2**31 - 1, b"\x7f\xff\xff\xff"),
    (AvpType.INTEGER32, -(2**31), b"\x80\x00\x00\x00"),
    (AvpType.INTEGER64, -2, b"\xff" * 7 + b"\xfe"),
    (AvpType.INTEGER64, 2**63 - 1, b"\x7f" + b"\xff" * 7),
    (AvpType.UNSIGNED32, 0, b"\x00\x00\x00\x00"),
    (AvpType.UNSIGNED32, 2**32 - 1, b"\xff\xff\xff\xff"),
    (AvpType.UNSIGNED32, 272, b"\x00\x00\x01\x10"),
    (AvpType.UNSIGNED64, 2**64 - 1, b"\xff" * 8),
    (AvpType.UNSIGNED64, 10_000_000_000, (10_000_000_000).to_bytes(8, "big")),
    (AvpType.FLOAT32, 1.5, b"\x3f\xc0\x00\x00"),
    (AvpType.FLOAT64, -2.25, b"\xc0\x02\x00\x00\x00\x00\x00\x00"),
    (AvpType.ADDRESS, IPv4Address("192.0.2.1"), b"\x00\x01\xc0\x00\x02\x01"),
    (AvpType.ADDRESS, IPv6Address("2001:db8::1"), b"\x00\x02" + IPv6Address("2001:db8::1").packed),
    (AvpType.ADDRESS, OtherAddress(8, b"4930"), b"\x00\x08" + b"4930"),  # family 8: E.164
    # Time: NTP seconds since 1900 (RFC 6733 section 4.3.1); 2026-01-01 is 3976214400.
    (AvpType.TIME, datetime(2026, 1, 1, tzinfo=UTC), (3976214400).to_bytes(4, "big")),
    # after the 2036 wrap: era 1 (top bit clear)
    (AvpType.TIME, datetime(2040, 1, 1, tzinfo=UTC), (4417977600 - 2**32).to_bytes(4, "big")),
    (AvpType.UTF8_STRING, "Grüße", "Grüße".encode()),
    (AvpType.DIAMETER_IDENTITY, "ocs.example.net", b"ocs.example.net"),
    (AvpType.DIAMETER_URI, "aaa://ocs.example.net:3868;transport=tcp", b"aaa://ocs.example.net:3868;transport=tcp"),
    (AvpType.ENUMERATED, 4, b"\x00\x00\x00\x04"),
    (AvpType.IP_FILTER_RULE, "permit in ip from any to 10.0.0.1", b"permit in ip from any to 10.0.0.1"),
]


@pytest.mark.parametrize(("avp_type", "value", "payload"), TABLE)
def test_encode(avp_type: AvpType, value: object, payload: bytes) -> None:
    assert ENCODERS[avp_type](value) == payload


@pytest.mark.parametrize(("avp_type", "value", "payload"), TABLE)
def test_decode(avp_type: AvpType, value: object, payload: bytes) -> None:
    assert DECODERS[avp_type](payload) == value


@pytest.mark.parametrize(
    ("avp_type", "payload"),
    [
        (AvpType.INTEGER32, b"\x00\x00\x01"),
        (AvpType.UNSIGNED32, b"\x00" * 5),
        (AvpType.INTEGER64, b"\x00" * 4),
        (AvpType.UNSIGNED64, b""),
        (AvpType.FLOAT32, b"\x00" * 8),
        (AvpType.FLOAT64, b"\x00" * 4),
        (AvpType.TIME, b"\x00" * 3),
        (AvpType.ADDRESS, b"\x00"),
        (AvpType.ADDRESS, b"\x00\x01\x0a\x00\x00"),
        (AvpType.ADDRESS, b"\x00\x02" + b"\x00" * 4),
        (AvpType.ENUMERATED, b"\x01"),
    ],
)
def test_wrong_size_is_a_length_error(avp_type: AvpType, payload: bytes) -> None:
    with pytest.raises(AvpLengthError):
        DECODERS[avp_type](payload)


@pytest.mark.parametrize(
    ("avp_type", "payload"),
    [
        (AvpType.UTF8_STRING, b"\xff\xfe"),
        (AvpType.UTF8_STRING, b"\xc3"),
        (AvpType.DIAMETER_IDENTITY, "é".encode()),
        (AvpType.DIAMETER_URI, b"\x80"),
    ],
)
def test_bad_bytes_are_a_value_error(avp_type: AvpType, payload: bytes) -> None:
    with pytest.raises(AvpValueError):
        DECODERS[avp_type](payload)


@pytest.mark.parametrize(
    ("avp_type", "value"),
    [
        (AvpType.UNSIGNED32, -1),
        (AvpType.UNSIGNED32, 2**32),
        (AvpType.INTEGER32, 2**31),
        (AvpType.UNSIGNED64, -5),
        (AvpType.INTEGER64, 2**63),
        (AvpType.UNSIGNED32, "7"),
        (AvpType.OCTET_STRING, "text"),
        (AvpType.UTF8_STRING, b"bytes"),
        (AvpType.DIAMETER_IDENTITY, "höst"),
        (AvpType.TIME, datetime(2026, 1, 1)),  # naive
        (AvpType.TIME, datetime(1950, 1, 1, tzinfo=UTC)),  # before era 0's second half
        (AvpType.ADDRESS, "10.0.0.1"),
    ],
)
def test_unencodable_values_are_refused(avp_type: AvpType, value: object) -> None:
    with pytest.raises(AvpValueError):
        ENCODERS[avp_type](value)
