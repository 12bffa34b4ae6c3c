"""The dunning API: the daily run on demand, a billing account's dunning history, promises to pay,
exemptions, and the revenue report, over HTTP, in the OpenAPI document.

Theory of operation: as ``ocs.api.billing`` does, each route is a value (method, path, the
pydantic models of its body, query and answer, the status of success) that ``ocs.api.server``
registers and audits; refusals are the customer wing's ``CustomerRefusal`` (404, 409, 422 naming
the field); bodies and queries the models refuse are 422 naming the field.

- ``POST /dunningRuns {"date": "YYYY-MM-DD"}`` (admin): the run of ``ocs.billing.dunning`` for
  that day, answered with its counts; run again, it applies nothing new.
- ``GET /billingAccounts/{id}/dunning``: the steps applied and lifted, with their reasons and
  outcomes, the promises to pay and whether the customer is exempt.
- ``POST /billingAccounts/{id}/promisesToPay`` ``{amount_micros, promised_date, reason,
  promise_id}``: the ladder pauses until the promised date; 201, or 200 for a replay of the
  same ``promise_id``.
- ``PUT`` / ``DELETE /customers/{id}/dunningExemption``: the exemption flag (admin).
- ``GET /reports/revenue?from=YYYY-MM-DD&to=YYYY-MM-DD``: ``ocs.billing.revenue``.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ocs.api.customers import Answer
from ocs.api.interactions import document_routes
from ocs.api.service_routes import ServiceRequest, ServiceRoute
from ocs.billing.dunning import Dunning
from ocs.billing.dunning_records import (
    DunningHistory,
    DunningRunRequest,
    DunningRunResult,
    Exemption,
    NewExemption,
    NewPromiseToPay,
    PromiseToPay,
)
from ocs.billing.revenue import RevenueReport, revenue
from ocs.customers.values import ID_PATTERN, Closed

MAX_REPORT_DAYS = 3_660  # ten years: a report of a period, not of all time at once


class Ids(BaseModel):
    model_config = ConfigDict(extra="forbid")
    billing_account_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    customer_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None


class RevenueQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_date: date = Field(alias="from")
    to_date: date = Field(alias="to")  # included

    @model_validator(mode="after")
    def _ordered(self) -> RevenueQuery:
        if self.to_date < self.from_date:
            raise ValueError("to: before from")
        if (self.to_date - self.from_date).days > MAX_REPORT_DAYS:
            raise ValueError(f"to: more than {MAX_REPORT_DAYS} days after from")
        return self


class ExemptionRemoved(Closed):
    customer_id: str
    removed: bool  # False: the customer was not exempt


Request = ServiceRequest[Ids]


class Route(ServiceRoute[Dunning, Ids]):
    __slots__ = ()
    ids_model = Ids


async def _run(dunning: Dunning, call: Request) -> Answer:
    assert isinstance(call.body, DunningRunRequest)
    result = await dunning.run(call.body.date)
    after: dict[str, object] = {"date": result.date.isoformat(), "steps": result.steps_by_action}
    return Answer(200, result, None, after, f"dunning run of {result.date.isoformat()}")


async def _history(dunning: Dunning, call: Request) -> Answer:
    assert call.ids.billing_account_id is not None
    return Answer(200, await dunning.history(call.ids.billing_account_id))


async def _promise(dunning: Dunning, call: Request) -> Answer:
    assert isinstance(call.body, NewPromiseToPay) and call.ids.billing_account_id is not None
    promise, made = await dunning.promise(call.ids.billing_account_id, call.body, call.author)
    after: dict[str, object] = {
        "promise_id": promise.promise_id,
        "amount_micros": promise.amount_micros,
        "promised_date": promise.promised_date.isoformat(),
    }
    return Answer(201 if made else 200, promise, promise.billing_account_id, after, promise.reason)


async def _exempt(dunning: Dunning, call: Request) -> Answer:
    assert isinstance(call.body, NewExemption) and call.ids.customer_id is not None
    exemption = await dunning.exempt(call.ids.customer_id, call.body.reason, call.author)
    return Answer(200, exemption, exemption.customer_id, {"exempt": True}, call.body.reason)


async def _unexempt(dunning: Dunning, call: Request) -> Answer:
    assert call.ids.customer_id is not None
    removed = await dunning.unexempt(call.ids.customer_id)
    answer = ExemptionRemoved(customer_id=call.ids.customer_id, removed=removed)
    return Answer(200, answer, call.ids.customer_id, {"exempt": False}, "dunning exemption removed")


async def _revenue(dunning: Dunning, call: Request) -> Answer:
    assert isinstance(call.query, RevenueQuery)
    return Answer(200, await revenue(dunning.engine, call.query.from_date, call.query.to_date))


_CHANGE = (404, 409, 422)
_ACCOUNT = "/billingAccounts/{billing_account_id}"
_EXEMPTION = "/customers/{customer_id}/dunningExemption"
ROUTES = (
    Route("POST", "/dunningRuns", "Run dunning for a day", _run, DunningRunResult, DunningRunRequest, errors=(422,)),
    Route("GET", f"{_ACCOUNT}/dunning", "A billing account's dunning history", _history, DunningHistory),
    Route(
        "POST",
        f"{_ACCOUNT}/promisesToPay",
        "Record a promise to pay (pauses the dunning ladder)",
        _promise,
        PromiseToPay,
        NewPromiseToPay,
        201,
        errors=_CHANGE,
    ),
    Route("PUT", _EXEMPTION, "Exempt a customer from dunning", _exempt, Exemption, NewExemption, errors=_CHANGE),
    Route("DELETE", _EXEMPTION, "End a customer's dunning exemption", _unexempt, ExemptionRemoved),
    Route(
        "GET", "/reports/revenue", "Revenue by product and customer type", _revenue, RevenueReport, query=RevenueQuery
    ),
)
PATH_NAMES = ("billing_account_id", "customer_id")


def extend_document(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the dunning routes."""
    return document_routes(document, ROUTES, PATH_NAMES)
