"""The common Credit-Control-Answers written straight to bytes, from parts prepared once.

Theory of operation: ``ocs.charging.cca.credit_answer`` lays a CCA out as a ``Message`` of
``Avp`` objects, which the codec then encodes; for every CCR that cost the server more than the
rest of the answer's way to the socket. Most answers have one shape: the request's Session-Id,
the Result-Code, our Origin-Host, Origin-Realm and Auth-Application-Id, the request's
CC-Request-Type and CC-Request-Number, and per service a Multiple-Services-Credit-Control (or, in
single-service mode, its AVPs at command level, RFC 4006 section 5.1.2) of fixed-size integers:
Granted-Service-Unit, Service-Identifier, Rating-Group, Validity-Time, Result-Code, the quota
threshold, Quota-Holding-Time. ``AnswerTemplate`` encodes every constant part once, at start, from
the local identity and the dictionary (through the codec itself, so the bytes are the codec's);
per answer it appends the prepared headers and packs only the values, then fills in the lengths.

The rule it keeps: its bytes are exactly those ``encode(credit_answer(...))`` makes for the same
answer, in the same order (tests/ocs/charging/test_answer_template.py holds the two together).
Whatever it does not lay out returns ``None``, and the caller takes the general path: a
Final-Unit-Indication or a Tariff-Time-Change in a service, a request AVP echoed with a Vendor-ID
or a value of an unexpected type, a value out of its AVP's range (the general path's encoder then
raises the ``EncodeError`` it always raised), an answer over the message size limit.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from balance.types import Unit
from ocs.charging.cca import ServiceAnswer
from protocol.avp_types import AvpType
from protocol.capabilities import LocalIdentity
from protocol.codec import encode_avp
from protocol.constants import HEADER_LENGTH, MAX_MESSAGE_LENGTH, ApplicationId, CommandFlag
from protocol.dictionary import DEFAULT_DICTIONARY
from protocol.encoded import EncodedAnswer
from protocol.message import Avp, Message, avp

_HEADER: Final = struct.Struct(">IIIII")  # RFC 6733 section 3: version and length, flags and code, ids
_AVP_HEADER: Final = struct.Struct(">II")  # RFC 6733 section 4.1: code, flags and length
_UNSIGNED32_AVP: Final = struct.Struct(">III")  # an AVP header and its Unsigned32 value
_INTEGER32_AVP: Final = struct.Struct(">IIi")  # an AVP header and its Enumerated value
_PADDING: Final = (b"", b"\0\0\0", b"\0\0", b"\0")  # indexed by length % 4
_AVP_HEADER_LENGTH: Final = 8
_DIAMETER_VERSION_WORD: Final = 1 << 24
_SENT_AVP_FLAGS: Final = 0xE0  # V, M, P: what the codec keeps of an AVP's flags
_VENDOR_BIT: Final = 0x80
_PROXIABLE: Final = int(CommandFlag.PROXIABLE)  # answer_to copies only the P bit (RFC 6733 section 6.2)
_SENT_COMMAND_FLAGS: Final = 0xF0

_SESSION_ID: Final = 263  # RFC 6733 section 8.8
_CC_REQUEST_NUMBER: Final = 415  # RFC 4006 section 8.2, Unsigned32
_CC_REQUEST_TYPE: Final = 416  # RFC 4006 section 8.3, Enumerated

# The units as constants of this module: compiled, a class attribute of an Enum is a dictionary
# lookup and an attribute call on every read.
_SECONDS: Final = Unit.SECONDS
_OCTETS: Final = Unit.OCTETS

_VALUE_FORMATS: Final = {
    AvpType.UNSIGNED32: ">I",
    AvpType.INTEGER32: ">i",
    AvpType.ENUMERATED: ">i",
    AvpType.UNSIGNED64: ">Q",
    AvpType.INTEGER64: ">q",
}


class _FixedAvp:
    """An AVP of a fixed-size integer type with the flags its definition requires: its header
    as the codec writes it, its value's ``struct`` format, and its whole length."""

    def __init__(self, name: str) -> None:
        value_format = _VALUE_FORMATS[DEFAULT_DICTIONARY.avp(name).type]
        encoded = encode_avp(avp(name, 0))
        self.value_format = value_format[1:]
        self.length = len(encoded)
        self.header: bytes = encoded[: self.length - struct.calcsize(value_format)]
        # The header as a string field and the value: one call and one append per AVP.
        self.packer = struct.Struct(f">{len(self.header)}s{self.value_format}")

    def append(self, out: bytearray, value: int) -> None:
        out += self.packer.pack(self.header, value)


class _GroupedAvp:
    """A Grouped AVP without a Vendor-ID: its header for a length."""

    def __init__(self, name: str) -> None:
        definition = DEFAULT_DICTIONARY.avp(name)
        if definition.vendor_id or definition.must_flags & _VENDOR_BIT:
            raise ValueError(f"{name} carries a Vendor-ID: not laid out by the template")
        self.code = definition.code
        self.flag_bits = (definition.must_flags & _SENT_AVP_FLAGS) << 24

    def header(self, length: int) -> bytes:
        return _AVP_HEADER.pack(self.code, self.flag_bits | length)


# A service answer's shape: which members it has, as bits (``_ServiceParts``). Every member is
# of fixed size, so a shape has one length and its headers are constants.
_UNIT_BITS: Final = 3  # 0: no grant; 1, 2, 3: CC-Time, CC-Total-Octets, CC-Service-Specific-Units
_WITH_SERVICE_IDENTIFIER: Final = 4
_WITH_RATING_GROUP: Final = 8
_WITH_VALIDITY_TIME: Final = 16
_WITH_RESULT_CODE: Final = 32
_WITH_THRESHOLD: Final = 64
_WITH_QUOTA_HOLDING_TIME: Final = 128
_IN_CONTROL: Final = 256  # inside a Multiple-Services-Credit-Control (with its Result-Code)


class _Shape:
    """One layout of a service's answer: before each value the constant bytes that precede it
    (its header, and before the first the headers of the groups around it), one packer for all;
    ``empty``: the bytes of a shape without values."""

    def __init__(self, pieces: list[bytes], value_formats: list[str], empty: bytes) -> None:
        self.pieces = pieces
        fields = (f"{len(piece)}s{value_format}" for piece, value_format in zip(pieces, value_formats, strict=True))
        self.packer = struct.Struct(">" + "".join(fields))
        self.empty = empty


class _ServiceParts:
    """A service's answer in ``cca._service_avps``'s order, packed in one call by its shape."""

    def __init__(self) -> None:
        self.control = _GroupedAvp("Multiple-Services-Credit-Control")
        self.granted = _GroupedAvp("Granted-Service-Unit")
        self.grants = (_FixedAvp("CC-Time"), _FixedAvp("CC-Total-Octets"), _FixedAvp("CC-Service-Specific-Units"))
        self.service_identifier = _FixedAvp("Service-Identifier")
        self.rating_group = _FixedAvp("Rating-Group")
        self.validity_time = _FixedAvp("Validity-Time")
        self.result_code = _FixedAvp("Result-Code")
        self.thresholds = (
            _FixedAvp("Time-Quota-Threshold"),
            _FixedAvp("Volume-Quota-Threshold"),
            _FixedAvp("Unit-Quota-Threshold"),
        )
        self.quota_holding_time = _FixedAvp("Quota-Holding-Time")
        self.shapes: dict[int, _Shape] = {}  # made on first use: at most 512

    def append(self, out: bytearray, service: ServiceAnswer, *, in_control: bool) -> None:
        """The service's AVPs as ``cca._service_avps`` lists them (less a Final-Unit-Indication
        and a Tariff-Time-Change, which the caller has left to the general path); in a
        Multiple-Services-Credit-Control with the service's Result-Code, else without it."""
        values: list[int] = []
        shape = _IN_CONTROL | _WITH_RESULT_CODE if in_control else 0
        unit = service.unit
        if unit is not None:
            shape |= 1 if unit is _SECONDS else 2 if unit is _OCTETS else 3
            values.append(service.granted_units)
        service_identifier = service.service_identifier
        if service_identifier is not None:
            shape |= _WITH_SERVICE_IDENTIFIER
            values.append(service_identifier)
        rating_group = service.rating_group
        if rating_group is not None:
            shape |= _WITH_RATING_GROUP
            values.append(rating_group)
        if unit is not None and service.validity_seconds:
            shape |= _WITH_VALIDITY_TIME
            values.append(service.validity_seconds)
        if in_control:
            values.append(int(service.result_code))
        if unit is not None and service.threshold_units:
            shape |= _WITH_THRESHOLD
            values.append(service.threshold_units)
        if unit is not None and service.quota_holding_seconds:
            shape |= _WITH_QUOTA_HOLDING_TIME
            values.append(service.quota_holding_seconds)
        layout = self.shapes.get(shape)
        if layout is None:
            layout = self.shapes[shape] = self._shape(shape)
        if not values:
            out += layout.empty
            return
        pieces = layout.pieces
        arguments: list[object] = []
        for index in range(len(values)):
            arguments.append(pieces[index])
            arguments.append(values[index])
        out += layout.packer.pack(*arguments)

    def _shape(self, shape: int) -> _Shape:
        unit_index = (shape & _UNIT_BITS) - 1
        members: list[_FixedAvp] = []
        if unit_index >= 0:
            members.append(self.grants[unit_index])
        for bit, member in (
            (_WITH_SERVICE_IDENTIFIER, self.service_identifier),
            (_WITH_RATING_GROUP, self.rating_group),
            (_WITH_VALIDITY_TIME, self.validity_time),
            (_WITH_RESULT_CODE, self.result_code),
            (_WITH_THRESHOLD, self.thresholds[unit_index]),
            (_WITH_QUOTA_HOLDING_TIME, self.quota_holding_time),
        ):
            if shape & bit:
                members.append(member)
        pieces = [member.header for member in members]
        length = sum(member.length for member in members)
        if unit_index >= 0:
            pieces[0] = self.granted.header(_AVP_HEADER_LENGTH + members[0].length) + pieces[0]
            length += _AVP_HEADER_LENGTH
        head = self.control.header(_AVP_HEADER_LENGTH + length) if shape & _IN_CONTROL else b""
        if pieces:
            pieces[0] = head + pieces[0]
        return _Shape(pieces, [member.value_format for member in members], head)


class AnswerTemplate:
    """The CCAs of the common shape, encoded from parts made once from ``identity``."""

    def __init__(self, identity: LocalIdentity) -> None:
        origin = [*identity.origin_avps(), avp("Auth-Application-Id", int(ApplicationId.CREDIT_CONTROL))]
        self._origin = b"".join(encode_avp(item) for item in origin)
        self._result_code = _FixedAvp("Result-Code")
        self._services = _ServiceParts()

    def credit_answer(
        self,
        request: Message,
        result_code: int,
        services: Sequence[ServiceAnswer],
        *,
        multiple_services: bool,
    ) -> EncodedAnswer | None:
        """The bytes of ``encode(cca.credit_answer(request, identity, result_code, services,
        multiple_services=multiple_services))``, or None for an answer of another shape."""
        for service in services:
            if service.final_unit is not None or service.tariff_time_change is not None:
                return None
        out = bytearray(HEADER_LENGTH)
        try:
            if not self._head(out, request, result_code):
                return None
            parts = self._services
            if multiple_services:
                for service in services:
                    parts.append(out, service, in_control=True)
            elif services:
                parts.append(out, services[0], in_control=False)
        except struct.error:  # a value out of its AVP's range: the general path's encoder names it
            return None
        length = len(out)
        if length > MAX_MESSAGE_LENGTH:
            return None
        _HEADER.pack_into(
            out,
            0,
            _DIAMETER_VERSION_WORD | length,
            ((request.flags & _PROXIABLE & _SENT_COMMAND_FLAGS) << 24) | request.command_code,
            request.application_id,
            request.hop_by_hop,
            request.end_to_end,
        )
        return EncodedAnswer(bytes(out), request.hop_by_hop, result_code)

    def _head(self, out: bytearray, request: Message, result_code: int) -> bool:
        """Session-Id, Result-Code, Origin-Host, Origin-Realm, Auth-Application-Id, CC-Request-Type,
        CC-Request-Number (``cca._header_avps``); False if a request AVP is not of the usual form."""
        session: Avp | None = None
        request_type: Avp | None = None
        request_number: Avp | None = None
        for item in request.avps:  # the first of each, as Message.find takes
            if item.vendor_id:
                continue
            code = item.code
            if code == _SESSION_ID and session is None:
                session = item
            elif code == _CC_REQUEST_TYPE and request_type is None:
                request_type = item
            elif code == _CC_REQUEST_NUMBER and request_number is None:
                request_number = item
        if session is not None:
            value = session.value
            flags = session.flags & _SENT_AVP_FLAGS
            if not isinstance(value, str) or flags & _VENDOR_BIT:
                return False
            try:
                data = value.encode()
            except UnicodeEncodeError:
                return False
            length = _AVP_HEADER_LENGTH + len(data)
            out += _AVP_HEADER.pack(_SESSION_ID, (flags << 24) | length)
            out += data
            out += _PADDING[length & 3]
        self._result_code.append(out, result_code)
        out += self._origin
        if request_type is not None and not _echo(out, request_type, _INTEGER32_AVP):
            return False
        return request_number is None or _echo(out, request_number, _UNSIGNED32_AVP)


def _echo(out: bytearray, item: Avp, packer: struct.Struct) -> bool:
    """A 32-bit integer AVP of the request, with its own flags, as the codec re-encodes it."""
    value = item.value
    flags = item.flags & _SENT_AVP_FLAGS
    if not isinstance(value, int) or flags & _VENDOR_BIT:
        return False
    out += packer.pack(item.code, (flags << 24) | 12, value)
    return True
