"""The lifecycle API (ocs/api/lifecycle.py) over real HTTP on a running server (private Redis,
SQLite), with the project's DiameterClient over real TCP as the network element: a customer's
suspend reaches its line's live session by RAR at once and the next CCR-U gets the suspended
treatment; resume gets normal grants again; bar aborts the session (ASR) and refuses new requests
with 4010. Refusals name the field; the audit trail keeps who and why."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from ocs.api.fields import SECONDS_PER_DAY
from ocs.api.server import CONTEXT, CUSTOMERS
from protocol.message import Message
from tests.ocs.test_api import Api, api, wait_for
from tests.ocs.test_credit_control import code, seconds
from tests.ocs.test_lifecycle import REDIRECT, granted_seconds, request
from tests.ocs.test_sessions import ABORT_SESSION, RE_AUTH, answering

__all__ = ["api"]

MSISDN = "4915100000601"
DORA = {
    "customer_id": "dora",
    "individual": {"given_name": "Dora", "family_name": "Example", "birth_date": "1980-01-01"},
}


async def dora_with_a_line(api: Api) -> None:
    assert (await api.call("POST", "/customers", DORA))[0] == 201
    body = {"line_id": "dora-1", "identities": [{"kind": "msisdn", "value": MSISDN}]}
    status, answer = await api.call("POST", "/customers/dora/lines", body)
    assert status == 201, answer
    status, answer = await api.call("POST", "/subscribers/dora-1/topups", {"id": "t-1", "amount": "20.00"})
    assert status == 201, answer


async def change(api: Api, path: str, status: str, reason: str, category: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"status": status, "reason": reason}
    if category is not None:
        body["reason_category"] = category
    code_, answer = await api.call("PUT", path, body)
    assert code_ == 200, answer
    assert isinstance(answer, dict)
    return answer


async def test_a_customer_suspended_resumed_and_barred_reaches_its_line_session_at_once(api: Api) -> None:
    await dora_with_a_line(api)
    client = await api.server.client()
    received: list[Message] = []
    client.on_request = answering(2001, received)
    opened = await request(client, "call-1", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=MSISDN)
    assert code(opened) == 2001 and granted_seconds(opened) == 60

    answer = await change(api, "/customers/dora/status", "suspended", "invoice unpaid", "collections")
    assert answer["customer_id"] == "dora" and answer["status"] == "suspended"
    await wait_for(lambda: len(received) == 1)
    assert received[0].command_code == RE_AUTH and received[0].get("Session-Id") == "call-1"
    update = await request(
        client,
        "call-1",
        "UPDATE_REQUEST",
        1,
        seconds("Used-Service-Unit", 20),
        seconds("Requested-Service-Unit", 60),
        msisdn=MSISDN,
    )
    final_unit = update.find("Final-Unit-Indication")
    assert final_unit is not None and final_unit.get("Final-Unit-Action") == REDIRECT
    line = (await api.call("GET", "/lines/dora-1"))[1]
    assert (line["status"], line["own_status"]) == ("suspended", "active")

    await change(api, "/customers/dora/status", "active", "paid")
    await wait_for(lambda: len(received) == 2)
    assert received[1].command_code == RE_AUTH
    update = await request(client, "call-1", "UPDATE_REQUEST", 2, seconds("Requested-Service-Unit", 60), msisdn=MSISDN)
    assert code(update) == 2001 and granted_seconds(update) == 60 and update.find("Final-Unit-Indication") is None

    await change(api, "/customers/dora/status", "barred", "fraud: sim box", "fraud")
    await wait_for(lambda: len(received) == 3)
    assert received[2].command_code == ABORT_SESSION and received[2].get("Session-Id") == "call-1"
    refused = await request(
        client, "call-2", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=MSISDN
    )
    assert code(refused) == 4010  # DIAMETER_END_USER_SERVICE_DENIED, RFC 4006 section 9.1
    await client.close()

    status, trail = await api.call("GET", "/audit-trail", query={"account": "dora"})
    assert status == 200
    changes = [record for record in trail["records"] if record["route"] == "/customers/{customer_id}/status"]
    assert [record["after"] for record in changes][-1] == {"status": "barred", "reason_category": "fraud"}
    assert changes[-1]["actor"]["name"] == "tests" and "fraud: sim box" in changes[-1]["detail"]


async def test_a_line_and_a_node_change_through_their_routes_and_refusals_name_the_field(api: Api) -> None:
    await dora_with_a_line(api)
    answer = await change(api, "/lines/dora-1/status", "suspended", "lost phone", "voluntary")
    assert (answer["status"], answer["own_status"]) == ("suspended", "suspended")
    status, body = await api.call("PUT", "/lines/dora-1/status", {"status": "paused", "reason": "x"})
    assert status == 422 and body["error"].startswith("status:"), body
    status, body = await api.call("PUT", "/lines/dora-1/status", {"status": "active"})
    assert status == 422 and body["error"].startswith("reason:"), body
    await change(api, "/customers/dora/status", "terminated", "moved abroad", "voluntary")
    status, body = await api.call("PUT", "/customers/dora/status", {"status": "active", "reason": "back"})
    assert status == 409 and body["error"].startswith("status:"), body
    status, body = await api.call("PUT", "/customers/nobody/status", {"status": "barred", "reason": "x"})
    assert status == 404 and body["error"].startswith("customer_id:"), body

    company = {"customer_id": "orga", "organization": {"name": "Orga AG", "registration_number": "HRB 9"}}
    assert (await api.call("POST", "/customers", company))[0] == 201
    assert (await api.call("POST", "/customers/orga/nodes", {"node_id": "ops", "name": "Ops"}))[0] == 201
    answer = await change(api, "/customers/orga/nodes/ops/status", "barred", "abuse", "fraud")
    assert answer["node_id"] == "ops" and answer["status"] == "barred"
    status, body = await api.call("PUT", "/customers/dora/nodes/ops/status", {"status": "active", "reason": "x"})
    assert status == 404 and body["error"].startswith("node_id:"), body
    document = (await api.call("GET", "/openapi.json"))[1]
    assert "put" in document["paths"]["/customers/{customer_id}/nodes/{node_id}/status"]


async def test_a_line_suspended_through_subscribers_stays_so_through_its_customers_suspend_and_resume(
    api: Api,
) -> None:
    """The older /subscribers status route sets a customer's line's own status (the lifecycle), so
    the customer's resume does not undo it; the answer keeps that route's shape."""
    await dora_with_a_line(api)
    status, answer = await api.call("PUT", "/subscribers/dora-1/status", {"status": "suspended", "reason": "lost"})
    assert status == 200, answer
    assert (answer["previous_status"], answer["status"], answer["changed_accounts"]) == (
        "active",
        "suspended",
        ["dora-1"],
    )
    line = (await api.call("GET", "/lines/dora-1"))[1]
    assert (line["status"], line["own_status"]) == ("suspended", "suspended")

    await change(api, "/customers/dora/status", "suspended", "invoice unpaid", "collections")
    await change(api, "/customers/dora/status", "active", "paid")
    line = (await api.call("GET", "/lines/dora-1"))[1]
    assert (line["status"], line["own_status"]) == ("suspended", "suspended")
    assert (await api.call("GET", "/subscribers/dora-1"))[1]["balance"]["status"] == "suspended"

    # The lifecycle's table holds here too: a barred line is not "suspended" (409 naming status).
    await api.call("PUT", "/subscribers/dora-1/status", {"status": "barred"})
    status, body = await api.call("PUT", "/subscribers/dora-1/status", {"status": "suspended"})
    assert status == 409 and body["error"].startswith("status:"), body


async def test_a_company_node_set_through_subscribers_keeps_its_own_status_in_the_lifecycle(api: Api) -> None:
    company = {
        "customer_id": "orgb",
        "organization": {"name": "Orgb AG", "registration_number": "HRB 10"},
        "money": {"payment_type": "prepaid"},
    }
    assert (await api.call("POST", "/customers", company))[0] == 201
    status, node = await api.call("POST", "/customers/orgb/nodes", {"node_id": "sales", "name": "Sales", "money": {}})
    assert status == 201, node
    body = {"line_id": "orgb-1", "node_id": "sales", "identities": [{"kind": "msisdn", "value": "4915100000611"}]}
    assert (await api.call("POST", "/customers/orgb/lines", body))[0] == 201

    status, answer = await api.call("PUT", "/subscribers/sales/status", {"status": "suspended", "reason": "budget"})
    assert status == 200 and answer["changed_accounts"] == ["sales", "orgb-1"], answer
    await change(api, "/customers/orgb/status", "suspended", "invoice unpaid", "collections")
    await change(api, "/customers/orgb/status", "active", "paid")
    tree = (await api.call("GET", "/customers/orgb/tree"))[1]
    assert tree["root"]["children"][0]["node"]["status"] == "suspended", tree
    line = (await api.call("GET", "/lines/orgb-1"))[1]
    assert (line["status"], line["own_status"]) == ("suspended", "active")


async def test_a_terminated_customer_s_numbers_are_held_until_the_quarantine_ends(api: Api) -> None:
    """Issue 13: terminate = "identities freed after a quarantine period", through the customer
    route: the line's number is refused to a new line (nothing of it kept) until the quarantine is
    over, then a new line of another customer takes it."""
    await dora_with_a_line(api)
    await change(api, "/customers/dora/status", "terminated", "moved abroad", "voluntary")
    line = (await api.call("GET", "/lines/dora-1"))[1]
    assert line["status"] == "terminated" and line["identities"] == []
    assert (await api.call("POST", "/customers", {**DORA, "customer_id": "eve"}))[0] == 201
    newcomer = {"line_id": "eve-1", "identities": [{"kind": "msisdn", "value": MSISDN}]}
    status, refused = await api.call("POST", "/customers/eve/lines", newcomer)
    assert status == 409 and "quarantine" in str(refused), refused
    assert (await api.call("GET", "/lines/eve-1"))[0] == 404

    provisioning = api.http.runner.app[CONTEXT].provisioning
    quarantine = api.server.state.settings.lifecycle.identity_quarantine_days * SECONDS_PER_DAY
    provisioning.clock = lambda: time.time() + quarantine - 60  # a minute before its end: still held
    assert (await api.call("POST", "/customers/eve/lines", newcomer))[0] == 409
    provisioning.clock = lambda: time.time() + quarantine + 1
    status, taken = await api.call("POST", "/customers/eve/lines", newcomer)
    assert status == 201 and taken["status"] == "active", taken


async def test_the_prepaid_inactivity_figure_is_counted_from_real_usage_records(api: Api) -> None:
    """Issue 13: "prepaid inactivity churn (no usage in N days, configured)": two prepaid lines made
    long ago, one used now by a CCR through the server; once the spool is drained into the business
    database, the report counts only the other one as inactive."""
    state = api.server.state
    inactivity_days = state.settings.customers.inactivity_days
    api.http.runner.app[CUSTOMERS].clock = lambda: time.time() - (inactivity_days + 10) * SECONDS_PER_DAY
    await dora_with_a_line(api)
    idle = {"line_id": "dora-2", "identities": [{"kind": "msisdn", "value": "4915100000602"}]}
    assert (await api.call("POST", "/customers/dora/lines", idle))[0] == 201

    client = await api.server.client()
    opened = await request(client, "use-1", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=MSISDN)
    assert code(opened) == 2001
    closed = await request(client, "use-1", "TERMINATION_REQUEST", 1, seconds("Used-Service-Unit", 30), msisdn=MSISDN)
    assert code(closed) == 2001
    await client.close()
    assert state.spool is not None and state.store is not None
    await state.spool.drain_once(state.store, batch_size=state.settings.spool.batch_size)
    assert set(await state.spool.last_usage_by_account()) == {"dora-1"}

    today = datetime.now(UTC).date().isoformat()
    status, report = await api.call("GET", "/reports/customers", query={"from": today, "to": today})
    assert status == 200, report
    inactivity = report["prepaid_inactivity"]
    assert (inactivity["inactivity_days"], inactivity["prepaid_lines"], inactivity["inactive_lines"]) == (
        inactivity_days,
        2,
        1,
    )
