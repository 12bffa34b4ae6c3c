"""Network elements as Diameter Credit-Control clients: the connection side (RFC 4006 section 5).

Theory of operation: a ``NetworkElement`` is one Diameter connection with its own Origin-Host
(the OCS sends RAR/ASR to the connection of the session's Origin-Host). It sends requests with
``exchange``, which measures the latency and, on 3004 or no answer within Tx
(``request_timeout_seconds``), retransmits the same request with the T flag (RFC 4006 section
5.7: the server applies a (Session-Id, CC-Request-Number) once), on a new connection if the old
one broke. Credit-Control-Failure-Handling decides what silence means: RETRY_AND_TERMINATE (the
default) retransmits and ends the session if that fails too; TERMINATE ends it at once.

When the server is away (it crashed and restarts: connections refused), a request waits for a
connection, trying again with doubling pauses, for up to ``reconnect_seconds``, before it counts
as unanswered; the retransmission then reaches the restarted server, whose money engine answers a
request it applied before the crash with the stored answer (RFC 4006 section 5.7, RFC 6733
section 5.5.4: pending requests go again, with the T flag, once a connection is up). Without the
wait, a request applied just before a crash stayed unanswered: usage the OCS committed and the
simulator's ledger never counted, which shows up later as money where the ledger expected a data
allowance to pay. The
element also plays the faults of ``simulator.faults`` and answers the server's RAR (RAA 2002,
then the session re-authorises) and ASR. What the sessions on it do is ``simulator.sessions``.

When the run's traffic ends, ``hang_up`` tells every session on the element, and every one
opened after, that its user hangs up: a session ends at its next round with a CCR-TERMINATION
reporting what it used, and one waiting for a RAR (a redirected line, final units) stops waiting.
The run's end is thereby a bounded wait for the sessions' last requests, whatever length they
were drawn: a long call under a loaded CPU (its rounds slower than planned) used to run past the
runner's drain timeout, be cancelled between requests and leave its reservation in the OCS.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from dataclasses import dataclass, field

from protocol.aio import DiameterClient
from protocol.capabilities import LocalIdentity
from protocol.constants import CommandCode, CommandFlag, ResultCode
from protocol.errors import StateError
from protocol.message import Avp, Message, answer_to, avp
from simulator.faults import NO_FAULTS, FaultDice
from simulator.records import NO_ANSWER, Recorder

SUCCESS = int(ResultCode.DIAMETER_SUCCESS)
TOO_BUSY = int(ResultCode.DIAMETER_TOO_BUSY)
LIMITED_SUCCESS = int(ResultCode.DIAMETER_LIMITED_SUCCESS)
FAILURE_HANDLING = ("TERMINATE", "RETRY_AND_TERMINATE")  # what the elements play (CONTINUE: see simulator.sessions)


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
    # How long a request waits for the server to accept a connection again: one Tc, the pause
    # between reconnection attempts (RFC 6733 section 2.1, 30 s recommended).
    reconnect_seconds: float = 30.0


RECONNECT_FIRST_PAUSE_SECONDS = 0.05
RECONNECT_PAUSE_LIMIT_SECONDS = 1.0


@dataclass(slots=True)
class _Control:
    """What the server asked of one open session (RFC 4006 sections 5.5 and 5.6)."""

    account_id: str = ""  # the line the session is of: a lifecycle change is timed by it
    aborted: bool = False  # an Abort-Session-Request came: the OCS ended the session
    hung_up: bool = False  # the run's traffic ended: the user ends the session at its next round
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
        self._hanging_up = False  # the run's traffic ended: every session, open or new, hangs up
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

    def open_session(self, account_id: str = "") -> str:
        """A new Session-Id, ``<DiameterIdentity>;<high 32 bits>;<low 32 bits>`` (RFC 6733 section 8.8)."""
        session_id = f"{self.identity.origin_host};{self._boot_seconds};{next(self._session_numbers)}"
        self.controls[session_id] = _Control(account_id, hung_up=self._hanging_up)
        return session_id

    def close_session(self, session_id: str) -> None:
        self.controls.pop(session_id, None)

    def aborted(self, session_id: str) -> bool:
        control = self.controls.get(session_id)
        return control is not None and control.aborted

    def hung_up(self, session_id: str) -> bool:
        """Whether the session's user hangs up: the run's traffic ended (``hang_up``)."""
        control = self.controls.get(session_id)
        return control is not None and control.hung_up

    def hang_up(self) -> None:
        """The run's traffic ended: every session on the element, open now or opened later, ends
        at its next round with its CCR-TERMINATION; a session waiting for a RAR is woken."""
        self._hanging_up = True
        for control in self.controls.values():
            control.hung_up = True
            control.reauthorise.set()  # ends a wait in ``reauthorised``, which then answers False

    async def reauthorised(self, session_id: str, wait_seconds: float) -> bool:
        """Whether a RAR for the session comes within ``wait_seconds`` (or came already); False
        at once when an ASR or the run's end (``hang_up``) comes first."""
        control = self.controls.get(session_id)
        if control is None or control.hung_up:
            return False
        if not control.reauthorise.is_set():
            if wait_seconds <= 0:
                return False
            try:
                await asyncio.wait_for(control.reauthorise.wait(), wait_seconds)
            except TimeoutError:
                return False
        control.reauthorise.clear()
        return not control.aborted and not control.hung_up

    async def _open_client(self) -> DiameterClient:
        """The open connection, after reconnecting if it broke; while the server refuses, tries
        again with doubling pauses for up to ``reconnect_seconds``, then raises the last error."""
        deadline = time.monotonic() + self.timing.reconnect_seconds
        pause = RECONNECT_FIRST_PAUSE_SECONDS
        while True:
            try:
                return await self._reconnect()
            except (OSError, StateError):
                if time.monotonic() + pause > deadline:
                    raise
            await asyncio.sleep(pause)  # outside the lock: other requests may find it open
            pause = min(2 * pause, RECONNECT_PAUSE_LIMIT_SECONDS)

    async def _reconnect(self) -> DiameterClient:
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
            try:
                client = await self._open_client()
                started = time.perf_counter()  # the latency of the answer, not of the reconnection
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
        if control is not None and control.account_id:
            self.recorder.server_request_seen(control.account_id, time.monotonic())
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
