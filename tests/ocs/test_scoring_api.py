"""Scores over the wire (ocs/api/scores.py, ocs/cli/scores.py): the whole OCS on port 0 over a
private Redis and SQLite, its API called over real HTTP and through the ``ocs`` command line.

A customer with an overdue bill is scored factor by factor; a payment through the API rescores
her before it is answered (a history row caused by the payment, her segment on the customer
record); the history, the movement report, refusals naming the field, the OpenAPI entries; and
``ocs customer score`` explaining the score line by line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from ocs.billing.invoices import Invoices
from ocs.billing.values import DraftLine, InvoiceDraft, LineKind
from ocs.db.customers import customers
from tests.ocs.test_api import Api, api
from tests.ocs.test_cli import ocs

__all__ = ["api"]

UNIT = 1_000_000


async def customer_with_an_overdue_bill(api: Api, customer_id: str = "eva") -> str:
    """A customer with a line and a bill of 10.00 due 20 days ago, unpaid; her billing account."""
    body = {
        "customer_id": customer_id,
        "individual": {"given_name": "Eva", "family_name": "Example", "birth_date": "1980-01-01"},
        "billing_account": {"currency": "EUR", "bill_cycle_day": 1, "payment_method": "bank_transfer"},
    }
    assert (await api.call("POST", "/customers", body))[0] == 201
    line = {"line_id": f"{customer_id}-1", "identities": [{"kind": "msisdn", "value": "4915100000801"}]}
    assert (await api.call("POST", f"/customers/{customer_id}/lines", line))[0] == 201
    account = str((await api.call("GET", f"/customers/{customer_id}"))[1]["billing_account"]["billing_account_id"])
    due = datetime.now(UTC).date() - timedelta(days=20)
    period = due - timedelta(days=30)
    rental = DraftLine(kind=LineKind.RENTAL, description="rental", amount_micros=10 * UNIT, tax_micros=0)
    draft = InvoiceDraft(
        billing_account_id=account,
        period_start=period,
        period_end=period,
        due_date=due,
        catalog_version="2026-01",
        lines=[rental],
    )
    assert api.server.state.database is not None
    await Invoices(api.server.state.database).issue(draft)
    return account


def by_factor(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {factor["factor"]: factor for factor in body["factors"]}


async def test_a_score_is_explained_and_a_payment_rescores_before_it_is_answered(api: Api) -> None:
    account = await customer_with_an_overdue_bill(api)
    status, score = await api.call("GET", "/customers/eva/score")
    assert status == 200, score
    factors = by_factor(score)
    assert (factors["days_late"]["value"], factors["days_late"]["points"]) == (20, -10)
    assert factors["days_late"]["explanation"].startswith("at most 20 days late (1 of 1 invoices")
    assert (factors["overdue_invoices"]["value"], factors["overdue_invoices"]["points"]) == (1, -10)
    assert factors["tenure"]["explanation"].startswith("tenure 0 days")
    assert score["points"] == sum(factor["points"] for factor in score["factors"])
    assert score["customer_segment"] is None  # a score shown is not stored
    assert (await api.call("GET", "/customers/eva/score-history"))[1] == {"customer_id": "eva", "scores": []}

    payment = {"billing_account_id": account, "reference": "bank-1", "amount_micros": 10 * UNIT}
    assert (await api.call("POST", "/payments", payment))[0] == 201
    status, history = await api.call("GET", "/customers/eva/score-history")
    assert status == 200
    [stored] = history["scores"]
    assert stored["cause"] == "payment"
    assert by_factor(stored)["overdue_invoices"]["points"] == 5
    assert stored["points"] == score["points"] + 15
    database = api.server.state.database
    assert database is not None
    async with database.connect() as connection:
        segment = (
            await connection.execute(select(customers.c.segment).where(customers.c.customer_id == "eva"))
        ).scalar()
    assert segment == stored["segment"]
    assert (await api.call("GET", "/customers/eva/score"))[1]["customer_segment"] == stored["segment"]


async def test_the_doors_refuse_naming_the_field_and_are_documented(api: Api) -> None:
    status, body = await api.call("GET", "/customers/nobody/score")
    assert status == 404 and "nobody" in body["error"]
    assert (await api.call("GET", "/customers/nobody/score-history"))[0] == 404
    status, body = await api.call("GET", "/customers/eva/score-history", query={"limit": "0"})
    assert status == 422 and "limit" in body["error"]
    status, body = await api.call("GET", "/reports/segment-movements", query={"from": "2026-05-02", "to": "2026-05-01"})
    assert status == 422 and "to" in body["error"]
    status, body = await api.call("GET", "/reports/segment-movements", query={"from": "2026-05-01", "to": "2026-05-02"})
    assert status == 200 and body == {"from_date": "2026-05-01", "to_date": "2026-05-02", "movements": []}
    paths = (await api.call("GET", "/openapi.json"))[1]["paths"]
    assert {"/customers/{customer_id}/score", "/customers/{customer_id}/score-history"} <= set(paths)
    assert "/reports/segment-movements" in paths


async def test_ocs_customer_score_explains_the_score_factor_by_factor(
    api: Api, capsys: pytest.CaptureFixture[str]
) -> None:
    account = await customer_with_an_overdue_bill(api, "fay")
    status, out, err = await ocs(capsys, "--url", api.url, "customer", "score", "fay")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("customer  fay: ") and "points, segment " in lines[0]
    assert "   -10  days_late         at most 20 days late (1 of 1 invoices" in out
    assert "   -10  overdue_invoices  1 invoices overdue and unpaid (band from 1) -> -10 points" in out
    assert lines[-1].endswith("total")
    payment = {"billing_account_id": account, "reference": "bank-1", "amount_micros": 10 * UNIT}
    assert (await api.call("POST", "/payments", payment))[0] == 201
    status, out, _ = await ocs(capsys, "--url", api.url, "customer", "score", "fay", "--history")
    assert status == 0 and "fay: 1 stored score(s), newest first" in out and "(payment)" in out
    status, out, _ = await ocs(
        capsys, "--url", api.url, "report", "segments", "--from", "2026-05-01", "--to", "2026-05-02"
    )
    assert status == 0 and out == "segment movements from 2026-05-01 to 2026-05-02: 0 customer(s)\n"
    status, _, err = await ocs(capsys, "--url", api.url, "customer", "score", "nobody")
    assert status == 1 and "nobody" in err


async def test_the_server_rescores_on_a_line_terminated_and_scores_everyone_daily(api: Api) -> None:
    await customer_with_an_overdue_bill(api, "gus")
    state = api.server.state
    assert state.scoring is not None and "scoring" in state.duties.names
    body = {"status": "terminated", "reason": "moved abroad"}
    status, answer = await api.call("PUT", "/lines/gus-1/status", body)
    assert status == 200, answer
    await state.scoring.drain()
    [stored] = (await api.call("GET", "/customers/gus/score-history"))[1]["scores"]
    assert stored["cause"] == "status"
