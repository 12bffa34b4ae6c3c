"""How many CCRs per second one OCS process answers, how fast, and at what CPU cost per CCR.

Theory of operation: for each concurrency asked for (``--sessions``), the bench starts a fresh
``ocs serve`` as a subprocess (its embedded Redis and its spool in a temporary directory, free
ports, its JSON log to a file in that directory), waits for ``GET /health``, then runs the network
simulator as a second subprocess on ``config/scenarios/max-throughput.toml`` (closed loop:
``--sessions`` sessions always in progress over ``--connections`` Diameter connections, 4000
lines, plenty of money) for ``--duration`` seconds, and finally stops the server with SIGINT.

What is measured, and when. The simulator's stderr, piped, prints one plain progress line every
half second during traffic (``t=<s>s ... requests=<answered so far>``). At each such line the bench
reads the CPU time (utime + stime, ``/proc/<pid>/stat``) of the server process, of its embedded
redis-server child, and of the simulator, and the machine's total busy time (``/proc/stat``). The
measurement window runs from the first line after a warm-up (connections up, the subscriber cache
and the hierarchy cache filling) to the last line before the closed loop's end (after that the
sessions in flight drain and the rate falls). So provisioning, the opening and closing balance
snapshots, the drain and the audit are all outside the window, and every figure but latency is
steady state:

- ``ccr_per_s``: answered requests in the window / the window's length;
- ``server_us_per_ccr``: the server process's CPU in the window / requests in the window (the
  Python process only; ``redis_us_per_ccr`` is the embedded redis-server's, shown beside it);
- ``simulator_cpu_pct``: the simulator's CPU in the window / wall time (100 = one core). It shows
  whether the load generator, not the server, was the limit: the machine has two cores, and a
  simulator near 100 % would be;
- ``other_cpu_pct``: whatever else ran on the machine in the window (tests, other jobs), from
  ``/proc/stat`` minus the three processes above: a busy neighbour lowers every figure.

Latency percentiles come from the simulator's JSON report (HDR histogram over the whole traffic
period, every request type): they include the warm-up and the drain, which only makes them worse.

Baseline in the same run (the team's rule: compare with a figure measured alongside): the
simulator's own CPU per CCR (``sim_us_per_ccr``) is printed next to the server's. Both sides do
the same Diameter work per request (encode one message, decode one) but the server also rates,
charges through Redis and answers; the ratio ``server/sim`` says how much dearer the server's
side of a request is than the client's, on the same machine in the same seconds.

The last line is ``RESULT ccr_per_s=<n> p50_ms=<x> p99_ms=<x> server_us_per_ccr=<x>
simulator_cpu_pct=<x>``, for the 256-session row (4 connections x 64 in flight, the issue's p99
target) when 256 was measured, else for the row with the highest ccr_per_s. Targets (issue 5):
>= 30,000 CCR/s at the best concurrency, p99 <= 5 ms at 4 x 64 in flight, <= 30 us of server CPU
per CCR.

``--cluster`` measures each concurrency twice: on the embedded single Redis as above, then on a
fresh 3-master Redis Cluster (``balance.cluster.EmbeddedRedisCluster`` in the temporary directory,
the server given every node's address with ``OCS_REDIS_CLUSTER=true``: charges on the pipelined
cluster client, one connection per master); ``redis_us`` is then the three masters' CPU together.
The RESULT line adds ``cluster_ccr_per_s`` and ``cluster_server_us_per_ccr`` of the same
concurrency.

Run from the project root: ``.venv/bin/python bench/throughput.py`` (about 60 s per concurrency:
provisioning 4000 lines, the traffic, the audit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from balance.cluster import EmbeddedRedisCluster

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCENARIO = PROJECT_ROOT / "config" / "scenarios" / "max-throughput.toml"
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
HEALTH_TIMEOUT_SECONDS = 60.0  # the embedded redis-server and the tariff book load first
STOP_TIMEOUT_SECONDS = 30.0  # graceful shutdown drains the spool; the server's own bound is lower
# The first seconds of traffic open connections and fill the subscriber and hierarchy caches.
DEFAULT_WARMUP_SECONDS = 3.0
RESULT_SESSIONS = 256  # 4 connections x 64 in flight: the concurrency of the p99 target

_PROGRESS = re.compile(r"^t=\s*(?P<elapsed>[0-9.]+)s .*requests=(?P<requests>\d+)")


@dataclass(frozen=True, slots=True)
class Sample:
    """CPU seconds used so far by each process, and the machine's busy seconds, at one moment."""

    wall_seconds: float
    elapsed_seconds: float  # the simulator's traffic clock
    requests: int
    server_seconds: float
    redis_seconds: float
    simulator_seconds: float
    machine_busy_seconds: float


@dataclass(frozen=True, slots=True)
class Row:
    workers: int
    sessions: int
    connections: int
    ccr_per_s: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    server_us_per_ccr: float
    redis_us_per_ccr: float
    simulator_us_per_ccr: float
    simulator_cpu_pct: float
    server_cpu_pct: float
    redis_cpu_pct: float
    other_cpu_pct: float
    window_seconds: float
    whole_run_ccr_per_s: float
    unanswered: int
    audit_ok: bool
    connections_per_worker: str  # how the simulator's connections landed: "worker:count,..."
    redis: str = "single"  # or "cluster3": a 3-master Redis Cluster (--cluster)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process (all its threads); 0 if it is gone."""
    if pid is None:
        return 0.0
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND


def machine_busy_seconds() -> float:
    """Busy CPU time of the whole machine (all cores), from the first line of /proc/stat."""
    values = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / CLOCK_TICKS_PER_SECOND


def child_pids(pid: int) -> list[int]:
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(word) for word in children.read_text().split()]
        except OSError:
            continue
    return found


def redis_child(server_pid: int) -> int | None:
    for pid in child_pids(server_pid):
        try:
            if "redis" in Path(f"/proc/{pid}/comm").read_text():
                return pid
        except OSError:
            continue
    return None


def server_cpu_seconds(server_pid: int, redis_pids: list[int]) -> float:
    """The server's CPU: the process, and with ``--workers N`` its worker processes (every child
    but the embedded redis-server), looked up at each sample (a restarted worker is a new pid)."""
    workers = [pid for pid in child_pids(server_pid) if pid not in redis_pids]
    return process_cpu_seconds(server_pid) + sum(process_cpu_seconds(pid) for pid in workers)


def connections_per_worker(server_log: Path) -> str:
    """Which worker each Diameter peer connection landed on (``peer_open`` lines), as
    "worker:count" pairs; "-" for a single process (its lines name no worker)."""
    counts: dict[str, int] = {}
    for line in server_log.read_text(errors="replace").splitlines():
        if '"peer_open"' not in line:
            continue
        try:
            worker = json.loads(line).get("worker")
        except ValueError:
            continue
        if worker is not None:
            counts[str(worker)] = counts.get(str(worker), 0) + 1
    return ",".join(f"{worker}:{count}" for worker, count in sorted(counts.items())) or "-"


def admin_token(environment: dict[str, str], tree: Path = PROJECT_ROOT) -> str | None:
    """An admin token for the simulator, made offline (``ocs token create``) in the database the
    server of ``environment`` will use; None for a tree from before the API had tokens."""
    # ocs/cli/tokens.py now; ocs/token_commands.py in the trees of its first versions.
    if not any((tree / "ocs" / name).exists() for name in ("cli/tokens.py", "token_commands.py")):
        return None
    made = subprocess.run(
        [sys.executable, "-m", "ocs", "token", "create", "--role", "admin", "--name", "bench", "--expires", "1d"],
        cwd=tree,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    )
    return made.stdout.strip()


def with_token(environment: dict[str, str], token: str | None) -> dict[str, str]:
    """The simulator's environment: the token in ``OCS_TOKEN``, not on its visible command line."""
    return {**environment, "OCS_TOKEN": token} if token else environment


def wait_for_health(
    http_port: int, server: subprocess.Popen[bytes], timeout_seconds: float = HEALTH_TIMEOUT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout_seconds
    url = f"http://127.0.0.1:{http_port}/health"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"ocs serve exited with status {server.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"ocs serve not healthy after {timeout_seconds} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ProgressWatcher:
    """Reads the simulator's stderr line by line and samples CPU at each progress line."""

    def __init__(self, simulator: subprocess.Popen[bytes], server_pid: int, redis_pids: list[int]) -> None:
        self.simulator = simulator
        self.server_pid = server_pid
        self.redis_pids = redis_pids
        self.samples: list[Sample] = []
        self.lines: list[str] = []
        self.traffic_done = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.simulator.stderr is not None
        for raw in self.simulator.stderr:
            now = time.monotonic()
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            if line.startswith("traffic done"):
                self.traffic_done = True
            match = _PROGRESS.match(line)
            if match is None or self.traffic_done:
                continue
            self.samples.append(
                Sample(
                    wall_seconds=now,
                    elapsed_seconds=float(match["elapsed"]),
                    requests=int(match["requests"]),
                    server_seconds=server_cpu_seconds(self.server_pid, self.redis_pids),
                    redis_seconds=sum(process_cpu_seconds(pid) for pid in self.redis_pids),
                    simulator_seconds=process_cpu_seconds(self.simulator.pid),
                    machine_busy_seconds=machine_busy_seconds(),
                )
            )

    def join(self) -> None:
        self._thread.join()


def window(samples: list[Sample], warmup_seconds: float, duration_seconds: float) -> tuple[Sample, Sample]:
    steady = [s for s in samples if warmup_seconds <= s.elapsed_seconds <= duration_seconds]
    if len(steady) < 2:
        raise RuntimeError(f"only {len(steady)} progress lines in the steady window; run longer")
    return steady[0], steady[-1]


def measure(
    sessions: int,
    connections: int,
    duration_seconds: float,
    warmup_seconds: float,
    workers: int = 1,
    *,
    cluster: bool = False,
) -> Row:
    with tempfile.TemporaryDirectory(prefix="ocs-throughput-") as temporary:
        directory = Path(temporary)
        if not cluster:
            return _measure_in(directory, sessions, connections, duration_seconds, warmup_seconds, workers, None)
        with EmbeddedRedisCluster(directory / "cluster") as redis_cluster:
            return _measure_in(
                directory, sessions, connections, duration_seconds, warmup_seconds, workers, redis_cluster
            )


def _measure_in(
    directory: Path,
    sessions: int,
    connections: int,
    duration_seconds: float,
    warmup_seconds: float,
    workers: int,
    redis_cluster: EmbeddedRedisCluster | None,
) -> Row:
    diameter_port, http_port = free_port(), free_port()
    environment = {
        **os.environ,
        "OCS_DIAMETER_PORT": str(diameter_port),
        "OCS_HTTP_PORT": str(http_port),
        "OCS_REDIS_DATA_DIRECTORY": str(directory / "redis"),
        "OCS_SPOOL_PATH": str(directory / "spool.sqlite3"),
    }
    if redis_cluster is not None:
        nodes = ",".join(f"{host}:{port}" for host, port in redis_cluster.startup_nodes)
        environment |= {"OCS_REDIS_URL": f"redis://{nodes}", "OCS_REDIS_CLUSTER": "true"}
    report_path = directory / "report.json"
    token = admin_token(environment)
    with (directory / "server.log").open("wb") as server_log:
        server = subprocess.Popen(
            [sys.executable, "-m", "ocs", "serve", "--workers", str(workers)],
            cwd=PROJECT_ROOT,
            env=environment,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_health(http_port, server)
            simulator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "simulator",
                    "--scenario",
                    str(SCENARIO),
                    "--diameter",
                    f"127.0.0.1:{diameter_port}",
                    "--api",
                    f"http://127.0.0.1:{http_port}",
                    "--duration",
                    str(duration_seconds),
                    "--sessions",
                    str(sessions),
                    "--connections",
                    str(connections),
                    "--json",
                    str(report_path),
                ],
                cwd=PROJECT_ROOT,
                env=with_token(environment, token),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                if redis_cluster is not None:
                    redis_pids = [node.pid for node in redis_cluster.nodes if node.pid is not None]
                else:
                    redis_pids = [pid for pid in [redis_child(server.pid)] if pid is not None]
                watcher = ProgressWatcher(simulator, server.pid, redis_pids)
                simulator.wait()
                watcher.join()
            finally:
                if simulator.poll() is None:  # interrupted: leave no load generator behind
                    simulator.kill()
                    simulator.wait()
        finally:
            stop(server)
    if simulator.returncode not in (0, 1) or not report_path.exists():  # 1: the audit found problems
        tail = "\n".join(watcher.lines[-20:])
        raise RuntimeError(f"simulator exited with status {simulator.returncode}:\n{tail}")
    report: dict[str, Any] = json.loads(report_path.read_text())
    landed = connections_per_worker(directory / "server.log")
    first, last = window(watcher.samples, warmup_seconds, duration_seconds)
    row = _row(sessions, connections, first, last, report, workers, landed)
    return row if redis_cluster is None else dataclasses.replace(row, redis="cluster3")


def _row(
    sessions: int,
    connections: int,
    first: Sample,
    last: Sample,
    report: dict[str, Any],
    workers: int = 1,
    landed: str = "-",
) -> Row:
    requests = last.requests - first.requests
    traffic_seconds = last.elapsed_seconds - first.elapsed_seconds
    wall_seconds = last.wall_seconds - first.wall_seconds
    server = last.server_seconds - first.server_seconds
    redis = last.redis_seconds - first.redis_seconds
    simulator = last.simulator_seconds - first.simulator_seconds
    other = last.machine_busy_seconds - first.machine_busy_seconds - server - redis - simulator
    latency = report["latency"]["all"]
    unanswered = sum(int(row["count"]) for row in report["requests"] if int(row["result_code"]) == 0)
    return Row(
        workers=workers,
        sessions=sessions,
        connections=connections,
        ccr_per_s=requests / traffic_seconds,
        p50_ms=float(latency["p50_ms"]),
        p99_ms=float(latency["p99_ms"]),
        p999_ms=float(latency["p99.9_ms"]),
        server_us_per_ccr=server / requests * 1e6,
        redis_us_per_ccr=redis / requests * 1e6,
        simulator_us_per_ccr=simulator / requests * 1e6,
        simulator_cpu_pct=simulator / wall_seconds * 100,
        server_cpu_pct=server / wall_seconds * 100,
        redis_cpu_pct=redis / wall_seconds * 100,
        other_cpu_pct=max(0.0, other) / wall_seconds * 100,
        window_seconds=traffic_seconds,
        whole_run_ccr_per_s=float(report["answers_per_second"]),
        unanswered=unanswered,
        audit_ok=bool(report["audit"]["ok"]),
        connections_per_worker=landed,
    )


HEADER = (
    f"{'workers':>7} {'sessions':>8} {'conns':>5} {'ccr/s':>8} {'p50_ms':>8} {'p99_ms':>8} {'p99.9_ms':>9} "
    f"{'srv_us':>7} {'redis_us':>8} {'sim_us':>7} {'srv/sim':>7} "
    f"{'srv_cpu%':>8} {'redis%':>6} {'sim_cpu%':>8} {'other%':>6} {'window_s':>8} {'run_ccr/s':>9} "
    f"{'no_ans':>6} {'audit':>5} {'redis':>8} landed"
)


def format_row(row: Row) -> str:
    return (
        f"{row.workers:>7} {row.sessions:>8} {row.connections:>5} {row.ccr_per_s:>8.0f} {row.p50_ms:>8.2f} "
        f"{row.p99_ms:>8.2f} "
        f"{row.p999_ms:>9.2f} {row.server_us_per_ccr:>7.0f} {row.redis_us_per_ccr:>8.0f} "
        f"{row.simulator_us_per_ccr:>7.0f} {row.server_us_per_ccr / row.simulator_us_per_ccr:>7.2f} "
        f"{row.server_cpu_pct:>8.0f} {row.redis_cpu_pct:>6.0f} {row.simulator_cpu_pct:>8.0f} "
        f"{row.other_cpu_pct:>6.0f} {row.window_seconds:>8.1f} {row.whole_run_ccr_per_s:>9.0f} "
        f"{row.unanswered:>6} {'ok' if row.audit_ok else 'FAIL':>5} {row.redis:>8} {row.connections_per_worker}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description="CCR/s, latency and server CPU per CCR: ocs serve and the simulator in separate processes, "
        "on config/scenarios/max-throughput.toml."
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of traffic per concurrency")
    parser.add_argument(
        "--sessions", default=str(RESULT_SESSIONS), help="comma-separated sessions in flight, e.g. 64,256"
    )
    parser.add_argument("--connections", type=int, default=4, help="Diameter connections")
    parser.add_argument(
        "--workers", default="1", help="comma-separated worker processes of ocs serve, e.g. 1,2 (one row each)"
    )
    parser.add_argument(
        "--warmup", type=float, default=DEFAULT_WARMUP_SECONDS, help="seconds of traffic left out of the window"
    )
    parser.add_argument(
        "--cluster", action="store_true", help="each concurrency also on a 3-master Redis Cluster, after single Redis"
    )
    arguments = parser.parse_args()
    concurrencies = [int(part) for part in arguments.sessions.split(",") if part.strip()]
    worker_counts = [int(part) for part in arguments.workers.split(",") if part.strip()]
    warmup = min(arguments.warmup, arguments.duration / 4)
    print(
        f"max-throughput: {arguments.duration:g} s per row, {arguments.connections} connections, "
        f"window from t={warmup:g} s to the end of the closed loop; {os.cpu_count()} cores",
        flush=True,
    )
    print(HEADER, flush=True)
    rows: list[Row] = []
    cluster_rows: list[Row] = []
    for workers in worker_counts:
        for sessions in concurrencies:
            row = measure(sessions, arguments.connections, arguments.duration, warmup, workers)
            rows.append(row)
            print(format_row(row), flush=True)
            if arguments.cluster:
                clustered = measure(sessions, arguments.connections, arguments.duration, warmup, workers, cluster=True)
                cluster_rows.append(clustered)
                print(format_row(clustered), flush=True)
    print(
        "srv_us / redis_us / sim_us: CPU microseconds per CCR of the server process, its embedded "
        "redis-server and the simulator; *_cpu%: of one core over the window; other%: the rest of the machine"
    )
    # RESULT per worker count: the 4 x 64 row (the p99 target) if measured, else the best;
    # with --cluster, the same row's figures on the cluster beside it.
    for workers in worker_counts:
        measured = [row for row in rows if row.workers == workers]
        chosen = next((row for row in measured if row.sessions == RESULT_SESSIONS), None)
        if chosen is None:
            chosen = max(measured, key=lambda row: row.ccr_per_s)
        print(
            f"RESULT ccr_per_s={chosen.ccr_per_s:.0f} p50_ms={chosen.p50_ms:.2f} p99_ms={chosen.p99_ms:.2f} "
            f"server_us_per_ccr={chosen.server_us_per_ccr:.1f} simulator_cpu_pct={chosen.simulator_cpu_pct:.1f}"
            + "".join(
                f" cluster_ccr_per_s={row.ccr_per_s:.0f} cluster_server_us_per_ccr={row.server_us_per_ccr:.1f}"
                for row in cluster_rows
                if row.sessions == chosen.sessions and row.workers == workers
            )
            + f" workers={chosen.workers} audit={'ok' if chosen.audit_ok else 'FAIL'}"
        )
    return 0 if all(row.audit_ok for row in (*rows, *cluster_rows)) else 1


if __name__ == "__main__":
    sys.exit(main())
