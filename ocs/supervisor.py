"""``ocs serve --workers N``: one supervisor process and N worker processes that all serve.

Theory of operation: the supervisor owns what there is one of for the whole server: the
embedded Redis (when no ``[redis] url`` is configured; with one it only supervises), the
Origin-State-Id, the ports, the business database's migration, and the run directory. It starts
N workers, each a whole server (Diameter and HTTP, ``ocs.app``) with a ``WorkerRole``; it
restarts a worker that dies, and on SIGTERM or SIGINT stops them all gracefully, then Redis.

Workers are subprocesses running ``python -m ocs serve --worker I/N ...``, not multiprocessing:
each starts as a clean interpreter (no event loop, uvloop, sockets or Redis connections inherited
through fork; nothing pickled), from the same entry an operator runs, with the configuration
given as the same file plus environment overrides for what the supervisor chose (the Redis URL,
the ports). The cost, an interpreter start per worker (about a second), is paid at start and on
a restart only.

Sharing the ports: every worker listens on the same Diameter, TLS, HTTP and metrics ports with
SO_REUSEPORT (asyncio's ``reuse_port=True``); the kernel hashes each new connection to one of the
listeners, so accepting costs no hand-over and no shared accept queue is contended. The issue's
other way, a parent that accepts and passes each socket over a Unix socket (SCM_RIGHTS), would add
a hop and a process to every connection, and buys only a choice of worker per connection, which
the kernel's hash already spreads evenly over many connections; with long-lived Diameter
connections neither rebalances a connection once made (README "Several worker processes").
A port of 0 is resolved here once: the supervisor binds a placeholder socket with SO_REUSEPORT on
each port 0 (never listening, so it takes no connections) and keeps it for its life, so the port
stays the server's and every worker gets the same number. One drawback of SO_REUSEPORT: the
connections waiting in a dying worker's accept queue are reset; their peers reconnect.

Origin-State-Id: chosen once by the supervisor (the clock's seconds, as a single process does, so
it grows across restarts of the server) and given to every worker, also a restarted one: a peer
sees one node that did not reboot when one worker is replaced (RFC 6733 section 8.16).

Restarts: a worker that exits while the server is not stopping is logged (``worker_exited`` with
its status) and started again after a backoff that starts at ``RESTART_BACKOFF_FIRST_SECONDS`` and
doubles up to ``RESTART_BACKOFF_MAX_SECONDS`` (reset once a worker stayed up that long); the count
goes to ``supervisor.json`` in the run directory, from which the workers' /metrics serve
``ocs_worker_restarts_total``. A worker whose supervisor is gone stops itself (ocs/worker.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import structlog

from balance.embedded import EmbeddedRedis
from balance.errors import BalanceUnavailable
from ocs.config import Settings
from ocs.db.engine import DatabaseUnavailable, database_url, open_database
from ocs.logs import configure_logging
from ocs.redis_watch import RedisSupervisor
from ocs.worker import SUPERVISOR_FILE_NAME, run_directory_of

log = structlog.get_logger("ocs.supervisor")

RESTART_BACKOFF_FIRST_SECONDS = 0.5
RESTART_BACKOFF_MAX_SECONDS = 30.0
EXIT_STARTUP_FAILED = 1


def worker_count(configured: int) -> int:
    """0: one worker per core this process may run on."""
    if configured > 0:
        return configured
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def reserve_port(host: str, port: int) -> tuple[socket.socket | None, int]:
    """Port 0 becomes a real port, held by a bound, never listening SO_REUSEPORT socket."""
    if port != 0:
        return None, port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    placeholder = socket.socket(family, socket.SOCK_STREAM)
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    placeholder.bind((host, 0))
    return placeholder, int(placeholder.getsockname()[1])


class Supervisor:
    def __init__(self, settings: Settings, workers: int, config_path: str | None) -> None:
        self.settings = settings
        self.workers = workers
        self.config_path = config_path
        self.origin_state_id = int(time.time())  # grows across restarts, as one process's does
        self.run_directory = run_directory_of(settings)
        self.redis: EmbeddedRedis | None = None
        self.placeholders: list[socket.socket] = []
        self.environment: dict[str, str] = {}
        self.processes: dict[int, asyncio.subprocess.Process] = {}
        self.restarts: dict[int, int] = dict.fromkeys(range(workers), 0)
        self.stopping = asyncio.Event()
        self.failed = False  # a worker could not start at all: the server does not start

    async def prepare(self) -> None:
        """Redis, the database's migration, the ports, the run directory: before any worker."""
        shutil.rmtree(self.run_directory, ignore_errors=True)  # the last run's metrics snapshots
        self.run_directory.mkdir(parents=True)
        self._write_restarts()
        settings = self.settings
        url = settings.redis.url
        if not url:
            directory = Path(settings.redis.data_directory)
            directory.mkdir(parents=True, exist_ok=True)
            redis = EmbeddedRedis(directory, port=0)
            await asyncio.to_thread(redis.start)
            self.redis, url = redis, redis.url
            log.info("embedded_redis", url=url, directory=str(directory), pid=redis.pid, binary=str(redis.executable))
        Path(settings.spool.path).parent.mkdir(parents=True, exist_ok=True)
        engine = await open_database(database_url(settings))  # migrated once, not by N workers at once
        await engine.dispose()
        self.environment = {"OCS_REDIS_URL": url, **self._ports()}

    def _ports(self) -> dict[str, str]:
        diameter, http = self.settings.diameter, self.settings.http
        wanted = [("OCS_DIAMETER_PORT", diameter.host, diameter.port, diameter.clear_port_enabled)]
        wanted.append(("OCS_DIAMETER_TLS_PORT", diameter.host, diameter.tls_port, bool(diameter.tls_certificate)))
        wanted.append(("OCS_HTTP_PORT", http.host, http.port, http.enabled))
        wanted.append(("OCS_HTTP_METRICS_PORT", http.metrics_host or http.host, http.metrics_port, False))  # 0: off
        ports: dict[str, str] = {}
        for variable, host, port, used in wanted:
            if used:
                placeholder, ports_value = reserve_port(host, port)
                if placeholder is not None:
                    self.placeholders.append(placeholder)
                ports[variable] = str(ports_value)
        return ports

    def _command(self, index: int) -> list[str]:
        command = [sys.executable, "-m", "ocs"]
        if self.config_path:
            command += ["--config", self.config_path]
        return [
            *command,
            "serve",
            "--worker",
            f"{index}/{self.workers}",
            "--origin-state-id",
            str(self.origin_state_id),
            "--supervisor-pid",
            str(os.getpid()),
        ]

    async def _start(self, index: int) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *self._command(index), env={**os.environ, **self.environment}, stdin=asyncio.subprocess.DEVNULL
        )
        self.processes[index] = process
        log.info("worker_started", worker=index, pid=process.pid, origin_state_id=self.origin_state_id)
        return process

    async def keep_running(self, index: int) -> None:
        """Start worker ``index``; start it again whenever it dies, until the server stops."""
        backoff = RESTART_BACKOFF_FIRST_SECONDS
        first = True
        while not self.stopping.is_set():
            started = time.monotonic()
            process = await self._start(index)
            status = await process.wait()
            if self.stopping.is_set():
                return
            if first and status == EXIT_STARTUP_FAILED:  # a port in use, no tariff file: its line says
                log.error("worker_cannot_start", worker=index)
                self.failed = True
                self.stopping.set()
                return
            first = False
            up_seconds = time.monotonic() - started
            with contextlib.suppress(FileNotFoundError):  # its metrics leave with it
                (self.run_directory / f"worker-{index}.prom").unlink()
            if up_seconds >= RESTART_BACKOFF_MAX_SECONDS:
                backoff = RESTART_BACKOFF_FIRST_SECONDS
            self.restarts[index] += 1
            self._write_restarts()
            up = round(up_seconds, 3)
            log.warning("worker_exited", worker=index, status=status, up_seconds=up, restart_in_seconds=backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), backoff)
            backoff = min(backoff * 2, RESTART_BACKOFF_MAX_SECONDS)

    def _write_restarts(self) -> None:
        path = self.run_directory / SUPERVISOR_FILE_NAME
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"workers": self.workers, "restarts": self.restarts}))
        temporary.replace(path)

    async def stop_workers(self) -> None:
        """SIGTERM to each (its DPR and in-flight finish), SIGKILL to any still there after the wait."""
        self.stopping.set()
        live = [process for process in self.processes.values() if process.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waiting = [asyncio.ensure_future(process.wait()) for process in live]
        if waiting:
            _, late = await asyncio.wait(waiting, timeout=self.settings.shutdown_timeout_seconds * 4 + 10)
            for process in live:
                if process.returncode is None:
                    log.warning("worker_killed", pid=process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late)

    async def close(self) -> None:
        for placeholder in self.placeholders:
            placeholder.close()
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        log.info("stopped")


async def supervise(settings: Settings, workers: int, config_path: str | None) -> int:
    """Run the supervisor until SIGTERM or SIGINT; returns the exit status."""
    configure_logging()
    supervisor = Supervisor(settings, workers, config_path)
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, supervisor.stopping.set)
    tasks: list[asyncio.Task[None]] = []
    try:
        try:
            await supervisor.prepare()
        except (BalanceUnavailable, DatabaseUnavailable) as error:
            log.error("startup_failed", reason=str(error))
            return EXIT_STARTUP_FAILED
        log.info("supervising", workers=workers, origin_state_id=supervisor.origin_state_id, **supervisor.environment)
        if supervisor.redis is not None:
            tasks.append(asyncio.create_task(RedisSupervisor(supervisor.redis).run()))
        workers_running = [asyncio.create_task(supervisor.keep_running(index)) for index in range(workers)]
        await supervisor.stopping.wait()
        await supervisor.stop_workers()
        await asyncio.wait(workers_running)
    finally:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await supervisor.close()
    return EXIT_STARTUP_FAILED if supervisor.failed else 0
