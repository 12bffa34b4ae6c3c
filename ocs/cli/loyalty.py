"""``ocs loyalty ...``: the loyalty programmes for operators: programmes, members and their
segment, the bonus history, reports, the ledger (against the server's loyalty API,
``ocs.api.loyalty``), and ``simulate``, the dry run of a rule set over past usage records, which
reads the business database itself and changes nothing (``ocs.loyalty.simulate``).

Theory of operation: as the other commands do (``ocs.cli.dunning``), each remote command builds
one API call and hands it to ``ocs.cli.main``'s remote runner (URL, token, ``--json``, one error
line and exit 1 for a refusal or an unreachable server, exit 2 for a malformed flag).

    ocs loyalty programmes [ID]
    ocs loyalty member CUSTOMER [--segment NAME | --clear-segment]
    ocs loyalty applications [--member CUSTOMER] [--programme ID] [--limit N] [--offset N]
    ocs loyalty report segments | programmes | ledger
    ocs loyalty simulate RULES --from D --to D [--data DIR | --database URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlencode

from sqlalchemy.exc import SQLAlchemyError

from ocs.cli.billing import _day
from ocs.cli.client import ApiAnswer, ApiClient
from ocs.cli.customers import _list, _mapping, _segment
from ocs.config import Settings
from ocs.db.engine import DATABASE_FILE_NAME, database_url, make_engine, sqlite_url
from ocs.loyalty.rules_load import LoyaltyRulesError, load_loyalty_rules
from ocs.loyalty.simulate import simulate
from ocs.rating.rate import format_money

REFUSED = 1
USAGE_ERROR = 2


def add_loyalty_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    loyalty = commands.add_parser("loyalty", help="loyalty programmes: members, bonus history, reports, dry runs")
    actions = loyalty.add_subparsers(dest="action", required=True)
    programmes = actions.add_parser("programmes", parents=[client], help="the programmes the server runs")
    programmes.add_argument("programme", nargs="?", help="one programme")
    programmes.set_defaults(remote=_programmes, printer=_print_programmes)
    member = actions.add_parser("member", parents=[client], help="a member: segment, counters, applications")
    member.add_argument("customer")
    chosen = member.add_mutually_exclusive_group()
    chosen.add_argument("--segment", help="set the customer's segment (admin)")
    chosen.add_argument("--clear-segment", action="store_true", help="clear the customer's segment (admin)")
    member.set_defaults(remote=_member, printer=_print_member)
    history = actions.add_parser("applications", parents=[client], help="the bonus history, oldest first")
    history.add_argument("--member", help="one customer's")
    history.add_argument("--programme", help="one programme's")
    history.add_argument("--limit", type=int, default=100, help="at most this many (1 to 1000)")
    history.add_argument("--offset", type=int, default=0)
    history.set_defaults(remote=_applications, printer=_print_applications)
    report = actions.add_parser("report", parents=[client], help="members by segment, programmes, the ledger")
    report.add_argument("name", choices=("segments", "programmes", "ledger"))
    report.set_defaults(remote=_report, printer=_print_report)
    dry = actions.add_parser("simulate", help="what a rule set would have given over past records (credits nothing)")
    dry.add_argument("rules", type=Path, help="a loyalty rules file (the format of config/loyalty.toml)")
    dry.add_argument("--from", dest="from_date", type=_day, required=True, help="the first day (UTC)")
    dry.add_argument("--to", dest="to_date", type=_day, required=True, help="the last day (UTC), included")
    source = dry.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, help="a data directory's business database")
    source.add_argument("--database", help="a business database URL (default: [database])")
    dry.add_argument("--json", action="store_true", help="print the result as JSON")


async def _programmes(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    if arguments.programme:
        return await client.request("GET", f"/loyalty/programmes/{_segment(arguments.programme)}")
    return await client.request("GET", "/loyalty/programmes")


async def _member(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    path = f"/loyalty/members/{_segment(arguments.customer)}"
    if arguments.segment is not None or arguments.clear_segment:
        return await client.request("PUT", f"{path}/segment", body={"segment": arguments.segment})
    return await client.request("GET", path)


async def _applications(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    query = {"limit": arguments.limit, "offset": arguments.offset}
    query.update({name: value for name in ("member", "programme") if (value := getattr(arguments, name))})
    return await client.request("GET", f"/loyalty/applications?{urlencode(query)}")


async def _report(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.request("GET", f"/loyalty/reports/{arguments.name}")


def _money(micros: object) -> str:
    return format_money(int(str(micros))) if micros is not None else "-"


def _print_programme(programme: Mapping[str, object]) -> None:
    budget = programme.get("budget_micros")
    print(
        f"{programme.get('programme_id')}: {programme.get('name')} ({programme.get('valid_from')}.."
        f"{programme.get('valid_until') or ''}; budget {_money(budget) if budget is not None else 'none'}, "
        f"spent {_money(programme.get('spent_micros'))})"
    )
    for rule in _list(programme.get("rules")):
        print(
            f"  {rule.get('rule_id')}: on {rule.get('event')}, {rule.get('measure')} per {rule.get('period')}, "
            f"{rule.get('condition')} {rule.get('condition_value')} -> {rule.get('action')}"
        )


def _print_programmes(body: Mapping[str, object]) -> None:
    if "programmes" not in body:
        _print_programme(body)
        return
    for programme in _list(body.get("programmes")):
        _print_programme(programme)


def _print_application(item: Mapping[str, object]) -> None:
    worth = (
        _money(item.get("amount_micros"))
        if item.get("action") == "bonus_money"
        else f"{item.get('units')} {item.get('unit_kind') or ''}".strip()
    )
    print(
        f"{item.get('application_id')!s:>6}  {item.get('programme_id')}/{item.get('rule_id')}  "
        f"{item.get('member_id')} ({item.get('line_id')})  {item.get('action')} {worth}  {item.get('state')}  "
        f"on {item.get('trigger_kind')} {item.get('trigger_id')}"
    )


def _print_member(body: Mapping[str, object]) -> None:
    print(f"member {body.get('customer_id')} ({body.get('kind')}), segment {body.get('segment') or 'none'}")
    for counter in _list(body.get("counters")):
        print(f"  counter {counter.get('rule_id')} {counter.get('period')}: {counter.get('value')}")
    for item in _list(body.get("applications")):
        _print_application(item)


def _print_applications(body: Mapping[str, object]) -> None:
    items = _list(body.get("applications"))
    for item in items:
        _print_application(item)
    print(f"{len(items)} application(s) from offset {body.get('offset')}")


def _print_report(body: Mapping[str, object]) -> None:
    if "members" in body:
        for segment, count in _mapping(body.get("members")).items():
            print(f"{segment:<16} {count}")
    elif "problems" in body:
        problems = [str(item) for item in body.get("problems") or []]  # type: ignore[attr-defined]
        print("loyalty ledger: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
        for problem in problems:
            print(f"  {problem}")
    else:
        for item in _list(body.get("programmes")):
            budget = item.get("budget_micros")
            print(
                f"{item.get('programme_id')}: issued {_money(item.get('bonus_issued_micros'))}, pending "
                f"{_money(item.get('bonus_pending_micros'))}, spent {_money(item.get('bonus_spent_micros'))}, "
                f"expired {_money(item.get('bonus_expired_micros'))}, units {item.get('units_issued') or {}}, "
                f"discounts {item.get('discounts_consumed')} used / {item.get('discounts_pending')} pending; "
                f"cost {_money(item.get('cost_micros'))} of budget "
                f"{_money(budget) if budget is not None else 'none'}"
            )
        print(f"(spent and expired: {body.get('spent_measure')})")


async def run_simulate(arguments: argparse.Namespace, settings: Settings) -> int:
    """``ocs loyalty simulate``: the dry run, printed; nothing is written anywhere."""
    try:
        rules = load_loyalty_rules(arguments.rules)
    except (OSError, LoyaltyRulesError) as error:
        print(f"ocs loyalty simulate: {error}", file=sys.stderr)
        return USAGE_ERROR
    if arguments.to_date < arguments.from_date:
        print("ocs loyalty simulate: --to: before --from", file=sys.stderr)
        return USAGE_ERROR
    if arguments.data is not None and not (arguments.data / DATABASE_FILE_NAME).is_file():
        print(f"ocs loyalty simulate: --data: no business database in {arguments.data}", file=sys.stderr)
        return USAGE_ERROR
    url = sqlite_url(arguments.data) if arguments.data is not None else arguments.database or database_url(settings)
    try:
        engine = make_engine(url)  # not ``open_database``: a dry run migrates nothing either
        try:
            result = await simulate(engine, rules, arguments.from_date, arguments.to_date)
        finally:
            await engine.dispose()
    except (OSError, ValueError, SQLAlchemyError) as error:
        print(f"ocs loyalty simulate: {error}", file=sys.stderr)
        return REFUSED
    body = result.as_json()
    if arguments.json:
        print(json.dumps(body, indent=2))
        return 0
    print(
        f"dry run {body['from']}..{body['to']}: {body['records']} record(s), {body['records_with_member']} "
        f"with a member; {body['over_budget']} application(s) a budget refused; nothing credited"
    )
    print(f"{'programme':<24} {'segment':<12} {'applications':>12} {'bonus':>14}  units  discounts")
    for programme_id, segments in _mapping(body["programmes"]).items():
        for segment, row in _mapping(segments).items():
            values = _mapping(row)
            print(
                f"{programme_id:<24} {segment:<12} {values.get('applications')!s:>12} "
                f"{_money(values.get('bonus_micros')):>14}  {values.get('units') or '-'}  "
                f"{values.get('invoice_discounts')}"
            )
    return 0
