"""Product orders (TM Forum TMF622 shape): what a customer asks for, fulfilled item by item,
idempotently, and resumed after a crash.

Theory of operation. ``submit`` checks the whole order before anything is written: the customer
exists, every line acted on is the customer's, and every new line is within what the customer's
credit class may be offered (``ocs.customers.offers``, the rules the direct routes apply too: a
prepaid-only class gets no postpaid line, a class's plans are the only ones its lines take, and
the class's credit limit is the customer's: the credit limits of its postpaid lines and company
pools that are not terminated, with the order's new ones, may not add up to more); a refusal
names the item and the field (``items.1.line.payment_type``) and nothing is written. The order and
its items are then stored
``acknowledged``, each new line with its id already assigned, in one transaction with the deposit
the class asks for (``deposit``), when this order gives the customer its first postpaid line: a
``pending`` row of ``deposits``, one per customer and class, which the billing wing invoices (this
wing holds no money: the row is the outbox); the order's answer shows it. Then it is fulfilled:

    order:  acknowledged -> inProgress -> completed | failed      (TMF622 ProductOrderStateType)
    item:   acknowledged -> completed | failed

Each item is one step of the engine or the customer service that is idempotent by itself: a new
line by its assigned id (a line already there is the earlier try's), a status change (the line's
own status through ``ocs.customers.lifecycle``, the path the API's ``PUT /lines/{id}/status``
takes: asking twice is one change, and its own step is resumed by the lifecycle's pass), a plan
change (the engine profile's plan, then the line's row; both set the same plan again on a re-run),
a bundle by its operation id ``order:<order>:<item>``, which the engine's idempotency key applies
once. A ``change_plan`` item is refused at submission (422 naming ``items.<i>.plan``) for a plan
the tariff book lacks or the customer's credit class may not take (``plans`` in the class). The
item's ``completed`` state is recorded after its step, so a crash anywhere leaves each item either
recorded, or to be run again with the same effect: ``resume``, at startup, runs every order
left ``acknowledged`` or ``inProgress`` from its first unrecorded item, and each item happens once.

A failed step leaves nothing half-done: an item is one engine call (a status change, a bundle) or
a new line whose refused provisioning deletes its rows (``Customers.add_line``), so a refused item
applied nothing; it is marked ``failed`` with the reason, the order ``failed`` and the items after
it are not run. Items completed before it stay completed (each is a whole change of its own, shown
in the order). An engine that does not answer (Redis down) raises: the order stays ``inProgress``
and the startup pass finishes it. The first completed order turns a ``prospect`` customer
``active``, in the transaction that completes the order.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

import structlog
from pydantic import Field, model_validator
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.customers import order_records, records
from ocs.customers.credit import CreditRules
from ocs.customers.lifecycle import Lifecycle, StatusRequest, TargetStatus
from ocs.customers.offers import CreditOffers
from ocs.customers.records import Duplicate
from ocs.customers.service import (
    CustomerRefusal,
    Customers,
    EngineAnswer,
    EngineOutcome,
    Problem,
    made_id,
)
from ocs.customers.values import Closed, Customer, EntityId, LineStatus, NewLine
from ocs.db.schema import utc_naive

log = structlog.get_logger("ocs.customers.orders")

MAX_ORDER_ITEMS = 32  # an order is a customer's request, not a bulk load
MAX_BUNDLE_UNITS = 10**15  # balance/types.py MAX_SERVICE_UNITS order of magnitude
SECONDS_PER_DAY = 86_400


class OrderState(enum.StrEnum):
    """TMF622 ProductOrderStateType, the states this fulfilment uses."""

    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "inProgress"
    COMPLETED = "completed"
    FAILED = "failed"


class ItemAction(enum.StrEnum):
    """What an item does. TMF622's ``action`` is add/modify/delete of a product; ours names the
    operation on the line, which is what an operator reads."""

    ADD_LINE = "add_line"
    ADD_BUNDLE = "add_bundle"
    SUSPEND_LINE = "suspend_line"
    RESUME_LINE = "resume_line"
    TERMINATE_LINE = "terminate_line"
    CHANGE_PLAN = "change_plan"  # TMF622 modify: the line's tariff plan


# The line's own status each status item asks for (``ocs.customers.lifecycle`` applies it).
STATUS_OF_ACTION = {
    ItemAction.SUSPEND_LINE: TargetStatus.SUSPENDED,
    ItemAction.RESUME_LINE: TargetStatus.ACTIVE,
    ItemAction.TERMINATE_LINE: TargetStatus.TERMINATED,
}
ORDER_AUTHOR = "product order"


class Bundle(Closed):
    """An allowance bucket: units of one kind, for some services, valid some days from fulfilment."""

    kind: Literal["seconds", "octets", "events"]
    amount: Annotated[int, Field(ge=1, le=MAX_BUNDLE_UNITS)]
    services: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=8)
    valid_days: Annotated[int, Field(ge=1, le=3660)] | None = None  # None: no end


class NewOrderItem(Closed):
    id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,16}$")]  # TMF622 ProductOrderItem.id
    action: ItemAction
    line: NewLine | None = None  # add_line
    line_id: EntityId | None = None  # every other action
    bundle: Bundle | None = None  # add_bundle
    plan: Annotated[str, Field(min_length=1, max_length=64)] | None = None  # change_plan

    @model_validator(mode="after")
    def _fields_of_action(self) -> NewOrderItem:
        adding = self.action is ItemAction.ADD_LINE
        if adding != (self.line is not None):
            raise ValueError("line: given with add_line, and only with it")
        if adding == (self.line_id is not None):
            raise ValueError("line_id: the line this item acts on (add_line gives line.line_id instead)")
        if (self.action is ItemAction.ADD_BUNDLE) != (self.bundle is not None):
            raise ValueError("bundle: given with add_bundle, and only with it")
        if (self.action is ItemAction.CHANGE_PLAN) != (self.plan is not None):
            raise ValueError("plan: given with change_plan, and only with it")
        return self


class NewProductOrder(Closed):
    customer_id: EntityId
    external_id: EntityId | None = None  # TMF622 externalId: the client's key; re-submitting finds the order
    items: list[NewOrderItem] = Field(min_length=1, max_length=MAX_ORDER_ITEMS)

    @model_validator(mode="after")
    def _distinct_items(self) -> NewProductOrder:
        ids = [item.id for item in self.items]
        if len(set(ids)) != len(ids):
            raise ValueError("items: an item id is used twice")
        return self


class ProductOrderItem(Closed):
    id: str
    action: ItemAction
    state: OrderState
    line_id: str | None
    failure: str | None
    completed_at: datetime | None


class Deposit(Closed):
    """A deposit the customer's credit class requires, recorded with the order that first gave it
    a postpaid line: ``pending`` until the billing wing invoices it (``ocs.db.orders.deposits``)."""

    credit_class: str
    amount_micros: int
    currency: str
    state: str


class ProductOrder(Closed):
    id: str
    external_id: str | None
    customer_id: str
    state: OrderState
    items: list[ProductOrderItem]
    failure: str | None
    created_at: datetime
    completed_at: datetime | None
    deposit: Deposit | None = None  # the deposit this order made due


class LineOperations(Protocol):
    """The engine steps orders take on an existing line; the API door fills it."""

    async def set_status(
        self, account_id: str, status: LineStatus, reason: str, *, actor: str = ""
    ) -> EngineAnswer: ...

    async def add_bundle(self, line_id: str, bundle: Bundle, valid_until: int, operation_id: str) -> EngineAnswer: ...

    def knows_plan(self, plan: str) -> bool:
        """Whether the tariff book has the plan."""
        ...

    async def set_plan(self, line_id: str, plan: str) -> EngineAnswer:
        """The account's tariff plan (idempotent: the plan it has already is OK)."""
        ...


class OrderConflict(CustomerRefusal):
    def __init__(self, message: str) -> None:
        super().__init__(Problem.CONFLICT, "external_id", message)


ItemHook = Callable[[str, str], Awaitable[None]]  # (order id, item id), after the item is recorded


class Orders:
    def __init__(
        self,
        engine: AsyncEngine,
        customers: Customers,
        lines: LineOperations,
        rules: CreditRules,
        *,
        clock: Callable[[], float] = time.time,
        after_item: ItemHook | None = None,
    ) -> None:
        self.engine = engine
        self.customers = customers
        self.lines = lines
        self.rules = rules
        self.offers = CreditOffers(engine, rules)
        self.clock = clock
        self.after_item = after_item  # tests: a crash between two items
        self.lifecycle = Lifecycle(engine, lines, clock=clock)  # status items: one path with the API's

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def submit(self, new: NewProductOrder) -> tuple[ProductOrder, bool]:
        """The order, fulfilled; and whether it is new (False: the order of this external id)."""
        request = new.model_dump(mode="json")
        if new.external_id is not None:
            found = await self._resubmitted(new.external_id, request)
            if found is not None:
                return found, False
        customer = await self.customers.customer(new.customer_id)
        order_id = made_id("PO")
        items = [_item_row(order_id, index, item) for index, item in enumerate(new.items)]
        added: set[str] = set()  # lines this order adds: later items may act on them
        credit = await self.offers.granted(customer.customer_id)  # the class's limit is the customer's
        for index, item in enumerate(new.items):
            await self._check_item(customer, index, item, added, credit)
            if item.line is not None:
                added.add(str(items[index]["line_id"]))
                credit += item.line.credit_limit_micros if item.line.payment_type == "postpaid" else 0
        now = self._now()
        row: dict[str, object] = {
            "order_id": order_id,
            "external_id": new.external_id,
            "customer_id": new.customer_id,
            "state": OrderState.ACKNOWLEDGED.value,
            "request": request,
            "created_at": utc_naive(now),
        }
        try:
            deposit = await self._deposit_due(customer, new, order_id, now)
            await order_records.insert_order(self.engine, row, items, deposit)
        except Duplicate:  # a racing submission of the same external id won
            found = await self._resubmitted(str(new.external_id), request)
            if found is None:
                raise
            return found, False
        log.info("order_acknowledged", order_id=order_id, customer_id=new.customer_id, items=len(items))
        return await self.fulfil(order_id), True

    async def _resubmitted(self, external_id: str, request: dict[str, object]) -> ProductOrder | None:
        order_id = await order_records.order_id_of_external(self.engine, external_id)
        if order_id is None:
            return None
        stored = await order_records.order_row(self.engine, order_id)
        assert stored is not None
        if stored["request"] != request:
            raise OrderConflict(f"{external_id!r} names order {order_id!r}, which asked for something else")
        return await self.order(order_id)

    async def _deposit_due(
        self, customer: Customer, new: NewProductOrder, order_id: str, now: datetime
    ) -> dict[str, object] | None:
        """The deposit row this order makes due (``ocs.customers.offers``): its first postpaid line
        under a class that asks for one (the billing wing invoices it; until then ``pending``)."""
        postpaid = any(item.line is not None and item.line.payment_type == "postpaid" for item in new.items)
        if not postpaid:
            return None
        return await self.offers.deposit_due(customer, order_id=order_id, line_id=None, now=now)

    async def _check_item(
        self, customer: Customer, index: int, item: NewOrderItem, added: set[str], credit: int
    ) -> None:
        where = f"items.{index}"
        if item.line is not None:
            self._check_offer(customer, item.line, f"{where}.line", credit)
            return
        assert item.line_id is not None
        if item.line_id in added:
            return
        line = await records.get_line(self.engine, item.line_id)
        if line is None or line.customer_id != customer.customer_id:
            raise CustomerRefusal(
                Problem.NOT_FOUND, f"{where}.line_id", f"customer {customer.customer_id!r} has no line {item.line_id!r}"
            )
        if line.status is LineStatus.TERMINATED and item.action is not ItemAction.TERMINATE_LINE:
            raise CustomerRefusal(Problem.REFUSED, f"{where}.line_id", f"line {item.line_id!r} is terminated")
        if item.plan is not None:
            self._check_plan(customer, item.plan, f"{where}.plan")

    def _check_plan(self, customer: Customer, plan: str, where: str) -> None:
        """A plan the tariff book has, and the customer's credit class may take."""
        if not self.lines.knows_plan(plan):
            raise CustomerRefusal(Problem.REFUSED, where, f"no tariff plan {plan!r}")
        self.offers.check_plan(customer, plan, where)

    def _check_offer(self, customer: Customer, line: NewLine, where: str, credit: int) -> None:
        """What the customer's credit class may be offered (``ocs.customers.offers``): ``credit``
        is what the customer holds with the lines the order adds before this one."""
        self.offers.check_credit(customer, line.payment_type, line.credit_limit_micros, f"{where}.", credit)
        self.offers.check_plan(customer, line.plan or self.customers.accounts.default_plan, f"{where}.plan")

    async def order(self, order_id: str) -> ProductOrder:
        stored = await order_records.order_row(self.engine, order_id)
        if stored is None:
            raise CustomerRefusal(Problem.NOT_FOUND, "order_id", f"no product order {order_id!r}")
        items = [
            ProductOrderItem(
                id=row["item_id"],
                action=ItemAction(row["action"]),
                state=OrderState(row["state"]),
                line_id=row["line_id"],
                failure=row["failure"],
                completed_at=order_records.stored_time(row["completed_at"]),
            )
            for row in await order_records.item_rows(self.engine, order_id)
        ]
        return ProductOrder(
            id=order_id,
            external_id=stored["external_id"],
            customer_id=stored["customer_id"],
            state=OrderState(stored["state"]),
            items=items,
            failure=stored["failure"],
            created_at=order_records.stored_time(stored["created_at"]) or self._now(),
            completed_at=order_records.stored_time(stored["completed_at"]),
            deposit=_deposit(await order_records.deposit_of_order(self.engine, order_id)),
        )

    # -- fulfilment -----------------------------------------------------------------------------

    async def fulfil(self, order_id: str) -> ProductOrder:
        """Run the order's unrecorded items in turn (see the module's theory)."""
        stored = await order_records.order_row(self.engine, order_id)
        assert stored is not None
        if stored["state"] in (OrderState.COMPLETED.value, OrderState.FAILED.value):
            return await self.order(order_id)
        await order_records.set_order_state(self.engine, order_id, OrderState.IN_PROGRESS.value)
        for row in await order_records.item_rows(self.engine, order_id):
            if row["state"] == OrderState.COMPLETED.value:
                continue  # recorded: done once already
            item = NewOrderItem.model_validate(row["payload"])
            failure = await self._apply(order_id, stored["customer_id"], item)
            if failure is not None:
                await order_records.fail_item(self.engine, order_id, item.id, failure, self._now())
                log.warning("order_failed", order_id=order_id, item_id=item.id, failure=failure)
                return await self.order(order_id)
            await order_records.complete_item(self.engine, order_id, item.id, None, self._now())
            if self.after_item is not None:
                await self.after_item(order_id, item.id)
        await order_records.complete_order(self.engine, order_id, stored["customer_id"], self._now())
        log.info("order_completed", order_id=order_id)
        return await self.order(order_id)

    async def _apply(self, order_id: str, customer_id: str, item: NewOrderItem) -> str | None:
        """One item's step, idempotent: why it failed, or None."""
        if item.line is not None:
            line_id = item.line.line_id
            assert line_id is not None  # assigned when the order was acknowledged
            if await records.get_line(self.engine, line_id) is not None:
                return None  # made by an earlier try (a provisioning one is finished at startup)
            try:
                await self.customers.add_line(customer_id, item.line)
            except CustomerRefusal as refusal:
                return refusal.message
            return None
        assert item.line_id is not None
        if item.bundle is not None:
            valid_days = item.bundle.valid_days
            valid_until = int(self.clock()) + valid_days * SECONDS_PER_DAY if valid_days else 0
            answer = await self.lines.add_bundle(item.line_id, item.bundle, valid_until, f"order:{order_id}:{item.id}")
            return _failure(answer)
        if item.plan is not None:  # both steps idempotent: a re-run after a crash sets the same plan
            answer = await self.lines.set_plan(item.line_id, item.plan)
            if answer.outcome is EngineOutcome.OK:
                await records.set_line_plan(self.engine, item.line_id, item.plan)
            return _failure(answer)
        request = StatusRequest(status=STATUS_OF_ACTION[item.action], reason=f"product order {order_id} item {item.id}")
        try:
            await self.lifecycle.set_line_status(item.line_id, request, ORDER_AUTHOR)
        except CustomerRefusal as refusal:
            return refusal.message
        return None

    # -- the startup pass -----------------------------------------------------------------------

    async def resume(self) -> int:
        """Finish every order a crash left ``acknowledged`` or ``inProgress``; how many."""
        pending = (OrderState.ACKNOWLEDGED.value, OrderState.IN_PROGRESS.value)
        order_ids = await order_records.order_ids_in_state(self.engine, pending)
        for order_id in order_ids:
            await self.fulfil(order_id)
        if order_ids:
            log.warning("orders_resumed", orders=len(order_ids))
        return len(order_ids)


def _deposit(row: dict[str, Any] | None) -> Deposit | None:
    if row is None:
        return None
    return Deposit(
        credit_class=row["credit_class"],
        amount_micros=row["amount_micros"],
        currency=row["currency"],
        state=row["state"],
    )


def _failure(answer: EngineAnswer) -> str | None:
    return None if answer.outcome is EngineOutcome.OK else f"the balance engine refused it: {answer.reason}"


def _item_row(order_id: str, position: int, item: NewOrderItem) -> dict[str, object]:
    """An item as stored: a new line gets its id now, so every try makes the same line."""
    if item.line is not None and item.line.line_id is None:
        item = item.model_copy(update={"line": item.line.model_copy(update={"line_id": made_id("L")})})
    line_id = item.line.line_id if item.line is not None else item.line_id
    return {
        "order_id": order_id,
        "item_id": item.id,
        "position": position,
        "action": item.action.value,
        "state": OrderState.ACKNOWLEDGED.value,
        "line_id": line_id,
        "payload": item.model_dump(mode="json"),
        "failure": None,
        "completed_at": None,
    }
