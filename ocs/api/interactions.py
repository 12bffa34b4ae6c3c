"""The interactions API: notes on a customer, trouble tickets (TMF621 names), and the customer
base report, over HTTP, in the OpenAPI document.

Theory of operation: as ``ocs.api.customers`` does, each route is a value (method, path, the
pydantic models of its body, query and answer, the status of success) and ``ocs.api.server``
registers them; what differs is that a call also carries its author, the name of the token that
made it (a note's author, a ticket move's who), and that the routes reach two services
(``Services``). Refusals are the customer wing's (``PROBLEM_ERRORS``: 404, 409, 422 naming the
field); bodies, paths and queries the models refuse are 422 naming the field.

- ``POST|GET /customers/{customer_id}/notes``: add a note; list them, newest first.
- ``POST|GET /troubleTickets``, ``GET|PATCH /troubleTickets/{ticket_id}``: TMF621's resource names;
  PATCH moves the status (``status``, ``status_change_reason``) along the workflow's table.
- ``GET /reports/customers?from=D&to=D``: ``ocs.customers.reports`` over the period (both days
  included), prepaid inactivity from the server's usage spool.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ocs.api.customers import REF_TEMPLATE, Answer, ErrorBody, validated
from ocs.api.service_routes import ServiceRequest, ServiceRoute
from ocs.customers.interactions import (
    MAX_LIST_ROWS,
    Interactions,
    NewNote,
    NewTroubleTicket,
    Note,
    NoteList,
    TicketStatus,
    TroubleTicket,
    TroubleTicketList,
    TroubleTicketUpdate,
)
from ocs.customers.reports import CustomerBaseReport, Period, ReportDate, customer_base_report
from ocs.customers.values import ID_PATTERN


@dataclass(frozen=True, slots=True)
class Services:
    interactions: Interactions
    last_usage_seconds: Callable[[], Awaitable[dict[str, int]]]  # newest usage per line (the spool)
    inactivity_days: int


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TicketQuery(_Query):
    customer_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    status: TicketStatus | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_ROWS)] = 100
    offset: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


class ReportQuery(_Query):
    start: ReportDate = Field(alias="from")
    end: ReportDate = Field(alias="to")


class Ids(_Query):
    customer_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    ticket_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None


Request = ServiceRequest[Ids]


class Route(ServiceRoute[Services, Ids]):
    __slots__ = ()
    ids_model = Ids


async def _add_note(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, NewNote) and call.ids.customer_id is not None
    note = await services.interactions.add_note(call.ids.customer_id, call.body, call.author)
    return Answer(201, note, note.customer_id, {"note_id": note.note_id, "channel": note.channel.value}, "note added")


async def _notes(services: Services, call: Request) -> Answer:
    assert call.ids.customer_id is not None
    return Answer(200, await services.interactions.notes(call.ids.customer_id))


async def _open_ticket(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, NewTroubleTicket)
    ticket = await services.interactions.open_ticket(call.body, call.author)
    after: dict[str, object] = {"ticket_id": ticket.ticket_id, "status": ticket.status.value}
    location = f"/troubleTickets/{ticket.ticket_id}"
    return Answer(201, ticket, ticket.customer_id, after, "trouble ticket opened", location)


async def _tickets(services: Services, call: Request) -> Answer:
    query = call.query
    assert isinstance(query, TicketQuery)
    found = await services.interactions.tickets(
        customer_id=query.customer_id, status=query.status, limit=query.limit, offset=query.offset
    )
    return Answer(200, found)


async def _ticket(services: Services, call: Request) -> Answer:
    assert call.ids.ticket_id is not None
    return Answer(200, await services.interactions.ticket(call.ids.ticket_id))


async def _move_ticket(services: Services, call: Request) -> Answer:
    assert isinstance(call.body, TroubleTicketUpdate) and call.ids.ticket_id is not None
    ticket = await services.interactions.move_ticket(call.ids.ticket_id, call.body, call.author)
    after: dict[str, object] = {"ticket_id": ticket.ticket_id, "status": ticket.status.value}
    return Answer(200, ticket, ticket.customer_id, after, call.body.status_change_reason)


async def _report(services: Services, call: Request) -> Answer:
    query = call.query
    assert isinstance(query, ReportQuery)
    period = validated(Period, {"start": query.start, "end": query.end})
    report = await customer_base_report(
        services.interactions.engine,
        period,
        last_usage_seconds=await services.last_usage_seconds(),
        inactivity_days=services.inactivity_days,
    )
    return Answer(200, report)


_CHANGE = (404, 409, 422)
ROUTES = (
    Route("POST", "/customers/{customer_id}/notes", "Add a note", _add_note, Note, NewNote, 201, errors=_CHANGE),
    Route("GET", "/customers/{customer_id}/notes", "A customer's notes, newest first", _notes, NoteList),
    Route(
        "POST",
        "/troubleTickets",
        "Open a trouble ticket",
        _open_ticket,
        TroubleTicket,
        NewTroubleTicket,
        201,
        errors=_CHANGE,
    ),
    Route("GET", "/troubleTickets", "List trouble tickets", _tickets, TroubleTicketList, query=TicketQuery, errors=()),
    Route("GET", "/troubleTickets/{ticket_id}", "Read a trouble ticket", _ticket, TroubleTicket),
    Route(
        "PATCH",
        "/troubleTickets/{ticket_id}",
        "Move a ticket's status",
        _move_ticket,
        TroubleTicket,
        TroubleTicketUpdate,
        errors=_CHANGE,
    ),
    Route(
        "GET",
        "/reports/customers",
        "Customer base and churn",
        _report,
        CustomerBaseReport,
        query=ReportQuery,
        errors=(),
    ),
)
PATH_NAMES = ("customer_id", "ticket_id")


class DocumentedRoute(Protocol):
    """What the OpenAPI document needs of a route (this module's and ``ocs.api.billing``'s)."""

    @property
    def path(self) -> str: ...
    @property
    def method(self) -> str: ...
    @property
    def summary(self) -> str: ...
    @property
    def answer(self) -> type[BaseModel]: ...
    @property
    def body(self) -> type[BaseModel] | None: ...
    @property
    def status(self) -> int: ...
    @property
    def query(self) -> type[BaseModel] | None: ...
    @property
    def errors(self) -> tuple[int, ...]: ...


def _operation(route: DocumentedRoute, refs: Mapping[Any, Any], path_names: tuple[str, ...]) -> dict[str, object]:
    json = "application/json"
    error = {"content": {json: {"schema": refs[(ErrorBody, "serialization")]}}}
    responses: dict[str, object] = {
        str(route.status): {
            "description": route.summary,
            "content": {json: {"schema": refs[(route.answer, "serialization")]}},
        }
    }
    for status in sorted({400, 401, 403, 422, 503, *route.errors}):
        responses[str(status)] = {"description": f"refused ({status})", **error}
    parameters: list[dict[str, object]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
        for name in path_names
        if "{" + name + "}" in route.path
    ]
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template=REF_TEMPLATE)
        required = set(schema.get("required", ()))
        for name, item in schema["properties"].items():
            parameters.append({"name": name, "in": "query", "required": name in required, "schema": item})
    operation: dict[str, object] = {"summary": route.summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {"required": True, "content": {json: {"schema": refs[(route.body, "validation")]}}}
    return operation


def extend_document(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (``ocs.api.customers.openapi_document``) with these routes and their schemas."""
    return document_routes(document, ROUTES, PATH_NAMES)


def document_routes(
    document: dict[str, Any], routes: Sequence[DocumentedRoute], path_names: tuple[str, ...]
) -> dict[str, Any]:
    """``document`` with ``routes`` (their path parameters among ``path_names``) and their schemas."""
    wanted: set[tuple[type[BaseModel], str]] = {(ErrorBody, "serialization")}
    for route in routes:
        wanted.add((route.answer, "serialization"))
        if route.body is not None:
            wanted.add((route.body, "validation"))
    ordered = sorted(wanted, key=lambda item: (item[0].__name__, item[1]))
    refs, definitions = models_json_schema(ordered, ref_template=REF_TEMPLATE)  # type: ignore[arg-type]
    schemas = document["components"]["schemas"]
    schemas.update(definitions.get("$defs", {}))
    for route in routes:
        if route.query is not None:
            schemas.update(route.query.model_json_schema(ref_template=REF_TEMPLATE).get("$defs", {}))
        document["paths"].setdefault(route.path, {})[route.method.lower()] = _operation(route, refs, path_names)
    return document
