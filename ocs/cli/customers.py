"""``ocs customer add|show``, ``ocs customer node add`` and ``ocs line add``: the everyday customer
work, against the running server's customer API (``ocs.api.customers``).

Theory of operation: each command builds the JSON body of one API call from its flags and hands it
to ``ocs.cli.main``'s remote runner (URL, token, ``--json``, exit statuses as for every API
command). Money flags are decimal amounts (``50.00``), sent as integer micros; a malformed flag is
a usage error (exit 2) before anything is sent. The server checks the rest and names the field it
refuses.

    ocs customer add ID --given-name G --family-name F --birth-date 1990-02-03
              [--document TYPE:NUMBER:COUNTRY] [--email E] [--phone P]
    ocs customer add ID --company NAME --registration NUMBER [--pool postpaid|prepaid]
              [--credit-limit 500.00]
    (either: [--status S] [--credit-score N] [--credit-class C]
              [--currency EUR --bill-day 1..28 --payment-method M])
    ocs customer show ID [--tree]
    ocs customer node add CUSTOMER NAME [--node-id ID] [--parent NODE] [--kind branch|department|cost_centre]
              [--pool postpaid|prepaid] [--credit-limit 100.00] [--cap 50.00]
    ocs line add CUSTOMER [--line-id ID] [--node NODE] [--type mobile|fixed] [--payment prepaid|postpaid]
              [--plan P] [--msisdn N] [--imsi N] [--sip URI] [--credit-limit 20.00] [--cap 10.00]
    ocs customer suspend|resume|bar|terminate ID --reason R [--category C]
    ocs customer node suspend|resume|bar|terminate CUSTOMER NODE --reason R [--category C]
    ocs line suspend|resume|bar|terminate LINE --reason R [--category C]
        (``PUT .../status``, ``ocs.api.lifecycle``; C: voluntary, collections, fraud, other)
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from urllib.parse import quote

from ocs.api.fields import money_micros
from ocs.cli.client import ApiAnswer, ApiClient
from ocs.customers.history import ReasonCategory
from ocs.rating.rate import format_money


def _micros(text: str) -> int:
    try:
        micros = money_micros(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if micros < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: 0 or more")
    return micros


def _document(text: str) -> dict[str, str]:
    kind, _, rest = text.partition(":")
    number, _, country = rest.partition(":")
    if not (kind and number and country):
        raise argparse.ArgumentTypeError(f"{text!r}: expected TYPE:NUMBER:COUNTRY, e.g. passport:X1234567:DE")
    return {"type": kind, "number": number, "issuing_country": country}


def _segment(text: str) -> str:
    return quote(text, safe="")


def _without_none(values: Mapping[str, object]) -> dict[str, object]:
    return {name: value for name, value in values.items() if value is not None}


# -- the parsers --------------------------------------------------------------------------------


def _money_flags(parser: argparse.ArgumentParser, *, pool: bool) -> None:
    if pool:
        parser.add_argument("--pool", choices=("postpaid", "prepaid"), help="make the node an engine account (pool)")
    parser.add_argument("--credit-limit", type=_micros, help="postpaid credit limit, e.g. 500.00")
    parser.add_argument("--cap", type=_micros, help="the most drawn from the pool above, e.g. 50.00")


def _customer_add(
    actions: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> None:
    add = actions.add_parser("add", parents=[client], help="create a customer: an individual or a company")
    add.add_argument("customer")
    add.add_argument("--given-name")
    add.add_argument("--family-name")
    add.add_argument("--birth-date", help="YYYY-MM-DD")
    add.add_argument("--document", type=_document, help="TYPE:NUMBER:COUNTRY (passport, national_id, ...)")
    add.add_argument("--company", help="an organization's name (instead of a person's)")
    add.add_argument("--registration", help="the organization's registration number")
    add.add_argument("--email", action="append", default=[])
    add.add_argument("--phone", action="append", default=[])
    add.add_argument("--status", choices=("prospect", "active", "suspended", "barred", "terminated"))
    add.add_argument("--credit-score", type=int)
    add.add_argument("--credit-class")
    add.add_argument("--currency", help="ISO 4217: gives the customer a billing account")
    add.add_argument("--bill-day", type=int, default=1, help="bill-cycle day, 1 to 28")
    add.add_argument("--payment-method", default="bank_transfer")
    _money_flags(add, pool=True)
    add.set_defaults(remote=_add_customer, printer=_print_customer)


def add_customer_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], client: argparse.ArgumentParser
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """``customer`` and ``line`` under ``commands``; ``client`` holds the API flags (--url, --token, ...).
    Answers the ``customer`` command's actions, for the commands other modules add (``score``)."""
    customer = commands.add_parser("customer", help="create and show customers and their company trees")
    actions = customer.add_subparsers(dest="action", required=True)
    _customer_add(actions, client)
    show = actions.add_parser("show", parents=[client], help="a customer (with --tree: its nodes and lines)")
    show.add_argument("customer")
    show.add_argument("--tree", action="store_true")
    show.set_defaults(remote=_show_customer, printer=_print_shown)
    node = actions.add_parser("node", help="company nodes")
    node_actions = node.add_subparsers(dest="node_action", required=True)
    node_add = node_actions.add_parser("add", parents=[client], help="add a branch or department to a company")
    node_add.add_argument("customer")
    node_add.add_argument("name")
    node_add.add_argument("--node-id")
    node_add.add_argument("--parent", help="the parent node (default: the company's root)")
    node_add.add_argument("--kind", choices=("branch", "department", "cost_centre"), default="branch")
    _money_flags(node_add, pool=True)
    node_add.set_defaults(remote=_add_node, printer=_print_node)
    line = commands.add_parser("line", help="lines (subscriptions)")
    line_actions = line.add_subparsers(dest="action", required=True)
    line_add = line_actions.add_parser("add", parents=[client], help="add a line: an engine account and its ids")
    line_add.add_argument("customer")
    line_add.add_argument("--line-id", help="the line's (engine account's) id; default: one is made")
    line_add.add_argument("--node", help="the company node it hangs under")
    line_add.add_argument("--type", dest="network", choices=("mobile", "fixed"), default="mobile")
    line_add.add_argument("--payment", choices=("prepaid", "postpaid"), default="prepaid")
    line_add.add_argument("--plan", help="tariff plan (default: the server's default plan)")
    line_add.add_argument("--name")
    for kind in ("msisdn", "imsi", "sip"):
        line_add.add_argument(f"--{kind}", action="append", default=[], help=f"{kind.upper()} (repeatable)")
    _money_flags(line_add, pool=False)
    line_add.set_defaults(remote=_add_line, printer=_print_line)
    _status_commands(actions, client, "customer", _print_customer)
    _status_commands(node_actions, client, "node", _print_node)
    _status_commands(line_actions, client, "line", _print_line)
    return actions


STATUS_OF_COMMAND = {"suspend": "suspended", "resume": "active", "bar": "barred", "terminate": "terminated"}


def _status_commands(
    actions: argparse._SubParsersAction[argparse.ArgumentParser],
    client: argparse.ArgumentParser,
    entity: str,
    printer: object,
) -> None:
    """suspend, resume, bar, terminate for a customer, a node (CUSTOMER NODE) or a line."""
    for command, status in STATUS_OF_COMMAND.items():
        parser = actions.add_parser(
            command, parents=[client], help=f"make the {entity} {status} (and what is under it)"
        )
        if entity == "node":
            parser.add_argument("customer")
        parser.add_argument("entity_id", metavar=entity.upper())
        parser.add_argument("--reason", required=True, help="why (recorded with who and when)")
        parser.add_argument("--category", choices=[category.value for category in ReasonCategory])
        parser.set_defaults(remote=_set_status, printer=printer, status=status, entity=entity)


# -- requests -------------------------------------------------------------------------------------


def _money(arguments: argparse.Namespace) -> dict[str, object] | None:
    if arguments.pool is None:
        return None
    return _without_none(
        {"payment_type": arguments.pool, "credit_limit_micros": arguments.credit_limit, "cap_micros": arguments.cap}
    )


async def _add_customer(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    media = [{"kind": "email", "value": value} for value in arguments.email]
    media += [{"kind": "phone", "value": value} for value in arguments.phone]
    body: dict[str, object] = {"customer_id": arguments.customer, "money": _money(arguments)}
    if arguments.company is not None:
        body["organization"] = {
            "name": arguments.company,
            "registration_number": arguments.registration,
            "contact_media": media,
        }
    else:
        body["individual"] = _without_none(
            {
                "given_name": arguments.given_name,
                "family_name": arguments.family_name,
                "birth_date": arguments.birth_date,
                "identity_document": arguments.document,
                "contact_media": media,
            }
        )
    body["credit_profile"] = _without_none(
        {"credit_score": arguments.credit_score, "credit_class": arguments.credit_class}
    )
    if arguments.currency is not None:
        body["billing_account"] = {
            "currency": arguments.currency,
            "bill_cycle_day": arguments.bill_day,
            "payment_method": arguments.payment_method,
        }
    if arguments.status is not None:
        body["status"] = arguments.status
    return await client.request("POST", "/customers", body=_without_none(body))


async def _set_status(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = _without_none(
        {"status": arguments.status, "reason": arguments.reason, "reason_category": arguments.category}
    )
    entity_id = _segment(arguments.entity_id)
    path = {
        "customer": f"/customers/{entity_id}/status",
        "node": f"/customers/{_segment(getattr(arguments, 'customer', ''))}/nodes/{entity_id}/status",
        "line": f"/lines/{entity_id}/status",
    }[arguments.entity]
    return await client.request("PUT", path, body=body)


async def _show_customer(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    suffix = "/tree" if arguments.tree else ""
    return await client.request("GET", f"/customers/{_segment(arguments.customer)}{suffix}")


async def _add_node(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    body = _without_none(
        {
            "node_id": arguments.node_id,
            "parent_node_id": arguments.parent,
            "name": arguments.name,
            "kind": arguments.kind,
            "money": _money(arguments),
        }
    )
    return await client.request("POST", f"/customers/{_segment(arguments.customer)}/nodes", body=body)


async def _add_line(client: ApiClient, arguments: argparse.Namespace) -> ApiAnswer:
    identities = [
        {"kind": kind, "value": value} for kind in ("msisdn", "imsi", "sip") for value in getattr(arguments, kind)
    ]
    body = _without_none(
        {
            "line_id": arguments.line_id,
            "node_id": arguments.node,
            "network": arguments.network,
            "payment_type": arguments.payment,
            "plan": arguments.plan,
            "name": arguments.name,
            "credit_limit_micros": arguments.credit_limit,
            "cap_micros": arguments.cap,
            "identities": identities,
        }
    )
    return await client.request("POST", f"/customers/{_segment(arguments.customer)}/lines", body=body)


# -- output -------------------------------------------------------------------------------------


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Mapping[str, object]]:
    return [_mapping(item) for item in value] if isinstance(value, list) else []


def _print_customer(body: Mapping[str, object], indent: str = "") -> None:
    person, company = _mapping(body.get("individual")), _mapping(body.get("organization"))
    name = f"{person.get('given_name')} {person.get('family_name')}" if person else str(company.get("name"))
    credit = _mapping(body.get("credit_profile"))
    print(f"{indent}customer  {body.get('customer_id')} ({body.get('kind')}, {body.get('status')}): {name}")
    print(f"{indent}credit    score {credit.get('credit_score')}, class {credit.get('credit_class')}")
    billing = _mapping(body.get("billing_account"))
    if billing:
        print(
            f"{indent}billing   {billing.get('billing_account_id')}: {billing.get('currency')}, "
            f"day {billing.get('bill_cycle_day')}, {billing.get('payment_method')}"
        )


def _money_text(micros: object) -> str:
    return format_money(micros) if isinstance(micros, int) else "-"


def _print_line(body: Mapping[str, object], indent: str = "") -> None:
    identities = ", ".join(f"{item.get('kind')} {item.get('value')}" for item in _list(body.get("identities")))
    parent = f", draws on {body.get('engine_parent_id')}" if body.get("engine_parent_id") else ""
    print(
        f"{indent}line      {body.get('line_id')} ({body.get('network')} {body.get('payment_type')}, "
        f"plan {body.get('plan')}, {body.get('status')}{_own(body)}{parent}): {identities or 'no identities'}"
    )


def _own(body: Mapping[str, object]) -> str:
    """A line's own status, when its customer or a node makes it count as another."""
    own = body.get("own_status")
    return f", its own {own}" if own is not None and own != body.get("status") else ""


def _print_node(body: Mapping[str, object], indent: str = "") -> None:
    money = _mapping(body.get("money"))
    pool = ""
    if money:
        pool = (
            f", {money.get('payment_type')} pool {body.get('account_id')} ({body.get('account_state')}), "
            f"limit {_money_text(money.get('credit_limit_micros'))}, cap {_money_text(money.get('cap_micros'))}"
        )
    status = body.get("status", "active")
    print(f"{indent}node      {body.get('node_id')} {body.get('kind')} {body.get('name')!r} {status}{pool}")


def _print_tree_node(tree: Mapping[str, object], indent: str) -> None:
    _print_node(_mapping(tree.get("node")), indent)
    for line in _list(tree.get("lines")):
        _print_line(line, indent + "  ")
    for child in _list(tree.get("children")):
        _print_tree_node(child, indent + "  ")


def _print_shown(body: Mapping[str, object]) -> None:
    if "customer" not in body:  # without --tree: the customer alone
        _print_customer(body)
        return
    _print_customer(_mapping(body.get("customer")))
    for line in _list(body.get("lines")):
        _print_line(line)
    if body.get("root") is not None:
        _print_tree_node(_mapping(body.get("root")), "")
