"""``ocs demo``: the whole system in one command: embedded Redis, the server, the simulator.

Theory of operation: the demo makes a fresh data directory (a temporary one unless ``--data``
is given), starts the server in this process exactly as ``ocs serve`` would (embedded
redis-server with AOF in that directory, the spool beside it, Diameter and HTTP on free
loopback ports, its JSON log in ``server.log`` there), and then runs the network simulator as a
separate process (``python -m simulator``) against those ports, as any client would: over
Diameter and the provisioning API only, with an admin token the demo makes for it in the data
directory's database (handed over in ``OCS_TOKEN``, not on the visible command line, and valid
for a day). The simulator shows its live progress, prints its
report and the audit verdict, and writes ``report.json``. Then the server is stopped gracefully
(DPR, drain, spool, Redis) and the temporary directory removed. With ``--json`` the report is
printed as JSON on stdout and everything else (progress, the text report) goes to stderr, so
``ocs demo --json > report.json`` or a pipe into ``jq`` works.

Server settings the scenario needs (its ``[server]`` table, for example a short Validity-Time
so that Tcc closes abandoned sessions within the run) override the configuration.

The exit status is the simulator's: 0 when the audit passed and the money adds up, 1 when it
did not, 2 when the run could not be made (the server did not start, or the simulator could not
run). A temporary directory is removed after a clean run and kept, with the server's log and the
report, after any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from balance.errors import BalanceScriptError, BalanceUnavailable
from ocs.app import new_state, shutdown, startup
from ocs.config import ConfigError, Settings
from ocs.db import tokens
from ocs.db.engine import DatabaseUnavailable
from ocs.db.tokens import Role
from ocs.logs import configure_logging

DEFAULT_SCENARIO = Path("config/scenarios/smoke.toml")
DEMO_TOKEN_LIFETIME = timedelta(days=1)  # a kept data directory holds no token valid for long


@dataclasses.dataclass(frozen=True, slots=True)
class DemoOptions:
    scenario: Path = DEFAULT_SCENARIO
    seed: int = 1
    data_directory: Path | None = None  # None: a temporary directory, removed afterwards
    simulator_arguments: tuple[str, ...] = ()  # passed through to ``python -m simulator``
    json_report: bool = False  # the report as JSON on stdout; the simulator's own output to stderr


def scenario_overrides(scenario: Path) -> dict[str, str]:
    """The scenario's ``[server]`` table as ``OCS_<SECTION>_<FIELD>`` overrides (a scenario may
    need, say, a short Validity-Time); ``load_settings`` checks them like any other."""
    try:
        with scenario.open("rb") as file:
            server = tomllib.load(file).get("server", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{scenario}: {error}") from None
    if not isinstance(server, dict):
        raise ConfigError(f"{scenario}: [server] must be a table of server settings")
    overrides: dict[str, str] = {}
    for section, values in server.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{scenario}: [server.{section}] must be a table")
        for name, value in values.items():
            overrides[f"OCS_{section.upper()}_{name.upper()}"] = (
                str(value).lower() if isinstance(value, bool) else str(value)
            )
    return overrides


def demo_settings(settings: Settings, directory: Path) -> Settings:
    """The configured server, on free loopback ports, with everything it writes in ``directory``."""
    return dataclasses.replace(
        settings,
        diameter=dataclasses.replace(settings.diameter, host="127.0.0.1", port=0),
        http=dataclasses.replace(settings.http, host="127.0.0.1", port=0, enabled=True),
        redis=dataclasses.replace(settings.redis, url="", cluster=False, data_directory=str(directory / "redis")),
        spool=dataclasses.replace(settings.spool, path=str(directory / "spool.sqlite3")),
    )


async def run_demo(settings: Settings, options: DemoOptions) -> int:
    if not options.scenario.is_file():
        print(f"ocs demo: no scenario file {options.scenario}", file=sys.stderr)
        return 2
    directory = options.data_directory or Path(tempfile.mkdtemp(prefix="ocs-demo-"))
    status = 2
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / "server.log").open("a", encoding="utf-8") as log_file:
            configure_logging(stream=log_file)
            status = await _run(demo_settings(settings, directory), options, directory)
        if options.json_report and (directory / "report.json").is_file():
            sys.stdout.write((directory / "report.json").read_text(encoding="utf-8"))
            sys.stdout.flush()
    except (  # no server: no run
        OSError,
        RuntimeError,
        ValueError,
        BalanceUnavailable,
        BalanceScriptError,
        DatabaseUnavailable,
    ) as error:
        print(f"ocs demo: the server could not start: {type(error).__name__}: {error}", file=sys.stderr)
    finally:
        if options.data_directory is None and status == 0:
            shutil.rmtree(directory, ignore_errors=True)
        elif options.data_directory is None:
            print(f"ocs demo: kept {directory} (server.log, report.json) to look at", file=sys.stderr)
    return status


async def _run(settings: Settings, options: DemoOptions, directory: Path) -> int:
    state = new_state(settings)
    try:
        host, port = await startup(state)
        assert state.http is not None and state.database is not None
        _, secret = await tokens.create(
            state.database, name="ocs demo", role=Role.ADMIN, expires_at=datetime.now(UTC) + DEMO_TOKEN_LIFETIME
        )
        print(
            f"ocs demo: server up (Diameter {host}:{port}, API {state.http.url}, data in {directory}); "
            f"running the simulator on {options.scenario}",
            file=sys.stderr,
            flush=True,
        )
        simulator = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "simulator",
            "--scenario",
            str(options.scenario),
            "--diameter",
            f"{host}:{port}",
            "--api",
            state.http.url,
            "--seed",
            str(options.seed),
            "--json",
            str(directory / "report.json"),
            *options.simulator_arguments,
            stdout=sys.stderr if options.json_report else None,  # stdout carries the JSON alone
            env={**os.environ, "OCS_TOKEN": secret},
        )
        try:
            code = await simulator.wait()
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                simulator.terminate()
            await simulator.wait()
            raise
        return code if code >= 0 else 2  # killed by a signal: no verdict
    finally:
        print("ocs demo: stopping the server", file=sys.stderr, flush=True)
        await shutdown(state)
