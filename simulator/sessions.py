"""Sessions as RFC 4006 clients play them, on a ``simulator.elements.NetworkElement``.

Theory of operation:

- ``run_metered_session``: session-based charging with one Multiple-Services-Credit-Control per
  service: a voice call (IMS AS / MSC / softswitch: one service, CC-Time) or a data session (PGW:
  rating groups 10 and 20, CC-Total-Octets). CCR-INITIAL asks for quota; when a grant is used up,
  its threshold is reached or its Validity-Time runs out, CCR-UPDATE reports it
  (Used-Service-Unit, Reporting-Reason) and asks again; CCR-TERMINATION reports the last usage.
  A grant with Final-Unit-Indication is used and then the service ends (section 5.6.1, action
  TERMINATE) unless a RAR re-authorises it meanwhile; 4012 for a service ends it at once; an
  Abort-Session-Request ends the session. When the run's traffic ends (``NetworkElement.hang_up``)
  the user hangs up: the session ends at its next round, or at once if it waits for a RAR, with
  its CCR-TERMINATION reporting what it used, so the OCS releases what it holds; the call's drawn
  length ends there and it counts as completed (cut if the OCS had already cut a service).
- ``run_sms_event``: Immediate Event Charging, EVENT_REQUEST with DIRECT_DEBITING (section 6.3).
- ``run_sms_session``: Event Charging with Unit Reservation, INITIAL then TERMINATION (section 6.2).

A first request the OCS refuses opened nothing (RFC 4006 section 5.2, balance/RULES.md): 4012
(no credit), 4010 (the line is suspended, barred or terminated) or 5030 (a terminated line's
identity is gone) is ``REFUSED``, with no CCR-TERMINATION; the lifecycle audit checks that a 4010
or 5030 only meets a line that was changed. A suspended line's CCR-INITIAL may instead be a
success granting no units with Final-Unit-Indication (immediate graceful service termination, RFC
8506 section 5.6): the session is open, so it ends with its CCR-TERMINATION and is ``CUT``.

Time is compressed: a "120 s" call does not last 120 s. Each round of a session uses its grants
at once and reports them as if the time had passed; a real pause (the simulated time over
``time_compression``, or ``step_seconds``) between requests spreads the load. Each session keeps
its simulated clock: it starts at the first request's Event-Timestamp, moves on by the simulated
length of every round, and never lags the wall clock. Event-Timestamps stay the wall clock's (the
OCS trusts them only near its own clock).

A grant may carry Tariff-Time-Change (RFC 4006 section 5.1.1: the tariff switches while the grant
lasts). Its usage is then reported itemised, as a PGW or IMS node does: one Used-Service-Unit per
side with Tariff-Change-Usage UNIT_BEFORE / UNIT_AFTER_TARIFF_CHANGE (section 8.27), split where
the session's simulated clock passes the switch (seconds as they run, octets at the session's
data rate, an event at the moment it is granted). The commit keeps the split for the ledger.
Everything the element believes (units, commits, outcomes, result codes, latencies) goes to the
shared ``Recorder``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from protocol.constants import ApplicationId, CommandCode, CommandFlag, ResultCode
from protocol.message import Avp, Message, avp, request
from simulator.elements import (
    SUCCESS,
    ElementTiming,
    NetworkElement,
    result_code,
)
from simulator.population import SimulatedSubscriber
from simulator.records import NO_ANSWER, Commit, Recorder, SessionOutcome

CREDIT_LIMIT_REACHED = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
# A start the OCS refused, nothing opened (module docstring): no credit, the line's status.
STATUS_REFUSALS = frozenset({int(ResultCode.DIAMETER_END_USER_SERVICE_DENIED), int(ResultCode.DIAMETER_USER_UNKNOWN)})
REFUSALS = STATUS_REFUSALS | {CREDIT_LIMIT_REACHED}
FINAL_UNIT_TERMINATE = 0  # Final-Unit-Action TERMINATE, RFC 4006 section 8.35
REDIRECTING = frozenset({1, 2})  # Final-Unit-Action REDIRECT and RESTRICT_ACCESS (section 8.35)
CCFH_TERMINATE = 0  # Credit-Control-Failure-Handling TERMINATE, RFC 4006 section 8.14
SUBSCRIPTION_ID_E164 = 0  # Subscription-Id-Type END_USER_E164, RFC 4006 section 8.47
# Tariff-Change-Usage values, RFC 4006 section 8.27 (UNIT_INDETERMINATE is not needed: the
# simulated meter knows on which side of the switch every unit fell).
UNIT_BEFORE_TARIFF_CHANGE = "UNIT_BEFORE_TARIFF_CHANGE"
UNIT_AFTER_TARIFF_CHANGE = "UNIT_AFTER_TARIFF_CHANGE"


@dataclass(frozen=True, slots=True)
class CallerContext:
    """Who is charged for what: the line, the Service-Context-Id and the service description."""

    element: NetworkElement
    line: SimulatedSubscriber
    service: str  # a label: "voice", "data", "sms_iec", "sms_ecur"
    context: str
    called: str | None  # as the rating sees it (Called-Party-Address / Recipient-Address)
    information: Avp | None  # Service-Information
    on_final_units: Callable[[SimulatedSubscriber], None] | None = None  # told when a grant is final


def session_avps(caller: CallerContext, session_id: str) -> tuple[tuple[Avp, ...], Avp]:
    """The AVPs every CCR of a session repeats unchanged (built once per session): the header
    AVPs up to Service-Context-Id, and the Subscription-Id."""
    assert caller.line.msisdn is not None
    return (
        avp("Session-Id", session_id),
        *caller.element.identity.origin_avps(),
        avp("Destination-Realm", caller.element.destination_realm),
        avp("Auth-Application-Id", int(ApplicationId.CREDIT_CONTROL)),
        avp("Service-Context-Id", caller.context),
    ), avp(
        "Subscription-Id",
        [avp("Subscription-Id-Type", SUBSCRIPTION_ID_E164), avp("Subscription-Id-Data", caller.line.msisdn)],
    )


def credit_control_request(
    caller: CallerContext,
    fixed: tuple[tuple[Avp, ...], Avp],
    request_type: str,
    number: int,
    at_seconds: int,
    *extra: Avp,
) -> Message:
    """A CCR (RFC 4006 section 3.1) with the AVPs the OCS rates by; ``fixed`` from ``session_avps``."""
    head, subscription = fixed
    avps = [
        *head,
        avp("CC-Request-Type", request_type),
        avp("CC-Request-Number", number),
        subscription,
        avp("Event-Timestamp", datetime.fromtimestamp(at_seconds, UTC)),
        *extra,
    ]
    if caller.information is not None:
        avps.append(caller.information)
    return request(int(CommandCode.CREDIT_CONTROL), int(ApplicationId.CREDIT_CONTROL), avps)


def voice_information(calling: str, called: str) -> Avp:
    """IMS-Information of a call (TS 32.299 clause 7.2.77): the OCS needs Node-Functionality."""
    return avp(
        "Service-Information",
        [
            avp(
                "IMS-Information",
                [
                    avp("Node-Functionality", "AS"),
                    avp("Calling-Party-Address", f"tel:+{calling}"),
                    avp("Called-Party-Address", f"tel:+{called}"),
                ],
            )
        ],
    )


def sms_information(recipient: str) -> Avp:
    """SMS-Information with the recipient (TS 32.299 clause 7.2.202)."""
    address = avp("Recipient-Address", [avp("Address-Data", recipient)])
    return avp("Service-Information", [avp("SMS-Information", [avp("Recipient-Info", [address])])])


def _units(unit_avp_name: str, unit_avp: str, value: int) -> Avp:
    return avp(unit_avp_name, [avp(unit_avp, value)])


def used_service_units(unit_avp: str, units: int, before: int | None, *extra: Avp) -> list[Avp]:
    """The Used-Service-Units reporting ``units``: one, or, when ``before`` (the units used
    before the grant's Tariff-Time-Change) is given, one per side that has units, each with its
    Tariff-Change-Usage (RFC 4006 sections 5.1.1 and 8.27). ``extra`` goes into each."""
    if before is None:
        return [avp("Used-Service-Unit", [avp(unit_avp, units), *extra])]
    sides = ((UNIT_BEFORE_TARIFF_CHANGE, before), (UNIT_AFTER_TARIFF_CHANGE, units - before))
    return [
        avp("Used-Service-Unit", [avp("Tariff-Change-Usage", side), avp(unit_avp, amount), *extra])
        for side, amount in sides
        if amount
    ]


def tariff_time_change(grant: Avp) -> int | None:
    """The Tariff-Time-Change of a Granted-Service-Unit (RFC 4006 section 8.20), epoch seconds."""
    value = grant.get("Tariff-Time-Change")
    if not isinstance(value, datetime):
        return None
    moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)  # RFC 6733 section 4.3.1: UTC
    return int(moment.timestamp())


def units_before_change(change_at: int | None, start_seconds: float, units: int, units_per_second: float) -> int | None:
    """Of ``units`` used at ``units_per_second`` from ``start_seconds`` on (simulated clock), how
    many came before the switch at ``change_at``; None without one."""
    if change_at is None:
        return None
    return min(units, max(0, int((change_at - start_seconds) * units_per_second)))


def _applied(answer: Message) -> bool:
    """Whether the OCS applied the request (committed its usage): a success, or a 4012 or 4010
    (the line barred meanwhile) for the services that still carries them: the usage was
    committed, the new units refused (a request refused as a whole has no MSCC)."""
    code = result_code(answer)
    return code == SUCCESS or (code in REFUSALS and answer.find("Multiple-Services-Credit-Control") is not None)


@dataclass(slots=True)
class MeteredService:
    """One service of a session (one MSCC): how much it will use and what it holds."""

    rating_group: int | None
    unit_avp: str  # CC-Time or CC-Total-Octets
    remaining: int  # units still to use
    request_units: int  # asked for in each Requested-Service-Unit
    granted: int = 0
    granted_at_seconds: int = 0
    tariff_change_at: int | None = None  # the grant's Tariff-Time-Change, epoch seconds
    threshold: int = 0  # Time/Volume-Quota-Threshold of the grant: ask again when this much is left
    validity_seconds: int = 0  # Validity-Time of the grant (simulated seconds; 0: none)
    rate_octets_per_second: float = 0.0  # this session's data rate (0: the element's default)
    final: bool = False  # the grant carried Final-Unit-Indication
    active: bool = True  # holds a grant or may ask for one
    pending: int = 0  # used and not yet reported
    pending_before: int | None = None  # of ``pending``, used before the tariff change; None: no change
    reason: str = "QUOTA_EXHAUSTED"  # why ``pending`` is reported (TS 32.299 clause 7.2.175); "": none
    forced: bool = False  # the next request re-authorises after a RAR
    cut: bool = False

    def mscc(self, *, report: bool, ask: bool) -> Avp:
        """The MSCC of a request: what is asked, what was used and why, and FINAL (at the MSCC
        level, TS 32.299 clause 7.2.175) when the service reports its last units."""
        children: list[Avp] = []
        if ask:
            children.append(_units("Requested-Service-Unit", self.unit_avp, self.request_units))
        service_reason = "FINAL" if report and not ask else None
        if ask and self.forced:  # the CCR-UPDATE a RAR asked for (RFC 4006 section 5.5)
            service_reason = "FORCED_REAUTHORISATION"
        if report and self.pending:
            reason: list[Avp] = []
            if self.reason in _MSCC_LEVEL_REASONS:
                service_reason = self.reason
            elif self.reason:
                reason.append(avp("Reporting-Reason", self.reason))
            children.extend(used_service_units(self.unit_avp, self.pending, self.pending_before, *reason))
        if self.rating_group is not None:
            children.append(avp("Rating-Group", self.rating_group))
        if service_reason is not None:
            children.append(avp("Reporting-Reason", service_reason))
        return avp("Multiple-Services-Credit-Control", children)


@dataclass(slots=True)
class _Session:
    caller: CallerContext
    session_id: str
    number: int = 0
    previous_update: Message | None = None  # the last CCR-UPDATE, for a late-update fault
    failure_handling: str = ""  # from the OCS's answers, else the element's default
    clock_seconds: float = 0.0  # the session's simulated clock (module docstring)
    fixed: tuple[tuple[Avp, ...], Avp] = field(init=False)  # the AVPs every request of the session repeats

    def __post_init__(self) -> None:
        self.fixed = session_avps(self.caller, self.session_id)

    async def send(self, kind: str, request_type: str, *extra: Avp) -> tuple[Message | None, int]:
        at_seconds = int(time.time())
        self.clock_seconds = max(self.clock_seconds, at_seconds)
        message = credit_control_request(self.caller, self.fixed, request_type, self.number, at_seconds, *extra)
        self.number += 1
        element = self.caller.element
        handling = self.failure_handling or element.timing.failure_handling
        sent_monotonic = time.monotonic()
        answer = await element.exchange(f"{self.caller.service} {kind}", message, retry_silence=handling != "TERMINATE")
        if answer is None:
            element.recorder.uncertain_sessions.append(self.session_id)
        else:
            self._note_failure_handling(answer)
        code = NO_ANSWER if answer is None else result_code(answer)
        element.recorder.line_request(self.caller.line.account_id, sent_monotonic, kind, code)
        if code in STATUS_REFUSALS:
            element.recorder.status_refused(self.caller.line.account_id, time.monotonic())
        late, self.previous_update = self.previous_update, message if request_type == "UPDATE_REQUEST" else None
        if late is not None and answer is not None and element.dice.late_update():
            await self._send_late(late)
        return answer, at_seconds

    def _note_failure_handling(self, answer: Message) -> None:
        """RFC 4006 section 5.7: the OCS may tell the client what to do when it goes silent.
        CONTINUE (keep the service up without credit control) is played as RETRY_AND_TERMINATE:
        usage nobody reports could not be priced by the simulator's ledger."""
        value = answer.get("Credit-Control-Failure-Handling")
        if isinstance(value, int):
            self.failure_handling = "TERMINATE" if value == CCFH_TERMINATE else "RETRY_AND_TERMINATE"

    async def _send_late(self, late: Message) -> None:
        """A fault: an earlier CCR-UPDATE arrives again as a new request, after a later one was
        answered. Its CC-Request-Number is stale: the OCS must refuse it and change nothing."""
        element = self.caller.element
        element.recorder.faults["late updates"] += 1
        late.end_to_end = 0  # a new request (a new End-to-End id), not a retransmission
        late.flags &= ~int(CommandFlag.RETRANSMITTED)
        label = f"{self.caller.service} CCR-U late"
        answer = await element.exchange(label, late)
        if answer is not None and result_code(answer) == SUCCESS:
            element.recorder.fault_problems.append(f"{label} {self.session_id}: a stale update was accepted")

    def commit(
        self,
        rating_group: int | None,
        unit_avp: str,
        at_seconds: int,
        units: int,
        change_at: int | None = None,
        before: int | None = None,
    ) -> None:
        """Record ``units`` the OCS applied, granted at ``at_seconds``; with the grant's tariff
        change and how many of them were used before it, when there was one."""
        line = self.caller.line
        commit = Commit(
            line.account_id,
            line.plan,
            self.caller.context,
            rating_group,
            self.caller.called,
            at_seconds,
            units,
            change_at if before is not None else None,
            before or 0,
        )
        self.caller.element.recorder.committed(self.caller.service, unit_avp, commit)


def _take_grants(
    services: list[MeteredService], answer: Message, at_seconds: int, recorder: Recorder, account_id: str
) -> None:
    """Read each asked service's MSCC: a grant (maybe final), or the end of that service; the
    recorder keeps the longest Validity-Time seen (Tcc is about twice it) and, per line, when a
    grant came and with which Final-Unit-Action (REDIRECT: the element redirects the user)."""
    granted, actions = False, []
    by_group: dict[int | None, Avp] = {}
    for received in answer.find_all("Multiple-Services-Credit-Control"):
        group = received.get("Rating-Group")
        by_group[group if isinstance(group, int) else None] = received
    for service in services:
        control = by_group.get(service.rating_group)
        code = control.get("Result-Code") if control is not None else None
        grant = control.find("Granted-Service-Unit") if control is not None else None
        units = grant.get(service.unit_avp) if grant is not None else None
        redirect = control.find("Final-Unit-Indication") if control is not None and code != SUCCESS else None
        if redirect is not None and redirect.get("Final-Unit-Action") in REDIRECTING:
            # A suspended line (RFC 8506 section 5.6): nothing granted (4012 in the MSCC, a grant
            # of 0), the user redirected to the portal at once. The element keeps the session,
            # redirected, while a RAR may come.
            action = redirect.get("Final-Unit-Action")
            recorder.grant_seen(account_id, time.monotonic(), action if isinstance(action, int) else None)
            service.granted, service.final = 0, True
            continue
        if control is None or grant is None or code != SUCCESS or not isinstance(units, int) or units <= 0:
            service.active, service.cut, service.granted = False, service.remaining > 0, 0
            continue
        final_unit = control.find("Final-Unit-Indication")
        granted = True
        if final_unit is not None and isinstance(action := final_unit.get("Final-Unit-Action"), int):
            actions.append(action)
        service.granted, service.granted_at_seconds = units, at_seconds
        service.tariff_change_at = tariff_time_change(grant)
        validity = control.get("Validity-Time")
        service.validity_seconds = validity if isinstance(validity, int) and validity > 0 else 0
        recorder.longest_validity_seconds = max(recorder.longest_validity_seconds, service.validity_seconds)
        threshold = control.get(_THRESHOLD_AVPS[service.unit_avp])
        service.threshold = threshold if isinstance(threshold, int) and 0 < threshold < units else 0
        service.final = final_unit is not None and final_unit.get("Final-Unit-Action") == FINAL_UNIT_TERMINATE
    if granted:
        recorder.grant_seen(account_id, time.monotonic(), min(actions) if actions else None)


_THRESHOLD_AVPS = {"CC-Time": "Time-Quota-Threshold", "CC-Total-Octets": "Volume-Quota-Threshold"}
_MSCC_LEVEL_REASONS = frozenset({"VALIDITY_TIME"})  # TS 32.299 clause 7.2.175: in the MSCC, not the USU


def _seconds_of(service: MeteredService, units: int, timing: ElementTiming) -> float:
    """How long ``units`` of the service last in simulated time."""
    return units / _units_per_second(service, timing)


def _units_per_second(service: MeteredService, timing: ElementTiming) -> float:
    return 1.0 if service.unit_avp == "CC-Time" else _rate(service, timing)


def _rate(service: MeteredService, timing: ElementTiming) -> float:
    return service.rate_octets_per_second or timing.data_rate_octets_per_second


def _within_validity(service: MeteredService, units: int, timing: ElementTiming) -> int | None:
    """The units used when the grant's Validity-Time runs out first (RFC 4006 section 8.33: the
    client then reports and asks again), or None. Only with simulated time (compression)."""
    if timing.time_compression <= 0 or not service.validity_seconds or service.final:
        return None
    if _seconds_of(service, units, timing) <= service.validity_seconds:
        return None
    if service.unit_avp == "CC-Time":
        return service.validity_seconds
    return max(1, int(service.validity_seconds * _rate(service, timing)))


def _use_grants(services: list[MeteredService], timing: ElementTiming, start_seconds: float) -> float:
    """One round, from ``start_seconds`` on the session's simulated clock: each active service
    uses what it holds (or what it needs), on both sides of its grant's tariff change if there
    is one. Returns how long that takes in simulated seconds."""
    simulated_seconds = 0.0
    for service in services:
        if service.active and service.granted:
            # With a threshold the element re-authorises when that much of the grant is left
            # (TS 32.299: Reporting-Reason THRESHOLD); the new grant replaces the old one.
            before_threshold = service.granted - service.threshold
            if service.threshold and not service.final and service.remaining > before_threshold:
                service.pending, service.reason = before_threshold, "THRESHOLD"
            elif service.remaining >= service.granted:
                service.pending, service.reason = service.granted, "QUOTA_EXHAUSTED"
            else:  # the service ends with quota left: FINAL at the MSCC level says it all
                service.pending, service.reason = service.remaining, ""
            expired_at = _within_validity(service, service.pending, timing)
            if expired_at is not None:
                service.pending, service.reason = expired_at, "VALIDITY_TIME"
            service.remaining -= service.pending
            service.granted = 0
            service.pending_before = units_before_change(
                service.tariff_change_at, start_seconds, service.pending, _units_per_second(service, timing)
            )
            simulated_seconds = max(simulated_seconds, _seconds_of(service, service.pending, timing))
    return simulated_seconds


def _real_pause(simulated_seconds: float, timing: ElementTiming) -> float:
    """The real time a round takes: its simulated length over the time compression, or the
    fixed step when time is not compressed."""
    if timing.time_compression > 0:
        return simulated_seconds / timing.time_compression
    return timing.step_seconds


def _commit_pending(session: _Session, services: list[MeteredService]) -> None:
    for service in services:
        if service.pending:
            session.commit(
                service.rating_group,
                service.unit_avp,
                service.granted_at_seconds,
                service.pending,
                service.tariff_change_at,
                service.pending_before,
            )
            session.caller.element.recorder.reporting_reasons[service.reason or "FINAL"] += 1
            service.pending = 0


async def _reauthorised(session: _Session, services: list[MeteredService]) -> list[MeteredService]:
    """The services that got final units and want more, if the OCS re-authorises the session
    (a RAR after a top-up, RFC 4006 section 5.5) while their final units last."""
    finals = [s for s in services if s.final and s.remaining > 0]
    element = session.caller.element
    if not finals or not await element.reauthorised(session.session_id, element.timing.final_unit_hold_seconds):
        return []
    for service in finals:
        service.final, service.active, service.cut, service.forced = False, True, False, True
    return finals


async def run_metered_session(caller: CallerContext, services: list[MeteredService]) -> SessionOutcome:
    """A voice call or a data session, from CCR-I to CCR-T (RFC 4006 section 5.2 to 5.4)."""
    element = caller.element
    session = _Session(caller, element.open_session(caller.line.account_id))
    abandon = element.dice.abandon()
    try:
        asks = [service.mscc(report=False, ask=True) for service in services]
        answer, at_seconds = await session.send(
            "CCR-I", "INITIAL_REQUEST", avp("Multiple-Services-Indicator", 1), *asks
        )
        if answer is None or (result_code(answer) != SUCCESS and result_code(answer) not in REFUSALS):
            return await _give_up(session)
        if result_code(answer) in REFUSALS:
            return SessionOutcome.REFUSED  # nothing was granted: no session to end (section 5.2)
        _take_grants(services, answer, at_seconds, element.recorder, caller.line.account_id)
        while True:
            if any(service.final for service in services) and caller.on_final_units is not None:
                caller.on_final_units(caller.line)
            simulated_seconds = _use_grants(services, element.timing, session.clock_seconds)
            session.clock_seconds += simulated_seconds
            await asyncio.sleep(_real_pause(simulated_seconds, element.timing))
            stop = element.aborted(session.session_id) or element.hung_up(session.session_id)
            wanting = [s for s in services if s.active and s.remaining > 0 and not s.final and not stop]
            if not wanting and not stop:
                wanting = await _reauthorised(session, services)
            if not wanting:
                break
            reported = [s for s in services if s.active]
            controls = [s.mscc(report=True, ask=s in wanting) for s in reported]
            indicator = avp("Multiple-Services-Indicator", 1)
            answer, at_seconds = await session.send("CCR-U", "UPDATE_REQUEST", indicator, *controls)
            if answer is None or not _applied(answer):
                return await _give_up(session)
            _commit_pending(session, reported)
            if abandon:
                return _abandoned(element)
            for service in reported:
                if service not in wanting:  # reported its last units (done or final)
                    service.active, service.cut = False, service.remaining > 0
            _take_grants(wanting, answer, at_seconds, element.recorder, caller.line.account_id)
            for service in wanting:
                service.forced = False
        if abandon:
            return _abandoned(element)
        if element.hung_up(session.session_id):
            _hang_up(services)
        return await _terminate(session, services, aborted=element.aborted(session.session_id))
    finally:
        element.close_session(session.session_id)


def _hang_up(services: list[MeteredService]) -> None:
    """The user ends the session at the run's end: what each service had still to use is
    dropped, except where the OCS already cut it (final units, a redirect, a refusal)."""
    for service in services:
        if not service.final and not service.cut:
            service.remaining = 0


def _abandoned(element: NetworkElement) -> SessionOutcome:
    """A fault: the element forgets the session; what it holds is left for the OCS's Tcc."""
    element.recorder.faults["sessions abandoned"] += 1
    return SessionOutcome.ABANDONED


async def _terminate(session: _Session, services: list[MeteredService], *, aborted: bool) -> SessionOutcome:
    reported = [s for s in services if s.active and s.pending]
    controls = [s.mscc(report=True, ask=False) for s in reported]
    indicator = [avp("Multiple-Services-Indicator", 1)] if controls else []
    answer, _ = await session.send("CCR-T", "TERMINATION_REQUEST", *indicator, *controls)
    if aborted and answer is not None and result_code(answer) == ResultCode.DIAMETER_UNKNOWN_SESSION_ID:
        # Terminated: the OCS released the session with its ASR (RULES.md "release"), so the
        # last report finds it closed (RFC 6733 section 7.1.5): the OCS ended it, nothing to commit.
        return SessionOutcome.CUT
    if answer is None or result_code(answer) != SUCCESS:
        return SessionOutcome.FAILED
    _commit_pending(session, reported)
    cut = aborted or any(service.cut or service.remaining > 0 for service in services)
    return SessionOutcome.CUT if cut else SessionOutcome.COMPLETED


async def _give_up(session: _Session) -> SessionOutcome:
    """After an unexpected answer or none: end the session without usage, so the OCS releases
    what it holds now rather than at Tcc (RFC 4006 section 13), and count it failed."""
    await session.send("CCR-T", "TERMINATION_REQUEST")
    return SessionOutcome.FAILED


async def _ended_at_once(session: _Session) -> SessionOutcome:
    """A start granted nothing with Final-Unit-Indication (module docstring): the open session
    ends at once with a CCR-TERMINATION reporting nothing, as the OCS asked."""
    answer, _ = await session.send("CCR-T", "TERMINATION_REQUEST")
    return SessionOutcome.CUT if answer is not None and result_code(answer) == SUCCESS else SessionOutcome.FAILED


async def run_sms_event(caller: CallerContext) -> SessionOutcome:
    """One SMS as Immediate Event Charging: EVENT_REQUEST, DIRECT_DEBITING (RFC 4006 section 6.3)."""
    session = _Session(caller, caller.element.open_session(caller.line.account_id))
    try:
        action = avp("Requested-Action", "DIRECT_DEBITING")
        asked = _units("Requested-Service-Unit", "CC-Service-Specific-Units", 1)
        answer, at_seconds = await session.send("CCR-E", "EVENT_REQUEST", action, asked)
        code = result_code(answer) if answer is not None else NO_ANSWER
        if code in REFUSALS:
            return SessionOutcome.REFUSED  # all or nothing: nothing was debited
        if answer is None or code != SUCCESS:
            return SessionOutcome.FAILED
        grant = answer.find("Granted-Service-Unit")
        units = grant.get("CC-Service-Specific-Units") if grant is not None else None
        session.commit(None, "CC-Service-Specific-Units", at_seconds, units if isinstance(units, int) else 1)
        return SessionOutcome.COMPLETED
    finally:
        caller.element.close_session(session.session_id)


async def run_sms_session(caller: CallerContext) -> SessionOutcome:
    """One SMS as Event Charging with Unit Reservation: INITIAL, deliver, TERMINATION (section 6.2)."""
    element = caller.element
    session = _Session(caller, element.open_session(caller.line.account_id))
    try:
        asked = _units("Requested-Service-Unit", "CC-Service-Specific-Units", 1)
        answer, at_seconds = await session.send("CCR-I", "INITIAL_REQUEST", asked)
        code = result_code(answer) if answer is not None else NO_ANSWER
        if code in REFUSALS:
            return SessionOutcome.REFUSED
        grant = answer.find("Granted-Service-Unit") if answer is not None and code == SUCCESS else None
        granted = grant.get("CC-Service-Specific-Units") if grant is not None else None
        if answer is not None and code == SUCCESS and not granted and answer.find("Final-Unit-Indication") is not None:
            return await _ended_at_once(session)
        if grant is None or granted != 1:
            return await _give_up(session)
        await asyncio.sleep(element.timing.step_seconds)  # the SMSC delivers the message
        # Delivered as granted, on the simulated clock: one event, one side of a tariff change.
        change_at = tariff_time_change(grant)
        before = units_before_change(change_at, session.clock_seconds, 1, 1.0)
        used = used_service_units("CC-Service-Specific-Units", 1, before)
        answer, _ = await session.send("CCR-T", "TERMINATION_REQUEST", *used)
        if answer is None or result_code(answer) != SUCCESS:
            return SessionOutcome.FAILED
        session.commit(None, "CC-Service-Specific-Units", at_seconds, 1, change_at, before)
        return SessionOutcome.COMPLETED
    finally:
        element.close_session(session.session_id)
