"""Prometheus metrics of one server process, exposed at ``/metrics`` on the HTTP port.

Theory of operation: a ``Metrics`` object owns a private ``CollectorRegistry`` (tests run
several servers in one process, and the default global registry would mix them) and the
series below. The credit-control path (``request_finished``, ``redis_call``, the money
counters) only adds to plain dictionaries of ints and floats; ``HotPathCollector`` turns them
into Prometheus families when ``/metrics`` is scraped. That keeps a request's bookkeeping to a
few dictionary operations (about 1 us per ``request_finished``, against about 3 us through
prometheus_client's locked metric objects, 8 us when their labels are looked up each time), and
is safe because every call, and the scrape, runs on the event loop's thread: call these methods
from that thread only. The rarer events (HTTP requests, spool batches, Tcc expiries) use
prometheus_client's own metrics. Values that already exist elsewhere (requests in flight,
Diameter peers, open sessions) are not counted twice: ``watch`` registers callables read at
scrape time.

Naming follows the Prometheus conventions (https://prometheus.io/docs/practices/naming/): an
``ocs_`` prefix, base units in the name (seconds), ``_total`` on counters. Money is counted in
micro-units of the account's currency (``_micros_total``), the engine's own integer unit, with
the ISO 4217 code as a label: a float holds these sums exactly up to 2^53 micros. No label ever
names a subscriber, an account or a session (house style: label sets stay small and bounded).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from time import perf_counter

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from balance.callers import PipelinedCaller, Reply, ScriptCaller
from balance.scripts import Script
from balance.store import BalanceStore

# A credit-control answer is expected within milliseconds (DESIGN.md); the clients' Tx timer
# (RFC 4006 section 13, typically a few seconds) bounds the top.
REQUEST_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# One Redis round trip on loopback is tens of microseconds; a script call some hundreds.
REDIS_SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
HTTP_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0)

DIAMETER_TOO_BUSY = "3004"  # RFC 6733 section 7.1.3; the answer of a request shed at the in-flight limit


class _Histograms:
    """Histograms by label values, kept as bucket counts (not yet cumulative) and sums."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts: dict[tuple[str, ...], list[int]] = {}
        self.sums: dict[tuple[str, ...], float] = {}

    def observe(self, key: tuple[str, ...], value: float) -> None:
        counts = self.counts.get(key)
        if counts is None:
            counts = self.counts[key] = [0] * (len(self.bounds) + 1)
            self.sums[key] = 0.0
        counts[bisect_left(self.bounds, value)] += 1  # the first bucket with le >= value
        self.sums[key] += value

    def family(self, name: str, documentation: str, labels: Sequence[str]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=labels)
        edges = [repr(float(bound)) for bound in self.bounds] + ["+Inf"]  # as prometheus_client writes "le"
        for key, counts in self.counts.items():
            family.add_metric(list(key), list(zip(edges, accumulate(counts), strict=True)), self.sums[key])
        return family


def _counter(name: str, documentation: str, labels: Sequence[str], values: dict[tuple[str, ...], float]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


class HotPathCollector:
    """The credit-control path's series, counted in plain dictionaries, exposed when scraped."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, ...], float] = {}  # (command, request type, result code)
        self.request_seconds = _Histograms(REQUEST_SECONDS_BUCKETS)  # (command, request type)
        self.shed: dict[tuple[str, ...], float] = {(): 0}
        self.duplicates: dict[tuple[str, ...], float] = {(): 0}
        self.redis_seconds = _Histograms(REDIS_SECONDS_BUCKETS)  # (operation,)
        self.redis_errors: dict[tuple[str, ...], float] = {}  # (operation,)
        self.reserved: dict[tuple[str, ...], float] = {}  # (currency,)
        self.committed: dict[tuple[str, ...], float] = {}  # (currency,)

    def collect(self) -> Iterator[Metric]:
        yield _counter(
            "ocs_diameter_requests",
            "Credit-control requests answered, by command, CC-Request-Type and Result-Code",
            ("command", "request_type", "result_code"),
            self.requests,
        )
        yield self.request_seconds.family(
            "ocs_diameter_request_duration_seconds",
            "Time from a request's arrival to its answer being sent",
            ("command", "request_type"),
        )
        yield _counter(
            "ocs_diameter_requests_shed",
            "Requests answered 3004 DIAMETER_TOO_BUSY at once because the in-flight limit was reached",
            (),
            self.shed,
        )
        yield _counter(
            "ocs_diameter_duplicate_requests",
            "Retransmitted or duplicated requests answered from the stored result (nothing changed)",
            (),
            self.duplicates,
        )
        yield self.redis_seconds.family(
            "ocs_redis_call_duration_seconds", "Time of one call to Redis (a script or a command)", ("operation",)
        )
        yield _counter(
            "ocs_redis_errors",
            "Redis calls that failed (unreachable, timed out, or an error reply), by operation",
            ("operation",),
            self.redis_errors,
        )
        yield _counter(
            "ocs_money_reserved_micros",
            "Money held by new reservations, in micro-units of the currency",
            ("currency",),
            self.reserved,
        )
        yield _counter(
            "ocs_money_committed_micros",
            "Money committed for used units (debited or billed), in micro-units of the currency",
            ("currency",),
            self.committed,
        )


class Metrics:
    """Every series of one server; the methods are what the server calls when things happen."""

    def __init__(self, *, process_collectors: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # What /metrics answers: this registry, or the whole server's series (ocs/worker.py).
        self.exposed = self.registry
        registry = self.registry
        if process_collectors:  # CPU, memory, file descriptors, GC: read at scrape time only
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.hot = HotPathCollector()
        registry.register(self.hot)
        self.in_flight = Gauge(
            "ocs_diameter_requests_in_flight", "Credit-control requests being answered now", registry=registry
        )
        self.peers = Gauge("ocs_diameter_peers", "Open Diameter peer connections", registry=registry)
        self.open_sessions = Gauge(
            "ocs_sessions_open", "Credit-control sessions this process answered and has not seen end", registry=registry
        )
        self.sessions_expired = Counter(
            "ocs_sessions_expired_total",
            "Sessions closed by Tcc supervision (RFC 4006 section 13) with their reservations returned",
            registry=registry,
        )
        self.credited = Counter(
            "ocs_money_credited_micros_total",
            "Money put into accounts (top_up, adjustment, bucket, refund), in micro-units of the currency",
            ("currency", "operation"),
            registry=registry,
        )
        self.withdrawn = Counter(
            "ocs_money_withdrawn_micros_total",
            "Money taken out of accounts by the operator (negative adjustments), in micro-units",
            ("currency", "operation"),
            registry=registry,
        )
        self.spool_written = Counter(
            "ocs_spool_records_written_total", "Usage records committed to the spool database", registry=registry
        )
        self.spool_backlog = Gauge(
            "ocs_spool_backlog_records", "Usage records waiting in the Redis outboxes", registry=registry
        )
        self.spool_lag = Gauge(
            "ocs_spool_lag_seconds", "Age of the oldest usage record not yet in the spool database", registry=registry
        )
        self.server_requests = Counter(
            "ocs_diameter_server_requests_total",
            "Requests this server sent to clients (RAR, ASR), by the Result-Code of their answer "
            "(a code of no known RFC as 'other', none as 'missing', no answer before the connection closed "
            "as 'unanswered')",
            ("command", "result_code"),
            registry=registry,
        )
        self.http_requests = Counter(
            "ocs_http_requests_total",
            "Provisioning API, /health and /metrics requests, by route template, method and status",
            ("route", "method", "status"),
            registry=registry,
        )
        self.lifecycle_enforcement_seconds = Histogram(
            "ocs_lifecycle_enforcement_seconds",
            "Time from a status change asked through the API to the last RAR or ASR sent for it, "
            "by the status it set (only changes that reached a live session)",
            ("change",),
            buckets=HTTP_SECONDS_BUCKETS,
            registry=registry,
        )
        self.documents_rendered = Counter(
            "ocs_bill_documents_rendered_total",
            "Bill documents rendered and stored in the data directory by the delivery consumer, by format",
            ("format",),
            registry=registry,
        )
        self.document_failures = Counter(
            "ocs_bill_document_failures_total",
            "Bills the delivery consumer could not render or store (reason render: tried again next pass), "
            "and bills delivered without their PDF (reason no_pdf_printer: WeasyPrint cannot load pango)",
            ("reason",),
            registry=registry,
        )
        self.http_seconds = Histogram(
            "ocs_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ("route",),
            buckets=HTTP_SECONDS_BUCKETS,
            registry=registry,
        )

    # -- the credit-control path -------------------------------------------------------------

    def request_finished(self, command: str, request_type: str, result_code: int, seconds: float) -> None:
        """One answered request: ``command`` "CCR", ``request_type`` "INITIAL" / "UPDATE" /
        "TERMINATION" / "EVENT" (or "" when unreadable), the answer's Result-Code."""
        hot = self.hot
        key = (command, request_type, str(result_code))
        hot.requests[key] = hot.requests.get(key, 0) + 1
        hot.request_seconds.observe((command, request_type), seconds)

    def request_shed(self, command: str, request_type: str) -> None:
        """A request refused at once with 3004 at the in-flight limit (not timed: it did no work)."""
        self.hot.shed[()] += 1
        self.request_refused(command, request_type, DIAMETER_TOO_BUSY)

    def request_refused(self, command: str, request_type: str, result_code: int | str) -> None:
        """A request answered with an error before the application saw it (a decoding or grammar
        failure, 3004): counted with the answered ones, not timed (it did no work)."""
        hot = self.hot
        key = (command, request_type, str(result_code))
        hot.requests[key] = hot.requests.get(key, 0) + 1

    def duplicate_replayed(self) -> None:
        """A request answered with its stored result: by the balance engine's idempotency key, or
        by the Diameter layer's duplicate cache (a T-flag retransmission, RFC 6733 section 5.5.4)."""
        self.hot.duplicates[()] += 1

    def redis_call(self, operation: str, seconds: float, *, failed: bool = False) -> None:
        """One Redis call, e.g. ``operation`` "charge", "balance", "expire", "provision"."""
        hot = self.hot
        hot.redis_seconds.observe((operation,), seconds)
        if failed:
            hot.redis_errors[(operation,)] = hot.redis_errors.get((operation,), 0) + 1

    def money_reserved(self, currency: str, micros: int) -> None:
        if micros > 0:
            self.hot.reserved[(currency,)] = self.hot.reserved.get((currency,), 0) + micros

    def money_committed(self, currency: str, micros: int) -> None:
        if micros > 0:
            self.hot.committed[(currency,)] = self.hot.committed.get((currency,), 0) + micros

    def money_credited(self, currency: str, operation: str, micros: int) -> None:
        """Top-ups, adjustments, money buckets and refunds; a negative amount counts as withdrawn."""
        if micros > 0:
            self.credited.labels(currency, operation).inc(micros)
        elif micros < 0:
            self.withdrawn.labels(currency, operation).inc(-micros)

    def sessions_expired_by_tcc(self, count: int) -> None:
        if count > 0:
            self.sessions_expired.inc(count)

    def server_request_answered(self, command: str, result_code: str) -> None:
        """The answer to a RAR or ASR this server sent: ``command`` "RAR" / "ASR", ``result_code``
        a bounded label (``ocs.sessions.result_label``)."""
        self.server_requests.labels(command, result_code).inc()

    def lifecycle_enforced(self, change: str, seconds: float) -> None:
        """A status change reached the live sessions: ``change`` the status set (suspended,
        active, barred, terminated: four labels), ``seconds`` from the call to the last request."""
        self.lifecycle_enforcement_seconds.labels(change).observe(seconds)

    # -- the spool writer --------------------------------------------------------------------

    def spool_progress(self, written: int, backlog_records: int, lag_seconds: float) -> None:
        """After each spool batch: records committed, records still waiting, age of the oldest."""
        if written > 0:
            self.spool_written.inc(written)
        self.spool_backlog.set(backlog_records)
        self.spool_lag.set(max(lag_seconds, 0.0))

    # -- bill documents ------------------------------------------------------------------------

    def documents_delivered(self, html: int, pdf: int, failed: int, without_pdf: int) -> None:
        """After each pass of the delivery consumer (ocs/billing/delivery.py)."""
        for document_format, count in (("html", html), ("pdf", pdf)):
            if count:
                self.documents_rendered.labels(document_format).inc(count)
        for reason, count in (("render", failed), ("no_pdf_printer", without_pdf)):
            if count:
                self.document_failures.labels(reason).inc(count)

    # -- values read at scrape time ------------------------------------------------------------

    def watch(
        self,
        *,
        in_flight: Callable[[], float] | None = None,
        peers: Callable[[], float] | None = None,
        open_sessions: Callable[[], float] | None = None,
    ) -> None:
        """Gauges whose value another part of the server already keeps (read only when scraped)."""
        for gauge, reader in ((self.in_flight, in_flight), (self.peers, peers), (self.open_sessions, open_sessions)):
            if reader is not None:
                gauge.set_function(reader)

    # -- the HTTP side ---------------------------------------------------------------------------

    def http_finished(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)

    def exposition(self, accept_header: str = "") -> tuple[bytes, str]:
        """(body, Content-Type): the Prometheus text format, or OpenMetrics when the scraper asks."""
        encoder, content_type = choose_encoder(accept_header)
        return encoder(self.exposed), content_type


class TimedCaller:
    """A ``ScriptCaller`` that reports every Redis call to ``Metrics.redis_call``: scripts by
    their operation ("charge", "credit", "view", ...), plain commands by name ("get", "zadd")."""

    def __init__(self, caller: ScriptCaller, metrics: Metrics) -> None:
        self.caller = caller
        self.metrics = metrics

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        started = perf_counter()
        try:
            reply = await self.caller.run(script, keys, args)
        except Exception:  # BalanceUnavailable or BalanceScriptError, passed on unchanged
            self.metrics.redis_call(script.operation.value, perf_counter() - started, failed=True)
            raise
        self.metrics.redis_call(script.operation.value, perf_counter() - started)
        return reply

    async def execute(self, *parts: str) -> Reply:
        started = perf_counter()
        try:
            reply = await self.caller.execute(*parts)
        except Exception:
            self.metrics.redis_call(parts[0].lower(), perf_counter() - started, failed=True)
            raise
        self.metrics.redis_call(parts[0].lower(), perf_counter() - started)
        return reply

    async def scan_keys(self, pattern: str) -> list[str]:
        started = perf_counter()
        try:
            return await self.caller.scan_keys(pattern)
        finally:
            self.metrics.redis_call("scan", perf_counter() - started)

    async def close(self) -> None:
        await self.caller.close()


def time_redis_calls(store: BalanceStore, metrics: Metrics) -> None:
    """Report every call of the store's callers to ``Metrics.redis_call``, once: the pipelined
    caller of the hot path times its own calls (its ``observer``: no coroutine around each call),
    any other goes behind ``TimedCaller``. Call it right after ``BalanceStore.connect``, before
    anything (the directory) keeps a reference to a caller."""
    shared = store.admin is store.caller  # one client for both: keep it one, so close() runs once
    store.caller = _timed(store.caller, metrics)
    store.admin = store.caller if shared else _timed(store.admin, metrics)


def _timed(caller: ScriptCaller, metrics: Metrics) -> ScriptCaller:
    if isinstance(caller, TimedCaller):
        return caller
    if isinstance(caller, PipelinedCaller):
        caller.observer = metrics.redis_call
        return caller
    return TimedCaller(caller, metrics)
