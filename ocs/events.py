"""Events as values: what the charging handler reports, and what happens to accounts.

Theory of operation, charging events: the handler does not know about connections; when
something happens that session supervision must act on later (a final grant, after which a top-up
should trigger a Re-Auth-Request, RFC 4006 section 5.5), it hands an event to an observer callable.

Account events: what the operator's side changes about an account that the network must learn
(its balance went up or down, its status changed) is published as a frozen value on one
``AccountEvents`` seam; whoever must act subscribes (the session notifier sends RAR or ASR to the
account's open sessions). The side that changes the account never calls the notifier, and the
notifier never knows who changed the account. Dispatch is synchronous, in the publisher's thread
and in subscription order; a subscriber that raises is logged and skipped, the others still run.
``publish`` returns the sum of what the subscribers return: the number of network requests this
process sent on the event's account (the API reports it as ``notified_sessions``).

Between server processes: every account event is plain data (strings and integers) and
``encode_event`` / ``decode_event`` turn it into JSON bytes and back. An ``EventTransport`` (for
example a Redis Pub/Sub channel or a Stream read by every process) is given to the seam; then
``publish`` also sends the encoded event on it, and the transport hands what other processes sent
to ``receive``, which dispatches it here without sending it again. Each process notifies the
sessions it carries (ocs/charging/notifier.py), so a top-up made through any process reaches every session;
the count ``publish`` returns stays local (the other processes' requests are not known yet).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import structlog

from balance.types import AccountStatus
from balance.value_type import value_type

log = structlog.get_logger("ocs.events")


@value_type
class FinalUnitGranted:
    """The session got the last units its balance affords (Final-Unit-Indication sent)."""

    account_id: str
    session_id: str
    origin_host: str


@value_type
class SessionActive:
    """A session request was answered; the session is open at ``origin_host``."""

    account_id: str
    session_id: str
    origin_host: str
    origin_realm: str


@value_type
class SessionEnded:
    account_id: str
    session_id: str


ChargingEvent = FinalUnitGranted | SessionActive | SessionEnded
ChargingObserver = Callable[[ChargingEvent], None]


def ignore_charging_events(event: ChargingEvent) -> None:
    pass


# -- account events ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BalanceChanged:
    """Money or units were put into (``micros`` >= 0) or taken from (< 0) the account by the
    operator: ``operation`` is "top_up", "adjustment" or "bucket" (a bucket of units counts 0);
    ``operation_id`` is the top-up's or adjustment's own id (empty for the others, and in events
    of versions without it)."""

    account_id: str
    operation: str
    micros: int
    operation_id: str = ""


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The account's status changed from ``previous`` to ``status`` (never published unchanged),
    by ``actor`` (the API token's name, or the job that made it) for ``reason`` (free text, may be
    empty). A change to a company node is one event per account under it, each with the same
    actor and reason. Events of versions without actor and reason decode with both empty."""

    account_id: str
    previous: AccountStatus
    status: AccountStatus
    actor: str = ""
    reason: str = ""


AccountEvent = BalanceChanged | StatusChanged
# A subscriber returns how many network requests it sent because of the event (0 if none).
AccountSubscriber = Callable[[AccountEvent], int]

_EVENT_TYPES: dict[str, type[AccountEvent]] = {"balance_changed": BalanceChanged, "status_changed": StatusChanged}
_TYPE_NAMES = {event_type: name for name, event_type in _EVENT_TYPES.items()}


class EventDecodeError(ValueError):
    """Bytes from the transport that are not an account event this version knows."""


def encode_event(event: AccountEvent) -> bytes:
    """The event as one JSON object: its fields and ``type``; enumerations by value."""
    return json.dumps({"type": _TYPE_NAMES[type(event)], **asdict(event)}, sort_keys=True).encode()


def decode_event(data: bytes) -> AccountEvent:
    try:
        fields = json.loads(data)
        event_type = _EVENT_TYPES[fields.pop("type")]
        if event_type is StatusChanged:
            fields["previous"] = AccountStatus(fields["previous"])
            fields["status"] = AccountStatus(fields["status"])
        event = event_type(**fields)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise EventDecodeError(f"not an account event: {error!r}") from error
    numbers = ("micros",) if isinstance(event, BalanceChanged) else ()
    for name, value in asdict(event).items():
        expected = int if name in numbers else str
        if not isinstance(value, expected) or isinstance(value, bool):
            raise EventDecodeError(f"not an account event: {name} is not a {expected.__name__}")
    return event


class EventTransport(Protocol):
    """Carries encoded events to the other server processes; what arrives from them goes to
    ``AccountEvents.receive`` (the transport's own reader calls it)."""

    def send(self, data: bytes) -> None: ...


class AccountEvents:
    """The seam: subscribe to account events, publish them."""

    def __init__(self, transport: EventTransport | None = None) -> None:
        self.transport = transport
        self._subscribers: list[AccountSubscriber] = []

    def subscribe(self, subscriber: AccountSubscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, event: AccountEvent) -> int:
        """Dispatch to this process's subscribers, then send to the others; returns the requests
        this process's subscribers sent."""
        actions = self._dispatch(event)
        if self.transport is not None:
            self.transport.send(encode_event(event))
        return actions

    def receive(self, data: bytes) -> int:
        """An event another process published: dispatched here, not sent on again."""
        try:
            event = decode_event(data)
        except EventDecodeError as error:
            log.warning("account_event_unreadable", reason=str(error))
            return 0
        return self._dispatch(event)

    def _dispatch(self, event: AccountEvent) -> int:
        actions = 0
        for subscriber in list(self._subscribers):
            try:
                actions += subscriber(event)
            except Exception:  # one broken subscriber must not keep the event from the others
                log.exception("account_event_subscriber_failed", kind=type(event).__name__, account_id=event.account_id)
        return actions
