"""The runner: plays a ``Scenario`` against an OCS and gathers what the report needs.

Theory of operation: ``run_scenario``

1. builds the population from the seed and activates it through the customer API;
2. reads every balance (the opening snapshot) and opens ``connections`` Diameter connections,
   each a network element with its own Origin-Host and its own seeded fault dice;
3. makes traffic (``Traffic``): in the open mode, arrivals with exponential gaps at the rate the
   profile gives for that moment (a Poisson process, thinned from the peak rate); in the closed
   mode, a fixed number of workers each starting the next session when one ends. A session takes
   an idle line (a line runs one session at a time, which keeps the allowance arithmetic of
   ``simulator.ledger`` exact) and runs on the next connection. An open-mode arrival with no idle
   line, or over the cap, is dropped and counted. Connection-drop faults run beside it;
4. at the end stops arriving and hangs up every session (``NetworkElement.hang_up``: each ends at
   its next round with its CCR-T, unless a fault abandoned it; the drain waits for those last
   requests, never for the rest of a long call), waits for the top-ups it started, and when
   sessions ended without the OCS confirming their end (abandoned, or failed: the server hung or
   crashed) waits, polling the balances, until the OCS's Tcc has released what they held (Tcc is
   about twice the longest Validity-Time granted, RFC 4006 section 13; the wait is bounded by
   that plus a margin, and by ``tcc_wait_limit_seconds``) and notes what it waited for and how
   long; then closes the connections (DPR), reads every balance again, prices what the elements
   believe was used, and asks for the audit with ``sessions_ended``.

Beside the traffic, ``simulator.lifecycle`` makes the scenario's status changes (``[lifecycle]``):
a line it bars or terminates is retired, so the traffic takes it no more; after the traffic it
waits for the terminated lines' grace and checks that none was charged after its change and that
no line was refused for a status the run never gave it.
``simulator.loyalty`` gives the customers their segments before the traffic (``[loyalty]``) and,
after it, waits for the OCS's last credits and checks each member's bonus against its own ledger,
before the closing balances are read (bonus is money on them).
``simulator.billing`` runs the scenario's billing calendar (``[billing]``) the same way: bill
runs, payments and dunning runs through the API while the traffic runs; a line dunning
terminates is retired; afterwards no line may have been charged while barred, and the one
ledger must tie out.

Given the seed, the population, the arrival sequence and the fault dice are the same on every
run; what happens to each session depends on timing (answers interleave), as with real traffic.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocol.capabilities import LocalIdentity
from simulator.billing import BillingCycle
from simulator.elements import NetworkElement
from simulator.faults import FaultDice
from simulator.http_api import RETRY_LIMIT_SECONDS, ApiRefused, ApiUnreachable, AuditVerdict, BalanceSnapshot, OcsApi
from simulator.ledger import charges_of, priced_commits
from simulator.lifecycle import Lifecycle
from simulator.loyalty import LoyaltyLedger, read_rules
from simulator.population import Population, SimulatedSubscriber, build_population, money_text, provision
from simulator.records import Recorder, SessionOutcome
from simulator.scenario import DATA_CONTEXT, SMS_CONTEXT, VOICE_CONTEXT, Scenario
from simulator.sessions import (
    CallerContext,
    MeteredService,
    run_metered_session,
    run_sms_event,
    run_sms_session,
    sms_information,
    voice_information,
)

REALM = "simulator.test"
TCC_MARGIN_SECONDS = 3.0  # on top of 2 x Validity-Time: the supervisor's own interval and slack
POLL_SECONDS = 0.5
PROGRESS_SECONDS = 0.5

Progress = Callable[[str, float | None], None]  # a line of text, and how far the traffic is (0..1)


def _silent(line: str, done: float | None) -> None:
    pass


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
    lifecycle: Lifecycle | None = None  # its changes (if the scenario makes any) and audits
    billing: BillingCycle | None = None  # when the scenario runs a billing calendar
    loyalty: LoyaltyLedger | None = None  # when the scenario checks loyalty programmes


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
    api_retry_seconds: float = RETRY_LIMIT_SECONDS,
    api_token: str | None = None,
) -> RunResult:
    population = build_population(scenario.population, random.Random(f"{seed}-population"), run_number)
    recorder = Recorder()
    async with OcsApi(api_url, token=api_token, retry_limit_seconds=api_retry_seconds) as api:
        population = Population(run_number, await provision(api, population.subscribers))
        progress(f"provisioned {len(population.subscribers)} accounts (run number {run_number})", None)
        opening = await _snapshots(api, population.subscribers)
        elements = await asyncio.gather(
            *(
                NetworkElement.connect(
                    diameter_host,
                    diameter_port,
                    LocalIdentity(f"sim{run_number:05d}-{index}.{REALM}", REALM),
                    recorder,
                    scenario.timing,
                    FaultDice(scenario.faults, random.Random(f"{seed}-faults-{index}")),
                )
                for index in range(scenario.connections)
            )
        )
        traffic = Traffic(scenario, list(elements), population.lines, recorder, random.Random(f"{seed}-traffic"), api)
        lifecycle = Lifecycle(
            scenario.lifecycle,
            api,
            recorder,
            population.lines,
            population.departments,
            lambda: traffic.busy,
            random.Random(f"{seed}-lifecycle"),
            retired=traffic.retired,
        )
        billing = BillingCycle(
            scenario.billing,
            api,
            recorder,
            population.subscribers,
            lambda: traffic.busy,
            traffic.retired,
            random.Random(f"{seed}-billing"),
        )
        if scenario.billing.enabled:
            await billing.set_up()
        loyalty: LoyaltyLedger | None = None
        if scenario.loyalty.enabled:
            rules = read_rules(scenario.loyalty_rules)
            loyalty = LoyaltyLedger(
                scenario.loyalty, api, population.subscribers, rules, random.Random(f"{seed}-loyalty")
            )
            await loyalty.set_up()
        started = time.perf_counter()
        changes = asyncio.create_task(lifecycle.run(time.monotonic() + scenario.duration_seconds))
        cycle = asyncio.create_task(billing.run())
        try:
            await traffic.run(progress, calendar=cycle)
            traffic_seconds = time.perf_counter() - started
            await changes
            await cycle
            await traffic.wait_for_tcc(progress, population.subscribers)
            await lifecycle.wait_for_terminations()
            lifecycle.audit_charging()
            lifecycle.audit_refusals(billing.status_changes())
            billing.audit_charging()
        finally:
            changes.cancel()
            cycle.cancel()
            await asyncio.gather(*(element.close() for element in elements))
        progress(f"traffic done in {traffic_seconds:.1f} s; pricing usage, reading balances, auditing", None)
        priced = await priced_commits(api, recorder.commits, population.subscribers)
        believed = charges_of(priced, population.subscribers)
        if loyalty is not None:  # before the balances: the last bonus credited is on them
            await loyalty.settle(priced)
        closing = await _snapshots(api, population.subscribers)
        verdict = await api.audit(sessions_ended=True)
        if scenario.billing.enabled:
            await billing.audit_ledger()
    return RunResult(
        scenario,
        seed,
        population,
        recorder,
        opening,
        closing,
        believed,
        verdict,
        traffic_seconds,
        traffic.errors,
        lifecycle,
        billing if scenario.billing.enabled else None,
        loyalty,
    )


class Traffic:
    """The sessions of a run: when they start, on which line and connection, and what they do."""

    def __init__(
        self,
        scenario: Scenario,
        elements: list[NetworkElement],
        lines: Sequence[SimulatedSubscriber],
        recorder: Recorder,
        rng: random.Random,
        api: OcsApi,
    ) -> None:
        self.scenario = scenario
        self.elements = elements
        self.idle = list(lines)  # lines without a session; taken and given back in O(1)
        self.busy: set[str] = set()  # the lines in a session now
        self.retired: set[str] = set()  # barred or terminated (simulator.lifecycle): no new session
        self.recorder = recorder
        self.rng = rng
        self.api = api
        self.tasks: set[asyncio.Task[None]] = set()
        self.side_tasks: set[asyncio.Task[None]] = set()  # top-ups
        self.topping_up: set[str] = set()
        self.topup_numbers = itertools.count(1)
        self.errors: list[str] = []
        self.arrivals = 0
        self.started = 0

    # --- the load ------------------------------------------------------------------------------
    async def run(self, progress: Progress, *, calendar: asyncio.Task[None] | None = None) -> None:
        """The traffic; at its end the sessions still running go on until ``calendar`` (the
        billing calendar, late on a loaded machine) has finished, at most the drain timeout,
        so its last days still meet live sessions; then they are hung up and drained."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        droppers = [asyncio.create_task(self._drop_connections(element)) for element in self.elements]
        reporter = asyncio.create_task(self._report_progress(progress, start))
        try:
            if self.scenario.mode == "closed":
                await self._closed_loop(start + self.scenario.duration_seconds)
            else:
                await self._open_loop(start)
            for dropper in droppers:
                dropper.cancel()
            if calendar is not None and self.tasks:
                await asyncio.wait({calendar}, timeout=self.scenario.drain_timeout_seconds)
            for element in self.elements:
                element.hang_up()
            await self._drain()
            if self.side_tasks:
                await asyncio.wait(set(self.side_tasks))
        finally:
            for task in (*droppers, reporter):
                task.cancel()
            await asyncio.gather(*droppers, reporter, return_exceptions=True)
        progress(self._progress_line(loop.time() - start), 1.0)

    async def _open_loop(self, start: float) -> None:
        """Poisson arrivals at the profile's rate: drawn at the peak rate and kept with the
        ratio of the current rate to the peak (thinning), so the shape needs no integration."""
        loop = asyncio.get_running_loop()
        scenario = self.scenario
        peak = scenario.arrival_rate_per_second * max(scenario.profile)
        next_arrival = start
        while True:
            next_arrival += self.rng.expovariate(peak)
            elapsed = next_arrival - start
            if elapsed >= scenario.duration_seconds:
                return
            if self.rng.random() * peak > scenario.rate_at(elapsed):
                continue
            await asyncio.sleep(max(0.0, next_arrival - loop.time()))
            self.arrivals += 1
            if len(self.tasks) >= scenario.max_concurrent_sessions:
                self.recorder.arrivals_dropped["concurrency cap"] += 1
            elif (line := self._take_line()) is None:
                self.recorder.arrivals_dropped["no idle line"] += 1
            else:
                task = asyncio.create_task(self._session(line))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _closed_loop(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()

        async def worker() -> None:
            while loop.time() < deadline:
                line = self._take_line()
                if line is None:
                    await asyncio.sleep(0.001)
                    continue
                self.arrivals += 1
                await self._session(line)

        workers = [asyncio.create_task(worker()) for _ in range(self.scenario.max_concurrent_sessions)]
        self.tasks.update(workers)
        for task in workers:
            task.add_done_callback(self.tasks.discard)
        # Until the deadline; then the sessions are hung up and drained with the open mode's.
        await asyncio.wait(workers, timeout=max(0.0, deadline - loop.time()))

    def _take_line(self) -> SimulatedSubscriber | None:
        """An idle line at random, or None; a retired line met on the way leaves the pool."""
        while self.idle:
            index = self.rng.randrange(len(self.idle))
            self.idle[index], self.idle[-1] = self.idle[-1], self.idle[index]
            line = self.idle.pop()
            if line.account_id not in self.retired:
                self.busy.add(line.account_id)
                return line
        return None

    async def _drop_connections(self, element: NetworkElement) -> None:
        while (pause := element.dice.next_connection_drop_seconds()) is not None:
            await asyncio.sleep(pause)
            element.drop_connection()

    async def _drain(self) -> None:
        """Let every session, hung up, end with its CCR-T; cancel what is still running at the
        timeout (a session cancelled between requests leaves what it holds to the OCS's Tcc)."""
        if not self.tasks:
            return
        _, late = await asyncio.wait(set(self.tasks), timeout=self.scenario.drain_timeout_seconds)
        for task in late:
            task.cancel()
        if late:
            self.errors.append(f"{len(late)} session(s) still running after {self.scenario.drain_timeout_seconds} s")
            await asyncio.wait(late)

    def _tcc_seconds(self) -> float:
        """How long the OCS may hold what a silent session reserved: Tcc, about twice the
        longest Validity-Time granted (RFC 4006 section 13), plus the supervisor's own slack."""
        return 2 * self.recorder.longest_validity_seconds + TCC_MARGIN_SECONDS

    async def wait_for_tcc(self, progress: Progress, subscribers: Sequence[SimulatedSubscriber]) -> None:
        """After sessions the OCS may still hold (abandoned, or failed without an answered
        CCR-T): wait until its Tcc supervision has released what they held, and say so."""
        abandoned = self.recorder.faults["sessions abandoned"]
        failed = sum(
            count for (_, outcome), count in self.recorder.sessions.items() if outcome is SessionOutcome.FAILED
        )
        if not abandoned and not failed:
            return
        what = f"{failed} failed and {abandoned} abandoned session(s)"
        limit = self._tcc_seconds() if self.recorder.longest_validity_seconds else self.scenario.tcc_wait_limit_seconds
        if limit > self.scenario.tcc_wait_limit_seconds:
            self.recorder.fault_problems.append(
                f"{what} wait for Tcc (about 2 x Validity-Time = {limit:.0f} s), longer than "
                f"tcc_wait_limit_seconds ({self.scenario.tcc_wait_limit_seconds:.0f} s): run the server with a "
                "shorter [quota] validity_seconds (this scenario's [server] table)"
            )
            return
        progress(f"waiting up to {limit:.0f} s for the OCS's Tcc to release what {what} held", None)
        started = time.monotonic()
        holding = len(subscribers)
        while holding and time.monotonic() - started < limit:
            snapshots = await _snapshots(self.api, subscribers)
            holding = sum(1 for view in snapshots.values() if view.held_micros or view.reservations)
            if holding:
                await asyncio.sleep(POLL_SECONDS)
        outcome = f"{holding} account(s) still held money" if holding else "all was released"
        self.recorder.tcc_wait = (
            f"waited {time.monotonic() - started:.1f} s (at most {limit:.0f} s: Tcc = 2 x Validity-Time "
            f"{self.recorder.longest_validity_seconds} s, plus {TCC_MARGIN_SECONDS:.0f} s) for the OCS to "
            f"release what {what} held: {outcome}"
        )

    # --- one session ----------------------------------------------------------------------------
    async def _session(self, line: SimulatedSubscriber) -> None:
        self.started += 1
        services = list(self.scenario.mix)
        service = self.rng.choices(services, [self.scenario.mix[name] for name in services])[0]
        if not line.is_mobile:
            service = "voice"  # a fixed line only makes calls
        element = self.elements[self.started % len(self.elements)]
        label = service if line.is_mobile else "fixed_voice"
        outcome = SessionOutcome.FAILED
        try:
            outcome = await self._play(element, line, service, label)
        except Exception as error:  # a bug or a broken connection: count it, keep the run going
            self.errors.append(f"{label} {line.account_id}: {type(error).__name__}: {error}")
        finally:
            self._release_line(line, outcome)
        self.recorder.session_done(label, outcome)

    def _release_line(self, line: SimulatedSubscriber, outcome: SessionOutcome) -> None:
        """Back to the idle pool; after a session the OCS may still hold (abandoned, or ended
        without an answer) only once Tcc has closed it, about twice the longest Validity-Time:
        a line runs one session at a time as the OCS sees it, which simulator.ledger relies on."""
        self.busy.discard(line.account_id)
        if outcome not in (SessionOutcome.ABANDONED, SessionOutcome.FAILED):
            self.idle.append(line)
            return
        hold = self._tcc_seconds()
        asyncio.get_running_loop().call_later(hold, self.idle.append, line)

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
            information = voice_information(line.msisdn, called)
            caller = CallerContext(
                element, line, label, VOICE_CONTEXT, f"tel:+{called}", information, self._final_units
            )
            seconds = max(1, round(self.rng.expovariate(1.0 / scenario.voice_mean_seconds)))
            return await run_metered_session(
                caller, [MeteredService(None, "CC-Time", seconds, scenario.voice_request_seconds)]
            )
        if service == "data":
            caller = CallerContext(element, line, label, DATA_CONTEXT, None, None, self._final_units)
            # One radio link per session: its rate drawn around the scenario's (exponential,
            # at least a tenth of it), shared by the rating groups of the session.
            mean_rate = scenario.timing.data_rate_octets_per_second
            rate = max(mean_rate / 10, self.rng.expovariate(1.0 / mean_rate))
            services = [
                MeteredService(
                    group,
                    "CC-Total-Octets",
                    max(1, round(self.rng.expovariate(1.0 / mean))),
                    scenario.data_request_octets,
                    rate_octets_per_second=rate,
                )
                for group, mean in scenario.data_mean_octets.items()
            ]
            return await run_metered_session(caller, services)
        recipient = self._destination()
        caller = CallerContext(element, line, label, SMS_CONTEXT, recipient, sms_information(recipient))
        if service == "sms_iec":
            return await run_sms_event(caller)
        return await run_sms_session(caller)

    # --- top-ups ------------------------------------------------------------------------------
    def _final_units(self, line: SimulatedSubscriber) -> None:
        """A line got its final units: maybe top it up (its own money only, once at a time)."""
        topups = self.scenario.topups
        if not line.prepaid or line.parent_id or line.account_id in self.topping_up:
            return
        if topups.share <= 0 or self.rng.random() >= topups.share:
            return
        self.topping_up.add(line.account_id)
        task = asyncio.create_task(self._top_up(line.account_id))
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)

    async def _top_up(self, account_id: str) -> None:
        topups = self.scenario.topups
        top_up_id = f"sim-{account_id}-{next(self.topup_numbers)}"
        try:
            await asyncio.sleep(topups.delay_seconds)
            # Idempotent by id: the API client's retries never credit twice.
            await self.api.top_up(account_id, top_up_id, money_text(topups.amount_micros))
            self.recorder.topups_micros[account_id] += topups.amount_micros
        except ApiUnreachable as error:
            # Maybe applied, maybe not: the run cannot reconcile this account.
            self.errors.append(f"top-up {account_id} {top_up_id}: {error}")
        except ApiRefused as refused:
            self.errors.append(f"top-up {account_id}: {refused}")
        finally:
            self.topping_up.discard(account_id)

    # --- progress -----------------------------------------------------------------------------
    async def _report_progress(self, progress: Progress, start: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            elapsed = loop.time() - start
            progress(self._progress_line(elapsed), min(1.0, elapsed / self.scenario.duration_seconds))

    def _progress_line(self, elapsed_seconds: float) -> str:
        answered = sum(self.recorder.requests.values())
        return (
            f"t={elapsed_seconds:5.1f}s arrivals={self.arrivals} active={len(self.tasks)} "
            f"ended={sum(self.recorder.sessions.values())} requests={answered}"
        )
