"""The ``ocs`` command line: ``ocs serve`` runs the server; ``ocs demo`` runs the server and
the network simulator together (``ocs.cli.demo``); the other commands manage a running server.

Every command reads the same configuration (``--config``, default ``config/ocs.toml`` when
present, then ``OCS_*`` environment overrides). Errors are one clear line on stderr and a
non-zero exit status: 2 for bad usage or configuration, 1 for a request the server refused or a
server that cannot be reached.

Commands that manage subscribers talk to the running server's HTTP API (``ocs.api.server``) at the
configured ``[http]`` host and port (https when ``[http] tls_certificate`` is set), or at
``--url``; ``--json`` prints the server's answer as it came. They send a bearer token: ``--token``,
else ``--token-file``, else ``OCS_TOKEN``, else ``~/.config/ocs/token`` (``ocs.cli.tokens``);
``--ca-file`` trusts a private CA (or a self-signed certificate) for https. Four commands work
offline, from files: ``ocs rate`` prices usage with the tariff file (``ocs.rating.explain``),
``ocs cdr export`` reads the usage records from the business database (``ocs.billing.cdr``; of
``--data DIR``, else the configured one), ``ocs token`` makes, lists and revokes tokens on the
business database (how the first admin token is made), and ``ocs report customers --data DIR``
reads a data directory's business database.

    ocs subscriber add ACCOUNT [--plan P] [--type mobile|fixed] [--msisdn N] [--balance 10.00] ...
    ocs subscriber show ACCOUNT
    ocs subscriber suspend|reactivate|bar|terminate ACCOUNT [--reason TEXT]
    ocs subscriber load FILE.csv
    ocs customer add|show ..., ocs customer node add ..., ocs line add ... (``ocs.cli.customers``)
    ocs note add|list ..., ocs ticket open|show|move ..., ocs report customers ... (``ocs.cli.interactions``)
    ocs payment add|load ..., ocs bill show|list|run|document ..., ocs dispute open|resolve ..., ocs report
    receivables|ledger (``ocs.cli.billing``); ``ocs dunning`` and ``ocs report revenue`` (``ocs.cli.dunning``)
    ocs customer score ID [--history] and ocs report segments --from D --to D (``ocs.cli.scores``)
    ocs loyalty programmes|member|applications|report|simulate ... (``ocs.cli.loyalty``)
    ocs topup ACCOUNT AMOUNT --id ID [--bonus]
    ocs adjust ACCOUNT AMOUNT --id ID [--reason TEXT]
    ocs balance ACCOUNT
    ocs rate --plan P --context 32260@3gpp.org [--rating-group N] [--called N] [--at T] --units N
    ocs cdr export --since T --until T [--format csv|jsonl] [--account A] [--output FILE] [--data DIR]
    ocs token create --role admin|care|read-only|self-care --name NAME [--account ID]
              [--adjust-limit 50.00] [--expires 90d]
    ocs token list | ocs token revoke ID
    ocs audit-trail [--since T] [--until T] [--account ID] [--actor NAME|ID] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import uvloop
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.errors import BalanceUnavailable
from ocs.api.fields import ApiError, money_micros, parse_instant
from ocs.app import serve
from ocs.billing.spool_upgrade import pending_upgrade
from ocs.cli.billing import add_billing_commands
from ocs.cli.client import ApiAnswer, ApiClient, ApiUnreachable, base_url
from ocs.cli.customers import add_customer_commands
from ocs.cli.demo import DEFAULT_SCENARIO, DemoOptions, run_demo, scenario_overrides
from ocs.cli.dunning import add_dunning_commands
from ocs.cli.interactions import add_interaction_commands, run_report_offline
from ocs.cli.loyalty import add_loyalty_commands, run_simulate
from ocs.cli.scores import add_score_commands, add_segment_report
from ocs.cli.tokens import TOKEN_VARIABLE, add_token_commands, find_token, run_token_command
from ocs.config import MAX_WORKERS, ConfigError, Settings, load_settings, unused_environment
from ocs.db.engine import DatabaseUnavailable, database_url, open_database, sqlite_url
from ocs.rating.rate import RatingFailure, RatingInput, TariffError, explain, load_book
from ocs.supervisor import supervise, worker_count
from ocs.worker import WorkerRole
from protocol.build import PURE_PYTHON_VARIABLE

USAGE_ERROR = 2  # argparse's own status for bad usage
REFUSED = 1
_STATUS_COMMANDS = {"suspend": "suspended", "reactivate": "active", "bar": "barred", "terminate": "terminated"}
_ALLOWANCE_KINDS = ("seconds", "octets", "events")

Remote = Callable[[ApiClient, argparse.Namespace], Awaitable[ApiAnswer]]


def _settings(arguments: argparse.Namespace) -> Settings:
    for variable in unused_environment(os.environ):  # not refused: build and test switches share the prefix
        if variable in (TOKEN_VARIABLE, PURE_PYTHON_VARIABLE):  # the API commands' token; the build switch
            continue
        print(f"ocs: warning: {variable} names no setting; ignored", file=sys.stderr)
    return load_settings(Path(arguments.config) if arguments.config else None)


# -- argument types: a bad value is a usage error (exit 2) before anything is sent -----------


def _amount(text: str) -> str:
    try:
        money_micros(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.strip()


def _instant(text: str) -> datetime:
    try:
        return parse_instant(text, "time")
    except ApiError as error:
        raise argparse.ArgumentTypeError(error.message) from None


def _allowance(text: str) -> dict[str, object]:
    """``KIND:UNITS[:SERVICE,SERVICE]``, e.g. ``seconds:3000:voice``."""
    kind, _, rest = text.partition(":")
    units, _, services = rest.partition(":")
    if kind not in _ALLOWANCE_KINDS or not units.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected KIND:UNITS[:SERVICE,...], KIND one of seconds/octets/events"
        )
    bucket: dict[str, object] = {"kind": kind, "amount": int(units)}
    if services:
        bucket["services"] = [service for service in services.split(",") if service]
    return bucket


# -- the parser ---------------------------------------------------------------------------------


def _client_options() -> argparse.ArgumentParser:
    """``--url`` and ``--json``, accepted before or after the command (SUPPRESS keeps the earlier one)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", default=argparse.SUPPRESS, help="the server's HTTP API (default: from [http])")
    options.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw answer")
    options.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help=f"API token (else --token-file, ${TOKEN_VARIABLE}, ~/.config/ocs/token)",
    )
    options.add_argument("--token-file", type=Path, default=argparse.SUPPRESS, help="a file holding the API token")
    options.add_argument("--ca-file", default=argparse.SUPPRESS, help="PEM CA (or certificate) to trust for https")
    return options


def _subscriber_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    client = _client_options()
    subscriber = commands.add_parser("subscriber", help="create, show, load and change subscribers")
    actions = subscriber.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[client], help="create a subscriber (account and profile)")
    add.add_argument("account")
    add.add_argument("--plan", help="tariff plan (default: [tariffs] default_plan)")
    add.add_argument("--type", dest="customer_type", choices=("mobile", "fixed"), default="mobile")
    add.add_argument("--name", default="")
    add.add_argument("--payment", choices=("prepaid", "postpaid"), default="prepaid")
    add.add_argument("--currency", help="ISO 4217 code (default: the plan's)")
    add.add_argument("--credit-limit", type=_amount, help="postpaid credit limit, e.g. 50.00")
    add.add_argument("--parent", help="parent account (company hierarchy)")
    add.add_argument("--child-cap", type=_amount, help="most this child may draw from the parent's pool")
    add.add_argument("--balance", type=_amount, help="opening main balance, e.g. 10.00")
    add.add_argument("--bonus", type=_amount, help="opening bonus balance")
    add.add_argument("--allowance", type=_allowance, action="append", default=[], help="KIND:UNITS[:SERVICES]")
    for kind in ("msisdn", "imsi", "sip"):
        add.add_argument(f"--{kind}", action="append", default=[], help=f"{kind.upper()} (repeatable)")
    add.set_defaults(remote=_add, printer=_print_subscriber)
    show = actions.add_parser("show", parents=[client], help="profile and balance")
    show.add_argument("account")
    show.set_defaults(remote=_show, printer=_print_subscriber)
    for action, status in _STATUS_COMMANDS.items():
        change = actions.add_parser(action, parents=[client], help=f"set the account {status}")
        change.add_argument("account")
        change.add_argument("--reason", default="", help="why (kept in the audit trail)")
        change.set_defaults(remote=_status, printer=_print_status, status=status)
    load = actions.add_parser("load", parents=[client], help="create subscribers from a CSV file")
    load.add_argument("file", type=Path)
    load.set_defaults(remote=_load, printer=_print_load)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ocs",
        description="Online charging server (Diameter Gy/Ro credit control)",
        parents=[_client_options()],
        # The top level sees every word, even a command's own flags: with abbreviations on, a
        # command's ``--to`` would be refused as an abbreviation of ``--token`` before the command
        # parses it.
        allow_abbrev=False,
    )
    parser.add_argument("--config", help="TOML configuration file (default: config/ocs.toml if present)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_command = commands.add_parser("serve", help="run the server until SIGINT/SIGTERM")
    serve_command.add_argument(
        "--workers", type=_workers, help="worker processes sharing the ports (0: one per core; default: [server])"
    )
    # A worker of ``--workers N``, as the supervisor starts it (ocs/supervisor.py): not for operators.
    serve_command.add_argument("--worker", type=_worker_index, help=argparse.SUPPRESS)
    serve_command.add_argument("--origin-state-id", type=int, help=argparse.SUPPRESS)
    serve_command.add_argument("--supervisor-pid", type=int, help=argparse.SUPPRESS)
    demo = commands.add_parser(
        "demo", help="embedded Redis + server + network simulator on a scenario; prints the report and the audit"
    )
    demo.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO, help=f"default {DEFAULT_SCENARIO}")
    demo.add_argument("--seed", type=int, default=1, help="population and traffic (default 1)")
    demo.add_argument("--data", type=Path, default=None, help="keep Redis, spool, log and report here")
    demo.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,  # also ``ocs --json demo``
        help="print the report as JSON on stdout (progress and the text report go to stderr)",
    )
    _subscriber_commands(commands)
    customer_actions = add_customer_commands(commands, _client_options())
    add_score_commands(customer_actions, _client_options())
    reports = add_interaction_commands(commands, _client_options())
    add_billing_commands(commands, reports, _client_options())
    add_dunning_commands(commands, reports, _client_options())
    add_segment_report(reports, _client_options())
    add_loyalty_commands(commands, _client_options())
    add_token_commands(commands)
    client = _client_options()
    trail = commands.add_parser("audit-trail", parents=[client], help="who changed what, when (the audit trail)")
    trail.add_argument("--since", type=_instant, help="from (inclusive), ISO 8601 or epoch")
    trail.add_argument("--until", type=_instant, help="to (exclusive)")
    trail.add_argument("--account", help="one account's records")
    trail.add_argument("--actor", help="one token's records: its name or id")
    trail.add_argument("--limit", type=int, help="at most this many records")
    trail.set_defaults(remote=_audit_trail, printer=_print_audit_trail)
    top_up = commands.add_parser("topup", parents=[client], help="top up an account (idempotent by --id)")
    top_up.add_argument("account")
    top_up.add_argument("amount", type=_amount)
    top_up.add_argument("--id", required=True, help="top-up id: the same id is applied once")
    top_up.add_argument("--bonus", action="store_true", help="into the bonus bucket")
    top_up.add_argument("--valid-until", type=_instant, help="expiry of the bonus (ISO 8601 or epoch)")
    top_up.set_defaults(remote=_top_up, printer=_print_applied)
    adjust = commands.add_parser("adjust", parents=[client], help="adjust the main balance (signed amount)")
    adjust.add_argument("account")
    adjust.add_argument("amount", type=_amount)
    adjust.add_argument("--id", required=True, help="adjustment id: the same id is applied once")
    adjust.add_argument("--reason", default="")
    adjust.set_defaults(remote=_adjust, printer=_print_applied)
    balance = commands.add_parser("balance", parents=[client], help="an account's balance")
    balance.add_argument("account")
    balance.set_defaults(remote=_balance, printer=_print_balance)
    rate = commands.add_parser("rate", help="what usage would cost and why (offline, from the tariff file)")
    rate.add_argument("--plan", help="tariff plan (default: [tariffs] default_plan)")
    rate.add_argument("--context", required=True, help="Service-Context-Id, e.g. 32260@3gpp.org")
    rate.add_argument("--rating-group", type=int)
    rate.add_argument("--service-id", type=int, help="Service-Identifier")
    rate.add_argument("--called", help="called party (voice) or recipient (SMS)")
    rate.add_argument("--at", type=_instant, help="when (ISO 8601 or epoch; default now)")
    rate.add_argument("--units", type=int, required=True, help="seconds, octets or events")
    rate.add_argument("--tariffs", type=Path, help="tariff file (default: [tariffs] path)")
    cdr = commands.add_parser("cdr", help="usage records")
    cdr_actions = cdr.add_subparsers(dest="action", required=True)
    export = cdr_actions.add_parser("export", help="records of a period from the spool, as CSV or JSON lines")
    export.add_argument("--since", type=_instant, required=True, help="from (inclusive), ISO 8601 or epoch")
    export.add_argument("--until", type=_instant, required=True, help="to (exclusive)")
    export.add_argument("--format", dest="fmt", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--account")
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")
    export.add_argument("--data", type=Path, help="data directory to read (default: [database])")
    return parser


# -- requests -------------------------------------------------------------------------------------


async def _add(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body: dict[str, object] = {
        "account_id": arguments.account,
        "customer_type": arguments.customer_type,
        "name": arguments.name,
        "payment_type": arguments.payment,
    }
    optional = {
        "plan": arguments.plan,
        "currency": arguments.currency,
        "credit_limit": arguments.credit_limit,
        "parent_id": arguments.parent,
        "child_cap": arguments.child_cap,
    }
    body.update({name: value for name, value in optional.items() if value is not None})
    buckets: list[object] = [
        {"kind": kind, "amount": amount}
        for kind, amount in (("main", arguments.balance), ("bonus", arguments.bonus))
        if amount is not None
    ]
    body["buckets"] = buckets + list(arguments.allowance)
    body["identities"] = [
        {"kind": kind, "value": value} for kind in ("msisdn", "imsi", "sip") for value in getattr(arguments, kind)
    ]
    return await client.create_subscriber(body)


async def _show(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.subscriber(arguments.account)


async def _status(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.set_status(arguments.account, arguments.status, arguments.reason)


async def _load(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.load(arguments.file.read_bytes())


async def _top_up(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body: dict[str, object] = {"id": arguments.id, "amount": arguments.amount}
    if arguments.bonus:
        body["kind"] = "bonus"
    if arguments.valid_until is not None:
        body["valid_until"] = int(arguments.valid_until.timestamp())
    return await client.top_up(arguments.account, body)


async def _adjust(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = {"id": arguments.id, "amount": arguments.amount, "reason": arguments.reason}
    return await client.adjust(arguments.account, body)


async def _balance(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.balance(arguments.account)


async def _audit_trail(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    query = {
        name: value.isoformat() if isinstance(value, datetime) else str(value)
        for name in ("since", "until", "account", "actor", "limit")
        if (value := getattr(arguments, name)) is not None
    }
    return await client.audit_trail(query)


# -- output -------------------------------------------------------------------------------------


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Mapping[str, object]]:
    return [_mapping(item) for item in value] if isinstance(value, list) else []


def _balance_lines(view: Mapping[str, object]) -> list[str]:
    currency = view.get("currency")
    lines = [
        f"account   {view.get('account_id')} ({view.get('payment_type')}, {view.get('status')}, {currency})"
        + (f", child of {view.get('parent_id')}" if view.get("parent_id") else ""),
        f"available {view.get('available')} {currency}",
    ]
    if view.get("payment_type") == "postpaid":
        lines.append(f"credit    limit {view.get('credit_limit')} {currency}")
    for bucket in _items(view.get("buckets")):
        amount = (
            f"{bucket.get('amount')} {currency}" if bucket.get("kind") in ("main", "bonus") else bucket.get("amount")
        )
        services = _items_text(bucket.get("services"))
        until = bucket.get("valid_until")
        expiry = f" until {datetime.fromtimestamp(int(str(until)), UTC):%Y-%m-%d %H:%M}Z" if until else ""
        lines.append(
            f"bucket    #{bucket.get('bucket_id')} {bucket.get('kind')} {amount}"
            + (f" [{services}]" if services else "")
            + expiry
        )
    counters = _mapping(view.get("counters"))
    names = ("credits", "debits", "committed", "held", "unbilled")
    lines.append("counters  " + ", ".join(f"{name} {counters.get(name)}" for name in names))
    lines.append(f"reservations {view.get('reservations')}")
    return lines


def _items_text(value: object) -> str:
    return ",".join(str(item) for item in value) if isinstance(value, list) else ""


def _print_subscriber(body: Mapping[str, object]) -> None:
    profile = body.get("profile")
    if isinstance(profile, Mapping):
        identities = ", ".join(f"{item.get('kind')} {item.get('value')}" for item in _items(profile.get("identities")))
        print(f"profile   plan {profile.get('plan')}, {profile.get('customer_type')}, name {profile.get('name')!r}")
        print(f"ids       {identities or '(none)'}")
    else:
        print("profile   (none)")
    print("\n".join(_balance_lines(_mapping(body.get("balance")))))


def _print_balance(body: Mapping[str, object]) -> None:
    print("\n".join(_balance_lines(body)))


def _print_status(body: Mapping[str, object]) -> None:
    notified = body.get("notified_sessions")
    print(f"{body.get('account_id')}: {body.get('previous_status')} -> {body.get('status')}", end="")
    print(f" ({notified} session(s) notified)" if notified else "")
    changed = body.get("changed_accounts")
    below = [str(name) for name in changed if name != body.get("account_id")] if isinstance(changed, list) else []
    if below:
        print(f"  with {len(below)} account(s) under it: {', '.join(below)}")


def _print_applied(body: Mapping[str, object]) -> None:
    view = _mapping(body.get("balance"))
    what = f"top-up {body.get('top_up_id')}" if "top_up_id" in body else f"adjustment {body.get('adjustment_id')}"
    done = "already applied, nothing changed" if body.get("replayed") else f"applied {body.get('amount')}"
    print(f"{body.get('account_id')}: {what} {done}; available {view.get('available')} {view.get('currency')}")


def _print_audit_trail(body: Mapping[str, object]) -> None:
    for record in _items(body.get("records")):
        actor = _mapping(record.get("actor"))
        changed = f" {record.get('before')} -> {record.get('after')}" if record.get("after") is not None else ""
        detail = f" ({record.get('detail')})" if record.get("detail") else ""
        print(
            f"{record.get('occurred_at')} #{record.get('record_id')} {actor.get('name')} [{actor.get('role')}] "
            f"{record.get('method')} {record.get('route')} {record.get('resource_id') or '-'}: "
            f"{record.get('status')} {record.get('outcome')}{changed}{detail}"
        )


def _print_load(body: Mapping[str, object]) -> None:
    print(f"{body.get('rows')} rows: {body.get('created')} created, {body.get('failed')} failed")
    for row in _items(body.get("results")):
        if row.get("error"):
            print(f"ocs: line {row.get('line')} ({row.get('account_id')}): {row.get('error')}", file=sys.stderr)


async def _remote(arguments: argparse.Namespace, settings: Settings) -> int:
    http = settings.http
    url = getattr(arguments, "url", None) or base_url(http.host, http.port, https=bool(http.tls_certificate))
    remote: Remote = arguments.remote
    try:
        token = find_token(getattr(arguments, "token", None), getattr(arguments, "token_file", None))
        async with ApiClient(url, token=token, ca_file=getattr(arguments, "ca_file", None)) as client:
            answer = await remote(client, arguments)
    except ApiUnreachable as error:
        print(f"ocs: {error}", file=sys.stderr)
        return REFUSED
    except OSError as error:  # e.g. the CSV file of ``subscriber load``
        print(f"ocs: {error}", file=sys.stderr)
        return REFUSED
    if not answer.ok:
        print(f"ocs: {answer.error} (HTTP {answer.status})", file=sys.stderr)
        if answer.status == 401 and token is None:
            print(
                f"ocs: give a token: --token, --token-file, ${TOKEN_VARIABLE} or ~/.config/ocs/token", file=sys.stderr
            )
        return REFUSED
    if getattr(arguments, "json", False):
        print(json.dumps(answer.body, indent=2))
    else:
        arguments.printer(answer.body)
    failed = answer.body.get("failed")
    return REFUSED if isinstance(failed, int) and failed > 0 else 0


# -- offline commands ---------------------------------------------------------------------------


def _rate(arguments: argparse.Namespace, settings: Settings) -> int:
    path = arguments.tariffs or Path(settings.tariffs.path)
    try:
        book = load_book(path)
    except (OSError, TariffError) as error:
        print(f"ocs: tariffs: {error}", file=sys.stderr)
        return USAGE_ERROR
    if arguments.units < 0:
        print("ocs: --units must be 0 or more", file=sys.stderr)
        return USAGE_ERROR
    request = RatingInput(
        arguments.context,
        arguments.rating_group,
        arguments.service_id,
        arguments.called,
        arguments.at or datetime.now(UTC),
    )
    quote = explain(book, arguments.plan or settings.tariffs.default_plan, request, arguments.units)
    if isinstance(quote, RatingFailure):
        print(f"ocs: cannot rate: {quote.reason}", file=sys.stderr)
        return REFUSED
    print(quote.text)
    return 0


def _cdr_export(arguments: argparse.Namespace, settings: Settings) -> int:
    from ocs.billing.cdr import export  # the spool reader; only this command needs it

    async def run(out: TextIO) -> int:
        engine = await _usage_database(arguments.data, settings)
        try:
            return await export(
                engine,
                since=arguments.since,
                until=arguments.until,
                fmt=arguments.fmt,
                out=out,
                account_id=arguments.account,
            )
        finally:
            await engine.dispose()

    try:
        if arguments.output is None:
            written = asyncio.run(run(sys.stdout))
        else:
            with arguments.output.open("w", encoding="utf-8", newline="") as out:
                written = asyncio.run(run(out))
    except (OSError, ValueError, DatabaseUnavailable, SQLAlchemyError) as error:  # no database, unwritable output
        print(f"ocs: cdr export: {error}", file=sys.stderr)
        return REFUSED
    print(
        f"ocs: {written} record(s) exported" + (f" to {arguments.output}" if arguments.output else ""), file=sys.stderr
    )
    return 0


async def _usage_database(data: Path | None, settings: Settings) -> AsyncEngine:
    """The business database holding the usage records: ``data``'s SQLite file, else the
    configured one. Refused (FileNotFoundError) when a SQLite file is missing (an export from an
    empty database made here would look like a real one) or the data directory still holds a
    spool file of an older server, not yet copied in (``ocs.billing.spool_upgrade``)."""
    url = sqlite_url(data) if data is not None else database_url(settings)
    directory = data if data is not None else Path(settings.spool.path).parent
    old_spool = directory / Path(settings.spool.path).name
    if pending_upgrade(old_spool):
        raise FileNotFoundError(f"{old_spool} is not yet copied into the business database: start the server once")
    database = make_url(url).database
    if make_url(url).get_backend_name() == "sqlite" and database and not Path(database).is_file():
        raise FileNotFoundError(f"no business database at {database}")
    return await open_database(url)


def _workers(text: str) -> int:
    try:
        workers = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers: {text!r} is not a whole number") from None
    if not 0 <= workers <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"--workers: {workers} is not between 0 and {MAX_WORKERS}")
    return workers


def _worker_index(text: str) -> tuple[int, int]:
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise argparse.ArgumentTypeError(f"--worker: {text!r} is not INDEX/COUNT")
    return int(index), int(count)


def _serve(settings: Settings, arguments: argparse.Namespace) -> int:
    """``ocs serve``: what stops it starting (a port in use, a missing tariff file, no Redis) is
    one line, not a traceback; ``serve`` has already undone whatever had started. With more than
    one worker, this process is the supervisor (ocs/supervisor.py); ``--worker`` is one of them."""
    role: WorkerRole | None = None
    if arguments.worker is not None:
        index, count = arguments.worker
        if arguments.origin_state_id is None or arguments.supervisor_pid is None:
            print("ocs serve: --worker needs --origin-state-id and --supervisor-pid", file=sys.stderr)
            return USAGE_ERROR
        role = WorkerRole(index, count, arguments.origin_state_id, arguments.supervisor_pid)
    else:
        workers = worker_count(arguments.workers if arguments.workers is not None else settings.server.workers)
        if workers > 1:
            try:
                return uvloop.run(supervise(settings, workers, arguments.config))
            except KeyboardInterrupt:
                return 130
    try:
        uvloop.run(serve(settings, role))
    except (OSError, TariffError, BalanceUnavailable, DatabaseUnavailable) as error:
        print(f"ocs serve: cannot start: {error}", file=sys.stderr)
        return REFUSED
    except KeyboardInterrupt:
        return 130  # 128 + SIGINT, as a shell reports it
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command's exit status. A reader that goes away (``ocs balance alice | head -2``) ends
    it quietly with 141, as SIGPIPE ends a Unix tool (128 + 13), and no traceback."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # inside the try: the last lines are often written only here
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter flushes stdout again at exit
        return 128 + signal.SIGPIPE
    return status


def _main(argv: list[str] | None) -> int:
    try:
        arguments = _parser().parse_args(argv)
    except SystemExit as stop:  # argparse has printed the usage line (or the help)
        return stop.code if isinstance(stop.code, int) else USAGE_ERROR
    try:
        settings = _settings(arguments)
    except ConfigError as error:
        print(f"ocs: configuration: {error}", file=sys.stderr)
        return USAGE_ERROR
    if arguments.command == "serve":
        return _serve(settings, arguments)
    if arguments.command == "demo":
        try:
            overrides = scenario_overrides(arguments.scenario)
            settings = load_settings(Path(arguments.config) if arguments.config else None, {**os.environ, **overrides})
        except ConfigError as error:
            print(f"ocs demo: {error}", file=sys.stderr)
            return USAGE_ERROR
        options = DemoOptions(
            arguments.scenario, arguments.seed, arguments.data, json_report=getattr(arguments, "json", False)
        )
        try:
            return uvloop.run(run_demo(settings, options))
        except KeyboardInterrupt:
            return 130
    if arguments.command == "rate":
        return _rate(arguments, settings)
    if arguments.command == "cdr":
        return _cdr_export(arguments, settings)
    if arguments.command == "loyalty" and arguments.action == "simulate":
        return asyncio.run(run_simulate(arguments, settings))
    if arguments.command == "token":
        return asyncio.run(run_token_command(arguments, settings))
    if arguments.command == "report" and arguments.data is not None:
        return asyncio.run(run_report_offline(arguments, settings))
    return asyncio.run(_remote(arguments, settings))
