"""Building Credit-Control-Answers (RFC 4006 section 3.2, TS 32.299 clause 6.4).

Theory of operation: the handler decides, per service, a ``ServiceAnswer`` (result code, grant,
final-unit action); this module lays it out: one Multiple-Services-Credit-Control per service
when the client sent Multiple-Services-Indicator, otherwise the single-service AVPs at command
level (RFC 4006 section 5.1.2). Grants carry Validity-Time, the quota threshold of their unit
(TS 32.299 clauses 7.2.227 Time-, 7.2.241 Volume-, 7.2.229 Unit-Quota-Threshold), a
Tariff-Time-Change when the grant spans a switch of tariff (RFC 4006 section 5.1.1) and, when they
are the last units the balance affords, a Final-Unit-Indication (RFC 4006 section 8.34).
Error answers with a protocol error code set the E bit (RFC 6733 section 7.1.3).

This is the general path, and the reference: the handler sends the common answers (no
Final-Unit-Indication, no Tariff-Time-Change, no Failed-AVP) already encoded by
``ocs.charging.answer_template``, which writes the bytes ``encode(credit_answer(...))`` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import IntEnum

from balance.types import Unit
from balance.value_type import value_type
from protocol.capabilities import LocalIdentity
from protocol.constants import ApplicationId, ResultCode, is_protocol_error
from protocol.dictionary import DEFAULT_DICTIONARY
from protocol.message import Avp, Message, answer_to, avp


class FinalUnitAction(IntEnum):
    """Final-Unit-Action, RFC 4006 section 8.35."""

    TERMINATE = 0
    REDIRECT = 1
    RESTRICT_ACCESS = 2


REDIRECT_ADDRESS_TYPE_URL = 2  # Redirect-Address-Type URL, RFC 4006 section 8.38


@value_type
class FinalUnit:
    """A Final-Unit-Indication (RFC 4006 section 8.34) as the plan and service chose it."""

    action: FinalUnitAction
    redirect_address: str = ""
    redirect_address_type: int = REDIRECT_ADDRESS_TYPE_URL
    restriction_filters: tuple[str, ...] = ()
    filter_ids: tuple[str, ...] = ()

    def to_avp(self) -> Avp:
        """RFC 4006 section 8.34: with TERMINATE "no other AVPs MUST be present"; REDIRECT
        carries Redirect-Server, and may carry filters for what else stays reachable;
        RESTRICT_ACCESS carries Restriction-Filter-Rule and / or Filter-Id. Members in the
        grammar's order: Final-Unit-Action, *Restriction-Filter-Rule, *Filter-Id, Redirect-Server."""
        children = [avp("Final-Unit-Action", int(self.action))]
        if self.action is not FinalUnitAction.TERMINATE:
            children += [avp("Restriction-Filter-Rule", rule) for rule in self.restriction_filters]
            children += [avp("Filter-Id", name) for name in self.filter_ids]
        if self.action is FinalUnitAction.REDIRECT:
            server = [
                avp("Redirect-Address-Type", self.redirect_address_type),
                avp("Redirect-Server-Address", self.redirect_address),
            ]
            children.append(avp("Redirect-Server", server))
        return avp("Final-Unit-Indication", children)


class ServiceAnswer:
    """What one service's answer says: its result code and, when granted, the grant and its
    companions (``_service_avps`` lays it out).

    A plain class rather than a ``value_type``, as ``protocol.message.Avp`` is: one is made per
    service of every answer and read field by field to lay it out, and compiled (mypyc) a plain
    class's fields are read directly, a dataclass's through an attribute lookup each. It behaves as
    ``@dataclass(slots=True)`` would: positional or keyword construction, equality field by field,
    a repr naming the fields.
    """

    __slots__ = (
        "final_unit",
        "granted_units",
        "quota_holding_seconds",
        "rating_group",
        "result_code",
        "service_identifier",
        "tariff_time_change",
        "threshold_units",
        "unit",
        "validity_seconds",
    )
    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, like an eq dataclass

    def __init__(
        self,
        rating_group: int | None,
        service_identifier: int | None,
        result_code: ResultCode,
        unit: Unit | None = None,  # the unit of the grant; None: no Granted-Service-Unit
        granted_units: int = 0,
        validity_seconds: int = 0,
        threshold_units: int = 0,
        quota_holding_seconds: int = 0,
        final_unit: FinalUnit | None = None,
        tariff_time_change: int | None = None,  # epoch seconds: the grant spans a switch of tariff
    ) -> None:
        self.rating_group = rating_group
        self.service_identifier = service_identifier
        self.result_code = result_code
        self.unit = unit
        self.granted_units = granted_units
        self.validity_seconds = validity_seconds
        self.threshold_units = threshold_units
        self.quota_holding_seconds = quota_holding_seconds
        self.final_unit = final_unit
        self.tariff_time_change = tariff_time_change

    def _fields(self) -> tuple[object, ...]:
        return (
            self.rating_group,
            self.service_identifier,
            self.result_code,
            self.unit,
            self.granted_units,
            self.validity_seconds,
            self.threshold_units,
            self.quota_holding_seconds,
            self.final_unit,
            self.tariff_time_change,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, ServiceAnswer):
            return NotImplemented
        return self._fields() == other._fields()

    def __repr__(self) -> str:
        return (
            f"ServiceAnswer(rating_group={self.rating_group!r}, service_identifier={self.service_identifier!r}, "
            f"result_code={self.result_code!r}, unit={self.unit!r}, granted_units={self.granted_units!r}, "
            f"validity_seconds={self.validity_seconds!r}, threshold_units={self.threshold_units!r}, "
            f"quota_holding_seconds={self.quota_holding_seconds!r}, final_unit={self.final_unit!r}, "
            f"tariff_time_change={self.tariff_time_change!r})"
        )


_RESULT_CODE = DEFAULT_DICTIONARY.key("Result-Code")


_GRANT_AVP = {Unit.SECONDS: "CC-Time", Unit.OCTETS: "CC-Total-Octets", Unit.EVENTS: "CC-Service-Specific-Units"}
_THRESHOLD_AVP = {
    Unit.SECONDS: "Time-Quota-Threshold",
    Unit.OCTETS: "Volume-Quota-Threshold",
    Unit.EVENTS: "Unit-Quota-Threshold",
}


def _service_avps(service: ServiceAnswer) -> list[Avp]:
    avps: list[Avp] = []
    if service.unit is not None:
        grant = [avp(_GRANT_AVP[service.unit], service.granted_units)]
        if service.tariff_time_change is not None:
            # RFC 4006 sections 5.1.1 and 8.20: Tariff-Time-Change (451, Time) inside the
            # Granted-Service-Unit, first in its grammar (section 8.17; TS 32.299's grammar
            # keeps it there and gives the MSCC none). Without Tariff-Change-Usage in the MSCC
            # the single quota mechanism applies: the grant serves both sides of the change, and
            # the client reports its use before and after it (section 8.27).
            grant.insert(0, avp("Tariff-Time-Change", datetime.fromtimestamp(service.tariff_time_change, UTC)))
        avps.append(avp("Granted-Service-Unit", grant))
    if service.service_identifier is not None:
        avps.append(avp("Service-Identifier", service.service_identifier))
    if service.rating_group is not None:
        avps.append(avp("Rating-Group", service.rating_group))
    if service.unit is not None and service.validity_seconds:
        avps.append(avp("Validity-Time", service.validity_seconds))
    avps.append(avp("Result-Code", int(service.result_code)))
    if service.final_unit is not None:
        avps.append(service.final_unit.to_avp())
    if service.unit is not None and service.threshold_units and service.final_unit is None:
        avps.append(avp(_THRESHOLD_AVP[service.unit], service.threshold_units))
    if service.unit is not None and service.quota_holding_seconds:
        avps.append(avp("Quota-Holding-Time", service.quota_holding_seconds))
    return avps


def _header_avps(request: Message, identity: LocalIdentity, result_code: ResultCode) -> list[Avp]:
    session = request.find("Session-Id")
    avps = [session] if session is not None else []
    avps += [avp("Result-Code", int(result_code)), *identity.origin_avps()]
    avps.append(avp("Auth-Application-Id", int(ApplicationId.CREDIT_CONTROL)))
    for name in ("CC-Request-Type", "CC-Request-Number"):
        found = request.find(name)
        if found is not None:
            avps.append(found)
    return avps


def error_answer(
    request: Message,
    identity: LocalIdentity,
    result_code: ResultCode,
    *,
    failed_avp: Avp | None = None,
    error_message: str = "",
) -> Message:
    avps = _header_avps(request, identity, result_code)
    if error_message:
        avps.append(avp("Error-Message", error_message[:200]))
    if failed_avp is not None:
        avps.append(avp("Failed-AVP", [failed_avp]))
    return answer_to(request, avps, error=is_protocol_error(result_code))


def credit_answer(
    request: Message,
    identity: LocalIdentity,
    result_code: ResultCode,
    services: Sequence[ServiceAnswer],
    *,
    multiple_services: bool,
    extra: Sequence[Avp] = (),
) -> Message:
    avps = _header_avps(request, identity, result_code)
    if multiple_services:
        avps += [avp("Multiple-Services-Credit-Control", _service_avps(service)) for service in services]
    elif services:
        # Single-service mode: the grant and its companions at command level, no per-service code.
        single = services[0]
        avps += [item for item in _service_avps(single) if item.key != _RESULT_CODE]
    avps += extra
    return answer_to(request, avps)


def command_result(services: Sequence[ServiceAnswer]) -> ResultCode:
    """The command-level Result-Code: success if any service succeeded, carries a final-unit
    action, or there is none; when every service failed, the first failure in request order.

    RFC 6733 section 7.1.2: 2001 says the request was completed. A request whose every service
    failed opened no session in the engine (balance/RULES.md "Unopened" for an INITIAL), and a
    client reads a command-level 2001 on a CCA-I as a session it must later end, so a failure
    must show at command level also when the services failed with different codes; the first
    one is the one a single-service client would have seen, and every MSCC keeps its own."""
    # A service answered with a final-unit action (e.g. an immediate redirect to the top-up
    # portal) is handled, not failed: the client must keep the session to apply the action.
    if not services or any(
        service.result_code == ResultCode.DIAMETER_SUCCESS or service.final_unit for service in services
    ):
        return ResultCode.DIAMETER_SUCCESS
    return services[0].result_code
