"""``ocs payment``, ``ocs bill``, ``ocs dispute``, ``ocs report receivables`` and ``ocs report
ledger``: payments, customer bills, the bill run, disputes, the receivables aging report and the
one-ledger audit, against the server's billing API (``ocs.api.billing``).

Theory of operation: as ``ocs.cli.interactions`` does, each command builds one API call from its
flags and hands it to ``ocs.cli.main``'s remote runner (URL, token, ``--json``, one error line and
exit 1 for a refusal or an unreachable server, exit 2 for a malformed flag, before anything is
sent). Amounts are typed as decimal strings in units of the account's currency (``12.50``) and
sent as integer micros; a payment's reference is its idempotency key, so a command run twice
records the payment once. ``payment load`` sends a bank file (CSV: reference, billing_account,
amount, date) and exits 1 when any row was refused (each refused row is printed with its line);
``report ledger`` exits 1 when the ledger does not tie out.

    ocs payment add ACCOUNT AMOUNT --reference REF [--method bank_transfer] [--date YYYY-MM-DD]
    ocs payment load FILE
    ocs bill show ID
    ocs bill list [--account ACCOUNT] [--state sent|partiallyPaid|settled]
    ocs bill document ID [--format html|pdf] --out FILE   (FILE "-": standard output)
    ocs dispute open BILL AMOUNT --reason TEXT [--ticket TICKET] [--dispute-id ID]
    ocs dispute resolve ID credited|rejected --resolution TEXT [--amount AMOUNT]
    ocs bill run --date YYYY-MM-DD
    ocs report receivables [--as-of YYYY-MM-DD] [--json]
    ocs report ledger [--json]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from urllib.parse import urlencode

from ocs.api.fields import money_micros
from ocs.billing.documents import DocumentFormat
from ocs.billing.values import BillState
from ocs.cli.client import BULK_TIMEOUT_SECONDS, ApiAnswer, ApiClient
from ocs.cli.customers import _list, _mapping, _segment, _without_none
from ocs.rating.rate import format_money


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a day, YYYY-MM-DD") from None


def _amount(text: str) -> int:
    try:
        micros = money_micros(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if micros <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an amount above 0")
    return micros


def add_billing_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    reports: argparse._SubParsersAction[argparse.ArgumentParser],
    client: argparse.ArgumentParser,
) -> None:
    """``payment``, ``bill`` and ``dispute`` under ``commands``, ``receivables`` under ``reports``."""
    payment = commands.add_parser("payment", help="payments against bills (idempotent by reference)")
    payment_actions = payment.add_subparsers(dest="action", required=True)
    add = payment_actions.add_parser("add", parents=[client], help="record a payment")
    add.add_argument("account", help="the billing account")
    add.add_argument("amount", type=_amount, help="decimal, in units of the account's currency (12.50)")
    add.add_argument("--reference", required=True, help="the payment's reference (its idempotency key)")
    add.add_argument(
        "--method", default="bank_transfer", choices=["cash", "card", "direct_debit", "bank_transfer", "voucher"]
    )
    add.add_argument("--date", type=_day, help="the day it was received (default: now)")
    add.set_defaults(remote=_add_payment, printer=_print_payment)
    load = payment_actions.add_parser("load", parents=[client], help="record a bank file (CSV)")
    load.add_argument("file", type=Path)
    load.set_defaults(remote=_load, printer=_print_bank_file)
    bill = commands.add_parser("bill", help="customer bills (TMF678)")
    bill_actions = bill.add_subparsers(dest="action", required=True)
    show = bill_actions.add_parser("show", parents=[client], help="a bill and its lines")
    show.add_argument("bill_id")
    show.set_defaults(remote=_show_bill, printer=_print_bill)
    listing = bill_actions.add_parser("list", parents=[client], help="bills, oldest first")
    listing.add_argument("--account", help="one billing account's")
    listing.add_argument("--state", choices=[state.value for state in BillState])
    listing.set_defaults(remote=_list_bills, printer=_print_bills)
    run = bill_actions.add_parser("run", parents=[client], help="the bill run: every cycle closed by a day")
    run.add_argument("--date", type=_day, required=True, help="the day (cycles closed by it, and missed ones)")
    run.set_defaults(remote=_bill_run, printer=_print_bill_run)
    document = bill_actions.add_parser("document", parents=[client], help="a bill's document (HTML or PDF)")
    document.add_argument("bill_id")
    document.add_argument("--format", choices=[item.value for item in DocumentFormat], default="html")
    document.add_argument("--out", required=True, help='the file to write ("-": standard output)')
    document.set_defaults(remote=_bill_document, printer=_print_document)
    dispute = commands.add_parser("dispute", help="disputes of a bill's amount")
    dispute_actions = dispute.add_subparsers(dest="action", required=True)
    opening = dispute_actions.add_parser("open", parents=[client], help="hold an amount of a bill until resolved")
    opening.add_argument("bill_id")
    opening.add_argument("amount", type=_amount)
    opening.add_argument("--reason", required=True)
    opening.add_argument("--ticket", help="the trouble ticket it comes from")
    opening.add_argument("--dispute-id", help="its id (default: one is made); running again with it changes nothing")
    opening.set_defaults(remote=_open_dispute, printer=_print_dispute)
    resolve = dispute_actions.add_parser("resolve", parents=[client], help="credit or reject a dispute")
    resolve.add_argument("dispute_id")
    resolve.add_argument("state", choices=["credited", "rejected"])
    resolve.add_argument("--resolution", required=True, help="why (kept with the dispute)")
    resolve.add_argument("--amount", type=_amount, help="credited: the amount granted (default: all of it)")
    resolve.set_defaults(remote=_resolve_dispute, printer=_print_dispute)
    receivables = reports.add_parser("receivables", parents=[client], help="receivables aging as of a day")
    receivables.add_argument("--as-of", type=_day, help="the day (default: today)")
    receivables.set_defaults(remote=_receivables, printer=print_receivables, data=None)
    ledger = reports.add_parser("ledger", parents=[client], help="the one-ledger audit (exit 1 on a problem)")
    ledger.set_defaults(remote=_ledger, printer=_print_ledger, data=None)


# -- requests -------------------------------------------------------------------------------------


async def _add_payment(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = _without_none(
        {
            "billing_account_id": arguments.account,
            "reference": arguments.reference,
            "amount_micros": arguments.amount,
            "method": arguments.method,
            "source": "cli",
            "received_at": f"{arguments.date.isoformat()}T00:00:00Z" if arguments.date else None,
        }
    )
    return await client.request("POST", "/payments", body=body)


async def _load(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    data = arguments.file.read_bytes()
    return await client.request(
        "POST", "/payments/bank-file", data=data, content_type="text/csv", timeout_seconds=BULK_TIMEOUT_SECONDS
    )


async def _show_bill(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.request("GET", f"/customerBills/{_segment(arguments.bill_id)}")


async def _list_bills(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    query = _without_none({"billing_account": arguments.account, "state": arguments.state})
    return await client.request("GET", "/customerBills" + (f"?{urlencode(query)}" if query else ""))


async def _bill_document(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    """The document fetched and written to ``--out`` (through a temporary file: a refused or failed
    download leaves an existing file as it was)."""
    path = f"/customerBills/{_segment(arguments.bill_id)}/document?{urlencode({'format': arguments.format})}"
    answer, content = await client.download(path)
    if not answer.ok:
        return answer
    if arguments.out == "-":
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
        return ApiAnswer(answer.status, {"quiet": True})
    out = Path(arguments.out)
    temporary = out.with_name(f".{out.name}.part")
    temporary.write_bytes(content)
    temporary.replace(out)
    return ApiAnswer(answer.status, {"bill_id": arguments.bill_id, "file": str(out), "bytes": len(content)})


async def _open_dispute(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = _without_none(
        {
            "amount_micros": arguments.amount,
            "reason": arguments.reason,
            "ticket_id": arguments.ticket,
            "dispute_id": arguments.dispute_id,
        }
    )
    return await client.request("POST", f"/customerBills/{_segment(arguments.bill_id)}/disputes", body=body)


async def _resolve_dispute(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = _without_none(
        {"state": arguments.state, "resolution": arguments.resolution, "amount_micros": arguments.amount}
    )
    return await client.request("PATCH", f"/disputes/{_segment(arguments.dispute_id)}", body=body)


async def _receivables(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    query = f"?as_of={arguments.as_of.isoformat()}" if arguments.as_of else ""
    return await client.request("GET", "/reports/receivables" + query)


async def _bill_run(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = {"date": arguments.date.isoformat()}
    return await client.request("POST", "/billRuns", body=body, timeout_seconds=BULK_TIMEOUT_SECONDS)


async def _ledger(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    return await client.request("GET", "/reports/ledger", timeout_seconds=BULK_TIMEOUT_SECONDS)


# -- output ---------------------------------------------------------------------------------------


def _print_bill_run(body: Mapping[str, object]) -> None:
    print(
        f"bill run {body.get('date')}: {body.get('accounts')} account(s), {body.get('invoices')} invoice(s), "
        f"{body.get('records')} record(s), {body.get('cuts')} cut(s), {body.get('skipped')} billed already, "
        f"{body.get('empty')} with nothing to bill"
    )
    problems = body.get("problems")
    for problem in problems if isinstance(problems, list) else ():
        print(f"ocs: {problem}", file=sys.stderr)
    more = body.get("more_problems")
    if isinstance(more, int) and more:
        print(f"ocs: and {more} more problem(s)", file=sys.stderr)


def _print_ledger(body: Mapping[str, object]) -> None:
    problems = body.get("problems")
    listed = problems if isinstance(problems, list) else []
    print("the ledger ties out" if not listed else f"{len(listed)} ledger problem(s)")
    for problem in listed:
        print(f"  {problem}")


def _units(micros: object) -> str:
    return format_money(micros) if isinstance(micros, int) else "?"


def _money(value: object) -> str:
    money = _mapping(value)
    return f"{_units(money.get('value_micros'))} {money.get('unit')}"


def _print_payment(body: Mapping[str, object]) -> None:
    payment = _mapping(body.get("payment"))
    replay = " (replayed: recorded before)" if body.get("replayed") else ""
    print(
        f"payment {payment.get('payment_id')} {payment.get('reference')}: "
        f"{_units(payment.get('amount_micros'))}{replay}"
    )
    for allocation in _list(body.get("allocated_now")):
        print(f"  paid {_units(allocation.get('amount_micros'))} of {allocation.get('bill_no')}")
    print(f"  credit left {_units(payment.get('unallocated_micros'))}")


def _print_bank_file(body: Mapping[str, object]) -> None:
    print(
        f"{body.get('rows')} row(s): {body.get('recorded')} recorded, {body.get('replayed')} replayed, "
        f"{body.get('failed')} refused"
    )
    for row in _list(body.get("results")):
        if row.get("error"):
            print(f"ocs: {row.get('error')} (HTTP {row.get('status')})", file=sys.stderr)


def _bill_line(bill: Mapping[str, object]) -> str:
    period = _mapping(bill.get("billing_period"))
    return (
        f"{bill.get('bill_no')}  {bill.get('billing_account_id')}  {period.get('start_date')}..{period.get('end_date')}"
        f"  due {bill.get('payment_due_date')}  {_money(bill.get('amount_due'))}"
        f"  left {_money(bill.get('remaining_amount'))}  {bill.get('state')}"
    )


def _print_bill(body: Mapping[str, object]) -> None:
    print(_bill_line(body))
    for line in _list(body.get("lines")):
        print(
            f"  {line.get('position'):>4} {line.get('kind'):<10} {_units(line.get('amount_micros')):>14}"
            f"  tax {_units(line.get('tax_micros'))}  {line.get('description')}"
        )
    disputed = _mapping(body.get("disputed_amount")).get("value_micros")
    if disputed:
        print(f"  disputed {_money(body.get('disputed_amount'))}")


def _print_document(body: Mapping[str, object]) -> None:
    if not body.get("quiet"):
        print(f"bill {body.get('bill_id')}: {body.get('bytes')} bytes written to {body.get('file')}")


def _print_bills(body: Mapping[str, object]) -> None:
    for bill in _list(body.get("bills")):
        print(_bill_line(bill))


def _print_dispute(body: Mapping[str, object]) -> None:
    print(
        f"dispute {body.get('dispute_id')} on {body.get('invoice_id')}: {_units(body.get('amount_micros'))} "
        f"{body.get('state')}"
    )
    note = _mapping(body.get("credit_note"))
    if note:
        print(f"  credit note {note.get('number')}: {_units(note.get('amount_micros'))}")


AGING_COLUMNS = (
    ("current_micros", "current"),
    ("days_1_30_micros", "1-30"),
    ("days_31_60_micros", "31-60"),
    ("days_61_90_micros", "61-90"),
    ("days_over_90_micros", "90+"),
    ("disputed_micros", "disputed"),
)


def print_receivables(body: Mapping[str, object]) -> None:
    print(f"receivables as of {body.get('as_of')}")
    print(f"{'account':<24} {'cur':<4}" + "".join(f"{title:>14}" for _, title in AGING_COLUMNS))
    for account in _list(body.get("accounts")):
        buckets = _mapping(account.get("buckets"))
        cells = "".join(f"{_units(buckets.get(field)):>14}" for field, _ in AGING_COLUMNS)
        print(f"{account.get('billing_account_id')!s:<24} {account.get('currency')!s:<4}{cells}")
    for currency, total in _mapping(body.get("totals")).items():
        buckets = _mapping(total)
        print(
            f"{'total':<24} {currency:<4}" + "".join(f"{_units(buckets.get(field)):>14}" for field, _ in AGING_COLUMNS)
        )
