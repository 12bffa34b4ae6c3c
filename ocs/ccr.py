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

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum

from balance.directory import Identity, IdentityKind
from protocol.constants import ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY
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


@dataclass(frozen=True, slots=True)
class Units:
    """Service units as RFC 4006 section 8.17-8.21 carry them (None: absent)."""

    time_seconds: int | None = None
    total_octets: int | None = None
    input_octets: int | None = None
    output_octets: int | None = None
    service_specific: int | None = None
    money_micros: int | None = None  # CC-Money, converted at the edge

    @property
    def octets(self) -> int | None:
        if self.total_octets is not None:
            return self.total_octets
        if self.input_octets is None and self.output_octets is None:
            return None
        return (self.input_octets or 0) + (self.output_octets or 0)


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class CreditRequest:
    session_id: str
    origin_host: str
    origin_realm: str
    request_type: RequestType
    request_number: int
    service_context: str
    identities: tuple[Identity, ...]
    multiple_services: bool
    services: tuple[ServiceRequest, ...]
    requested_action: RequestedAction | None
    event_time: datetime | None
    called_party: str | None


@dataclass(frozen=True, slots=True)
class CcrProblem:
    result_code: ResultCode
    failed_avp: Avp | None
    reason: str


def _int(parent: Message | Avp, name: str) -> int | None:
    value = parent.get(name)
    return value if isinstance(value, int) else None


def _money_micros(unit: Avp) -> int | None:
    """CC-Money's Unit-Value as micros: Value-Digits x 10^Exponent (RFC 4006 section 8.8)."""
    money = unit.find("CC-Money")
    unit_value = money.find("Unit-Value") if money is not None else None
    if unit_value is None:
        return None
    digits = _int(unit_value, "Value-Digits") or 0
    exponent = _int(unit_value, "Exponent") or 0
    scale = exponent + 6  # micros: one unit of currency is 10^6
    return int(digits * 10**scale) if scale >= 0 else int(digits // 10**-scale)


def read_units(unit: Avp) -> Units:
    return Units(
        time_seconds=_int(unit, "CC-Time"),
        total_octets=_int(unit, "CC-Total-Octets"),
        input_octets=_int(unit, "CC-Input-Octets"),
        output_octets=_int(unit, "CC-Output-Octets"),
        service_specific=_int(unit, "CC-Service-Specific-Units"),
        money_micros=_money_micros(unit),
    )


def _service(parent: Message | Avp, avp_of_service: Avp | None) -> ServiceRequest:
    requested = parent.find("Requested-Service-Unit")
    used_avps = [item for item in _children(parent) if item.key == _USED_SERVICE_UNIT]
    reasons = [value for item in used_avps if isinstance(value := item.get("Reporting-Reason"), int)]
    own_reason = parent.get("Reporting-Reason")
    if isinstance(own_reason, int):
        reasons.append(own_reason)
    return ServiceRequest(
        rating_group=_int(parent, "Rating-Group") if avp_of_service is not None else None,
        service_identifier=_int(parent, "Service-Identifier"),
        requested=read_units(requested) if requested is not None else None,
        used=tuple(read_units(item) for item in used_avps),
        reporting_reasons=tuple(reasons),
        avp=avp_of_service,
    )


def _children(parent: Message | Avp) -> list[Avp]:
    return parent.avps if isinstance(parent, Message) else parent.children


_USED_SERVICE_UNIT = DEFAULT_DICTIONARY.key("Used-Service-Unit")


def _called_party(message: Message) -> str | None:
    information = message.find("Service-Information")
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


def read_ccr(message: Message) -> CreditRequest | CcrProblem:
    """The CCR's meaning, or the problem to answer with."""
    request_type_avp = message.find("CC-Request-Type")
    try:
        request_type = RequestType(_int(message, "CC-Request-Type") or 0)
    except ValueError:
        return CcrProblem(ResultCode.DIAMETER_INVALID_AVP_VALUE, request_type_avp, "CC-Request-Type out of range")
    identities = []
    for subscription in message.find_all("Subscription-Id"):
        type_value = _int(subscription, "Subscription-Id-Type")
        kind = _IDENTITY_KINDS.get(type_value) if type_value is not None else None
        data = subscription.get("Subscription-Id-Data")
        if kind is not None and isinstance(data, str) and data:
            identities.append(Identity(kind, data))
    action: RequestedAction | None = None
    action_avp = message.find("Requested-Action")
    if request_type is RequestType.EVENT:
        try:
            action = RequestedAction(_int(message, "Requested-Action") or 0)
        except ValueError:
            return CcrProblem(ResultCode.DIAMETER_INVALID_AVP_VALUE, action_avp, "Requested-Action out of range")
    multiple = (
        message.find("Multiple-Services-Indicator") is not None and message.get("Multiple-Services-Indicator") == 1
    )
    services: list[ServiceRequest] = []
    if multiple:
        seen: set[tuple[int | None, int | None]] = set()
        for mscc in message.find_all("Multiple-Services-Credit-Control"):
            service = _service(mscc, mscc)
            key = (service.rating_group, service.service_identifier)
            if key in seen:
                return CcrProblem(ResultCode.DIAMETER_AVP_OCCURS_TOO_MANY_TIMES, mscc, "the same service twice")
            seen.add(key)
            services.append(service)
    elif message.find("Requested-Service-Unit") is not None or message.find("Used-Service-Unit") is not None:
        services.append(_service(message, None))
    event_time = message.get("Event-Timestamp")
    return CreditRequest(
        session_id=str(message.get("Session-Id") or ""),
        origin_host=str(message.get("Origin-Host") or ""),
        origin_realm=str(message.get("Origin-Realm") or ""),
        request_type=request_type,
        request_number=_int(message, "CC-Request-Number") or 0,
        service_context=str(message.get("Service-Context-Id") or ""),
        identities=tuple(identities),
        multiple_services=multiple,
        services=tuple(services),
        requested_action=action,
        event_time=event_time if isinstance(event_time, datetime) else None,
        called_party=_called_party(message),
    )


def request_time(request: CreditRequest, now: float) -> datetime:
    """When the service happened: Event-Timestamp if the client sent one, else now."""
    return request.event_time or datetime.fromtimestamp(now, UTC)
