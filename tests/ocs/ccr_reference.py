"""The CCR reader as it was before it read the AVPs in one pass by packed key: the reference that
``test_ccr_reader_model.py`` holds ``ocs.charging.ccr.read_ccr`` against (it groups each level's
AVPs by (code, vendor id) and looks Grouped members up by name: slow, plainly right)."""

from __future__ import annotations

from datetime import datetime

from balance.directory import Identity
from ocs.charging.ccr import (
    _IDENTITY_KINDS,
    CcrProblem,
    CreditRequest,
    RequestedAction,
    RequestType,
    ServiceRequest,
    Units,
)
from protocol.constants import ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY
from protocol.message import Avp, Message

# The AVPs read below, as (code, vendor id): looked up once here, not by name per request.
_KEY = DEFAULT_DICTIONARY.key
_SESSION_ID = _KEY("Session-Id")
_ORIGIN_HOST = _KEY("Origin-Host")
_ORIGIN_REALM = _KEY("Origin-Realm")
_DESTINATION_REALM = _KEY("Destination-Realm")
_SERVICE_CONTEXT_ID = _KEY("Service-Context-Id")
_CC_REQUEST_TYPE = _KEY("CC-Request-Type")
_CC_REQUEST_NUMBER = _KEY("CC-Request-Number")
_SUBSCRIPTION_ID = _KEY("Subscription-Id")
_SUBSCRIPTION_ID_TYPE = _KEY("Subscription-Id-Type")
_SUBSCRIPTION_ID_DATA = _KEY("Subscription-Id-Data")
_REQUESTED_ACTION = _KEY("Requested-Action")
_MULTIPLE_SERVICES_INDICATOR = _KEY("Multiple-Services-Indicator")
_MULTIPLE_SERVICES_CREDIT_CONTROL = _KEY("Multiple-Services-Credit-Control")
_REQUESTED_SERVICE_UNIT = _KEY("Requested-Service-Unit")
_USED_SERVICE_UNIT = _KEY("Used-Service-Unit")
_REPORTING_REASON = _KEY("Reporting-Reason")
_RATING_GROUP = _KEY("Rating-Group")
_SERVICE_IDENTIFIER = _KEY("Service-Identifier")
_EVENT_TIMESTAMP = _KEY("Event-Timestamp")
_SERVICE_INFORMATION = _KEY("Service-Information")
_CC_TIME = _KEY("CC-Time")
_CC_TOTAL_OCTETS = _KEY("CC-Total-Octets")
_CC_INPUT_OCTETS = _KEY("CC-Input-Octets")
_CC_OUTPUT_OCTETS = _KEY("CC-Output-Octets")
_CC_SERVICE_SPECIFIC_UNITS = _KEY("CC-Service-Specific-Units")
_CC_MONEY = _KEY("CC-Money")
_VALUE_DIGITS = _KEY("Value-Digits")
_TARIFF_CHANGE_USAGE = _KEY("Tariff-Change-Usage")
# UNIT_BEFORE_TARIFF_CHANGE, UNIT_AFTER_TARIFF_CHANGE, UNIT_INDETERMINATE, as the dictionary has them.
_TARIFF_CHANGE_USAGE_VALUES = frozenset(DEFAULT_DICTIONARY.avp("Tariff-Change-Usage").enum_values.values())
_EXPONENT = _KEY("Exponent")

AvpGroups = dict[tuple[int, int], list[Avp]]


def _grouped(avps: list[Avp]) -> AvpGroups:
    """The AVPs by (code, vendor id), in order, in one pass: a CCR is read with some twenty
    lookups of the first AVP of a kind and a few of all of them (Subscription-Id, MSCC,
    Used-Service-Unit), each of which would otherwise scan the AVP list from the start."""
    groups: AvpGroups = {}
    for item in avps:
        key = (item.code, item.vendor_id)
        found = groups.get(key)
        if found is None:
            groups[key] = [item]
        else:
            found.append(item)
    return groups


def _first(groups: AvpGroups, key: tuple[int, int]) -> Avp | None:
    found = groups.get(key)
    return found[0] if found is not None else None


def _int(groups: AvpGroups, key: tuple[int, int]) -> int | None:
    found = groups.get(key)
    value = found[0].value if found is not None else None
    return value if isinstance(value, int) else None


def _money_micros(money: Avp | None) -> int | None:
    """CC-Money's Unit-Value as micros: Value-Digits x 10^Exponent (RFC 4006 section 8.8)."""
    unit_value = money.find("Unit-Value") if money is not None else None
    if unit_value is None:
        return None
    value_groups = _grouped(unit_value.children)
    digits = _int(value_groups, _VALUE_DIGITS) or 0
    exponent = _int(value_groups, _EXPONENT) or 0
    scale = exponent + 6  # micros: one unit of currency is 10^6
    return int(digits * 10**scale) if scale >= 0 else int(digits // 10**-scale)


# Where each unit AVP goes in ``Units``; CC-Money is read apart (a Grouped AVP).
_UNIT_FIELDS = {
    _CC_TIME: 0,
    _CC_TOTAL_OCTETS: 1,
    _CC_INPUT_OCTETS: 2,
    _CC_OUTPUT_OCTETS: 3,
    _CC_SERVICE_SPECIFIC_UNITS: 4,
}
_ABSENT = object()


def reference_read_units(unit: Avp) -> Units:
    """Requested-, Used- or Granted-Service-Unit as ``Units``: the first of each AVP, in one pass
    over the members (an UPDATE carries one or two of these per service)."""
    values: list[object] = [_ABSENT] * len(_UNIT_FIELDS)
    money: Avp | None = None
    change_usage: object = None
    for member in unit.children:
        key = (member.code, member.vendor_id)
        field = _UNIT_FIELDS.get(key)
        if field is not None:
            if values[field] is _ABSENT:
                values[field] = member.value
        elif money is None and key == _CC_MONEY:
            money = member
        elif key == _TARIFF_CHANGE_USAGE:
            change_usage = member.value
    time_seconds, total_octets, input_octets, output_octets, service_specific = values
    return Units(
        time_seconds=time_seconds if isinstance(time_seconds, int) else None,
        total_octets=total_octets if isinstance(total_octets, int) else None,
        input_octets=input_octets if isinstance(input_octets, int) else None,
        output_octets=output_octets if isinstance(output_octets, int) else None,
        service_specific=service_specific if isinstance(service_specific, int) else None,
        money_micros=_money_micros(money) if money is not None else None,
        tariff_change_usage=change_usage if isinstance(change_usage, int) else None,
    )


def _service(groups: AvpGroups, avp_of_service: Avp | None) -> ServiceRequest:
    """One service from the AVPs that describe it: an MSCC's members, or the command's own."""
    requested = _first(groups, _REQUESTED_SERVICE_UNIT)
    used_avps = groups.get(_USED_SERVICE_UNIT, [])
    reasons = [value for item in used_avps if isinstance(value := item.get("Reporting-Reason"), int)]
    own_reason = _int(groups, _REPORTING_REASON)
    if own_reason is not None:
        reasons.append(own_reason)
    return ServiceRequest(
        rating_group=_int(groups, _RATING_GROUP) if avp_of_service is not None else None,
        service_identifier=_int(groups, _SERVICE_IDENTIFIER),
        requested=reference_read_units(requested) if requested is not None else None,
        used=tuple(reference_read_units(item) for item in used_avps),
        reporting_reasons=tuple(reasons),
        avp=avp_of_service,
    )


def _bad_tariff_change_usage(groups: AvpGroups) -> Avp | None:
    """A Tariff-Change-Usage in a Used-Service-Unit with a value RFC 4006 section 8.27 does not
    define (0, 1 and 2): 5004 DIAMETER_INVALID_AVP_VALUE names it (RFC 6733 section 7.1.5)."""
    for used in groups.get(_USED_SERVICE_UNIT, ()):
        for member in used.children:
            key = (member.code, member.vendor_id)
            if key == _TARIFF_CHANGE_USAGE and member.value not in _TARIFF_CHANGE_USAGE_VALUES:
                return member
    return None


def _called_party(groups: AvpGroups) -> str | None:
    information = _first(groups, _SERVICE_INFORMATION)
    if information is None:
        return None
    ims = information.find("IMS-Information")
    if ims is not None:
        called = ims.get("Called-Party-Address")
        if isinstance(called, str):
            return called
    sms = information.find("SMS-Information")
    if sms is not None:
        recipient = sms.find("Recipient-Info")
        address = recipient.find("Recipient-Address") if recipient is not None else None
        data = address.get("Address-Data") if address is not None else None
        if isinstance(data, str):
            return data
    return None


def _text(groups: AvpGroups, key: tuple[int, int]) -> str:
    found = groups.get(key)
    return str(found[0].value or "") if found is not None else ""


def reference_read_ccr(message: Message) -> CreditRequest | CcrProblem:
    """The CCR's meaning, or the problem to answer with."""
    groups = _grouped(message.avps)
    try:
        request_type = RequestType(_int(groups, _CC_REQUEST_TYPE) or 0)
    except ValueError:
        return CcrProblem(
            ResultCode.DIAMETER_INVALID_AVP_VALUE, _first(groups, _CC_REQUEST_TYPE), "CC-Request-Type out of range"
        )
    identities = []
    for subscription in groups.get(_SUBSCRIPTION_ID, ()):
        subscription_groups = _grouped(subscription.children)
        type_value = _int(subscription_groups, _SUBSCRIPTION_ID_TYPE)
        kind = _IDENTITY_KINDS.get(type_value) if type_value is not None else None
        found = _first(subscription_groups, _SUBSCRIPTION_ID_DATA)
        data = found.value if found is not None else None
        if kind is not None and isinstance(data, str) and data:
            identities.append(Identity(kind, data))
    action: RequestedAction | None = None
    if request_type is RequestType.EVENT:
        try:
            action = RequestedAction(_int(groups, _REQUESTED_ACTION) or 0)
        except ValueError:
            failed = _first(groups, _REQUESTED_ACTION)
            return CcrProblem(ResultCode.DIAMETER_INVALID_AVP_VALUE, failed, "Requested-Action out of range")
    indicator = _first(groups, _MULTIPLE_SERVICES_INDICATOR)
    multiple = indicator is not None and indicator.value == 1
    services: list[ServiceRequest] = []
    if multiple:
        seen: set[tuple[int, int | None]] = set()
        for mscc in groups.get(_MULTIPLE_SERVICES_CREDIT_CONTROL, ()):
            members = _grouped(mscc.children)
            bad = _bad_tariff_change_usage(members)
            if bad is not None:
                return CcrProblem(ResultCode.DIAMETER_INVALID_AVP_VALUE, bad, "Tariff-Change-Usage out of range")
            service = _service(members, mscc)
            # An absent Rating-Group is charged as 0 (ocs/charging/credit_control.py): the same quota as 0.
            key = (service.rating_group or 0, service.service_identifier)
            if key in seen:
                return CcrProblem(ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, mscc, "the same service twice")
            seen.add(key)
            services.append(service)
    elif _REQUESTED_SERVICE_UNIT in groups or _USED_SERVICE_UNIT in groups:
        bad = _bad_tariff_change_usage(groups)
        if bad is not None:
            return CcrProblem(ResultCode.DIAMETER_INVALID_AVP_VALUE, bad, "Tariff-Change-Usage out of range")
        services.append(_service(groups, None))
    timestamp = _first(groups, _EVENT_TIMESTAMP)
    event_time = timestamp.value if timestamp is not None else None
    return CreditRequest(
        session_id=_text(groups, _SESSION_ID),
        origin_host=_text(groups, _ORIGIN_HOST),
        origin_realm=_text(groups, _ORIGIN_REALM),
        destination_realm=_text(groups, _DESTINATION_REALM),
        request_type=request_type,
        request_number=_int(groups, _CC_REQUEST_NUMBER) or 0,
        service_context=_text(groups, _SERVICE_CONTEXT_ID),
        identities=tuple(identities),
        multiple_services=multiple,
        services=tuple(services),
        requested_action=action,
        event_time=event_time if isinstance(event_time, datetime) else None,
        called_party=_called_party(groups),
    )
