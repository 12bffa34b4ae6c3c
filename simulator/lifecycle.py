"""Lifecycle changes made during a run, and how long each took to reach the live sessions.

Theory of operation: while traffic runs, ``Lifecycle.run`` makes one change every
``interval_seconds`` through the lifecycle API (``PUT /lines/{id}/status``,
``/customers/{id}/nodes/{node}/status``, ``/customers/{id}/status`` with a reason and a reason
category), cycling through ``steps``: a line, a company department or a whole customer (an
individual or the company) is suspended and later resumed, a line is barred, a line or an
individual customer is terminated. A change to a department or a customer reaches every line
under it (the server sets each line's effective status). Lines to change are taken among those in
a session, so the change has live sessions to reach; a change is timed when a line it covers was
in a session when it was made.

Enforcement is timed from just before the API call to the first RAR or ASR that an element
receives for a session of a line the change covers (the OCS tells the sessions with RAR when
suspended or resumed, ASR when barred or terminated: RFC 4006 section 5.5, RFC 6733 section
8.5). A change that found no live session is counted but not timed.

A barred or terminated line leaves the traffic for good (``retired``, taken out before the API
call so that no new session starts on it). What the run then checks (``audit``):

- no line was charged on a request sent after its bar or terminate was answered: such a
  request (other than the final CCR-TERMINATION, which reports usage from before) must not be
  answered DIAMETER_SUCCESS (the OCS answers 4010 or 5030 to a barred or terminated line);
- no session is left open on a terminated line: the OCS releases what its sessions hold after
  their final CCR-T, or after Tx (10 s) without one, so the run looks for reservations only
  after that grace (``wait_for_terminations``);
- a request refused for its line's status (4010 END_USER_SERVICE_DENIED, 5030 USER_UNKNOWN: the
  simulator counts that session ``refused``, not failed) was answered after a change that
  suspended, barred or terminated the line had been asked for (``audit_refusals``): a line the
  run never changed must not be refused so. This runs in every scenario: without lifecycle
  changes every such refusal is a problem.
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

STEPS = (
    "suspend_line",
    "resume_line",
    "suspend_department",
    "resume_department",
    "bar_line",
    "terminate_line",
    "suspend_customer",
    "resume_customer",
    "terminate_customer",
)
CATEGORY_OF_KIND = {"suspend": "collections", "resume": "other", "bar": "fraud", "terminate": "voluntary"}
STATUS_OF_KIND = {"suspend": "suspended", "resume": "active", "bar": "barred", "terminate": "terminated"}
TERMINATE_GRACE_SECONDS = 10.0  # the server releases a terminated line's sessions after their CCR-T or Tx
GRACE_MARGIN_SECONDS = 3.0
POLL_SECONDS = 0.5
SUCCESS = 2001  # DIAMETER_SUCCESS, RFC 6733 section 7.1.2


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
    answered_at: float  # time.monotonic() when the OCS answered the change


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
    _suspended: dict[str, list[str]] = field(default_factory=dict)  # "line"/"department"/"customer" -> ids
    customer_status: dict[str, str] = field(default_factory=dict)  # as the OCS answered; else active

    async def run(self, deadline: float) -> None:
        """One change per interval until ``deadline`` (time.monotonic)."""
        if self.settings.interval_seconds <= 0:
            return
        # At a fixed rate: step k at start + k x interval, however long the API took to answer the
        # one before (a slow answer must not push the cycle's last steps past the end of the run).
        started = time.monotonic()
        step_number = 0
        while (due := started + (step_number + 1) * self.settings.interval_seconds) < deadline:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
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
        elif scope == "customer":
            chosen = self._customer_to_change(individual_only=kind == "terminate")
            if chosen is None:
                return
            account_id = chosen
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
        covered = self._covered(scope, account_id)
        if kind in ("bar", "terminate"):
            self.retired.update(covered)
        busy = self.busy()
        live = sum(1 for line in covered if line in busy)
        called_at = time.monotonic()
        answer = await self.api.set_lifecycle_status(
            self._path(scope, account_id),
            STATUS_OF_KIND[kind],
            f"simulated {step.replace('_', ' ')}",
            CATEGORY_OF_KIND[kind],
        )
        answered_at = time.monotonic()
        if scope == "customer" and isinstance(answer.get("status"), str):
            self.customer_status[account_id] = str(answer["status"])
        self.changes.append(LifecycleChange(step, account_id, covered, called_at, live, answered_at))
        if kind == "suspend":
            self._suspended.setdefault(scope, []).append(account_id)

    def _covered(self, scope: str, account_id: str) -> tuple[str, ...]:
        """The lines a change reaches: the line, a department's lines, or a customer's lines."""
        if scope == "customer":
            return tuple(line.account_id for line in self.lines if line.owner_id == account_id)
        under = tuple(line.account_id for line in self.lines if line.parent_id == account_id)
        return under or (account_id,)

    def _path(self, scope: str, account_id: str) -> str:
        if scope == "customer":
            return f"/customers/{account_id}"
        if scope == "department":
            department = next(d for d in self.departments if d.account_id == account_id)
            return f"/customers/{department.owner_id}/nodes/{department.account_id}"  # its node id
        return f"/lines/{account_id}"

    def customers(self) -> list[str]:
        return sorted({line.owner_id for line in self.lines})

    def _customer_to_change(self, *, individual_only: bool) -> str | None:
        """An active customer with a line in a session if there is one; the company is never
        terminated (its departments take their own changes)."""
        companies = {line.owner_id for line in self.lines if line.customer_id}
        busy = self.busy()
        candidates = [
            customer
            for customer in self.customers()
            if self.customer_status.get(customer, "active") == "active"
            and not (individual_only and customer in companies)
            and any(line.account_id not in self.retired for line in self.lines if line.owner_id == customer)
        ]
        live = [c for c in candidates if any(line.account_id in busy for line in self.lines if line.owner_id == c)]
        pool = live or candidates
        return self.rng.choice(pool) if pool else None

    def enforcement_ms(self) -> list[float]:
        """For every change that reached a live session: milliseconds to the first RAR or ASR."""
        times: list[float] = []
        for change in self.changes:
            seen = self.recorder.first_server_request(change.lines, change.called_at)
            if seen is not None and change.notified_sessions:
                times.append((seen - change.called_at) * 1000.0)
        return times

    def _retiring(self, kinds: tuple[str, ...]) -> list[LifecycleChange]:
        return [change for change in self.changes if change.step.partition("_")[0] in kinds]

    async def wait_for_terminations(self) -> None:
        """After the traffic: every terminated line must hold no reservation once the grace
        (the sessions' final CCR-T, or Tx = 10 s) has passed since its terminate was answered."""
        lines = {line for change in self._retiring(("terminate",)) for line in change.lines}
        if not lines:
            return
        last_answer = max(change.answered_at for change in self._retiring(("terminate",)))
        deadline = last_answer + TERMINATE_GRACE_SECONDS + GRACE_MARGIN_SECONDS
        holding: dict[str, int] = {}
        while True:
            views = await asyncio.gather(*(self.api.balance(line) for line in sorted(lines)))
            holding = {view.account_id: view.reservations for view in views if view.reservations}
            if not holding or time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_SECONDS)
        self.problems += [
            f"{line}: {count} session(s) left open on a terminated line after the {TERMINATE_GRACE_SECONDS:.0f} s grace"
            for line, count in sorted(holding.items())
        ]

    def audit_charging(self) -> None:
        """No line charged on a request sent after its bar or terminate was answered."""
        for change in self._retiring(("bar", "terminate")):
            for line in change.lines:
                for sent, kind, code in self.recorder.requests_by_line.get(line, ()):
                    if sent >= change.answered_at and kind != "CCR-T" and code == SUCCESS:
                        self.problems.append(
                            f"{line}: {kind} sent {sent - change.answered_at:.3f} s after its {change.step} was "
                            f"answered got {SUCCESS}"
                        )

    def audit_refusals(self, other_changes: Sequence[tuple[str, float]] = ()) -> None:
        """No request refused for its line's status unless a change had suspended, barred or
        terminated the line before the refusal was answered (module docstring): one of this
        scenario's, or one in ``other_changes`` (line, when it was asked for: the dunning ladder's,
        ``simulator.billing``). Only that: the server tells which of the line's statuses applied,
        the simulator cannot (scopes overlap)."""
        for line, answered in sorted(self.recorder.status_refusals_by_line.items()):
            changed = [
                change.called_at
                for change in self.changes
                if line in change.lines and change.step.partition("_")[0] != "resume"
            ] + [asked for changed_line, asked in other_changes if changed_line == line]
            self.problems += [
                f"{line}: a request was refused for the line's status (4010 or 5030) though no change had "
                "suspended, barred or terminated it"
                for moment in answered
                if not any(called_at <= moment for called_at in changed)
            ]

    def summary(self, line_statuses: Counter[str]) -> dict[str, object]:
        """The report's ``lifecycle`` object (issue 13, "What must be shown"): ``customers`` counts
        the customers by their status at the end of the run (as the OCS answered the last change
        of each; a customer never changed is active), ``lines`` the lines by effective status."""
        times = sorted(self.enforcement_ms())
        return {
            "changes": dict(Counter(change.step for change in self.changes)),
            "enforced": len(times),
            "enforcement_p50_ms": round(percentile(times, 50.0), 3),
            "enforcement_p99_ms": round(percentile(times, 99.0), 3),
            "customers": dict(Counter(self.customer_status.get(customer, "active") for customer in self.customers())),
            "lines": dict(line_statuses),
            "problems": list(self.problems),
        }


def percentile(values: Sequence[float], percent: float) -> float:
    """The nearest-rank percentile of sorted ``values`` (0.0 for none)."""
    if not values:
        return 0.0
    rank = max(1, -(-len(values) * percent // 100))
    return values[int(rank) - 1]
