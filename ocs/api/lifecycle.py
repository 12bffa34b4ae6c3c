"""The lifecycle API: a customer's, a company node's and a line's status, over HTTP.

Theory of operation: as ``ocs.api.orders`` does, the routes are ``ocs.api.customers.Route`` values
bound to a service built once at startup (``ocs.customers.lifecycle.Lifecycle``), so bodies are
read, validated (422 naming the field), audited and mapped to HTTP as every customer route is. Each
takes ``{status, reason, reason_category}`` (``StatusRequest``) and answers the changed entity:

- ``PUT /customers/{customer_id}/status``: the customer and every line it has;
- ``PUT /customers/{customer_id}/nodes/{node_id}/status``: the node and every line under it;
- ``PUT /lines/{line_id}/status``: the line's own status.

A transition the table refuses is 409 naming ``status`` (nothing changed); an unknown customer,
node or line 404; Redis down 503 (the change is recorded and the startup pass finishes it). The
author recorded with the change is the token's name; the audit trail keeps the route, the status
and the reason. ``lifecycle_shapes`` gives the routes to the OpenAPI document.
"""

from __future__ import annotations

from ocs.api.customers import Answer, Call, Handler, Route, documentation_only
from ocs.customers.lifecycle import Lifecycle, StatusRequest
from ocs.customers.service import Customers
from ocs.customers.values import Customer, Line, Node

_ERRORS = (404, 409, 422)


def _request(call: Call) -> StatusRequest:
    assert isinstance(call.body, StatusRequest)
    return call.body


def _after(request: StatusRequest) -> dict[str, object]:
    after: dict[str, object] = {"status": request.status.value}
    if request.reason_category is not None:
        after["reason_category"] = request.reason_category.value
    return after


def lifecycle_routes(lifecycle: Lifecycle) -> tuple[Route, ...]:
    """The routes, bound to the service (the customer service the server passes is not used)."""

    async def customer(service: Customers, call: Call) -> Answer:
        request = _request(call)
        assert call.path.customer_id is not None
        found = await lifecycle.set_customer_status(call.path.customer_id, request, call.author)
        return Answer(200, found, found.customer_id, _after(request), f"customer status; reason: {request.reason}")

    async def node(service: Customers, call: Call) -> Answer:
        request = _request(call)
        assert call.path.customer_id is not None and call.path.node_id is not None
        found = await lifecycle.set_node_status(call.path.customer_id, call.path.node_id, request, call.author)
        return Answer(200, found, found.node_id, _after(request), f"node status; reason: {request.reason}")

    async def line(service: Customers, call: Call) -> Answer:
        request = _request(call)
        assert call.path.line_id is not None
        found = await lifecycle.set_line_status(call.path.line_id, request, call.author)
        return Answer(200, found, found.line_id, _after(request), f"line status; reason: {request.reason}")

    return _table(customer, node, line)


def _table(customer: Handler, node: Handler, line: Handler) -> tuple[Route, ...]:
    return (
        Route(
            "PUT",
            "/customers/{customer_id}/status",
            "Suspend, resume, bar or terminate a customer and all its lines",
            customer,
            Customer,
            StatusRequest,
            errors=_ERRORS,
        ),
        Route(
            "PUT",
            "/customers/{customer_id}/nodes/{node_id}/status",
            "Suspend, resume, bar or terminate a company node and every line under it",
            node,
            Node,
            StatusRequest,
            errors=_ERRORS,
        ),
        Route(
            "PUT",
            "/lines/{line_id}/status",
            "Suspend, resume, bar or terminate a line (its own status)",
            line,
            Line,
            StatusRequest,
            errors=_ERRORS,
        ),
    )


def lifecycle_shapes() -> tuple[Route, ...]:
    """The routes for the OpenAPI document, unbound."""
    return _table(documentation_only, documentation_only, documentation_only)
