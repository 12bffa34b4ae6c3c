"""RFC 3539 watchdog: every (state, input) pair, and the scenarios the RFC describes."""

from __future__ import annotations

import random
from itertools import product

import pytest

from protocol.watchdog import (
    TRANSITIONS,
    TW_JITTER_SECONDS,
    Watchdog,
    WatchdogAction,
    WatchdogInput,
    WatchdogState,
)

S = WatchdogState
I = WatchdogInput  # noqa: E741
A = WatchdogAction

# (state, input, pending, answered) -> (actions, next state): what RFC 3539 Appendix A prescribes.
EXPECTED: dict[tuple[WatchdogState, WatchdogInput, bool, int], tuple[list[WatchdogAction], WatchdogState]] = {
    (S.INITIAL, I.CONNECTION_UP, False, 0): ([], S.OKAY),
    (S.OKAY, I.RECEIVE_DWA, True, 0): ([], S.OKAY),
    (S.OKAY, I.RECEIVE_OTHER, False, 0): ([], S.OKAY),
    (S.OKAY, I.TIMER_EXPIRED, False, 0): ([A.SEND_DWR], S.OKAY),
    (S.OKAY, I.TIMER_EXPIRED, True, 0): ([A.FAILOVER], S.SUSPECT),
    (S.OKAY, I.CONNECTION_DOWN, False, 0): ([A.FAILOVER], S.DOWN),
    (S.SUSPECT, I.RECEIVE_DWA, True, 0): ([A.FAILBACK], S.OKAY),
    (S.SUSPECT, I.RECEIVE_OTHER, True, 0): ([A.FAILBACK], S.OKAY),
    (S.SUSPECT, I.TIMER_EXPIRED, True, 0): ([A.CLOSE_CONNECTION], S.DOWN),
    (S.SUSPECT, I.CONNECTION_DOWN, True, 0): ([A.CLOSE_CONNECTION], S.DOWN),
    (S.DOWN, I.TIMER_EXPIRED, False, 0): ([], S.DOWN),
    (S.DOWN, I.CONNECTION_UP, False, 0): ([A.SEND_DWR], S.REOPEN),
    (S.REOPEN, I.RECEIVE_DWA, True, 0): ([], S.REOPEN),
    (S.REOPEN, I.RECEIVE_DWA, True, 2): ([A.FAILBACK], S.OKAY),
    (S.REOPEN, I.RECEIVE_OTHER, True, 0): ([], S.REOPEN),
    (S.REOPEN, I.TIMER_EXPIRED, False, 1): ([A.SEND_DWR], S.REOPEN),
    (S.REOPEN, I.TIMER_EXPIRED, True, 1): ([], S.REOPEN),
    (S.REOPEN, I.TIMER_EXPIRED, True, -1): ([A.CLOSE_CONNECTION], S.DOWN),
    (S.REOPEN, I.CONNECTION_DOWN, True, 0): ([A.CLOSE_CONNECTION], S.DOWN),
}


def watchdog_in(state: WatchdogState, pending: bool, answered: int) -> Watchdog:
    w = Watchdog(rng=random.Random(0))
    w.state, w.pending, w.answered_dwa_count = state, pending, answered
    return w


@pytest.mark.parametrize(
    ("key", "outcome"), list(EXPECTED.items()), ids=[f"{k[0].name}-{k[1].name}-{k[2]}-{k[3]}" for k in EXPECTED]
)
def test_table_row(
    key: tuple[WatchdogState, WatchdogInput, bool, int], outcome: tuple[list[WatchdogAction], WatchdogState]
) -> None:
    state, event, pending, answered = key
    w = watchdog_in(state, pending, answered)
    assert w.handle(event, now=100.0) == outcome[0]
    assert w.state is outcome[1]


@pytest.mark.parametrize(("state", "event"), list(product(WatchdogState, WatchdogInput)))
def test_every_pair_is_either_in_the_table_or_ignored(state: WatchdogState, event: WatchdogInput) -> None:
    w = watchdog_in(state, pending=False, answered=0)
    actions = w.handle(event, now=5.0)
    if (state, event) not in TRANSITIONS:
        assert (actions, w.state, w.deadline) == ([], state, None)
    else:
        assert any(k[0] is state and k[1] is event for k in EXPECTED)


def test_silent_peer_goes_suspect_then_down_within_three_tw() -> None:
    w = Watchdog(tw_seconds=30.0, rng=random.Random(1))
    w.handle(I.CONNECTION_UP, 0.0)
    now, seen = 0.0, []
    while w.state is not S.DOWN and now < 200:
        assert w.deadline is not None
        now = w.deadline
        seen += w.handle_timer(now)
    assert seen == [A.SEND_DWR, A.FAILOVER, A.CLOSE_CONNECTION]
    assert 3 * (30 - TW_JITTER_SECONDS) <= now <= 3 * (30 + TW_JITTER_SECONDS)


def test_reopen_needs_three_answered_watchdogs() -> None:
    w = watchdog_in(S.DOWN, False, 0)
    assert w.handle(I.CONNECTION_UP, 0.0) == [A.SEND_DWR]
    assert w.handle(I.RECEIVE_DWA, 1.0) == []
    assert w.handle(I.RECEIVE_DWA, 2.0) == []
    assert w.handle(I.RECEIVE_DWA, 3.0) == [A.FAILBACK]
    assert w.state is S.OKAY


def test_tw_below_six_seconds_is_refused() -> None:
    with pytest.raises(ValueError):
        Watchdog(tw_seconds=5.0)


def test_timer_before_deadline_does_nothing() -> None:
    w = Watchdog(rng=random.Random(2))
    w.handle(I.CONNECTION_UP, 0.0)
    assert w.handle_timer(1.0) == [] and w.state is S.OKAY and not w.pending


def test_a_lowered_minimum_allows_a_short_tw_with_jitter_within_a_third_of_it() -> None:
    # Tests that drive real connections use a Tw under the RFC's 6 s; the jitter shrinks with it.
    w = Watchdog(tw_seconds=0.3, rng=random.Random(3), minimum_tw_seconds=0.1)
    w.handle(WatchdogInput.CONNECTION_UP, 10.0)
    assert w.deadline is not None and 10.2 <= w.deadline <= 10.4
    with pytest.raises(ValueError, match="minimum"):
        Watchdog(tw_seconds=0.05, minimum_tw_seconds=0.1)
