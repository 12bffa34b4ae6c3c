"""Notes, trouble tickets and the customer base report over real HTTP with the admin token: the
author is the token's name, a move outside the workflow is 422 naming ``status``, the report's
figures add up, and a read-only token reads but may not write."""

from __future__ import annotations

from datetime import UTC, datetime

from ocs.db.tokens import Role
from tests.ocs.test_access import call, token
from tests.ocs.test_api import Api, api
from tests.ocs.test_customers_api import BEA

__all__ = ["api"]


async def test_notes_tickets_and_the_report_over_http(api: Api) -> None:
    assert (await api.call("POST", "/customers", BEA))[0] == 201
    assert (await api.call("POST", "/customers/bea/lines", {"line_id": "bea-1"}))[0] == 201
    status, note = await api.call("POST", "/customers/bea/notes", {"text": "called about a bill", "channel": "phone"})
    assert status == 201 and note["channel"] == "phone" and note["author"]
    status, notes = await api.call("GET", "/customers/bea/notes")
    assert status == 200 and [found["note_id"] for found in notes["notes"]] == [note["note_id"]]
    assert (await api.call("POST", "/customers/bea/notes", {"text": "x", "channel": "fax"}))[0] == 422
    new = {
        "ticket_id": "T1",
        "customer_id": "bea",
        "line_id": "bea-1",
        "name": "no data",
        "description": "since Monday",
    }
    status, ticket = await api.call("POST", "/troubleTickets", new)
    assert status == 201 and ticket["status"] == "acknowledged"
    status, moved = await api.call(
        "PATCH", "/troubleTickets/T1", {"status": "inProgress", "status_change_reason": "on it"}
    )
    assert status == 200 and [move["status"] for move in moved["status_change_history"]] == [
        "acknowledged",
        "inProgress",
    ]
    status, refused = await api.call(
        "PATCH", "/troubleTickets/T1", {"status": "closed", "status_change_reason": "skip"}
    )
    assert status == 422 and refused["error"].startswith("status: ")
    assert (await api.call("GET", "/troubleTickets/T9"))[0] == 404
    status, listed = await api.call("GET", "/troubleTickets", query={"customer_id": "bea", "status": "inProgress"})
    assert status == 200 and [found["ticket_id"] for found in listed["tickets"]] == ["T1"]
    today = datetime.now(UTC).date().isoformat()
    status, report = await api.call("GET", "/reports/customers", query={"from": today, "to": today})
    assert status == 200, report
    totals = report["totals"]
    assert (totals["opening"], totals["gross_additions"], totals["closing"]) == (0, 1, 1)
    assert totals["closing"] == totals["opening"] + totals["gross_additions"] - totals["terminations"]
    status, backwards = await api.call("GET", "/reports/customers", query={"from": today, "to": "2000-01-01"})
    assert status == 422 and "to: " in backwards["error"]


async def test_a_read_only_token_reads_interactions_but_writes_none(api: Api) -> None:
    assert (await api.call("POST", "/customers", BEA))[0] == 201
    reader = await token(api, Role.READ_ONLY)
    assert (await call(api, "GET", "/customers/bea/notes", reader))[0] == 200
    assert (await call(api, "POST", "/customers/bea/notes", reader, {"text": "x"}))[0] == 403
    assert (
        await call(api, "POST", "/troubleTickets", reader, {"customer_id": "bea", "name": "n", "description": "d"})
    )[0] == 403
