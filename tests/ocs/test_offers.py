"""The credit class on every path that grants credit (ocs/customers/offers.py): the operator's
direct routes (a line, a company node's credit line) refused like an order's items, company pools
counted in the customer's credit, the deposit recorded with a directly added line; and a company
pool left provisioning finished with its customer's status.

On SQLite and on a private PostgreSQL (tests/ocs/postgres_support.py), with a real Redis."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.types import AccountStatus
from ocs.api.customers import ProvisioningAccounts
from ocs.api.orders import EngineLines
from ocs.api.provisioning import Provisioning
from ocs.customers import records
from ocs.customers.lifecycle import Lifecycle
from ocs.customers.offers import CreditOffers
from ocs.customers.orders import NewProductOrder, Orders
from ocs.customers.service import CustomerRefusal, Customers, Problem
from ocs.customers.values import CustomerStatus, NewCustomer, NewLine, NewNode
from tests.ocs.postgres_support import postgresql_url
from tests.ocs.test_api import Api, api
from tests.ocs.test_customer_lifecycle import RedisDown, asked
from tests.ocs.test_customers import provisioning
from tests.ocs.test_orders import EUR, RULES, database, order, postpaid_line, rated

__all__ = ["api", "database", "postgresql_url", "provisioning"]


@pytest.fixture
def customers(database: AsyncEngine, provisioning: Provisioning) -> Customers:
    return Customers(database, ProvisioningAccounts(provisioning), credit=CreditOffers(database, RULES))


def company(customer_id: str, credit_class: str) -> NewCustomer:
    return NewCustomer.model_validate(
        {
            "customer_id": customer_id,
            "organization": {"name": "Firm", "registration_number": f"HRB {customer_id}"},
            "credit_profile": {"credit_class": credit_class},
            "money": {"payment_type": "postpaid", "credit_limit_micros": 0},
        }
    )


def postpaid(line_id: str, units: int, **fields: object) -> NewLine:
    values = {"line_id": line_id, "payment_type": "postpaid", "plan": "mobile_postpaid"}
    return NewLine.model_validate({**values, "credit_limit_micros": units * EUR, **fields})


async def refused(call: object) -> CustomerRefusal:
    with pytest.raises(CustomerRefusal) as refusal:
        await call  # type: ignore[misc]
    assert refusal.value.problem is Problem.REFUSED
    return refusal.value


async def test_a_line_added_directly_is_held_to_the_credit_class(database: AsyncEngine, customers: Customers) -> None:
    """The rules of an order's new line, with the same fields: prepaid only, the class's plans,
    the class's limit per line and for the customer; a refusal writes nothing."""
    await customers.create_customer(rated("dan", "D"))
    await customers.create_customer(rated("rae", "B"))
    assert (await refused(customers.add_line("dan", postpaid("dan-1", 0)))).field == "payment_type"
    prepaid_on_postpaid_plan = NewLine(line_id="dan-2", plan="mobile_postpaid")
    assert (await refused(customers.add_line("dan", prepaid_on_postpaid_plan))).field == "plan"
    assert (await customers.add_line("dan", NewLine(line_id="dan-3"))).plan == "mobile_prepaid"

    assert (await refused(customers.add_line("rae", postpaid("rae-1", 101)))).field == "credit_limit_micros"
    await customers.add_line("rae", postpaid("rae-2", 60))
    over = await refused(customers.add_line("rae", postpaid("rae-3", 41)))
    assert over.field == "credit_limit_micros" and "60000000 granted already" in over.message
    await customers.add_line("rae", postpaid("rae-4", 40))  # exactly the limit
    assert [line.line_id for line in await records.lines_of(database, "dan")] == ["dan-3"]
    assert [line.line_id for line in await records.lines_of(database, "rae")] == ["rae-2", "rae-4"]


async def test_a_customer_made_without_a_class_takes_the_operator_s_terms_directly(
    database: AsyncEngine, customers: Customers
) -> None:
    """A customer the operator made directly (no application, so no credit class) is not assessed on
    the direct routes: its postpaid line stands and no deposit is due; a
    product order for it still asks for a class (tests/ocs/test_orders.py)."""
    await customers.create_customer(
        NewCustomer.model_validate(
            {"customer_id": "ivo", "individual": {"given_name": "Ivo", "family_name": "K", "birth_date": "1990-01-01"}}
        )
    )
    line = await customers.add_line("ivo", postpaid("ivo-1", 500))
    assert (line.payment_type, line.credit_limit_micros) == ("postpaid", 500 * EUR)
    async with database.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM deposits"))).scalar_one() == 0


async def test_a_line_added_directly_records_the_deposit_once_and_a_refused_one_none(
    database: AsyncEngine, customers: Customers
) -> None:
    await customers.create_customer(rated("cid", "C"))  # postpaid against a deposit of 50.00
    await customers.add_line("cid", NewLine(line_id="cid-0"))  # prepaid: nothing due
    with pytest.raises(CustomerRefusal):  # the engine refuses the plan: the row and its deposit go
        await customers.add_line("cid", postpaid("cid-x", 10, plan="no_such_plan"))
    async with database.connect() as connection:
        assert (await connection.execute(text("SELECT count(*) FROM deposits"))).scalar() == 0
    await customers.add_line("cid", postpaid("cid-1", 10))
    await customers.add_line("cid", postpaid("cid-2", 10))
    async with database.connect() as connection:
        query = text("SELECT customer_id, order_id, line_id, amount_micros, state FROM deposits")
        rows = [tuple(row) for row in (await connection.execute(query)).all()]
    assert rows == [("cid", None, "cid-1", 50 * EUR, "pending")]


async def test_company_pools_count_in_the_customer_s_credit(
    database: AsyncEngine, customers: Customers, provisioning: Provisioning
) -> None:
    """Class B: 100.00 for the customer, its pools' credit lines included. A line drawing on a
    pool counts only its own credit limit: its cap is a share of the pool's, counted once."""
    await customers.create_customer(company("firm", "B"))
    await customers.add_node("firm", NewNode.model_validate({"node_id": "sales", "name": "Sales", "money": {}}))
    pool = {"node_id": "north", "parent_node_id": "sales", "name": "North"}
    too_much = NewNode.model_validate({**pool, "money": {"credit_limit_micros": 101 * EUR}})
    assert (await refused(customers.add_node("firm", too_much))).field == "money.credit_limit_micros"
    await customers.add_node("firm", NewNode.model_validate({**pool, "money": {"credit_limit_micros": 60 * EUR}}))

    over = await refused(customers.add_line("firm", postpaid("f-1", 41, node_id="north")))
    assert over.field == "credit_limit_micros"
    orders = Orders(database, customers, EngineLines(provisioning), RULES)
    with pytest.raises(CustomerRefusal) as by_order:  # the order path counts the pool the same way
        await orders.submit(NewProductOrder.model_validate(order("firm", postpaid_line("1", 41))))
    assert by_order.value.field == "items.0.line.credit_limit_micros"
    second = NewNode.model_validate({"node_id": "south", "name": "South", "money": {"credit_limit_micros": 41 * EUR}})
    assert (await refused(customers.add_node("firm", second))).field == "money.credit_limit_micros"

    await customers.add_line("firm", postpaid("f-2", 40, node_id="north", cap_micros=60 * EUR))  # 100.00: the limit
    assert await CreditOffers(database, RULES).granted("firm") == 100 * EUR


async def test_the_direct_route_answers_422_naming_the_field(api: Api) -> None:
    body = {"customer_id": "dora", "individual": {"given_name": "Dora", "family_name": "D", "birth_date": "1980-01-01"}}
    status, _ = await api.call("POST", "/customers", {**body, "credit_profile": {"credit_class": "D"}})
    assert status == 201
    status, answer = await api.call("POST", "/customers/dora/lines", {"payment_type": "postpaid"})
    assert status == 422 and answer["error"].startswith("payment_type:"), answer
    status, answer = await api.call("GET", "/customers/dora/tree")
    assert status == 200 and answer["lines"] == []


async def test_a_pool_still_provisioning_takes_its_customer_s_status_when_it_is_finished(
    database: AsyncEngine, customers: Customers, provisioning: Provisioning
) -> None:
    """The lifecycle skips a pool still provisioning; the pass that finishes it gives it the status
    its customer has by then, as for a line."""
    await customers.create_customer(company("firm", "A"))
    node = NewNode.model_validate({"node_id": "sales", "name": "Sales", "money": {"credit_limit_micros": 50 * EUR}})
    with pytest.raises(Exception, match="Redis went away"):
        await Customers(database, RedisDown()).add_node("firm", node)
    assert (await records.get_node(database, "sales")).account_state == "provisioning"  # type: ignore[union-attr]

    lifecycle = Lifecycle(database, EngineLines(provisioning))
    suspended = await lifecycle.set_customer_status("firm", asked("suspended", "invoice unpaid"), "care")
    assert suspended.status is CustomerStatus.SUSPENDED
    assert await customers.resume() == 1  # the startup pass
    assert (await records.get_node(database, "sales")).account_state == "active"  # type: ignore[union-attr]
    assert (await provisioning.view("sales")).account.status is AccountStatus.SUSPENDED

    await lifecycle.set_customer_status("firm", asked("active", "paid"), "care")
    assert (await provisioning.view("sales")).account.status is AccountStatus.ACTIVE
