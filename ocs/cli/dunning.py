"""``ocs dunning`` and ``ocs report revenue``: the dunning run on demand, a billing account's dunning
history, promises to pay, and the revenue report, against the server's dunning API
(``ocs.api.dunning``).

Theory of operation: as ``ocs.cli.billing`` does, each command builds one API call from its flags
and hands it to ``ocs.cli.main``'s remote runner (URL, token, ``--json``, one error line and exit
1 for a refusal or an unreachable server, exit 2 for a malformed flag, before anything is sent).
A dunning run of a day is idempotent: running the command twice applies each step once.

    ocs dunning run --date YYYY-MM-DD
    ocs dunning history ACCOUNT
    ocs dunning promise ACCOUNT AMOUNT --date YYYY-MM-DD [--reason TEXT] [--promise-id ID]
    ocs report revenue --from YYYY-MM-DD --to YYYY-MM-DD [--json]
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from urllib.parse import urlencode

from ocs.cli.billing import _amount, _day, _units
from ocs.cli.client import ApiAnswer, ApiClient
from ocs.cli.customers import _list, _mapping, _segment, _without_none


def add_dunning_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    reports: argparse._SubParsersAction[argparse.ArgumentParser],
    client: argparse.ArgumentParser,
) -> None:
    """``dunning`` under ``commands``, ``revenue`` under ``reports``."""
    dunning = commands.add_parser("dunning", help="dunning: the daily run, history, promises to pay")
    actions = dunning.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", parents=[client], help="run dunning for a day (idempotent)")
    run.add_argument("--date", type=_day, required=True, help="the day D: steps due by D are applied")
    run.set_defaults(remote=_run, printer=_print_run)
    history = actions.add_parser("history", parents=[client], help="a billing account's dunning steps")
    history.add_argument("account", help="the billing account")
    history.set_defaults(remote=_history, printer=_print_history)
    promise = actions.add_parser("promise", parents=[client], help="a promise to pay: pauses the ladder")
    promise.add_argument("account", help="the billing account")
    promise.add_argument("amount", type=_amount, help="decimal, in units of the account's currency (12.50)")
    promise.add_argument("--date", type=_day, required=True, help="the day promised; the ladder waits until then")
    promise.add_argument("--reason", help="why (default: promise to pay)")
    promise.add_argument("--promise-id", help="its id (default: one is made); running again with it changes nothing")
    promise.set_defaults(remote=_promise, printer=_print_promise)
    revenue = reports.add_parser("revenue", parents=[client], help="revenue by product and customer type")
    revenue.add_argument("--from", dest="from_date", type=_day, required=True, help="first issue day (included)")
    revenue.add_argument("--to", dest="to_date", type=_day, required=True, help="last issue day (included)")
    revenue.set_defaults(remote=_revenue, printer=print_revenue, data=None)  # no offline form (``report --data``)


async def _run(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.request("POST", "/dunningRuns", body={"date": arguments.date.isoformat()})


async def _history(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.request("GET", f"/billingAccounts/{_segment(arguments.account)}/dunning")


async def _promise(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = _without_none(
        {
            "amount_micros": arguments.amount,
            "promised_date": arguments.date.isoformat(),
            "reason": arguments.reason,
            "promise_id": arguments.promise_id,
        }
    )
    return await client.request("POST", f"/billingAccounts/{_segment(arguments.account)}/promisesToPay", body=body)


async def _revenue(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    query = urlencode({"from": arguments.from_date.isoformat(), "to": arguments.to_date.isoformat()})
    return await client.request("GET", f"/reports/revenue?{query}")


def _print_run(body: Mapping[str, object]) -> None:
    steps = ", ".join(f"{action} {count}" for action, count in _mapping(body.get("steps_by_action")).items())
    print(
        f"dunning {body.get('date')}: {body.get('accounts_overdue')} account(s) overdue, "
        f"{body.get('steps_applied')} step(s) applied{f' ({steps})' if steps else ''}"
    )
    print(
        f"  held by disputes {body.get('held_by_disputes')}, paused by promises {body.get('paused_by_promises')}, "
        f"exempt {body.get('exempt')}, lifted {body.get('lifted')}, resumed {body.get('resumed')}, "
        f"failed {body.get('failed')}"
    )


def _print_history(body: Mapping[str, object]) -> None:
    print(f"billing account {body.get('billing_account_id')}{' (exempt)' if body.get('exempt') else ''}")
    for step in _list(body.get("steps")):
        print(
            f"  {step.get('run_date')}  {step.get('action'):<10} {step.get('days_past_due'):>4} days"
            f"  {_units(step.get('overdue_micros')):>12}  {step.get('invoice_id')}  {step.get('outcome') or 'pending'}"
        )
    for promise in _list(body.get("promises")):
        print(
            f"  promise {promise.get('promise_id')}: {_units(promise.get('amount_micros'))}"
            f" by {promise.get('promised_date')}"
        )


def _print_promise(body: Mapping[str, object]) -> None:
    print(
        f"promise {body.get('promise_id')} on {body.get('billing_account_id')}: "
        f"{_units(body.get('amount_micros'))} by {body.get('promised_date')}"
    )


def print_revenue(body: Mapping[str, object]) -> None:
    print(
        f"revenue of invoices issued {body.get('from_date')} to {body.get('to_date')}:"
        f" {body.get('invoices')} invoice(s)"
    )
    print(f"{'product':<28} {'customer type':<18} {'cur':<4} {'amount':>14} {'lines':>7}")
    for row in _list(body.get("rows")):
        print(
            f"{row.get('product')!s:<28} {row.get('customer_type')!s:<18} {row.get('currency')!s:<4}"
            f" {_units(row.get('amount_micros')):>14} {row.get('invoice_lines')!s:>7}"
        )
    for currency, total in _mapping(body.get("totals")).items():
        sums = _mapping(total)
        print(
            f"{'total':<28} {'':<18} {currency:<4} {_units(sums.get('amount_micros')):>14}"
            f"  tax {_units(sums.get('tax_micros'))}"
        )
