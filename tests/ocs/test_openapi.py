"""/openapi.json: valid OpenAPI 3 (openapi-spec-validator), and a bounded property-based run of
schemathesis against the real server (port 0, private Redis, the admin token) that finds no 5xx.

Schemathesis calls the server with a blocking HTTP client, so the server runs on its own event loop
in a thread here, while the test thread sends the requests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import uvloop
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from balance.embedded import EmbeddedRedis
from ocs.api.customers import ROUTES
from ocs.api.interactions import ROUTES as INTERACTION_ROUTES
from ocs.api.orders import order_shapes
from tests.conftest import ADMIN_HEADERS
from tests.ocs.conftest import server_settings, server_with

EXAMPLES_PER_OPERATION = 50  # bounded: the whole run takes seconds, not a soak
START_TIMEOUT_SECONDS = 60


@pytest.fixture
def served(embedded_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[str]:
    """The server's HTTP URL, the server running on a loop of its own in a thread."""
    ready = threading.Event()
    found: dict[str, Any] = {}

    async def run() -> None:
        stop = asyncio.Event()
        found["stop"] = (asyncio.get_running_loop(), stop)
        try:
            async with server_with(server_settings(embedded_redis.url, tmp_path / "spool.sqlite3")) as running:
                assert running.state.http is not None
                found["url"] = running.state.http.url
                ready.set()
                await stop.wait()
        finally:
            ready.set()

    thread = threading.Thread(target=lambda: uvloop.run(run()), daemon=True)
    thread.start()
    assert ready.wait(START_TIMEOUT_SECONDS) and "url" in found, "the server did not start"
    try:
        yield found["url"]
    finally:
        loop, stop = found["stop"]
        loop.call_soon_threadsafe(stop.set)
        thread.join(START_TIMEOUT_SECONDS)


def _document(url: str) -> dict[str, Any]:
    import requests  # schemathesis's own client, installed with it

    answer = requests.get(url + "/openapi.json", timeout=10)
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def test_the_document_is_valid_openapi_and_covers_every_customer_route(served: str) -> None:
    document = _document(served)
    validate(document)  # raises on anything that is not OpenAPI 3.1
    for route in (*ROUTES, *INTERACTION_ROUTES, *order_shapes()):  # customers, interactions, orders
        assert route.method.lower() in document["paths"][route.path]
    assert set(document["paths"]) >= {"/applications", "/productOrders", "/productOrders/{order_id}"}


def test_a_bounded_property_based_run_finds_no_server_error(served: str) -> None:
    schema = schemathesis.openapi.from_dict(_document(served))
    failures: list[str] = []
    statuses: dict[str, set[int]] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(base_url=served, headers=dict(ADMIN_HEADERS))
            statuses.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} {case.body!r}: {response.status_code} {response.text}"
                )

        run()
    assert failures == []
    assert len(statuses) == sum(len(item) for item in _document(served)["paths"].values())  # every operation ran
    assert 201 in statuses["POST /customers"]  # the run reached past validation, into the stores
