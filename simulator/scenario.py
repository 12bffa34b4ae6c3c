"""Load scenarios: ``config/scenarios/*.toml``, one file per kind of run.

Theory of operation: a ``Scenario`` says who (a population, ``simulator.population``), how much
and in what shape, what (the mix of calls, data sessions and SMS and their sizes), and what goes
wrong (``simulator.faults``). Two ways to make load:

- ``mode = "open"``: Poisson arrivals at ``arrival_rate_per_second``, shaped over the run by
  ``profile`` (rate multipliers for equal slices of the run: a busy hour is a peak in the
  middle), with a cap on sessions in progress;
- ``mode = "closed"``: ``max_concurrent_sessions`` sessions always in progress, each followed at
  once by the next: the most load the connections can carry (the max-throughput scenario).

Time can be compressed: with ``time_compression = 60`` a 120 s call lasts 2 s of wall time and
a data session takes its volume over the data rate, compressed the same way; without it every
round of a session pauses ``step_seconds``. ``[topups]`` makes the simulator top up, through the
API, lines that reached their final units (the OCS then re-authorises their sessions with a RAR).
``[server]`` holds server settings the scenario needs (``ocs demo`` applies them; the simulator
itself does not read them): for example a short Validity-Time so that abandoned sessions are
closed by Tcc within the run. ``[lifecycle]`` makes status changes while the traffic runs
(``simulator.lifecycle``): one every ``interval_seconds``, cycling through ``steps`` (of
``suspend_line``, ``resume_line``, ``suspend_department``, ``resume_department``, ``bar_line``,
``terminate_line``). ``[billing]`` runs a compressed calendar of bill runs, payments, disputes
and dunning runs beside the traffic (``simulator.billing``): ``start_date`` (after today: the
traffic's usage must fall in the calendar's first cycles), ``months``, ``day_seconds`` (wall time
per simulated day; the traffic must last the whole calendar), the payment ``behaviours`` (weights of
``on_time``, ``late``, ``partial``, ``never``) and the shares of disputes and promises to pay; the
population's ``bill_cycle_days`` and ``credit_classes`` give the postpaid customers their billing
accounts, and ``company_postpaid`` makes the company's lines postpaid lines billed to it.
``[loyalty]`` gives the customers segments (``segments``: weights of the individual customers'
segments; ``company_segment``) and checks the bonus the OCS's programmes give against the
simulator's own ledger (``simulator.loyalty``; the programmes are ``[server.loyalty] rules``,
which must be given with ``enabled = true``; ``settle_seconds``: the longest wait after the
traffic for the last credits).

Every bad value is a ``ScenarioError`` naming the table and the field.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from simulator.billing import BEHAVIOURS, BillingSettings
from simulator.elements import FAILURE_HANDLING, ElementTiming
from simulator.faults import NO_FAULTS, Faults
from simulator.lifecycle import STEPS, LifecycleSettings
from simulator.loyalty import LoyaltySettings
from simulator.population import (
    DATA_RATING_GROUP,
    VIDEO_RATING_GROUP,
    CustomerType,
    PopulationSettings,
    parse_money,
)

VOICE_CONTEXT = "32260@3gpp.org"  # TS 32.299 clause 7.1.12: IMS charging (TS 32.260)
DATA_CONTEXT = "32251@3gpp.org"  # PS domain charging (TS 32.251)
SMS_CONTEXT = "32274@3gpp.org"  # SMS charging (TS 32.274)
SERVICES = ("voice", "data", "sms_iec", "sms_ecur")
MODES = ("open", "closed")


class ScenarioError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class TopUps:
    share: float = 0.0  # of the lines that reach their final units
    amount_micros: int = 0
    delay_seconds: float = 0.0  # real time between the final grant and the top-up


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    duration_seconds: float
    arrival_rate_per_second: float
    max_concurrent_sessions: int
    connections: int
    timing: ElementTiming
    mix: Mapping[str, float]  # service -> weight, for mobile lines (fixed lines only call)
    voice_mean_seconds: float  # simulated call length, exponential
    voice_request_seconds: int  # Requested-Service-Unit CC-Time
    data_mean_octets: Mapping[int, int]  # rating group -> simulated volume, exponential
    data_request_octets: int  # Requested-Service-Unit CC-Total-Octets per rating group
    destinations: tuple[tuple[str, float], ...]  # E.164 number, weight
    population: PopulationSettings
    mode: str = "open"
    profile: tuple[float, ...] = (1.0,)  # arrival-rate multipliers over equal slices of the run
    faults: Faults = NO_FAULTS
    topups: TopUps = TopUps()
    drain_timeout_seconds: float = 60.0  # for sessions still running when arrivals stop
    tcc_wait_limit_seconds: float = 30.0  # longest wait for Tcc to close abandoned sessions
    server: Mapping[str, Mapping[str, object]] = field(default_factory=dict)  # for ``ocs demo``
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)  # no status changes unless [lifecycle] says
    billing: BillingSettings = field(default_factory=BillingSettings)  # no calendar unless [billing] says
    loyalty: LoyaltySettings = field(default_factory=LoyaltySettings)  # no segments nor bonus check unless [loyalty]

    @property
    def loyalty_rules(self) -> Path:
        """The programmes the server runs (``[server.loyalty] rules``), which the ledger reads too."""
        return Path(str(self.server.get("loyalty", {}).get("rules", "")))

    def rate_at(self, elapsed_seconds: float) -> float:
        """The arrival rate at a moment of the run, shaped by ``profile``."""
        slot = min(len(self.profile) - 1, int(elapsed_seconds / self.duration_seconds * len(self.profile)))
        return self.arrival_rate_per_second * self.profile[max(0, slot)]


def _table(values: Mapping[str, object], name: str) -> dict[str, object]:
    table = values.get(name, {})
    if not isinstance(table, dict):
        raise ScenarioError(f"[{name}] must be a table")
    return table


def _number(table: Mapping[str, object], name: str, where: str, default: float | None = None) -> float:
    value = table.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"[{where}] {name}: expected a number, got {value!r}")
    return float(value)


def _share(table: Mapping[str, object], name: str, where: str) -> float:
    value = _number(table, name, where, 0.0)
    if not 0.0 <= value <= 1.0:
        raise ScenarioError(f"[{where}] {name}: a share between 0 and 1, got {value}")
    return value


def _whole(table: Mapping[str, object], name: str, where: str) -> int:
    value = table.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(f"[{where}] {name}: expected a whole number, got {value!r}")
    return value


def _money(table: Mapping[str, object], name: str, where: str) -> int:
    value = table.get(name)
    if not isinstance(value, str):
        raise ScenarioError(f'[{where}] {name}: give money as a decimal string ("12.50")')
    try:
        return parse_money(value)
    except ValueError as error:
        raise ScenarioError(f"[{where}] {name}: {error}") from None


def _population(table: Mapping[str, object]) -> PopulationSettings:
    where = "population"
    _known(table, where)
    balance = table.get("prepaid_balance")
    if not (isinstance(balance, list) and len(balance) == 2 and all(isinstance(item, str) for item in balance)):
        raise ScenarioError('[population] prepaid_balance: two decimal strings, ["low", "high"]')
    shares_table = _table(table, "shares")
    _known(shares_table, "population.shares")
    return PopulationSettings(
        size=_whole(table, "size", where),
        shares={
            kind: _number(shares_table, kind.value, "population.shares")
            for kind in CustomerType
            if kind.value in shares_table
        },
        prepaid_balance_micros=(parse_money(str(balance[0])), parse_money(str(balance[1]))),
        low_balance_share=_number(table, "low_balance_share", where),
        low_balance_micros=_money(table, "low_balance", where),
        postpaid_credit_limit_micros=_money(table, "postpaid_credit_limit", where),
        data_allowance_share=_number(table, "data_allowance_share", where),
        data_allowance_octets=_whole(table, "data_allowance_octets", where),
        company_children=_whole(table, "company_children", where),
        company_pool_micros=_money(table, "company_pool", where),
        child_cap_micros=_money(table, "child_cap", where),
        company_branches=_whole({"company_branches": 1, **table}, "company_branches", where),
        branch_departments=_whole({"branch_departments": 1, **table}, "branch_departments", where),
        department_cap_micros=_money(table, "department_cap", where) if "department_cap" in table else 0,
        bill_cycle_days=_cycle_days(table),
        credit_classes=_credit_classes(table),
        company_postpaid=_flag(table, "company_postpaid", where),
        company_credit_class=_credit_class(table, "company_credit_class", where),
    )


def _cycle_days(table: Mapping[str, object]) -> tuple[int, ...]:
    days = table.get("bill_cycle_days", [])
    if not isinstance(days, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 28 for d in days
    ):
        raise ScenarioError(f"[population] bill_cycle_days: a list of days of the month 1..28, got {days!r}")
    return tuple(days)


def _credit_classes(table: Mapping[str, object]) -> tuple[str, ...]:
    classes = table.get("credit_classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) and c for c in classes):
        raise ScenarioError(f"[population] credit_classes: a list of credit class names, got {classes!r}")
    return tuple(classes)


def _credit_class(table: Mapping[str, object], name: str, where: str) -> str:
    value = table.get(name, "")
    if not isinstance(value, str):
        raise ScenarioError(f"[{where}] {name}: a credit class name, got {value!r}")
    return value


def _flag(table: Mapping[str, object], name: str, where: str) -> bool:
    value = table.get(name, False)
    if not isinstance(value, bool):
        raise ScenarioError(f"[{where}] {name}: true or false, got {value!r}")
    return value


def _destination(item: object) -> tuple[str, float]:
    if not isinstance(item, dict) or not isinstance(item.get("number"), str):
        raise ScenarioError('[[destinations]]: each needs number = "<E.164 digits>" and a weight')
    return str(item["number"]), _number(item, "weight", "destinations")


KNOWN_FIELDS: dict[str, frozenset[str]] = {
    "": frozenset(
        {
            "run",
            "mix",
            "voice",
            "data",
            "destinations",
            "population",
            "faults",
            "topups",
            "server",
            "lifecycle",
            "billing",
            "loyalty",
        }
    ),
    "run": frozenset(
        {
            "name",
            "mode",
            "duration_seconds",
            "arrival_rate_per_second",
            "profile",
            "time_compression",
            "max_concurrent_sessions",
            "connections",
            "step_seconds",
            "final_unit_hold_seconds",
            "request_timeout_seconds",
            "retransmissions",
            "failure_handling",
            "reconnect_seconds",
            "drain_timeout_seconds",
            "tcc_wait_limit_seconds",
        }
    ),
    "voice": frozenset({"mean_seconds", "request_seconds"}),
    "data": frozenset({"mean_octets_data", "mean_octets_video", "request_octets", "rate_octets_per_second"}),
    "faults": frozenset(
        {"retransmit_share", "duplicate_share", "late_update_share", "abandon_share", "connection_drop_mean_seconds"}
    ),
    "topups": frozenset({"share", "amount", "delay_seconds"}),
    "lifecycle": frozenset({"interval_seconds", "steps"}),
    "billing": frozenset(
        {
            "start_date",
            "months",
            "day_seconds",
            "behaviours",
            "late_days",
            "partial_percent",
            "dispute_share",
            "dispute_percent",
            "dispute_resolved_share",
            "dispute_resolve_days",
            "promise_share",
            "promise_days",
        }
    ),
    "billing.behaviours": frozenset(BEHAVIOURS),
    "loyalty": frozenset({"segments", "company_segment", "settle_seconds"}),
    "population": frozenset(
        {
            "size",
            "prepaid_balance",
            "low_balance_share",
            "low_balance",
            "postpaid_credit_limit",
            "data_allowance_share",
            "data_allowance_octets",
            "company_children",
            "company_pool",
            "child_cap",
            "company_branches",
            "branch_departments",
            "department_cap",
            "shares",
            "bill_cycle_days",
            "credit_classes",
            "company_postpaid",
            "company_credit_class",
        }
    ),
    "population.shares": frozenset(kind.value for kind in CustomerType if kind is not CustomerType.COMPANY),
}


def _known(table: Mapping[str, object], where: str) -> None:
    """A misspelt field is an error, not a silent default."""
    unknown = set(table) - KNOWN_FIELDS[where]
    if unknown:
        title = f"[{where}]" if where else "the file"
        raise ScenarioError(
            f"{title}: unknown field(s) {sorted(unknown)}; known: {', '.join(sorted(KNOWN_FIELDS[where]))}"
        )


def _faults(table: Mapping[str, object]) -> Faults:
    _known(table, "faults")
    return Faults(
        retransmit_share=_share(table, "retransmit_share", "faults"),
        duplicate_share=_share(table, "duplicate_share", "faults"),
        late_update_share=_share(table, "late_update_share", "faults"),
        abandon_share=_share(table, "abandon_share", "faults"),
        connection_drop_mean_seconds=max(0.0, _number(table, "connection_drop_mean_seconds", "faults", 0.0)),
    )


def _topups(table: Mapping[str, object]) -> TopUps:
    if not table:
        return TopUps()
    _known(table, "topups")
    return TopUps(
        share=_share(table, "share", "topups"),
        amount_micros=_money(table, "amount", "topups"),
        delay_seconds=_number(table, "delay_seconds", "topups", 0.0),
    )


def _lifecycle(table: Mapping[str, object]) -> LifecycleSettings:
    if not table:
        return LifecycleSettings()
    _known(table, "lifecycle")
    interval = _number(table, "interval_seconds", "lifecycle")
    if interval <= 0:
        raise ScenarioError(f"[lifecycle] interval_seconds: a number of seconds > 0, got {interval}")
    steps = table.get("steps", list(STEPS))
    if not isinstance(steps, list) or not steps or any(step not in STEPS for step in steps):
        raise ScenarioError(f"[lifecycle] steps: a list of {', '.join(STEPS)}, got {steps!r}")
    return LifecycleSettings(interval_seconds=interval, steps=tuple(str(step) for step in steps))


def _billing(table: Mapping[str, object]) -> BillingSettings:
    if not table:
        return BillingSettings()
    where = "billing"
    _known(table, where)
    start = table.get("start_date", "tomorrow")
    if start != "tomorrow" and (not isinstance(start, date) or isinstance(start, datetime)):
        raise ScenarioError(f'[billing] start_date: a TOML date (2031-01-01) or "tomorrow", got {start!r}')
    behaviours = _table(table, "behaviours")
    _known(behaviours, "billing.behaviours")
    weights = {name: _number(behaviours, name, "billing.behaviours") for name in behaviours}
    if not weights or any(weight < 0 for weight in weights.values()) or not any(weights.values()):
        raise ScenarioError(f"[billing.behaviours] weights >= 0, not all zero, of {', '.join(BEHAVIOURS)}")
    settings = BillingSettings(
        enabled=True,
        start_date=start if isinstance(start, date) else None,
        months=_whole(table, "months", where),
        day_seconds=_number(table, "day_seconds", where),
        behaviours=weights,
        late_days=_whole({"late_days": 20, **table}, "late_days", where),
        partial_percent=_whole({"partial_percent": 50, **table}, "partial_percent", where),
        dispute_share=_share(table, "dispute_share", where),
        dispute_percent=_whole({"dispute_percent": 20, **table}, "dispute_percent", where),
        dispute_resolved_share=_share(table, "dispute_resolved_share", where),
        dispute_resolve_days=_whole({"dispute_resolve_days": 5, **table}, "dispute_resolve_days", where),
        promise_share=_share(table, "promise_share", where),
        promise_days=_whole({"promise_days": 7, **table}, "promise_days", where),
    )
    rules = (
        (1 <= settings.months <= 24, "months: 1 to 24"),
        (settings.day_seconds > 0, "day_seconds > 0"),
        (settings.late_days >= 0 and settings.dispute_resolve_days >= 1, "late_days >= 0, dispute_resolve_days >= 1"),
        (settings.promise_days >= 1, "promise_days >= 1"),
        (0 < settings.partial_percent < 100, "partial_percent: 1 to 99"),
        (0 < settings.dispute_percent <= 100, "dispute_percent: 1 to 100"),
    )
    for holds, rule in rules:
        if not holds:
            raise ScenarioError(f"[billing] {rule} is required")
    return settings


def _loyalty(table: Mapping[str, object], server: Mapping[str, Mapping[str, object]]) -> LoyaltySettings:
    if not table:
        return LoyaltySettings()
    _known(table, "loyalty")
    segments = _table(table, "segments")
    weights = {str(name): _number(segments, name, "loyalty.segments") for name in segments}
    if not weights or any(weight < 0 for weight in weights.values()) or not any(weights.values()):
        raise ScenarioError("[loyalty.segments] weights >= 0 of segment names, not all zero")
    company = table.get("company_segment")
    if company is not None and not isinstance(company, str):
        raise ScenarioError(f"[loyalty] company_segment: a segment name, got {company!r}")
    loyalty = server.get("loyalty", {})
    if loyalty.get("enabled") is not True or not isinstance(loyalty.get("rules"), str):
        raise ScenarioError(
            "[server.loyalty] enabled = true and rules (the programmes' file) are required by [loyalty]"
        )
    settle = _number(table, "settle_seconds", "loyalty", 20.0)
    if settle <= 0:
        raise ScenarioError("[loyalty] settle_seconds > 0 is required")
    return LoyaltySettings(enabled=True, segments=weights, company_segment=company, settle_seconds=settle)


def _profile(run: Mapping[str, object]) -> tuple[float, ...]:
    profile = run.get("profile", [1.0])
    if (
        not isinstance(profile, list)
        or not profile
        or not all(isinstance(item, (int, float)) and not isinstance(item, bool) and item >= 0 for item in profile)
        or not any(profile)
    ):
        raise ScenarioError("[run] profile: a list of rate multipliers >= 0, not all zero")
    return tuple(float(item) for item in profile)


def _server(values: Mapping[str, object]) -> dict[str, dict[str, object]]:
    server = _table(values, "server")
    for name, section in server.items():
        if not isinstance(section, dict):
            raise ScenarioError(f"[server.{name}] must be a table of server settings")
    return {name: dict(section) for name, section in server.items() if isinstance(section, dict)}


def load_scenario(path: Path) -> Scenario:
    with path.open("rb") as file:
        values = tomllib.load(file)
    _known(values, "")
    run, mix, voice, data = (_table(values, name) for name in ("run", "mix", "voice", "data"))
    for name, table in (("run", run), ("voice", voice), ("data", data)):
        _known(table, name)
    unknown = set(mix) - set(SERVICES)
    if unknown:
        raise ScenarioError(f"[mix] unknown service(s) {sorted(unknown)}; known: {', '.join(SERVICES)}")
    destinations = values.get("destinations", [])
    if not isinstance(destinations, list) or not destinations:
        raise ScenarioError("[[destinations]] needs at least one number with a weight")
    mode = run.get("mode", "open")
    if mode not in MODES:
        raise ScenarioError(f"[run] mode: one of {', '.join(MODES)}, got {mode!r}")
    failure_handling = run.get("failure_handling", "RETRY_AND_TERMINATE")
    if failure_handling not in FAILURE_HANDLING:
        raise ScenarioError(
            f"[run] failure_handling: one of {', '.join(FAILURE_HANDLING)}, got {failure_handling!r} "
            "(CONTINUE would use units nobody reports, which the audit cannot price)"
        )
    timing = ElementTiming(
        step_seconds=_number(run, "step_seconds", "run"),
        request_timeout_seconds=_number(run, "request_timeout_seconds", "run"),
        retransmissions=_whole(run, "retransmissions", "run"),
        time_compression=_number(run, "time_compression", "run", 0.0),
        data_rate_octets_per_second=_number(data, "rate_octets_per_second", "data", 500_000.0),
        final_unit_hold_seconds=_number(run, "final_unit_hold_seconds", "run", 0.0),
        failure_handling=str(failure_handling),
        reconnect_seconds=_number(run, "reconnect_seconds", "run", 30.0),
    )
    scenario = Scenario(
        name=str(run.get("name", path.stem)),
        duration_seconds=_number(run, "duration_seconds", "run"),
        arrival_rate_per_second=_number(run, "arrival_rate_per_second", "run", 0.0),
        max_concurrent_sessions=_whole(run, "max_concurrent_sessions", "run"),
        connections=_whole(run, "connections", "run"),
        timing=timing,
        mix={service: _number(mix, service, "mix") for service in mix},
        voice_mean_seconds=_number(voice, "mean_seconds", "voice"),
        voice_request_seconds=_whole(voice, "request_seconds", "voice"),
        data_mean_octets={
            DATA_RATING_GROUP: _whole(data, "mean_octets_data", "data"),
            VIDEO_RATING_GROUP: _whole(data, "mean_octets_video", "data"),
        },
        data_request_octets=_whole(data, "request_octets", "data"),
        destinations=tuple(_destination(item) for item in destinations),
        population=_population(_table(values, "population")),
        mode=str(mode),
        profile=_profile(run),
        faults=_faults(_table(values, "faults")),
        topups=_topups(_table(values, "topups")),
        tcc_wait_limit_seconds=_number(run, "tcc_wait_limit_seconds", "run", 30.0),
        drain_timeout_seconds=_number(run, "drain_timeout_seconds", "run", 60.0),
        server=_server(values),
        lifecycle=_lifecycle(_table(values, "lifecycle")),
        billing=_billing(_table(values, "billing")),
        loyalty=_loyalty(_table(values, "loyalty"), _server(values)),
    )
    _check(scenario)
    return scenario


def _check(scenario: Scenario) -> None:
    """Values that would make a run send nothing, divide by zero or never end are refused."""
    timing = scenario.timing
    rules = (
        (scenario.duration_seconds > 0, "[run] duration_seconds > 0"),
        (scenario.connections >= 1, "[run] connections >= 1"),
        (scenario.max_concurrent_sessions >= 1, "[run] max_concurrent_sessions >= 1"),
        (scenario.mode == "closed" or scenario.arrival_rate_per_second > 0, "[run] arrival_rate_per_second > 0"),
        (timing.request_timeout_seconds > 0, "[run] request_timeout_seconds > 0"),
        (timing.retransmissions >= 0, "[run] retransmissions >= 0"),
        (timing.reconnect_seconds >= 0, "[run] reconnect_seconds >= 0"),
        (timing.step_seconds >= 0 and timing.final_unit_hold_seconds >= 0, "[run] pauses >= 0"),
        (timing.time_compression >= 0, "[run] time_compression >= 0 (0: not compressed)"),
        (scenario.drain_timeout_seconds > 0 and scenario.tcc_wait_limit_seconds >= 0, "[run] timeouts > 0"),
        (timing.data_rate_octets_per_second > 0, "[data] rate_octets_per_second > 0"),
        (all(mean > 0 for mean in scenario.data_mean_octets.values()), "[data] mean_octets_* > 0"),
        (scenario.data_request_octets > 0, "[data] request_octets > 0"),
        (scenario.voice_mean_seconds > 0 and scenario.voice_request_seconds > 0, "[voice] values > 0"),
        (all(weight >= 0 for weight in scenario.mix.values()) and any(scenario.mix.values()), "[mix] weights"),
        (all(weight >= 0 for _, weight in scenario.destinations), "[[destinations]] weight >= 0"),
        (any(weight for _, weight in scenario.destinations), "[[destinations]] a weight > 0"),
        (scenario.topups.delay_seconds >= 0 and scenario.topups.amount_micros >= 0, "[topups] values >= 0"),
        (scenario.population.size >= 1, "[population] size >= 1"),
        (
            scenario.population.company_branches >= 1 and scenario.population.branch_departments >= 1,
            "[population] company_branches and branch_departments >= 1",
        ),
    )
    for holds, rule in rules:
        if not holds:
            raise ScenarioError(f"{rule} is required")
    billing = scenario.billing
    if billing.enabled:
        if billing.longest_wall_seconds > scenario.duration_seconds:
            raise ScenarioError(
                f"[run] duration_seconds: the traffic must last the [billing] calendar, up to "
                f"{billing.longest_wall_seconds:.0f} s ({billing.months} month(s) of days of {billing.day_seconds} s)"
            )
        if not scenario.population.bill_cycle_days:
            raise ScenarioError("[population] bill_cycle_days: the [billing] calendar needs billing accounts")
