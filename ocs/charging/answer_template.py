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
    as the codec writes it, and the packer of its value."""

    def __init__(self, name: str) -> None:
        value_format = _VALUE_FORMATS[DEFAULT_DICTIONARY.avp(name).type]
        encoded = encode_avp(avp(name, 0))
        self.header: bytes = encoded[: len(encoded) - struct.calcsize(value_format)]
        # The header as a string field and the value: one call and one append per AVP.
        self.packer = struct.Struct(f">{len(self.header)}s{value_format[1:]}")

    def append(self, out: bytearray, value: int) -> None:
        out += self.packer.pack(self.header, value)


class _GroupedAvp:
    """A Grouped AVP without a Vendor-ID: its header written first, its length filled in after
    its members."""

    def __init__(self, name: str) -> None:
        definition = DEFAULT_DICTIONARY.avp(name)
        if definition.vendor_id or definition.must_flags & _VENDOR_BIT:
            raise ValueError(f"{name} carries a Vendor-ID: not laid out by the template")
        self.code = definition.code
        self.flag_bits = (definition.must_flags & _SENT_AVP_FLAGS) << 24
        self.placeholder = encode_avp(avp(name, []))

    def close(self, out: bytearray, start: int) -> None:
        _AVP_HEADER.pack_into(out, start, self.code, self.flag_bits | (len(out) - start))


class _ServiceParts:
    """The prepared AVPs of one service's answer, in ``cca._service_avps``'s order."""

    def __init__(self) -> None:
        self.control = _GroupedAvp("Multiple-Services-Credit-Control")
        self.granted = _GroupedAvp("Granted-Service-Unit")
        self.time = _FixedAvp("CC-Time")
        self.octets = _FixedAvp("CC-Total-Octets")
        self.events = _FixedAvp("CC-Service-Specific-Units")
        self.service_identifier = _FixedAvp("Service-Identifier")
        self.rating_group = _FixedAvp("Rating-Group")
        self.validity_time = _FixedAvp("Validity-Time")
        self.result_code = _FixedAvp("Result-Code")
        self.time_threshold = _FixedAvp("Time-Quota-Threshold")
        self.volume_threshold = _FixedAvp("Volume-Quota-Threshold")
        self.unit_threshold = _FixedAvp("Unit-Quota-Threshold")
        self.quota_holding_time = _FixedAvp("Quota-Holding-Time")

    def append(self, out: bytearray, service: ServiceAnswer, *, with_result_code: bool) -> None:
        """The service's AVPs as ``cca._service_avps`` lists them (less a Final-Unit-Indication
        and a Tariff-Time-Change, which the caller has left to the general path)."""
        # Each field read once: ``ServiceAnswer`` is not a native class, so every read is a lookup.
        unit = service.unit
        if unit is None:
            self._append_ids(out, service)
            if with_result_code:
                self.result_code.append(out, int(service.result_code))
            return
        granted = service.granted_units
        start = len(out)
        out += self.granted.placeholder
        if unit is _SECONDS:
            self.time.append(out, granted)
            threshold = self.time_threshold
        elif unit is _OCTETS:
            self.octets.append(out, granted)
            threshold = self.volume_threshold
        else:
            self.events.append(out, granted)
            threshold = self.unit_threshold
        self.granted.close(out, start)
        self._append_ids(out, service)
        validity_seconds = service.validity_seconds
        if validity_seconds:
            self.validity_time.append(out, validity_seconds)
        if with_result_code:
            self.result_code.append(out, int(service.result_code))
        threshold_units = service.threshold_units
        if threshold_units:
            threshold.append(out, threshold_units)
        quota_holding_seconds = service.quota_holding_seconds
        if quota_holding_seconds:
            self.quota_holding_time.append(out, quota_holding_seconds)

    def _append_ids(self, out: bytearray, service: ServiceAnswer) -> None:
        service_identifier = service.service_identifier
        if service_identifier is not None:
            self.service_identifier.append(out, service_identifier)
        rating_group = service.rating_group
        if rating_group is not None:
            self.rating_group.append(out, rating_group)


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
                control = parts.control
                for service in services:
                    start = len(out)
                    out += control.placeholder
                    parts.append(out, service, with_result_code=True)
                    control.close(out, start)
            elif services:
                parts.append(out, services[0], with_result_code=False)
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
