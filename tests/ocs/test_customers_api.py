"""The customer API over real HTTP on a running server (private Redis, SQLite): customers, company
trees and lines made and read with tokens, each refusal's status naming the field, who may call
what, the audit trail, and the startup pass finishing a line a crash left provisioning."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from balance.embedded import EmbeddedRedis
from balance.types import MAX_HIERARCHY_LEVELS
from ocs.api.customers import PROBLEM_ERRORS
from ocs.api.server import CONTEXT
from ocs.customers import history, records
from ocs.customers.history import ReasonCategory
from ocs.customers.service import Problem
from ocs.customers.values import LineStatus, NewCustomer
from ocs.db import audit
from ocs.db.tokens import Role
from tests.ocs.conftest import server_settings, server_with
from tests.ocs.test_access import call, token
from tests.ocs.test_api import Api, api

__all__ = ["api"]

EUR = 1_000_000
DAY_SECONDS = 86_400
BEA = {
    "customer_id": "bea",
    "individual": {
        "given_name": "Bea",
        "family_name": "Example",
        "birth_date": "1985-07-01",
        "identity_document": {"type": "national_id", "number": "T220001A", "issuing_country": "DE"},
        "contact_media": [{"kind": "phone", "value": "+4930123456"}],
    },
    "credit_profile": {"credit_score": 640, "credit_class": "C"},
    "billing_account": {"currency": "EUR", "bill_cycle_day": 5, "payment_method": "card"},
}
ACME = {
    "customer_id": "acme",
    "organization": {"name": "ACME GmbH", "registration_number": "HRB 1"},
    "credit_profile": {"credit_class": "A"},  # 300.00 of credit (config/credit_classes.toml)
    "money": {"payment_type": "postpaid", "credit_limit_micros": 300 * EUR},
}


def test_each_outcome_of_the_wing_has_one_http_status() -> None:
    assert {problem: error.status for problem, error in PROBLEM_ERRORS.items()} == {
        Problem.NOT_FOUND: 404,
        Problem.CONFLICT: 409,
        Problem.REFUSED: 422,
    }


async def test_an_individual_with_a_line_is_made_read_and_audited(api: Api) -> None:
    status, body = await api.call("POST", "/customers", BEA)
    assert status == 201, body
    assert body["individual"]["birth_date"] == "1985-07-01" and body["credit_profile"]["credit_class"] == "C"
    status, line = await api.call(
        "POST", "/customers/bea/lines", {"line_id": "bea-1", "identities": [{"kind": "msisdn", "value": "+4915500001"}]}
    )
    assert status == 201, line
    assert line["status"] == "active" and line["plan"] == "mobile_prepaid"
    assert (await api.call("GET", "/customers/bea"))[1] == body
    status, tree = await api.call("GET", "/customers/bea/tree")
    assert status == 200 and [found["line_id"] for found in tree["lines"]] == ["bea-1"] and tree["root"] is None
    status, listed = await api.call("GET", "/customers", query={"status": "active"})
    assert status == 200 and [found["customer_id"] for found in listed["customers"]] == ["bea"]
    assert (await api.call("GET", "/lines/bea-1"))[1] == line
    # The line is an engine account: the subscriber API sees it, with its identity.
    status, subscriber = await api.call("GET", "/subscribers/bea-1")
    assert status == 200 and subscriber["profile"]["identities"] == [{"kind": "msisdn", "value": "4915500001"}]
    database = api.server.state.database
    assert database is not None
    routes = [(entry.route, entry.resource_id, entry.status) for entry in await audit.read(database)]
    assert routes == [("/customers", "bea", 201), ("/customers/{customer_id}/lines", "bea-1", 201)]


async def test_a_company_tree_with_its_lines_is_read_whole(api: Api) -> None:
    assert (await api.call("POST", "/customers", ACME))[0] == 201
    status, branch = await api.call(
        "POST", "/customers/acme/nodes", {"node_id": "acme-b", "name": "Branch", "money": {"cap_micros": 100 * EUR}}
    )
    assert status == 201, branch
    department = {"node_id": "acme-d", "parent_node_id": "acme-b", "name": "Dept", "kind": "department"}
    assert (await api.call("POST", "/customers/acme/nodes", department))[0] == 201
    status, line = await api.call("POST", "/customers/acme/lines", {"node_id": "acme-d", "payment_type": "postpaid"})
    assert status == 201 and line["engine_parent_id"] == "acme-b", line
    status, tree = await api.call("GET", "/customers/acme/tree")
    assert status == 200
    [branch_node] = tree["root"]["children"]
    [department_node] = branch_node["children"]
    assert department_node["node"]["node_id"] == "acme-d" and department_node["lines"][0]["line_id"] == line["line_id"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({**BEA, "individual": {**BEA["individual"], "birth_date": "yesterday"}}, "individual.birth_date"),  # type: ignore[dict-item]
        ({**BEA, "nickname": "B"}, "nickname"),
        ({**BEA, "billing_account": {"currency": "EUR", "bill_cycle_day": 31}}, "billing_account.bill_cycle_day"),
        ({"customer_id": "x"}, "give exactly one of individual or organization"),
        ({**BEA, "customer_id": "not an id"}, "customer_id"),
    ],
)
async def test_a_refused_field_is_422_naming_it_and_nothing_is_made(api: Api, body: object, named: str) -> None:
    status, answer = await api.call("POST", "/customers", body)
    assert status == 422 and named in answer["error"], answer
    assert (await api.call("GET", "/customers"))[1] == {"customers": []}


async def test_each_refusal_has_its_status(api: Api) -> None:
    assert (await api.call("POST", "/customers", data="{not json"))[0] == 400
    assert (await api.call("GET", "/customers/nobody"))[0] == 404
    assert (await api.call("POST", "/customers/nobody/lines", {}))[0] == 404
    assert (await api.call("POST", "/customers", BEA))[0] == 201
    status, again = await api.call("POST", "/customers", BEA)
    assert status == 409 and again["error"].startswith("customer_id")
    line = {"identities": [{"kind": "imsi", "value": "262019999"}]}
    assert (await api.call("POST", "/customers/bea/lines", line))[0] == 201
    status, held = await api.call("POST", "/customers/bea/lines", line)
    assert status == 409 and held["error"].startswith("identities.0"), held
    status, plan = await api.call("POST", "/customers/bea/lines", {"plan": "gold"})
    assert status == 422 and plan["error"].startswith("plan"), plan
    assert (await api.call("GET", "/customers", query={"limit": "0"}))[0] == 422
    assert (await api.call("POST", "/customers", ACME))[0] == 201
    parent = None
    for level in range(2, MAX_HIERARCHY_LEVELS + 1):
        node = {"node_id": f"lv{level}", "parent_node_id": parent, "name": f"L{level}", "money": {}}
        assert (await api.call("POST", "/customers/acme/nodes", node))[0] == 201
        parent = f"lv{level}"
    status, deep = await api.call("POST", "/customers/acme/nodes", {"parent_node_id": parent, "name": "x", "money": {}})
    assert status == 422 and deep["error"].startswith("parent_node_id") and "5" in deep["error"], deep


async def test_staff_read_customers_and_only_admin_and_care_make_them(api: Api) -> None:
    assert (await api.call("POST", "/customers", BEA))[0] == 201
    read_only = await token(api, Role.READ_ONLY)
    care = await token(api, Role.CARE)
    self_care = await token(api, Role.SELF_CARE, account_id="bea-1")
    assert (await call(api, "GET", "/customers/bea", read_only))[0] == 200
    assert (await call(api, "POST", "/customers", read_only, {**BEA, "customer_id": "c2"}))[0] == 403
    assert (await call(api, "POST", "/customers", care, {**BEA, "customer_id": "c3"}))[0] == 201
    assert (await call(api, "GET", "/customers/bea", self_care))[0] == 403
    assert (await call(api, "GET", "/customers", None))[0] == 401
    status, document, _ = await call(api, "GET", "/openapi.json", None)  # open, as /health is
    assert status == 200 and document["openapi"].startswith("3.")


async def test_the_startup_pass_finishes_a_line_a_crash_left_provisioning(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = server_settings(embedded_redis.url, tmp_path / "spool.sqlite3")
    async with server_with(settings) as first:
        database = first.state.database
        assert database is not None
        await records.insert_customer(
            database,
            customer_id="cy",
            party_id="P-cy",
            new=NewCustomer.model_validate({**BEA, "customer_id": "cy"}),
            billing_account_id=None,
            root=None,
            now=datetime.now(UTC),
        )
        # The process dies after step 1: the row is written, the engine never asked.
        row = {**_line_row("cy-1"), "status": LineStatus.PROVISIONING.value}
        await records.insert_line(database, row, [])
    async with server_with(settings, flush=False) as restarted:
        database = restarted.state.database
        assert database is not None and restarted.state.store is not None
        line = await records.get_line(database, "cy-1")
        assert line is not None and line.status is LineStatus.ACTIVE
        assert (await restarted.state.store.balance("cy-1", 0)) is not None


def _line_row(line_id: str) -> dict[str, object]:
    return {
        "line_id": line_id,
        "customer_id": "cy",
        "node_id": None,
        "name": "",
        "network": "mobile",
        "payment_type": "prepaid",
        "plan": "mobile_prepaid",
        "credit_limit_micros": 0,
        "cap_micros": 0,
        "engine_parent_id": None,
        "created_at": datetime.now(UTC),
    }


async def test_a_lines_status_changes_reach_the_database_and_its_number_comes_free_after_quarantine(
    api: Api,
) -> None:
    """Review 13 L5: the lifecycle changed only the engine, so a terminated line stayed `active` in
    the database and kept its identity there: the customer API refused the number for good, while
    /subscribers took it once the quarantine was over."""
    assert (await api.call("POST", "/customers", BEA))[0] == 201
    number = {"kind": "msisdn", "value": "+4915500001"}
    assert (await api.call("POST", "/customers/bea/lines", {"line_id": "bea-1", "identities": [number]}))[0] == 201
    mirror, database = api.server.state.line_status, api.server.state.database
    assert mirror is not None and database is not None

    status, _ = await api.call("PUT", "/subscribers/bea-1/status", {"status": "barred", "reason": "fraud: sim box"})
    assert status == 200
    await mirror.drain()
    assert (await api.call("GET", "/lines/bea-1"))[1]["status"] == "barred"
    status, _ = await api.call("PUT", "/subscribers/bea-1/status", {"status": "terminated", "reason": "voluntary"})
    assert status == 200
    await mirror.drain()
    assert (await api.call("GET", "/lines/bea-1"))[1]["status"] == "terminated"
    changes = [
        (change.from_status, change.to_status, change.reason_category, change.author)
        for change in await history.read(database, until=datetime.now(UTC) + timedelta(days=1))
        if change.entity_id == "bea-1" and change.entity_kind is history.EntityKind.LINE
    ]
    assert changes == [
        ("provisioning", "active", None, "ocs"),
        ("active", "barred", ReasonCategory.FRAUD, "tests"),
        ("barred", "terminated", ReasonCategory.VOLUNTARY, "tests"),
    ]

    # The number is in quarantine: both APIs refuse it, and nothing is left of the refused line...
    newcomer = {"line_id": "bea-2", "identities": [number]}
    status, refused = await api.call("POST", "/customers/bea/lines", newcomer)
    assert status == 409 and "quarantine" in str(refused), refused
    assert (await api.call("GET", "/lines/bea-2"))[0] == 404
    # ... until the quarantine is over: then the customer API takes it, as /subscribers does.
    provisioning = api.http.runner.app[CONTEXT].provisioning
    provisioning.clock = lambda: time.time() + 90 * DAY_SECONDS + 1
    status, line = await api.call("POST", "/customers/bea/lines", newcomer)
    assert status == 201, line
    assert line["status"] == "active"
