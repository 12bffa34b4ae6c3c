"""Events the peer state machine hands to its owner (frozen, slotted: they are values)."""

from __future__ import annotations

from dataclasses import dataclass

from protocol.capabilities import PeerCapabilities
from protocol.errors import Failure
from protocol.message import Message


@dataclass(frozen=True, slots=True)
class PeerOpened:
    """Capabilities exchange succeeded; application messages may flow."""

    capabilities: PeerCapabilities


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A valid application request; the owner answers it with ``PeerConnection.send_answer``."""

    message: Message


@dataclass(frozen=True, slots=True)
class AnswerReceived:
    """An answer to one of our requests; ``context`` is what was given to ``send_request``."""

    message: Message
    context: object
    failures: tuple[Failure, ...]


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """We answered a request ourselves with an error (decode, grammar, overload)."""

    message: Message | None
    failure: Failure


@dataclass(frozen=True, slots=True)
class DuplicateAnswered:
    """A retransmitted request was answered from the duplicate cache."""

    origin_host: str
    end_to_end: int


@dataclass(frozen=True, slots=True)
class PeerSuspect:
    """The watchdog got no answer for 2 x Tw (RFC 3539 "failover")."""


@dataclass(frozen=True, slots=True)
class PeerRecovered:
    """The watchdog heard from a suspect peer again (RFC 3539 "failback")."""


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The connection is finished; ``unanswered`` are the contexts of our requests still open."""

    reason: str
    unanswered: tuple[object, ...]


Event = (
    PeerOpened
    | RequestReceived
    | AnswerReceived
    | RequestRejected
    | DuplicateAnswered
    | PeerSuspect
    | PeerRecovered
    | PeerClosed
)
