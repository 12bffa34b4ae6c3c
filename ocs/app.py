"""The OCS process: ``serve()`` -> ``startup()`` -> run until a signal -> ``shutdown()``.

Theory of operation: ``startup`` brings the parts up in dependency order: Redis (the embedded
redis-server in the data directory when no URL is configured: the directory is locked, an orphan of
a killed server stopped, the newest redis-server binary chosen), the balance store and subscriber
directory, the tariff book, the credit-control handler, the Diameter server, and the background
tasks (Tcc session supervision, the spool writer, the spool's retention, ``ocs.redis_watch``'s
restarts of the embedded Redis, and with the HTTP side the daily dunning run). The loops log one
line when Redis becomes unavailable and one when it is back (``Outage``), never a traceback per
pass. A startup that cannot have its Redis (the data
directory held by another server, a redis-server that will not start) ends the process with one
line and exit status 1. Each CCR's answer runs without a task of its own (``ocs.in_flight``:
from the Diameter reader's call up to the charge, and on from the reply that completes it); the
number in progress over all connections is bounded, and a CCR beyond the bound is answered
3004 at once (RFC 4006 section 5.7: the client fails over) instead of queueing. ``shutdown``
reverses it: stop accepting, DPR to every peer and let in-flight requests finish (bounded by
the shutdown timeout), stop the tasks, close Redis. All
of it is held in one ``ServerState``. The business database (``ocs.db``: API tokens, the audit
trail) is opened and migrated before the HTTP side starts, and audit records a past outage kept
in the fallback file are put back into it (``ocs.api.audit_trail``).

Duties: the jobs that must run once for the whole server (the rescan, Tcc supervision, the spool
writer and its retention; later schedulers register theirs the same way) are registered by name
in ``ServerState.duties`` (``ocs.leases.Duties``): one process runs them directly, as always; a
worker of ``ocs serve --workers N`` runs each only while it holds the duty's lease in Redis
(ocs/worker.py, ocs/supervisor.py), and every drain of the outboxes holds ``spool_drain``.

Account events: ``ServerState.events`` is the one seam (``ocs.events.AccountEvents``) on which the
operator's side publishes what it changed about an account; the session notifier subscribes to
it at startup. The answers to the notifier's RAR and ASR reach it from the Diameter event handler.

Loyalty (``[loyalty] enabled``): the engine is the spool writer's hook (each batch's new records
are evaluated in the batch's transaction and credited after its commit) and a listener of payments;
the duty ``loyalty_credit`` credits what a crash left pending; the duty ``loyalty_feed``
(``ocs.loyalty.daily_feed``) feeds the day's birthdays and anniversaries and the payments whose
event a crash lost; ``ocs.loyalty.account_feed`` turns the account events' top-ups and status
changes into loyalty events.

Customer scores (``ocs.loyalty.scoring``): built at startup, subscribed to the account events (a
status change rescores its customer), the ``scoring`` duty scoring everyone once a day from
``[scoring] run_hour``; the HTTP side's payments rescore the paying customer.

Bill documents: one more background task, the delivery outbox's consumer (``_deliver_documents``,
ocs/billing/delivery.py), renders issued invoices to HTML and PDF in the data directory; it runs
once per server, like the spool writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from ipaddress import ip_network
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.directory import Directory
from balance.embedded import EmbeddedRedis
from balance.errors import BalanceScriptError, BalanceUnavailable
from balance.scripts import LIBRARY_PREFIX
from balance.store import BalanceStore
from ocs.api.audit_trail import FALLBACK_FILE_NAME, AuditTrail
from ocs.api.server import HttpServer, start_http
from ocs.billing.bill_runs import BillRuns
from ocs.billing.delivery import DEFAULT_BATCH, BillDocuments, bill_documents
from ocs.billing.documents import DocumentFormat, DocumentRenderer
from ocs.billing.dunning import Dunning
from ocs.billing.spool import Spool
from ocs.billing.spool_upgrade import import_old_spool
from ocs.charging.cca import error_answer
from ocs.charging.credit_control import CreditControl
from ocs.charging.notifier import SessionNotifier
from ocs.charging.subscribers import SubscriberCache
from ocs.config import DiameterSettings, Settings
from ocs.customers.line_status import LineStatusMirror
from ocs.db.engine import DatabaseUnavailable, database_url, open_database
from ocs.events import AccountEvents
from ocs.in_flight import InFlight
from ocs.leases import Duties
from ocs.logs import bind_request, configure_logging
from ocs.loyalty.account_feed import AccountFeed
from ocs.loyalty.daily_feed import DailyFeed
from ocs.loyalty.engine import LoyaltyEngine
from ocs.loyalty.rules_load import load_loyalty_rules
from ocs.loyalty.scoring import Scoring
from ocs.loyalty.scoring_load import load_scoring_rules
from ocs.metrics import Metrics, time_redis_calls
from ocs.rating.book import TariffBook
from ocs.rating.rate import load_book
from ocs.redis_watch import Outage, RedisSupervisor
from ocs.worker import WorkerRole, WorkerServices, new_cache, prepare_worker, start_worker, stop_worker
from protocol.aio import DiameterServer, DiameterTransport
from protocol.aio.tls import server_context
from protocol.capabilities import IpNetwork, LocalIdentity, PeerPolicy
from protocol.constants import CommandCode, ResultCode
from protocol.encoded import EncodedAnswer
from protocol.events import AnswerReceived, DuplicateAnswered, Event, PeerClosed, PeerOpened, RequestRejected
from protocol.message import Message

log = structlog.get_logger("ocs")

EXIT_STARTUP_FAILED = 1  # the process's status when startup cannot have its Redis
DUNNING_LOOK_SECONDS = 300.0  # how often the daily dunning task looks whether the day changed


@dataclass(slots=True)
class ServerState:
    settings: Settings
    identity: LocalIdentity
    redis: EmbeddedRedis | None = None
    store: BalanceStore | None = None
    directory: Directory | None = None
    credit_control: CreditControl | None = None
    notifier: SessionNotifier | None = None
    book: TariffBook | None = None
    metrics: Metrics = field(default_factory=Metrics)
    events: AccountEvents = field(default_factory=AccountEvents)
    spool: Spool | None = None
    database: AsyncEngine | None = None
    line_status: LineStatusMirror | None = None  # lines' status changes into the database
    documents: BillDocuments | None = None  # bill documents: the delivery consumer and the API's downloads
    audit_trail: AuditTrail | None = None
    bill_runs: BillRuns | None = None  # the bill run's doors: API, CLI, the daily duty (ocs/billing/bill_runs.py)
    dunning: Dunning | None = None  # built with the HTTP side's lifecycle (ocs.api.server)
    loyalty: LoyaltyEngine | None = None  # with [loyalty] enabled: the spool's hook, payments' listener
    loyalty_accounts: AccountFeed | None = None  # with loyalty: top-ups and status changes as its events
    scoring: Scoring | None = None  # customer scores: the API, the rescore on events, the daily duty
    http: HttpServer | None = None
    diameter: DiameterServer | None = None
    diameter_address: tuple[str, int] | None = None
    in_flight: InFlight = field(default_factory=InFlight)  # the CCRs being answered
    background: list[asyncio.Task[None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Jobs that must run once for the whole server (ocs/leases.py): registered at startup, run
    # directly in a single process, under leases in Redis with workers (ocs/worker.py).
    duties: Duties = field(default_factory=Duties)
    worker: WorkerServices | None = None  # set when this process is one of ``--workers N``

    def spool_drain(self) -> AbstractAsyncContextManager[None]:
        """Held around every drain of the outboxes: with workers, one drain at a time over all."""
        return self.worker.spool_drain() if self.worker is not None else contextlib.nullcontext()


_REQUEST_TYPES = ("", "INITIAL", "UPDATE", "TERMINATION", "EVENT")  # CC-Request-Type, RFC 4006 section 8.3


def _request_type(message: Message) -> str:
    value = message.get("CC-Request-Type")
    return _REQUEST_TYPES[value] if isinstance(value, int) and 0 < value < len(_REQUEST_TYPES) else "OTHER"


def _respond(state: ServerState, transport: DiameterTransport, message: Message) -> None:
    """The Diameter server's request handler: start the answer, or refuse at once when full."""
    handler = state.credit_control
    if handler is None or len(state.in_flight) >= state.settings.diameter.max_in_flight:
        state.metrics.request_shed("CCR", _request_type(message))
        transport.send_answer(error_answer(message, state.identity, ResultCode.DIAMETER_TOO_BUSY))
        return
    state.in_flight.start(_answer(state, handler, transport, message))  # no task of its own: ocs/in_flight.py


async def _answer(state: ServerState, handler: CreditControl, transport: DiameterTransport, message: Message) -> None:
    started = time.perf_counter()
    bind_request(message)  # this request's own context (ocs/in_flight.py): its log lines name it
    try:
        answer = await handler.respond(message)
    except Exception:  # a bug must not leave the client waiting for its Tx timer
        log.exception("credit_control_failed")
        answer = error_answer(message, handler.identity, ResultCode.DIAMETER_UNABLE_TO_COMPLY)
    transport.send_answer(answer)
    result = answer.result_code if isinstance(answer, EncodedAnswer) else answer.get("Result-Code")
    state.metrics.request_finished(
        "CCR", _request_type(message), result if isinstance(result, int) else 0, time.perf_counter() - started
    )


# The command label of requests the Diameter layer refused itself: a bounded set, whatever
# command code a peer sends (RFC 6733 section 3.1 and RFC 4006 section 3 for the codes).
_COMMAND_LABELS: dict[int, str] = {
    CommandCode.CREDIT_CONTROL: "CCR",
    CommandCode.CAPABILITIES_EXCHANGE: "CER",
    CommandCode.DEVICE_WATCHDOG: "DWR",
    CommandCode.DISCONNECT_PEER: "DPR",
}


def _on_event(state: ServerState, transport: DiameterTransport, event: Event) -> None:
    """Every Diameter event but a valid request: logged, and counted where it answers a request."""
    if isinstance(event, PeerOpened):
        log.info("peer_open", peer=event.capabilities.origin_host, address=str(transport.peername))
    elif isinstance(event, AnswerReceived):
        if state.notifier is None or not state.notifier.answered(event.message, event.context):
            log.info("answer_unexpected", command_code=event.message.command_code)
    elif isinstance(event, PeerClosed):
        log.info("peer_closed", reason=event.reason, address=str(transport.peername))
        if state.notifier is not None:
            state.notifier.unanswered(event.unanswered)
    elif isinstance(event, RequestRejected):
        result_code = int(event.failure.result_code)
        log.info("request_rejected", result_code=result_code, reason=event.failure.reason)
        message = event.message
        command = "OTHER" if message is None else _COMMAND_LABELS.get(message.command_code, "OTHER")
        request_type = "" if message is None else _request_type(message)
        if result_code == ResultCode.DIAMETER_TOO_BUSY:  # the per-connection in-flight limit
            state.metrics.request_shed(command, request_type)
        else:
            state.metrics.request_refused(command, request_type, result_code)
    elif isinstance(event, DuplicateAnswered):
        state.metrics.duplicate_replayed()


async def _rescan_work(state: ServerState) -> None:
    """Once, beside the traffic: restore the supervision and spool marks a crash between a
    charge and its marks may have lost (a scan of every hierarchy: not worth delaying startup),
    and delete the function libraries of earlier versions (``BalanceStore.prune_libraries``)."""
    assert state.store is not None
    try:
        watched, undelivered = await state.store.rescan_work()
        log.info("work_rescanned", hierarchies_with_sessions=watched, hierarchies_with_records=undelivered)
    except Exception:
        log.exception("rescan_failed")
    try:
        pruned = await state.store.prune_libraries()
        if pruned:
            log.info("function_libraries_deleted", libraries=pruned)
    except Exception:
        log.exception("library_prune_failed")


async def _supervise_sessions(state: ServerState) -> None:
    """Tcc (RFC 4006 section 13): release what silent sessions hold, then close them; first,
    when charges applied while their work-list marks failed, find that work again."""
    assert state.store is not None
    interval = state.settings.quota.supervision_interval_seconds
    outage = Outage("session_supervision")
    while True:
        try:
            if state.store.marks_lost:  # balance/store.py: a charge applied, its marks did not
                watched, undelivered = await state.store.rescan_work()
                log.info("work_rescanned", hierarchies_with_sessions=watched, hierarchies_with_records=undelivered)
            closed = [session_id for _, session_id in await state.store.expire_due(int(time.time()))]
            if state.notifier is not None:
                state.notifier.forget_sessions(closed)
            if closed and state.worker is not None:  # the worker carrying one may be another
                state.worker.transport.send_closed_sessions(closed)
            if closed:
                state.metrics.sessions_expired_by_tcc(len(closed))
                log.info("sessions_expired", count=len(closed))
        except BalanceUnavailable as error:
            outage.failed(error)
        except Exception:
            log.exception("supervision_failed")
        else:
            outage.succeeded()
        await asyncio.sleep(interval)


async def _write_spool(state: ServerState) -> None:
    """One writer moves usage records from the outboxes to SQLite, acknowledging after commit."""
    assert state.store is not None and state.spool is not None
    settings = state.settings.spool
    outage = Outage("spool_writer")
    while True:
        try:
            async with state.spool_drain():
                stored = await state.spool.drain_once(state.store, batch_size=settings.batch_size)
            stats = state.spool.stats()
            state.metrics.spool_progress(stored, stats.backlog_records, stats.lag_seconds)
        except BalanceUnavailable as error:  # the records wait in the outboxes
            outage.failed(error)
        except Exception:
            log.exception("spool_failed")
        else:
            outage.succeeded()
        await asyncio.sleep(settings.interval_seconds)


async def _credit_loyalty(state: ServerState, interval_seconds: float) -> None:
    """Credit the loyalty applications a crash or an outage left pending (ocs/loyalty/engine.py)."""
    assert state.loyalty is not None
    await state.loyalty.run(interval_seconds)


async def _retain_spool(state: ServerState) -> None:
    """Delete exported usage records past their retention age (ocs/billing/spool.py "Retention")."""
    assert state.spool is not None
    settings = state.settings.spool
    while True:
        await asyncio.sleep(settings.retention_interval_seconds)
        try:
            deleted = await state.spool.delete_exported(
                older_than_seconds=settings.retention_seconds, batch_size=settings.retention_batch_size
            )
            if deleted:
                log.info("spool_records_deleted", count=deleted)
        except Exception:
            log.exception("spool_retention_failed")


async def _deliver_documents(state: ServerState) -> None:
    """The delivery outbox's consumer (ocs/billing/delivery.py): issued invoices rendered to HTML
    and PDF in the data directory, handed on as ``invoice_ready``. A full batch is followed at
    once by the next; a failing bill is logged once per error and tried again each pass."""
    assert state.documents is not None
    interval = state.settings.billing.documents_interval_seconds
    reported: set[tuple[str, str]] = set()
    pdf_reason_logged = False
    while True:
        full = False
        try:
            done = await state.documents.deliver_once()
        except Exception:
            log.exception("bill_documents_failed")
        else:
            full = done.events >= DEFAULT_BATCH
            without_pdf = done.documents[DocumentFormat.HTML] - done.documents[DocumentFormat.PDF]
            state.metrics.documents_delivered(
                done.documents[DocumentFormat.HTML], done.documents[DocumentFormat.PDF], len(done.failures), without_pdf
            )
            for failure in done.failures:
                if failure not in reported:
                    reported.add(failure)
                    log.warning("bill_document_failed", invoice_id=failure[0], error=failure[1])
            if done.pdf_unavailable is not None and not pdf_reason_logged:
                pdf_reason_logged = True
                log.warning("bill_pdf_unavailable", reason=done.pdf_unavailable, delivered="html only")
        if not full:
            await asyncio.sleep(interval)


async def run_dunning_daily(state: ServerState) -> None:
    """The dunning run for today (UTC) at startup and after every midnight; it first finishes
    steps a crash left (ocs/billing/dunning.py). A plain loop a worker's lease can hold."""
    done: date | None = None
    while True:
        today = datetime.now(UTC).date()
        if state.dunning is not None and today != done:
            try:
                await state.dunning.run(today)
                done = today
            except Exception:  # the database or Redis away: tried again at the next look
                log.exception("dunning_run_failed")
        await asyncio.sleep(DUNNING_LOOK_SECONDS)


async def _redis_url(state: ServerState) -> str:
    settings = state.settings.redis
    if settings.url:
        return settings.url
    directory = Path(settings.data_directory)
    directory.mkdir(parents=True, exist_ok=True)
    redis = EmbeddedRedis(directory, port=0)
    await asyncio.to_thread(redis.start)
    state.redis = redis  # only once started: shutdown must not stop a server it does not own
    if redis.orphan_stopped is not None:
        log.warning("embedded_redis_orphan_stopped", pid=redis.orphan_stopped, directory=str(directory))
    log.info(
        "embedded_redis",
        url=redis.url,
        directory=str(directory),
        pid=redis.pid,
        binary=str(redis.executable),
        version=redis.server_version,
    )
    return redis.url


async def _log_engine_form(state: ServerState) -> None:
    """Say which form of the money engine runs: the function library (FCALL, Redis >= 7.0) or
    the EVAL scripts, which cost Redis about a quarter more per charge (balance/scripts.py). The
    test is the callers' own: Redis answering FUNCTION with an error means no functions."""
    assert state.store is not None
    if not state.settings.redis.functions:
        log.info("money_engine", form="EVAL scripts", reason="functions = false in [redis]")
        return
    try:
        await state.store.admin.execute("FUNCTION", "LIST", "LIBRARYNAME", f"{LIBRARY_PREFIX}*")
    except BalanceScriptError as error:
        log.warning("money_engine", form="EVAL scripts", reason=f"this Redis has no functions: {error}")
    except BalanceUnavailable as error:
        log.warning("money_engine", form="unknown", reason=str(error))
    else:
        log.info("money_engine", form="function library")


def _peer_policy(diameter: DiameterSettings) -> PeerPolicy:
    """Who may connect: hosts, realms, source networks, and networks bound to an Origin-Host
    ("host=network" entries, validated by ocs.config)."""
    bound: dict[str, tuple[IpNetwork, ...]] = {}
    for entry in diameter.peer_addresses:
        host, _, network = (part.strip() for part in entry.partition("="))
        bound[host.lower()] = (*bound.get(host.lower(), ()), ip_network(network, strict=False))
    return PeerPolicy(
        allowed_hosts=frozenset(diameter.allowed_hosts),
        allowed_realms=frozenset(diameter.allowed_realms),
        allowed_networks=tuple(ip_network(address, strict=False) for address in diameter.allowed_addresses),
        host_networks=bound,
    )


async def startup(state: ServerState) -> tuple[str, int]:
    settings = state.settings
    url = await _redis_url(state)
    state.store = await BalanceStore.connect(
        url,
        cluster=settings.redis.cluster,
        pipelined=settings.redis.pipelined,
        functions=settings.redis.functions,
        tombstone_seconds=settings.quota.tombstone_seconds,
    )
    time_redis_calls(state.store, state.metrics)
    await _log_engine_form(state)
    # Provisioning writes through redis-py; the CCR path's lookups share the charging connection.
    state.directory = Directory(state.store.admin, reader=state.store.caller)
    state.book = load_book(Path(settings.tariffs.path))
    state.notifier = SessionNotifier(
        state.identity, lambda: state.diameter.connections if state.diameter else (), state.metrics
    )
    state.events.subscribe(state.notifier.on_account_event)
    state.credit_control = CreditControl(
        settings,
        state.store,
        SubscriberCache(state.directory) if state.worker is None else new_cache(state, state.worker.transport),
        state.book,
        state.identity,
        observer=state.notifier.observe,
        metrics=state.metrics,
    )
    diameter = settings.diameter
    tls = (
        server_context(diameter.tls_certificate, diameter.tls_private_key, diameter.tls_ca_file)
        if diameter.tls_certificate
        else None
    )
    state.diameter = DiameterServer(
        state.identity,
        lambda transport, message: _respond(state, transport, message),
        policy=_peer_policy(diameter),
        on_event=lambda transport, event: _on_event(state, transport, event),
        tw_seconds=diameter.watchdog_seconds,
        tls_context=tls,
        require_tls=diameter.require_tls,
        reuse_port=state.worker is not None,  # workers share the ports (ocs/supervisor.py)
    )
    if diameter.clear_port_enabled:
        state.diameter_address = await state.diameter.start(diameter.host, diameter.port)
    if tls is not None:
        tls_address = await state.diameter.listen_tls(diameter.host, diameter.tls_port)
        state.diameter_address = state.diameter_address or tls_address
        log.info("listening_tls", host=tls_address[0], port=tls_address[1], require_tls=diameter.require_tls)
    spool_path = Path(settings.spool.path)
    spool_path.parent.mkdir(parents=True, exist_ok=True)
    state.database = await open_database(database_url(settings))
    await import_old_spool(state.database, spool_path)  # a file an older server wrote, copied in once
    if settings.loyalty.enabled:
        rules = load_loyalty_rules(settings.loyalty.rules)
        state.loyalty = LoyaltyEngine(state.database, rules, state.store, state.events)
        await state.loyalty.preload_members()
        # Applications a crash left pending are credited at startup, then every interval.
        interval = settings.loyalty.credit_interval_seconds
        state.duties.register("loyalty_credit", lambda: _credit_loyalty(state, interval))
        feed = DailyFeed(state.database, state.loyalty, occasions_hour=settings.loyalty.occasions_hour)
        state.duties.register("loyalty_feed", feed.run)  # birthdays, anniversaries, lost payments
        # Every process hears every account event; the one crediting feeds them (ocs/loyalty/account_feed.py).
        state.loyalty_accounts = AccountFeed(state.loyalty, active=lambda: "loyalty_credit" in state.duties.held)
        state.events.subscribe(state.loyalty_accounts.on_account_event)
    state.spool = Spool(state.database, on_stored=state.loyalty.usage_stored if state.loyalty is not None else None)
    state.line_status = LineStatusMirror(state.database, clock=time.time)
    state.events.subscribe(state.line_status.on_account_event)  # review 13 L5
    state.audit_trail = AuditTrail(state.database, spool_path.parent / FALLBACK_FILE_NAME, state.metrics.registry)
    await state.audit_trail.recover()
    state.duties.register("rescan", lambda: _rescan_work(state))
    state.duties.register("session_supervision", lambda: _supervise_sessions(state))
    state.duties.register("spool_writer", lambda: _write_spool(state))
    state.duties.register("spool_retention", lambda: _retain_spool(state))
    bill_runs = state.bill_runs = BillRuns.configured(state.database, state.store, state.book, settings.billing)
    await bill_runs.startup_pass()  # cuts a run committed but did not apply before a crash
    state.duties.register("bill_run", bill_runs.daily)
    if state.redis is not None:
        state.background.append(asyncio.create_task(RedisSupervisor(state.redis).run()))
    state.documents = bill_documents(settings, state.database, DocumentRenderer())
    state.duties.register("bill_documents", lambda: _deliver_documents(state))
    # Dunning is built with the HTTP side's lifecycle (ocs.api.server); the loop waits for it.
    state.duties.register("dunning", lambda: run_dunning_daily(state))
    scoring = state.scoring = Scoring(
        state.database, load_scoring_rules(settings.scoring.rules), run_hour=settings.scoring.run_hour
    )
    state.events.subscribe(scoring.on_account_event)  # a status change rescores its customer at once
    state.duties.register("scoring", scoring.daily)
    if state.worker is None:
        state.background += state.duties.run_directly()
    else:
        await start_worker(state, state.worker)
    if settings.http.enabled:
        state.http = await start_http(state)
    assert state.diameter_address is not None  # ocs.config: clear port or TLS, at least one
    log.info("listening", host=state.diameter_address[0], port=state.diameter_address[1])
    return state.diameter_address


async def _bounded(name: str, step: Coroutine[object, object, object], timeout: float) -> None:
    """Run one shutdown step for at most ``timeout`` seconds: a stuck step (a peer that never
    answers, a task that ignores cancellation) is logged and left behind, never waited for."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        log.warning("shutdown_step_timed_out", step=name, seconds=timeout)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("shutdown_step_failed", step=name, error=str(task.exception()))


async def _stop_background(state: ServerState) -> None:
    for task in state.background:
        task.cancel()
    if state.background:
        await asyncio.wait(state.background)


async def _close_spool(state: ServerState) -> None:
    assert state.spool is not None
    if state.store is not None:
        with contextlib.suppress(Exception):  # Redis may be gone; the records wait in the outbox
            async with state.spool_drain():
                await state.spool.drain_once(state.store, batch_size=state.settings.spool.batch_size)
    await state.spool.close()
    if state.loyalty is not None:
        await state.loyalty.settle()  # the last batches' credits (what fails stays pending)


async def shutdown(state: ServerState) -> None:
    """Stop accepting, DPR to the peers, let requests in flight finish, drain the outbox into the
    spool, close Redis; each step bounded by the shutdown timeout."""
    timeout = state.settings.shutdown_timeout_seconds
    if state.http is not None:
        await _bounded("http", state.http.close(), timeout)
    if state.diameter is not None:
        await _bounded("diameter", state.diameter.close(timeout), timeout + 1)
    await state.in_flight.wait(timeout)
    if state.worker is not None:  # its duties stopped and their leases released
        await _bounded("worker", stop_worker(state, state.worker), timeout)
    await _bounded("background", _stop_background(state), timeout)
    if state.spool is not None:
        await _bounded("spool", _close_spool(state), timeout)
    if state.line_status is not None:
        await _bounded("line status", state.line_status.drain(), timeout)
    if state.loyalty_accounts is not None:  # the top-ups and status changes noted before the stop
        await _bounded("loyalty events", state.loyalty_accounts.drain(), timeout)
    if state.scoring is not None:  # the rescores of status changes noted before the stop
        await _bounded("scoring", state.scoring.drain(), timeout)
    if state.database is not None:
        await _bounded("database", state.database.dispose(), timeout)
    if state.store is not None:
        await _bounded("store", state.store.close(), timeout)
    if state.redis is not None:
        await _bounded("redis", asyncio.to_thread(state.redis.stop), timeout * 2)
    log.info("stopped")


def new_state(settings: Settings, origin_state_id: int | None = None) -> ServerState:
    """``origin_state_id``: the supervisor's, for a worker; else this start's clock seconds."""
    identity = LocalIdentity(
        settings.diameter.origin_host,
        settings.diameter.origin_realm,
        origin_state_id=int(time.time()) if origin_state_id is None else origin_state_id,
    )
    return ServerState(settings, identity)


async def serve(settings: Settings, role: WorkerRole | None = None) -> None:
    """The server in this process: alone, or as worker ``role`` of ``ocs serve --workers N``."""
    configure_logging()
    state = new_state(settings, None if role is None else role.origin_state_id)
    if role is not None:
        state.worker = prepare_worker(state, role)
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signal_number, state.stop.set)
    try:
        try:
            await startup(state)
        except (BalanceUnavailable, DatabaseUnavailable) as error:  # DataDirectoryLocked among them: one line
            log.error("startup_failed", reason=str(error))
            raise SystemExit(EXIT_STARTUP_FAILED) from None
        await state.stop.wait()
    finally:
        await shutdown(state)
