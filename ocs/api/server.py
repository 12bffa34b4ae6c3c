"""The operator's HTTP side: provisioning API (JSON), ``/health`` and ``/metrics`` on one port.

Theory of operation: ``start_http(state)`` serves an aiohttp application on the configured
``[http]`` host and port (port 0 picks a free one; ``HttpServer.port`` tells which) next to
the Diameter server of the same process, sharing its store, directory, tariff book and metrics.
aiohttp was chosen because it is a well-kept asyncio HTTP server and client in one package: it
runs on the server's own event loop (uvloop) with no thread or second process, and the CLI uses
its client. Handlers are thin: ``ocs.api.provisioning`` checks the input and applies it; this
module turns JSON into calls and results into JSON. One middleware maps every refusal to a JSON
error ``{"error": <message>, "code": <word>}`` with its 4xx status (400 malformed, 404 unknown
account, 409 conflict, 413 body over the endpoint's limit, 422 refused by the rules), 503 when
Redis does not answer, and records ``ocs_http_*`` metrics by route template (never by account).

Who may call what (``ocs.api.access``): every route but ``/health`` needs ``Authorization: Bearer
<token>``: 401 with ``WWW-Authenticate: Bearer`` without one or with an unknown, revoked or expired
one, 403 when the token's role (admin, care, read-only, self-care) may not make the call. Every
state-changing call by a known token, applied or refused, is recorded in the audit trail
(``ocs.api.audit_trail``) after its outcome is known: who, the route, the account, the values before
and after, the status. ``/metrics`` needs a token here; ``[http] metrics_port`` serves it open on
a listener of its own for the scraper. With ``[http] tls_certificate`` the API speaks HTTPS only.

This loop also answers Diameter, so no request may hold it: bodies are bounded per endpoint
(``MAX_JSON_BODY_BYTES``, ``MAX_LOAD_BODY_BYTES``) and read chunk by chunk; a small JSON body is
parsed in place, a bulk file is decoded in a thread and its rows parsed a group at a time as
they are applied.

Money in answers comes twice: ``<name>_micros`` (integer) and ``<name>`` (decimal string).

Endpoints (the subscriber door's, ``/subscribers`` and ``/rate``, are ``ocs.api.subscribers``'s):

====== ================================ =====================================================
GET    /health                          200 ``{"status": "ok"}`` when Redis answers, else 503
GET    /metrics                         Prometheus text format (OpenMetrics if asked)
GET    /audit[?sessions_ended=true]     the money audit (balance.audit) with the spool's usage
                                        totals: {"ok", "accounts", "spool_records", "findings"}
GET    /audit-trail?since=&until=       the audit trail, oldest first: {"records": [...]};
       &account=&actor=&limit=          actor is a token's name or id; since/until ISO or epoch
====== ================================ =====================================================
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.audit import audit
from balance.errors import BalanceScriptError, BalanceUnavailable
from ocs.api.access import OPEN_ROUTES, Actor, Unauthenticated, authenticate, authorize, is_change, route_key
from ocs.api.audit_trail import AuditTrail
from ocs.api.billing import DOCUMENT_PATH, bill_document
from ocs.api.billing import ROUTES as BILLING_ROUTES
from ocs.api.billing import Services as BillingServices
from ocs.api.billing import extend_document as with_billing_routes
from ocs.api.bodies import (
    MAX_JSON_BODY_BYTES,
    error_response,
    expect_continue,
    json_value,
    read_body,
)
from ocs.api.changes import ACTOR, CHANGE, Change, actor_of, decode_csv, record_change
from ocs.api.customers import ROUTES as CUSTOMER_ROUTES
from ocs.api.customers import ProvisioningAccounts, Route, openapi_document
from ocs.api.dunning import ROUTES as DUNNING_ROUTES
from ocs.api.dunning import extend_document as with_dunning_routes
from ocs.api.fields import (
    SECONDS_PER_DAY,
    ApiError,
    Fields,
    Unavailable,
    parse_instant,
)
from ocs.api.interactions import ROUTES as INTERACTION_ROUTES
from ocs.api.interactions import Services as InteractionServices
from ocs.api.interactions import extend_document
from ocs.api.lifecycle import lifecycle_routes, lifecycle_shapes
from ocs.api.loyalty import ROUTES as LOYALTY_ROUTES
from ocs.api.loyalty import extend_document as with_loyalty_routes
from ocs.api.orders import EngineLines, order_routes, order_shapes
from ocs.api.provisioning import Provisioning
from ocs.api.scores import ROUTES as SCORE_ROUTES
from ocs.api.scores import extend_document as with_score_routes
from ocs.api.service_routes import ServiceRoute
from ocs.api.subscribers import SubscriberDoor, add_subscriber_routes
from ocs.billing.bill_runs import BillRuns
from ocs.billing.corrections import Corrections
from ocs.billing.delivery import bill_documents
from ocs.billing.documents import DocumentRenderer
from ocs.billing.dunning import Dunning
from ocs.billing.dunning_rules import load_dunning_rules
from ocs.billing.invoices import Invoices
from ocs.billing.payments import Payments
from ocs.billing.receivables import Receivables
from ocs.customers.applications import Applications
from ocs.customers.credit import CreditRules, RuleTable
from ocs.customers.credit_load import load_credit_rules
from ocs.customers.interactions import Interactions
from ocs.customers.lifecycle import Lifecycle
from ocs.customers.offers import CreditOffers
from ocs.customers.orders import Orders
from ocs.customers.service import Customers
from ocs.db import audit as audit_records
from ocs.db.audit import AuditEntry
from ocs.loyalty.reports import LoyaltyReports
from ocs.loyalty.rules_load import load_loyalty_rules
from ocs.loyalty.scoring import Scoring
from ocs.loyalty.scoring_load import load_scoring_rules
from ocs.metrics import Metrics
from ocs.rating.book import TariffBook
from ocs.rating.rate import load_book

if TYPE_CHECKING:  # ocs.app starts this module's server: no import back at run time
    from ocs.app import ServerState

log = structlog.get_logger("ocs.api.server")

HEALTH_TIMEOUT_SECONDS = 2.0  # well inside a typical probe timeout, so a hung Redis reads as 503


@dataclass(slots=True)
class ApiContext:
    state: ServerState
    metrics: Metrics
    provisioning: Provisioning
    book: TariffBook
    database: AsyncEngine
    audit_trail: AuditTrail


CONTEXT = web.AppKey("ocs_api", ApiContext)
CUSTOMERS = web.AppKey("ocs_customers", Customers)  # the customer side (ocs.api.customers)
ORDERS = web.AppKey("ocs_orders", Orders)  # product orders (ocs.api.orders)
LIFECYCLE = web.AppKey("ocs_lifecycle", Lifecycle)  # customer, node and line status (ocs.api.lifecycle)


def _url(scheme: str, address: tuple[str, int]) -> str:
    host, port = address
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


class HttpServer:
    """The running HTTP side; ``address`` is where it listens (the real port when 0 was asked),
    ``metrics_address`` the open /metrics listener's when one is configured."""

    def __init__(
        self,
        runner: web.AppRunner,
        address: tuple[str, int],
        metrics: Metrics,
        *,
        scheme: str = "http",
        metrics_runner: web.AppRunner | None = None,
        metrics_address: tuple[str, int] | None = None,
    ) -> None:
        self.runner = runner
        self.address = address
        self.metrics = metrics
        self.scheme = scheme
        self.metrics_runner = metrics_runner
        self.metrics_address = metrics_address

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def url(self) -> str:
        return _url(self.scheme, self.address)

    async def close(self) -> None:
        """Stop accepting, let requests in progress finish (up to the shutdown timeout), close."""
        if self.metrics_runner is not None:
            await self.metrics_runner.cleanup()
        await self.runner.cleanup()


def _metrics_of(state: ServerState) -> Metrics:
    """The server's ``Metrics`` (``ServerState.metrics``) when it keeps one, else a private one."""
    found = getattr(state, "metrics", None)
    return found if isinstance(found, Metrics) else Metrics()


def build_app(state: ServerState, metrics: Metrics) -> web.Application:
    if state.store is None or state.directory is None or state.database is None or state.audit_trail is None:
        raise RuntimeError("start_http needs a started server (store, directory, database, audit trail)")
    settings = state.settings
    book = state.book if state.book is not None else load_book(Path(settings.tariffs.path))
    cache = state.credit_control.subscribers if state.credit_control is not None else None
    provisioning = Provisioning(
        state.store,
        state.directory,
        book,
        default_plan=settings.tariffs.default_plan,
        forget=cache.forget if cache is not None else lambda identities: None,
        events=state.events,
        metrics=metrics,
        identity_quarantine_seconds=settings.lifecycle.identity_quarantine_days * SECONDS_PER_DAY,
    )
    # client_max_size bounds aiohttp's own readers too, should anything call request.read().
    app = web.Application(middlewares=[_errors_and_metrics], client_max_size=MAX_JSON_BODY_BYTES)
    app[CONTEXT] = ApiContext(state, metrics, provisioning, book, state.database, state.audit_trail)
    # Terminations still waiting for their sessions' final usage are finished before Redis closes.
    app.on_cleanup.append(lambda _: provisioning.close())
    app.router.add_get("/health", _health)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/audit-trail", _audit_trail)
    app.router.add_get("/audit", _audit)
    add_subscriber_routes(app, SubscriberDoor(provisioning, book, state.database))
    rules = load_credit_rules(settings.customers.credit_classes_path)  # read once, here
    credit = CreditOffers(state.database, rules)
    app[CUSTOMERS] = Customers(state.database, ProvisioningAccounts(provisioning), credit=credit)
    for route in CUSTOMER_ROUTES:
        expect = expect_continue if route.body is not None else None
        app.router.add_route(route.method, route.path, _customer_handler(route, app[CUSTOMERS]), expect_handler=expect)
    services = InteractionServices(Interactions(state.database), _last_usage(state), settings.customers.inactivity_days)
    for interaction in INTERACTION_ROUTES:
        expect = expect_continue if interaction.body is not None else None
        answer = _service_handler(interaction, services)
        app.router.add_route(interaction.method, interaction.path, answer, expect_handler=expect)
    _add_activation(app, state.database, provisioning, rules)
    state.dunning = Dunning(state.database, load_dunning_rules(settings.billing.dunning), app[LIFECYCLE])
    assert state.bill_runs is not None
    scoring = _scoring(state)
    _add_billing(app, state, state.dunning, state.bill_runs, scoring)
    for score_route in SCORE_ROUTES:
        app.router.add_route(score_route.method, score_route.path, _service_handler(score_route, scoring))
    reports = _loyalty_reports(state)
    for loyalty_route in LOYALTY_ROUTES:
        expect = expect_continue if loyalty_route.body is not None else None
        answer = _service_handler(loyalty_route, reports)
        app.router.add_route(loyalty_route.method, loyalty_route.path, answer, expect_handler=expect)
    app.router.add_get("/openapi.json", _openapi)
    return app


async def start_http(state: ServerState) -> HttpServer:
    metrics = _metrics_of(state)
    metrics.watch(
        in_flight=lambda: len(state.in_flight),
        peers=lambda: len(state.diameter.connections) if state.diameter is not None else 0,
        open_sessions=lambda: state.notifier.open_sessions if state.notifier is not None else 0,
    )
    settings = state.settings
    http = settings.http
    tls = _tls_context(http.tls_certificate, http.tls_private_key) if http.tls_certificate else None
    app = build_app(state, metrics)
    await _resume_customer_provisioning(app[CUSTOMERS])
    await _resume_lifecycle(app[LIFECYCLE])
    await _resume_orders(app[ORDERS])
    reuse_port = getattr(state, "worker", None) is not None  # workers share the port (ocs/supervisor.py)
    runner, bound = await _listen(app, http.host, http.port, settings.shutdown_timeout_seconds, tls, reuse_port)
    log.info("http_listening", host=bound[0], port=bound[1], https=tls is not None)
    server = HttpServer(runner, bound, metrics, scheme="https" if tls is not None else "http")
    if http.metrics_port:
        scrape = web.Application()
        scrape[CONTEXT] = app[CONTEXT]
        scrape.router.add_get("/metrics", _metrics)
        try:
            server.metrics_runner, server.metrics_address = await _listen(
                scrape,
                http.metrics_host or http.host,
                http.metrics_port,
                settings.shutdown_timeout_seconds,
                None,
                reuse_port,
            )
        except OSError:
            await runner.cleanup()
            raise
        log.info("metrics_listening", host=server.metrics_address[0], port=server.metrics_address[1])
    return server


def _tls_context(certificate: str, private_key: str) -> ssl.SSLContext:
    """HTTPS: TLS 1.2 at least (RFC 9325 section 3.1.1: no TLS 1.0 or 1.1), Python's default ciphers."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certificate, private_key or None)
    return context


async def _listen(
    app: web.Application,
    host: str,
    port: int,
    shutdown_timeout: float,
    tls: ssl.SSLContext | None,
    reuse_port: bool = False,
) -> tuple[web.AppRunner, tuple[str, int]]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=tls, reuse_port=reuse_port or None)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    address = runner.addresses[0]
    return runner, (str(address[0]), int(address[1]))


async def _resume_customer_provisioning(customers: Customers) -> None:
    """The startup pass: lines and pools a crash left ``provisioning`` are finished before the API
    opens (DESIGN.md: "a recorded, idempotent step that a restart finishes")."""
    try:
        await customers.resume()
    except BalanceUnavailable as error:  # they stay provisioning; the next start finishes them
        log.error("customer_provisioning_not_resumed", error=str(error))


async def _resume_lifecycle(lifecycle: Lifecycle) -> None:
    """The startup pass for status changes a crash (or Redis down) left half-applied to a
    customer's lines (ocs.customers.lifecycle), before the orders, whose status items use it."""
    try:
        await lifecycle.resume()
    except BalanceUnavailable as error:  # they stay unfinished; the next start finishes them
        log.error("lifecycle_not_resumed", error=str(error))


async def _resume_orders(orders: Orders) -> None:
    """The startup pass for product orders a crash left in progress (ocs.customers.orders), after
    the line provisioning pass, which finishes the lines those orders made."""
    try:
        await orders.resume()
    except BalanceUnavailable as error:  # they stay inProgress; the next start finishes them
        log.error("orders_not_resumed", error=str(error))


# -- errors and metrics -----------------------------------------------------------------------


@web.middleware
async def _errors_and_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    response, code, message = await _answer(request, route, handler)
    actor = request.get(ACTOR)
    if isinstance(actor, Actor) and route != "unmatched" and is_change(request.method, route):
        await _record(request, actor, route, response.status, code, message)
    request.app[CONTEXT].metrics.http_finished(route, request.method, response.status, time.perf_counter() - started)
    return response


async def _answer(request: web.Request, route: str, handler: Handler) -> tuple[web.StreamResponse, str, str]:
    """The response, and for a refusal its code and message (both "" on success)."""
    try:
        if route_key(request.method, route) not in OPEN_ROUTES:
            await _authorize(request, route)
        return await handler(request), "", ""
    except ApiError as error:
        response = error_response(error.status, error.code, error.message)
        if isinstance(error, Unauthenticated):
            response.headers["WWW-Authenticate"] = error.challenge
        return response, error.code, error.message
    except BalanceUnavailable as error:
        message = f"Redis is unavailable: {error}"
        return error_response(Unavailable.status, Unavailable.code, message), Unavailable.code, message
    except web.HTTPException as error:  # aiohttp's own: unknown path 404, method 405, body too large 413
        message = error.text or error.reason
        response = error_response(error.status, "http", message)
        if "Allow" in error.headers:
            response.headers["Allow"] = error.headers["Allow"]
        return response, "http", message
    except BalanceScriptError as error:  # the engine refused to write: a bug or bad data, not input
        log.error("api_engine_error", path=request.path, error=str(error))
        return error_response(500, "engine", str(error)), "engine", str(error)
    except Exception:
        log.exception("api_failed", path=request.path)
        return error_response(500, "internal", "internal error; see the server log"), "internal", "internal error"


async def _authorize(request: web.Request, route: str) -> None:
    """401 without a usable token; 403 when its role may not make this call (ocs.api.access)."""
    context = request.app[CONTEXT]
    actor = await authenticate(
        context.database,
        request.headers.get("Authorization"),
        care_adjust_limit_micros=context.state.settings.auth.care_adjust_limit_micros,
    )
    request[ACTOR] = actor
    if route != "unmatched":  # an unknown path or method is aiohttp's 404 or 405, for a known caller
        authorize(actor, request.method, route, request.match_info.get("account_id"))


async def _record(request: web.Request, actor: Actor, route: str, status: int, code: str, message: str) -> None:
    """The call's audit record: what its handler said it changed, or the refusal."""
    change = request.get(CHANGE)
    if not isinstance(change, Change):
        change = Change(request.match_info.get("account_id"), None, None, code or "applied", message)
    token = actor.token
    entry = AuditEntry(
        occurred_at=datetime.now(UTC),
        token_id=token.token_id,
        actor_name=token.name,
        actor_role=token.role.value,
        method=request.method,
        route=route,
        resource_id=change.resource_id,
        status=status,
        outcome=change.outcome,
        before=change.before,
        after=change.after,
        detail=change.detail,
    )
    await request.app[CONTEXT].audit_trail.write(entry)


# -- handlers -----------------------------------------------------------------------------------


async def _health(request: web.Request) -> web.Response:
    store = request.app[CONTEXT].state.store
    assert store is not None
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await store.admin.execute("PING")
            if store.caller is not store.admin:  # the charging path has its own connection
                await store.caller.execute("PING")
    except (BalanceUnavailable, BalanceScriptError) as error:
        return web.json_response({"status": "unavailable", "redis": str(error)}, status=503)
    except TimeoutError:
        return web.json_response({"status": "unavailable", "redis": "no answer in time"}, status=503)
    worker = getattr(request.app[CONTEXT].state, "worker", None)
    if worker is None:
        return web.json_response({"status": "ok", "redis": "ok"})
    health = worker.health()  # the whole server: its workers alive against those started
    workers = health["workers"]
    whole = isinstance(workers, dict) and workers["alive"] >= workers["expected"]
    return web.json_response({"status": "ok" if whole else "degraded", "redis": "ok", **health})


async def _audit(request: web.Request) -> web.Response:
    """RULES.md's invariants over every account (balance.audit), with the usage records counted
    from the spool after a final drain. ``?sessions_ended=true`` also demands that nothing is
    held any more (the end of a load run). 200 with ``ok`` true or false and the findings."""
    state = request.app[CONTEXT].state
    store = state.store
    assert store is not None
    sessions_ended = request.query.get("sessions_ended", "false").lower() in ("1", "true", "yes")
    usage: dict[str, int] | None = None
    if state.spool is not None:
        async with state.spool_drain():  # with workers: no other drain moves records meanwhile
            await state.spool.drain_once(store, batch_size=state.settings.spool.batch_size)
            usage = await state.spool.totals_by_account()
            for record in await store.usage_records():  # anything that arrived after the drain
                usage[record.account_id] = usage.get(record.account_id, 0) + record.micros
    report = await audit(store, now_seconds=int(time.time()), usage_micros=usage, sessions_ended=sessions_ended)
    findings, warnings = (
        [{"account": f.account_id, "rule": f.rule, "detail": f.detail} for f in found]
        for found in (report.findings, report.warnings)
    )
    spooled = await state.spool.count() if state.spool is not None else 0
    answer = {"ok": report.ok, "accounts": report.accounts, "spool_records": spooled, "findings": findings}
    return web.json_response({**answer, "warnings": warnings})


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[CONTEXT].metrics.exposition(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type})


def _customer_handler(route: Route, customers: Customers) -> Handler:
    """A customer route (``ocs.api.customers``): its body read as every body is, its change audited."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await json_value(request) if route.body is not None else None
        answer = await route.call(customers, request.match_info, request.query, body, actor_of(request).token.name)
        if is_change(request.method, route.path):
            record_change(request, Change(answer.resource_id, None, answer.after, detail=answer.detail))
        headers = {"Location": answer.location} if answer.location else None
        return web.json_response(answer.body, status=answer.status, headers=headers)

    return handle


_OPEN_OPERATIONS: dict[str, dict[str, object]] = {
    "/health": {
        "get": {
            "summary": "Whether Redis answers",
            "security": [],
            "responses": {"200": {"description": "ok"}, "503": {"description": "Redis unavailable"}},
        }
    },
    "/openapi.json": {
        "get": {"summary": "This document", "security": [], "responses": {"200": {"description": "OpenAPI 3.1"}}}
    },
}


def _last_usage(state: ServerState) -> Callable[[], Awaitable[dict[str, int]]]:
    """The newest usage record per line, from the server's spool (none when it keeps no spool)."""

    async def read() -> dict[str, int]:
        return await state.spool.last_usage_by_account() if state.spool is not None else {}

    return read


S = TypeVar("S")  # a door's services


def _service_handler(route: ServiceRoute[S, Any], services: S) -> Handler:
    """A route of a door built on one service (``ocs.api.service_routes``: interactions, billing,
    dunning): a JSON body, or a CSV file's text; the author is the token's name."""

    async def handle(request: web.Request) -> web.StreamResponse:
        if route.csv_body:
            body: object = await asyncio.to_thread(decode_csv, await read_body(request))
        else:
            body = await json_value(request) if route.body is not None else None
        answer = await route.call(services, request.match_info, request.query, body, actor_of(request).token.name)
        if is_change(request.method, route.path):
            record_change(request, Change(answer.resource_id, None, answer.after, detail=answer.detail))
        headers = {"Location": answer.location} if answer.location else None
        return web.json_response(answer.body, status=answer.status, headers=headers)

    return handle


def _add_activation(
    app: web.Application, database: AsyncEngine, provisioning: Provisioning, rules: CreditRules
) -> None:
    """Applications and product orders (ocs.api.orders)."""
    lines = EngineLines(provisioning)
    app[ORDERS] = Orders(database, app[CUSTOMERS], lines, rules)
    app[LIFECYCLE] = Lifecycle(database, lines)
    applications = Applications(database, app[CUSTOMERS], RuleTable(rules))
    for route in (*order_routes(applications, app[ORDERS]), *lifecycle_routes(app[LIFECYCLE])):
        expect = expect_continue if route.body is not None else None
        app.router.add_route(route.method, route.path, _customer_handler(route, app[CUSTOMERS]), expect_handler=expect)


async def _openapi(request: web.Request) -> web.Response:
    """The OpenAPI document, generated from the customer routes' pydantic models."""
    shapes = (*order_shapes(), *lifecycle_shapes())
    document = extend_document(openapi_document(_OPEN_OPERATIONS, shapes))
    return web.json_response(with_loyalty_routes(with_score_routes(with_dunning_routes(with_billing_routes(document)))))


def _scoring(state: ServerState) -> Scoring:
    """The server's customer scoring (``ServerState.scoring``, built at startup with its duty and its
    account-event subscription), else one of this HTTP side's own."""
    found = getattr(state, "scoring", None)
    if isinstance(found, Scoring):
        return found
    assert state.database is not None
    scoring = state.settings.scoring
    return Scoring(state.database, load_scoring_rules(scoring.rules), run_hour=scoring.run_hour)


def _loyalty_reports(state: ServerState) -> LoyaltyReports:
    """The loyalty programmes' reports: on the engine's rules and member cache when loyalty runs,
    else on the configured rules file (programmes and history can be read with the engine off)."""
    assert state.database is not None
    engine = getattr(state, "loyalty", None)
    if engine is not None:
        return LoyaltyReports(state.database, engine.rules, state.store, engine.members)
    return LoyaltyReports(state.database, load_loyalty_rules(state.settings.loyalty.rules), state.store)


def _add_billing(
    app: web.Application, state: ServerState, dunning: Dunning, bill_runs: BillRuns, scoring: Scoring
) -> None:
    """Bills, payments, the bill run and the ledger (ocs.api.billing), dunning (ocs.api.dunning: a payment lifts
    what dunning applied before it is answered, then rescores the customer: ocs.loyalty.scoring); the author of a
    change is the token's name. Bill documents come from the server's delivery consumer's store (one per process
    otherwise)."""
    database = state.database
    assert database is not None
    documents = getattr(state, "documents", None) or bill_documents(state.settings, database, DocumentRenderer())
    loyalty = getattr(state, "loyalty", None)
    listeners = (dunning.on_payment, scoring.on_payment) + ((loyalty.on_payment,) if loyalty is not None else ())
    payments = Payments(database, on_payment=listeners)
    services = BillingServices(
        Invoices(database), payments, Corrections(database), Receivables(database), documents, bill_runs
    )
    for route in BILLING_ROUTES:
        expect = expect_continue if route.body is not None or route.csv_body else None
        app.router.add_route(route.method, route.path, _service_handler(route, services), expect_handler=expect)
    app.router.add_get(DOCUMENT_PATH, _document_handler(services))
    for step in DUNNING_ROUTES:
        expect = expect_continue if step.body is not None else None
        app.router.add_route(step.method, step.path, _service_handler(step, dunning), expect_handler=expect)


def _document_handler(services: BillingServices) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        document = await bill_document(services, request.match_info, request.query)
        headers = {
            "Content-Type": document.content_type,
            "Content-Disposition": f'inline; filename="{document.file_name}"',
            # The document shows customer data: no script, no fetch, nothing but its own styles.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        }
        return web.Response(body=document.content, headers=headers)

    return handle


async def _audit_trail(request: web.Request) -> web.Response:
    """The audit trail, oldest first, filtered by ``since``/``until`` (ISO 8601 or epoch seconds),
    ``account`` and ``actor`` (a token's name or id), at most ``limit`` records."""
    fields = Fields(dict(request.query), "query")
    since = parse_instant(fields.values["since"], "since") if fields.has("since") else None
    until = parse_instant(fields.values["until"], "until") if fields.has("until") else None
    account = fields.text("account", "") or None
    actor = fields.text("actor", "") or None
    limit = fields.integer("limit", audit_records.MAX_READ_ROWS, minimum=1, maximum=audit_records.MAX_READ_ROWS)
    fields.done()
    records = await audit_records.read(
        request.app[CONTEXT].database, since=since, until=until, account_id=account, actor=actor, limit=limit
    )
    return web.json_response({"records": [record.as_json() for record in records]})
