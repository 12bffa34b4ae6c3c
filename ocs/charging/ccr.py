"""Reading a Credit-Control-Request into plain values (RFC 4006 section 3.1, TS 32.299 clause 6.4).

Theory of operation: the protocol layer has already checked the CCR against its grammar, so every
mandatory AVP is present and every value has its type. What is left is meaning: which request
type, which subscriber identities, which services with which requested and used units (one per
Multiple-Services-Credit-Control, or the single-service AVPs at command level when
Multiple-Services-Indicator is absent, RFC 4006 section 5.1.2), and for an EVENT which action.
Contradictions the grammar cannot see (a Rating-Group twice, an EVENT without an action it can
be, a CC-Request-Number beyond 2^32) come back as ``CcrProblem`` with the AVP to name in
Failed-AVP.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum
from typing import Final

from balance.directory import Identity, IdentityKind
from balance.value_type import value_type
from protocol.constants import ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY, packed_key
from protocol.message import Avp, Message


class RequestType(IntEnum):
    """CC-Request-Type, RFC 4006 section 8.3."""

    INITIAL = 1
    UPDATE = 2
    TERMINATION = 3
    EVENT = 4


class RequestedAction(IntEnum):
    """Requested-Action, RFC 4006 section 8.41."""

    DIRECT_DEBITING = 0
    REFUND_ACCOUNT = 1
    CHECK_BALANCE = 2
    PRICE_ENQUIRY = 3


# RFC 4006 section 8.47 Subscription-Id-Type values.
_IDENTITY_KINDS = {
    0: IdentityKind.E164,
    1: IdentityKind.IMSI,
    2: IdentityKind.SIP_URI,
    3: IdentityKind.NAI,
    4: IdentityKind.PRIVATE,
}
# TS 32.299 clause 7.2.181 Reporting-Reason FINAL: the service is over for this rating group.
REPORTING_REASON_FINAL = 2


@value_type
class Units:
    """Service units as RFC 4006 section 8.17-8.21 carry them (None: absent)."""

    time_seconds: int | None = None
    total_octets: int | None = None
    input_octets: int | None = None
    output_octets: int | None = None
    service_specific: int | None = None
    money_micros: int | None = None  # CC-Money, converted at the edge
    # Tariff-Change-Usage (RFC 4006 section 8.27), in a Used-Service-Unit: were these units used
    # before (0), after (1) the grant's Tariff-Time-Change, or straddling it (2)? None: absent,
    # "no tariff change has occurred" by the client's account.
    tariff_change_usage: int | None = None

    @property
    def counted(self) -> bool:
        """Whether any unit AVP was present: an empty Requested-Service-Unit leaves the amount
        to the server (RFC 4006 section 8.18), an empty Used-Service-Unit reports nothing."""
        return any(
            value is not None
            for value in (
                self.time_seconds,
                self.total_octets,
                self.input_octets,
                self.output_octets,
                self.service_specific,
                self.money_micros,
            )
        )

    @property
    def octets(self) -> int | None:
        if self.total_octets is not None:
            return self.total_octets
        if self.input_octets is None and self.output_octets is None:
            return None
        return (self.input_octets or 0) + (self.output_octets or 0)


@value_type
class ServiceRequest:
    """One MSCC (or the single-service AVPs): requested units (None: no RSU) and used units."""

    rating_group: int | None
    service_identifier: int | None
    requested: Units | None
    used: tuple[Units, ...]
    reporting_reasons: tuple[int, ...]
    avp: Avp | None  # the MSCC as received, for Failed-AVP

    @property
    def final(self) -> bool:
        return REPORTING_REASON_FINAL in self.reporting_reasons


@value_type
class CreditRequest:
    session_id: str
    origin_host: str
    origin_realm: str
    destination_realm: str
    request_type: RequestType
    request_number: int
    service_context: str
    identities: tuple[Identity, ...]
    multiple_services: bool
    services: tuple[ServiceRequest, ...]
    requested_action: RequestedAction | None
    event_time: datetime | None
    called_party: str | None


@value_type
class CcrProblem:
    result_code: ResultCode
    failed_avp: Avp | None
    reason: str


# The AVPs read below as packed keys (``protocol.dictionary.packed_key``: the code, the Vendor-ID
# above it), looked up once here, not by name per request; integers compare without a tuple.
def _key(name: str) -> int:
    return packed_key(*DEFAULT_DICTIONARY.key(name))


_SESSION_ID: Final = _key("Session-Id")
_ORIGIN_HOST: Final = _key("Origin-Host")
_ORIGIN_REALM: Final = _key("Origin-Realm")
_DESTINATION_REALM: Final = _key("Destination-Realm")
_SERVICE_CONTEXT_ID: Final = _key("Service-Context-Id")
_CC_REQUEST_TYPE: Final = _key("CC-Request-Type")
_CC_REQUEST_NUMBER: Final = _key("CC-Request-Number")
_SUBSCRIPTION_ID: Final = _key("Subscription-Id")
_SUBSCRIPTION_ID_TYPE: Final = _key("Subscription-Id-Type")
_SUBSCRIPTION_ID_DATA: Final = _key("Subscription-Id-Data")
_REQUESTED_ACTION: Final = _key("Requested-Action")
_MULTIPLE_SERVICES_INDICATOR: Final = _key("Multiple-Services-Indicator")
_MULTIPLE_SERVICES_CREDIT_CONTROL: Final = _key("Multiple-Services-Credit-Control")
_REQUESTED_SERVICE_UNIT: Final = _key("Requested-Service-Unit")
_USED_SERVICE_UNIT: Final = _key("Used-Service-Unit")
_REPORTING_REASON: Final = _key("Reporting-Reason")
_RATING_GROUP: Final = _key("Rating-Group")
_SERVICE_IDENTIFIER: Final = _key("Service-Identifier")
_EVENT_TIMESTAMP: Final = _key("Event-Timestamp")
_SERVICE_INFORMATION: Final = _key("Service-Information")
_IMS_INFORMATION: Final = _key("IMS-Information")
_CALLED_PARTY_ADDRESS: Final = _key("Called-Party-Address")
_SMS_INFORMATION: Final = _key("SMS-Information")
_RECIPIENT_INFO: Final = _key("Recipient-Info")
_RECIPIENT_ADDRESS: Final = _key("Recipient-Address")
_ADDRESS_DATA: Final = _key("Address-Data")
_CC_TIME: Final = _key("CC-Time")
_CC_TOTAL_OCTETS: Final = _key("CC-Total-Octets")
_CC_INPUT_OCTETS: Final = _key("CC-Input-Octets")
_CC_OUTPUT_OCTETS: Final = _key("CC-Output-Octets")
_CC_SERVICE_SPECIFIC_UNITS: Final = _key("CC-Service-Specific-Units")
_CC_MONEY: Final = _key("CC-Money")
_UNIT_VALUE: Final = _key("Unit-Value")
_VALUE_DIGITS: Final = _key("Value-Digits")
_EXPONENT: Final = _key("Exponent")
_TARIFF_CHANGE_USAGE: Final = _key("Tariff-Change-Usage")
# UNIT_BEFORE_TARIFF_CHANGE, UNIT_AFTER_TARIFF_CHANGE, UNIT_INDETERMINATE, as the dictionary has them.
_TARIFF_CHANGE_USAGE_VALUES: Final = frozenset(DEFAULT_DICTIONARY.avp("Tariff-Change-Usage").enum_values.values())
# CC-Request-Type and Requested-Action by value: an enum's call costs a lookup through its class.
_REQUEST_TYPES: Final = {int(member): member for member in RequestType}
_REQUESTED_ACTIONS: Final = {int(member): member for member in RequestedAction}


def _key_of(item: Avp) -> int:
    return (item.vendor_id << 32) | item.code


def _members(item: Avp | None) -> list[Avp]:
    """A Grouped AVP's members (none for an absent AVP or any other)."""
    value = item.value if item is not None else None
    return value if isinstance(value, list) else []


def _first(avps: list[Avp], key: int) -> Avp | None:
    for item in avps:
        if (item.vendor_id << 32) | item.code == key:
            return item
    return None


def _int(item: Avp | None) -> int | None:
    value = item.value if item is not None else None
    return value if isinstance(value, int) else None


def _text(item: Avp | None) -> str:
    return str(item.value or "") if item is not None else ""


def _money_micros(money: Avp) -> int | None:
    """CC-Money's Unit-Value as micros: Value-Digits x 10^Exponent (RFC 4006 section 8.8)."""
    unit_value = _first(_members(money), _UNIT_VALUE)
    if unit_value is None:
        return None
    members = _members(unit_value)
    digits = _int(_first(members, _VALUE_DIGITS)) or 0
    exponent = _int(_first(members, _EXPONENT)) or 0
    scale = exponent + 6  # micros: one unit of currency is 10^6
    return int(digits * 10**scale) if scale >= 0 else int(digits // 10**-scale)


_ABSENT: Final = object()
# Where each unit AVP goes in ``Units``; CC-Money is read apart (a Grouped AVP).
_UNIT_FIELDS: Final = {
    _CC_TIME: 0,
    _CC_TOTAL_OCTETS: 1,
    _CC_INPUT_OCTETS: 2,
    _CC_OUTPUT_OCTETS: 3,
    _CC_SERVICE_SPECIFIC_UNITS: 4,
}


def _counted(value: object) -> int | None:
    return value if isinstance(value, int) else None


def read_units(unit: Avp) -> Units:
    """Requested-, Used- or Granted-Service-Unit as ``Units``: the first of each AVP (the last
    Tariff-Change-Usage), in one pass over the members (an UPDATE carries one or two of these
    per service)."""
    # The first AVP of each kind counts, even when its value is no integer: None then.
    values: list[object] = [_ABSENT] * len(_UNIT_FIELDS)
    money: Avp | None = None
    change_usage: object = None
    for member in _members(unit):
        key = (member.vendor_id << 32) | member.code
        field = _UNIT_FIELDS.get(key)
        if field is not None:
            if values[field] is _ABSENT:
                values[field] = member.value
        elif key == _CC_MONEY:
            if money is None:
                money = member
        elif key == _TARIFF_CHANGE_USAGE:
            change_usage = member.value
    time_seconds, total_octets, input_octets, output_octets, service_specific = values
    return Units(  # by position: keywords cost twice as much to pass (balance.value_type)
        _counted(time_seconds),
        _counted(total_octets),
        _counted(input_octets),
        _counted(output_octets),
        _counted(service_specific),
        _money_micros(money) if money is not None else None,  # money_micros
        _counted(change_usage),  # tariff_change_usage
    )


def _bad_tariff_change_usage(used_avps: list[Avp]) -> Avp | None:
    """A Tariff-Change-Usage in a Used-Service-Unit with a value RFC 4006 section 8.27 does not
    define (0, 1 and 2): 5004 DIAMETER_INVALID_AVP_VALUE names it (RFC 6733 section 7.1.5)."""
    for used in used_avps:
        for member in _members(used):
            if _key_of(member) == _TARIFF_CHANGE_USAGE and member.value not in _TARIFF_CHANGE_USAGE_VALUES:
                return member
    return None


# The AVPs of a service of which the first counts, by their place in ``_service``'s list.
_SERVICE_FIRSTS: Final = {
    key: slot
    for slot, key in enumerate((_REQUESTED_SERVICE_UNIT, _RATING_GROUP, _REPORTING_REASON, _SERVICE_IDENTIFIER))
}


def _service(members: list[Avp], avp_of_service: Avp | None) -> ServiceRequest | CcrProblem:
    """One service from the AVPs that describe it: an MSCC's members, or the command's own;
    or the Tariff-Change-Usage out of range in one of its Used-Service-Units."""
    used_avps: list[Avp] = []
    firsts: list[Avp | None] = [None] * len(_SERVICE_FIRSTS)
    for item in members:
        key = (item.vendor_id << 32) | item.code
        if key == _USED_SERVICE_UNIT:
            used_avps.append(item)
        else:
            slot = _SERVICE_FIRSTS.get(key)
            if slot is not None and firsts[slot] is None:
                firsts[slot] = item
    requested, rating_group, own_reason, service_identifier = firsts
    bad = _bad_tariff_change_usage(used_avps)
    if bad is not None:
        return CcrProblem(ResultCode.DIAMETER_INVALID_AVP_VALUE, bad, "Tariff-Change-Usage out of range")
    reasons: list[int] = []
    for used in used_avps:
        reason = _int(_first(_members(used), _REPORTING_REASON))
        if reason is not None:
            reasons.append(reason)
    reason = _int(own_reason)
    if reason is not None:
        reasons.append(reason)
    return ServiceRequest(  # by position, as in read_units
        _int(rating_group) if avp_of_service is not None else None,
        _int(service_identifier),
        read_units(requested) if requested is not None else None,
        tuple([read_units(item) for item in used_avps]),  # used
        tuple(reasons),  # reporting_reasons
        avp_of_service,  # avp
    )


def _called_party(information: Avp | None) -> str | None:
    members = _members(information)
    ims = _first(members, _IMS_INFORMATION)
    if ims is not None:
        called = _first(_members(ims), _CALLED_PARTY_ADDRESS)
        if called is not None and isinstance(called.value, str):
            return called.value
    sms = _first(members, _SMS_INFORMATION)
    if sms is not None:
        recipient = _first(_members(sms), _RECIPIENT_INFO)
        address = _first(_members(recipient), _RECIPIENT_ADDRESS)
        data = _first(_members(address), _ADDRESS_DATA)
        if data is not None and isinstance(data.value, str):
            return data.value
    return None


def _identities(subscriptions: list[Avp]) -> tuple[Identity, ...]:
    """The subscriber identities of the Subscription-Ids a kind of which we know."""
    identities: list[Identity] = []
    for subscription in subscriptions:
        members = _members(subscription)
        type_value = _int(_first(members, _SUBSCRIPTION_ID_TYPE))
        kind = _IDENTITY_KINDS.get(type_value) if type_value is not None else None
        found = _first(members, _SUBSCRIPTION_ID_DATA)
        data = found.value if found is not None else None
        if kind is not None and isinstance(data, str) and data:
            identities.append(Identity(kind, data))
    return tuple(identities)


def _services(message: Message, msccs: list[Avp], multiple: bool, single: bool) -> list[ServiceRequest] | CcrProblem:
    """One service per MSCC, or the command's own single service (RFC 4006 section 5.1.2)."""
    services: list[ServiceRequest] = []
    if multiple:
        seen: set[tuple[int, int | None]] = set()
        for mscc in msccs:
            service = _service(_members(mscc), mscc)
            if isinstance(service, CcrProblem):
                return service
            # An absent Rating-Group is charged as 0 (ocs/charging/credit_control.py): the same quota as 0.
            key = (service.rating_group or 0, service.service_identifier)
            if key in seen:
                return CcrProblem(ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, mscc, "the same service twice")
            seen.add(key)
            services.append(service)
    elif single:
        service = _service(message.avps, None)
        if isinstance(service, CcrProblem):
            return service
        services.append(service)
    return services


# The command-level AVPs of which the first counts, by their place in ``read_ccr``'s list.
_COMMAND_FIRSTS: Final = {
    key: slot
    for slot, key in enumerate(
        (
            _SESSION_ID,
            _ORIGIN_HOST,
            _ORIGIN_REALM,
            _DESTINATION_REALM,
            _SERVICE_CONTEXT_ID,
            _CC_REQUEST_TYPE,
            _CC_REQUEST_NUMBER,
            _EVENT_TIMESTAMP,
            _MULTIPLE_SERVICES_INDICATOR,
            _SERVICE_INFORMATION,
            _REQUESTED_ACTION,
        )
    )
}


def read_ccr(message: Message) -> CreditRequest | CcrProblem:
    """The CCR's meaning, or the problem to answer with: the command's AVPs in one pass, each
    kind's first (all of Subscription-Id and MSCC), then the Grouped ones read."""
    firsts: list[Avp | None] = [None] * len(_COMMAND_FIRSTS)
    subscriptions: list[Avp] = []
    msccs: list[Avp] = []
    single = False  # a Requested- or Used-Service-Unit at command level
    for item in message.avps:
        key = (item.vendor_id << 32) | item.code
        if key == _MULTIPLE_SERVICES_CREDIT_CONTROL:
            msccs.append(item)
        elif key == _SUBSCRIPTION_ID:
            subscriptions.append(item)
        else:
            slot = _COMMAND_FIRSTS.get(key)
            if slot is not None:
                if firsts[slot] is None:
                    firsts[slot] = item
            elif key in (_REQUESTED_SERVICE_UNIT, _USED_SERVICE_UNIT):
                single = True
    (
        session_id,
        origin_host,
        origin_realm,
        destination_realm,
        service_context,
        request_type_avp,
        request_number,
        timestamp,
        indicator,
        information,
        requested_action,
    ) = firsts
    request_type = _REQUEST_TYPES.get(_int(request_type_avp) or 0)
    if request_type is None:
        return CcrProblem(ResultCode.DIAMETER_INVALID_AVP_VALUE, request_type_avp, "CC-Request-Type out of range")
    action: RequestedAction | None = None
    if request_type is RequestType.EVENT:
        action = _REQUESTED_ACTIONS.get(_int(requested_action) or 0)
        if action is None:
            return CcrProblem(ResultCode.DIAMETER_INVALID_AVP_VALUE, requested_action, "Requested-Action out of range")
    multiple = indicator is not None and indicator.value == 1
    services = _services(message, msccs, multiple, single)
    if isinstance(services, CcrProblem):
        return services
    event_time = timestamp.value if timestamp is not None else None
    return CreditRequest(  # by position, as in read_units
        _text(session_id),
        _text(origin_host),
        _text(origin_realm),
        _text(destination_realm),
        request_type,
        _int(request_number) or 0,
        _text(service_context),
        _identities(subscriptions),  # identities
        multiple,  # multiple_services
        tuple(services),
        action,  # requested_action
        event_time if isinstance(event_time, datetime) else None,
        _called_party(information) if information is not None else None,  # called_party
    )


def request_time(request: CreditRequest, now: float, *, skew_seconds: int, late_seconds: int) -> datetime:
    """When the service happened, for the time band: the client's Event-Timestamp when it is
    plausible, else now (our clock).

    Plausible: at most ``skew_seconds`` ahead of our clock (no request reports the future), and
    at most ``skew_seconds`` behind it for INITIAL and EVENT, which are sent as the service
    starts or happens. UPDATE and TERMINATION may be older by ``late_seconds`` more: they report
    usage that is already over, and a retransmission after failover (RFC 4006 section 5.7) or
    a CCR-T sent late carries the stamp of when it was first built. Beyond that the stamp is a
    clock fault (or a choice of band the client is not entitled to make), and our clock decides.
    """
    stamp = request.event_time
    current = datetime.fromtimestamp(now, UTC)
    if stamp is None:
        return current
    moment = stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)  # RFC 6733 section 4.3.1: UTC
    late = request.request_type in (RequestType.UPDATE, RequestType.TERMINATION)
    earliest = now - skew_seconds - (late_seconds if late else 0)
    if earliest <= moment.timestamp() <= now + skew_seconds:
        return stamp
    return current
