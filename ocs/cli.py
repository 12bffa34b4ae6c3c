"""The ``ocs`` command line."""

from __future__ import annotations

import argparse

import uvloop

from ocs.app import ServerSettings, serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ocs", description="Online charging server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the Diameter server until SIGINT/SIGTERM")
    serve_parser.add_argument("--host", default=ServerSettings.host)
    serve_parser.add_argument("--port", type=int, default=ServerSettings.port)
    serve_parser.add_argument("--origin-host", default=ServerSettings.origin_host)
    serve_parser.add_argument("--origin-realm", default=ServerSettings.origin_realm)
    arguments = parser.parse_args(argv)
    if arguments.command == "serve":
        settings = ServerSettings(
            host=arguments.host,
            port=arguments.port,
            origin_host=arguments.origin_host,
            origin_realm=arguments.origin_realm,
        )
        uvloop.run(serve(settings))
    return 0
