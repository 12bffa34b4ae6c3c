"""Dunning over the wire (ocs/api/dunning.py): the whole OCS on port 0 over a private Redis and
SQLite, its API called over real HTTP, and python-diameter (an independent stack) as the network
element holding a live session on the customer's line.

A restrict step of the daily run reaches the session by RAR and the next CCR-U gets the plan's
suspended treatment; the payment through the API lifts it at once: a second RAR, then a normal
grant. A bar aborts the session (ASR) and refuses new sessions with 4010; the payment resumes the
line and a new session is granted. Then the doors: history, promises to pay, exemptions, refusals
naming the field, the OpenAPI entries."""

from __future__ import annotations

import asyncio
import json
import queue
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from diameter.message.avp.grouped import MultipleServicesCreditControl, RequestedServiceUnit, UsedServiceUnit
from diameter.message.commands import CreditControlAnswer
from diameter.node.application import Application

from ocs.billing.invoices import Invoices
from tests.ocs.billing_support import draft
from tests.ocs.conftest import CLIENT
from tests.ocs.test_api import Api, api
from tests.ocs.test_cli import ocs
from tests.ocs.test_python_diameter_client import (
    INITIAL,
    SERVER_HOST,
    SERVER_REALM,
    UPDATE,
    VOICE,
    TheirClient,
    call_to,
    ccr,
)
from tests.protocol.interop_support import EXCHANGE_TIMEOUT_SECONDS, ClientNode, stop_client_node

__all__ = ["api"]

MSISDN = "4915100000701"
CALLEE = "4917612345678"
RE_AUTH, ABORT_SESSION = 258, 274  # RFC 6733 section 3.1 / RFC 4006 section 3
REDIRECT, RESTRICT_ACCESS = 1, 2  # Final-Unit-Action, RFC 4006 section 8.35
CREDIT_CONTROL_APPLICATION = 4
DUE = date(2026, 2, 20)


class Answering(Application):  # type: ignore[misc]  # python-diameter ships no type information
    """The network element's credit-control application: it answers the server's RAR and ASR
    with 2001 and keeps them for the test."""

    def __init__(self) -> None:
        super().__init__(CREDIT_CONTROL_APPLICATION, is_auth_application=True)
        self.received: queue.Queue[Any] = queue.Queue()

    def handle_request(self, message: Any) -> None:
        self.received.put(message)
        self.send_answer(self.generate_answer(message, 2001))

    async def next_request(self) -> Any:
        return await asyncio.to_thread(self.received.get, True, EXCHANGE_TIMEOUT_SECONDS)


@dataclass
class Element:
    client: TheirClient
    application: Answering


@pytest.fixture
async def element(api: Api) -> AsyncIterator[Element]:
    node = ClientNode(CLIENT.origin_host, SERVER_REALM)
    peer = node.add_peer(
        f"aaa://{SERVER_HOST}:{api.server.port};transport=tcp", SERVER_REALM, ["127.0.0.1"], is_persistent=True
    )
    application = Answering()
    node.add_application(application, [peer])
    node.start()
    try:
        await asyncio.to_thread(application.wait_for_ready, EXCHANGE_TIMEOUT_SECONDS)
        yield Element(TheirClient(node, application), application)
    finally:
        await stop_client_node(node)


async def customer_with_a_bill(api: Api, customer_id: str = "eva") -> str:
    """A customer (no credit class: the default ladder) with a line, money on it, and January's
    bill of 10.00 unpaid (due 2026-02-20); her billing account."""
    body = {
        "customer_id": customer_id,
        "individual": {"given_name": "Eva", "family_name": "Example", "birth_date": "1980-01-01"},
        "billing_account": {"currency": "EUR", "bill_cycle_day": 1, "payment_method": "bank_transfer"},
    }
    assert (await api.call("POST", "/customers", body))[0] == 201
    line = {"line_id": f"{customer_id}-1", "identities": [{"kind": "msisdn", "value": MSISDN}]}
    assert (await api.call("POST", f"/customers/{customer_id}/lines", line))[0] == 201
    assert (await api.call("POST", f"/subscribers/{customer_id}-1/topups", {"id": "t-1", "amount": "20.00"}))[0] == 201
    customer = (await api.call("GET", f"/customers/{customer_id}"))[1]
    account = str(customer["billing_account"]["billing_account_id"])
    assert api.server.state.database is not None
    await Invoices(api.server.state.database).issue(draft(account, 1, 10))
    return account


async def run(api: Api, days_past_due: int) -> dict[str, Any]:
    day = date.fromordinal(DUE.toordinal() + days_past_due)
    status, answer = await api.call("POST", "/dunningRuns", {"date": day.isoformat()})
    assert status == 200, answer
    assert isinstance(answer, dict)
    return answer


async def pay(api: Api, account: str, reference: str, amount_micros: int = 10_000_000) -> None:
    body = {"billing_account_id": account, "reference": reference, "amount_micros": amount_micros}
    status, answer = await api.call("POST", "/payments", body)
    assert status == 201, answer


async def voice(element: Element, session: str, kind: int, number: int, used: int = 0) -> CreditControlAnswer:
    service = MultipleServicesCreditControl(
        requested_service_unit=RequestedServiceUnit(cc_time=60),
        used_service_unit=[UsedServiceUnit(cc_time=used)] if used else [],
    )
    request = ccr(session, kind, number, MSISDN, VOICE, services=(service,), information=call_to(CALLEE))
    return await element.client.send(request)


async def test_restrict_reaches_the_session_and_a_payment_lifts_it_at_once(api: Api, element: Element) -> None:
    account = await customer_with_a_bill(api)
    session = element.client.session()
    opened = await voice(element, session, INITIAL, 0)
    assert opened.result_code == 2001 and opened.multiple_services_credit_control[0].final_unit_indication is None

    assert (await run(api, 13))["steps_by_action"] == {"letter": 1}  # a letter, nothing on the network yet
    answer = await run(api, 14)
    assert answer["steps_by_action"] == {"restrict": 1}
    rar = await element.application.next_request()
    assert rar.header.command_code == RE_AUTH and rar.session_id == session
    restricted = await voice(element, session, UPDATE, 1, used=20)
    (service,) = restricted.multiple_services_credit_control
    assert service.final_unit_indication is not None
    assert service.final_unit_indication.final_unit_action in (REDIRECT, RESTRICT_ACCESS)  # the plan's choice

    await pay(api, account, "bank-1")  # the lift is done before the payment is answered
    rar = await element.application.next_request()
    assert rar.header.command_code == RE_AUTH and rar.session_id == session
    granted = await voice(element, session, UPDATE, 2, used=0)
    (service,) = granted.multiple_services_credit_control
    assert granted.result_code == 2001 and service.granted_service_unit.cc_time == 60
    assert service.final_unit_indication is None
    history = (await api.call("GET", f"/billingAccounts/{account}/dunning"))[1]
    assert [(step["action"], step["outcome"]) for step in history["steps"]] == [
        ("letter", "applied"),
        ("restrict", "applied"),
        ("lift", "applied"),
    ]
    assert history["steps"][1]["days_past_due"] == 14 and history["steps"][1]["overdue_micros"] == 10_000_000


async def test_a_bar_aborts_the_session_refuses_new_ones_and_a_payment_resumes_the_line(
    api: Api, element: Element
) -> None:
    account = await customer_with_a_bill(api)
    session = element.client.session()
    assert (await voice(element, session, INITIAL, 0)).result_code == 2001
    answer = await run(api, 30)  # everything due by day 30 at once, in the ladder's order
    assert answer["steps_by_action"] == {"letter": 2, "restrict": 1, "bar": 1}
    commands = [(await element.application.next_request()).header.command_code for _ in range(2)]
    assert commands == [RE_AUTH, ABORT_SESSION]
    refused = await voice(element, element.client.session(), INITIAL, 0)
    assert refused.result_code == 4010  # DIAMETER_END_USER_SERVICE_DENIED, RFC 4006 section 9.1

    await pay(api, account, "bank-1")
    customer = (await api.call("GET", "/customers/eva"))[1]
    assert customer["status"] == "active"
    granted = await voice(element, element.client.session(), INITIAL, 0)
    assert (
        granted.result_code == 2001 and granted.multiple_services_credit_control[0].granted_service_unit.cc_time == 60
    )
    assert (await run(api, 30))["steps_applied"] == 0  # the rerun: nothing new


async def test_the_doors_record_promises_and_exemptions_and_name_the_field_they_refuse(api: Api) -> None:
    account = await customer_with_a_bill(api, "fay")
    promise = {"promise_id": "ptp-1", "amount_micros": 10_000_000, "promised_date": "2099-03-01"}
    path = f"/billingAccounts/{account}/promisesToPay"
    assert (await api.call("POST", path, promise))[0] == 201
    assert (await api.call("POST", path, promise))[0] == 200  # the replay
    status, body = await api.call("POST", path, {**promise, "promised_date": "2099-04-01"})
    assert status == 409 and body["error"].startswith("promise_id:"), body
    status, body = await api.call("POST", path, {"amount_micros": 0, "promised_date": "2099-03-01"})
    assert status == 422 and body["error"].startswith("amount_micros:"), body
    status, body = await api.call("POST", "/billingAccounts/nobody/promisesToPay", promise)
    assert status == 404 and body["error"].startswith("billing_account_id:"), body
    assert (await run(api, 30))["paused_by_promises"] == 1
    status, body = await api.call("POST", "/dunningRuns", {"date": "yesterday"})
    assert status == 422 and body["error"].startswith("date:"), body

    assert (await api.call("PUT", "/customers/fay/dunningExemption", {"reason": "hospital"}))[0] == 200
    assert (await api.call("GET", f"/billingAccounts/{account}/dunning"))[1]["exempt"] is True
    status, body = await api.call("PUT", "/customers/nobody/dunningExemption", {"reason": "x"})
    assert status == 404 and body["error"].startswith("customer_id:"), body
    assert (await api.call("DELETE", "/customers/fay/dunningExemption"))[1]["removed"] is True

    status, trail = await api.call("GET", "/audit-trail", query={"account": account})
    assert any(record["route"] == "/billingAccounts/{billing_account_id}/promisesToPay" for record in trail["records"])
    document = (await api.call("GET", "/openapi.json"))[1]
    assert "post" in document["paths"]["/dunningRuns"]
    assert "get" in document["paths"]["/reports/revenue"]


async def test_the_command_line_runs_dunning_shows_the_history_and_the_revenue_report(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ("--url", api.url)
    account = await customer_with_a_bill(api, "gil")
    status, out, err = await ocs(capsys, *url, "dunning", "run", "--date", "2026-02-23")
    assert status == 0 and "1 step(s) applied (letter 1)" in out, err
    status, out, err = await ocs(capsys, *url, "dunning", "run", "--date", "2026-02-23")
    assert status == 0 and "0 step(s) applied" in out, err
    status, out, err = await ocs(capsys, *url, "dunning", "run", "--date", "23.02.2026")
    assert status == 2 and "23.02.2026" in err
    status, out, err = await ocs(capsys, *url, "dunning", "promise", account, "10", "--date", "2099-01-01")
    assert status == 0 and "10.00 by 2099-01-01" in out, err
    status, out, err = await ocs(capsys, *url, "dunning", "history", account)
    assert status == 0 and "letter" in out and "applied" in out and "promise" in out, err
    today = date.today().isoformat()  # the bill was issued now, by the server's clock
    status, out, err = await ocs(capsys, *url, "report", "revenue", "--from", today, "--to", today, "--json")
    assert status == 0, err
    assert json.loads(out)["totals"]["EUR"]["amount_micros"] == 10_000_000
    status, out, err = await ocs(capsys, *url, "report", "revenue", "--from", today, "--to", today)
    assert status == 0 and "rental" in out and "10.00" in out, err
    status, out, err = await ocs(capsys, *url, "report", "revenue", "--from", today, "--to", "2000-01-01")
    assert status == 1 and "to:" in err, err
