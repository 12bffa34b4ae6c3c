"""What a customer's credit class may be offered, checked the same way on every path that grants
credit: a product order's new lines (``ocs.customers.orders``), and the operator's direct routes
(``Customers.add_line`` and ``Customers.add_node``, ``POST /customers/{id}/lines`` and ``/nodes``).

Theory of operation: the class (``ocs.customers.credit``) decides three things. A prepaid-only
class gets no postpaid line or credit line (refused naming ``payment_type``). Its plans, when it
lists them, are the only tariff plans a line may take (``plan``). Its credit limit is the
customer's, not each line's: the credit the customer holds already plus the new credit line may
not exceed it (``credit_limit_micros``). A customer without a class gets prepaid only through a
product order; the operator's direct routes hold only a customer that has a class to it (one made
directly, with no application, takes the operator's terms: ``Customers._assessed``).

The credit the customer holds (``CreditOffers.granted``) is the sum of every postpaid credit
limit it has that is not terminated: its lines' and its company nodes' pools' alike, since each is
money the engine lets it owe; a line's or a node's ``cap_micros`` is a share of a pool's credit
above it, not new credit, so a line that draws on a pool counts only its own credit limit (the
pool's is counted once, at the pool).

The first postpaid line under a class that asks for a deposit makes it due: a ``pending`` row of
``deposits`` (one per customer and class, ``ocs.db.orders``), written in the transaction of the
order that adds the line, or of the line's own row when the operator adds it directly (and deleted
with that row when the engine refuses the line: a refusal applies nothing).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ocs.customers import records
from ocs.customers.credit import CreditClass, CreditRules, OfferKind
from ocs.customers.service import CustomerRefusal, Problem
from ocs.customers.values import Customer, CustomerStatus, LineStatus
from ocs.db.orders import deposits
from ocs.db.schema import utc_naive


class CreditOffers:
    def __init__(self, engine: AsyncEngine, rules: CreditRules) -> None:
        self.engine = engine
        self.rules = rules

    def class_of(self, customer: Customer) -> CreditClass | None:
        name = customer.credit_profile.credit_class
        return next((found for found in self.rules.classes if found.name == name), None)

    def check_plan(self, customer: Customer, plan: str, where: str) -> None:
        """A plan the customer's class may take (``plans`` in the class; none listed: any)."""
        credit_class = self.class_of(customer)
        if credit_class is not None and not credit_class.offer.allows_plan(plan):
            allowed = ", ".join(credit_class.offer.plans or ())
            raise CustomerRefusal(
                Problem.REFUSED,
                where,
                f"credit class {credit_class.name} may take only these plans: {allowed} ({self.rules.file})",
            )

    def check_credit(self, customer: Customer, payment_type: str, limit: int, where: str, granted: int) -> None:
        """A new credit line of ``limit`` micros (a line's or a pool's; nothing for prepaid), with
        ``granted`` micros held already: ``where.payment_type`` or ``where.credit_limit_micros``
        refused when the class does not offer it."""
        if payment_type != "postpaid":
            return
        name = customer.credit_profile.credit_class
        credit_class = self.class_of(customer)
        if credit_class is None:
            why = "the customer has no credit class: apply first (POST /applications)"
            if name is not None:
                why = f"credit class {name!r} is not in {self.rules.file}"
            raise CustomerRefusal(Problem.REFUSED, f"{where}payment_type", f"postpaid refused: {why}")
        offer = credit_class.offer
        if offer.kind is OfferKind.PREPAID_ONLY:
            raise CustomerRefusal(
                Problem.REFUSED, f"{where}payment_type", f"credit class {name} is offered prepaid only"
            )
        if limit > offer.credit_limit_micros:
            raise CustomerRefusal(
                Problem.REFUSED,
                f"{where}credit_limit_micros",
                f"{limit} micros is above credit class {name}'s limit of {offer.credit_limit_micros} micros",
            )
        if granted + limit > offer.credit_limit_micros:
            raise CustomerRefusal(
                Problem.REFUSED,
                f"{where}credit_limit_micros",
                f"the customer would have {granted + limit} micros of credit ({granted} granted already); "
                f"credit class {name}'s limit for the customer is {offer.credit_limit_micros} micros",
            )

    async def granted(self, customer_id: str) -> int:
        """The postpaid credit limits of the customer's lines and pools not terminated (micros)."""
        held = sum(
            line.credit_limit_micros
            for line in await records.lines_of(self.engine, customer_id)
            if line.payment_type == "postpaid" and line.status is not LineStatus.TERMINATED
        )
        return held + sum(
            node.money.credit_limit_micros
            for node in await records.nodes_of(self.engine, customer_id)
            if node.money is not None
            and node.money.payment_type == "postpaid"
            and node.status is not CustomerStatus.TERMINATED
        )

    async def deposit_due(
        self, customer: Customer, *, order_id: str | None, line_id: str | None, now: datetime
    ) -> dict[str, object] | None:
        """The ``deposits`` row a first postpaid line makes due under a class that asks for one,
        when the customer has none recorded for the class yet; the caller writes it with the order
        or the line."""
        credit_class = self.class_of(customer)
        if credit_class is None or credit_class.offer.deposit_micros <= 0:
            return None
        query = select(deposits.c.deposit_id).where(
            and_(deposits.c.customer_id == customer.customer_id, deposits.c.credit_class == credit_class.name)
        )
        async with self.engine.connect() as connection:
            if (await connection.execute(query)).first() is not None:
                return None
        return {
            "customer_id": customer.customer_id,
            "order_id": order_id,
            "line_id": line_id,
            "credit_class": credit_class.name,
            "amount_micros": credit_class.offer.deposit_micros,
            "currency": self.rules.currency,
            "state": "pending",
            "created_at": utc_naive(now),
        }
