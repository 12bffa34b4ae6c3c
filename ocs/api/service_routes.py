"""The route type of the doors built on one service object (interactions, billing, dunning):
a route names its method, path, summary, handler, answer model and the models it reads, and
``call`` validates the path ids, the query and the body (422 naming the field) before the handler
runs, mapping the service's refusals to HTTP errors (``ocs.api.customers.refusals_as_http``).

Each door binds its services and its path-id model once (``class Route(ServiceRoute[Services,
Ids])`` with ``ids_model = Ids``), keeping only its handlers and its route table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Generic, TypeVar

from pydantic import BaseModel

from ocs.api.customers import Answer, refusals_as_http, validated

ServicesT = TypeVar("ServicesT")
IdsT = TypeVar("IdsT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ServiceRequest(Generic[IdsT]):
    ids: IdsT
    query: BaseModel | None
    body: object  # the validated model, the CSV text of a csv_body route, or None
    author: str


@dataclass(frozen=True, slots=True)
class ServiceRoute(Generic[ServicesT, IdsT]):
    method: str
    path: str
    summary: str
    handler: Callable[[ServicesT, ServiceRequest[IdsT]], Awaitable[Answer]]
    answer: type[BaseModel]
    body: type[BaseModel] | None = None
    status: int = 200
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = (404,)
    csv_body: bool = False  # the body is a CSV file, handed over as text
    ids_model: ClassVar[type[BaseModel]]  # the door's path ids

    async def call(
        self, services: ServicesT, path: Mapping[str, str], query: Mapping[str, str], body: object, author: str
    ) -> Answer:
        ids = validated(self.ids_model, dict(path))
        parsed = validated(self.query, dict(query)) if self.query is not None else None
        model = validated(self.body, body) if self.body is not None else body
        request = ServiceRequest(ids, parsed, model, author)
        return await refusals_as_http(self.handler(services, request))  # type: ignore[arg-type]
