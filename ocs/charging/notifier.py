"""Server-initiated requests for the sessions this server carries (RFC 4006 section 5.5,
RFC 6733 section 8.5).

Theory of operation: the charging handler reports, as events, which sessions are open at which
client and which got their final units. After a top-up, every session of the account in
final-unit state gets a Re-Auth-Request (AUTHORIZE_ONLY), so the client comes back with a CCR-U
and is granted from the new balance. A status change reaches every open session of the account
at once (issue 13, "The lifecycle, enforced on live sessions"): suspended or resumed, each gets a
Re-Auth-Request, so its CCR-U in answer gets the suspended treatment (the plan's
Final-Unit-Indication, RFC 8506 section 5.6) or normal grants again, instead of waiting out the
Validity-Time; barred or terminated, each gets an Abort-Session-Request. Requests go to the connection whose peer is the
session's Origin-Host. What this server knows is what it answered: with several server
processes, each notifies the sessions it carries.

The notifier learns of top-ups and status changes as account events (``ocs.events``): it
subscribes ``on_account_event`` to the ``AccountEvents`` seam; nobody calls it to notify.

Answers: each request is sent with a ``NotifierRequest`` as its context, so its RAA or ASA comes
back to ``answered`` (through the server's event handler). The Result-Code is counted
(``Metrics.server_request_answered``); 5002 DIAMETER_UNKNOWN_SESSION_ID means the client no longer
has the session (RFC 6733 section 7.1.5; RFC 4006 section 5.5 for RAR, RFC 6733 section 8.5.2 for
ASR), so the notifier forgets it; any other failure is logged with the Result-Code and the
session. A request whose connection closed before its answer is counted as "unanswered".

Sessions that end elsewhere: a session closed by Tcc supervision is forgotten here by
``forget_sessions``, called by the supervision pass of this process or, with several workers,
from the pass of the worker holding the duty through the event stream (ocs/event_transport.py).
What no event reports (a session's CCR-T answered by another worker, after its client moved to
another connection) ``sweep`` catches: run every Tcc (ocs/worker.py), it forgets the sessions
this process has not answered for ``SWEEP_IDLE_PASSES`` passes, longer than the engine keeps a
silent session. Keeping the mark costs one attribute store per CCR-U; no clock is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from balance.types import AccountStatus
from ocs.events import (
    AccountEvent,
    BalanceChanged,
    ChargingEvent,
    FinalUnitGranted,
    SessionActive,
    SessionEnded,
)
from ocs.metrics import Metrics
from protocol.aio import DiameterTransport
from protocol.capabilities import LocalIdentity
from protocol.constants import ApplicationId, CommandCode, ResultCode
from protocol.message import Message, avp, request

log = structlog.get_logger("ocs.charging.notifier")

RE_AUTH_AUTHORIZE_ONLY = 0  # Re-Auth-Request-Type, RFC 6733 section 8.12
_BLOCKING = (AccountStatus.BARRED, AccountStatus.TERMINATED)
# Statuses whose treatment the sessions learn by asking again: suspended (the suspended
# Final-Unit-Indication) and active (normal grants); RFC 4006 section 5.5.
_RE_AUTHORIZED = (AccountStatus.SUSPENDED, AccountStatus.ACTIVE)
# The command label of the requests this server sends (RFC 6733 sections 8.3 and 8.5).
_COMMAND_LABELS = {CommandCode.RE_AUTH: "RAR", CommandCode.ABORT_SESSION: "ASR"}
UNANSWERED = "unanswered"  # the result label of a request whose connection closed first
MISSING = "missing"  # an answer without Result-Code (RFC 6733 section 7.2: an Experimental-Result)
OTHER = "other"  # a Result-Code of no RFC this server knows: the label set stays bounded
_KNOWN_RESULT_CODES = frozenset(int(code) for code in ResultCode)
# A session the sweep forgets was last answered here before the pass SWEEP_IDLE_PASSES - 1
# passes back: more than two Tcc ago, so the engine has closed it (its deadline is its last
# request's time + Tcc, that time ours or the request's Event-Timestamp, at most a skew ahead) or
# another process answers it now. Forgetting one too early costs at most a RAR not sent: the
# session asks again at its Validity-Time.
SWEEP_IDLE_PASSES = 3


@dataclass(frozen=True, slots=True)
class NotifierRequest:
    """The context of a RAR or ASR: what its answer is about."""

    command: CommandCode
    session_id: str


def result_label(result_code: object) -> str:
    """A peer's Result-Code as a bounded label: one of RFC 6733 / 4006's codes, else "other"."""
    if result_code is None:
        return MISSING
    return str(result_code) if isinstance(result_code, int) and result_code in _KNOWN_RESULT_CODES else OTHER


@dataclass(slots=True)
class _Session:
    origin_host: str
    origin_realm: str
    final: bool = False
    seen: int = 0  # the sweep pass during which this process last answered the session


class SessionNotifier:
    def __init__(
        self,
        identity: LocalIdentity,
        connections: Callable[[], Iterable[DiameterTransport]],
        metrics: Metrics,
    ) -> None:
        self.identity = identity
        self.connections = connections
        self.metrics = metrics
        self._sessions: dict[str, dict[str, _Session]] = {}  # account -> session id -> where
        self._account_of: dict[str, str] = {}  # session id -> account
        self._pass = 0  # sweep passes so far
        self.sent: list[Message] = []  # the last requests sent (bounded), for tests and logs

    def observe(self, event: ChargingEvent) -> None:
        if isinstance(event, SessionActive):
            sessions = self._sessions.setdefault(event.account_id, {})
            known = sessions.get(event.session_id)
            if known is None:
                sessions[event.session_id] = _Session(event.origin_host, event.origin_realm, seen=self._pass)
                self._account_of[event.session_id] = event.account_id
            else:
                known.seen = self._pass
        elif isinstance(event, FinalUnitGranted):
            session = self._sessions.get(event.account_id, {}).get(event.session_id)
            if session is not None:
                session.final = True
        elif isinstance(event, SessionEnded):
            self._account_of.pop(event.session_id, None)
            open_sessions = self._sessions.get(event.account_id)
            if open_sessions is not None:
                open_sessions.pop(event.session_id, None)
                if not open_sessions:
                    del self._sessions[event.account_id]

    def forget_session(self, session_id: str) -> None:
        """A session that ended without us answering its end (closed by Tcc supervision)."""
        account_id = self._account_of.get(session_id)
        if account_id is not None:
            self.observe(SessionEnded(account_id, session_id))

    def forget_sessions(self, session_ids: Iterable[str]) -> int:
        """Sessions closed by Tcc supervision, here or in another worker; returns how many of
        them this process carried."""
        carried = 0
        for session_id in session_ids:
            if session_id in self._account_of:
                self.forget_session(session_id)
                carried += 1
        return carried

    def sweep(self) -> int:
        """One pass (every Tcc): forget the sessions not answered here for ``SWEEP_IDLE_PASSES``
        passes (see the module docstring); returns how many."""
        self._pass += 1
        oldest_kept = self._pass - SWEEP_IDLE_PASSES + 1
        idle = [
            session_id
            for sessions in self._sessions.values()
            for session_id, session in sessions.items()
            if session.seen < oldest_kept
        ]
        for session_id in idle:
            self.forget_session(session_id)
        return len(idle)

    @property
    def open_sessions(self) -> int:
        return len(self._account_of)

    def on_account_event(self, event: AccountEvent) -> int:
        """The subscriber of the ``AccountEvents`` seam: returns how many requests were sent."""
        if isinstance(event, BalanceChanged):
            # Money or units came in: final-unit sessions may be granted again. A withdrawal
            # changes nothing for them (their final grant stands).
            return self.account_topped_up(event.account_id) if event.micros >= 0 else 0
        if event.status in _BLOCKING:
            return self.account_blocked(event.account_id)  # ASR to its open sessions
        if event.status in _RE_AUTHORIZED:
            return self.account_re_authorized(event.account_id)  # RAR: each asks again at once
        return 0

    def answered(self, answer: Message, context: object) -> bool:
        """The RAA or ASA of a request sent here; False when ``context`` is not ours."""
        if not isinstance(context, NotifierRequest):
            return False
        result_code = answer.get("Result-Code")
        command = _COMMAND_LABELS[context.command]
        self.metrics.server_request_answered(command, result_label(result_code))
        if result_code == ResultCode.DIAMETER_UNKNOWN_SESSION_ID:
            self.forget_session(context.session_id)
            log.info("notify_session_unknown", command=command, session_id=context.session_id)
        elif not (isinstance(result_code, int) and 2000 <= result_code < 3000):  # RFC 6733 section 7.1.2
            log.warning("notify_failed", command=command, result_code=result_code, session_id=context.session_id)
        return True

    def unanswered(self, contexts: Iterable[object]) -> None:
        """Requests whose connection closed before their answer came."""
        for context in contexts:
            if isinstance(context, NotifierRequest):
                command = _COMMAND_LABELS[context.command]
                self.metrics.server_request_answered(command, UNANSWERED)
                log.warning("notify_unanswered", command=command, session_id=context.session_id)

    def account_topped_up(self, account_id: str) -> int:
        """RAR to every session of the account in final-unit state; returns how many were sent."""
        return self._re_authorize(account_id, final_only=True)

    def account_re_authorized(self, account_id: str) -> int:
        """RAR to every open session of the account, in final-unit state or not; returns how
        many were sent. Each comes back with a CCR-U answered under the account's new status."""
        return self._re_authorize(account_id, final_only=False)

    def _re_authorize(self, account_id: str, *, final_only: bool) -> int:
        sent = 0
        for session_id, session in list(self._sessions.get(account_id, {}).items()):
            if (session.final or not final_only) and self._send(CommandCode.RE_AUTH, session_id, session):
                session.final = False
                sent += 1
        return sent

    def account_blocked(self, account_id: str) -> int:
        """ASR to every open session of the account; returns how many were sent."""
        sent = 0
        for session_id, session in list(self._sessions.get(account_id, {}).items()):
            if self._send(CommandCode.ABORT_SESSION, session_id, session):
                sent += 1
        return sent

    def _send(self, command: CommandCode, session_id: str, session: _Session) -> bool:
        transport = next(
            (
                connection
                for connection in self.connections()
                if connection.peer.capabilities is not None
                and connection.peer.capabilities.origin_host == session.origin_host
            ),
            None,
        )
        if transport is None:
            log.info("notify_no_connection", session_id=session_id, peer=session.origin_host)
            return False
        avps = [
            avp("Session-Id", session_id),
            *self.identity.origin_avps(),
            avp("Destination-Realm", session.origin_realm),
            avp("Destination-Host", session.origin_host),
            avp("Auth-Application-Id", int(ApplicationId.CREDIT_CONTROL)),
        ]
        if command is CommandCode.RE_AUTH:
            avps.append(avp("Re-Auth-Request-Type", RE_AUTH_AUTHORIZE_ONLY))
        message = request(int(command), int(ApplicationId.CREDIT_CONTROL), avps)
        transport.send_request(message, NotifierRequest(command, session_id))  # the answer: ``answered``
        self.sent = [*self.sent[-99:], message]
        log.info("notify_sent", command=command.name, session_id=session_id, peer=session.origin_host)
        return True
