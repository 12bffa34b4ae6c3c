"""Network elements as Diameter Credit-Control clients (RFC 4006 section 5, TS 32.299 Ro/Gy).

Theory of operation: a ``NetworkElement`` is one Diameter connection with its own Origin-Host
(the OCS sends RAR/ASR to the connection of the session's Origin-Host). It sends requests with
``exchange``, which measures the latency and, on 3004 or no answer within Tx
(``request_timeout_seconds``), retransmits the same request with the T flag (RFC 4006 section
5.7: the server applies a (Session-Id, CC-Request-Number) once), on a new connection if the old
one broke. Credit-Control-Failure-Handling decides what silence means: RETRY_AND_TERMINATE (the
default) retransmits and ends the session if that fails too; TERMINATE ends it at once.

Sessions behave as RFC 4006 clients do:

- ``run_metered_session``: session-based charging with one Multiple-Services-Credit-Control per
  service: a voice call (IMS AS / MSC / softswitch: one service, CC-Time) or a data session (PGW:
  rating groups 10 and 20, CC-Total-Octets). CCR-INITIAL asks for quota; when a grant is used up,
  CCR-UPDATE reports it (Used-Service-Unit) and asks again; CCR-TERMINATION reports the last
  usage. A grant with Final-Unit-Indication is used and then the service ends (section 5.6.1,
  action TERMINATE); 4012 for a service ends it at once; an Abort-Session-Request ends the session.
- ``run_sms_event``: Immediate Event Charging, EVENT_REQUEST with DIRECT_DEBITING (section 6.3).
- ``run_sms_session``: Event Charging with Unit Reservation, INITIAL then TERMINATION (section 6.2).

Time is compressed: a "120 s" call does not last 120 s. Each round of a session uses its grants
at once and reports them as if the time had passed; a short real pause (``step_seconds``)
between requests spreads the load. Everything the element believes (units, commits, outcomes,
result codes, latencies) goes to the shared ``Recorder``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from protocol.aio import DiameterClient
from protocol.capabilities import LocalIdentity
from protocol.constants import ApplicationId, CommandCode, CommandFlag, ResultCode
from protocol.errors import StateError
from protocol.message import Avp, Message, answer_to, avp, request
from simulator.faults import NO_FAULTS, FaultDice
from simulator.population import SimulatedSubscriber
from simulator.records import NO_ANSWER, Commit, Recorder, SessionOutcome

SUCCESS = int(ResultCode.DIAMETER_SUCCESS)
CREDIT_LIMIT_REACHED = int(ResultCode.DIAMETER_CREDIT_LIMIT_REACHED)
TOO_BUSY = int(ResultCode.DIAMETER_TOO_BUSY)
LIMITED_SUCCESS = int(ResultCode.DIAMETER_LIMITED_SUCCESS)
FINAL_UNIT_TERMINATE = 0  # Final-Unit-Action TERMINATE, RFC 4006 section 8.35
CCFH_TERMINATE = 0  # Credit-Control-Failure-Handling TERMINATE, RFC 4006 section 8.14
FAILURE_HANDLING = ("TERMINATE", "RETRY_AND_TERMINATE")  # what the elements play (CONTINUE: see _Session)
SUBSCRIPTION_ID_E164 = 0  # Subscription-Id-Type END_USER_E164, RFC 4006 section 8.47


@dataclass(frozen=True, slots=True)
class ElementTiming:
    step_seconds: float  # real pause between two requests of one session (when time is not compressed)
    request_timeout_seconds: float
    retransmissions: int  # extra attempts after 3004 or no answer (RFC 4006 section 5.7)
    retry_pause_seconds: float = 0.05
    time_compression: float = 0.0  # simulated seconds per real second; 0: pause step_seconds per round
    data_rate_octets_per_second: float = 500_000.0  # simulated throughput of a data session
    final_unit_hold_seconds: float = 0.0  # real time the final units last: a RAR may come meanwhile
    failure_handling: str = "RETRY_AND_TERMINATE"  # CCFH when the OCS sends none (RFC 4006 section 8.14)


@dataclass(slots=True)
class _Control:
    """What the server asked of one open session (RFC 4006 sections 5.5 and 5.6)."""

    aborted: bool = False
    reauthorise: asyncio.Event = field(default_factory=asyncio.Event)


def _granted(holder: Avp | Message) -> tuple[tuple[int, int, object], ...]:
    grant = holder.find("Granted-Service-Unit")
    return tuple(sorted((c.code, c.vendor_id, c.value) for c in grant.children)) if grant is not None else ()


def answer_signature(answer: Message) -> tuple[object, ...]:
    """What must not differ between two answers to the same request: the codes and the grants."""
    services = sorted(
        (
            (control.get("Rating-Group"), control.get("Result-Code"), _granted(control))
            for control in answer.find_all("Multiple-Services-Credit-Control")
        ),
        key=repr,
    )
    return result_code(answer), tuple(services), _granted(answer)


class NetworkElement:
    """One connection to the OCS, playing one network element with its own Origin-Host.

    The connection is replaced when it breaks (a dropped connection, a fault): the next request
    opens a new one with the same Origin-Host, and what was unanswered is sent again on it with
    the T flag."""

    def __init__(
        self,
        address: tuple[str, int],
        client: DiameterClient,
        identity: LocalIdentity,
        recorder: Recorder,
        timing: ElementTiming,
        dice: FaultDice,
    ) -> None:
        self.address = address
        self.client = client
        self.identity = identity
        self.recorder = recorder
        self.timing = timing
        self.dice = dice
        self.destination_realm = client.capabilities.origin_realm
        self.controls: dict[str, _Control] = {}
        self._session_numbers = itertools.count(1)
        self._boot_seconds = int(time.time()) & 0xFFFFFFFF  # Session-Id high part, RFC 6733 section 8.8
        self._reconnecting: asyncio.Lock = asyncio.Lock()
        client.on_request = self._server_request

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        identity: LocalIdentity,
        recorder: Recorder,
        timing: ElementTiming,
        dice: FaultDice | None = None,
    ) -> NetworkElement:
        client = await DiameterClient.connect(host, port, identity)
        return cls((host, port), client, identity, recorder, timing, dice or FaultDice(NO_FAULTS, random.Random(0)))

    def open_session(self) -> str:
        """A new Session-Id, ``<DiameterIdentity>;<high 32 bits>;<low 32 bits>`` (RFC 6733 section 8.8)."""
        session_id = f"{self.identity.origin_host};{self._boot_seconds};{next(self._session_numbers)}"
        self.controls[session_id] = _Control()
        return session_id

    def close_session(self, session_id: str) -> None:
        self.controls.pop(session_id, None)

    def aborted(self, session_id: str) -> bool:
        control = self.controls.get(session_id)
        return control is not None and control.aborted

    async def reauthorised(self, session_id: str, wait_seconds: float) -> bool:
        """Whether a RAR for the session comes within ``wait_seconds`` (or came already)."""
        control = self.controls.get(session_id)
        if control is None:
            return False
        if control.reauthorise.is_set():
            control.reauthorise.clear()
            return not control.aborted
        if wait_seconds <= 0:
            return False
        try:
            await asyncio.wait_for(control.reauthorise.wait(), wait_seconds)
        except TimeoutError:
            return False
        control.reauthorise.clear()
        return not control.aborted

    async def _open_client(self) -> DiameterClient:
        """The open connection, after reconnecting if it broke."""
        if self.client.is_open:
            return self.client
        async with self._reconnecting:
            if not self.client.is_open:
                host, port = self.address
                client = await DiameterClient.connect(host, port, self.identity)
                client.on_request = self._server_request
                self.client = client
                self.recorder.faults["reconnects"] += 1
        return self.client

    def drop_connection(self) -> None:
        """A fault: cut the TCP connection without DPR; what was unanswered fails."""
        self.recorder.faults["connections dropped"] += 1
        self.client.transport.abort()

    async def exchange(self, label: str, message: Message, *, retry_silence: bool = True) -> Message | None:
        """Send, retransmitting on 3004 or, with ``retry_silence``, when Tx expires or the
        connection breaks; the answer, or None if none came. A fault may send the request again
        (as if the answer was lost) and checks the second answer agrees."""
        answer = await self._deliver(label, message, retry_silence)
        if answer is not None and self.dice.retransmit():
            self.recorder.faults["retransmissions after an answer"] += 1
            message.flags |= int(CommandFlag.RETRANSMITTED)
            if self.dice.rng.random() < 0.5:
                # As after a client restart: a new End-to-End id, so the server's duplicate cache
                # cannot match it and the money engine's (Session-Id, CC-Request-Number) replay must.
                message.end_to_end = 0
                self.recorder.faults["retransmissions with a new End-to-End id"] += 1
            again = await self._deliver(f"{label} again", message, True)
            if again is not None:
                self._compare(label, answer, again)
        return answer

    def _compare(self, label: str, first: Message, second: Message) -> None:
        if answer_signature(first) == answer_signature(second):
            self.recorder.replays["same"] += 1
            return
        self.recorder.replays["different"] += 1
        self.recorder.fault_problems.append(
            f"{label} {first.get('Session-Id')!r}: a repeated request was answered differently: "
            f"{answer_signature(first)} then {answer_signature(second)}"
        )

    async def _deliver(self, label: str, message: Message, retry_silence: bool) -> Message | None:
        for attempt in range(self.timing.retransmissions + 1):
            if attempt:
                message.flags |= int(CommandFlag.RETRANSMITTED)
                self.recorder.retransmissions += 1
                await asyncio.sleep(self.timing.retry_pause_seconds)
            started = time.perf_counter()
            try:
                client = await self._open_client()
                if self.dice.duplicate():
                    answer = await self._send_twice(client, label, message)
                else:
                    answer = await client.request(message, self.timing.request_timeout_seconds)
            except (TimeoutError, OSError, StateError):  # RequestFailed is a ConnectionError
                self.recorder.request_done(label, NO_ANSWER, None)
                if not retry_silence:
                    return None
                continue
            code = result_code(answer)
            self.recorder.request_done(label, code, time.perf_counter() - started)
            if code != TOO_BUSY:
                return answer
        return None

    async def _send_twice(self, client: DiameterClient, label: str, message: Message) -> Message:
        """A fault: the request and, in the same write, a copy with the T flag (same End-to-End id)."""
        self.recorder.faults["duplicated requests"] += 1
        first = client.send(message)
        message.flags |= int(CommandFlag.RETRANSMITTED)
        second = client.send(message)
        answers = await asyncio.wait_for(asyncio.gather(first, second), self.timing.request_timeout_seconds)
        self._compare(label, answers[0], answers[1])
        return answers[0]

    def _server_request(self, client: DiameterClient, message: Message) -> None:
        session_id = message.get("Session-Id")
        control = self.controls.get(session_id) if isinstance(session_id, str) else None
        code = SUCCESS
        if message.command_code == CommandCode.ABORT_SESSION:
            self.recorder.server_requests["ASR"] += 1
            if control is not None:
                control.aborted = True
                control.reauthorise.set()  # wakes a session waiting for re-authorisation
        elif message.command_code == CommandCode.RE_AUTH:
            # RFC 4006 section 5.5: answer at once with DIAMETER_LIMITED_SUCCESS, then
            # re-authorise with a CCR-UPDATE (the session loop does, woken here).
            self.recorder.server_requests["RAR"] += 1
            code = LIMITED_SUCCESS
            if control is not None:
                control.reauthorise.set()
        else:
            self.recorder.server_requests[f"command {message.command_code}"] += 1
        if control is None:  # RFC 6733 sections 8.3.2 and 8.5.2: 5002 for a session we do not know
            code = int(ResultCode.DIAMETER_UNKNOWN_SESSION_ID)
        answer_avps = [avp("Session-Id", str(session_id)), avp("Result-Code", code), *self.identity.origin_avps()]
        client.send_answer(answer_to(message, answer_avps))

    async def close(self) -> None:
        await self.client.close()


def result_code(answer: Message) -> int:
    value = answer.get("Result-Code")
    if isinstance(value, int):
        return value
    experimental = answer.find("Experimental-Result")
    code = experimental.get("Experimental-Result-Code") if experimental is not None else None
    return code if isinstance(code, int) else NO_ANSWER


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


def _applied(answer: Message) -> bool:
    """Whether the OCS applied the request (committed its usage): a success, or a 4012 for the
    services that still carries them (a request refused as a whole has no MSCC)."""
    code = result_code(answer)
    return code == SUCCESS or (
        code == CREDIT_LIMIT_REACHED and answer.find("Multiple-Services-Credit-Control") is not None
    )


@dataclass(slots=True)
class MeteredService:
    """One service of a session (one MSCC): how much it will use and what it holds."""

    rating_group: int | None
    unit_avp: str  # CC-Time or CC-Total-Octets
    remaining: int  # units still to use
    request_units: int  # asked for in each Requested-Service-Unit
    granted: int = 0
    granted_at_seconds: int = 0
    threshold: int = 0  # Time/Volume-Quota-Threshold of the grant: ask again when this much is left
    validity_seconds: int = 0  # Validity-Time of the grant (simulated seconds; 0: none)
    rate_octets_per_second: float = 0.0  # this session's data rate (0: the element's default)
    final: bool = False  # the grant carried Final-Unit-Indication
    active: bool = True  # holds a grant or may ask for one
    pending: int = 0  # used and not yet reported
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
            used = [avp(self.unit_avp, self.pending)]
            if self.reason in _MSCC_LEVEL_REASONS:
                service_reason = self.reason
            elif self.reason:
                used.append(avp("Reporting-Reason", self.reason))
            children.append(avp("Used-Service-Unit", used))
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
    fixed: tuple[tuple[Avp, ...], Avp] | None = None  # the AVPs every request of the session repeats

    def __post_init__(self) -> None:
        self.fixed = session_avps(self.caller, self.session_id)

    async def send(self, kind: str, request_type: str, *extra: Avp) -> tuple[Message | None, int]:
        at_seconds = int(time.time())
        assert self.fixed is not None
        message = credit_control_request(self.caller, self.fixed, request_type, self.number, at_seconds, *extra)
        self.number += 1
        element = self.caller.element
        handling = self.failure_handling or element.timing.failure_handling
        answer = await element.exchange(f"{self.caller.service} {kind}", message, retry_silence=handling != "TERMINATE")
        if answer is None:
            element.recorder.uncertain_sessions.append(self.session_id)
        else:
            _note_validity(element.recorder, answer)
            self._note_failure_handling(answer)
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

    def commit(self, rating_group: int | None, unit_avp: str, at_seconds: int, units: int) -> None:
        line = self.caller.line
        commit = Commit(
            line.account_id, line.plan, self.caller.context, rating_group, self.caller.called, at_seconds, units
        )
        self.caller.element.recorder.committed(self.caller.service, unit_avp, commit)


def _note_validity(recorder: Recorder, answer: Message) -> None:
    for control in answer.find_all("Multiple-Services-Credit-Control"):
        validity = control.get("Validity-Time")
        if isinstance(validity, int) and validity > recorder.longest_validity_seconds:
            recorder.longest_validity_seconds = validity


def _take_grants(services: list[MeteredService], answer: Message, at_seconds: int) -> None:
    """Read each asked service's MSCC: a grant (maybe final), or the end of that service."""
    by_group: dict[int | None, Avp] = {}
    for received in answer.find_all("Multiple-Services-Credit-Control"):
        group = received.get("Rating-Group")
        by_group[group if isinstance(group, int) else None] = received
    for service in services:
        control = by_group.get(service.rating_group)
        code = control.get("Result-Code") if control is not None else None
        grant = control.find("Granted-Service-Unit") if control is not None else None
        units = grant.get(service.unit_avp) if grant is not None else None
        if control is None or code != SUCCESS or not isinstance(units, int) or units <= 0:
            service.active, service.cut, service.granted = False, service.remaining > 0, 0
            continue
        final_unit = control.find("Final-Unit-Indication")
        service.granted, service.granted_at_seconds = units, at_seconds
        validity = control.get("Validity-Time")
        service.validity_seconds = validity if isinstance(validity, int) and validity > 0 else 0
        threshold = control.get(_THRESHOLD_AVPS[service.unit_avp])
        service.threshold = threshold if isinstance(threshold, int) and 0 < threshold < units else 0
        service.final = final_unit is not None and final_unit.get("Final-Unit-Action") == FINAL_UNIT_TERMINATE


_THRESHOLD_AVPS = {"CC-Time": "Time-Quota-Threshold", "CC-Total-Octets": "Volume-Quota-Threshold"}
_MSCC_LEVEL_REASONS = frozenset({"VALIDITY_TIME"})  # TS 32.299 clause 7.2.175: in the MSCC, not the USU


def _seconds_of(service: MeteredService, units: int, timing: ElementTiming) -> float:
    """How long ``units`` of the service last in simulated time."""
    return units if service.unit_avp == "CC-Time" else units / _rate(service, timing)


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


def _use_grants(services: list[MeteredService], timing: ElementTiming) -> float:
    """One round: each active service uses what it holds (or what it needs). Returns how long
    that takes in real time: the simulated duration over the time compression, or the fixed
    step when time is not compressed."""
    simulated_seconds = 0.0
    for service in services:
        if service.active and service.granted:
            # With a threshold the element re-authorises when that much of the grant is left
            # (TS 32.299: Reporting-Reason THRESHOLD); the new grant replaces the old one.
            before_threshold = service.granted - service.threshold if not service.final else service.granted
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
            simulated_seconds = max(simulated_seconds, _seconds_of(service, service.pending, timing))
    if timing.time_compression > 0:
        return simulated_seconds / timing.time_compression
    return timing.step_seconds


def _commit_pending(session: _Session, services: list[MeteredService]) -> None:
    for service in services:
        if service.pending:
            session.commit(service.rating_group, service.unit_avp, service.granted_at_seconds, service.pending)
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
    session = _Session(caller, element.open_session())
    abandon = element.dice.abandon()
    try:
        asks = [service.mscc(report=False, ask=True) for service in services]
        answer, at_seconds = await session.send(
            "CCR-I", "INITIAL_REQUEST", avp("Multiple-Services-Indicator", 1), *asks
        )
        if answer is None or result_code(answer) not in (SUCCESS, CREDIT_LIMIT_REACHED):
            return await _give_up(session)
        if result_code(answer) == CREDIT_LIMIT_REACHED:
            return SessionOutcome.REFUSED  # nothing was granted: no session to end (section 5.2)
        _take_grants(services, answer, at_seconds)
        while True:
            if any(service.final for service in services) and caller.on_final_units is not None:
                caller.on_final_units(caller.line)
            await asyncio.sleep(_use_grants(services, element.timing))
            stop = element.aborted(session.session_id)
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
            _take_grants(wanting, answer, at_seconds)
            for service in wanting:
                service.forced = False
        if abandon:
            return _abandoned(element)
        return await _terminate(session, services, aborted=element.aborted(session.session_id))
    finally:
        element.close_session(session.session_id)


def _abandoned(element: NetworkElement) -> SessionOutcome:
    """A fault: the element forgets the session; what it holds is left for the OCS's Tcc."""
    element.recorder.faults["sessions abandoned"] += 1
    return SessionOutcome.ABANDONED


async def _terminate(session: _Session, services: list[MeteredService], *, aborted: bool) -> SessionOutcome:
    reported = [s for s in services if s.active and s.pending]
    controls = [s.mscc(report=True, ask=False) for s in reported]
    indicator = [avp("Multiple-Services-Indicator", 1)] if controls else []
    answer, _ = await session.send("CCR-T", "TERMINATION_REQUEST", *indicator, *controls)
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


async def run_sms_event(caller: CallerContext) -> SessionOutcome:
    """One SMS as Immediate Event Charging: EVENT_REQUEST, DIRECT_DEBITING (RFC 4006 section 6.3)."""
    session = _Session(caller, caller.element.open_session())
    try:
        action = avp("Requested-Action", "DIRECT_DEBITING")
        asked = _units("Requested-Service-Unit", "CC-Service-Specific-Units", 1)
        answer, at_seconds = await session.send("CCR-E", "EVENT_REQUEST", action, asked)
        code = result_code(answer) if answer is not None else NO_ANSWER
        if code == CREDIT_LIMIT_REACHED:
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
    session = _Session(caller, element.open_session())
    try:
        asked = _units("Requested-Service-Unit", "CC-Service-Specific-Units", 1)
        answer, at_seconds = await session.send("CCR-I", "INITIAL_REQUEST", asked)
        code = result_code(answer) if answer is not None else NO_ANSWER
        if code == CREDIT_LIMIT_REACHED:
            return SessionOutcome.REFUSED
        grant = answer.find("Granted-Service-Unit") if answer is not None and code == SUCCESS else None
        if grant is None or grant.get("CC-Service-Specific-Units") != 1:
            return await _give_up(session)
        await asyncio.sleep(element.timing.step_seconds)  # the SMSC delivers the message
        used = _units("Used-Service-Unit", "CC-Service-Specific-Units", 1)
        answer, _ = await session.send("CCR-T", "TERMINATION_REQUEST", used)
        if answer is None or result_code(answer) != SUCCESS:
            return SessionOutcome.FAILED
        session.commit(None, "CC-Service-Specific-Units", at_seconds, 1)
        return SessionOutcome.COMPLETED
    finally:
        element.close_session(session.session_id)
