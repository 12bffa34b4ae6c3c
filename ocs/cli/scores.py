"""``ocs customer score`` and ``ocs report segments``: a customer's score explained factor by
factor, its history, and who moved between segments, against the server's scoring API
(``ocs.api.scores``).

Theory of operation: as the other customer commands do (``ocs.cli.customers``), each command
builds one API call and hands it to ``ocs.cli.main``'s remote runner (URL, token, ``--json``, one
error line and exit 1 for a refusal or an unreachable server, exit 2 for a malformed flag).

    ocs customer score ID [--history [--limit N]]
    ocs report segments --from YYYY-MM-DD --to YYYY-MM-DD
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from urllib.parse import urlencode

from ocs.cli.billing import _day
from ocs.cli.client import ApiAnswer, ApiClient
from ocs.cli.customers import _list, _segment


def add_score_commands(
    customer_actions: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    """``score`` under ``ocs customer``."""
    score = customer_actions.add_parser(
        "score", parents=[client], help="a customer's score explained factor by factor (--history: as stored)"
    )
    score.add_argument("customer")
    score.add_argument("--history", action="store_true", help="the stored scores, newest first")
    score.add_argument("--limit", type=int, default=20, help="with --history: at most this many (1 to 1000)")
    score.set_defaults(remote=_score, printer=_print_score)


def add_segment_report(
    reports: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    """``segments`` under ``ocs report``."""
    segments = reports.add_parser("segments", parents=[client], help="who moved between segments, and why")
    segments.add_argument("--from", dest="from_date", type=_day, required=True, help="the first day (its end)")
    segments.add_argument("--to", dest="to_date", type=_day, required=True, help="the last day (its end)")
    segments.set_defaults(remote=_movements, printer=print_movements, data=None)  # no offline form


async def _score(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    customer = _segment(arguments.customer)
    if arguments.history:
        return await client.request("GET", f"/customers/{customer}/score-history?limit={arguments.limit}")
    return await client.request("GET", f"/customers/{customer}/score")


async def _movements(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    query = urlencode({"from": arguments.from_date.isoformat(), "to": arguments.to_date.isoformat()})
    return await client.request("GET", f"/reports/segment-movements?{query}")


def _print_factors(factors: object, indent: str) -> None:
    for factor in _list(factors):
        print(f"{indent}{factor.get('points')!s:>6}  {factor.get('factor')!s:<17} {factor.get('explanation')}")


def _print_score(body: Mapping[str, object]) -> None:
    if "scores" in body:  # --history
        print(f"customer  {body.get('customer_id')}: {len(_list(body.get('scores')))} stored score(s), newest first")
        for record in _list(body.get("scores")):
            print(
                f"{record.get('scored_at')}  {record.get('points')} points, {record.get('segment')}"
                f" ({record.get('cause')})"
            )
            _print_factors(record.get("factors"), "  ")
        return
    print(f"customer  {body.get('customer_id')}: {body.get('points')} points, segment {body.get('segment')}")
    held = body.get("customer_segment")
    if held != body.get("segment"):
        print(f"recorded  segment {held} (the last stored score's, or an operator's own)")
    print(f"{'points':>6}  {'factor':<17} facts")
    _print_factors(body.get("factors"), "")
    print(f"{body.get('points')!s:>6}  total")


def print_movements(body: Mapping[str, object]) -> None:
    movements = _list(body.get("movements"))
    print(f"segment movements from {body.get('from_date')} to {body.get('to_date')}: {len(movements)} customer(s)")
    for moved in movements:
        print(
            f"{moved.get('customer_id')}: {moved.get('from_segment')} -> {moved.get('to_segment')}"
            f" ({moved.get('from_points')} -> {moved.get('to_points')} points)"
        )
        for change in _list(moved.get("changes")):
            print(
                f"  {change.get('factor')}: {change.get('from_points')} -> {change.get('to_points')} points:"
                f" {change.get('to_explanation')} (was: {change.get('from_explanation')})"
            )
