"""The loyalty API: programmes, members, bonus history, reports and the loyalty ledger over HTTP, in
the OpenAPI document (``ocs.loyalty.reports``).

Theory of operation: as ``ocs.api.dunning`` does, each route is a value (method, path, the pydantic
models of its body, query and answer) that ``ocs.api.server`` registers; refusals are the customer
wing's ``CustomerRefusal`` (404 naming ``programme_id`` or ``customer_id``); queries and bodies the
models refuse are 422 naming the field.

- ``GET /loyalty/programmes``, ``GET /loyalty/programmes/{programme_id}``: the programmes the
  server loaded (``[loyalty] rules``), their rules, budgets and what the budget counts so far.
- ``GET /loyalty/members/{customer_id}``: the member's kind, segment, counters per rule and period,
  and its applications (the oldest 1,000).
- ``PUT /loyalty/members/{customer_id}/segment {"segment": "ideal"}`` (admin): an operator's
  segment, pinned: the daily scoring and its rescores leave it (``null`` clears it and the pin, and
  the next score sets it again); the engine reads the member again at its next record (in the
  worker that runs it; another worker's engine within ``members.SEGMENT_TTL_SECONDS``).
- ``GET /loyalty/applications?member=&programme=&limit=&offset=``: the bonus history, oldest first.
- ``GET /loyalty/reports/segments``: members by segment.
- ``GET /loyalty/reports/programmes``: per programme bonus issued, pending, spent and expired
  (how spent is measured: ``spent_measure``), units issued, discounts, cost against budget.
- ``GET /loyalty/reports/ledger``: the loyalty ledger's audit (also part of ``/reports/ledger``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ocs.api.customers import Answer
from ocs.api.interactions import document_routes
from ocs.api.service_routes import ServiceRequest, ServiceRoute
from ocs.customers.values import ID_PATTERN, Closed
from ocs.loyalty.reports import (
    MAX_PAGE,
    ApplicationList,
    LedgerReport,
    LoyaltyReports,
    MemberView,
    ProgrammeList,
    ProgrammesReport,
    ProgrammeView,
    SegmentReport,
)

SEGMENT_LENGTH = 32  # customers.segment
MAX_OFFSET = 1_000_000_000  # within a database integer, beyond any history


class Ids(BaseModel):
    model_config = ConfigDict(extra="forbid")
    programme_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    customer_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None


class ApplicationsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    member: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    programme: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 100
    offset: Annotated[int, Field(ge=0, le=MAX_OFFSET)] = 0


class NewSegment(Closed):
    segment: Annotated[str, Field(min_length=1, max_length=SEGMENT_LENGTH, pattern=r"^[a-z0-9_\-]+$")] | None


Request = ServiceRequest[Ids]


class Route(ServiceRoute[LoyaltyReports, Ids]):
    __slots__ = ()
    ids_model = Ids


async def _programmes(reports: LoyaltyReports, call: Request) -> Answer:
    return Answer(200, await reports.programmes())


async def _programme(reports: LoyaltyReports, call: Request) -> Answer:
    assert call.ids.programme_id is not None
    return Answer(200, await reports.programme(call.ids.programme_id))


async def _member(reports: LoyaltyReports, call: Request) -> Answer:
    assert call.ids.customer_id is not None
    return Answer(200, await reports.member(call.ids.customer_id))


async def _segment(reports: LoyaltyReports, call: Request) -> Answer:
    assert call.ids.customer_id is not None and isinstance(call.body, NewSegment)
    found = await reports.set_segment(call.ids.customer_id, call.body.segment)
    return Answer(200, found, found.customer_id, {"segment": found.segment}, "loyalty segment set")


async def _applications(reports: LoyaltyReports, call: Request) -> Answer:
    assert isinstance(call.query, ApplicationsQuery)
    query = call.query
    return Answer(200, await reports.applications(query.member, query.programme, query.limit, query.offset))


async def _segments(reports: LoyaltyReports, call: Request) -> Answer:
    return Answer(200, await reports.segments())


async def _programmes_report(reports: LoyaltyReports, call: Request) -> Answer:
    return Answer(200, await reports.programmes_report())


async def _ledger(reports: LoyaltyReports, call: Request) -> Answer:
    return Answer(200, await reports.ledger())


_MEMBER = "/loyalty/members/{customer_id}"
ROUTES = (
    Route("GET", "/loyalty/programmes", "The loyalty programmes and their rules", _programmes, ProgrammeList),
    Route("GET", "/loyalty/programmes/{programme_id}", "A loyalty programme", _programme, ProgrammeView),
    Route("GET", _MEMBER, "A member: segment, counters, applications", _member, MemberView),
    Route(
        "PUT",
        f"{_MEMBER}/segment",
        "Set (and pin) a customer's segment",
        _segment,
        MemberView,
        NewSegment,
        errors=(404, 422),
    ),
    Route(
        "GET",
        "/loyalty/applications",
        "Bonus history: rule applications, oldest first",
        _applications,
        ApplicationList,
        query=ApplicationsQuery,
        errors=(404, 422),
    ),
    Route("GET", "/loyalty/reports/segments", "Members by segment", _segments, SegmentReport, errors=()),
    Route(
        "GET",
        "/loyalty/reports/programmes",
        "Bonus issued, spent and expired, and cost against budget, per programme",
        _programmes_report,
        ProgrammesReport,
        errors=(),
    ),
    Route("GET", "/loyalty/reports/ledger", "The loyalty ledger's audit", _ledger, LedgerReport, errors=()),
)
PATH_NAMES = ("programme_id", "customer_id")


def extend_document(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the loyalty routes."""
    return document_routes(document, ROUTES, PATH_NAMES)
