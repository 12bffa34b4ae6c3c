"""The subscriber door: engine accounts by id (``/subscribers``), their balances, status, top-ups,
adjustments and buckets, the bulk CSV load, and the rating quote (``/rate``). The HTTP server
(``ocs.api.server``) authorizes each call and writes its audit record from the ``Change`` a
handler leaves (``ocs.api.changes``); the work is ``ocs.api.provisioning``'s.

Endpoints (``{id}`` is an account id):

====== ================================ =====================================================
POST   /subscribers                     create: account_id, payment_type (prepaid|postpaid),
                                        currency, credit_limit, parent_id, child_cap, status,
                                        buckets [{kind, amount, services, valid_from,
                                        valid_until, priority}], plan, customer_type
                                        (mobile|fixed), name, identities [{kind, value}]; 201
POST   /subscribers/load                CSV body (header line first; columns in
                                        ``ocs.api.fields.CSV_COLUMNS``): one create per row,
                                        in order; 200 with a result per row (line numbers)
GET    /subscribers/{id}                profile and balance
PUT    /subscribers/{id}/status         {"status": active|suspended|barred|terminated,
                                        "reason"}; a customer's line or node: its own
                                        status in the lifecycle (ocs.api.subscriber_status)
POST   /subscribers/{id}/topups         {"id", "amount", "kind": main|bonus, "valid_until",
                                        "payment_reference" (required with a self-care token)};
                                        idempotent by id: 201 first, 200 ``replayed`` after,
                                        409 if the id was applied with another amount or
                                        the account is terminated
POST   /subscribers/{id}/adjustments    {"id", "amount" (signed), "reason"}; idempotent by id
                                        (409 for the id with another amount)
POST   /subscribers/{id}/buckets        a bucket as in create; 201 with its ``bucket_id``
GET    /subscribers/{id}/balance        the balance view alone
GET    /rate?plan=&context=&units=...   what units would cost and why (also POST with JSON):
POST   /rate                            plan, context, rating_group, service_identifier,
                                        called, at, units; balances are not touched
====== ================================ =====================================================
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

import structlog
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import MAX_SERVICE_UNITS, AccountStatus, BalanceView, BucketKind
from ocs.api.bodies import expect_continue, json_fields, json_value, read_body
from ocs.api.changes import Change, actor_of, decode_csv, record_change
from ocs.api.fields import BadInput, Fields, account_id_of, parse_bucket, parse_new_subscriber, read_csv
from ocs.api.provisioning import Applied, Provisioning
from ocs.api.render import applied_json, audited_balance, money_json, quote_json, subscriber_json, view_json
from ocs.api.subscriber_status import set_subscriber_status
from ocs.db.tokens import Role
from ocs.rating.book import TariffBook
from ocs.rating.rate import RatingFailure, RatingInput, explain, format_money

log = structlog.get_logger("ocs.api.subscribers")


@dataclass(frozen=True, slots=True)
class SubscriberDoor:
    """What the door's handlers work with."""

    provisioning: Provisioning
    book: TariffBook
    database: AsyncEngine


SUBSCRIBERS = web.AppKey("ocs_subscribers", SubscriberDoor)


def add_subscriber_routes(app: web.Application, door: SubscriberDoor) -> None:
    app[SUBSCRIBERS] = door
    app.router.add_get("/subscribers/{account_id}", _show)
    app.router.add_get("/subscribers/{account_id}/balance", _balance)
    app.router.add_get("/rate", _rate)
    with_body = [
        ("POST", "/subscribers", _create),
        ("POST", "/subscribers/load", _load),
        ("PUT", "/subscribers/{account_id}/status", _status),
        ("POST", "/subscribers/{account_id}/topups", _top_up),
        ("POST", "/subscribers/{account_id}/adjustments", _adjust),
        ("POST", "/subscribers/{account_id}/buckets", _add_bucket),
        ("POST", "/rate", _rate),
    ]
    for method, path, handler in with_body:
        app.router.add_route(method, path, handler, expect_handler=expect_continue)


def _account(request: web.Request) -> str:
    return account_id_of(request.match_info["account_id"])


def _provisioning(request: web.Request) -> Provisioning:
    return request.app[SUBSCRIBERS].provisioning


async def _create(request: web.Request) -> web.Response:
    provisioning = _provisioning(request)
    new = parse_new_subscriber(await json_value(request), default_plan=provisioning.default_plan)
    view = await provisioning.create(new)
    after = {**audited_balance(view), "plan": new.profile.plan, "payment_type": view.account.payment_type.value}
    record_change(request, Change(view.account.account_id, None, after))
    return web.json_response(
        subscriber_json(new.profile, view), status=201, headers={"Location": f"/subscribers/{view.account.account_id}"}
    )


async def _show(request: web.Request) -> web.Response:
    profile, view = await _provisioning(request).show(_account(request))
    return web.json_response(subscriber_json(profile, view))


async def _balance(request: web.Request) -> web.Response:
    return web.json_response(view_json(await _provisioning(request).view(_account(request))))


async def _status(request: web.Request) -> web.Response:
    account_id = _account(request)
    fields = await json_fields(request)
    status = AccountStatus(fields.choice("status", [status.value for status in AccountStatus]))
    reason = fields.text("reason", "")
    fields.done()
    actor = actor_of(request).token.name
    door = request.app[SUBSCRIBERS]  # a customer's line or node changes through its lifecycle
    change = await set_subscriber_status(
        door.database, door.provisioning, account_id, status, actor=actor, reason=reason
    )
    # The record names the reason, and every account under a company node that changed with it.
    below = [f"{event.account_id} {event.previous.value}->{event.status.value}" for event in change.changed[1:]]
    detail = "; ".join(part for part in (f"reason: {reason}" if reason else "", ", ".join(below)) if part)
    after: dict[str, object] = {"status": change.view.account.status.value}
    record_change(request, Change(account_id, {"status": change.previous.value}, after, detail=detail))
    return web.json_response(
        {
            "account_id": account_id,
            "previous_status": change.previous.value,
            "status": change.view.account.status.value,
            "reason": reason,
            "changed_accounts": [event.account_id for event in change.changed],
            "notified_sessions": change.notified_sessions,
            "released_sessions": change.released_sessions,
        }
    )


async def _top_up(request: web.Request) -> web.Response:
    account_id = _account(request)
    fields = await json_fields(request)
    top_up_id = fields.text("id")
    micros = fields.money("amount")
    kind = BucketKind(fields.choice("kind", ("main", "bonus"), "main"))
    valid_until = fields.epoch("valid_until")
    payment_reference = fields.text("payment_reference", "")
    fields.done()
    if actor_of(request).role is Role.SELF_CARE and not payment_reference.strip():
        raise BadInput("payment_reference is required: a self-care top-up names the payment that funds it")
    provisioning = _provisioning(request)
    before = await provisioning.view(account_id)
    applied = await provisioning.top_up(account_id, top_up_id, micros, kind, valid_until)
    reference = f", payment reference {payment_reference}" if payment_reference else ""
    record_change(request, _balance_change(before, applied, f"top-up {top_up_id} of {format_money(micros)}{reference}"))
    body = applied_json(applied, top_up_id=top_up_id, **money_json("amount", micros))
    if payment_reference:
        body["payment_reference"] = payment_reference
    return web.json_response(body, status=200 if applied.result.replayed else 201)


async def _adjust(request: web.Request) -> web.Response:
    account_id = _account(request)
    fields = await json_fields(request)
    adjustment_id = fields.text("id")
    micros = fields.money("amount")
    reason = fields.text("reason", "")
    fields.done()
    actor_of(request).check_adjustment(micros)
    provisioning = _provisioning(request)
    before = await provisioning.view(account_id)
    applied = await provisioning.adjust(account_id, adjustment_id, micros, reason)
    record_change(
        request, _balance_change(before, applied, f"adjustment {adjustment_id} of {format_money(micros)}: {reason}")
    )
    body = applied_json(applied, adjustment_id=adjustment_id, **money_json("amount", micros))
    return web.json_response(body, status=200 if applied.result.replayed else 201)


async def _add_bucket(request: web.Request) -> web.Response:
    account_id = _account(request)
    bucket = parse_bucket(await json_value(request), "body")
    provisioning = _provisioning(request)
    before = await provisioning.view(account_id)
    applied = await provisioning.add_bucket(account_id, bucket)
    record_change(request, _balance_change(before, applied, f"{bucket.kind.value} bucket #{applied.result.bucket_id}"))
    return web.json_response(applied_json(applied), status=201)


def _balance_change(before: BalanceView, applied: Applied, detail: str) -> Change:
    outcome = "replayed" if applied.result.replayed else "applied"
    after = audited_balance(applied.view)
    return Change(before.account.account_id, audited_balance(before), after, outcome, detail)


async def _load(request: web.Request) -> web.Response:
    """The file is checked whole (UTF-8, header) before any row is applied; decoding it runs in a
    thread, and its rows are parsed a group at a time as they are applied (``Provisioning.load``),
    so neither blocks the loop that answers CCRs nor holds every row in memory at once."""
    text = await asyncio.to_thread(decode_csv, await read_body(request))
    results = await _provisioning(request).load(read_csv(text))
    created = sum(1 for result in results if result.status == 201)
    rows = [
        {"line": result.line, "account_id": result.account_id, "status": result.status}
        | ({"error": result.error} if result.error else {})
        for result in results
    ]
    log.info("subscribers_loaded", rows=len(results), created=created)
    summary: dict[str, object] = {"rows": len(results), "created": created, "failed": len(results) - created}
    record_change(request, Change(None, None, summary, detail=f"bulk load of {len(results)} row(s)"))
    return web.json_response(
        {"rows": len(results), "created": created, "failed": len(results) - created, "results": rows}
    )


async def _rate(request: web.Request) -> web.Response:
    door = request.app[SUBSCRIBERS]
    fields = await json_fields(request) if request.method == "POST" else Fields(dict(request.query), "query")
    plan = fields.text("plan", door.provisioning.default_plan)
    rating_input = RatingInput(
        service_context=fields.text("context"),
        rating_group=fields.optional_integer("rating_group", maximum=2**32 - 1),
        service_identifier=fields.optional_integer("service_identifier", maximum=2**32 - 1),
        called_party=fields.text("called", "") or None,
        at=fields.instant("at", datetime.now(UTC)),
    )
    units = fields.integer("units", maximum=MAX_SERVICE_UNITS)
    fields.done()
    quote = explain(door.book, plan, rating_input, units)
    if isinstance(quote, RatingFailure):
        return web.json_response({"error": quote.reason, "code": "rating_failed", "avp": quote.avp_name}, status=422)
    return web.json_response(quote_json(quote))
