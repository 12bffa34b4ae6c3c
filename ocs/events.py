"""What the charging handler tells the rest of the server, as values.

Theory of operation: the handler does not know about connections; when something happens that
session supervision must act on later (a final grant, after which a top-up should trigger a
Re-Auth-Request, RFC 4006 section 5.5), it hands an event to an observer callable.
"""

from __future__ import annotations

from collections.abc import Callable

from balance.value_type import value_type


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
