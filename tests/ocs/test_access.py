"""Who may do what on the HTTP API, the audit trail of what they did, HTTPS and the open /metrics
listener: over real HTTP on a running server (private Redis, the server's SQLite database)."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from balance.embedded import EmbeddedRedis, pick_free_port
from ocs.api.access import OPEN_ROUTES, PERMISSIONS, route_key
from ocs.api.audit_trail import AuditTrail
from ocs.config import HttpSettings
from ocs.db import audit, tokens
from ocs.db.engine import DATABASE_FILE_NAME, make_engine, open_database
from ocs.db.tokens import Role
from tests.conftest import ADMIN_HEADERS
from tests.ocs.conftest import RunningServer, server_settings, server_with
from tests.ocs.test_api import Api, alice, api
from tests.protocol.tls_support import make_authority

__all__ = ["api"]


async def token(api: Api, role: Role, **fields: Any) -> dict[str, str]:
    database = api.server.state.database
    assert database is not None
    _, secret = await tokens.create(database, name=f"{role}-{len(fields)}", role=role, **fields)
    return {"Authorization": f"Bearer {secret}"}


async def call(
    api: Api, method: str, path: str, headers: dict[str, str] | None, body: object = None
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with (
        aiohttp.ClientSession() as session,  # no default token: only the headers given
        session.request(method, api.url + path, json=body, headers=headers or {}) as response,
    ):
        shown = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, shown, response.headers


async def test_without_a_usable_token_401_with_a_bearer_challenge(api: Api) -> None:
    status, body, headers = await call(api, "GET", "/subscribers/alice", None)
    assert status == 401 and body["code"] == "unauthenticated" and "needs a token" in body["error"]
    assert headers["WWW-Authenticate"] == 'Bearer realm="ocs"'  # RFC 6750 section 3.1: no error code
    status, body, headers = await call(api, "GET", "/subscribers/alice", {"Authorization": "Bearer ocs_nobody"})
    assert status == 401 and body["error"] == "the token is not known"
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    status, body, _ = await call(api, "GET", "/subscribers/alice", {"Authorization": "Basic YTpi"})
    assert status == 401 and "not 'Bearer <token>'" in body["error"]
    assert (await call(api, "POST", "/subscribers", None, alice()))[0] == 401
    assert (await call(api, "GET", "/metrics", None))[0] == 401
    status, body, _ = await call(api, "GET", "/health", None)  # open: a load balancer's probe
    assert status == 200 and body["status"] == "ok"


async def test_revoked_and_expired_tokens_get_401(api: Api) -> None:
    database = api.server.state.database
    assert database is not None
    made, secret = await tokens.create(database, name="gone", role=Role.ADMIN)
    headers = {"Authorization": f"Bearer {secret}"}
    assert (await call(api, "GET", "/audit", headers))[0] == 200
    await tokens.revoke(database, made.token_id)
    status, body, _ = await call(api, "GET", "/audit", headers)
    assert status == 401 and body["error"] == f"the token {made.token_id} (gone) was revoked"
    expired = await token(api, Role.ADMIN, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    status, body, _ = await call(api, "GET", "/audit", expired)
    assert status == 401 and "expired" in body["error"]


async def test_each_role_gets_403_outside_what_it_may_do(api: Api) -> None:
    assert (await api.call("POST", "/subscribers", alice()))[0] == 201
    read_only = await token(api, Role.READ_ONLY)
    assert (await call(api, "GET", "/subscribers/alice", read_only))[0] == 200
    assert (await call(api, "GET", "/audit-trail", read_only))[0] == 200
    assert (await call(api, "GET", "/metrics", read_only))[0] == 200
    status, body, _ = await call(api, "POST", "/subscribers/alice/topups", read_only, {"id": "t", "amount": "1"})
    assert status == 403 and body == {
        "error": "a read-only token may not POST /subscribers/{account_id}/topups",
        "code": "forbidden",
    }
    care = await token(api, Role.CARE)
    assert (await call(api, "POST", "/subscribers/alice/topups", care, {"id": "c1", "amount": "1"}))[0] == 201
    assert (await call(api, "GET", "/audit-trail", care))[0] == 403
    assert (await call(api, "POST", "/subscribers/load", care, {}))[0] == 403
    status, body, _ = await call(api, "GET", "/subscribers/alice/balance", care)
    assert status == 200 and body["available_micros"] == 11_500_000


async def test_a_care_token_over_its_adjustment_limit_gets_403_naming_the_limit(api: Api) -> None:
    assert (await api.call("POST", "/subscribers", alice()))[0] == 201
    care = await token(api, Role.CARE)  # the configured limit: 50.00
    status, body, _ = await call(api, "POST", "/subscribers/alice/adjustments", care, {"id": "a1", "amount": "-50.01"})
    assert status == 403 and "-50.01 is over this care token's limit of 50.00 per adjustment" in body["error"]
    assert (await call(api, "POST", "/subscribers/alice/adjustments", care, {"id": "a2", "amount": "-5"}))[0] == 201
    lower = await token(api, Role.CARE, adjust_limit_micros=2_000_000)
    status, body, _ = await call(api, "POST", "/subscribers/alice/adjustments", lower, {"id": "a3", "amount": "3"})
    assert status == 403 and "limit of 2.00 per adjustment" in body["error"]
    assert (await api.call("POST", "/subscribers/alice/adjustments", {"id": "a4", "amount": "80"}))[0] == 201  # admin
    status, body = await api.call("GET", "/subscribers/alice/balance")
    assert body["available_micros"] == 85_500_000  # 10.50 - 5 + 80: the refused ones changed nothing


async def test_a_self_care_token_sees_its_own_account_and_tops_up_with_a_payment_reference(api: Api) -> None:
    assert (await api.call("POST", "/subscribers", alice()))[0] == 201
    other = alice(account_id="bob", identities=[{"kind": "msisdn", "value": "4915100000002"}])
    assert (await api.call("POST", "/subscribers", other))[0] == 201
    mine = await token(api, Role.SELF_CARE, account_id="alice")
    assert (await call(api, "GET", "/subscribers/alice/balance", mine))[0] == 200
    status, body, _ = await call(api, "GET", "/subscribers/bob/balance", mine)
    assert status == 403 and body["error"] == "this self-care token is for account 'alice' only"
    assert (await call(api, "POST", "/subscribers/bob/topups", mine, {"id": "s0", "amount": "1"}))[0] == 403
    status, body, _ = await call(api, "POST", "/subscribers/alice/topups", mine, {"id": "s1", "amount": "5"})
    assert status == 400 and body["error"].startswith("payment_reference is required")
    paid = {"id": "s2", "amount": "5", "payment_reference": "PSP-4711"}
    status, body, _ = await call(api, "POST", "/subscribers/alice/topups", mine, paid)
    assert (
        status == 201 and body["payment_reference"] == "PSP-4711" and body["balance"]["available_micros"] == 15_500_000
    )
    assert (await call(api, "PUT", "/subscribers/alice/status", mine, {"status": "barred"}))[0] == 403


async def test_the_audit_trail_shows_every_change_with_before_and_after(api: Api) -> None:
    care = await token(api, Role.CARE)
    assert (await call(api, "POST", "/subscribers", care, alice()))[0] == 201
    assert (await call(api, "POST", "/subscribers/alice/topups", care, {"id": "t1", "amount": "2.5"}))[0] == 201
    assert (await call(api, "POST", "/subscribers/alice/topups", care, {"id": "t1", "amount": "2.5"}))[0] == 200
    assert (await call(api, "POST", "/subscribers/alice/adjustments", care, {"id": "a1", "amount": "-1"}))[0] == 201
    assert (await call(api, "POST", "/subscribers/alice/adjustments", care, {"id": "a2", "amount": "99"}))[0] == 403
    assert (await call(api, "PUT", "/subscribers/alice/status", care, {"status": "suspended"}))[0] == 200
    bucket = {"kind": "seconds", "amount": 60}
    assert (await call(api, "POST", "/subscribers/alice/buckets", care, bucket))[0] == 201
    assert (await call(api, "POST", "/rate", care, {"context": "32260@3gpp.org", "units": 60}))[0] == 200  # a read
    status, body = await api.call("GET", "/audit-trail", query={"account": "alice"})
    assert status == 200
    seen = [
        (record["method"], record["route"], record["status"], record["outcome"], record["before"], record["after"])
        for record in body["records"]
    ]
    money = "available_micros"
    assert seen == [
        ("POST", "/subscribers", 201, "applied", None, {"status": "active", money: 10_500_000, "buckets": 2}
         | {"plan": "mobile_prepaid", "payment_type": "prepaid"}),
        ("POST", "/subscribers/{account_id}/topups", 201, "applied",
         {"status": "active", money: 10_500_000, "buckets": 2}, {"status": "active", money: 13_000_000, "buckets": 2}),
        ("POST", "/subscribers/{account_id}/topups", 200, "replayed",
         {"status": "active", money: 13_000_000, "buckets": 2}, {"status": "active", money: 13_000_000, "buckets": 2}),
        ("POST", "/subscribers/{account_id}/adjustments", 201, "applied",
         {"status": "active", money: 13_000_000, "buckets": 2}, {"status": "active", money: 12_000_000, "buckets": 2}),
        ("POST", "/subscribers/{account_id}/adjustments", 403, "forbidden", None, None),
        ("PUT", "/subscribers/{account_id}/status", 200, "applied", {"status": "active"}, {"status": "suspended"}),
        ("POST", "/subscribers/{account_id}/buckets", 201, "applied",
         {"status": "suspended", money: 12_000_000, "buckets": 2},
         {"status": "suspended", money: 12_000_000, "buckets": 3}),
    ]  # fmt: skip
    assert {record["actor"]["role"] for record in body["records"]} == {"care"}
    assert body["records"][1]["detail"] == "top-up t1 of 2.50"
    assert "over this care token's limit" in body["records"][4]["detail"]
    status, body = await api.call("GET", "/audit-trail", query={"actor": "nobody"})
    assert status == 200 and body["records"] == []
    status, body = await api.call("GET", "/audit-trail", query={"since": "yesterday"})
    assert status == 400 and "since" in body["error"]


def test_every_route_has_a_rule(api: Api) -> None:
    routes = {
        route_key(route.method, route.resource.canonical)
        for route in api.http.runner.app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert routes - set(PERMISSIONS) == set(OPEN_ROUTES)


async def test_an_audit_record_the_database_refuses_is_kept_and_put_back_at_the_next_start(tmp_path: Path) -> None:
    broken = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'not-migrated.sqlite3'}")  # no audit_trail table
    trail = AuditTrail(broken, tmp_path / "audit-pending.jsonl")
    record = audit.AuditEntry(
        datetime(2026, 3, 1, tzinfo=UTC), 7, "ana", "care", "POST", "/subscribers", "alice", 201, "applied",
        None, {"status": "active"}, "",
    )  # fmt: skip
    assert await trail.write(record) is False
    assert trail.failures._value.get() == 1
    assert "alice" in (tmp_path / "audit-pending.jsonl").read_text()
    await broken.dispose()
    working = await open_database(f"sqlite+aiosqlite:///{tmp_path / DATABASE_FILE_NAME}")
    try:
        assert await AuditTrail(working, tmp_path / "audit-pending.jsonl").recover() == 1
        assert await audit.read(working) == [record]
        assert not (tmp_path / "audit-pending.jsonl").exists()
    finally:
        await working.dispose()


@pytest.fixture
async def tls_server(embedded_redis: EmbeddedRedis, tmp_path: Path) -> AsyncIterator[tuple[RunningServer, Path]]:
    (tmp_path / "ca").mkdir()
    authority = make_authority(tmp_path / "ca")
    http = HttpSettings(
        port=0,
        tls_certificate=str(authority.server.certificate),
        tls_private_key=str(authority.server.key),
        metrics_port=pick_free_port(),
    )
    settings = dataclasses.replace(server_settings(embedded_redis.url, tmp_path / "spool.sqlite3"), http=http)
    async with server_with(settings) as running:
        yield running, authority.ca_file


async def test_https_with_a_configured_certificate_and_metrics_open_on_their_own_port(
    tls_server: tuple[RunningServer, Path],
) -> None:
    running, ca_file = tls_server
    http = running.state.http
    assert http is not None and http.url.startswith("https://") and http.metrics_address is not None
    trust = ssl.create_default_context(cafile=str(ca_file))
    trust.check_hostname = False  # the certificate names ocs.test; the test reaches 127.0.0.1
    headers = ADMIN_HEADERS
    async with aiohttp.ClientSession() as session:
        async with session.get(http.url + "/audit", headers=headers, ssl=trust) as response:
            assert response.status == 200 and (await response.json())["ok"] is True
        with pytest.raises(aiohttp.ClientError):  # plain HTTP on the HTTPS port is no API
            async with session.get(f"http://127.0.0.1:{http.port}/health") as response:
                await response.read()
        host, port = http.metrics_address
        async with session.get(f"http://{host}:{port}/metrics") as response:  # no token: the scraper's port
            assert response.status == 200 and "ocs_http_requests_total" in await response.text()
