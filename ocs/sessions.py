"""Server-initiated requests for the sessions this server carries (RFC 4006 section 5.5,
RFC 6733 section 8.5).

Theory of operation: the charging handler reports, as events, which sessions are open at which
client and which got their final units. After a top-up, every session of the account in
final-unit state gets a Re-Auth-Request (AUTHORIZE_ONLY), so the client comes back with a CCR-U
and is granted from the new balance; when an account is barred or terminated, each of its open
sessions gets an Abort-Session-Request. Requests go to the connection whose peer is the
session's Origin-Host. What this server knows is what it answered: with several server
processes, each notifies the sessions it carries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from ocs.events import ChargingEvent, FinalUnitGranted, SessionActive, SessionEnded
from protocol.aio import DiameterTransport
from protocol.capabilities import LocalIdentity
from protocol.constants import ApplicationId, CommandCode
from protocol.message import Message, avp, request

log = structlog.get_logger("ocs.sessions")

RE_AUTH_AUTHORIZE_ONLY = 0  # Re-Auth-Request-Type, RFC 6733 section 8.12


@dataclass(slots=True)
class _Session:
    origin_host: str
    origin_realm: str
    final: bool = False


class SessionNotifier:
    def __init__(self, identity: LocalIdentity, connections: Callable[[], Iterable[DiameterTransport]]) -> None:
        self.identity = identity
        self.connections = connections
        self._sessions: dict[str, dict[str, _Session]] = {}  # account -> session id -> where
        self._account_of: dict[str, str] = {}  # session id -> account
        self.sent: list[Message] = []  # the last requests sent (bounded), for tests and logs

    def observe(self, event: ChargingEvent) -> None:
        if isinstance(event, SessionActive):
            sessions = self._sessions.setdefault(event.account_id, {})
            if event.session_id not in sessions:
                sessions[event.session_id] = _Session(event.origin_host, event.origin_realm)
                self._account_of[event.session_id] = event.account_id
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

    @property
    def open_sessions(self) -> int:
        return len(self._account_of)

    def account_topped_up(self, account_id: str) -> int:
        """RAR to every session of the account in final-unit state; returns how many were sent."""
        sent = 0
        for session_id, session in list(self._sessions.get(account_id, {}).items()):
            if session.final and self._send(CommandCode.RE_AUTH, session_id, session):
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
        transport.send_request(message)  # the RAA / ASA reaches the server's event log
        self.sent = [*self.sent[-99:], message]
        log.info("notify_sent", command=command.name, session_id=session_id, peer=session.origin_host)
        return True
