"""The RFC 3539 transport watchdog, as a table (RFC 3539 section 3.4 and Appendix A).

Theory of operation: one ``Watchdog`` per connection. The owner feeds it what happened (any
message received, a DWA received, the timer fired, the connection went up or down) together with
``now``; it answers with the actions to take (send a DWR, close the connection) and keeps the
next deadline. It never reads a clock. ``Tw`` is 30 s with +/- 2 s jitter by default (RFC 3539
section 3.4.1: Tw MUST NOT be below 6 s and jitter is added to avoid synchronisation).

States follow the RFC names. We run one connection per peer, so "failover" and "failback" are
reported as state changes for the owner to act on (stop sending requests while SUSPECT).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

DEFAULT_TW_SECONDS = 30.0  # RFC 3539 section 3.4.1
TW_JITTER_SECONDS = 2.0  # RFC 3539 section 3.4.1: "jitter of +/- 2 seconds"
MINIMUM_TW_SECONDS = 6.0  # RFC 3539 section 3.4.1: Tw MUST NOT be set lower than 6 seconds
REOPEN_DWA_COUNT = 3  # RFC 3539 section 3.4.1: three watchdogs answered before failback


class WatchdogState(Enum):
    INITIAL = "INITIAL"
    OKAY = "OKAY"
    SUSPECT = "SUSPECT"
    DOWN = "DOWN"
    REOPEN = "REOPEN"


class WatchdogInput(Enum):
    CONNECTION_UP = "connection up"
    CONNECTION_DOWN = "connection down"
    RECEIVE_DWA = "receive DWA"
    RECEIVE_OTHER = "receive non-DWA"
    TIMER_EXPIRED = "timer expired"


class WatchdogAction(Enum):
    SEND_DWR = "send DWR"
    CLOSE_CONNECTION = "close connection"
    FAILOVER = "failover"
    FAILBACK = "failback"


@dataclass(slots=True)
class Watchdog:
    tw_seconds: float = DEFAULT_TW_SECONDS
    rng: random.Random | None = None
    # The RFC's floor; only tests that drive real connections lower it, to see a watchdog give up
    # within a second (the operator's setting is checked against the RFC in ocs/config.py).
    minimum_tw_seconds: float = MINIMUM_TW_SECONDS
    state: WatchdogState = WatchdogState.INITIAL
    pending: bool = False
    answered_dwa_count: int = 0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.tw_seconds < self.minimum_tw_seconds:
            raise ValueError(
                f"Tw {self.tw_seconds} s is below the minimum of {self.minimum_tw_seconds} s (RFC 3539: 6 s)"
            )

    def _set_watchdog(self, now: float) -> None:
        # SetWatchdog(): Tw plus jitter (RFC 3539 section 3.4.1).
        # The jitter is at most a third of Tw, so a short test Tw stays positive; for any Tw the
        # RFC allows (6 s and more) that is the full +/- 2 s.
        bound = min(TW_JITTER_SECONDS, self.tw_seconds / 3)
        jitter = (self.rng or random).uniform(-bound, bound)
        self.deadline = now + self.tw_seconds + jitter

    def handle(self, event: WatchdogInput, now: float) -> list[WatchdogAction]:
        """Apply one input; return the actions for the owner, in order."""
        transition = _TABLE.get((self.state, event))
        if transition is None:
            return []  # RFC 3539 Appendix A lists no action for this pair
        return transition(self, now)

    def handle_timer(self, now: float) -> list[WatchdogAction]:
        if self.deadline is None or now < self.deadline:
            return []
        return self.handle(WatchdogInput.TIMER_EXPIRED, now)


Transition = Callable[[Watchdog, float], list[WatchdogAction]]


def _up_from_initial(w: Watchdog, now: float) -> list[WatchdogAction]:
    # INITIAL, connection up: SetWatchdog() -> OKAY
    w._set_watchdog(now)
    w.state = WatchdogState.OKAY
    return []


def _okay_receive_dwa(w: Watchdog, now: float) -> list[WatchdogAction]:
    # OKAY, receive DWA: Pending = FALSE; SetWatchdog() -> OKAY
    w.pending = False
    w._set_watchdog(now)
    return []


def _okay_receive_other(w: Watchdog, now: float) -> list[WatchdogAction]:
    # OKAY, receive non-DWA: SetWatchdog() -> OKAY
    w._set_watchdog(now)
    return []


def _okay_timer(w: Watchdog, now: float) -> list[WatchdogAction]:
    w._set_watchdog(now)
    if not w.pending:
        # OKAY, timer expires & !Pending: SendWatchdog(); SetWatchdog(); Pending = TRUE -> OKAY
        w.pending = True
        return [WatchdogAction.SEND_DWR]
    # OKAY, timer expires & Pending: Failover(); SetWatchdog() -> SUSPECT
    w.state = WatchdogState.SUSPECT
    return [WatchdogAction.FAILOVER]


def _okay_down(w: Watchdog, now: float) -> list[WatchdogAction]:
    # OKAY, connection down: Failover(); SetWatchdog() -> DOWN
    w._set_watchdog(now)
    w.state = WatchdogState.DOWN
    return [WatchdogAction.FAILOVER]


def _suspect_receive_dwa(w: Watchdog, now: float) -> list[WatchdogAction]:
    # SUSPECT, receive DWA: Pending = FALSE; Failback(); SetWatchdog() -> OKAY
    w.pending = False
    w._set_watchdog(now)
    w.state = WatchdogState.OKAY
    return [WatchdogAction.FAILBACK]


def _suspect_receive_other(w: Watchdog, now: float) -> list[WatchdogAction]:
    # SUSPECT, receive non-DWA: Failback(); SetWatchdog() -> OKAY
    w._set_watchdog(now)
    w.state = WatchdogState.OKAY
    return [WatchdogAction.FAILBACK]


def _close_to_down(w: Watchdog, now: float) -> list[WatchdogAction]:
    # SUSPECT, timer expires / connection down: CloseConnection(); SetWatchdog() -> DOWN
    # REOPEN, connection down: CloseConnection(); SetWatchdog() -> DOWN
    w._set_watchdog(now)
    w.state = WatchdogState.DOWN
    return [WatchdogAction.CLOSE_CONNECTION]


def _down_timer(w: Watchdog, now: float) -> list[WatchdogAction]:
    # DOWN, timer expires: AttemptOpen(); SetWatchdog() -> DOWN (the owner reconnects)
    w._set_watchdog(now)
    return []


def _down_up(w: Watchdog, now: float) -> list[WatchdogAction]:
    # DOWN, connection up: NumDWA = 0; SendWatchdog(); SetWatchdog(); Pending = TRUE -> REOPEN
    w.answered_dwa_count = 0
    w.pending = True
    w._set_watchdog(now)
    w.state = WatchdogState.REOPEN
    return [WatchdogAction.SEND_DWR]


def _reopen_receive_dwa(w: Watchdog, now: float) -> list[WatchdogAction]:
    # REOPEN, receive DWA & NumDWA < 2: NumDWA++; Pending = FALSE -> REOPEN
    # REOPEN, receive DWA & NumDWA == 2: NumDWA++; Failback(); Pending = FALSE -> OKAY
    w.pending = False
    w.answered_dwa_count += 1
    if w.answered_dwa_count >= REOPEN_DWA_COUNT:
        w.state = WatchdogState.OKAY
        return [WatchdogAction.FAILBACK]
    return []


def _reopen_receive_other(w: Watchdog, now: float) -> list[WatchdogAction]:
    # REOPEN, receive non-DWA: Throwaway() -> REOPEN (the owner ignores it)
    return []


def _reopen_timer(w: Watchdog, now: float) -> list[WatchdogAction]:
    w._set_watchdog(now)
    if not w.pending:
        # REOPEN, timer expires & !Pending: SendWatchdog(); SetWatchdog(); Pending = TRUE
        w.pending = True
        return [WatchdogAction.SEND_DWR]
    if w.answered_dwa_count < 0:
        # REOPEN, timer expires & Pending & NumDWA < 0: CloseConnection() -> DOWN
        w.state = WatchdogState.DOWN
        return [WatchdogAction.CLOSE_CONNECTION]
    # REOPEN, timer expires & Pending & NumDWA >= 0: NumDWA = -1 -> REOPEN
    w.answered_dwa_count = -1
    return []


_TABLE: dict[tuple[WatchdogState, WatchdogInput], Transition] = {
    (WatchdogState.INITIAL, WatchdogInput.CONNECTION_UP): _up_from_initial,
    (WatchdogState.OKAY, WatchdogInput.RECEIVE_DWA): _okay_receive_dwa,
    (WatchdogState.OKAY, WatchdogInput.RECEIVE_OTHER): _okay_receive_other,
    (WatchdogState.OKAY, WatchdogInput.TIMER_EXPIRED): _okay_timer,
    (WatchdogState.OKAY, WatchdogInput.CONNECTION_DOWN): _okay_down,
    (WatchdogState.SUSPECT, WatchdogInput.RECEIVE_DWA): _suspect_receive_dwa,
    (WatchdogState.SUSPECT, WatchdogInput.RECEIVE_OTHER): _suspect_receive_other,
    (WatchdogState.SUSPECT, WatchdogInput.TIMER_EXPIRED): _close_to_down,
    (WatchdogState.SUSPECT, WatchdogInput.CONNECTION_DOWN): _close_to_down,
    (WatchdogState.DOWN, WatchdogInput.TIMER_EXPIRED): _down_timer,
    (WatchdogState.DOWN, WatchdogInput.CONNECTION_UP): _down_up,
    (WatchdogState.REOPEN, WatchdogInput.RECEIVE_DWA): _reopen_receive_dwa,
    (WatchdogState.REOPEN, WatchdogInput.RECEIVE_OTHER): _reopen_receive_other,
    (WatchdogState.REOPEN, WatchdogInput.TIMER_EXPIRED): _reopen_timer,
    (WatchdogState.REOPEN, WatchdogInput.CONNECTION_DOWN): _close_to_down,
}
TRANSITIONS = _TABLE  # read-only view for the tests that walk every (state, input) pair
