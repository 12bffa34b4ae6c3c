"""Load scenarios (``config/scenarios/*.toml``) and the runner that plays them against an OCS.

Theory of operation: a ``Scenario`` says who (a population, ``simulator.population``), how much
(a Poisson arrival rate for a number of seconds of wall time, with a cap on sessions in
progress) and what (the mix of calls, data sessions and SMS, and their sizes). ``run_scenario``:

1. builds the population from the seed and provisions it through the HTTP API;
2. reads every balance (the opening snapshot) and opens ``connections`` Diameter connections,
   each a network element with its own Origin-Host;
3. generates arrivals: exponential gaps (a Poisson process) from a seeded generator; each
   arrival takes an idle line (a line runs one session at a time, which also keeps the
   allowance arithmetic of ``simulator.ledger`` exact) and starts a session on the next
   connection. An arrival with no idle line, or over the cap, is dropped and counted;
4. at the end of the duration stops arriving, lets every session finish (each ends with its
   CCR-T), closes the connections (DPR), reads every balance again, prices what the elements
   believe was used, and asks for the audit with ``sessions_ended=true``.

Given the seed, the population and the arrival sequence are the same on every run; what
happens to each session depends on timing (answers interleave), as with real traffic.
"""

from __future__ import annotations

import asyncio
import random
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from protocol.capabilities import LocalIdentity
from simulator.elements import (
    CallerContext,
    ElementTiming,
    MeteredService,
    NetworkElement,
    run_metered_session,
    run_sms_event,
    run_sms_session,
    sms_information,
    voice_information,
)
from simulator.http_api import AuditVerdict, BalanceSnapshot, OcsApi
from simulator.ledger import believed_charges
from simulator.population import (
    DATA_RATING_GROUP,
    VIDEO_RATING_GROUP,
    CustomerType,
    Population,
    PopulationSettings,
    SimulatedSubscriber,
    build_population,
    parse_money,
    provision,
)
from simulator.records import Recorder, SessionOutcome

VOICE_CONTEXT = "32260@3gpp.org"  # TS 32.299 clause 7.1.12: IMS charging (TS 32.260)
DATA_CONTEXT = "32251@3gpp.org"  # PS domain charging (TS 32.251)
SMS_CONTEXT = "32274@3gpp.org"  # SMS charging (TS 32.274)
SERVICES = ("voice", "data", "sms_iec", "sms_ecur")
REALM = "simulator.test"


class ScenarioError(ValueError):
    pass


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
    drain_timeout_seconds: float = 60.0  # for sessions still running when arrivals stop


def _table(values: Mapping[str, object], name: str) -> dict[str, object]:
    table = values.get(name, {})
    if not isinstance(table, dict):
        raise ScenarioError(f"[{name}] must be a table")
    return table


def _number(table: Mapping[str, object], name: str, where: str) -> float:
    value = table.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"[{where}] {name}: expected a number, got {value!r}")
    return float(value)


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
    balance = table.get("prepaid_balance")
    if not (isinstance(balance, list) and len(balance) == 2 and all(isinstance(item, str) for item in balance)):
        raise ScenarioError('[population] prepaid_balance: two decimal strings, ["low", "high"]')
    shares_table = _table(table, "shares")
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
    )


def _destination(item: object) -> tuple[str, float]:
    if not isinstance(item, dict) or not isinstance(item.get("number"), str):
        raise ScenarioError('[[destinations]]: each needs number = "<E.164 digits>" and a weight')
    return str(item["number"]), _number(item, "weight", "destinations")


def load_scenario(path: Path) -> Scenario:
    with path.open("rb") as file:
        values = tomllib.load(file)
    run, mix, voice, data = (_table(values, name) for name in ("run", "mix", "voice", "data"))
    unknown = set(mix) - set(SERVICES)
    if unknown:
        raise ScenarioError(f"[mix] unknown service(s) {sorted(unknown)}; known: {', '.join(SERVICES)}")
    destinations = values.get("destinations", [])
    if not isinstance(destinations, list) or not destinations:
        raise ScenarioError("[[destinations]] needs at least one number with a weight")
    timing = ElementTiming(
        step_seconds=_number(run, "step_seconds", "run"),
        request_timeout_seconds=_number(run, "request_timeout_seconds", "run"),
        retransmissions=_whole(run, "retransmissions", "run"),
    )
    return Scenario(
        name=str(run.get("name", path.stem)),
        duration_seconds=_number(run, "duration_seconds", "run"),
        arrival_rate_per_second=_number(run, "arrival_rate_per_second", "run"),
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
    )


@dataclass(slots=True)
class RunResult:
    scenario: Scenario
    seed: int
    population: Population
    recorder: Recorder
    opening: dict[str, BalanceSnapshot]
    closing: dict[str, BalanceSnapshot]
    believed_micros: dict[str, int]
    audit: AuditVerdict
    traffic_seconds: float
    session_errors: list[str] = field(default_factory=list)


Progress = Callable[[str], None]


def _silent(line: str) -> None:
    pass


async def _snapshots(api: OcsApi, subscribers: Sequence[SimulatedSubscriber]) -> dict[str, BalanceSnapshot]:
    views = await asyncio.gather(*(api.balance(subscriber.account_id) for subscriber in subscribers))
    return {view.account_id: view for view in views}


async def run_scenario(
    scenario: Scenario,
    *,
    diameter_host: str,
    diameter_port: int,
    api_url: str,
    seed: int,
    run_number: int,
    progress: Progress = _silent,
) -> RunResult:
    population = build_population(scenario.population, random.Random(f"{seed}-population"), run_number)
    recorder = Recorder()
    async with OcsApi(api_url) as api:
        await provision(api, population.subscribers)
        progress(f"provisioned {len(population.subscribers)} accounts (run number {run_number})")
        opening = await _snapshots(api, population.subscribers)
        elements = await asyncio.gather(
            *(
                NetworkElement.connect(
                    diameter_host,
                    diameter_port,
                    LocalIdentity(f"sim{run_number:05d}-{index}.{REALM}", REALM),
                    recorder,
                    scenario.timing,
                )
                for index in range(scenario.connections)
            )
        )
        traffic = Traffic(scenario, list(elements), population.lines, recorder, random.Random(f"{seed}-traffic"))
        started = time.perf_counter()
        try:
            await traffic.run(progress)
        finally:
            await asyncio.gather(*(element.close() for element in elements))
        traffic_seconds = time.perf_counter() - started
        progress(f"traffic done in {traffic_seconds:.1f} s; reading balances, pricing usage, auditing")
        closing = await _snapshots(api, population.subscribers)
        believed = await believed_charges(api, recorder.commits, population.subscribers)
        verdict = await api.audit(sessions_ended=True)
    return RunResult(
        scenario, seed, population, recorder, opening, closing, believed, verdict, traffic_seconds, traffic.errors
    )


class Traffic:
    """The arrival process and the sessions it starts."""

    def __init__(
        self,
        scenario: Scenario,
        elements: list[NetworkElement],
        lines: Sequence[SimulatedSubscriber],
        recorder: Recorder,
        rng: random.Random,
    ) -> None:
        self.scenario = scenario
        self.elements = elements
        self.lines = list(lines)
        self.recorder = recorder
        self.rng = rng
        self.busy: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []
        self.arrivals = 0

    async def run(self, progress: Progress) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + self.scenario.duration_seconds
        next_arrival = start
        next_progress = start + 1.0
        while True:
            next_arrival += self.rng.expovariate(self.scenario.arrival_rate_per_second)
            if next_arrival >= deadline:
                break
            await asyncio.sleep(max(0.0, next_arrival - loop.time()))
            self._arrive()
            if loop.time() >= next_progress:
                next_progress += 1.0
                progress(self._progress_line(loop.time() - start))
        await self._drain()
        progress(self._progress_line(loop.time() - start))

    def _progress_line(self, elapsed_seconds: float) -> str:
        answered = sum(self.recorder.requests.values())
        return (
            f"t={elapsed_seconds:5.1f}s arrivals={self.arrivals} active={len(self.tasks)} "
            f"ended={sum(self.recorder.sessions.values())} requests={answered}"
        )

    def _arrive(self) -> None:
        self.arrivals += 1
        if len(self.tasks) >= self.scenario.max_concurrent_sessions:
            self.recorder.arrivals_dropped["concurrency cap"] += 1
            return
        idle = [line for line in self.lines if line.account_id not in self.busy]
        if not idle:
            self.recorder.arrivals_dropped["no idle line"] += 1
            return
        line = self.rng.choice(idle)
        services = list(self.scenario.mix)
        service = self.rng.choices(services, [self.scenario.mix[name] for name in services])[0]
        if not line.is_mobile:
            service = "voice"  # a fixed line only makes calls
        element = self.elements[self.arrivals % len(self.elements)]
        self.busy.add(line.account_id)
        task = asyncio.create_task(self._session(element, line, service))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _session(self, element: NetworkElement, line: SimulatedSubscriber, service: str) -> None:
        label = service if line.is_mobile else "fixed_voice"
        try:
            outcome = await self._play(element, line, service, label)
        except Exception as error:  # a bug or a broken connection: count it, keep the run going
            self.errors.append(f"{label} {line.account_id}: {type(error).__name__}: {error}")
            outcome = SessionOutcome.FAILED
        finally:
            self.busy.discard(line.account_id)
        self.recorder.session_done(label, outcome)

    def _destination(self) -> str:
        numbers = [number for number, _ in self.scenario.destinations]
        return self.rng.choices(numbers, [weight for _, weight in self.scenario.destinations])[0]

    async def _play(
        self, element: NetworkElement, line: SimulatedSubscriber, service: str, label: str
    ) -> SessionOutcome:
        assert line.msisdn is not None
        scenario = self.scenario
        if service == "voice":
            called = self._destination()
            caller = CallerContext(
                element, line, label, VOICE_CONTEXT, f"tel:+{called}", voice_information(line.msisdn, called)
            )
            seconds = max(1, round(self.rng.expovariate(1.0 / scenario.voice_mean_seconds)))
            return await run_metered_session(
                caller, [MeteredService(None, "CC-Time", seconds, scenario.voice_request_seconds)]
            )
        if service == "data":
            caller = CallerContext(element, line, label, DATA_CONTEXT, None, None)
            services = [
                MeteredService(
                    group,
                    "CC-Total-Octets",
                    max(1, round(self.rng.expovariate(1.0 / mean))),
                    scenario.data_request_octets,
                )
                for group, mean in scenario.data_mean_octets.items()
            ]
            return await run_metered_session(caller, services)
        recipient = self._destination()
        caller = CallerContext(element, line, label, SMS_CONTEXT, recipient, sms_information(recipient))
        if service == "sms_iec":
            return await run_sms_event(caller)
        return await run_sms_session(caller)

    async def _drain(self) -> None:
        """Let every session end with its CCR-T; cancel what is still running at the timeout."""
        if not self.tasks:
            return
        _, late = await asyncio.wait(set(self.tasks), timeout=self.scenario.drain_timeout_seconds)
        for task in late:
            task.cancel()
        if late:
            self.errors.append(f"{len(late)} session(s) still running after {self.scenario.drain_timeout_seconds} s")
            await asyncio.wait(late)
