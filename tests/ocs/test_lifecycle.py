"""The lifecycle enforced on live sessions (issue 13): a status change set through the API reaches
the network at once, for the account and every account under it, with who and why recorded.

The whole OCS runs on port 0 over a private Redis; the API is called over real HTTP and the
network element is the project's DiameterClient over real TCP, answering the server's RAR and ASR
(tests/ocs/test_sessions.py ``answering``). A company tree group -> department -> line draws the
line's money from the group's pool within the caps (balance/RULES.md "Company money").
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from balance.directory import Identity, IdentityKind
from balance.types import AccountStatus
from ocs.api.server import CONTEXT
from ocs.events import AccountEvent, StatusChanged
from protocol.aio import DiameterClient
from protocol.message import Avp, Message
from tests.ocs.test_api import Api, api, wait_for
from tests.ocs.test_credit_control import call_to, ccr, code, seconds
from tests.ocs.test_sessions import ABORT_SESSION, RE_AUTH, answering

__all__ = ["api"]  # the fixture, imported from test_api

LINE_MSISDN = "4915100000201"
CALLED = call_to("4917612345678")
REDIRECT = 1  # Final-Unit-Action REDIRECT, RFC 4006 section 8.35
DAY_SECONDS = 86_400


def node(account_id: str, **fields: object) -> dict[str, object]:
    return {"account_id": account_id, "payment_type": "prepaid", "plan": "mobile_prepaid", **fields}


async def company(api: Api) -> None:
    """group (100.00 in main) -> dept (cap 50.00) -> line (cap 20.00, an MSISDN, no money)."""
    bodies = [
        node("group", buckets=[{"kind": "main", "amount": "100.00"}]),
        node("dept", parent_id="group", child_cap="50.00"),
        node("line", parent_id="dept", child_cap="20.00", identities=[{"kind": "msisdn", "value": LINE_MSISDN}]),
    ]
    for body in bodies:
        status, answer = await api.call("POST", "/subscribers", body)
        assert status == 201, answer


def granted_seconds(answer: Message) -> int:
    granted = answer.find("Granted-Service-Unit")
    value = granted.get("CC-Time") if granted is not None else None
    return value if isinstance(value, int) else 0


async def request(client: DiameterClient, session: str, kind: str, number: int, *extra: Avp, msisdn: str) -> Message:
    return await client.request(ccr(session, kind, number, *extra, CALLED, msisdn=msisdn))


async def set_status(api: Api, account_id: str, status: str, reason: str = "") -> dict[str, Any]:
    body = {"status": status, "reason": reason} if reason else {"status": status}
    code_, answer = await api.call("PUT", f"/subscribers/{account_id}/status", body)
    assert code_ == 200, answer
    assert isinstance(answer, dict)
    return answer


async def until_terminated(api: Api, account_id: str) -> None:
    """Wait until the account's termination has finished in the background: nothing reserved, its
    identities in quarantine (ocs/api/provisioning.py ``_terminate``)."""
    provisioning = api.http.runner.app[CONTEXT].provisioning
    await asyncio.gather(*provisioning._terminations)
    view = await provisioning.view(account_id)
    assert view.reservations == 0


def enforcement_count(api: Api, change: str) -> float:
    registry = api.server.state.metrics.registry
    return registry.get_sample_value("ocs_lifecycle_enforcement_seconds_count", {"change": change}) or 0.0


async def test_a_department_suspended_and_resumed_reaches_the_line_session_at_once(api: Api) -> None:
    await company(api)
    seen: list[AccountEvent] = []
    api.server.state.events.subscribe(lambda event: seen.append(event) or 0)
    client = await api.server.client()
    received: list[Message] = []
    client.on_request = answering(2001, received)
    opened = await request(
        client, "call-1", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=LINE_MSISDN
    )
    assert code(opened) == 2001 and granted_seconds(opened) == 60 and opened.find("Final-Unit-Indication") is None

    # Suspend the department: its line changes with it, and the line's session (not in final-unit
    # state) gets a RAR at once; its CCR-U in answer gets the plan's suspended treatment.
    answer = await set_status(api, "dept", "suspended", "invoice 2026-11 unpaid")
    assert answer["changed_accounts"] == ["dept", "line"] and answer["notified_sessions"] == 1
    await wait_for(lambda: len(received) == 1)
    assert received[0].command_code == RE_AUTH and received[0].get("Session-Id") == "call-1"
    update = await request(
        client,
        "call-1",
        "UPDATE_REQUEST",
        1,
        seconds("Used-Service-Unit", 20),
        seconds("Requested-Service-Unit", 60),
        msisdn=LINE_MSISDN,
    )
    final_unit = update.find("Final-Unit-Indication")
    assert final_unit is not None and final_unit.get("Final-Unit-Action") == REDIRECT
    assert granted_seconds(update) == 0
    assert enforcement_count(api, "suspended") == 1

    # Who and why: on each event (one per account changed) and in the audit trail.
    line_events = [event for event in seen if isinstance(event, StatusChanged) and event.account_id == "line"]
    assert line_events == [
        StatusChanged("line", AccountStatus.ACTIVE, AccountStatus.SUSPENDED, "tests", "invoice 2026-11 unpaid")
    ]
    status, trail = await api.call("GET", "/audit-trail", query={"account": "dept"})
    assert status == 200
    (record,) = [record for record in trail["records"] if record["route"].endswith("/status")]
    assert record["actor"]["name"] == "tests" and record["after"] == {"status": "suspended"}
    assert record["detail"] == "reason: invoice 2026-11 unpaid; line active->suspended"

    # Resume: another RAR at once, and the next CCR-U gets a normal grant.
    answer = await set_status(api, "dept", "active", "paid")
    assert answer["changed_accounts"] == ["dept", "line"] and answer["notified_sessions"] == 1
    await wait_for(lambda: len(received) == 2)
    assert received[1].command_code == RE_AUTH and received[1].get("Session-Id") == "call-1"
    update = await request(
        client, "call-1", "UPDATE_REQUEST", 2, seconds("Requested-Service-Unit", 60), msisdn=LINE_MSISDN
    )
    assert code(update) == 2001 and granted_seconds(update) == 60 and update.find("Final-Unit-Indication") is None
    assert enforcement_count(api, "active") == 1
    await client.close()


async def test_a_barred_line_gets_an_abort_and_new_requests_4010(api: Api) -> None:
    await company(api)
    client = await api.server.client()
    received: list[Message] = []
    client.on_request = answering(2001, received)
    opened = await request(
        client, "call-b", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=LINE_MSISDN
    )
    assert code(opened) == 2001
    answer = await set_status(api, "group", "barred", "fraud suspected")
    assert answer["changed_accounts"] == ["group", "dept", "line"] and answer["notified_sessions"] == 1
    await wait_for(lambda: len(received) == 1)
    assert received[0].command_code == ABORT_SESSION and received[0].get("Session-Id") == "call-b"
    refused = await request(
        client, "call-c", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=LINE_MSISDN
    )
    assert code(refused) == 4010  # DIAMETER_END_USER_SERVICE_DENIED, RFC 4006 section 9.1
    assert enforcement_count(api, "barred") == 1
    await client.close()


async def test_terminating_aborts_releases_the_reservation_and_quarantines_the_identity(api: Api) -> None:
    await company(api)
    store = api.server.state.store
    assert store is not None
    client = await api.server.client()
    received: list[Message] = []
    client.on_request = answering(2001, received)
    assert (
        code(
            await request(
                client, "call-t", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=LINE_MSISDN
            )
        )
        == 2001
    )
    update = await request(
        client,
        "call-t",
        "UPDATE_REQUEST",
        1,
        seconds("Used-Service-Unit", 60),
        seconds("Requested-Service-Unit", 60),
        msisdn=LINE_MSISDN,
    )
    assert code(update) == 2001
    before = await store.balance("line", int(time.time()))
    assert before is not None and before.reservations == 1 and before.committed_micros > 0
    group_before = await store.balance("group", int(time.time()))
    assert group_before is not None and group_before.held_micros > 0  # the line's grant holds group money

    answer = await set_status(api, "line", "terminated", "contract ended")
    assert answer["notified_sessions"] == 1 and answer["released_sessions"] == 0  # not before its last usage
    await wait_for(lambda: len(received) == 1)
    assert received[0].command_code == ABORT_SESSION and received[0].get("Session-Id") == "call-t"
    # The client answers the ASR with its CCR-T and the usage since its last report: it is charged
    # (review 13 L3: released at once, this CCR-T found a closed session and 30 s passed free).
    final = await request(
        client, "call-t", "TERMINATION_REQUEST", 2, seconds("Used-Service-Unit", 30), msisdn=LINE_MSISDN
    )
    assert code(final) == 2001
    await until_terminated(api, "line")
    after = await store.balance("line", int(time.time()))
    group_after = await store.balance("group", int(time.time()))
    assert after is not None and group_after is not None
    assert after.reservations == 0 and group_after.held_micros == 0  # nothing is left held
    # Both reports charged: the 30 s cost what the 60 s did (the plan charges whole minutes).
    assert after.committed_micros == 2 * before.committed_micros

    # The identity names nobody on the network (5030), and no other account may take it...
    unknown = await request(
        client, "call-u", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=LINE_MSISDN
    )
    assert code(unknown) == 5030  # DIAMETER_USER_UNKNOWN, RFC 4006 section 9.1
    newcomer = node(
        "newcomer", identities=[{"kind": "msisdn", "value": LINE_MSISDN}], buckets=[{"kind": "main", "amount": "5.00"}]
    )
    status, refused = await api.call("POST", "/subscribers", newcomer)
    assert status == 409 and "quarantine" in refused["error"]
    assert await store.balance("newcomer", int(time.time())) is None  # nothing was created
    # ... until the quarantine (90 days by default) is over.
    provisioning = api.http.runner.app[CONTEXT].provisioning
    provisioning.clock = lambda: time.time() + 90 * DAY_SECONDS + 1
    status, created = await api.call("POST", "/subscribers", newcomer)
    assert status == 201, created
    welcomed = await request(
        client, "call-n", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=LINE_MSISDN
    )
    assert code(welcomed) == 2001 and granted_seconds(welcomed) == 60
    assert enforcement_count(api, "terminated") == 1
    await client.close()


async def test_a_line_keeps_its_own_status_through_its_departments_changes(api: Api) -> None:
    """Review 13 L1: suspending and resuming the department used to copy each status onto the line,
    so a line barred on its own came back active. Each account keeps its own now."""
    await company(api)
    client = await api.server.client()
    client.on_request = answering(2001, [])
    await set_status(api, "line", "barred", "fraud suspected")
    answer = await set_status(api, "dept", "suspended", "invoice unpaid")
    assert answer["changed_accounts"] == ["dept"]  # the line was barred already: worse than suspended
    answer = await set_status(api, "dept", "active", "paid")
    assert answer["changed_accounts"] == ["dept"]
    store = api.server.state.store
    assert store is not None
    line = await store.balance("line", int(time.time()))
    assert line is not None and line.account.status is AccountStatus.BARRED
    refused = await request(
        client, "call-l", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=LINE_MSISDN
    )
    assert code(refused) == 4010  # DIAMETER_END_USER_SERVICE_DENIED, RFC 4006 section 9.1
    await client.close()


async def test_nothing_new_goes_under_a_barred_or_terminated_node(api: Api) -> None:
    """Review 13 L2: a line provisioned under a terminated department was active and drew the pool."""
    await company(api)
    await set_status(api, "dept", "terminated", "closed")
    second = node("line2", parent_id="dept", identities=[{"kind": "msisdn", "value": "4915100000202"}])
    status, refused = await api.call("POST", "/subscribers", second)
    assert status == 422 and "parent_id" in refused["error"] and "terminated" in refused["error"]
    store = api.server.state.store
    assert store is not None and await store.balance("line2", int(time.time())) is None


async def test_terminating_again_finishes_what_a_failed_attempt_left(api: Api) -> None:
    """Review 13 L4: a terminate that stopped after writing the status (here: the status written
    straight into the engine, as that crash leaves it) left the reservation open and the identity
    bound; terminating again must finish both."""
    await company(api)
    store = api.server.state.store
    assert store is not None
    client = await api.server.client()
    client.on_request = answering(2001, [])
    opened = await request(
        client, "call-r", "INITIAL_REQUEST", 0, seconds("Requested-Service-Unit", 60), msisdn=LINE_MSISDN
    )
    assert code(opened) == 2001
    await store.update("line", status=AccountStatus.TERMINATED)
    answer = await set_status(api, "line", "terminated", "contract ended")
    assert answer["released_sessions"] == 1
    line = await store.balance("line", int(time.time()))
    assert line is not None and line.reservations == 0
    provisioning = api.http.runner.app[CONTEXT].provisioning
    assert await provisioning.directory.quarantined_until(Identity(IdentityKind.E164, LINE_MSISDN)) is not None
    await client.close()
