"""The provisioning API over real HTTP on a running server (private Redis): every endpoint's
success and refusals, and its effect on charging (Diameter CCRs on the same server)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from balance.directory import Identity, IdentityKind
from balance.embedded import EmbeddedRedis
from balance.types import MAX_HIERARCHY_LEVELS
from ocs.api.server import HttpServer, start_http
from ocs.app import new_state, shutdown, startup
from ocs.config import HttpSettings
from protocol.message import Message
from tests.conftest import ADMIN_HEADERS
from tests.ocs.conftest import RunningServer, ensure_admin_token, server_settings
from tests.ocs.test_credit_control import call_to, ccr, code, seconds

EUR = 1_000_000
PEAK_ISO = "2026-11-23T09:00:00Z"  # a Monday, 10:00 in Berlin: peak (as in test_credit_control)


@dataclass
class Api:
    server: RunningServer
    http: HttpServer
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.http.url

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        data: bytes | str | None = None,
        query: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        payload = json.dumps(body) if body is not None else data
        async with self.session.request(method, self.url + path, data=payload, params=query) as response:
            assert response.content_type in ("application/json", "text/plain"), response.content_type
            return response.status, await response.json(content_type=None)


async def open_api(server: RunningServer) -> tuple[HttpServer, bool]:
    """The server's own HTTP side when startup() runs one, else one started here on port 0."""
    existing = getattr(server.state, "http", None)
    if isinstance(existing, HttpServer):
        return existing, False
    server.state.settings = dataclasses.replace(server.state.settings, http=HttpSettings(port=0))
    return await start_http(server.state), True


@pytest.fixture
async def api(server: RunningServer) -> AsyncIterator[Api]:
    http, owned = await open_api(server)
    try:
        async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
            yield Api(server, http, session)
    finally:
        if owned:
            await http.close()


def alice(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "account_id": "alice",
        "payment_type": "prepaid",
        "plan": "mobile_prepaid",
        "customer_type": "mobile",
        "name": "Alice Example",
        "identities": [
            {"kind": "msisdn", "value": "+4915100000001"},
            {"kind": "imsi", "value": "262011234567890"},
            {"kind": "sip", "value": "sip:alice@ims.example"},
        ],
        "buckets": [
            {"kind": "main", "amount": "10.50"},
            {"kind": "seconds", "amount": 3000, "services": ["voice"], "valid_until": "2030-01-01T00:00:00Z"},
        ],
    }
    body.update(changes)
    return body


async def test_create_then_show_and_charge_at_once(api: Api) -> None:
    client = await api.server.client()
    # Unknown first: the server caches the miss for a moment ...
    assert code(await client.request(ccr("a-0", "EVENT_REQUEST", 0, msisdn="4915100000001"))) == 5030
    status, body = await api.call("POST", "/subscribers", alice())
    assert status == 201, body
    # ... and creating the subscriber forgets it, so the next CCR is charged at once.
    answer = await client.request(
        ccr("a-1", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), call_to("4917612345678"))
    )
    assert code(answer) == 2001
    await client.close()

    assert body["profile"] == {
        "plan": "mobile_prepaid",
        "customer_type": "mobile",
        "name": "Alice Example",
        "identities": [
            {"kind": "msisdn", "value": "4915100000001"},  # E.164 digits: the "+" is dropped
            {"kind": "imsi", "value": "262011234567890"},
            {"kind": "sip", "value": "sip:alice@ims.example"},
        ],
    }
    balance = body["balance"]
    assert balance["currency"] == "EUR"  # the plan's
    assert (balance["available_micros"], balance["available"]) == (10_500_000, "10.50")
    assert balance["buckets"][0] == {
        "bucket_id": 1,
        "kind": "main",
        "amount_micros": 10_500_000,
        "amount": "10.50",
        "services": [],
        "valid_from": 0,
        "valid_until": 0,
        "priority": 0,
    }
    assert balance["buckets"][1]["amount"] == 3000 and balance["buckets"][1]["valid_until"] == 1_893_456_000
    assert balance["counters"]["credits_micros"] == 10_500_000

    status, shown = await api.call("GET", "/subscribers/alice")
    assert status == 200 and shown["profile"] == body["profile"]
    assert shown["balance"]["reservations"] == 1  # the call holds its allowance seconds
    directory = api.server.state.directory
    assert directory is not None
    found = await directory.lookup(Identity(IdentityKind.IMSI, "262011234567890"))
    assert found is not None and found.account_id == "alice"


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"account_id": "bad id"}, "account id"),
        ({"account_id": 7}, "expected text"),
        ({"payment_type": "credit"}, "payment_type"),
        ({"customer_type": "satellite"}, "customer_type"),
        ({"buckets": [{"kind": "main", "amount": "1.1234567"}]}, "more than 6 decimals"),
        ({"buckets": [{"kind": "main", "amount": 1.5}]}, "decimal string"),
        ({"buckets": [{"kind": "main", "amount": "1e3"}]}, "decimal amount"),
        ({"buckets": [{"kind": "main", "amount": "-1.00"}]}, "amount out of range"),
        ({"buckets": [{"kind": "seconds", "amount": "1.5"}]}, "whole number"),
        ({"buckets": [{"kind": "main", "amount": "1", "services": ["voice"]}]}, "allowances"),
        ({"buckets": [{"kind": "gold", "amount": "1"}]}, "kind"),
        ({"identities": [{"kind": "msisdn", "value": "49-151"}]}, "MSISDN"),
        ({"identities": [{"kind": "imsi", "value": "1234"}]}, "IMSI"),
        ({"identities": [{"kind": "sip", "value": "alice@example"}]}, "SIP URI"),
        ({"identities": [{"kind": "fax", "value": "1"}]}, "identity kind"),
        ({"credit_limit": "5.00"}, "prepaid account has no credit limit"),
        ({"currency": "euro"}, "ISO 4217"),
        ({"currency": "euro", "plan": "gold"}, "ISO 4217"),  # malformed (400) before refused (422)
        ({"child_cap": "5.00"}, "only a child account"),
        ({"colour": "blue"}, "unknown field(s) colour"),
        ({"valid_until": 5}, "unknown field(s) valid_until"),
    ],
)
async def test_create_refuses_malformed_input_with_400(api: Api, changes: dict[str, object], fragment: str) -> None:
    status, body = await api.call("POST", "/subscribers", alice(**changes))
    assert status == 400, body
    assert body["code"] == "bad_request" and fragment in body["error"]
    assert (await api.call("GET", "/subscribers/alice"))[0] == 404  # nothing was written


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"{", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"account_id": NaN}', "NaN"),
        (b"\xff\xfe", "not UTF-8"),
        (b"", "not JSON"),
    ],
)
async def test_malformed_bodies_are_400(api: Api, payload: bytes, fragment: str) -> None:
    status, body = await api.call("POST", "/subscribers", data=payload)
    assert status == 400 and fragment in body["error"]


async def test_create_conflicts_and_refusals(api: Api) -> None:
    assert (await api.call("POST", "/subscribers", alice()))[0] == 201
    status, body = await api.call("POST", "/subscribers", alice(identities=[]))
    assert (status, body["code"]) == (409, "conflict") and "already exists" in body["error"]
    # An identity of alice's for someone else: 409, and bob is not created at all.
    taken = {"account_id": "bob", "identities": [{"kind": "msisdn", "value": "4915100000001"}]}
    status, body = await api.call("POST", "/subscribers", taken)
    assert status == 409 and "belongs to account 'alice'" in body["error"]
    assert (await api.call("GET", "/subscribers/bob"))[0] == 404
    status, body = await api.call("POST", "/subscribers", {"account_id": "bob", "plan": "gold"})
    assert (status, body["code"]) == (422, "refused") and "no tariff plan 'gold'" in body["error"]
    status, body = await api.call("POST", "/subscribers", {"account_id": "bob", "currency": "USD"})
    assert status == 422 and "differs from plan" in body["error"]
    status, body = await api.call("POST", "/subscribers", {"account_id": "bob", "parent_id": "acme"})
    assert status == 422 and "parent account 'acme' does not exist" in body["error"]


async def test_company_with_postpaid_parent_and_capped_child(api: Api) -> None:
    parent = {
        "account_id": "acme",
        "payment_type": "postpaid",
        "plan": "mobile_postpaid",
        "credit_limit": "500.00",
        "name": "ACME Ltd",
    }
    assert (await api.call("POST", "/subscribers", parent))[0] == 201
    child = {"account_id": "acme-sales", "plan": "mobile_postpaid", "parent_id": "acme", "child_cap": "50"}
    status, body = await api.call("POST", "/subscribers", child)
    assert status == 201, body
    balance = body["balance"]
    assert balance["parent_id"] == "acme" and balance["child_cap_micros"] == 50 * EUR
    assert balance["available"] == "50.00"  # drawn from the parent's credit line, within the cap
    # A company tree of MAX_HIERARCHY_LEVELS levels (root included): a line under each level, then
    # one level too deep is refused, naming the field.
    parent_id = "acme-sales"
    for level in range(3, MAX_HIERARCHY_LEVELS + 1):
        node = {"account_id": f"acme-{level}", "plan": "mobile_postpaid", "parent_id": parent_id, "child_cap": "10"}
        status, body = await api.call("POST", "/subscribers", node)
        assert status == 201, body
        assert body["balance"]["available"] == "10.00"  # the least cap room on the way up
        parent_id = node["account_id"]
    too_deep = {"account_id": "acme-too-deep", "plan": "mobile_postpaid", "parent_id": parent_id}
    status, body = await api.call("POST", "/subscribers", too_deep)
    assert status == 422 and "parent_id" in body["error"], body


async def test_show_and_balance_of_unknown_or_invalid_account(api: Api) -> None:
    status, body = await api.call("GET", "/subscribers/nobody")
    assert (status, body["code"]) == (404, "not_found") and "nobody" in body["error"]
    assert (await api.call("GET", "/subscribers/nobody/balance"))[0] == 404
    assert (await api.call("GET", "/subscribers/%20x"))[0] == 400
    assert (await api.call("POST", "/subscribers/nobody/topups", {"id": "t", "amount": "1"}))[0] == 404
    assert (await api.call("PUT", "/subscribers/nobody/status", {"status": "barred"}))[0] == 404


async def test_balance_endpoint(api: Api) -> None:
    await api.call("POST", "/subscribers", alice())
    status, body = await api.call("GET", "/subscribers/alice/balance")
    assert status == 200
    assert body["account_id"] == "alice" and body["available"] == "10.50" and body["status"] == "active"
    assert body["counters"]["committed"] == "0.00" and body["reservations"] == 0


async def test_top_up_is_idempotent_by_id(api: Api) -> None:
    await api.call("POST", "/subscribers", alice())
    status, body = await api.call("POST", "/subscribers/alice/topups", {"id": "card-1", "amount": "5.25"})
    assert status == 201 and body["replayed"] is False
    assert body["balance"]["available"] == "15.75" and body["amount_micros"] == 5_250_000
    status, body = await api.call("POST", "/subscribers/alice/topups", {"id": "card-1", "amount": "5.25"})
    assert status == 200 and body["replayed"] is True and body["balance"]["available"] == "15.75"
    status, body = await api.call("POST", "/subscribers/alice/topups", {"id": "card-2", "amount": 2})  # whole units
    assert status == 201 and body["balance"]["available"] == "17.75"
    bonus = {"id": "promo-1", "amount": "1.00", "kind": "bonus", "valid_until": "2030-01-01T00:00:00Z"}
    status, body = await api.call("POST", "/subscribers/alice/topups", bonus)
    assert status == 201 and body["balance"]["available"] == "18.75"
    bucket = next(item for item in body["balance"]["buckets"] if item["kind"] == "bonus")
    assert bucket["bucket_id"] == body["bucket_id"] and bucket["valid_until"] == 1_893_456_000


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"amount": "1.00"}, "id is required"),
        ({"id": "t", "amount": "0"}, "more than 0"),
        ({"id": "t", "amount": "-1.00"}, "more than 0"),
        ({"id": "t", "amount": 0.5}, "decimal string"),
        ({"id": "t", "amount": "1.00", "kind": "seconds"}, "kind"),
        ({"id": "t", "amount": "1.00", "valid_until": "tomorrow"}, "ISO 8601"),
        ({"id": "t", "amount": "1.00", "valid_until": "1969-12-31T00:00:00Z"}, "out of range"),
        ({"id": "t", "amount": "1.00", "kind": "bonus", "valid_until": "2020-01-01"}, "expire"),
        ({"id": "t", "amount": "1000000000.000001"}, "out of range"),
    ],
)
async def test_top_up_refuses_bad_input(api: Api, body: dict[str, object], fragment: str) -> None:
    await api.call("POST", "/subscribers", alice())
    status, answer = await api.call("POST", "/subscribers/alice/topups", body)
    assert status == 400 and fragment in answer["error"], answer
    assert (await api.call("GET", "/subscribers/alice/balance"))[1]["available"] == "10.50"


async def test_adjustments(api: Api) -> None:
    await api.call("POST", "/subscribers", alice())
    status, body = await api.call(
        "POST", "/subscribers/alice/adjustments", {"id": "fix-1", "amount": "-0.50", "reason": "goodwill reversal"}
    )
    assert status == 201 and body["balance"]["available"] == "10.00"
    status, body = await api.call("POST", "/subscribers/alice/adjustments", {"id": "fix-1", "amount": "-0.50"})
    assert status == 200 and body["replayed"] is True and body["balance"]["available"] == "10.00"
    status, body = await api.call("POST", "/subscribers/alice/adjustments", {"id": "fix-2", "amount": "-10.01"})
    assert (status, body["code"]) == (422, "refused") and "below 0" in body["error"]
    assert (await api.call("POST", "/subscribers/alice/adjustments", {"id": "fix-3", "amount": "0"}))[0] == 400


async def test_add_bucket(api: Api) -> None:
    await api.call("POST", "/subscribers", alice(buckets=[]))
    allowance = {"kind": "octets", "amount": 1_000_000_000, "services": ["data"], "valid_until": 1_900_000_000}
    status, body = await api.call("POST", "/subscribers/alice/buckets", allowance)
    assert status == 201 and body["bucket_id"] == 1
    assert body["balance"]["buckets"][0]["amount"] == 1_000_000_000
    assert body["balance"]["available"] == "0.00"  # an allowance is not money
    status, body = await api.call("POST", "/subscribers/alice/buckets", {"kind": "main", "amount": "3.00"})
    assert status == 201 and body["bucket_id"] == 2 and body["balance"]["available"] == "3.00"
    for bad in (
        {"kind": "octets", "amount": 10, "services": ["bad service"]},
        {"kind": "octets", "amount": 10, "valid_from": 200, "valid_until": 100},
        {"kind": "octets"},
        {"kind": "octets", "amount": 10, "priority": "high"},
    ):
        status, body = await api.call("POST", "/subscribers/alice/buckets", bad)
        assert status == 400, (bad, body)


async def test_status_changes_and_terminated_is_final(api: Api) -> None:
    await api.call("POST", "/subscribers", alice())
    client = await api.server.client()
    status, body = await api.call("PUT", "/subscribers/alice/status", {"status": "suspended"})
    assert status == 200 and (body["previous_status"], body["status"]) == ("active", "suspended")
    # Suspended: the session opens with nothing granted and is redirected to the top-up portal
    # at once (RULES.md check 3; RFC 8506 section 5.6).
    answer = await client.request(
        ccr("s-1", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), call_to("4917612345678"))
    )
    final_unit = answer.find("Final-Unit-Indication")
    assert code(answer) == 2001 and final_unit is not None and final_unit.get("Final-Unit-Action") == 1
    assert (await api.call("PUT", "/subscribers/alice/status", {"status": "active"}))[1]["status"] == "active"
    status, body = await api.call("PUT", "/subscribers/alice/status", {"status": "barred"})
    assert status == 200 and body["status"] == "barred"
    answer = await client.request(ccr("s-2", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60)))
    assert code(answer) == 4010
    assert (await api.call("PUT", "/subscribers/alice/status", {"status": "terminated"}))[0] == 200
    status, body = await api.call("PUT", "/subscribers/alice/status", {"status": "active"})
    assert status == 422 and "final" in body["error"]
    assert (await api.call("PUT", "/subscribers/alice/status", {"status": "terminated"}))[0] == 200
    assert (await api.call("PUT", "/subscribers/alice/status", {"status": "closed"}))[0] == 400
    assert (await api.call("PUT", "/subscribers/alice/status", {}))[0] == 400
    await client.close()


async def test_top_up_sends_rar_and_barring_sends_asr(api: Api) -> None:
    body = alice(
        buckets=[{"kind": "main", "amount": "0.09"}], identities=[{"kind": "msisdn", "value": "4915100000009"}]
    )
    await api.call("POST", "/subscribers", body)
    client = await api.server.client()
    received: list[Message] = []
    client.on_request = lambda _, message: received.append(message)
    initial = await client.request(
        ccr(
            "call-w",
            "INITIAL_REQUEST",
            0,
            seconds("Requested-Service-Unit", 300),
            call_to("4917612345678"),
            msisdn="4915100000009",
        )
    )
    assert initial.find("Final-Unit-Indication") is not None
    status, answer = await api.call("POST", "/subscribers/alice/topups", {"id": "card-9", "amount": "5.00"})
    assert status == 201 and answer["notified_sessions"] == 1
    await wait_for(lambda: len(received) == 1)
    assert received[0].command_code == 258 and received[0].get("Session-Id") == "call-w"  # RAR
    status, answer = await api.call("PUT", "/subscribers/alice/status", {"status": "barred"})
    assert status == 200 and answer["notified_sessions"] == 1
    await wait_for(lambda: len(received) == 2)
    assert received[1].command_code == 274 and received[1].get("Session-Id") == "call-w"  # ASR
    await client.close()


async def wait_for(condition: Any, seconds_at_most: float = 2.0) -> None:
    for _ in range(int(seconds_at_most / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


async def test_rate_by_query_and_by_json(api: Api) -> None:
    query = {
        "plan": "mobile_prepaid",
        "context": "32260@3gpp.org",
        "called": "+4917612345678",
        "at": PEAK_ISO,
        "units": "90",
    }
    status, body = await api.call("GET", "/rate", query=query)
    assert status == 200, body
    # National mobile at peak: 0.09 per minute, 60/1 increments: 90 s cost 90 x 0.09 / 60 = 0.135.
    assert (body["service"], body["zone"], body["band"]) == ("voice", "national_mobile", "peak")
    assert (body["charged_units"], body["cost_micros"], body["cost"]) == (90, 135_000, "0.135")
    assert body["text"].endswith("0.135 EUR (135000 micros)") and "prefix 4917" in body["text"]
    status, posted = await api.call("POST", "/rate", {**query, "units": 90})
    assert status == 200 and posted == body
    # Short of the first increment: charged as 60 s.
    status, body = await api.call("GET", "/rate", query={**query, "units": "10"})
    assert (body["charged_units"], body["cost"]) == (60, "0.09")


async def test_rate_refusals(api: Api) -> None:
    base = {"context": "32251@3gpp.org", "units": "1000000"}
    status, body = await api.call("GET", "/rate", query={**base, "rating_group": "99"})
    assert (status, body["code"], body["avp"]) == (422, "rating_failed", "Rating-Group")
    status, body = await api.call("GET", "/rate", query={**base, "plan": "gold"})
    assert status == 422 and body["avp"] is None
    for bad in ({"units": "10"}, {**base, "units": "-1"}, {**base, "at": "yesterday"}, {**base, "extra": "1"}):
        status, body = await api.call("GET", "/rate", query=bad)
        assert status == 400, (bad, body)
    # The price of data and nothing charged: the endpoint never touches a balance.
    status, body = await api.call("GET", "/rate", query={**base, "rating_group": "10"})
    assert status == 200 and body["unit"] == "octets"


CSV_FILE = """\ufeffaccount_id,payment_type,plan,customer_type,name,balance,msisdn,imsi,parent_id,credit_limit
carol,prepaid,mobile_prepaid,mobile,Carol,12.50,4915200000001,262010000000001,,
dave,prepaid,mobile_prepaid,mobile,"Dave, Jr.",1.1234567,4915200000002,,,
erin,prepaid,mobile_prepaid,mobile,Erin,1.00,4915200000001,,,

corp,postpaid,fixed_postpaid,fixed,Corp,,4930123456 4930123457,,,100.00
corp-1,postpaid,fixed_postpaid,fixed,Branch,,4930200000,,corp,
frank,prepaid
carol,prepaid,mobile_prepaid,mobile,Again,,,,,
"""


async def test_bulk_load_reports_bad_rows_by_line_and_applies_good_ones(api: Api) -> None:
    status, body = await api.call("POST", "/subscribers/load", data=CSV_FILE.encode("utf-8"))
    assert status == 200, body
    assert (body["rows"], body["created"], body["failed"]) == (7, 3, 4)
    by_line = {row["line"]: row for row in body["results"]}
    assert by_line[2] == {"line": 2, "account_id": "carol", "status": 201}
    assert by_line[3]["status"] == 400 and "more than 6 decimals" in by_line[3]["error"]
    assert by_line[4]["status"] == 409 and "belongs to account 'carol'" in by_line[4]["error"]
    assert 5 not in by_line  # the blank line
    assert by_line[6]["status"] == 201 and by_line[7]["status"] == 201  # parent, then its child
    assert by_line[8]["status"] == 400 and "2 fields" in by_line[8]["error"]
    assert by_line[9]["status"] == 409 and "already exists" in by_line[9]["error"]
    status, carol = await api.call("GET", "/subscribers/carol")
    assert carol["balance"]["available"] == "12.50"
    assert carol["profile"]["identities"] == [
        {"kind": "msisdn", "value": "4915200000001"},
        {"kind": "imsi", "value": "262010000000001"},
    ]
    status, corp = await api.call("GET", "/subscribers/corp")
    assert [item["value"] for item in corp["profile"]["identities"]] == ["4930123456", "4930123457"]
    assert corp["balance"]["payment_type"] == "postpaid" and corp["balance"]["credit_limit"] == "100.00"
    status, child = await api.call("GET", "/subscribers/corp-1")
    assert child["balance"]["parent_id"] == "corp"
    for missing in ("dave", "erin", "frank"):
        assert (await api.call("GET", f"/subscribers/{missing}"))[0] == 404


async def test_bulk_load_of_many_independent_rows_keeps_file_order(api: Api) -> None:
    # 40 rows: groups of independent rows are applied concurrently; the last row repeats an
    # identity of the first group and is refused as if the file were applied row by row.
    lines = ["account_id,balance,msisdn"] + [f"bulk-{index},1.{index:02d},49160{index:08d}" for index in range(40)]
    lines.append("bulk-late,1.00,4916000000003")
    status, body = await api.call("POST", "/subscribers/load", data="\n".join(lines))
    assert status == 200 and (body["created"], body["failed"]) == (40, 1)
    assert [row["line"] for row in body["results"]] == list(range(2, 43))
    assert [row["account_id"] for row in body["results"][:40]] == [f"bulk-{index}" for index in range(40)]
    assert body["results"][40]["status"] == 409
    directory = api.server.state.directory
    assert directory is not None
    for index in (0, 17, 39):
        owner = await directory.account_of(Identity(IdentityKind.E164, f"49160{index:08d}"))
        assert owner == f"bulk-{index}"
        assert (await api.call("GET", f"/subscribers/bulk-{index}/balance"))[1]["available"] == f"1.{index:02d}"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"", "empty"),
        (b"account_id,colour\nx,blue\n", "unknown column(s) colour"),
        (b"name,plan\nx,y\n", "account_id column"),
        (b"account_id,account_id\nx,y\n", "no column twice"),
        (b"account_id\n\xff\n", "not UTF-8"),
    ],
)
async def test_bulk_load_refuses_unreadable_files(api: Api, payload: bytes, fragment: str) -> None:
    status, body = await api.call("POST", "/subscribers/load", data=payload)
    assert status == 400 and fragment in body["error"]


async def test_bulk_load_with_an_open_quote_reports_its_line(api: Api) -> None:
    payload = b'account_id,name\ngina,Gina\nhank,"Hank\nivan,Ivan\n'
    status, body = await api.call("POST", "/subscribers/load", data=payload)
    assert status == 200 and (body["created"], body["failed"]) == (1, 1)
    assert body["results"][1]["line"] == 3 and body["results"][1]["status"] == 400
    assert "the rest of the file was not read" in body["results"][1]["error"]
    assert (await api.call("GET", "/subscribers/ivan"))[0] == 404


async def test_unknown_paths_and_methods_are_json_4xx(api: Api) -> None:
    status, body = await api.call("GET", "/nowhere")
    assert status == 404 and body["code"] == "http"
    status, body = await api.call("DELETE", "/subscribers/alice")
    assert status == 405 and body["code"] == "http"


async def test_health_is_200_with_redis_and_503_without(tmp_path: Path) -> None:
    redis_server = EmbeddedRedis(tmp_path / "redis")
    await asyncio.to_thread(redis_server.start)
    settings = dataclasses.replace(server_settings(redis_server.url), http=HttpSettings(port=0))
    state = new_state(settings)
    await startup(state)
    assert state.database is not None
    await ensure_admin_token(state.database)
    http, owned = await open_api(RunningServer(state, 0))
    try:
        async with aiohttp.ClientSession(headers=ADMIN_HEADERS) as session:
            async with session.get(http.url + "/health") as response:
                assert response.status == 200 and (await response.json())["status"] == "ok"
            await asyncio.to_thread(redis_server.stop)
            async with session.get(http.url + "/health") as response:
                assert response.status == 503 and (await response.json())["status"] == "unavailable"
            async with session.get(http.url + "/subscribers/alice") as response:
                assert response.status == 503 and (await response.json())["code"] == "unavailable"
            await asyncio.to_thread(redis_server.start)
            async with session.get(http.url + "/health") as response:
                assert response.status == 200
    finally:
        if owned:
            await http.close()
        await shutdown(state)
        await asyncio.to_thread(redis_server.stop)


async def test_audit_is_clean_after_a_call_and_names_a_corrupted_account(api: Api) -> None:
    assert (await api.call("POST", "/subscribers", alice()))[0] == 201
    client = await api.server.client()
    callee = call_to("4917612345678")
    await client.request(ccr("au-1", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 120), callee))
    await client.request(ccr("au-1", "TERMINATION_REQUEST", 1, seconds("Used-Service-Unit", 61), callee))
    await client.close()
    status, body = await api.call("GET", "/audit?sessions_ended=true")
    assert status == 200 and body["ok"] is True and body["findings"] == [] and body["spool_records"] == 1
    store = api.server.state.store
    assert store is not None
    await store.admin.execute("HINCRBY", "{alice}:a:alice", "cr", "1")  # money from nowhere
    status, body = await api.call("GET", "/audit")
    assert status == 200 and body["ok"] is False
    assert [finding["account"] for finding in body["findings"]] == ["alice"]


# -- body bounds: raw HTTP, so the test controls what is sent and when ---------------------------


async def raw_request(api: Api, head: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = api.http.address
    reader, writer = await asyncio.open_connection(host, port)
    request_line, _, headers = head.partition("\n")
    authorization = f"Authorization: {ADMIN_HEADERS['Authorization']}"
    writer.write(f"{request_line}\nHost: ocs.test\n{authorization}\n{headers}\n".replace("\n", "\r\n").encode())
    await writer.drain()
    return reader, writer


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    """The first final answer on the connection (a ``100 Continue`` counts as an answer too)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length = next(
        (int(line.split(":")[1]) for line in head.split("\r\n") if line.lower().startswith("content-length")), 0
    )
    body = await reader.readexactly(length) if length else b"{}"
    return status, json.loads(body)


FIFTY_MB = 50_000_000


async def test_a_declared_50_mb_json_body_is_refused_413_before_it_is_sent(api: Api) -> None:
    # With Expect: 100-continue the client waits for the server's word before sending: 413 at once
    # (the old server said 100 Continue and would have read all of it).
    reader, writer = await raw_request(
        api, f"POST /subscribers HTTP/1.1\nContent-Length: {FIFTY_MB}\nExpect: 100-continue\n"
    )
    status, body = await read_answer(reader)
    assert status == 413 and body["code"] == "too_large" and "65536 bytes" in body["error"], body
    writer.close()


async def test_a_50_mb_body_is_answered_413_before_the_client_has_sent_it(api: Api) -> None:
    reader, writer = await raw_request(api, f"POST /subscribers/alice/topups HTTP/1.1\nContent-Length: {FIFTY_MB}\n")
    answer = asyncio.create_task(read_answer(reader))
    piece, sent = b" " * (1 << 20), 0
    while not answer.done() and sent < FIFTY_MB:  # the old server answered only after all of it
        writer.write(piece[: FIFTY_MB - sent])
        await writer.drain()
        sent += min(len(piece), FIFTY_MB - sent)
    status, body = await answer
    assert status == 413 and "POST /subscribers/alice/topups may be at most 65536 bytes" in body["error"], body
    assert sent < FIFTY_MB
    writer.close()


async def test_a_bulk_upload_over_its_limit_is_413_and_ccrs_are_answered_while_it_streams(api: Api) -> None:
    await api.server.subscriber("carl", "4915100000031", micros=10 * EUR)
    client = await api.server.client()
    reader, writer = await raw_request(
        api, "POST /subscribers/load HTTP/1.1\nContent-Type: text/csv\nTransfer-Encoding: chunked\n"
    )
    piece = 1 << 20
    chunks = [b"account_id\n" + b"a" * piece] + [b"a" * piece] * 19  # 20 MiB, one endless cell
    for number, chunk in enumerate(chunks):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        if number % 4 == 1:  # while the upload is in progress, the charging side answers
            request = ccr(
                f"up-{number}", "EVENT_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn="4915100000031"
            )
            assert code(await client.request(request)) == 2001
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    status, body = await read_answer(reader)
    assert status == 413 and body["code"] == "too_large" and f"{16 * 1024 * 1024} bytes" in body["error"], body
    writer.close()
    await client.close()


async def test_deeply_nested_json_is_400_not_500(api: Api) -> None:
    status, body = await api.call("POST", "/subscribers", data=b"[" * 60_000)  # inside the size limit
    assert status == 400 and "too deeply" in body["error"], body
    status, body = await api.call("POST", "/rate", data=b'{"a": ' + b"[" * 10_000)
    assert status == 400 and "too deeply" in body["error"], body
    status, body = await api.call("POST", "/subscribers", data=b"[" * 100_000)  # the body: over 64 KiB
    assert status == 413 and "65536 bytes" in body["error"], body


async def test_a_top_up_id_reused_with_another_amount_is_409_naming_the_amount_applied(api: Api) -> None:
    await api.call("POST", "/subscribers", alice())
    assert (await api.call("POST", "/subscribers/alice/topups", {"id": "card-7", "amount": "5.00"}))[0] == 201
    status, body = await api.call("POST", "/subscribers/alice/topups", {"id": "card-7", "amount": "50.00"})
    assert status == 409 and body["code"] == "conflict", body
    assert "'card-7' was already applied with 5.00, not 50.00" in body["error"]
    status, body = await api.call("POST", "/subscribers/alice/topups", {"id": "card-7", "amount": "5.00"})
    assert status == 200 and body["replayed"] is True and body["balance"]["available"] == "15.50"
    assert (await api.call("POST", "/subscribers/alice/adjustments", {"id": "fix-7", "amount": "-1.00"}))[0] == 201
    status, body = await api.call("POST", "/subscribers/alice/adjustments", {"id": "fix-7", "amount": "-2.00"})
    assert status == 409 and "'fix-7' was already applied with -1.00, not -2.00" in body["error"], body
    assert (await api.call("GET", "/subscribers/alice/balance"))[1]["available"] == "14.50"


async def test_a_terminated_account_takes_no_top_up(api: Api) -> None:
    await api.call("POST", "/subscribers", alice())
    assert (await api.call("POST", "/subscribers/alice/topups", {"id": "before", "amount": "1.00"}))[0] == 201
    assert (await api.call("PUT", "/subscribers/alice/status", {"status": "terminated"}))[0] == 200
    status, body = await api.call("POST", "/subscribers/alice/topups", {"id": "after", "amount": "1.00"})
    assert status == 409 and "is terminated" in body["error"], body
    status, body = await api.call("POST", "/subscribers/alice/topups", {"id": "before", "amount": "1.00"})
    assert status == 200 and body["replayed"] is True  # applied before the termination: a replay still
    assert (await api.call("GET", "/subscribers/alice/balance"))[1]["available"] == "11.50"
