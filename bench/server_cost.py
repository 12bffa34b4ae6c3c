"""What one CCR costs the server process, counted in instructions (valgrind callgrind), A/B.

Theory of operation: on this two-core machine the wall-clock figures of bench/throughput.py move
by a fifth, and by half on a bad minute (the host steals time: every process slows at once), so a
change of a few per cent in the server's CPU per CCR cannot be seen there. An instruction count
is the same for the same code and inputs whatever else runs. So this runs ``ocs serve`` (its
embedded Redis, which is not counted, and its spool in a temporary directory) under ``valgrind
--tool=callgrind`` with instrumentation off, and the network simulator, not under valgrind, on
``config/scenarios/max-throughput.toml`` with a tenth of its population (provisioning 4000 lines
through a server under valgrind would take minutes; the simulator creates 4 customers at a time,
not 16, or the slowed server's SQLite transactions outwait the busy timeout): closed loop, 32
sessions in flight over 4 connections, voice, data, SMS as IEC and ECUR. Once CCRs are being
answered (the server's own count, ``ocs_diameter_requests_total`` on ``/metrics``, rising; up to
15 minutes of warm-up on a busy machine) the bench switches counting on (``callgrind_control
--instr=on --zero``), reads the count, waits, reads it again and dumps. The count's window lies
inside the counting window by the time the two callgrind_control calls take, so the CCRs are
scaled by the ratio of the two windows' lengths (at a steady rate: the server is saturated):
instructions per answered CCR, the whole process
(Diameter, rating, the engine call's Python side, the answer, the spool writer and the supervisor
running beside the traffic, the event loop, the garbage collector).
Under valgrind the server is ten to a hundred times slower, so it is always saturated, as in the
throughput bench; the simulator keeps 32 requests waiting on it (with 256, a busy machine's queue
outlasted the Redis client's reply timeout and the charge's deadline).

The baseline, measured in the same run: ``--baseline REF`` measures the server of another commit
as well (a ``git worktree`` of REF in the temporary directory; ``python -m ocs`` imports the
packages from its working directory, so the worktree's server runs, against the same simulator),
first the baseline, then this tree, and prints the ratio; ``--baseline-tree DIR`` measures the
project copy in DIR instead; ``--pure`` measures this tree's pure-Python fallback
(``OCS_PURE_PYTHON=1``, protocol/build.py) first. With none, only this tree is measured; the label
says whether it ran compiled. ``--keep DIR`` keeps the callgrind dumps (``callgrind_annotate
--inclusive=yes`` gives the breakdown by library: the interpreter, the compiled modules, SQLite).

Without valgrind the server runs about 4 instructions per nanosecond on a good day of this
machine (code counting 1.04-1.10M instructions per CCR measured 252-267 us of CPU per CCR in
bench/throughput.py), so the issue's 30 us per CCR would be about 120k instructions.

Run from the project root: ``.venv/bin/python bench/server_cost.py [--pure | --baseline REF]
[--seconds S]`` (a few minutes per tree; needs valgrind and, for ``--baseline``, git). The last line reads
``RESULT instructions_per_ccr=<n> baseline_instructions_per_ccr=<n or -> ratio=<x or ->``, with
``--pure`` ``pure_python_instructions_per_ccr=<n>`` in place of the baseline.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on sys.path; the project root is what the imports need.
if sys.path and Path(sys.path[0]).resolve() == PROJECT_ROOT / "bench":
    sys.path[0] = str(PROJECT_ROOT)
elif str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from bench import throughput  # noqa: E402  # its free_port, wait_for_health and stop
from protocol.build import PURE_PYTHON_VARIABLE, codec_build  # noqa: E402

SCENARIO = PROJECT_ROOT / "config" / "scenarios" / "max-throughput.toml"
POPULATION_SIZE = 400  # a tenth of the scenario's: provisioning goes through the slowed server
# Sessions in flight. Under callgrind the server answers a few dozen CCRs a second, less on a busy
# machine: 256 in flight queued for longer than the Redis client's reply timeout and the charge's
# deadline, and the server spent the window on timeouts and rescans. 32 keep it saturated.
SESSIONS = 32
CONNECTIONS = 4
WARMUP_SECONDS = 20.0  # provisioning and the first sessions, with counting off
MAX_WARMUP_SECONDS = 900.0  # on a busy machine provisioning takes longer; counting waits for CCRs
COUNT_SECONDS = 15.0  # counting on: about 1,000 CCRs at the server's pace under valgrind
HEALTH_TIMEOUT_SECONDS = 120.0
# The simulator with fewer customer creates in flight than its 16: under valgrind the server holds
# each SQLite write transaction ten times longer, and 16 at once outwait SQLite's busy timeout.
PROVISIONING_CONCURRENCY = 4
SIMULATOR_WITH_FEWER_CREATES = (
    "import runpy, sys; import simulator.population as population; "
    f"population.PROVISIONING_CONCURRENCY = {PROVISIONING_CONCURRENCY}; "
    "sys.argv[0] = 'simulator'; runpy.run_module('simulator', run_name='__main__', alter_sys=True)"
)
_REQUESTS_LINE = re.compile(r"^ocs_diameter_requests_total\{[^}]*\} ([0-9.e+]+)$", re.MULTILINE)
_TOTAL_LINE = re.compile(r"^\s*([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Measurement:
    tree: str
    requests: int
    instructions: int

    @property
    def per_ccr(self) -> float:
        return self.instructions / self.requests if self.requests else 0.0


def answered_requests(http_port: int, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=300) as response:  # a server under callgrind is slow
        text = response.read().decode()
    return int(sum(float(value) for value in _REQUESTS_LINE.findall(text)))


def callgrind_control(pid: int, *arguments: str) -> None:
    subprocess.run(["callgrind_control", *arguments, str(pid)], capture_output=True, check=True)


def midpoint(action: Callable[[], None]) -> float:
    """When ``action`` took effect, taken as the middle of its run (callgrind_control signals the
    running valgrind, which acts on it part-way through)."""
    started = time.monotonic()
    action()
    return (started + time.monotonic()) / 2


def small_scenario(directory: Path) -> Path:
    text = SCENARIO.read_text()
    smaller, replaced = re.subn(r"(?m)^size = \d+", f"size = {POPULATION_SIZE}", text)
    if replaced != 1:
        raise RuntimeError(f"{SCENARIO} has no [population] size line to shrink")
    path = directory / "max-throughput-small.toml"
    path.write_text(smaller)
    return path


def measure(
    tree: Path,
    label: str,
    data: Path,
    count_seconds: float,
    extra_environment: dict[str, str] | None = None,
    keep: Path | None = None,
) -> Measurement:
    data.mkdir()
    diameter_port, http_port = throughput.free_port(), throughput.free_port()
    environment = {
        **os.environ,
        "OCS_DIAMETER_PORT": str(diameter_port),
        "OCS_HTTP_PORT": str(http_port),
        "OCS_REDIS_DATA_DIRECTORY": str(data / "redis"),
        "OCS_SPOOL_PATH": str(data / "spool.sqlite3"),
        **(extra_environment or {}),
    }
    token = throughput.admin_token(environment, tree)
    out_file = data / "callgrind.out"
    command = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}"]
    with (data / "server.log").open("wb") as server_log, (data / "simulator.log").open("wb") as simulator_log:
        server = subprocess.Popen(
            [*command, sys.executable, "-m", "ocs", "serve", "--workers", "1"],
            cwd=tree,
            env=environment,
            stdout=server_log,
            stderr=subprocess.STDOUT,
        )
        simulator: subprocess.Popen[bytes] | None = None
        try:
            throughput.wait_for_health(http_port, server, HEALTH_TIMEOUT_SECONDS)
            duration = MAX_WARMUP_SECONDS + count_seconds + 5.0  # stopped once counted
            simulator = subprocess.Popen(
                [
                    *(sys.executable, "-c", SIMULATOR_WITH_FEWER_CREATES, "--scenario", str(small_scenario(data))),
                    *("--diameter", f"127.0.0.1:{diameter_port}", "--api", f"http://127.0.0.1:{http_port}"),
                    *("--duration", str(duration), "--sessions", str(SESSIONS), "--connections", str(CONNECTIONS)),
                ],
                cwd=PROJECT_ROOT,
                env=throughput.with_token(environment, token),
                stdout=simulator_log,
                stderr=subprocess.STDOUT,
            )
            time.sleep(WARMUP_SECONDS)
            warm_until = time.monotonic() + MAX_WARMUP_SECONDS - WARMUP_SECONDS
            warm = answered_requests(http_port, token)
            while True:  # a busy machine provisions slower: wait until the CCRs are flowing
                time.sleep(1.0)
                if answered_requests(http_port, token) > warm > 0:
                    break
                if time.monotonic() > warm_until or simulator.poll() is not None:
                    said = (data / "simulator.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"no CCRs answered in the warm-up of {label}; the simulator said:\n{said}")
                warm = answered_requests(http_port, token)
            counting_started = midpoint(lambda: callgrind_control(server.pid, "--instr=on", "--zero"))
            before, before_at = answered_requests(http_port, token), time.monotonic()
            time.sleep(count_seconds)
            after, after_at = answered_requests(http_port, token), time.monotonic()
            counting_ended = midpoint(lambda: callgrind_control(server.pid, "--dump"))
            callgrind_control(server.pid, "--instr=off")
            if after <= before:
                raise RuntimeError(f"no CCRs answered while counting {label}")
            requests = round((after - before) * (counting_ended - counting_started) / (after_at - before_at))
            if simulator.poll() not in (None, 0, 1):
                raise RuntimeError(f"the simulator failed against {label} (status {simulator.returncode})")
        finally:
            if simulator is not None and simulator.poll() is None:
                simulator.kill()
            throughput.stop(server)
    dumps = sorted(data.glob("callgrind.out.*"))
    if not dumps:
        raise RuntimeError(f"no callgrind dump for {label}")
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(dumps[-1], keep / f"callgrind.{data.name}.out")
    annotated = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(dumps[-1])], capture_output=True, text=True, check=True
    ).stdout
    found = _TOTAL_LINE.search(annotated)
    if found is None:
        raise RuntimeError(f"no PROGRAM TOTALS in the dump of {label}")
    return Measurement(label, requests, int(found.group(1).replace(",", "")))


def worktree(reference: str, directory: Path) -> Path:
    path = directory / "baseline-tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), reference], cwd=PROJECT_ROOT, capture_output=True, check=True
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    baseline = parser.add_mutually_exclusive_group()
    baseline.add_argument("--baseline", help="a git commit (or branch, tag) whose server is measured first")
    baseline.add_argument(
        "--baseline-tree", type=Path, help="a directory holding another copy of the project (e.g. a compiled build)"
    )
    baseline.add_argument(
        "--pure",
        action="store_true",
        help="measure this tree's pure-Python fallback (OCS_PURE_PYTHON=1) first, as the baseline",
    )
    parser.add_argument("--keep", type=Path, help="copy the callgrind dumps here (callgrind_annotate reads them)")
    parser.add_argument("--seconds", type=float, default=COUNT_SECONDS, help="seconds of counting per tree")
    options = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind (with callgrind_control) is not installed: apt-get install valgrind")
    with tempfile.TemporaryDirectory(prefix="ocs-bench-server-cost-") as directory_name:
        directory = Path(directory_name)
        results: list[Measurement] = []
        baseline_tree = worktree(options.baseline, directory) if options.baseline else None
        try:
            if baseline_tree is not None:
                label = f"baseline {options.baseline}"
                results.append(measure(baseline_tree, label, directory / "baseline", options.seconds))
            elif options.pure:
                pure = {PURE_PYTHON_VARIABLE: "1"}
                results.append(
                    measure(PROJECT_ROOT, "pure Python", directory / "pure", options.seconds, pure, options.keep)
                )
            elif options.baseline_tree is not None:
                tree = options.baseline_tree.resolve()
                results.append(measure(tree, f"baseline {tree.name}", directory / "baseline", options.seconds))
            label = f"this tree ({codec_build()})"
            results.append(measure(PROJECT_ROOT, label, directory / "this-tree", options.seconds, keep=options.keep))
        finally:
            if baseline_tree is not None:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(baseline_tree)], cwd=PROJECT_ROOT, check=False
                )
    print(f"ocs serve under callgrind, max-throughput with {POPULATION_SIZE} lines, {SESSIONS} sessions in flight")
    print(f"{'server':<32}{'CCRs counted':>14}{'instructions':>16}{'per CCR':>12}")
    for result in results:
        print(f"{result.tree:<32}{result.requests:>14,}{result.instructions:>16,}{result.per_ccr:>12,.0f}")
    current = results[-1]
    if len(results) == 2:
        base = results[0]
        ratio = current.per_ccr / base.per_ccr
        print(f"this tree / baseline: {ratio:.3f} ({(ratio - 1) * 100:+.1f} % instructions per CCR)")
        baseline_key = "pure_python_instructions_per_ccr" if options.pure else "baseline_instructions_per_ccr"
        print(f"RESULT instructions_per_ccr={current.per_ccr:.0f} {baseline_key}={base.per_ccr:.0f} ratio={ratio:.3f}")
    else:
        print(f"RESULT instructions_per_ccr={current.per_ccr:.0f} baseline_instructions_per_ccr=- ratio=-")


if __name__ == "__main__":
    main()
