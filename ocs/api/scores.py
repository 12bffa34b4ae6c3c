"""The scoring API: a customer's score explained factor by factor, its history, and who moved
between segments, over HTTP, in the OpenAPI document (``ocs.loyalty.scoring``).

Theory of operation: as ``ocs.api.dunning`` does, each route is a value (method, path, the pydantic
models of its query and answer) that ``ocs.api.server`` registers; refusals are the customer wing's
``CustomerRefusal`` (404 naming ``customer_id``); queries the models refuse are 422 naming the field.

- ``GET /customers/{id}/score``: the score now, computed from the current facts (nothing stored),
  each factor with its measured value, unit, points and explanation; ``customer_segment`` is what
  the customer record holds (the daily run's, or an operator's own such as ``vip``).
- ``GET /customers/{id}/score-history?limit=N``: the stored scores, newest first: one each time the
  standing changed, with what caused it (``daily``, ``payment``, ``status``).
- ``GET /reports/segment-movements?from=D&to=D``: the customers whose segment at the end of ``to``
  differs from the one at the end of ``from``, with the factors whose points changed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from ocs.api.customers import Answer
from ocs.api.dunning import RevenueQuery as PeriodQuery  # from and to, both days included
from ocs.api.interactions import document_routes
from ocs.api.service_routes import ServiceRequest, ServiceRoute
from ocs.customers.values import ID_PATTERN, Closed
from ocs.loyalty.scoring import MAX_HISTORY_ROWS, Scoring


class FactorPoints(Closed):
    factor: str
    value: int | None  # in ``unit``; None: not measurable for this customer
    unit: str
    points: int
    explanation: str


class CustomerScore(Closed):
    customer_id: str
    scored_at: datetime
    points: int
    segment: str
    customer_segment: str | None  # what customers.segment holds: the stored score's, or an operator's
    factors: list[FactorPoints]


class ScoreRecord(Closed):
    scored_at: datetime
    points: int
    segment: str
    cause: str  # daily | payment | status | request
    factors: list[FactorPoints]


class ScoreHistory(Closed):
    customer_id: str
    scores: list[ScoreRecord]  # newest first


class FactorMovement(Closed):
    factor: str
    from_points: int
    to_points: int
    from_explanation: str
    to_explanation: str


class SegmentMovement(Closed):
    customer_id: str
    from_segment: str
    to_segment: str
    from_points: int
    to_points: int
    changes: list[FactorMovement]


class MovementReport(Closed):
    from_date: date
    to_date: date
    movements: list[SegmentMovement]


class Ids(BaseModel):
    model_config = ConfigDict(extra="forbid")
    customer_id: Annotated[str, Field(pattern=ID_PATTERN)] | None = None


class HistoryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: Annotated[int, Field(ge=1, le=MAX_HISTORY_ROWS)] = 100


Request = ServiceRequest[Ids]


class Route(ServiceRoute[Scoring, Ids]):
    __slots__ = ()
    ids_model = Ids


async def _score(scoring: Scoring, call: Request) -> Answer:
    assert call.ids.customer_id is not None
    found = await scoring.score_of(call.ids.customer_id)
    answer = CustomerScore(
        customer_id=found.customer_id,
        scored_at=datetime.fromtimestamp(scoring.clock(), UTC),
        points=found.points,
        segment=found.segment,
        customer_segment=await scoring.segment_of(found.customer_id),
        factors=[FactorPoints.model_validate(factor, from_attributes=True) for factor in found.factors],
    )
    return Answer(200, answer)


async def _history(scoring: Scoring, call: Request) -> Answer:
    assert call.ids.customer_id is not None and isinstance(call.query, HistoryQuery)
    stored = await scoring.history(call.ids.customer_id, call.query.limit)
    records = [ScoreRecord.model_validate(item, from_attributes=True) for item in stored]
    return Answer(200, ScoreHistory(customer_id=call.ids.customer_id, scores=records))


async def _movements(scoring: Scoring, call: Request) -> Answer:
    assert isinstance(call.query, PeriodQuery)
    moved = await scoring.movements(call.query.from_date, call.query.to_date)
    report = MovementReport(
        from_date=call.query.from_date,
        to_date=call.query.to_date,
        movements=[SegmentMovement.model_validate(item, from_attributes=True) for item in moved],
    )
    return Answer(200, report)


_CUSTOMER = "/customers/{customer_id}"
ROUTES = (
    Route("GET", f"{_CUSTOMER}/score", "A customer's score now, factor by factor", _score, CustomerScore),
    Route(
        "GET",
        f"{_CUSTOMER}/score-history",
        "A customer's stored scores, newest first",
        _history,
        ScoreHistory,
        query=HistoryQuery,
    ),
    Route(
        "GET",
        "/reports/segment-movements",
        "Who moved between segments, and which factors moved them",
        _movements,
        MovementReport,
        query=PeriodQuery,
        errors=(422,),
    ),
)
PATH_NAMES = ("customer_id",)


def extend_document(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with the scoring routes."""
    return document_routes(document, ROUTES, PATH_NAMES)
