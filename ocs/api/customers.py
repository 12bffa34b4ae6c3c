"""The customer API: customers (individuals and organizations), company nodes and lines, over HTTP,
with its OpenAPI 3 document.

Theory of operation: each route is a ``Route`` value: method, path template, the pydantic model of
its body and of its answer, the status of success, and a function of the customer service
(``ocs.customers.service.Customers``). ``ocs.api.server`` registers them (bounded body reading,
authentication, the audit trail and the error middleware stay there); this module only turns a
validated body into a call and the result into JSON, and builds ``/openapi.json`` from the same
table with pydantic's JSON schemas, so the document cannot drift from what is checked.

Errors, each ``{"error", "code"}`` through the server's middleware: a body that is not JSON 400;
a body, path or query value the models refuse 422, the message naming the field by pydantic's loc
(``individual.birth_date: ...``); an unknown customer, node or line 404; an id or identity
already taken 409; what the rules refuse (a money tree deeper than the engine holds, a plan the
engine does not know) 422 naming the field; Redis down 503 (a line then stays ``provisioning``
and the startup pass finishes it).

``ProvisioningAccounts`` is the customer wing's ``EngineAccounts`` port filled with the existing
``ocs.api.provisioning.Provisioning``: creating the engine account is its ``create`` in resuming
mode (an ``ar:`` claim left by a crash before the provision script is finished, not refused); when
the account is already there, the step is idempotent: identical terms and profile count as made (a
profile missing after a crash between the account and the directory is registered then).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.json_schema import models_json_schema

from balance.directory import Subscriber
from balance.types import Account, AccountStatus, Outcome, PaymentType
from ocs.api.fields import ApiError, BadInput, Conflict, NewSubscriber, NotFound, Refused, parse_identity
from ocs.api.provisioning import Provisioning
from ocs.customers.records import MAX_LIST_ROWS
from ocs.customers.service import (
    CustomerRefusal,
    Customers,
    EngineAccount,
    EngineAnswer,
    EngineOutcome,
    Problem,
)
from ocs.customers.values import (
    ID_PATTERN,
    Customer,
    CustomerList,
    CustomerStatus,
    CustomerTree,
    Line,
    NewCustomer,
    NewLine,
    NewNode,
    Node,
)

OPENAPI_VERSION = "3.1.0"  # pydantic writes JSON Schema 2020-12, the dialect of OpenAPI 3.1
MAX_ERRORS_SHOWN = 5
REF_TEMPLATE = "#/components/schemas/{model}"  # OpenAPI 3.1 section 4.8.7: schemas live in components


class Invalid(ApiError):
    status = 422
    code = "invalid"


class CustomerNotFound(NotFound):
    pass


class CustomerConflict(Conflict):
    pass


class CustomerRefused(Refused):
    pass


# One table from the wing's outcomes to HTTP (tests/ocs/test_customers_api.py holds it whole).
PROBLEM_ERRORS: dict[Problem, type[ApiError]] = {
    Problem.NOT_FOUND: CustomerNotFound,  # 404
    Problem.CONFLICT: CustomerConflict,  # 409
    Problem.REFUSED: CustomerRefused,  # 422
}


# -- the engine port ------------------------------------------------------------------------------


class ProvisioningAccounts:
    """``EngineAccounts`` through the provisioning service (``ocs.api.provisioning``)."""

    def __init__(self, provisioning: Provisioning) -> None:
        self.provisioning = provisioning

    @property
    def default_plan(self) -> str:
        return self.provisioning.default_plan

    def _subscriber(self, account: EngineAccount) -> NewSubscriber:
        identities = tuple(
            parse_identity(kind, value, f"identities[{index}]")
            for index, (kind, value) in enumerate(account.identities)
        )
        return NewSubscriber(
            Account(
                account.account_id,
                currency=account.currency or "",  # "": the plan's (Provisioning._checked)
                payment_type=PaymentType(account.payment_type),
                status=AccountStatus.ACTIVE,
                credit_limit_micros=account.credit_limit_micros,
                parent_id=account.parent_id or "",
                child_cap_micros=account.cap_micros,
            ),
            Subscriber(
                account.account_id, account.plan or self.default_plan, account.network, account.name, identities
            ),
        )

    async def ensure(self, account: EngineAccount) -> EngineAnswer:
        try:
            new = self._subscriber(account)
            await self.provisioning.create(new, resuming=True)  # the row owns the id (step 1)
        except Conflict as error:
            answer = await self._existing(new, error.message)
            if answer.outcome is not EngineOutcome.OK:
                return answer
        except (Refused, BadInput) as error:
            return EngineAnswer(EngineOutcome.REFUSED, error.message)
        return await self._with_status(account)

    async def _with_status(self, account: EngineAccount) -> EngineAnswer:
        """The account made active takes the status its customer's lifecycle gives it (a line made
        while its customer was suspended), through ``set_status`` like any change; terminated
        releases and quarantines as a termination does."""
        wanted = AccountStatus(account.status.value)
        if (await self.provisioning.view(account.account_id)).account.status is wanted:
            return EngineAnswer(EngineOutcome.OK)
        try:
            await self.provisioning.set_status(account.account_id, wanted, reason="made under a changed customer")
        except Refused as error:  # terminated in the engine: it holds the account, not as asked
            return EngineAnswer(EngineOutcome.INCOMPLETE, error.message)
        return EngineAnswer(EngineOutcome.OK)

    async def _existing(self, new: NewSubscriber, conflict: str) -> EngineAnswer:
        """The account is there (or an identity is held): made already, identically, or a conflict."""
        try:
            profile, view = await self.provisioning.show(new.account.account_id)
        except NotFound:
            if await self.provisioning.store.hierarchy(new.account.account_id) is not None:
                # An `ar:` claim without its account: perhaps this row's own earlier try (a crash
                # before the provision script): the engine may hold something of ours.
                return EngineAnswer(EngineOutcome.INCOMPLETE, conflict)
            return EngineAnswer(EngineOutcome.CONFLICT, conflict)
        wanted, there = new.account, view.account
        plan = self.provisioning.book.plans.get(new.profile.plan)
        currency = wanted.currency or (plan.currency if plan is not None else there.currency)
        same_terms = (
            there.payment_type is wanted.payment_type
            and there.currency == currency
            and there.credit_limit_micros == wanted.credit_limit_micros
            and there.parent_id == wanted.parent_id
            and there.child_cap_micros == wanted.child_cap_micros
        )
        if not same_terms:
            return EngineAnswer(EngineOutcome.CONFLICT, f"account {wanted.account_id!r} exists with other terms")
        if profile is None:  # a crash between the account and its profile: finish the profile
            if await self.provisioning.directory.register(new.profile) is not Outcome.OK:
                return EngineAnswer(EngineOutcome.INCOMPLETE, f"an identity of {wanted.account_id!r} is held elsewhere")
            self.provisioning.forget(new.profile.identities)
            return EngineAnswer(EngineOutcome.OK)
        if profile.plan != new.profile.plan or set(profile.identities) != set(new.profile.identities):
            return EngineAnswer(EngineOutcome.CONFLICT, f"account {wanted.account_id!r} exists with another profile")
        return EngineAnswer(EngineOutcome.OK)


# -- routes -------------------------------------------------------------------------------------


class ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: CustomerStatus | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_LIST_ROWS)] = 100
    offset: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


class PathIds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    line_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None
    order_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None  # ocs.api.orders
    node_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None  # ocs.api.lifecycle


class ErrorBody(BaseModel):
    error: str
    code: str


@dataclass(frozen=True, slots=True)
class Call:
    """One request, its inputs validated: path ids, the query, the body model; who made it (the
    token's name: a lifecycle change records it)."""

    path: PathIds
    query: Mapping[str, str]
    body: BaseModel | None
    author: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """What a route answers, and for a change what the audit trail keeps."""

    status: int
    model: BaseModel
    resource_id: str | None = None
    after: dict[str, object] | None = None
    detail: str = ""
    location: str | None = None

    @property
    def body(self) -> dict[str, object]:
        return self.model.model_dump(mode="json")


Handler = Callable[[Customers, Call], Awaitable[Answer]]
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    summary: str
    handler: Handler
    answer: type[BaseModel]
    body: type[BaseModel] | None = None
    status: int = 200
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = field(default=(404,))

    PATH_NAMES: ClassVar[tuple[str, ...]] = ("customer_id", "line_id", "order_id", "node_id")

    async def call(
        self, service: Customers, path: Mapping[str, str], query: Mapping[str, str], body: object, author: str = ""
    ) -> Answer:
        """Validate the inputs (422 naming the field), run the handler, map its refusal to HTTP."""
        ids = validated(PathIds, dict(path))
        if self.query is not None:
            validated(self.query, dict(query))
        model = validated(self.body, body) if self.body is not None else None
        return await refusals_as_http(self.handler(service, Call(ids, query, model, author)))


async def documentation_only(service: Customers, call: Call) -> Answer:
    """The handler of a route given unbound to the OpenAPI document: never called."""
    raise AssertionError("a documentation route is never called")


def validated(kind: type[ModelT], value: object) -> ModelT:
    """``value`` read as ``kind``, or ``Invalid`` (422) naming the field at fault."""
    try:
        return kind.model_validate(value)
    except ValidationError as error:
        raise Invalid(_validation_message(error)) from None


async def refusals_as_http(answer: Awaitable[Answer]) -> Answer:
    """What a route handler answers; the customer wing's refusal as its HTTP error (``PROBLEM_ERRORS``)."""
    try:
        return await answer
    except CustomerRefusal as refusal:
        raise PROBLEM_ERRORS[refusal.problem](refusal.message) from None


def _validation_message(error: ValidationError) -> str:
    """pydantic's errors as ``loc: message``, the loc naming the field (``identities.0.value``)."""
    shown = [
        f"{'.'.join(str(part) for part in item['loc']) or 'body'}: {item['msg']}"
        for item in error.errors()[:MAX_ERRORS_SHOWN]
    ]
    more = error.error_count() - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


def _customer_id(call: Call) -> str:
    assert call.path.customer_id is not None
    return call.path.customer_id


async def _create_customer(service: Customers, call: Call) -> Answer:
    assert isinstance(call.body, NewCustomer)
    customer = await service.create_customer(call.body)
    return Answer(
        201,
        customer,
        customer.customer_id,
        {"kind": customer.kind, "status": customer.status.value},
        f"{customer.kind} customer created",
        f"/customers/{customer.customer_id}",
    )


async def _list_customers(service: Customers, call: Call) -> Answer:
    query = ListQuery.model_validate(dict(call.query))
    return Answer(200, await service.customers(status=query.status, limit=query.limit, offset=query.offset))


async def _show_customer(service: Customers, call: Call) -> Answer:
    return Answer(200, await service.customer(_customer_id(call)))


async def _tree(service: Customers, call: Call) -> Answer:
    return Answer(200, await service.tree(_customer_id(call)))


async def _add_node(service: Customers, call: Call) -> Answer:
    assert isinstance(call.body, NewNode)
    node = await service.add_node(_customer_id(call), call.body)
    after: dict[str, object] = {"node_id": node.node_id, "parent_node_id": node.parent_node_id}
    if node.account_id is not None:
        after["account_id"] = node.account_id
    return Answer(201, node, node.account_id or node.node_id, after, f"node of customer {node.customer_id}")


async def _add_line(service: Customers, call: Call) -> Answer:
    assert isinstance(call.body, NewLine)
    line = await service.add_line(_customer_id(call), call.body)
    after: dict[str, object] = {"status": line.status.value, "plan": line.plan, "customer_id": line.customer_id}
    return Answer(201, line, line.line_id, after, f"line of customer {line.customer_id}", f"/lines/{line.line_id}")


async def _show_line(service: Customers, call: Call) -> Answer:
    assert call.path.line_id is not None
    return Answer(200, await service.line(call.path.line_id))


_CHANGE_ERRORS = (404, 409, 422)
ROUTES = (
    Route("POST", "/customers", "Create a customer", _create_customer, Customer, NewCustomer, 201, errors=(409, 422)),
    Route("GET", "/customers", "List customers", _list_customers, CustomerList, query=ListQuery, errors=()),
    Route("GET", "/customers/{customer_id}", "Read a customer", _show_customer, Customer),
    Route("GET", "/customers/{customer_id}/tree", "A customer's tree and lines", _tree, CustomerTree),
    Route(
        "POST",
        "/customers/{customer_id}/nodes",
        "Add a company node",
        _add_node,
        Node,
        NewNode,
        201,
        errors=_CHANGE_ERRORS,
    ),
    Route("POST", "/customers/{customer_id}/lines", "Add a line", _add_line, Line, NewLine, 201, errors=_CHANGE_ERRORS),
    Route("GET", "/lines/{line_id}", "Read a line", _show_line, Line),
)


# -- the OpenAPI document -----------------------------------------------------------------------

_ERROR_WORDS = {
    400: "not JSON",
    401: "no usable token",
    403: "the token's role may not",
    404: "unknown customer, node or line",
    409: "id or identity taken",
    422: "a field refused (the message names it)",
    503: "Redis unavailable",
}


def _operation(route: Route, refs: Mapping[Any, Any]) -> dict[str, object]:
    responses: dict[str, object] = {
        str(route.status): {
            "description": route.summary,
            "content": {"application/json": {"schema": refs[(route.answer, "serialization")]}},
        }
    }
    for status in sorted({400, 401, 403, 422, 503, *route.errors}):
        responses[str(status)] = {
            "description": _ERROR_WORDS[status],
            "content": {"application/json": {"schema": refs[(ErrorBody, "serialization")]}},
        }
    operation: dict[str, object] = {"summary": route.summary, "responses": responses}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}
        for name in Route.PATH_NAMES
        if "{" + name + "}" in route.path
    ]
    if route.query is not None:
        properties = route.query.model_json_schema(ref_template=REF_TEMPLATE)["properties"]
        parameters += [{"name": name, "in": "query", "schema": schema} for name, schema in properties.items()]
    if parameters:
        operation["parameters"] = parameters
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.body, "validation")]}},
        }
    return operation


def openapi_document(
    extra_paths: Mapping[str, Mapping[str, object]] | None = None, extra_routes: Sequence[Route] = ()
) -> dict[str, object]:
    """The OpenAPI 3.1 document of the customer routes and ``extra_routes`` (other resource
    families built the same way, ``ocs.api.orders``), and of ``extra_paths``, given whole."""
    routes = (*ROUTES, *extra_routes)
    wanted: set[tuple[type[BaseModel], str]] = {(ErrorBody, "serialization")}
    for route in routes:
        wanted.add((route.answer, "serialization"))
        if route.body is not None:
            wanted.add((route.body, "validation"))
    ordered = sorted(wanted, key=lambda item: (item[0].__name__, item[1]))
    refs, definitions = models_json_schema(ordered, ref_template=REF_TEMPLATE)  # type: ignore[arg-type]
    schemas = dict(definitions.get("$defs", {}))
    for route in routes:  # a query's enumerations (CustomerStatus) are components too
        if route.query is not None:
            schemas.update(route.query.model_json_schema(ref_template=REF_TEMPLATE).get("$defs", {}))
    paths: dict[str, dict[str, object]] = {path: dict(item) for path, item in (extra_paths or {}).items()}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "Open OCS operator API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},  # RFC 6750
        },
        "security": [{"bearer": []}],
    }
