"""What a worker process of ``ocs serve --workers N`` adds to the server (ocs/supervisor.py).

Theory of operation: a worker is the whole server (``ocs.app``) started with a ``WorkerRole``:
its index among N, the supervisor's pid and the Origin-State-Id the supervisor chose. The
differences from a single process, all started by ``start_worker`` after the server is up:

- Listeners take ``reuse_port`` (ocs/supervisor.py says why SO_REUSEPORT).
- Duties (``ocs.leases.Duties``) run under leases in Redis, so each runs in one worker at a time;
  the spool's drains (the writer's and /audit's) also take the ``spool-drain`` mutex, since the
  drain's acknowledgement must never run twice at once against one Redis (ocs/billing/spool.py).
- Account events and subscriber-cache invalidations travel on a Redis stream
  (ocs/event_transport.py), so a top-up through any worker reaches the worker that holds the
  session's connection.
- Sessions closed by the Tcc supervision duty in one worker travel on the same stream, so the
  worker that carried one forgets it too (ocs/event_transport.py "Closed sessions"); each worker
  also sweeps, every Tcc, the sessions it has not answered for longer than the engine keeps them
  (``SessionNotifier.sweep``).
- Metrics for the whole server: each worker writes its own series, in the Prometheus text format,
  to ``worker-<index>.prom`` in the run directory every ``SNAPSHOT_SECONDS`` (and at shutdown);
  /metrics on any worker answers its own series as they are now and the others' last snapshots,
  every series with a ``worker`` label, plus ``ocs_worker_restarts_total`` and ``ocs_workers_alive``
  from the supervisor's file. Per-worker series rather than prometheus-client's multiprocess mode:
  the hot path counts in plain dictionaries (ocs/metrics.py), which multiprocess mode cannot
  see, and a per-worker label keeps each worker's CPU and peers apart. A worker's snapshot is
  at most ``SNAPSHOT_SECONDS`` old; the supervisor deletes the file when the worker dies, and the
  restarted worker's counters start again from zero under the same label (a counter reset, which
  ``rate()`` handles). ``_created`` samples are off in workers, since the text snapshot turns
  them into separate families.
- /health counts the workers alive (a snapshot younger than ``ALIVE_SECONDS``) against N.
- A worker whose supervisor is gone (its parent pid changed) stops itself gracefully.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import prometheus_client
import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redis.asyncio import Redis, RedisCluster

from balance.directory import Directory
from ocs.charging.credit_control import CreditControl
from ocs.charging.notifier import SessionNotifier
from ocs.config import Settings
from ocs.event_transport import RedisStreamTransport, SharedSubscriberCache
from ocs.events import AccountEvents
from ocs.leases import Duties, mutex, new_owner_id
from ocs.metrics import Metrics

log = structlog.get_logger("ocs.worker")

SUPERVISOR_FILE_NAME = "supervisor.json"
SNAPSHOT_SECONDS = 1.0
ALIVE_SECONDS = 5.0  # a snapshot older than this: the worker is not alive
PARENT_CHECK_SECONDS = 1.0


class ServerState(Protocol):
    """What this module uses of ``ocs.app.ServerState`` (which it must not import: app imports it)."""

    settings: Settings
    events: AccountEvents
    directory: Directory | None
    credit_control: CreditControl | None
    notifier: SessionNotifier | None
    metrics: Metrics
    duties: Duties
    stop: asyncio.Event


@dataclass(frozen=True, slots=True)
class WorkerRole:
    index: int
    count: int
    origin_state_id: int
    supervisor_pid: int


def run_directory_of(settings: Settings) -> Path:
    """Where the supervisor and the workers share files: ``workers/`` beside the usage spool."""
    return Path(settings.spool.path).parent / "workers"


def redis_client(settings: Settings) -> Redis:
    url = settings.redis.url
    client = RedisCluster.from_url(url) if settings.redis.cluster else Redis.from_url(url)
    return client  # type: ignore[return-value]  # a cluster client takes the same commands here


@dataclass(slots=True)
class WorkerServices:
    role: WorkerRole
    owner: str
    redis: Redis
    transport: RedisStreamTransport
    run_directory: Path
    tasks: list[asyncio.Task[None]]

    @contextlib.asynccontextmanager
    async def spool_drain(self) -> AsyncIterator[None]:
        async with mutex(self.redis, "spool-drain", self.owner):
            yield

    def snapshot_path(self, index: int) -> Path:
        return self.run_directory / f"worker-{index}.prom"

    def write_snapshot(self, registry: CollectorRegistry) -> None:
        path = self.snapshot_path(self.role.index)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(generate_latest(registry))
        temporary.replace(path)  # readers see the old file or the new one, never half of one

    def alive(self) -> int:
        now = time.time()
        found = 1  # this worker
        for index in range(self.role.count):
            if index == self.role.index:
                continue
            with contextlib.suppress(FileNotFoundError):
                if now - self.snapshot_path(index).stat().st_mtime < ALIVE_SECONDS:
                    found += 1
        return found

    def health(self) -> dict[str, object]:
        return {"worker": self.role.index, "workers": {"expected": self.role.count, "alive": self.alive()}}


def new_cache(state: ServerState, transport: RedisStreamTransport) -> SharedSubscriberCache:
    assert state.directory is not None
    return SharedSubscriberCache(state.directory, transport)


def prepare_worker(state: ServerState, role: WorkerRole) -> WorkerServices:
    """Before startup: the pieces the server's wiring needs (the transport, the drain mutex)."""
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    structlog.contextvars.bind_contextvars(worker=role.index)
    owner = new_owner_id(f"worker-{role.index}")
    client = redis_client(state.settings)
    transport = RedisStreamTransport(client, owner)
    transport.attach(state.events)
    return WorkerServices(role, owner, client, transport, run_directory_of(state.settings), [])


async def start_worker(state: ServerState, services: WorkerServices) -> None:
    """After startup: the stream's reader and sender, the duties under leases, the snapshots, the
    parent watch, and /metrics for the whole server."""
    await services.transport.start_at_end()
    if state.credit_control is not None and isinstance(state.credit_control.subscribers, SharedSubscriberCache):
        services.transport.cache = state.credit_control.subscribers
    if state.notifier is not None:
        services.transport.on_sessions_closed = state.notifier.forget_sessions
        services.tasks.append(asyncio.create_task(_sweep_sessions(state.notifier, state.settings.quota.tcc_seconds)))
    state.metrics.exposed = CollectorRegistry(auto_describe=False)
    state.metrics.exposed.register(WholeServerCollector(state.metrics.registry, services))
    services.tasks += [
        asyncio.create_task(services.transport.run_reader()),
        asyncio.create_task(services.transport.run_sender()),
        asyncio.create_task(state.duties.run_under_leases(services.redis, services.owner)),
        asyncio.create_task(_snapshots(state, services)),
        asyncio.create_task(_watch_parent(state, services.role)),
    ]


async def stop_worker(state: ServerState, services: WorkerServices) -> None:
    """Duties stopped and their leases released, the last events sent, the last snapshot."""
    for task in services.tasks:
        task.cancel()
    if services.tasks:
        await asyncio.wait(services.tasks)
    with contextlib.suppress(Exception):
        await services.transport.flush()
    with contextlib.suppress(OSError):
        services.write_snapshot(state.metrics.registry)
    await services.redis.aclose()


async def _snapshots(state: ServerState, services: WorkerServices) -> None:
    while True:
        try:
            await asyncio.to_thread(services.write_snapshot, state.metrics.registry)
        except OSError as error:
            log.warning("metrics_snapshot_failed", error=str(error))
        await asyncio.sleep(SNAPSHOT_SECONDS)


async def _sweep_sessions(notifier: SessionNotifier, tcc_seconds: float) -> None:
    while True:
        await asyncio.sleep(tcc_seconds)
        forgotten = notifier.sweep()
        if forgotten:
            log.info("idle_sessions_forgotten", count=forgotten)


async def _watch_parent(state: ServerState, role: WorkerRole) -> None:
    while os.getppid() == role.supervisor_pid:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    log.warning("supervisor_gone", supervisor_pid=role.supervisor_pid)
    state.stop.set()


class WholeServerCollector:
    """Every worker's series with a ``worker`` label (see the module docstring)."""

    def __init__(self, own: CollectorRegistry, services: WorkerServices) -> None:
        self.own = own
        self.services = services

    def _sources(self) -> Iterator[tuple[str, Iterable[Metric]]]:
        role = self.services.role
        yield str(role.index), iter(self.own.collect())
        for index in range(role.count):
            if index == role.index:
                continue
            try:
                text = self.services.snapshot_path(index).read_text()
            except FileNotFoundError:
                continue
            yield str(index), text_string_to_metric_families(text)

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        for worker, families in self._sources():
            for family in families:
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
                into.samples += [
                    Sample(sample.name, {**sample.labels, "worker": worker}, sample.value, sample.timestamp)
                    for sample in family.samples
                ]
        yield from merged.values()
        yield from self._supervision()

    def _supervision(self) -> Iterator[Metric]:
        restarts = Metric("ocs_worker_restarts", "Workers the supervisor started again after they died", "counter")
        try:
            written = json.loads((self.services.run_directory / SUPERVISOR_FILE_NAME).read_text())
            for worker, count in written["restarts"].items():
                restarts.add_sample("ocs_worker_restarts_total", {"worker": str(worker)}, float(count))
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        yield restarts
        alive = GaugeMetricFamily("ocs_workers_alive", "Worker processes whose metrics are fresh")
        alive.add_metric([], float(self.services.alive()))
        yield alive
