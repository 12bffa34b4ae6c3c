"""Metrics: the series a ``Metrics`` object records, their exposition at ``/metrics`` on a
running server, and the house rule that no label names a subscriber or a session."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from balance.callers import PipelinedCaller
from balance.embedded import EmbeddedRedis, pick_free_port
from balance.errors import BalanceScriptError, BalanceUnavailable
from balance.store import BalanceStore
from balance.types import Account, BucketKind
from ocs.metrics import Metrics, TimedCaller, time_redis_calls
from protocol.message import Message, avp
from tests.ocs.conftest import RunningServer
from tests.ocs.test_api import Api, api
from tests.ocs.test_credit_control import call_to, ccr, code, mscc, seconds

__all__ = ["api"]

# Every label any ocs_ series may carry: bounded sets, none per account or session.
ALLOWED_LABELS = {"command", "request_type", "result_code", "operation", "currency", "route", "method", "status", "le"}


def samples(text: str) -> list[Sample]:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(found: Iterable[Sample], name: str, **labels: str) -> float | None:
    for sample in found:
        if sample.name == name and all(sample.labels.get(key) == wanted for key, wanted in labels.items()):
            return sample.value
    return None


def exposition(metrics: Metrics) -> list[Sample]:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return samples(body.decode())


def test_request_path_series() -> None:
    metrics = Metrics()
    metrics.request_finished("CCR", "INITIAL", 2001, 0.002)
    metrics.request_finished("CCR", "INITIAL", 2001, 0.004)
    metrics.request_finished("CCR", "UPDATE", 4012, 0.030)
    metrics.request_finished("CCR", "TERMINATION", 2001, 0.005)  # on a bound: "le" includes it
    metrics.request_shed("CCR", "INITIAL")
    metrics.duplicate_replayed()
    metrics.redis_call("charge", 0.0004)
    metrics.redis_call("charge", 0.2, failed=True)
    metrics.money_reserved("EUR", 180_000)
    metrics.money_committed("EUR", 90_000)
    metrics.money_committed("EUR", 0)  # nothing committed: no change, no error
    metrics.money_credited("EUR", "adjustment", -500_000)
    metrics.sessions_expired_by_tcc(3)
    metrics.spool_progress(written=500, backlog_records=20, lag_seconds=1.5)
    found = exposition(metrics)
    requests = "ocs_diameter_requests_total"
    assert value(found, requests, command="CCR", request_type="INITIAL", result_code="2001") == 2
    assert value(found, requests, command="CCR", request_type="UPDATE", result_code="4012") == 1
    assert value(found, requests, command="CCR", request_type="INITIAL", result_code="3004") == 1
    duration = "ocs_diameter_request_duration_seconds"
    assert value(found, f"{duration}_count", command="CCR", request_type="INITIAL") == 2
    assert value(found, f"{duration}_bucket", command="CCR", request_type="INITIAL", le="0.0025") == 1
    assert value(found, f"{duration}_sum", command="CCR", request_type="UPDATE") == 0.030
    termination = {"command": "CCR", "request_type": "TERMINATION"}
    assert value(found, f"{duration}_bucket", **termination, le="0.0025") == 0
    assert value(found, f"{duration}_bucket", **termination, le="0.005") == 1
    assert value(found, f"{duration}_bucket", **termination, le="+Inf") == 1
    assert value(found, "ocs_diameter_requests_shed_total") == 1
    assert value(found, "ocs_diameter_duplicate_requests_total") == 1
    assert value(found, "ocs_redis_call_duration_seconds_count", operation="charge") == 2
    assert value(found, "ocs_redis_errors_total", operation="charge") == 1
    assert value(found, "ocs_money_reserved_micros_total", currency="EUR") == 180_000
    assert value(found, "ocs_money_committed_micros_total", currency="EUR") == 90_000
    assert value(found, "ocs_money_withdrawn_micros_total", currency="EUR", operation="adjustment") == 500_000
    assert value(found, "ocs_money_credited_micros_total", currency="EUR", operation="adjustment") is None
    assert value(found, "ocs_sessions_expired_total") == 3
    assert value(found, "ocs_spool_records_written_total") == 500
    assert (value(found, "ocs_spool_backlog_records"), value(found, "ocs_spool_lag_seconds")) == (20, 1.5)
    assert value(found, "process_cpu_seconds_total") is not None  # process collectors are on


def test_each_metrics_object_has_its_own_registry() -> None:
    first, second = Metrics(process_collectors=False), Metrics(process_collectors=False)
    first.request_finished("CCR", "EVENT", 2001, 0.001)
    labels = {"command": "CCR", "request_type": "EVENT", "result_code": "2001"}
    assert value(exposition(first), "ocs_diameter_requests_total", **labels) == 1
    assert value(exposition(second), "ocs_diameter_requests_total", **labels) is None


def test_watched_gauges_are_read_when_scraped() -> None:
    metrics = Metrics(process_collectors=False)
    in_flight = [3]
    metrics.watch(in_flight=lambda: in_flight[0], peers=lambda: 2, open_sessions=lambda: 7)
    assert value(exposition(metrics), "ocs_diameter_requests_in_flight") == 3
    in_flight[0] = 5
    found = exposition(metrics)
    assert value(found, "ocs_diameter_requests_in_flight") == 5
    assert (value(found, "ocs_diameter_peers"), value(found, "ocs_sessions_open")) == (2, 7)


async def test_redis_calls_are_timed_by_operation(embedded_redis: EmbeddedRedis) -> None:
    metrics = Metrics(process_collectors=False)
    store = await BalanceStore.connect(embedded_redis.url, pipelined=True)
    time_redis_calls(store, metrics)
    time_redis_calls(store, metrics)  # once only
    assert isinstance(store.admin, TimedCaller) and not isinstance(store.admin.caller, TimedCaller)
    # The hot path's pipelined caller times its own calls, with no coroutine around them.
    assert isinstance(store.caller, PipelinedCaller) and store.caller.observer == metrics.redis_call
    try:
        await store.flush_all()
        assert (await store.provision(Account("timed"))).outcome.value == "ok"
        await store.top_up("timed", "t-1", 1_000_000, kind=BucketKind.MAIN)
        assert await store.caller.execute("GET", "nothing") is None
        with pytest.raises(BalanceScriptError):
            await store.caller.execute("NOSUCHCOMMAND")
    finally:
        await store.close()
    found = exposition(metrics)
    count = "ocs_redis_call_duration_seconds_count"
    assert value(found, count, operation="provision") == 1
    assert value(found, count, operation="credit") == 1
    assert value(found, count, operation="set") == 1  # the account's hierarchy claim
    assert value(found, count, operation="get") == 2  # the top-up's hierarchy lookup, and ours
    assert value(found, "ocs_redis_errors_total", operation="nosuchcommand") == 1
    assert value(found, "ocs_redis_errors_total", operation="provision") is None
    # Nothing listens here: the failure is counted and passed on unchanged.
    dead = await BalanceStore.connect(f"redis://127.0.0.1:{pick_free_port()}")
    time_redis_calls(dead, metrics)
    assert dead.admin is dead.caller  # one client: closed once
    with pytest.raises(BalanceUnavailable):
        await dead.hierarchy("nobody")
    await dead.close()
    assert value(exposition(metrics), "ocs_redis_errors_total", operation="get") == 1


def test_openmetrics_when_the_scraper_asks() -> None:
    metrics = Metrics(process_collectors=False)
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.decode().endswith("# EOF\n")


async def test_metrics_endpoint_after_requests(api: Api, server: RunningServer) -> None:
    body = {"account_id": "mia", "buckets": [{"kind": "main", "amount": "2.00"}]}
    body["identities"] = [{"kind": "msisdn", "value": "4915100000042"}]
    assert (await api.call("POST", "/subscribers", body))[0] == 201
    assert (await api.call("POST", "/subscribers/mia/topups", {"id": "t-1", "amount": "3.00"}))[0] == 201
    assert (await api.call("POST", "/subscribers/mia/topups", {"id": "t-1", "amount": "3.00"}))[0] == 200
    assert (await api.call("GET", "/subscribers/nobody"))[0] == 404
    client = await server.client()
    assert code(await client.request(ccr("m-1", "EVENT_REQUEST", 0, msisdn="4915100000042"))) in (2001, 4012)
    async with api.session.get(api.url + "/metrics") as response:
        assert response.status == 200 and response.content_type == "text/plain"
        found = samples(await response.text())
    await client.close()
    http = "ocs_http_requests_total"
    assert value(found, http, route="/subscribers", method="POST", status="201") == 1
    assert value(found, http, route="/subscribers/{account_id}/topups", method="POST", status="201") == 1
    assert value(found, http, route="/subscribers/{account_id}/topups", method="POST", status="200") == 1
    assert value(found, http, route="/subscribers/{account_id}", method="GET", status="404") == 1
    assert value(found, "ocs_http_request_duration_seconds_count", route="/subscribers") == 1
    # The replayed top-up is counted once; the opening balance counts as provisioning.
    credited = "ocs_money_credited_micros_total"
    assert value(found, credited, currency="EUR", operation="top_up") == 3_000_000
    assert value(found, credited, currency="EUR", operation="provision") == 2_000_000
    assert value(found, "ocs_diameter_peers") == 1  # the client above, still connected when scraped
    assert value(found, "ocs_diameter_requests_in_flight") == 0
    for sample in found:
        if sample.name.startswith("ocs_"):
            assert set(sample.labels) <= ALLOWED_LABELS, sample
    async with api.session.get(api.url + "/metrics") as response:
        # A scrape is an HTTP request too: the first one is counted by the time of the second.
        found = samples(await response.text())
    assert value(found, http, route="/metrics", method="GET", status="200") == 1


async def test_money_reserved_and_committed_by_a_call(api: Api, server: RunningServer) -> None:
    await server.subscriber("nina", "4915100000043", micros=10_000_000)
    client = await server.client()
    callee = call_to("4917612345678")  # national mobile, 0.09 per minute at peak, 60/1

    def call(request_type: str, number: int, used: int | None, requested: int | None) -> Message:
        units = [seconds("Used-Service-Unit", used)] if used is not None else []
        units += [seconds("Requested-Service-Unit", requested)] if requested is not None else []
        multiple = avp("Multiple-Services-Indicator", 1)
        return ccr("m-call", request_type, number, multiple, mscc(*units), callee, msisdn="4915100000043")

    async def scrape() -> list[Sample]:
        async with api.session.get(api.url + "/metrics") as response:
            return samples(await response.text())

    reserved, committed = "ocs_money_reserved_micros_total", "ocs_money_committed_micros_total"
    # CCR-I: 300 s at 0.09 per minute hold 0.45; nothing committed yet.
    assert code(await client.request(call("INITIAL_REQUEST", 0, None, 300))) == 2001
    found = await scrape()
    assert value(found, reserved, currency="EUR") == 450_000
    assert value(found, committed, currency="EUR") is None
    # CCR-U: 100 s used (0.15), 300 s held anew. The same request again as a new message (another
    # End-to-End Identifier, so the engine, not the Diameter duplicate cache, answers it: replayed)
    # counts no money twice.
    assert code(await client.request(call("UPDATE_REQUEST", 1, 100, 300))) == 2001
    assert code(await client.request(call("UPDATE_REQUEST", 1, 100, 300))) == 2001
    found = await scrape()
    assert value(found, reserved, currency="EUR") == 900_000
    assert value(found, committed, currency="EUR") == 150_000
    assert value(found, "ocs_diameter_duplicate_requests_total") == 1
    # CCR-T: 30 s used, charged as the first 60 s (0.09); nothing new held.
    assert code(await client.request(call("TERMINATION_REQUEST", 2, 30, None))) == 2001
    found = await scrape()
    assert (value(found, reserved, currency="EUR"), value(found, committed, currency="EUR")) == (900_000, 240_000)
    await client.close()


async def test_requests_refused_by_the_diameter_layer_and_its_replays_are_counted(
    api: Api, server: RunningServer
) -> None:
    client = await server.client()
    # Refused while decoding or validating, before the application sees them.
    no_number = ccr("r-1", "INITIAL_REQUEST", 0)
    no_number.avps = [item for item in no_number.avps if item.code != 415]  # CC-Request-Number
    assert code(await client.request(no_number)) == 5005
    bad_bits = ccr("r-2", "INITIAL_REQUEST", 0)
    bad_bits.avps[0].flags |= 0x20  # P bit on Session-Id: 3009 (RFC 6733 section 4.5 has no MAY P)
    assert code(await client.request(bad_bits)) == 3009
    # Answered by the application (unknown subscriber), then retransmitted with the T flag under
    # the same End-to-End id (RFC 6733 section 5.5.4): the duplicate cache answers it.
    first = ccr("r-3", "EVENT_REQUEST", 0, msisdn="4915100000999")
    assert code(await client.request(first)) == 5030
    again = ccr("r-3", "EVENT_REQUEST", 0, msisdn="4915100000999")
    again.end_to_end = first.end_to_end
    again.flags |= 0x10
    assert code(await client.request(again)) == 5030
    async with api.session.get(api.url + "/metrics") as response:
        found = samples(await response.text())
    await client.close()
    requests = "ocs_diameter_requests_total"
    assert value(found, requests, command="CCR", request_type="INITIAL", result_code="5005") == 1
    assert value(found, requests, command="CCR", request_type="INITIAL", result_code="3009") == 1
    assert value(found, requests, command="CCR", request_type="EVENT", result_code="5030") == 1  # answered once
    assert value(found, "ocs_diameter_duplicate_requests_total") == 1
