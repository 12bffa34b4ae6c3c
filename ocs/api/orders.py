"""The activation API: applications and product orders (TMF622) over HTTP.

Theory of operation: the routes are ``ocs.api.customers.Route`` values, so their bodies are read,
validated (422 naming the field), audited and mapped to HTTP exactly as the customer routes are;
``order_routes`` binds them to the services built once at startup (``Applications``, ``Orders``).
Answers: ``POST /applications`` 201 with the customer (``prospect``) and the credit decision with
its explanation, 422 naming the field an identity check refused; ``POST /productOrders`` 201 with
the order as fulfilment left it (``completed`` or ``failed``, each item with its state), 200 with
the first order when an ``external_id`` is submitted again with the same body, 409 when with
another, 422 naming the item and field the credit class refuses; ``GET /productOrders/{order_id}``.

``EngineLines`` is the orders' ``LineOperations`` port filled with ``Provisioning``: a status
change through ``set_status`` (which publishes the account event that reaches live sessions), a
bundle through the store's ``add_bucket`` with the item's operation id, applied once.
``order_shapes`` gives these routes to the OpenAPI document.
"""

from __future__ import annotations

from dataclasses import replace

from balance.types import AccountStatus, Bucket, BucketKind, Outcome
from ocs.api.customers import Answer, Call, Handler, Route, documentation_only
from ocs.api.fields import NotFound, Refused
from ocs.api.provisioning import Provisioning, StatusChange
from ocs.customers.applications import ApplicationResult, Applications, NewApplication
from ocs.customers.orders import Bundle, NewProductOrder, Orders, ProductOrder
from ocs.customers.service import Customers, EngineAnswer, EngineOutcome
from ocs.customers.values import LineStatus

_ACCOUNT_STATUS = {
    LineStatus.ACTIVE: AccountStatus.ACTIVE,
    LineStatus.SUSPENDED: AccountStatus.SUSPENDED,
    LineStatus.BARRED: AccountStatus.BARRED,
    LineStatus.TERMINATED: AccountStatus.TERMINATED,
}


class EngineLines:
    """``LineOperations`` through the provisioning service and its store. With ``keep_changes``
    every status change made is kept in ``changes`` (one request's port: ``ocs.api.subscriber_status``
    answers with the sessions told); the server's long-lived port keeps none."""

    def __init__(self, provisioning: Provisioning, *, keep_changes: bool = False) -> None:
        self.provisioning = provisioning
        self.keep_changes = keep_changes
        self.changes: list[StatusChange] = []

    async def set_status(
        self, account_id: str, status: LineStatus, reason: str, *, actor: str = "product order"
    ) -> EngineAnswer:
        """The account's own status in the engine (also ``ocs.customers.lifecycle``'s port)."""
        try:
            change = await self.provisioning.set_status(account_id, _ACCOUNT_STATUS[status], actor=actor, reason=reason)
        except (NotFound, Refused) as error:
            return EngineAnswer(EngineOutcome.REFUSED, error.message)
        if self.keep_changes:
            self.changes.append(change)
        return EngineAnswer(EngineOutcome.OK)

    def knows_plan(self, plan: str) -> bool:
        return plan in self.provisioning.book.plans

    async def set_plan(self, line_id: str, plan: str) -> EngineAnswer:
        """The plan in the account's directory profile, which charging reads at the next request
        (the cached profile forgotten). There is no plan-changed account event (ocs/events.py), so
        an open session keeps the tariff of its reservation until its next grant."""
        tariff = self.provisioning.book.plans.get(plan)
        try:
            profile, view = await self.provisioning.show(line_id)
        except NotFound as error:
            return EngineAnswer(EngineOutcome.REFUSED, error.message)
        if tariff is None or profile is None:
            return EngineAnswer(EngineOutcome.REFUSED, f"no tariff plan {plan!r}" if tariff is None else "no profile")
        if tariff.currency != view.account.currency:
            reason = f"plan {plan} is in {tariff.currency}; account {line_id!r} is in {view.account.currency}"
            return EngineAnswer(EngineOutcome.REFUSED, reason)
        if profile.plan != plan:
            if await self.provisioning.directory.register(replace(profile, plan=plan)) is not Outcome.OK:
                return EngineAnswer(EngineOutcome.REFUSED, f"profile of {line_id!r} not written")
            self.provisioning.forget(profile.identities)
        return EngineAnswer(EngineOutcome.OK)

    async def add_bundle(self, line_id: str, bundle: Bundle, valid_until: int, operation_id: str) -> EngineAnswer:
        bucket = Bucket(0, BucketKind(bundle.kind), bundle.amount, tuple(bundle.services), 0, valid_until)
        result = await self.provisioning.store.add_bucket(line_id, bucket, operation_id)
        if result.outcome is not Outcome.OK:
            return EngineAnswer(EngineOutcome.REFUSED, f"bundle on {line_id!r}: {result.outcome.value}")
        return EngineAnswer(EngineOutcome.OK)


def order_routes(applications: Applications, orders: Orders) -> tuple[Route, ...]:
    """The routes, bound to the services (the customer service the server passes is not used)."""

    async def apply(service: Customers, call: Call) -> Answer:
        assert isinstance(call.body, NewApplication)
        result = await applications.submit(call.body)
        customer, decision = result.customer, result.decision
        after: dict[str, object] = {"status": customer.status.value, "credit_class": decision.credit_class}
        detail = f"application: class {decision.credit_class}, {decision.offer}"
        return Answer(201, result, customer.customer_id, after, detail, f"/customers/{customer.customer_id}")

    async def order(service: Customers, call: Call) -> Answer:
        assert isinstance(call.body, NewProductOrder)
        found, created = await orders.submit(call.body)
        after: dict[str, object] = {"state": found.state.value, "customer_id": found.customer_id}
        detail = "product order" if created else "product order re-submitted: the first one answered"
        return Answer(201 if created else 200, found, found.id, after, detail, f"/productOrders/{found.id}")

    async def show(service: Customers, call: Call) -> Answer:
        assert call.path.order_id is not None
        return Answer(200, await orders.order(call.path.order_id))

    return _table(apply, order, show)


def _table(apply: Handler, order: Handler, show: Handler) -> tuple[Route, ...]:
    return (
        Route(
            "POST",
            "/applications",
            "Apply to become a customer",
            apply,
            ApplicationResult,
            NewApplication,
            201,
            errors=(409, 422),
        ),
        Route(
            "POST",
            "/productOrders",
            "Place a product order (TMF622)",
            order,
            ProductOrder,
            NewProductOrder,
            201,
            errors=(404, 409, 422),
        ),
        Route("GET", "/productOrders/{order_id}", "Read a product order", show, ProductOrder),
    )


def order_shapes() -> tuple[Route, ...]:
    """The routes for the OpenAPI document (``openapi_document(extra_routes=...)``), unbound."""
    return _table(documentation_only, documentation_only, documentation_only)
