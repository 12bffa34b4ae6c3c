"""``ocs note``, ``ocs ticket`` and ``ocs report customers``: a customer's notes, trouble tickets
(TMF621 names) and the customer base report, against the server's interactions API
(``ocs.api.interactions``), or, for the report, offline on a data directory.

Theory of operation: as ``ocs.cli.customers`` does, each remote command builds one API call from
its flags and hands it to ``ocs.cli.main``'s remote runner (URL, token, ``--json``, one error line
and exit 1 for a refusal or an unreachable server, exit 2 for a malformed flag, before anything
is sent). The note's and the ticket move's author is the token's name, set by the server.

``ocs report customers --data DIR`` needs no server: it reads DIR's business database
(``ocs.sqlite3``, migrated as ``ocs token`` does), the newest usage per line included (the usage
spool's table), and runs the same ``customer_base_report`` the API runs, with ``[customers]
inactivity_days``. A directory without the database is refused (a report on an empty base would
look like a real one), and so is one whose old spool file (``spool.sqlite3``) a server has not
yet copied into the database (``ocs.billing.spool_upgrade``): its usage would be missing.

    ocs note add CUSTOMER TEXT [--channel phone|email|shop|web|other]
    ocs note list CUSTOMER
    ocs ticket open CUSTOMER --severity critical|major|minor --description TEXT [--line LINE]
              [--name TITLE] [--ticket-id ID] [--type complaint]
    ocs ticket show ID
    ocs ticket move ID STATUS --reason TEXT
    ocs report customers --from YYYY-MM-DD --to YYYY-MM-DD [--json] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import date
from pathlib import Path

from pydantic import ValidationError

from ocs.billing.spool_upgrade import pending_upgrade
from ocs.cli.client import ApiAnswer, ApiClient
from ocs.cli.customers import _list, _mapping, _segment, _without_none
from ocs.config import Settings
from ocs.customers.interactions import Channel, Severity, TicketStatus
from ocs.customers.reports import Period, customer_base_report
from ocs.db.engine import DATABASE_FILE_NAME, DatabaseUnavailable, open_database, sqlite_url
from ocs.db.usage import last_usage_by_account

USAGE_ERROR = 2
REFUSED = 1
SPOOL_FILE_NAME = "spool.sqlite3"  # [spool] path's default file name (ocs.config): an old server's spool
TITLE_CHARACTERS = 80  # a ticket's default name: the start of its description


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a day, YYYY-MM-DD") from None


def add_interaction_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """``note``, ``ticket`` and ``report`` under ``commands``; ``client`` holds the API flags.
    Answers the reports' subcommands, where other wings add theirs."""
    note = commands.add_parser("note", help="notes on a customer (calls, visits, mails)")
    note_actions = note.add_subparsers(dest="action", required=True)
    note_add = note_actions.add_parser("add", parents=[client], help="add a note to a customer")
    note_add.add_argument("customer")
    note_add.add_argument("text")
    note_add.add_argument("--channel", choices=[channel.value for channel in Channel], default=Channel.OTHER.value)
    note_add.set_defaults(remote=_add_note, printer=_print_note)
    note_list = note_actions.add_parser("list", parents=[client], help="a customer's notes, newest first")
    note_list.add_argument("customer")
    note_list.set_defaults(remote=_notes, printer=_print_notes)
    ticket = commands.add_parser("ticket", help="trouble tickets (TMF621)")
    ticket_actions = ticket.add_subparsers(dest="action", required=True)
    ticket_open = ticket_actions.add_parser("open", parents=[client], help="open a trouble ticket for a customer")
    ticket_open.add_argument("customer")
    ticket_open.add_argument("--severity", required=True, choices=[severity.value for severity in Severity])
    ticket_open.add_argument("--description", required=True)
    ticket_open.add_argument("--line", help="the line it is about, one of the customer's")
    ticket_open.add_argument("--name", help=f"a short title (default: the description's first {TITLE_CHARACTERS})")
    ticket_open.add_argument("--ticket-id", help="default: one is made")
    ticket_open.add_argument("--type", dest="ticket_type", help="default: complaint")
    ticket_open.set_defaults(remote=_open_ticket, printer=_print_ticket)
    ticket_show = ticket_actions.add_parser("show", parents=[client], help="a ticket and its status history")
    ticket_show.add_argument("ticket_id")
    ticket_show.set_defaults(remote=_show_ticket, printer=_print_ticket)
    ticket_move = ticket_actions.add_parser("move", parents=[client], help="move a ticket along its workflow")
    ticket_move.add_argument("ticket_id")
    ticket_move.add_argument("status", choices=[status.value for status in TicketStatus])
    ticket_move.add_argument("--reason", required=True, help="why (kept in the ticket's history)")
    ticket_move.set_defaults(remote=_move_ticket, printer=_print_ticket)
    report = commands.add_parser("report", help="business reports")
    report_actions = report.add_subparsers(dest="action", required=True)
    customers = report_actions.add_parser("customers", parents=[client], help="customer base and churn of a period")
    customers.add_argument("--from", dest="start", type=_day, required=True, help="first day, YYYY-MM-DD")
    customers.add_argument("--to", dest="end", type=_day, required=True, help="last day (included)")
    customers.add_argument("--data", type=Path, help="offline: the server's data directory (no server needed)")
    customers.set_defaults(remote=_report, printer=print_report)
    return report_actions


# -- requests -------------------------------------------------------------------------------------


async def _add_note(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = {"text": arguments.text, "channel": arguments.channel}
    return await client.request("POST", f"/customers/{_segment(arguments.customer)}/notes", body=body)


async def _notes(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.request("GET", f"/customers/{_segment(arguments.customer)}/notes")


async def _open_ticket(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    name = arguments.name if arguments.name is not None else arguments.description.strip()[:TITLE_CHARACTERS]
    body = _without_none(
        {
            "ticket_id": arguments.ticket_id,
            "customer_id": arguments.customer,
            "line_id": arguments.line,
            "name": name,
            "description": arguments.description,
            "ticket_type": arguments.ticket_type,
            "severity": arguments.severity,
        }
    )
    return await client.request("POST", "/troubleTickets", body=body)


async def _show_ticket(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.request("GET", f"/troubleTickets/{_segment(arguments.ticket_id)}")


async def _move_ticket(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = {"status": arguments.status, "status_change_reason": arguments.reason}
    return await client.request("PATCH", f"/troubleTickets/{_segment(arguments.ticket_id)}", body=body)


async def _report(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    query = f"from={arguments.start.isoformat()}&to={arguments.end.isoformat()}"
    return await client.request("GET", f"/reports/customers?{query}")


# -- offline: the report on a data directory ------------------------------------------------------


async def run_report_offline(arguments: argparse.Namespace, settings: Settings) -> int:
    """``ocs report customers --data DIR``: the exit status; one line on stderr for every refusal."""
    directory: Path = arguments.data
    try:
        period = Period(start=arguments.start, end=arguments.end)
    except ValidationError as error:
        print(f"ocs report customers: {error.errors()[0]['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return USAGE_ERROR
    database = directory / DATABASE_FILE_NAME
    if not database.is_file():
        print(f"ocs report customers: no business database at {database}", file=sys.stderr)
        return REFUSED
    if pending_upgrade(directory / SPOOL_FILE_NAME):
        message = f"{directory / SPOOL_FILE_NAME} is not yet copied into the business database: start the server once"
        print(f"ocs report customers: {message}", file=sys.stderr)
        return REFUSED
    try:
        engine = await open_database(sqlite_url(directory))
    except DatabaseUnavailable as error:
        print(f"ocs report customers: {error}", file=sys.stderr)
        return REFUSED
    try:
        async with engine.connect() as connection:
            last_usage = await last_usage_by_account(connection)
        report = await customer_base_report(
            engine, period, last_usage_seconds=last_usage, inactivity_days=settings.customers.inactivity_days
        )
    finally:
        await engine.dispose()
    body = report.model_dump(mode="json")
    if getattr(arguments, "json", False):
        print(json.dumps(body, indent=2))
    else:
        print_report(body)
    return 0


# -- output -------------------------------------------------------------------------------------


def _print_note(note: Mapping[str, object]) -> None:
    print(
        f"note      #{note.get('note_id')} {note.get('customer_id')} {note.get('created_at')} "
        f"{note.get('channel')} by {note.get('author')}: {note.get('text')}"
    )


def _print_notes(body: Mapping[str, object]) -> None:
    notes = _list(body.get("notes"))
    for note in notes:
        _print_note(note)
    if not notes:
        print("no notes")


def _print_ticket(ticket: Mapping[str, object]) -> None:
    line = f", line {ticket.get('line_id')}" if ticket.get("line_id") else ""
    print(
        f"ticket    {ticket.get('ticket_id')} ({ticket.get('ticket_type')}, {ticket.get('severity')}, "
        f"{ticket.get('status')}) for {ticket.get('customer_id')}{line}: {ticket.get('name')}"
    )
    print(f"          {ticket.get('description')}")
    for move in _list(ticket.get("status_change_history")):
        before = f"{move.get('from_status')} -> " if move.get("from_status") else ""
        reason = f": {move.get('reason')}" if move.get("reason") else ""
        print(f"  {move.get('changed_at')} {before}{move.get('status')} by {move.get('author')}{reason}")


def _figures_row(name: str, figures: Mapping[str, object]) -> str:
    rate = figures.get("churn_rate")
    churn = f"{rate:.2%}" if isinstance(rate, int | float) else "-"
    reasons = _mapping(figures.get("terminations_by_reason"))
    why = " (" + ", ".join(f"{reason} {count}" for reason, count in reasons.items()) + ")" if reasons else ""
    return (
        f"{name:<16} {figures.get('opening'):>8} {figures.get('gross_additions'):>9} "
        f"{figures.get('terminations'):>12} {figures.get('closing'):>8} {churn:>8}{why}"
    )


def print_report(body: Mapping[str, object]) -> None:
    """The customer base report (``CustomerBaseReport``, as JSON) as a table."""
    print(f"customer base {body.get('period_from')} to {body.get('period_to')} ({body.get('churn_formula')})")
    print(f"{'':<16} {'opening':>8} {'additions':>9} {'terminations':>12} {'closing':>8} {'churn':>8}")
    print(_figures_row("total", _mapping(body.get("totals"))))
    for kind, figures in _mapping(body.get("by_customer_type")).items():
        print(_figures_row(kind, _mapping(figures)))
    if "lines" in body:
        print(_figures_row("lines (not customers)", _mapping(body.get("lines"))))
    inactivity = _mapping(body.get("prepaid_inactivity"))
    rate = inactivity.get("inactivity_rate")
    share = f" ({rate:.2%})" if isinstance(rate, int | float) else ""
    print(
        f"prepaid inactivity: {inactivity.get('inactive_lines')} of {inactivity.get('prepaid_lines')} prepaid "
        f"line(s) with no usage in {inactivity.get('inactivity_days')} days{share}"
    )
