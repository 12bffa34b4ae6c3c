"""``python -m simulator``: play a scenario against a running OCS and print the report.

Theory of operation: parse the arguments, run the scenario on uvloop (as the server does),
showing live progress (a rich progress bar on a terminal, plain lines otherwise, on stderr),
print the plain-text report (and write the JSON one with ``--json``). The exit code is 0 when
the run is clean, 1 when the audit failed or the money does not add up (``report.summarize``
lists why), and 2 for a usage or connection error before any verdict: one line on stderr, never
a traceback (the API client first retries for ``--api-retry-seconds`` while the server is away).
The API needs an admin token: ``--token``, else the ``OCS_TOKEN`` environment variable (better:
a command line is visible to every user of the machine; ``ocs demo`` passes it that way).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import uvloop

from simulator.http_api import RETRY_LIMIT_SECONDS
from simulator.population import MAX_RUN_NUMBER
from simulator.progress import live_progress
from simulator.report import render_text, summarize
from simulator.runner import RunResult, run_scenario
from simulator.scenario import ScenarioError, load_scenario

DEFAULT_DIAMETER = "127.0.0.1:3868"  # RFC 6733 section 11.4: the IANA port for Diameter over TCP
DEFAULT_API = "http://127.0.0.1:8080"  # ocs/config.py HttpSettings default
TOKEN_VARIABLE = "OCS_TOKEN"  # as the ocs command line reads it (ocs/cli/tokens.py)


def _host_port(text: str) -> tuple[str, int]:
    parsed = urlsplit(f"//{text}")
    if parsed.hostname is None or parsed.port is None:
        raise argparse.ArgumentTypeError(f"{text!r}: expected host:port")
    return parsed.hostname, parsed.port


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
        return value

    return parse


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, required=True, help="a TOML file, e.g. config/scenarios/smoke.toml")
    parser.add_argument("--diameter", type=_host_port, default=_host_port(DEFAULT_DIAMETER), help="host:port")
    parser.add_argument("--api", default=DEFAULT_API, help="base URL of the OCS HTTP API")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_VARIABLE) or None,
        help=f"an admin token of the OCS API (default: ${TOKEN_VARIABLE})",
    )
    parser.add_argument("--seed", type=int, default=1, help="population and arrivals (default 1)")
    parser.add_argument(
        "--run-number",
        type=int,
        default=None,
        help=f"0..{MAX_RUN_NUMBER - 1}, in account ids and numbers (default: from the clock, so reruns do not collide)",
    )
    parser.add_argument(
        "--api-retry-seconds",
        type=_positive(float),
        default=RETRY_LIMIT_SECONDS,
        help=f"how long an API call retries while the server is away (default {RETRY_LIMIT_SECONDS:g})",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON to this file")
    parser.add_argument("--duration", type=_positive(float), default=None, help="override [run] duration_seconds")
    parser.add_argument("--sessions", type=_positive(int), default=None, help="override [run] max_concurrent_sessions")
    parser.add_argument("--connections", type=_positive(int), default=None, help="override [run] connections")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = _arguments(argv)
    try:
        scenario = load_scenario(arguments.scenario)
    except (OSError, ScenarioError, ValueError) as error:
        print(f"scenario {arguments.scenario}: {error}", file=sys.stderr)
        return 2
    scenario = dataclasses.replace(
        scenario,
        duration_seconds=arguments.duration or scenario.duration_seconds,
        max_concurrent_sessions=int(arguments.sessions or scenario.max_concurrent_sessions),
        connections=int(arguments.connections or scenario.connections),
    )
    host, port = arguments.diameter
    run_number = arguments.run_number if arguments.run_number is not None else int(time.time()) % MAX_RUN_NUMBER
    try:
        with live_progress(scenario.name) as progress:
            result: RunResult = uvloop.run(
                run_scenario(
                    scenario,
                    diameter_host=host,
                    diameter_port=port,
                    api_url=arguments.api,
                    seed=arguments.seed,
                    run_number=run_number,
                    progress=progress,
                    api_retry_seconds=arguments.api_retry_seconds,
                    api_token=arguments.token,
                )
            )
    except (OSError, RuntimeError, aiohttp.ClientError, ValueError) as error:
        print(f"run failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    summary = summarize(result)
    print(render_text(summary))
    if arguments.json is not None:
        arguments.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
