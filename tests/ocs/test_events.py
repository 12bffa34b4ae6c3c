"""The account event seam: dispatch to every subscriber, and events as bytes between processes."""

from __future__ import annotations

import pytest

from balance.types import AccountStatus
from ocs.events import (
    AccountEvent,
    AccountEvents,
    AccountSubscriber,
    BalanceChanged,
    EventDecodeError,
    StatusChanged,
    decode_event,
    encode_event,
)

EVENTS: list[AccountEvent] = [
    BalanceChanged("alice", "top_up", 5_000_000),
    BalanceChanged("alice", "adjustment", -1),
    StatusChanged("bob", AccountStatus.ACTIVE, AccountStatus.BARRED),
]


@pytest.mark.parametrize("event", EVENTS)
def test_an_event_survives_the_trip_as_bytes(event: AccountEvent) -> None:
    assert decode_event(encode_event(event)) == event


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"type": "plan_changed", "account_id": "a"}',
        b'{"type": "balance_changed", "account_id": "a", "operation": "top_up"}',
        b'{"type": "balance_changed", "account_id": "a", "operation": "top_up", "micros": "5"}',
        b'{"type": "balance_changed", "account_id": "a", "operation": "top_up", "micros": true}',
        b'{"type": "status_changed", "account_id": "a", "previous": "active", "status": "gone"}',
        b'{"type": "status_changed", "account_id": 7, "previous": "active", "status": "barred"}',
    ],
)
def test_bytes_that_are_no_event_are_refused(data: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode_event(data)


class Wire:
    """Two server processes' seams joined: what one sends, the other receives."""

    def __init__(self) -> None:
        self.far_end: AccountEvents | None = None
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)
        assert self.far_end is not None
        self.far_end.receive(data)


def test_a_published_event_reaches_every_subscriber_here_and_in_the_other_process() -> None:
    wire = Wire()
    here, there = AccountEvents(wire), AccountEvents()
    wire.far_end = there
    seen_here: list[AccountEvent] = []
    seen_there: list[AccountEvent] = []

    def broken(event: AccountEvent) -> int:
        raise RuntimeError("a subscriber's bug")

    def counting(seen: list[AccountEvent], actions: int) -> AccountSubscriber:
        def subscriber(event: AccountEvent) -> int:
            seen.append(event)
            return actions

        return subscriber

    here.subscribe(broken)  # logged and skipped: the others still get the event
    here.subscribe(counting(seen_here, 2))
    there.subscribe(counting(seen_there, 5))
    assert here.publish(EVENTS[0]) == 2  # this process's requests only
    assert seen_here == seen_there == [EVENTS[0]]
    assert len(wire.sent) == 1  # the receiving side does not send it on again
    assert there.receive(b"garbage") == 0 and seen_there == [EVENTS[0]]
