"""One Diameter connection, sans-IO: capabilities, watchdog, disconnect, request routing.

Theory of operation: ``PeerConnection`` is fed bytes (``receive_data``), the owner's actions
(``send_request``, ``send_answer``, ``disconnect``) and the time (``handle_timer(now)``); it
returns ``Event`` values and accumulates bytes for ``data_to_send``. It owns no socket, loop or
clock: the asyncio glue in ``protocol.aio`` drives it. The connection state machine is the table
``TRANSITIONS``: ``(state, input) -> (action, next state)`` with the RFC 6733 section 5.6 row
each entry realises; a pair not in the table is a protocol violation and closes the connection.
Requests that fail decoding or grammar are answered here with the right Result-Code and
Failed-AVP, so the application only ever sees well-formed requests. Over the in-flight limit a
request is answered 3004 at once (RFC 4006 section 5.7 lets the client fail over).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from enum import Enum

from protocol.capabilities import (
    CapabilitiesVerdict,
    LocalIdentity,
    PeerCapabilities,
    PeerPolicy,
    base_answer_avps,
    build_cea,
    build_cer,
    evaluate_capabilities,
    result_code_of,
)
from protocol.codec import FrameReader, decode, encode
from protocol.constants import (
    MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION,
    CommandCode,
    ResultCode,
    is_protocol_error,
)
from protocol.disconnect import DisconnectCause, build_dpa, build_dpr, build_dwa, build_dwr
from protocol.duplicates import DuplicateCache, request_identity
from protocol.encoded import EncodedAnswer
from protocol.errors import EncodeError, Failure, PeerError, StateError
from protocol.events import (
    AnswerReceived,
    DuplicateAnswered,
    Event,
    PeerClosed,
    PeerOpened,
    PeerRecovered,
    PeerSuspect,
    RequestReceived,
    RequestRejected,
)
from protocol.grammar import validate
from protocol.message import Avp, Message, answer_to, avp
from protocol.pending import IdentifierSource, IncomingRequests, OutgoingRequests
from protocol.watchdog import DEFAULT_TW_SECONDS, MINIMUM_TW_SECONDS, Watchdog, WatchdogAction, WatchdogInput

CAPABILITIES_TIMEOUT_SECONDS = 10.0  # ours: how long a new connection may stay silent before CER/CEA
DPA_TIMEOUT_SECONDS = 5.0  # ours: how long we wait for DPA before closing anyway


_BASE_COMMANDS = frozenset(
    {CommandCode.CAPABILITIES_EXCHANGE, CommandCode.DEVICE_WATCHDOG, CommandCode.DISCONNECT_PEER}
)


class Role(Enum):
    SERVER = "server"  # accepted the connection; waits for CER (RFC 6733 "responder")
    CLIENT = "client"  # opened the connection; sends CER (RFC 6733 "initiator")


class PeerState(Enum):
    WAIT_CONNECTION = "Wait-Conn-Ack"
    WAIT_CER = "Wait-CER"
    WAIT_CEA = "Wait-I-CEA"
    OPEN = "Open"
    CLOSING = "Closing"
    CLOSED = "Closed"


class PeerInput(Enum):
    CONNECTED = "connection established"
    CER_ACCEPTED = "CER received, acceptable"
    CER_REFUSED = "CER received, refused"
    CEA_ACCEPTED = "CEA received, success"
    CEA_REFUSED = "CEA received, failure"
    DWR = "DWR received"
    DWA = "DWA received"
    DPR = "DPR received"
    DPA = "DPA received"
    APPLICATION_REQUEST = "application request received"
    APPLICATION_ANSWER = "application answer received"
    DISCONNECT = "local disconnect"
    TIMEOUT = "capabilities or DPA timeout"
    CONNECTION_LOST = "transport closed"


Action = Callable[["PeerConnection", Message | None], None]


class PeerConnection:
    def __init__(
        self,
        role: Role,
        identity: LocalIdentity,
        policy: PeerPolicy,
        now: float,
        *,
        duplicates: DuplicateCache | None = None,
        tw_seconds: float = DEFAULT_TW_SECONDS,
        minimum_tw_seconds: float = MINIMUM_TW_SECONDS,
        max_in_flight: int = MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION,
        rng: random.Random | None = None,
    ) -> None:
        self.role = role
        self.identity = identity
        self.policy = policy
        self.state = PeerState.WAIT_CER if role is Role.SERVER else PeerState.WAIT_CONNECTION
        self.capabilities: PeerCapabilities | None = None
        self.duplicates = duplicates
        self.max_in_flight = max_in_flight
        self._rng = rng or random.Random()
        self._identifiers = IdentifierSource(now, self._rng)
        self._watchdog = Watchdog(tw_seconds, self._rng, minimum_tw_seconds=minimum_tw_seconds)
        self._reader = FrameReader()
        self._outgoing = OutgoingRequests()
        self._incoming = IncomingRequests()
        self._send_buffer: list[bytes] = []
        self._events: list[Event] = []
        self._now = now
        self._state_deadline: float | None = now + CAPABILITIES_TIMEOUT_SECONDS
        self._dwr_hop_by_hop: int | None = None
        self.close_requested = False
        # Set with close_requested when what is still queued for the peer is not worth waiting for
        # (the watchdog gave up on it: it reads nothing), so the glue aborts instead of draining.
        self.abort_requested = False

    # --- owner API ------------------------------------------------------------------------
    def connection_made(self, now: float) -> list[Event]:
        self._now = now
        if self.role is Role.CLIENT:
            self._apply(PeerInput.CONNECTED, None)
        else:
            self._state_deadline = now + CAPABILITIES_TIMEOUT_SECONDS
        return self._take_events()

    def connection_lost(self, now: float) -> list[Event]:
        self._now = now
        self._apply(PeerInput.CONNECTION_LOST, None)
        return self._take_events()

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the transport; returns the events they caused."""
        self._now = now
        if self.state is PeerState.CLOSED:
            return []
        try:
            frames = self._reader.feed(data)
        except PeerError as error:
            self._close(f"protocol violation: unframeable input: {error}")
            return self._take_events()
        for frame in frames:
            if self.close_requested:
                break
            self._receive_frame(frame)
        return self._take_events()

    def send_request(self, message: Message, context: object = None) -> Message:
        """Stamp identifiers on an application request and queue it; answers come as
        ``AnswerReceived`` with ``context``."""
        if self.state is not PeerState.OPEN:
            raise StateError(f"cannot send requests in state {self.state.value}")
        message.hop_by_hop = self._identifiers.next_hop_by_hop()
        if not message.end_to_end:
            message.end_to_end = self._identifiers.next_end_to_end()
        self._outgoing.add(message.hop_by_hop, context)
        self._send_buffer.append(encode(message))
        return message

    def send_answer(self, answer: Message | EncodedAnswer) -> None:
        """Queue the answer to a ``RequestReceived`` (a message, or one the application encoded
        itself: ``protocol.encoded``); remembers it for duplicate detection."""
        pending = self._incoming.pop(answer.hop_by_hop)
        if self.state is PeerState.CLOSED:
            return
        encoded = answer.data if isinstance(answer, EncodedAnswer) else encode(answer)
        # A protocol error (E bit, RFC 6733 section 7.1.3; 3004 above all) means the request was
        # not processed: a retransmission must be processed anew, not answered from the cache.
        if pending is not None and self.duplicates is not None and not answer.is_error:
            self.duplicates.remember(pending[0], pending[1], encoded)
        self._send_buffer.append(encoded)

    def disconnect(self, now: float, cause: DisconnectCause = DisconnectCause.REBOOTING) -> list[Event]:
        self._now = now
        self._disconnect_cause = cause
        self._apply(PeerInput.DISCONNECT, None)
        return self._take_events()

    def data_to_send(self) -> bytes:
        data = b"".join(self._send_buffer)
        self._send_buffer.clear()
        return data

    @property
    def in_flight(self) -> int:
        """Requests received and not answered yet."""
        return len(self._incoming)

    @property
    def awaiting_answers(self) -> int:
        return len(self._outgoing)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._state_deadline, self._watchdog.deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> list[Event]:
        self._now = now
        if self.state is PeerState.CLOSED:
            return []
        if self._state_deadline is not None and now >= self._state_deadline:
            self._state_deadline = None
            self._apply(PeerInput.TIMEOUT, None)
        if self.state in (PeerState.OPEN, PeerState.CLOSING):
            self._watchdog_actions(self._watchdog.handle_timer(now))
        return self._take_events()

    # --- input classification ---------------------------------------------------------------
    def _receive_frame(self, frame: bytes) -> None:
        try:
            decoded = decode(frame)
        except PeerError as error:
            self._close(f"protocol violation: undecodable frame: {error}")
            return
        message = decoded.message
        failures = decoded.failures
        if failures and failures[0].result_code == ResultCode.DIAMETER_UNSUPPORTED_VERSION and not message.is_request:
            # RFC 6733 section 7.1.5 answers a request of another version; an answer of one
            # cannot be answered, nor read as ours.
            self._close(f"protocol violation: answer of unsupported {failures[0].reason}")
            return
        if self.state in (PeerState.OPEN, PeerState.CLOSING):
            is_dwa = message.command_code == CommandCode.DEVICE_WATCHDOG and not message.is_request
            self._watchdog_actions(
                self._watchdog.handle(WatchdogInput.RECEIVE_DWA if is_dwa else WatchdogInput.RECEIVE_OTHER, self._now)
            )
        if not message.is_request:
            self._receive_answer(message, decoded.failures)
            return
        code = message.command_code
        if code not in _BASE_COMMANDS and self.state not in (PeerState.OPEN, PeerState.CLOSING):
            # RFC 6733 section 5.3: nothing but CER before the capabilities exchange; the
            # table has no row for it, so the connection closes as a protocol violation.
            self._apply(PeerInput.APPLICATION_REQUEST, message)
            return
        failures = failures or validate(message, self._applications(), shape=decoded.shape)
        if failures:
            self._reject(message, failures[0])
            return
        if code == CommandCode.CAPABILITIES_EXCHANGE:
            verdict = evaluate_capabilities(message, self.identity, self.policy)
            self._last_verdict = verdict
            accepted = verdict.result_code == ResultCode.DIAMETER_SUCCESS
            self._apply(PeerInput.CER_ACCEPTED if accepted else PeerInput.CER_REFUSED, message)
        elif code == CommandCode.DEVICE_WATCHDOG:
            self._apply(PeerInput.DWR, message)
        elif code == CommandCode.DISCONNECT_PEER:
            self._apply(PeerInput.DPR, message)
        else:
            self._apply(PeerInput.APPLICATION_REQUEST, message)

    def _receive_answer(self, message: Message, failures: list[Failure]) -> None:
        code = message.command_code
        if code == CommandCode.CAPABILITIES_EXCHANGE:
            verdict = evaluate_capabilities(message, self.identity, PeerPolicy())
            self._last_verdict = verdict
            success = result_code_of(message) == ResultCode.DIAMETER_SUCCESS and verdict.capabilities is not None
            self._apply(PeerInput.CEA_ACCEPTED if success else PeerInput.CEA_REFUSED, message)
        elif code == CommandCode.DEVICE_WATCHDOG:
            self._apply(PeerInput.DWA, message)
        elif code == CommandCode.DISCONNECT_PEER:
            self._apply(PeerInput.DPA, message)
        else:
            self._pending_failures = tuple(failures)
            self._apply(PeerInput.APPLICATION_ANSWER, message)

    def _applications(self) -> frozenset[int]:
        if self.capabilities is not None:
            return self.capabilities.applications
        return frozenset({0})  # before the exchange only base messages make sense

    # --- the table --------------------------------------------------------------------------
    def _apply(self, event: PeerInput, message: Message | None) -> None:
        if self.state is PeerState.CLOSED:
            return
        transition = TRANSITIONS.get((self.state, event))
        if transition is None:
            self._close(f"protocol violation: {event.value} in state {self.state.value}")
            return
        action, next_state = transition
        action(self, message)
        if not self.close_requested:  # an action may have closed already
            self.state = next_state

    def _take_events(self) -> list[Event]:
        events = self._events
        self._events = []
        return events

    def _close(self, reason: str, *, abort: bool = False) -> None:
        if self.state is PeerState.CLOSED:
            return
        self.state = PeerState.CLOSED
        self.close_requested = True
        self.abort_requested = abort
        self._state_deadline = None
        self._watchdog.deadline = None
        self._events.append(PeerClosed(reason, self._outgoing.drain()))

    # --- actions (one per table row kind) ------------------------------------------------------
    def _send_cer(self, message: Message | None) -> None:
        cer = build_cer(self.identity)
        cer.hop_by_hop = self._identifiers.next_hop_by_hop()
        cer.end_to_end = self._identifiers.next_end_to_end()
        self._send_buffer.append(encode(cer))
        self._state_deadline = self._now + CAPABILITIES_TIMEOUT_SECONDS

    def _accept_cer(self, message: Message | None) -> None:
        assert message is not None
        verdict: CapabilitiesVerdict = self._last_verdict
        self._send_buffer.append(encode(build_cea(self.identity, message, ResultCode.DIAMETER_SUCCESS)))
        self._open(verdict)

    def _refuse_cer(self, message: Message | None) -> None:
        assert message is not None
        verdict: CapabilitiesVerdict = self._last_verdict
        self._send_buffer.append(encode(build_cea(self.identity, message, verdict.result_code, verdict.reason)))
        self._close(f"capabilities refused: {verdict.result_code.name} {verdict.reason}")

    def _answer_repeated_cer(self, message: Message | None) -> None:
        # R-Open, R-Rcv-CER: R-Snd-CEA (RFC 6733 section 5.6); the session stays as it was.
        assert message is not None
        self._send_buffer.append(encode(build_cea(self.identity, message, self._last_verdict.result_code)))

    def _accept_cea(self, message: Message | None) -> None:
        self._open(self._last_verdict)

    def _refuse_cea(self, message: Message | None) -> None:
        code = result_code_of(message) if message is not None else None
        self._close(f"capabilities refused by peer: Result-Code {code} {self._last_verdict.reason}")

    def _open(self, verdict: CapabilitiesVerdict) -> None:
        assert verdict.capabilities is not None
        self.capabilities = verdict.capabilities
        self._state_deadline = None
        self._watchdog.handle(WatchdogInput.CONNECTION_UP, self._now)
        self._events.append(PeerOpened(verdict.capabilities))

    def _send_dwa(self, message: Message | None) -> None:
        assert message is not None
        self._send_buffer.append(encode(build_dwa(self.identity, message)))

    def _take_dwa(self, message: Message | None) -> None:
        pass  # the watchdog already counted it in _receive_frame

    def _ignore(self, message: Message | None) -> None:
        pass

    def _send_dpa_and_close(self, message: Message | None) -> None:
        assert message is not None
        self._send_buffer.append(encode(build_dpa(self.identity, message)))
        cause = message.get("Disconnect-Cause")
        self._close(f"peer sent DPR (Disconnect-Cause {cause!r})")

    def _send_dpr(self, message: Message | None) -> None:
        dpr = build_dpr(self.identity, getattr(self, "_disconnect_cause", DisconnectCause.REBOOTING))
        dpr.hop_by_hop = self._identifiers.next_hop_by_hop()
        dpr.end_to_end = self._identifiers.next_end_to_end()
        self._send_buffer.append(encode(dpr))
        self._state_deadline = self._now + DPA_TIMEOUT_SECONDS

    def _close_on_dpa(self, message: Message | None) -> None:
        self._close("disconnected (DPA received)")

    def _close_on_timeout(self, message: Message | None) -> None:
        self._close(f"timed out in state {self.state.value}")

    def _close_on_refusal_or_loss(self, message: Message | None) -> None:
        self._close("transport closed")

    def _close_quietly(self, message: Message | None) -> None:
        self._close("closed before opening")

    def _deliver_request(self, message: Message | None) -> None:
        assert message is not None
        origin_host = message.get("Origin-Host")
        key = (origin_host if isinstance(origin_host, str) else "", message.end_to_end)
        identity = request_identity(message)
        if self.duplicates is not None:
            replay = self.duplicates.replay(key, identity, message.hop_by_hop)
            if replay is not None:
                self._send_buffer.append(replay)
                self._events.append(DuplicateAnswered(key[0], key[1]))
                return
        if len(self._incoming) >= self.max_in_flight:
            self._reject(message, Failure(ResultCode.DIAMETER_TOO_BUSY, None, "too many requests in flight"))
            return
        self._incoming.add(message.hop_by_hop, key, identity)
        self._events.append(RequestReceived(message))

    def _deliver_answer(self, message: Message | None) -> None:
        assert message is not None
        found, context = self._outgoing.pop(message.hop_by_hop)
        if found:  # RFC 6733 section 6.2: answers matching no request are discarded
            self._events.append(AnswerReceived(message, context, self._pending_failures))

    def _reject(self, message: Message, failure: Failure) -> None:
        """Answer a request with an error ourselves (RFC 6733 section 7)."""
        avps = list(base_answer_avps(self.identity, message, int(failure.result_code)))
        if failure.reason:
            avps.append(avp("Error-Message", failure.reason[:200]))
        if failure.failed_avp is not None:
            avps.append(avp("Failed-AVP", [failure.failed_avp]))
        answer = answer_to(message, avps, error=is_protocol_error(failure.result_code))
        try:
            encoded = encode(answer)
        except EncodeError:
            # The echo of a huge request does not fit our size limit: answer with the offending
            # AVP's header only (RFC 6733 section 7.5 allows a Failed-AVP without its full data).
            avps = list(base_answer_avps(self.identity, message, int(failure.result_code)))
            failed = failure.failed_avp
            if failed is not None:
                avps.append(avp("Failed-AVP", [Avp(failed.code, failed.flags, failed.vendor_id, b"")]))
            try:
                encoded = encode(answer_to(message, avps, error=is_protocol_error(failure.result_code)))
            except EncodeError:
                self._close("an answer to this request cannot be encoded within the size limit")
                return
        self._send_buffer.append(encoded)
        self._events.append(RequestRejected(message, failure))

    def _watchdog_actions(self, actions: list[WatchdogAction]) -> None:
        for action in actions:
            if action is WatchdogAction.SEND_DWR:
                dwr = build_dwr(self.identity)
                dwr.hop_by_hop = self._identifiers.next_hop_by_hop()
                dwr.end_to_end = self._identifiers.next_end_to_end()
                self._send_buffer.append(encode(dwr))
            elif action is WatchdogAction.FAILOVER:
                self._events.append(PeerSuspect())
            elif action is WatchdogAction.FAILBACK:
                self._events.append(PeerRecovered())
            elif action is WatchdogAction.CLOSE_CONNECTION:
                # RFC 3539 section 3.4.1 CloseConnection(): the peer answered nothing for 2 x Tw,
                # so nothing queued for it will be read; abort rather than wait for a drain.
                self._close("watchdog: no answer for 2 x Tw (RFC 3539)", abort=True)

    _last_verdict: CapabilitiesVerdict
    _pending_failures: tuple[Failure, ...] = ()
    _disconnect_cause: DisconnectCause


_S = PeerState
_I = PeerInput
# (state, input) -> (action, next state). RFC 6733 section 5.6 rows in the comments; "R-" rows
# are the responder (our server role), "I-" rows the initiator (our client role).
TRANSITIONS: dict[tuple[PeerState, PeerInput], tuple[Action, PeerState]] = {
    # Wait-Conn-Ack, I-Rcv-Conn-Ack: I-Snd-CER -> Wait-I-CEA
    (_S.WAIT_CONNECTION, _I.CONNECTED): (PeerConnection._send_cer, _S.WAIT_CEA),
    (_S.WAIT_CONNECTION, _I.CONNECTION_LOST): (PeerConnection._close_quietly, _S.CLOSED),
    (_S.WAIT_CONNECTION, _I.DISCONNECT): (PeerConnection._close_quietly, _S.CLOSED),
    # Closed, R-Conn-CER: R-Accept, Process-CER, R-Snd-CEA -> R-Open
    (_S.WAIT_CER, _I.CER_ACCEPTED): (PeerConnection._accept_cer, _S.OPEN),
    # Process-CER found no common application / unknown peer: R-Snd-CEA (error), R-Disc -> Closed
    (_S.WAIT_CER, _I.CER_REFUSED): (PeerConnection._refuse_cer, _S.CLOSED),
    (_S.WAIT_CER, _I.TIMEOUT): (PeerConnection._close_on_timeout, _S.CLOSED),
    (_S.WAIT_CER, _I.CONNECTION_LOST): (PeerConnection._close_on_refusal_or_loss, _S.CLOSED),
    (_S.WAIT_CER, _I.DISCONNECT): (PeerConnection._close_quietly, _S.CLOSED),
    # Wait-I-CEA, I-Rcv-CEA: Process-CEA -> I-Open
    (_S.WAIT_CEA, _I.CEA_ACCEPTED): (PeerConnection._accept_cea, _S.OPEN),
    # Wait-I-CEA, I-Rcv-Non-CEA / CEA with failure: Error -> Closed
    (_S.WAIT_CEA, _I.CEA_REFUSED): (PeerConnection._refuse_cea, _S.CLOSED),
    # Wait-I-CEA, Timeout: Error -> Closed
    (_S.WAIT_CEA, _I.TIMEOUT): (PeerConnection._close_on_timeout, _S.CLOSED),
    (_S.WAIT_CEA, _I.CONNECTION_LOST): (PeerConnection._close_on_refusal_or_loss, _S.CLOSED),
    (_S.WAIT_CEA, _I.DISCONNECT): (PeerConnection._close_quietly, _S.CLOSED),
    # R-Open, R-Rcv-CER: R-Snd-CEA -> R-Open
    (_S.OPEN, _I.CER_ACCEPTED): (PeerConnection._answer_repeated_cer, _S.OPEN),
    (_S.OPEN, _I.CER_REFUSED): (PeerConnection._answer_repeated_cer, _S.OPEN),
    # Open, Rcv-DWR: Process-DWR, Snd-DWA -> Open
    (_S.OPEN, _I.DWR): (PeerConnection._send_dwa, _S.OPEN),
    # Open, Rcv-DWA: Process-DWA -> Open
    (_S.OPEN, _I.DWA): (PeerConnection._take_dwa, _S.OPEN),
    # Open, Rcv-DPR: Snd-DPA, Disc -> Closed
    (_S.OPEN, _I.DPR): (PeerConnection._send_dpa_and_close, _S.CLOSED),
    # Open, Rcv-Message: Process -> Open
    (_S.OPEN, _I.APPLICATION_REQUEST): (PeerConnection._deliver_request, _S.OPEN),
    (_S.OPEN, _I.APPLICATION_ANSWER): (PeerConnection._deliver_answer, _S.OPEN),
    # Open, Stop: Snd-DPR -> Closing
    (_S.OPEN, _I.DISCONNECT): (PeerConnection._send_dpr, _S.CLOSING),
    # Open, Peer-Disc: Cleanup -> Closed
    (_S.OPEN, _I.CONNECTION_LOST): (PeerConnection._close_on_refusal_or_loss, _S.CLOSED),
    # Closing, Rcv-DPA: Disc -> Closed
    (_S.CLOSING, _I.DPA): (PeerConnection._close_on_dpa, _S.CLOSED),
    # Closing, Timeout: Disc -> Closed
    (_S.CLOSING, _I.TIMEOUT): (PeerConnection._close_on_timeout, _S.CLOSED),
    # Closing, Peer-Disc: Cleanup -> Closed
    (_S.CLOSING, _I.CONNECTION_LOST): (PeerConnection._close_on_refusal_or_loss, _S.CLOSED),
    # Requests that crossed our DPR are still served, and answers still delivered
    # (RFC 6733 section 5.4: in-flight messages are drained before the transport closes).
    (_S.CLOSING, _I.APPLICATION_REQUEST): (PeerConnection._deliver_request, _S.CLOSING),
    (_S.CLOSING, _I.APPLICATION_ANSWER): (PeerConnection._deliver_answer, _S.CLOSING),
    (_S.CLOSING, _I.DWR): (PeerConnection._send_dwa, _S.CLOSING),
    (_S.CLOSING, _I.DWA): (PeerConnection._take_dwa, _S.CLOSING),
    # DPRs that crossed: answer and close
    (_S.CLOSING, _I.DPR): (PeerConnection._send_dpa_and_close, _S.CLOSED),
    # A second local Stop while Closing changes nothing.
    (_S.CLOSING, _I.DISCONNECT): (PeerConnection._ignore, _S.CLOSING),
}
