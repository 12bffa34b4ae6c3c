"""Lifecycle changes made during a run, and how long each took to reach the live sessions.

Theory of operation: while traffic runs, ``Lifecycle.run`` makes one change every
``interval_seconds`` through the API (PUT /subscribers/{id}/status with a reason), cycling
through ``steps``: a line or a company department is suspended and later resumed, a line is
barred, a line is terminated. A change to a department reaches every line under it (the server
changes each account below the node). Lines to change are taken among those in a session, so
the change has live sessions to reach.

Enforcement is timed from just before the API call to the first RAR or ASR that an element
receives for a session of a line the change covers (the OCS tells the sessions with RAR when
suspended or resumed, ASR when barred or terminated: RFC 4006 section 5.5, RFC 6733 section
8.5). A change that found no live session is counted but not timed.

A barred or terminated line leaves the traffic for good. Right after a terminate is answered,
the line must hold no reservation (the OCS releases its sessions at once): a line that still
does is a problem of the run.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from simulator.http_api import ApiRefused, OcsApi
from simulator.population import SimulatedSubscriber
from simulator.records import Recorder

STEPS = ("suspend_line", "resume_line", "suspend_department", "resume_department", "bar_line", "terminate_line")
STATUS_OF_KIND = {"suspend": "suspended", "resume": "active", "bar": "barred", "terminate": "terminated"}
ENFORCEMENT_WAIT_SECONDS = 5.0  # how long after the last change the run looks for its RAR/ASR


@dataclass(frozen=True, slots=True)
class LifecycleSettings:
    interval_seconds: float = 0.0  # 0: no lifecycle changes in this run
    steps: tuple[str, ...] = STEPS


@dataclass(frozen=True, slots=True)
class LifecycleChange:
    step: str  # e.g. "suspend_department"
    account_id: str
    lines: tuple[str, ...]  # the lines the change covers
    called_at: float  # time.monotonic() just before the API call
    notified_sessions: int  # as the OCS answered


@dataclass(slots=True)
class Lifecycle:
    settings: LifecycleSettings
    api: OcsApi
    recorder: Recorder
    lines: Sequence[SimulatedSubscriber]
    departments: Sequence[SimulatedSubscriber]
    busy: Callable[[], set[str]]  # the lines in a session now
    rng: random.Random
    retired: set[str] = field(default_factory=set)  # barred or terminated: out of the traffic
    changes: list[LifecycleChange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _suspended: dict[str, list[str]] = field(default_factory=dict)  # "line"/"department" -> ids

    async def run(self, deadline: float) -> None:
        """One change per interval until ``deadline`` (time.monotonic)."""
        if self.settings.interval_seconds <= 0:
            return
        step_number = 0
        while time.monotonic() + self.settings.interval_seconds < deadline:
            await asyncio.sleep(self.settings.interval_seconds)
            step = self.settings.steps[step_number % len(self.settings.steps)]
            step_number += 1
            try:
                await self._change(step)
            except ApiRefused as refused:
                self.problems.append(f"lifecycle {step}: {refused}")

    def _line_to_change(self) -> SimulatedSubscriber | None:
        busy = self.busy()
        candidates = [line for line in self.lines if line.account_id not in self.retired]
        suspended = set(self._suspended.get("line", []))
        candidates = [line for line in candidates if line.account_id not in suspended]
        live = [line for line in candidates if line.account_id in busy]
        pool = live or candidates
        return self.rng.choice(pool) if pool else None

    async def _change(self, step: str) -> None:
        kind, _, scope = step.partition("_")
        if kind == "resume":
            waiting = self._suspended.get(scope, [])
            if not waiting:
                return
            account_id = waiting.pop(0)
        elif scope == "department":
            choices = [d.account_id for d in self.departments if d.account_id not in self._suspended.get(scope, [])]
            if not choices:
                return
            account_id = self.rng.choice(choices)
        else:
            line = self._line_to_change()
            if line is None:
                return
            account_id = line.account_id
        covered = self._covered(account_id)
        if kind in ("bar", "terminate"):
            self.retired.update(covered)
        called_at = time.monotonic()
        answer = await self.api.set_status(account_id, STATUS_OF_KIND[kind], f"simulated {step.replace('_', ' ')}")
        notified = answer.get("notified_sessions")
        self.changes.append(
            LifecycleChange(step, account_id, covered, called_at, notified if isinstance(notified, int) else 0)
        )
        if kind == "suspend":
            self._suspended.setdefault(scope, []).append(account_id)
        if kind == "terminate":
            view = await self.api.balance(account_id)
            if view.reservations:
                self.problems.append(f"{account_id}: {view.reservations} session(s) left open after terminate")

    def _covered(self, account_id: str) -> tuple[str, ...]:
        """The lines a change of ``account_id`` reaches: the line, or a department's lines."""
        under = tuple(line.account_id for line in self.lines if line.parent_id == account_id)
        return under or (account_id,)

    def enforcement_ms(self) -> list[float]:
        """For every change that reached a live session: milliseconds to the first RAR or ASR."""
        times: list[float] = []
        for change in self.changes:
            seen = self.recorder.first_server_request(change.lines, change.called_at)
            if seen is not None and change.notified_sessions:
                times.append((seen - change.called_at) * 1000.0)
        return times

    def summary(self, statuses: Counter[str], customers: Counter[str]) -> dict[str, object]:
        """The report's ``lifecycle`` object (issue 13, "What must be shown")."""
        times = sorted(self.enforcement_ms())
        return {
            "changes": dict(Counter(change.step for change in self.changes)),
            "enforced": len(times),
            "enforcement_p50_ms": round(_percentile(times, 50.0), 3),
            "enforcement_p99_ms": round(_percentile(times, 99.0), 3),
            "customers": dict(customers),
            "lines": dict(statuses),
            "problems": list(self.problems),
        }


def _percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of sorted ``values`` (0.0 for none)."""
    if not values:
        return 0.0
    rank = max(1, -(-len(values) * percent // 100))
    return values[int(rank) - 1]
