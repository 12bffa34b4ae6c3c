"""Which Redis client for the charging hot path: redis-py (asyncio, hiredis) or balance.pipeline.

Theory of operation: one private embedded Redis (append-only file on, as in production) serves a
script shaped like a charge call: on one account's hash tag it checks an idempotency hash, reads
the balance, HINCRBYs it, HSETs the session state and RPUSHes a usage record to the outbox. The
same EVALSHA is driven through

- redis-py asyncio, one awaited call per request (``concurrency`` tasks, one pooled connection each),
- redis-py pipelines (one pipeline of ``concurrency`` EVALSHAs at a time),
- ``balance.pipeline.PipelinedRedis`` over TCP and over the unix socket (``concurrency`` tasks on
  one connection),
- ``redis-benchmark`` (C, from PATH) for the server's own ceiling,

for a fixed time at each concurrency. For each it prints calls/s, the client's Python CPU per
call (``time.process_time`` of this process) and Redis's CPU per call (INFO cpu). The run checks
itself: every counted call must have left exactly one usage record. The last line is
``RESULT redis_py_per_s=<best redis-py> pipelined_per_s=<best pipelined over TCP> ratio=<x>``.

The machine has two cores: Redis takes one, the client process the other, so a client that
spends less Python per call gets closer to what Redis alone can do.

Run: ``.venv/bin/python bench/redis_client.py [--seconds 3] [--concurrency 1,64,256] [--repeat 3]``
(about 3 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import redis
import redis.asyncio
import uvloop

# Run as a script, this directory comes first on sys.path, and bench/balance.py would then shadow
# the balance package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from balance.embedded import EmbeddedRedis
from balance.pipeline import PipelinedRedis

CHARGE_SCRIPT = """
-- KEYS[1] balance hash, KEYS[2] session hash, KEYS[3] applied-requests hash, KEYS[4] outbox list,
-- all under one account's hash tag.
-- ARGV[1] request key (Session-Id;CC-Request-Number), ARGV[2] amount in micros,
-- ARGV[3] session state, ARGV[4] usage record.
-- Returns {1, balance after} when applied, {0, balance then} for a repeat, {2, available} when short.
local applied = redis.call('HGET', KEYS[3], ARGV[1])
if applied then return {0, tonumber(applied)} end
local available = tonumber(redis.call('HGET', KEYS[1], 'available_micros') or '0')
local amount = tonumber(ARGV[2])
if available < amount then return {2, available} end
local balance = redis.call('HINCRBY', KEYS[1], 'available_micros', -amount)
redis.call('HSET', KEYS[2], 'state', ARGV[3], 'last_request', ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], balance)
redis.call('RPUSH', KEYS[4], ARGV[4])
return {1, balance}
"""
ACCOUNT_COUNT = 1_000
OPENING_BALANCE_MICROS = 10**15
AMOUNT_MICROS = 1_500
SESSION_STATE = b"open;rg=10;reserved=1000000"
USAGE_RECORD_PREFIX = b"rg=10;used_octets=1500000;cost_micros=1500;request="


@dataclass(frozen=True, slots=True)
class Measurement:
    client: str
    transport: str
    concurrency: int
    calls: int
    seconds: float
    client_cpu_seconds: float | None
    redis_cpu_seconds: float

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds

    @property
    def client_cpu_micros_per_call(self) -> float | None:
        return None if self.client_cpu_seconds is None else self.client_cpu_seconds / self.calls * 1e6

    @property
    def redis_cpu_micros_per_call(self) -> float:
        return self.redis_cpu_seconds / self.calls * 1e6


def account_keys(index: int) -> list[bytes]:
    tag = f"{{acct:{index}}}"
    return [f"{tag}:{suffix}".encode() for suffix in ("balance", "session:1", "applied", "outbox")]


KEYS = [account_keys(index) for index in range(ACCOUNT_COUNT)]

# One call as each client takes it: (sha, keys, args).
Call = Callable[[list[bytes], list[bytes]], Awaitable[object]]


def charge_arguments(worker: int, sequence: int) -> tuple[list[bytes], list[bytes]]:
    request = f"w{worker};{sequence}".encode()
    keys = KEYS[(worker * 7919 + sequence) % ACCOUNT_COUNT]
    return keys, [request, b"1500", SESSION_STATE, USAGE_RECORD_PREFIX + request]


class Stopwatch:
    """Wall time, this process's CPU time, and Redis's CPU time around one run."""

    def __init__(self, admin: redis.Redis) -> None:
        self.admin = admin

    def redis_cpu_seconds(self) -> float:
        cpu = self.admin.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def __enter__(self) -> Stopwatch:
        self.redis_cpu_started = self.redis_cpu_seconds()
        self.cpu_started = time.process_time()
        self.wall_started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self.wall_started
        self.client_cpu_seconds = time.process_time() - self.cpu_started
        self.redis_cpu_used = self.redis_cpu_seconds() - self.redis_cpu_started


def reset_data(admin: redis.Redis) -> None:
    admin.flushall()
    pipeline = admin.pipeline(transaction=False)
    for keys in KEYS:
        pipeline.hset(keys[0], "available_micros", OPENING_BALANCE_MICROS)
    pipeline.execute()


def records_written(admin: redis.Redis) -> int:
    pipeline = admin.pipeline(transaction=False)
    for keys in KEYS:
        pipeline.llen(keys[3])
    return sum(pipeline.execute())


async def run_workers(call: Call, concurrency: int, seconds: float) -> int:
    """``concurrency`` tasks each issuing calls back to back until the time is up."""
    running = True

    def stop() -> None:
        nonlocal running
        running = False

    async def worker(worker_index: int) -> int:
        sequence = 0
        while running:
            keys, arguments = charge_arguments(worker_index, sequence)
            await call(keys, arguments)
            sequence += 1
        return sequence

    asyncio.get_running_loop().call_later(seconds, stop)
    return sum(await asyncio.gather(*(worker(index) for index in range(concurrency))))


async def run_pipelines(client: redis.asyncio.Redis, sha: str, batch: int, seconds: float) -> int:
    """One redis-py pipeline of ``batch`` EVALSHAs at a time, until the time is up."""
    deadline = time.perf_counter() + seconds
    sequence = 0
    while time.perf_counter() < deadline:
        pipeline = client.pipeline(transaction=False)
        for _ in range(batch):
            keys, arguments = charge_arguments(0, sequence)
            pipeline.evalsha(sha, 4, *keys, *arguments)
            sequence += 1
        await pipeline.execute()
    return sequence


def measure(admin: redis.Redis, client: str, transport: str, concurrency: int, run: Callable[[], int]) -> Measurement:
    reset_data(admin)
    with Stopwatch(admin) as stopwatch:
        calls = run()
    written = records_written(admin)
    if written != calls:
        raise AssertionError(f"{client} {transport} c={concurrency}: {calls} calls but {written} usage records")
    return Measurement(
        client,
        transport,
        concurrency,
        calls,
        stopwatch.seconds,
        stopwatch.client_cpu_seconds,
        stopwatch.redis_cpu_used,
    )


def bench_redis_py(
    server: EmbeddedRedis, admin: redis.Redis, sha: str, concurrency: int, seconds: float
) -> list[Measurement]:
    async def single() -> int:
        # One connection per task, as redis-py serves concurrent awaits (its default pool stops at 100).
        client = redis.asyncio.Redis(host=server.host, port=server.port or 0, max_connections=concurrency)
        try:
            await asyncio.gather(*(client.ping() for _ in range(concurrency)))  # open the pool's connections

            async def call(keys: list[bytes], arguments: list[bytes]) -> object:
                return await client.evalsha(sha, 4, *keys, *arguments)

            return await run_workers(call, concurrency, seconds)
        finally:
            await client.aclose()

    async def pipelined() -> int:
        client = redis.asyncio.Redis(host=server.host, port=server.port or 0)
        try:
            await client.ping()
            return await run_pipelines(client, sha, concurrency, seconds)
        finally:
            await client.aclose()

    return [
        measure(admin, "redis-py single calls", "tcp", concurrency, lambda: uvloop.run(single())),
        measure(admin, "redis-py pipeline", "tcp", concurrency, lambda: uvloop.run(pipelined())),
    ]


def bench_pipelined(
    server: EmbeddedRedis, admin: redis.Redis, concurrency: int, seconds: float, transport: str
) -> Measurement:
    async def run() -> int:
        if transport == "unix":
            client = PipelinedRedis(unix_socket_path=server.unix_socket_path)
        else:
            client = PipelinedRedis(host=server.host, port=server.port or 0)
        async with client:
            sha = client.register_script(CHARGE_SCRIPT)
            await client.evalsha(sha, KEYS[0], [b"warm-up", b"1500", SESSION_STATE, b"warm-up"])

            async def call(keys: list[bytes], arguments: list[bytes]) -> object:
                return await client.evalsha(sha, keys, arguments)

            return await run_workers(call, concurrency, seconds) + 1  # the warm-up wrote a record too

    return measure(admin, "balance.pipeline", transport, concurrency, lambda: uvloop.run(run()))


def bench_redis_benchmark(
    server: EmbeddedRedis, admin: redis.Redis, sha: str, concurrency: int, seconds: float
) -> Measurement | None:
    """redis-benchmark (C, one thread, no pipelining) sending the same EVALSHA.

    ``-r`` gives one range to every ``__rand_int__``, each replaced on its own: the request key is
    three of them (unique enough that repeats are negligible) and each of the four keys names a
    random seeded account. The keys then belong to different accounts, which a single Redis does
    not mind; the script does the same work.
    """
    executable = shutil.which("redis-benchmark")
    if executable is None:
        return None
    requests = max(10_000, int(seconds * (15_000 if concurrency == 1 else 60_000)))
    tag = "{acct:__rand_int__}"
    command = [
        executable, "-h", server.host, "-p", str(server.port), "-c", str(concurrency), "-n", str(requests),
        "-r", str(ACCOUNT_COUNT), "--csv",
        "EVALSHA", sha, "4", f"{tag}:balance", f"{tag}:session:1", f"{tag}:applied", f"{tag}:outbox",
        "__rand_int____rand_int____rand_int__", str(AMOUNT_MICROS), SESSION_STATE.decode(),
        USAGE_RECORD_PREFIX.decode() + "benchmark",
    ]  # fmt: skip
    reset_data(admin)
    with Stopwatch(admin) as stopwatch:
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
    rows = list(csv.reader(io.StringIO(completed.stdout)))
    requests_per_second = float(rows[-1][1])
    return Measurement(
        "redis-benchmark (C)",
        "tcp",
        concurrency,
        requests,
        requests / requests_per_second,
        None,
        stopwatch.redis_cpu_used,
    )


def print_table(measurements: list[Measurement]) -> None:
    header = f"{'client':<24}{'transport':>10}{'concurrency':>13}{'calls':>10}{'calls/s':>10}"
    print(header + f"{'client CPU us/call':>20}{'Redis CPU us/call':>19}")
    for row in measurements:
        client_cpu = row.client_cpu_micros_per_call
        client_cpu_text = "-" if client_cpu is None else f"{client_cpu:.1f}"
        print(
            f"{row.client:<24}{row.transport:>10}{row.concurrency:>13}{row.calls:>10}{row.calls_per_second:>10.0f}"
            f"{client_cpu_text:>20}{row.redis_cpu_micros_per_call:>19.1f}"
        )


def one_round(server: EmbeddedRedis, admin: redis.Redis, sha: str, options: argparse.Namespace) -> list[Measurement]:
    measurements: list[Measurement] = []
    for concurrency in options.concurrencies:
        measurements += bench_redis_py(server, admin, sha, concurrency, options.seconds)
        for transport in ("tcp", "unix"):
            measurements.append(bench_pipelined(server, admin, concurrency, options.seconds, transport))
        reference = bench_redis_benchmark(server, admin, sha, concurrency, options.seconds)
        if reference is not None:
            measurements.append(reference)
    return measurements


def medians(rounds: list[list[Measurement]]) -> list[Measurement]:
    """Row by row, the round with the median calls/s (the machine is shared: one round can be unlucky)."""
    chosen = []
    for runs in zip(*rounds, strict=True):
        ranked = sorted(runs, key=lambda run: run.calls_per_second)
        chosen.append(ranked[len(ranked) // 2])
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    parser.add_argument("--concurrency", default="1,64,256", help="comma-separated calls in flight")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each row reports its median round")
    parser.add_argument("--no-aof", action="store_true", help="run Redis without its append-only file")
    options = parser.parse_args()
    options.concurrencies = [int(value) for value in options.concurrency.split(",")]

    with tempfile.TemporaryDirectory(prefix="ocs-bench-") as directory:
        server = EmbeddedRedis(Path(directory), port=0, unix_socket=True, append_only=not options.no_aof)
        with server:
            admin = redis.Redis(host=server.host, port=server.port or 0)
            sha = admin.script_load(CHARGE_SCRIPT)
            print(
                f"redis-server {server.server_version}, append-only file {'off' if options.no_aof else 'everysec'}; "
                f"redis-py {redis.__version__} (hiredis parser: {redis.utils.HIREDIS_AVAILABLE}); uvloop; "
                f"{options.seconds} s per row, median of {options.repeat} rounds"
            )
            rounds = [one_round(server, admin, sha, options) for _ in range(options.repeat)]
            admin.close()
    measurements = medians(rounds)
    print_table(measurements)

    best_redis_py = max(m.calls_per_second for m in measurements if m.client.startswith("redis-py"))
    best_pipelined = max(
        m.calls_per_second for m in measurements if m.client == "balance.pipeline" and m.transport == "tcp"
    )
    print(
        f"RESULT redis_py_per_s={best_redis_py:.0f} pipelined_per_s={best_pipelined:.0f} "
        f"ratio={best_pipelined / best_redis_py:.1f}"
    )


if __name__ == "__main__":
    main()
