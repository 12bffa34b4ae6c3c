"""Bills, payments, the bank file, credit notes, disputes and the aging report over real HTTP:
201 then 200 on a replay, 409 naming ``reference``, a bank file whose bad row names its line and
field while the good rows apply, the roles, and the routes in the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, date, datetime

from ocs.billing.invoices import Invoices
from ocs.billing.receivables import aging_bucket
from ocs.db.tokens import Role
from tests.ocs.billing_support import draft
from tests.ocs.test_access import call, token
from tests.ocs.test_api import Api, api
from tests.ocs.test_customers_api import BEA

__all__ = ["api"]


async def _bea_with_a_bill(api: Api) -> tuple[str, str]:
    assert (await api.call("POST", "/customers", BEA))[0] == 201
    status, customer = await api.call("GET", "/customers/bea")
    assert status == 200
    account = customer["billing_account"]["billing_account_id"]
    database = api.server.state.database
    assert database is not None
    issued = await Invoices(database).issue(draft(account, 1, 30, due_day=1))
    return account, issued.bill.id


async def test_bills_payments_and_disputes_over_http(api: Api) -> None:
    account, bill_id = await _bea_with_a_bill(api)
    status, listed = await api.call("GET", "/customerBills", query={"billing_account": account})
    assert status == 200 and [bill["id"] for bill in listed["bills"]] == [bill_id]
    status, bill = await api.call("GET", f"/customerBills/{bill_id}")
    assert status == 200 and bill["amount_due"] == {"unit": "EUR", "value_micros": 30_000_000, "value": "30.00"}
    assert bill["lines"][0]["kind"] == "rental" and bill["state"] == "sent"
    payment = {"billing_account_id": account, "reference": "tx-1", "amount_micros": 10_000_000}
    status, first = await api.call("POST", "/payments", payment)
    assert status == 201 and first["allocated_now"][0]["invoice_id"] == bill_id, first
    status, again = await api.call("POST", "/payments", payment)
    assert status == 200 and again["replayed"] is True and again["payment"] == first["payment"]
    status, conflict = await api.call("POST", "/payments", {**payment, "amount_micros": 11_000_000})
    assert status == 409 and conflict["error"].startswith("reference: ")
    status, refused = await api.call("POST", "/payments", {**payment, "amount_micros": "10.00"})
    assert status == 422 and "amount_micros" in refused["error"]
    status, dispute = await api.call(
        "POST", f"/customerBills/{bill_id}/disputes", {"amount_micros": 5_000_000, "reason": "roaming"}
    )
    assert status == 201 and dispute["state"] == "open"
    status, too_much = await api.call(
        "POST", f"/customerBills/{bill_id}/creditNotes", {"amount_micros": 15_000_001, "reason": "goodwill"}
    )
    assert status == 422 and too_much["error"].startswith("amount_micros: ")
    status, resolved = await api.call(
        "PATCH", f"/disputes/{dispute['dispute_id']}", {"state": "credited", "resolution": "our error"}
    )
    assert status == 200 and resolved["credit_note"]["amount_micros"] == 5_000_000
    today = datetime.now(UTC).date()  # the server's clock issued the bill: as of today it is in the report
    status, report = await api.call("GET", "/reports/receivables", query={"as_of": today.isoformat()})
    bucket = aging_bucket((today - date(2026, 2, 1)).days)
    assert status == 200 and report["accounts"][0]["buckets"][bucket] == 15_000_000, report
    assert (await api.call("GET", "/reports/receivables", query={"as_of": "soon"}))[0] == 422
    status, payments = await api.call("GET", "/payments", query={"billing_account": account})
    assert status == 200 and len(payments["payments"]) == 1


async def test_a_bank_file_applies_its_good_rows_and_names_the_bad_ones(api: Api) -> None:
    account, bill_id = await _bea_with_a_bill(api)
    rows = [
        "reference,billing_account,amount,date",
        f"b-1,{account},12.50,2026-02-03",
        f"b-2,{account},1.2345678,2026-02-03",
        f"b-3,{account},7,03/02/2026",
        "b-4,nobody,1.00,2026-02-03",
        f"b-5,{account},2.50,2026-02-04",
    ]
    status, result = await api.call("POST", "/payments/bank-file", data="\n".join(rows) + "\n")
    assert status == 200, result
    assert [(row["line"], row["status"]) for row in result["results"]] == [
        (2, 201),
        (3, 422),
        (4, 422),
        (5, 404),
        (6, 201),
    ]
    errors = [row["error"] for row in result["results"] if row["error"]]
    assert errors[0].startswith("line 3: amount: ") and errors[1].startswith("line 4: date: ")
    assert errors[2].startswith("line 5: billing_account: ")
    status, bill = await api.call("GET", f"/customerBills/{bill_id}")
    assert bill["remaining_amount"]["value_micros"] == 15_000_000  # 12.50 + 2.50 applied, nothing of the bad rows
    status, again = await api.call("POST", "/payments/bank-file", data="\n".join(rows) + "\n")
    assert (again["recorded"], again["replayed"]) == (0, 2)  # the file sent twice pays once
    status, bad_header = await api.call("POST", "/payments/bank-file", data="ref,amount\n")
    assert status == 400 and "header" in bad_header["error"]


async def test_staff_roles_on_billing(api: Api) -> None:
    _, bill_id = await _bea_with_a_bill(api)
    reader = await token(api, Role.READ_ONLY)
    care = await token(api, Role.CARE)
    assert (await call(api, "GET", f"/customerBills/{bill_id}", reader))[0] == 200
    payment = {"billing_account_id": "x", "reference": "r", "amount_micros": 1}
    assert (await call(api, "POST", "/payments", reader, payment))[0] == 403
    note = {"amount_micros": 1, "reason": "goodwill"}
    assert (await call(api, "POST", f"/customerBills/{bill_id}/creditNotes", care, note))[0] == 403
    status, document = await api.call("GET", "/openapi.json")
    assert status == 200 and "/customerBills/{bill_id}" in document["paths"]
    assert "text/csv" in document["paths"]["/payments/bank-file"]["post"]["requestBody"]["content"]
    assert "CustomerBill" in document["components"]["schemas"]
