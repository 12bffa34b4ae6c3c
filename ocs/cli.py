"""The ``ocs`` command line: ``ocs serve`` runs the server; the other commands manage it.

Every command reads the same configuration (``--config``, default ``config/ocs.toml`` when
present, then ``OCS_*`` environment overrides). Errors are one clear line on stderr and a
non-zero exit status: 2 for bad usage or configuration.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvloop

from ocs.app import serve
from ocs.config import ConfigError, Settings, load_settings


def _settings(arguments: argparse.Namespace) -> Settings:
    return load_settings(Path(arguments.config) if arguments.config else None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocs", description="Online charging server (Diameter Gy/Ro credit control)")
    parser.add_argument("--config", help="TOML configuration file (default: config/ocs.toml if present)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the server until SIGINT/SIGTERM")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    try:
        settings = _settings(arguments)
    except ConfigError as error:
        print(f"ocs: configuration: {error}", file=sys.stderr)
        return 2
    if arguments.command == "serve":
        uvloop.run(serve(settings))
    return 0
