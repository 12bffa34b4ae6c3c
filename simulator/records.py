"""What the simulated network elements believe happened, recorded as they go.

Theory of operation: one ``Recorder`` is shared by every element of a run (one event loop, so
no locks). Each answered request adds its latency and (request label, Result-Code); each session
ends with one ``SessionOutcome``; each usage report the OCS applied adds a ``Commit`` naming the
units, where and when they were granted, and, when the grant spanned a switch of tariff, how
many were used on each side of it, which is all ``simulator.ledger`` needs to price
them afterwards. Nothing here knows the server's internals: it is the client's own bookkeeping,
which the end-of-run report holds against the server's balances and audit.

Latencies go into one HDR histogram per request label (microseconds, 3 significant digits:
constant memory however long the run, percentiles exact to 0.1 %), so a run of millions of
requests costs the same as a short one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from hdrh.histogram import HdrHistogram

NO_ANSWER = 0  # the result "code" of a request that got no answer in time
LATENCY_LOWEST_MICROS = 1
LATENCY_HIGHEST_MICROS = 120_000_000  # two minutes: longer than any request timeout
LATENCY_SIGNIFICANT_DIGITS = 3
FINAL_UNIT_ACTIONS = {0: "TERMINATE", 1: "REDIRECT", 2: "RESTRICT_ACCESS"}  # RFC 4006 section 8.35


def new_latency_histogram() -> HdrHistogram:
    return HdrHistogram(LATENCY_LOWEST_MICROS, LATENCY_HIGHEST_MICROS, LATENCY_SIGNIFICANT_DIGITS)


class SessionOutcome(StrEnum):
    COMPLETED = "completed"  # ran its planned length and was closed
    CUT = "cut"  # ended early by the OCS (final units, 4012, Abort-Session) and was closed
    REFUSED = "refused"  # the OCS refused the start (4012 on the first request): nothing opened
    FAILED = "failed"  # an unexpected answer or none; closed as well as could be
    ABANDONED = "abandoned"  # a fault: left without CCR-TERMINATION, for the OCS's Tcc to close


@dataclass(frozen=True, slots=True)
class Commit:
    """Units the OCS applied as used: priced with the tariff of the grant they came from."""

    account_id: str
    plan: str
    context: str  # Service-Context-Id
    rating_group: int | None
    called: str | None
    granted_at_seconds: int  # Event-Timestamp of the request that granted the units
    units: int
    # The grant's Tariff-Time-Change (RFC 4006 section 8.20), epoch seconds, and how many of the
    # units the element reported used before it (Tariff-Change-Usage, section 8.27); the rest
    # were used after it. None: the grant spanned no change of tariff.
    tariff_change_at_seconds: int | None = None
    units_before_change: int = 0


@dataclass(slots=True)
class Recorder:
    requests: Counter[tuple[str, int]] = field(default_factory=Counter)  # (label, Result-Code)
    latencies: dict[str, HdrHistogram] = field(default_factory=dict)  # by label, microseconds
    sessions: Counter[tuple[str, SessionOutcome]] = field(default_factory=Counter)  # (service, outcome)
    units: Counter[tuple[str, str]] = field(default_factory=Counter)  # (service, unit AVP) used
    commits: list[Commit] = field(default_factory=list)
    server_requests: Counter[str] = field(default_factory=Counter)  # RAR / ASR received
    retransmissions: int = 0
    uncertain_sessions: list[str] = field(default_factory=list)  # a request never answered
    arrivals_dropped: Counter[str] = field(default_factory=Counter)  # by reason
    faults: Counter[str] = field(default_factory=Counter)  # faults injected, by kind
    replays: Counter[str] = field(default_factory=Counter)  # a repeated request's answer: "same" / "different"
    fault_problems: list[str] = field(default_factory=list)  # an answer to a fault that is wrong
    topups_micros: Counter[str] = field(default_factory=Counter)  # credited during the run, by account
    reporting_reasons: Counter[str] = field(default_factory=Counter)  # usage reports, by Reporting-Reason
    longest_validity_seconds: int = 0  # the longest Validity-Time granted (Tcc is about twice it)
    tcc_wait: str = ""  # what the end of the run waited for before judging reservations, and how long
    # By line: when (time.monotonic) each RAR or ASR for one of its sessions arrived, in order.
    server_requests_by_line: dict[str, list[float]] = field(default_factory=dict)
    # By line: every Credit-Control request, (sent at time.monotonic, kind e.g. "CCR-I", Result-Code).
    requests_by_line: dict[str, list[tuple[float, str, int]]] = field(default_factory=dict)
    # By line: when (time.monotonic) each answer granting units arrived, and its Final-Unit-Action
    # (RFC 4006 section 8.35), None for a normal grant; what simulator.billing times a lift by.
    grants_by_line: dict[str, list[tuple[float, int | None]]] = field(default_factory=dict)
    final_unit_actions: Counter[str] = field(default_factory=Counter)  # grants with a FUI, by action
    # By line: when (time.monotonic) each request refused for the line's status (4010, 5030) was answered.
    status_refusals_by_line: dict[str, list[float]] = field(default_factory=dict)

    def server_request_seen(self, account_id: str, at_monotonic: float) -> None:
        self.server_requests_by_line.setdefault(account_id, []).append(at_monotonic)

    def grant_seen(self, account_id: str, at_monotonic: float, final_unit_action: int | None) -> None:
        self.grants_by_line.setdefault(account_id, []).append((at_monotonic, final_unit_action))
        if final_unit_action is not None:
            self.final_unit_actions[FINAL_UNIT_ACTIONS.get(final_unit_action, str(final_unit_action))] += 1

    def first_normal_grant(self, account_id: str, since_monotonic: float) -> float | None:
        """When the first grant without Final-Unit-Indication for the line arrived at or after ``since``."""
        return next(
            (at for at, action in self.grants_by_line.get(account_id, ()) if at >= since_monotonic and action is None),
            None,
        )

    def line_request(self, account_id: str, sent_monotonic: float, kind: str, code: int) -> None:
        self.requests_by_line.setdefault(account_id, []).append((sent_monotonic, kind, code))

    def status_refused(self, account_id: str, answered_monotonic: float) -> None:
        self.status_refusals_by_line.setdefault(account_id, []).append(answered_monotonic)

    def first_server_request(self, account_ids: Iterable[str], since_monotonic: float) -> float | None:
        """When the first RAR or ASR for a session of ``account_ids`` arrived at or after ``since``."""
        seen = [
            moment
            for account_id in account_ids
            for moment in self.server_requests_by_line.get(account_id, ())
            if moment >= since_monotonic
        ]
        return min(seen, default=None)

    def request_done(self, label: str, result_code: int, latency_seconds: float | None) -> None:
        self.requests[(label, result_code)] += 1
        if latency_seconds is not None:
            histogram = self.latencies.get(label)
            if histogram is None:
                histogram = self.latencies[label] = new_latency_histogram()
            micros = round(latency_seconds * 1_000_000)
            histogram.record_value(min(max(micros, LATENCY_LOWEST_MICROS), LATENCY_HIGHEST_MICROS))

    def session_done(self, service: str, outcome: SessionOutcome) -> None:
        self.sessions[(service, outcome)] += 1

    def committed(self, service: str, unit_avp: str, commit: Commit) -> None:
        self.units[(service, unit_avp)] += commit.units
        self.commits.append(commit)

    def result_codes(self) -> set[int]:
        return {code for _, code in self.requests}

    def sessions_started(self) -> int:
        return sum(count for (_, outcome), count in self.sessions.items() if outcome is not SessionOutcome.REFUSED)
