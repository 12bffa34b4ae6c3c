"""How fast and how small the money engine is: charge calls per second, script cost, memory.

Theory of operation: one private embedded Redis (append-only file on, ``everysec``, as in
production) in a temporary directory, and this one Python process on uvloop talking to it through
``BalanceStore.connect(url, pipelined=True)``, the charging hot path. The run, in order:

1. Memory per idle account: ``used_memory`` before and after provisioning ``ACCOUNT_COUNT``
   accounts, each with a main money bucket and one allowance bucket (the ``ar:`` lookup key
   included: it is part of what an account costs), divided by the count. Every connection is
   opened first: Redis gives each client buffers that are no account's cost.
2. Memory per live session: ``used_memory`` before and after opening one session on each account
   (a CCR-INITIAL that reserves one rating group), divided by the count: the session hash, its
   member of the hierarchy's expiry zset (the zset itself, since each account has one session),
   the account counters the hold adds, and the root's mark in the supervisor's work list. Half
   the accounts get a 3GPP-style Session-Id (the figure in RESULT), half a short one: whether
   "<account>|<session>" fits Redis's zset-max-listpack-value (64 bytes) decides whether the
   expiry zset is a compact listpack or a skiplist, the largest item of a session's cost.
   MEMORY USAGE of one account's and one session's keys shows where the bytes go.
3. The mix: ``CONCURRENCY`` tasks each run sessions back to back on random accounts for
   ``MIX_SECONDS``: INITIAL (reserve), ``UPDATES_PER_SESSION`` UPDATEs (commit + reserve) and a
   TERMINATION (commit + release), alternating voice (seconds, drawing on the allowance first)
   and data (octets, money) sessions. Reported: charge calls/s, this process's CPU per call, the
   script's own cost (``INFO commandstats`` after ``CONFIG RESETSTAT``: ``cmdstat_fcall``, the
   function library, where Redis has functions, else ``cmdstat_evalsha``; ``--eval`` makes the
   store call the EVAL scripts instead, for an A/B; ``--flush-bytes 0`` makes the pipelined client
   write once per loop pass, as it did before it wrote a big batch in 16 KB pieces),
   and Redis's CPU per call (``INFO cpu``: the script plus network, parsing and the AOF).
4. The same form twice: redis-benchmark can only repeat one command, so both it and Python run
   the one charge call that does full work every time: a CCR-INITIAL reserving 300 s of voice on
   a fresh random session id for one account with a huge balance. redis-benchmark gets its best
   of two settings (``-c`` connections, ``-P`` pipelining: BENCHMARK_SETTINGS); Python goes through
   ``BalanceStore.charge`` exactly as the server does (which also marks the root in the
   supervisor's work list: one ZADD per opened session that redis-benchmark does not send). The
   ratio compares the two. redis-benchmark sends the call the store sends: FCALL of the charge
   function, or EVALSHA of the charge script.

The machine has two cores shared with whatever else runs: figures move by a fifth from run to
run, and the script's usec_per_call (wall time inside Redis) grows when Redis loses its core.

Redis takes one core, this process (or redis-benchmark) the other. Targets
(from the issue): >= 30k charge calls/s from one Python process, >= 0.6x redis-benchmark, the
script <= 25 us per call (one Redis carries >= 40k charge calls/s), <= 400 B per idle account with
two buckets, <= 600 B per live session. The last line is
``RESULT charge_calls_per_s=<n> redis_benchmark_per_s=<n> ratio=<x> script_us=<x>
bytes_per_account=<n> bytes_per_session=<n>``.

Run from the project root: ``.venv/bin/python bench/balance.py`` (about 35 s).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis
import uvloop

# This file bears the name of the package it measures: run as a script, its own directory is
# first on sys.path, and ``import balance`` would find this file instead of the package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

from balance import keys
from balance.callers import PipelinedCaller
from balance.embedded import EmbeddedRedis
from balance.script_io import parse_charge_reply, tariff_text
from balance.scripts import SCRIPTS, Operation
from balance.store import BalanceStore
from balance.tariff import cost
from balance.types import (
    Account,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    ChargeResult,
    ItemResult,
    Outcome,
    Tariff,
    Unit,
)

ACCOUNT_COUNT = 10_000
MIX_SECONDS = 10.0
FORM_SECONDS = 4.0
CONCURRENCY = 384  # charge calls in flight from this process: enough to keep one Redis busy
PROVISION_CONCURRENCY = 32  # the store's redis-py pool size: provisioning is off the hot path
UPDATES_PER_SESSION = 2
SEED = 20_240_601

EUR = 1_000_000
OPENING_MAIN_MICROS = 1_000 * EUR
OPENING_ALLOWANCE_SECONDS = 6_000  # 100 minutes of voice
HUGE_BALANCE_MICROS = 10**14  # 100 million: the same-form account never runs dry
NOW = 1_700_000_000
# Tariffs as the rating layer hands them over: voice 0.60 per minute in 60/60 increments,
# data 0.01 per MB rounded up to whole MB.
VOICE = Tariff(price_micros=600_000, per_units=60, block_units=60, first_units=60)
DATA = Tariff(price_micros=10_000, per_units=1_000_000, block_units=1_000_000, first_units=1_000_000)
VOICE_REQUEST_SECONDS = 300
# The deadline of the same-form calls sent as fixed text (redis-benchmark): the year 2286, so
# Redis never finds it passed (charge.lua's ARGV 11, epoch milliseconds).
FAR_DEADLINE_MILLISECONDS = 10**13
DATA_REQUEST_OCTETS = 50_000_000
# A Session-Id as network elements build it (RFC 6733 section 8.8: <DiameterIdentity>;<high>;<low>),
# with a 3GPP node name (TS 23.003 section 19.4.2: <node>.epc.mnc<MNC>.mcc<MCC>.3gppnetwork.org).
SESSION_PREFIX = "pgw1.epc.mnc001.mcc001.3gppnetwork.org;1700000000;"
# The same with a short Diameter identity: "<account>|<session>", the expiry zset's member, then
# stays within Redis's zset-max-listpack-value (64 bytes), so the zset stays a compact listpack.
SHORT_SESSION_PREFIX = "pgw1.op.net;1700000000;"

# redis-benchmark gets two tries, and its best counts: many connections with one command each,
# and fewer connections pipelining 16 (on this 2-core machine neither wins every time).
BENCHMARK_SETTINGS = ((50, 16), (100, 1))  # (-c connections, -P pipelined commands per connection)
# -r range: random() gives 31 bits; over a few hundred thousand calls a repeated session id
# (a replay, far cheaper than a reservation) is a few in a million.
BENCHMARK_RANDOM_RANGE = 2_000_000_000
FORM_ACCOUNT = "bench-form"


def account_id(index: int) -> str:
    return f"acct{index:06d}"


def voice(used: int = 0, requested: int = 0) -> ChargeItem:
    return ChargeItem(1, "voice", Unit.SECONDS, VOICE, used, requested)


def data(used: int = 0, requested: int = 0) -> ChargeItem:
    return ChargeItem(2, "data", Unit.OCTETS, DATA, used, requested)


# -- Redis introspection ------------------------------------------------------------------------


def used_memory(admin: redis.Redis) -> int:
    # A keyspace that just grew past a power of two keeps its old and new hash tables until
    # Redis's cron has rehashed it (activerehashing: about 1 ms every 100 ms); let it finish.
    time.sleep(0.3)
    return int(admin.info("memory")["used_memory"])


def redis_cpu_seconds(admin: redis.Redis) -> tuple[float, float]:
    """Redis's CPU time so far, user + sys: all its threads (the fsync of the append-only file
    runs in a background thread), and its main thread alone (the one that runs every command)."""
    cpu = admin.info("cpu")
    main_thread = float(cpu.get("used_cpu_user_main_thread", 0.0)) + float(cpu.get("used_cpu_sys_main_thread", 0.0))
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), main_thread


def machine_ticks() -> tuple[int, int] | None:
    """The whole machine's clock ticks so far, (stolen, all), from the first line of /proc/stat:
    stolen is time the hypervisor ran something else while one of this machine's vCPUs had work
    (``steal``). None where there is no /proc/stat."""
    try:
        line = Path("/proc/stat").read_text().split("\n", 1)[0]
    except OSError:
        return None
    ticks = [int(value) for value in line.split()[1:9]]  # user nice system idle iowait irq softirq steal
    return ticks[7], sum(ticks)


def command_stats(admin: redis.Redis) -> dict[str, dict[str, float]]:
    """INFO commandstats as {command: {calls, usec, usec_per_call}} (redis-py parses the lines)."""
    stats = admin.info("commandstats")
    return {name.removeprefix("cmdstat_"): values for name, values in stats.items()}


@dataclass(slots=True)
class Run:
    """One timed run: calls, wall time, CPU of this process and of Redis, the script's cost."""

    name: str
    calls: int = 0
    seconds: float = 0.0
    client_cpu_seconds: float | None = None
    redis_cpu_seconds: float = 0.0
    redis_main_thread_seconds: float = 0.0
    stolen_share: float | None = None
    script_micros_per_call: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    note: str = ""

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        client = "-" if self.client_cpu_seconds is None else f"{self.client_cpu_seconds / self.calls * 1e6:.1f}"
        busy = f"{self.redis_main_thread_seconds / self.seconds:.0%}" if self.seconds else "-"
        stolen = "-" if self.stolen_share is None else f"{self.stolen_share:.0%}"
        return (
            f"{self.name:<38}{self.calls:>9}{self.calls_per_second:>10.0f}{client:>14}"
            f"{self.redis_cpu_seconds / self.calls * 1e6:>13.1f}{self.script_micros_per_call:>12.1f}"
            f"{busy:>8}{stolen:>8}"
        )


HEADER = (
    f"{'run':<38}{'calls':>9}{'calls/s':>10}{'py CPU us/c':>14}{'Redis us/c':>13}{'script us':>12}"
    f"{'busy':>8}{'stolen':>8}"
)


class Timed:
    """Around a run: wall time, this process's CPU, Redis CPU, and fresh command statistics."""

    def __init__(self, admin: redis.Redis, run: Run, *, client_cpu: bool = True) -> None:
        self.admin = admin
        self.run = run
        self.client_cpu = client_cpu

    def __enter__(self) -> Timed:
        self.admin.config_resetstat()
        self.redis_cpu = redis_cpu_seconds(self.admin)
        self.ticks = machine_ticks()
        self.cpu = time.process_time()
        self.wall = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        run = self.run
        run.seconds = time.perf_counter() - self.wall
        if self.client_cpu:
            run.client_cpu_seconds = time.process_time() - self.cpu
        redis_cpu = redis_cpu_seconds(self.admin)
        run.redis_cpu_seconds = redis_cpu[0] - self.redis_cpu[0]
        run.redis_main_thread_seconds = redis_cpu[1] - self.redis_cpu[1]
        ticks = machine_ticks()
        if ticks is not None and self.ticks is not None and ticks[1] > self.ticks[1]:
            run.stolen_share = (ticks[0] - self.ticks[0]) / (ticks[1] - self.ticks[1])
        stats = command_stats(self.admin)
        script = max(stats.get("fcall", {}), stats.get("evalsha", {}), key=lambda entry: int(entry.get("calls", 0)))
        run.script_micros_per_call = float(script.get("usec_per_call", 0.0))


# -- provisioning and memory ---------------------------------------------------------------------


async def provision_accounts(store: BalanceStore, count: int) -> None:
    semaphore = asyncio.Semaphore(PROVISION_CONCURRENCY)

    async def one(index: int) -> None:
        account = Account(
            account_id(index),
            buckets=(
                Bucket(1, BucketKind.MAIN, OPENING_MAIN_MICROS),
                Bucket(2, BucketKind.SECONDS, OPENING_ALLOWANCE_SECONDS, ("voice",)),
            ),
        )
        async with semaphore:
            result = await store.provision(account)
        if result.outcome is not Outcome.OK:
            raise AssertionError(f"provisioning {account.account_id}: {result.outcome}")

    await asyncio.gather(*(one(index) for index in range(count)))


async def open_one_session_each(store: BalanceStore, accounts: range, prefix: str) -> None:
    """A CCR-INITIAL on every account: one live session holding one reservation each."""
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> None:
        request = ChargeRequest(
            account_id(index), f"{prefix}idle{index}", 0, (data(requested=DATA_REQUEST_OCTETS),), NOW
        )
        async with semaphore:
            result = await store.charge(request)
        if result.outcome is not Outcome.OK or result.items[0].granted_units != DATA_REQUEST_OCTETS:
            raise AssertionError(f"initial on {request.account_id}: {result}")

    await asyncio.gather(*(one(index) for index in accounts))


# -- the mix -------------------------------------------------------------------------------------


async def run_mix(store: BalanceStore, admin: redis.Redis, seconds: float) -> Run:
    run = Run("mix: INITIAL/UPDATE/TERMINATION")
    rng = random.Random(SEED)
    running = True

    def check(result: ChargeResult) -> None:
        run.outcomes[result.outcome.value] += 1
        for item in result.items:
            run.outcomes[f"item {item.outcome.value}"] += 1

    async def session(worker: int, serial: int) -> int:
        """One session; returns the calls made (the last may be cut short by the clock)."""
        account = account_id(rng.randrange(ACCOUNT_COUNT))
        session_id = f"{SESSION_PREFIX}{worker}.{serial}"
        is_voice = serial % 2 == 0
        item = voice if is_voice else data
        asked = VOICE_REQUEST_SECONDS if is_voice else DATA_REQUEST_OCTETS
        calls = 1
        check(await store.charge(ChargeRequest(account, session_id, 0, (item(requested=asked),), NOW)))
        number = 1
        while number <= UPDATES_PER_SESSION and running:
            used = asked - rng.randrange(asked // 4)
            check(await store.charge(ChargeRequest(account, session_id, number, (item(used, asked),), NOW + number)))
            number += 1
            calls += 1
        used = rng.randrange(asked)
        request = ChargeRequest(account, session_id, number, (item(used),), NOW + number, terminate=True)
        check(await store.charge(request))
        return calls + 1

    async def worker(index: int) -> int:
        calls = serial = 0
        while running:
            calls += await session(index, serial)
            serial += 1
        return calls

    def stop() -> None:
        nonlocal running
        running = False

    with Timed(admin, run):
        asyncio.get_running_loop().call_later(seconds, stop)
        run.calls = sum(await asyncio.gather(*(worker(index) for index in range(CONCURRENCY))))
    return run


# -- the same form for Python and redis-benchmark --------------------------------------------------


async def provision_form_account(store: BalanceStore) -> None:
    account = Account(
        FORM_ACCOUNT,
        buckets=(
            Bucket(1, BucketKind.MAIN, HUGE_BALANCE_MICROS),
            # Present so the script parses two buckets as for every account; scoped to data, so
            # the voice reservation below is all money (the longer path).
            Bucket(2, BucketKind.OCTETS, 10**12, ("data",)),
        ),
    )
    if (await store.provision(account)).outcome is not Outcome.OK:
        raise AssertionError("provisioning the same-form account")


def form_arguments(session_id: str) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of the same-form call, as BalanceStore.charge builds them (charge.lua header)."""
    script_keys = [
        keys.session_key(FORM_ACCOUNT, session_id),
        keys.account_key(FORM_ACCOUNT, FORM_ACCOUNT),
        keys.account_key(FORM_ACCOUNT, FORM_ACCOUNT),
        keys.expiry_key(FORM_ACCOUNT),
        keys.outbox_key(FORM_ACCOUNT),
    ]
    tombstone, deadline = str(keys.DEFAULT_TOMBSTONE_SECONDS), str(FAR_DEADLINE_MILLISECONDS)
    arguments = [FORM_ACCOUNT, session_id, "0", str(NOW), str(NOW + 900), "0", "0", tombstone, "", "", deadline]
    voice = ["1", "", "voice", Unit.SECONDS.value, "0", str(VOICE_REQUEST_SECONDS), "0", tariff_text(VOICE), "", ""]
    arguments += voice
    return script_keys, arguments


async def run_form_python(store: BalanceStore, admin: redis.Redis, seconds: float) -> Run:
    run = Run("same form: Python BalanceStore")
    running = True

    async def worker(index: int) -> int:
        calls = 0
        while running:
            session_id = f"{SESSION_PREFIX}form{index}.{calls}"
            result = await store.charge(
                ChargeRequest(FORM_ACCOUNT, session_id, 0, (voice(requested=VOICE_REQUEST_SECONDS),), NOW)
            )
            run.outcomes[result.items[0].outcome.value if result.items else result.outcome.value] += 1
            calls += 1
        return calls

    def stop() -> None:
        nonlocal running
        running = False

    with Timed(admin, run):
        asyncio.get_running_loop().call_later(seconds, stop)
        run.calls = sum(await asyncio.gather(*(worker(index) for index in range(CONCURRENCY))))
    return run


def charge_command(store: BalanceStore) -> list[str]:
    """How the store calls the charge (after its first call): FCALL of the function or EVALSHA."""
    script = SCRIPTS[Operation.CHARGE]
    if isinstance(store.caller, PipelinedCaller) and store.caller.functions:
        return ["FCALL", script.function]
    return ["EVALSHA", script.sha]


def run_form_redis_benchmark(
    server: EmbeddedRedis, admin: redis.Redis, requests: int, call: list[str]
) -> tuple[Run | None, str]:
    """redis-benchmark sending the same ``call`` (FCALL or EVALSHA); ``__rand_int__`` makes every
    session id new.

    redis-benchmark (7.x) replaces each ``__rand_int__`` on its own with a 12-digit number below
    ``-r``, fresh for every command sent: the session key and the session id argument get
    different numbers, which the script does not mind (it trusts its KEYS), and both are new.
    Returns the best of BENCHMARK_SETTINGS and a description of the runs.
    """
    executable = shutil.which("redis-benchmark")
    if executable is None:
        return None, "redis-benchmark not on PATH: not run (0)"
    # The same arguments must do the same work: one call by hand first (its own session id).
    check_keys, check_arguments = form_arguments(f"{SESSION_PREFIX}check")
    invoke = admin.fcall if call[0] == "FCALL" else admin.evalsha
    reply = invoke(call[1], len(check_keys), *check_keys, *check_arguments)
    checked = parse_charge_reply(str(reply.decode() if isinstance(reply, bytes) else reply))
    # All money: the form account's allowance is scoped to data.
    reserves = ItemResult(1, Outcome.OK, VOICE_REQUEST_SECONDS, reserved_micros=cost(VOICE_REQUEST_SECONDS, VOICE))
    if checked.replayed or checked.items != (reserves,):
        raise AssertionError(f"the same-form call does not reserve: {reply!r}")
    best: Run | None = None
    described: list[str] = []
    for attempt, (connections, pipeline) in enumerate(BENCHMARK_SETTINGS):
        # redis-benchmark does not seed random(): every run draws the same numbers, so each run
        # gets its own prefix, or the second would replay the first's sessions (a cheap path).
        script_keys, arguments = form_arguments(f"{SESSION_PREFIX}rb{attempt}.__rand_int__")
        sessions_before = int(admin.zcard(keys.expiry_key(FORM_ACCOUNT)))
        flags = ["-h", server.host, "-p", str(server.port), "-c", str(connections), "-P", str(pipeline)]
        flags += ["-n", str(requests), "-r", str(BENCHMARK_RANDOM_RANGE), "--csv"]
        command = [executable, *flags, *call, str(len(script_keys))]
        run = Run(f"same form: redis-benchmark -c{connections} -P{pipeline}")
        with Timed(admin, run, client_cpu=False):
            completed = subprocess.run([*command, *script_keys, *arguments], capture_output=True, text=True, check=True)
        rows = list(csv.reader(io.StringIO(completed.stdout)))
        run.calls = requests
        run.seconds = requests / float(rows[-1][1])  # its own clock, without process start-up
        opened = int(admin.zcard(keys.expiry_key(FORM_ACCOUNT))) - sessions_before
        described.append(f"{run.calls_per_second:.0f}/s with -c {connections} -P {pipeline} ({opened} sessions opened)")
        if best is None or run.calls_per_second > best.calls_per_second:
            best = run
    flags_text = f"-n {requests} -r {BENCHMARK_RANDOM_RANGE} {call[0]} <charge> 5 <keys> <argv>"
    return best, f"redis-benchmark {flags_text}: " + ", ".join(described) + " (best counts)"


# -- main ----------------------------------------------------------------------------------------


async def warm_connections(store: BalanceStore) -> None:
    """Open every connection the store will use, so that their buffers (Redis gives each client
    a 16 KB reply buffer) are in the "before" figure and not charged to accounts or sessions."""
    await asyncio.gather(*(store.admin.execute("PING") for _ in range(PROVISION_CONCURRENCY)))
    await store.caller.execute("PING")


def memory_breakdown(admin: redis.Redis) -> str:
    """MEMORY USAGE of one account's and one session's keys, to show where the bytes go."""
    account = account_id(0)
    names = {
        "ar:": keys.account_root_key(account),
        "account hash": keys.account_key(account, account),
        "session hash": keys.session_key(account, f"{SESSION_PREFIX}idle0"),
        "expiry zset": keys.expiry_key(account),
    }
    parts = []
    for label, name in names.items():
        encoding = admin.object("encoding", name)
        encoding_text = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
        parts.append(f"{label} {admin.memory_usage(name, samples=0)} B ({encoding_text})")
    shard = keys.session_roots_key(account)
    roots = int(admin.zcard(shard)) or 1
    parts.append(f"supervisor list {int(admin.memory_usage(shard, samples=0) or 0) // roots} B per root (one shard)")
    return "; ".join(parts)


async def bench(
    server: EmbeddedRedis, admin: redis.Redis, seconds: float, functions: bool, flush_bytes: int | None
) -> None:
    store = await BalanceStore.connect(server.url, pipelined=True, functions=functions)
    assert isinstance(store.caller, PipelinedCaller)  # pipelined on a single Redis
    client = store.caller.client
    if flush_bytes is not None:
        client.flush_bytes = flush_bytes  # read when the connection opens (warm_connections below)
    writes = (
        f"client writes in {client.flush_bytes} B pieces"
        if client.flush_bytes > 0
        else "client writes once per loop pass"
    )
    try:
        await warm_connections(store)
        started = time.perf_counter()
        before = used_memory(admin)
        await provision_accounts(store, ACCOUNT_COUNT)
        bytes_per_account = (used_memory(admin) - before) / ACCOUNT_COUNT
        provisioned = time.perf_counter()
        # Half the accounts get a session with a 3GPP-style id, half one with a short id.
        half = ACCOUNT_COUNT // 2
        before = used_memory(admin)
        await open_one_session_each(store, range(half), SESSION_PREFIX)
        bytes_per_session = (used_memory(admin) - before) / half
        before = used_memory(admin)
        await open_one_session_each(store, range(half, ACCOUNT_COUNT), SHORT_SESSION_PREFIX)
        bytes_per_short_session = (used_memory(admin) - before) / (ACCOUNT_COUNT - half)
        print(
            f"provisioned {ACCOUNT_COUNT} accounts (main bucket + voice allowance) in {provisioned - started:.1f} s, "
            f"opened one data session on each in {time.perf_counter() - provisioned:.1f} s"
        )
        print(f"memory: {bytes_per_account:.0f} B per idle account (used_memory delta / accounts, ar: lookup included)")
        print(
            f"memory: {bytes_per_session:.0f} B per live session (used_memory delta / sessions: session hash, "
            f"its expiry zset entry, the account's held counter, the supervisor's mark of its root), "
            f"Session-Id {SESSION_PREFIX}<n>"
        )
        print(
            f"memory: {bytes_per_short_session:.0f} B per live session with Session-Id {SHORT_SESSION_PREFIX}<n> "
            f"(<account>|<session> within zset-max-listpack-value)"
        )
        print(f"memory: {memory_breakdown(admin)}")

        mix = await run_mix(store, admin, seconds)
        await provision_form_account(store)
        form = await run_form_python(store, admin, FORM_SECONDS)
        call = charge_command(store)
    finally:
        await store.close()
    reference, flags = run_form_redis_benchmark(server, admin, max(100_000, int(form.calls * 1.2)), call)

    print(
        f"mix: {CONCURRENCY} calls in flight ({writes}) for {seconds:.0f} s; sessions of INITIAL, "
        f"{UPDATES_PER_SESSION} x UPDATE,"
    )
    print(
        "     TERMINATION over random accounts, voice and data alternating; outcomes",
        dict(sorted(mix.outcomes.items())),
    )
    print(f"same form: CCR-INITIAL reserving {VOICE_REQUEST_SECONDS} s of voice on a new session id, one account;")
    print(f"     Python through BalanceStore.charge ({CONCURRENCY} in flight; it also sends the supervisor's ZADD")
    print(f"     mark per opened session), outcomes {dict(form.outcomes)}; {flags}")
    print("py CPU: this process per call (time.process_time); Redis: its CPU per call (INFO cpu, user + sys, ")
    print(f"     everything: network, parsing, the script, the AOF); script: cmdstat_{call[0].lower()} usec_per_call;")
    print("     busy: Redis's main thread CPU / wall time (near 100 %: Redis is the limit); stolen: share of")
    print("     the machine's CPU time the hypervisor gave to others (/proc/stat steal: everything slows)")
    print(HEADER)
    for row in (mix, form, reference):
        if row is not None:
            print(row.line())
    reference_per_second = reference.calls_per_second if reference is not None else 0.0
    ratio = form.calls_per_second / reference_per_second if reference_per_second else 0.0
    print(
        f"targets: charge calls/s {mix.calls_per_second:.0f} (>= 30000), ratio {ratio:.2f} (>= 0.6), "
        f"script {mix.script_micros_per_call:.1f} us (<= 25), {bytes_per_account:.0f} B per account (<= 400), "
        f"{bytes_per_session:.0f} B per session (<= 600)"
    )
    print(
        f"RESULT charge_calls_per_s={mix.calls_per_second:.0f} redis_benchmark_per_s={reference_per_second:.0f} "
        f"ratio={ratio:.2f} script_us={mix.script_micros_per_call:.1f} bytes_per_account={bytes_per_account:.0f} "
        f"bytes_per_session={bytes_per_session:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=MIX_SECONDS, help="duration of the mix")
    parser.add_argument("--eval", action="store_true", help="the EVAL scripts even where Redis has functions")
    parser.add_argument(
        "--flush-bytes",
        type=int,
        default=None,
        help="the pipelined client's early write size (default: its own, 16 KB; 0: one write per loop pass)",
    )
    options = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="ocs-bench-balance-") as directory,
        EmbeddedRedis(Path(directory), port=0, append_only=True) as server,
    ):
        admin = server.admin_client()
        print(f"redis-server {server.server_version} (private, {server.url}), append-only file on, fsync everysec")
        try:
            uvloop.run(bench(server, admin, options.seconds, not options.eval, options.flush_bytes))
        finally:
            admin.close()


if __name__ == "__main__":
    main()
