"""Activation: applications (identity validation, the credit check) and product orders (TMF622),
fulfilled idempotently item by item, refused by credit class, resumed after a crash exactly once.

The service tests run on SQLite and on a private PostgreSQL (tests/ocs/postgres_support.py) with a
real Redis; the API tests run over HTTP against the server on port 0 with the admin token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.embedded import EmbeddedRedis
from balance.types import BucketKind
from ocs.api.customers import ProvisioningAccounts
from ocs.api.orders import EngineLines
from ocs.api.provisioning import Provisioning
from ocs.customers import records
from ocs.customers.applications import Applications, NewApplication
from ocs.customers.credit import RuleTable
from ocs.customers.credit_load import load_credit_rules
from ocs.customers.orders import NewProductOrder, Orders, OrderState
from ocs.customers.service import CustomerRefusal, Customers
from ocs.customers.values import CustomerStatus, LineStatus, NewCustomer, NewLine
from ocs.rating.rate import load_book
from tests.ocs.conftest import server_settings, server_with
from tests.ocs.postgres_support import business_database, postgresql_url
from tests.ocs.test_api import Api, api
from tests.ocs.test_customers import customers, provisioning

__all__ = ["api", "customers", "postgresql_url", "provisioning"]

ROOT = Path(__file__).resolve().parents[2]
EUR = 1_000_000
RULES = load_credit_rules(ROOT / "config" / "credit_classes.toml")
CLEARED = (
    "deposits",
    "product_order_items",
    "product_orders",
    "lifecycle_steps",
    "line_identities",
    "lines",
    "billing_accounts",
    "customer_nodes",
    "customers",
    "parties",
)


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, CLEARED) as made:
        yield made
        async with made.begin() as connection:  # the orders refer to customers other tests clear
            for table in CLEARED[:3]:
                await connection.execute(text(f"DELETE FROM {table}"))


def application(**changes: object) -> dict[str, object]:
    """A strong applicant: 40 years old, employed, high income, 10 years at the address (class A)."""
    body: dict[str, object] = {
        "customer_id": "cara",
        "individual": {
            "given_name": "Cara",
            "family_name": "Example",
            "birth_date": "1986-01-15",
            "identity_document": {"type": "national_id", "number": "T22000129", "issuing_country": "DE"},
        },
        "person": {"employment": "employed", "income_band": "high", "years_at_address": 10},
        "payment_method": {"kind": "card"},
        "requested_offer": "postpaid",
        "lines_wanted": 1,
    }
    body.update(changes)
    return body


WEAK = {"employment": "unemployed", "income_band": "none", "years_at_address": 0}  # 20 years old: class D


def order(customer_id: str, *items: dict[str, object], external_id: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"customer_id": customer_id, "items": list(items)}
    if external_id is not None:
        body["external_id"] = external_id
    return body


def bundle(item_id: str, line_id: str, amount: int) -> dict[str, object]:
    return {"id": item_id, "action": "add_bundle", "line_id": line_id, "bundle": {"kind": "events", "amount": amount}}


async def events_buckets(provisioning: Provisioning, line_id: str) -> list[int]:
    view = await provisioning.view(line_id)
    return sorted(bucket.amount for bucket in view.account.buckets if bucket.kind is BucketKind.EVENTS)


# -- over HTTP ---------------------------------------------------------------------------------


async def test_an_application_with_a_malformed_document_is_refused_naming_the_field(api: Api) -> None:
    person = dict(application()["individual"])  # type: ignore[call-overload]
    person["identity_document"] = {"type": "national_id", "number": "T220001A", "issuing_country": "DE"}
    status, body = await api.call("POST", "/applications", application(individual=person))
    assert status == 422, body
    assert body["error"].startswith("individual.identity_document.number:") and "malformed" in body["error"]
    assert (await api.call("GET", "/customers/cara"))[0] == 404  # nothing was written


async def test_the_credit_class_decides_what_is_offered(api: Api) -> None:
    status, strong = await api.call("POST", "/applications", application())
    assert status == 201, strong
    decision = strong["decision"]
    assert decision["credit_class"] == "A" and decision["offer"] == "postpaid"
    assert decision["credit_limit_micros"] == 300 * EUR and decision["requested_offer_granted"] is True
    assert "class A" in decision["explanation"] and "debt is 0" in decision["debt_note"]
    assert strong["customer"]["status"] == "prospect"
    assert strong["customer"]["credit_profile"] == {"credit_score": 90, "credit_class": "A"}
    weak_person = dict(application()["individual"])  # type: ignore[call-overload]
    weak_person.update(
        birth_date="2006-01-01", identity_document={"type": "passport", "number": "C01X00T47", "issuing_country": "DE"}
    )
    status, weak = await api.call(
        "POST", "/applications", application(customer_id="dan", individual=weak_person, person=WEAK)
    )
    assert status == 201, weak
    assert weak["decision"]["credit_class"] == "D" and weak["decision"]["offer"] == "prepaid_only"
    assert weak["decision"]["requested_offer_granted"] is False


async def test_an_order_completes_and_activates_the_customer(api: Api) -> None:
    assert (await api.call("POST", "/applications", application()))[0] == 201
    line = {
        "line_id": "cara-1",
        "payment_type": "postpaid",
        "plan": "mobile_postpaid",
        "credit_limit_micros": 100 * EUR,
        "identities": [{"kind": "msisdn", "value": "+4915500077"}],
    }
    body = order("cara", {"id": "1", "action": "add_line", "line": line}, bundle("2", "cara-1", 500))
    status, placed = await api.call("POST", "/productOrders", body)
    assert status == 201, placed
    assert placed["state"] == "completed" and [item["state"] for item in placed["items"]] == ["completed"] * 2
    assert (await api.call("GET", f"/productOrders/{placed['id']}"))[1] == placed
    assert (await api.call("GET", "/customers/cara"))[1]["status"] == "active"
    assert (await api.call("GET", "/lines/cara-1"))[1]["status"] == "active"
    status, subscriber = await api.call("GET", "/subscribers/cara-1/balance")
    assert status == 200 and any(
        bucket["kind"] == "events" and bucket["amount"] == 500 for bucket in subscriber["buckets"]
    ), subscriber


async def test_an_order_beyond_the_credit_class_is_refused_naming_item_and_field(api: Api) -> None:
    weak_person = dict(application()["individual"])  # type: ignore[call-overload]
    weak_person["birth_date"] = "2006-01-01"
    assert (await api.call("POST", "/applications", application(individual=weak_person, person=WEAK)))[0] == 201
    postpaid = {"id": "1", "action": "add_line", "line": {"payment_type": "postpaid", "credit_limit_micros": 10 * EUR}}
    status, body = await api.call("POST", "/productOrders", order("cara", postpaid))
    assert status == 422 and body["error"].startswith("items.0.line.payment_type:"), body
    assert "prepaid only" in body["error"]
    assert (await api.call("GET", "/customers/cara/tree"))[1]["lines"] == []  # nothing was written
    assert (await api.call("GET", "/customers/cara"))[1]["status"] == "prospect"


async def test_a_credit_limit_above_the_class_is_refused(api: Api) -> None:
    assert (await api.call("POST", "/applications", application()))[0] == 201
    prepaid = {"id": "a", "action": "add_line", "line": {}}
    too_much = {"id": "b", "action": "add_line", "line": {"payment_type": "postpaid", "credit_limit_micros": 301 * EUR}}
    status, body = await api.call("POST", "/productOrders", order("cara", prepaid, too_much))
    assert status == 422 and body["error"].startswith("items.1.line.credit_limit_micros:"), body


async def test_a_resubmitted_order_is_the_first_one_and_applies_nothing_again(api: Api) -> None:
    assert (await api.call("POST", "/applications", application()))[0] == 201
    first = order(
        "cara",
        {"id": "1", "action": "add_line", "line": {"line_id": "cara-2"}},
        bundle("2", "cara-2", 70),
        external_id="shop-42",
    )
    status, placed = await api.call("POST", "/productOrders", first)
    assert status == 201 and placed["state"] == "completed", placed
    status, again = await api.call("POST", "/productOrders", first)
    assert status == 200 and again == placed
    balance = (await api.call("GET", "/subscribers/cara-2/balance"))[1]
    assert [bucket["amount"] for bucket in balance["buckets"] if bucket["kind"] == "events"] == [70]
    other = order("cara", bundle("1", "cara-2", 5), external_id="shop-42")
    status, body = await api.call("POST", "/productOrders", other)
    assert status == 409 and body["error"].startswith("external_id:"), body


async def test_an_order_for_another_customers_line_is_refused(api: Api) -> None:
    assert (await api.call("POST", "/applications", application()))[0] == 201
    status, body = await api.call("POST", "/productOrders", order("cara", bundle("1", "nobody", 5)))
    assert status == 404 and body["error"].startswith("items.0.line_id:"), body


# -- the service, on SQLite and PostgreSQL ------------------------------------------------------


class SimulatedCrash(Exception):
    pass


def rated(customer_id: str, credit_class: str) -> NewCustomer:
    return NewCustomer.model_validate(
        {
            "customer_id": customer_id,
            "individual": {"given_name": "Rae", "family_name": "R", "birth_date": "1980-01-01"},
            "status": "prospect",
            "credit_profile": {"credit_class": credit_class},
        }
    )


def postpaid_line(item_id: str, limit_units: int) -> dict[str, object]:
    line = {"payment_type": "postpaid", "plan": "mobile_postpaid", "credit_limit_micros": limit_units * EUR}
    return {"id": item_id, "action": "add_line", "line": line}


async def test_the_credit_class_s_limit_is_the_customer_s_over_all_its_lines(
    database: AsyncEngine, customers: Customers, provisioning: Provisioning
) -> None:
    """Class B may be granted 100.00 of credit: per customer, not per line (else any number of
    lines of 100.00 each). A line that would take the total over it is refused naming the item's
    field, in a later order or later in the same one, and nothing of that order is written."""
    await customers.create_customer(rated("rae", "B"))
    orders = Orders(database, customers, EngineLines(provisioning), RULES)
    first, _ = await orders.submit(NewProductOrder.model_validate(order("rae", postpaid_line("1", 60))))
    assert first.state is OrderState.COMPLETED

    with pytest.raises(CustomerRefusal) as refused:
        await orders.submit(NewProductOrder.model_validate(order("rae", postpaid_line("1", 41))))
    assert refused.value.field == "items.0.line.credit_limit_micros" and "100000000" in refused.value.message
    with pytest.raises(CustomerRefusal) as refused:
        await orders.submit(
            NewProductOrder.model_validate(order("rae", postpaid_line("1", 20), postpaid_line("2", 21)))
        )
    assert refused.value.field == "items.1.line.credit_limit_micros"
    assert len(await records.lines_of(database, "rae")) == 1  # nothing of the refused orders

    both, _ = await orders.submit(NewProductOrder.model_validate(order("rae", postpaid_line("1", 40))))
    assert both.state is OrderState.COMPLETED  # exactly the limit
    line_id = both.items[0].line_id
    assert line_id is not None
    terminate = {"id": "1", "action": "terminate_line", "line_id": line_id}
    assert (await orders.submit(NewProductOrder.model_validate(order("rae", terminate))))[0].state.value == "completed"
    again, _ = await orders.submit(NewProductOrder.model_validate(order("rae", postpaid_line("1", 40))))
    assert again.state is OrderState.COMPLETED  # a terminated line's credit is no longer granted


async def test_a_deposit_the_class_asks_for_is_recorded_once_with_the_first_postpaid_order(
    database: AsyncEngine, customers: Customers, provisioning: Provisioning
) -> None:
    """Class C: postpaid against a deposit of 50.00. The order that gives the customer its first
    postpaid line records the deposit, pending for the billing wing; later orders do not."""
    await customers.create_customer(rated("cid", "C"))
    await customers.create_customer(rated("bo", "B"))
    orders = Orders(database, customers, EngineLines(provisioning), RULES)
    prepaid, _ = await orders.submit(
        NewProductOrder.model_validate(order("cid", {"id": "1", "action": "add_line", "line": {}}))
    )
    assert prepaid.deposit is None  # no postpaid line: nothing is due
    first, _ = await orders.submit(NewProductOrder.model_validate(order("cid", postpaid_line("1", 10))))
    assert first.deposit is not None
    assert (first.deposit.credit_class, first.deposit.amount_micros, first.deposit.currency, first.deposit.state) == (
        "C",
        50 * EUR,
        "EUR",
        "pending",
    )
    assert (await orders.order(first.id)).deposit == first.deposit
    second, _ = await orders.submit(NewProductOrder.model_validate(order("cid", postpaid_line("1", 10))))
    assert second.deposit is None
    no_deposit, _ = await orders.submit(NewProductOrder.model_validate(order("bo", postpaid_line("1", 10))))
    assert no_deposit.deposit is None  # class B asks for none
    async with database.connect() as connection:
        rows = (await connection.execute(text("SELECT customer_id, amount_micros, state FROM deposits"))).all()
    assert [tuple(row) for row in rows] == [("cid", 50 * EUR, "pending")]


async def test_a_crash_between_two_items_is_resumed_each_item_once(
    database: AsyncEngine, customers: Customers, provisioning: Provisioning
) -> None:
    customer = NewCustomer.model_validate(
        {
            "customer_id": "eve",
            "individual": {"given_name": "Eve", "family_name": "E", "birth_date": "1980-01-01"},
            "status": "prospect",
            "credit_profile": {"credit_class": "A"},
        }
    )
    await customers.create_customer(customer)
    await customers.add_line("eve", NewLine(line_id="eve-1"))

    async def crash_after_first(order_id: str, item_id: str) -> None:
        if item_id == "1":
            raise SimulatedCrash(order_id)

    lines = EngineLines(provisioning)
    crashing = Orders(database, customers, lines, RULES, after_item=crash_after_first)
    items = (
        bundle("1", "eve-1", 100),
        bundle("2", "eve-1", 7),
        {"id": "3", "action": "suspend_line", "line_id": "eve-1"},
    )
    with pytest.raises(SimulatedCrash):
        await crashing.submit(NewProductOrder.model_validate(order("eve", *items)))
    assert await events_buckets(provisioning, "eve-1") == [100]
    restarted = Orders(database, customers, lines, RULES)
    assert await restarted.resume() == 1  # the startup pass
    assert await events_buckets(provisioning, "eve-1") == [7, 100]  # item 1 not again, item 2 once
    line = await records.get_line(database, "eve-1")
    assert line is not None and line.status is LineStatus.SUSPENDED
    assert (await provisioning.view("eve-1")).account.status.value == "suspended"
    assert (await customers.customer("eve")).status is CustomerStatus.ACTIVE
    assert await restarted.resume() == 0  # nothing left in progress


async def test_a_change_plan_item_changes_the_engine_profile_and_the_line(
    database: AsyncEngine, customers: Customers, provisioning: Provisioning
) -> None:
    customer = {"given_name": "Fay", "family_name": "F", "birth_date": "1980-01-01"}
    await customers.create_customer(
        NewCustomer.model_validate(
            {"customer_id": "fay", "individual": customer, "credit_profile": {"credit_class": "D"}}
        )
    )
    await customers.add_line("fay", NewLine(line_id="fay-1"))  # the default plan: mobile_prepaid
    orders = Orders(database, customers, EngineLines(provisioning), RULES)
    change = {"id": "1", "action": "change_plan", "line_id": "fay-1", "plan": "fixed_prepaid"}
    made, _ = await orders.submit(NewProductOrder.model_validate(order("fay", change)))
    assert made.state is OrderState.COMPLETED, made
    profile = await provisioning.directory.profile("fay-1")
    assert profile is not None and profile.plan == "fixed_prepaid"
    assert (await customers.line("fay-1")).plan == "fixed_prepaid"
    assert (await EngineLines(provisioning).set_plan("fay-1", "fixed_prepaid")).outcome.value == "ok"  # again: same

    for plan, why in (("no_such_plan", "no tariff plan"), ("mobile_postpaid", "credit class D may take only")):
        refused = {**change, "plan": plan}
        with pytest.raises(CustomerRefusal) as refusal:
            await orders.submit(NewProductOrder.model_validate(order("fay", refused)))
        assert refusal.value.field == "items.0.plan" and why in refusal.value.message
    assert (await customers.line("fay-1")).plan == "fixed_prepaid"  # nothing applied
    with pytest.raises(ValueError, match="plan"):  # a plan only with change_plan
        NewProductOrder.model_validate(order("fay", {**bundle("2", "fay-1", 1), "plan": "fixed_prepaid"}))


async def test_a_bundle_step_run_twice_applies_once(
    database: AsyncEngine, customers: Customers, provisioning: Provisioning
) -> None:
    """A crash after the engine step but before the item is recorded: the step runs again, and the
    engine's idempotency key (order:<order>:<item>) makes it one bucket."""
    await customers.create_customer(
        NewCustomer.model_validate(
            {"customer_id": "fay", "individual": {"given_name": "Fay", "family_name": "F", "birth_date": "1980-01-01"}}
        )
    )
    await customers.add_line("fay", NewLine(line_id="fay-1"))
    lines = EngineLines(provisioning)
    from ocs.customers.orders import Bundle

    for _ in range(2):
        answer = await lines.add_bundle("fay-1", Bundle(kind="events", amount=9), 0, "order:PO-x:1")
        assert answer.outcome.value == "ok"
    assert await events_buckets(provisioning, "fay-1") == [9]


class OwedBy:
    """What the billing wing will say a customer owes; here, a table the test sets."""

    note = "from the test's table"

    def __init__(self, debts: dict[str, int]) -> None:
        self.debts = debts

    async def open_debt_micros(self, customer_id: str) -> int:
        return self.debts.get(customer_id, 0)


async def test_a_document_held_by_a_terminated_debtor_is_refused(database: AsyncEngine, customers: Customers) -> None:
    old = NewCustomer.model_validate(
        {
            "customer_id": "old",
            "status": "terminated",
            "individual": {
                "given_name": "Cara",
                "family_name": "Example",
                "birth_date": "1986-01-15",
                "identity_document": {"type": "national_id", "number": "t2200-0129", "issuing_country": "DE"},
            },
        }
    )
    await customers.create_customer(old)
    new = NewApplication.model_validate(application())
    with pytest.raises(CustomerRefusal) as refused:
        await Applications(database, customers, RuleTable(RULES), debts=OwedBy({"old": 5 * EUR})).submit(new)
    assert refused.value.field == "individual.identity_document.number" and "held_by_debtor" in refused.value.message
    assert await records.get_customer(database, "cara") is None
    # Without debt (no billing yet: NoBillingYet) the same document is accepted.
    accepted = await Applications(database, customers, RuleTable(RULES)).submit(new)
    assert accepted.customer.status is CustomerStatus.PROSPECT and accepted.decision.credit_class == "A"
    assert OrderState.COMPLETED.value == "completed"


async def test_the_server_startup_pass_finishes_an_order_a_crash_left_in_progress(
    embedded_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = server_settings(embedded_redis.url, tmp_path / "spool.sqlite3")
    async with server_with(settings) as first:
        database, store, directory = first.state.database, first.state.store, first.state.directory
        assert database is not None and store is not None and directory is not None
        engine_side = Provisioning(
            store, directory, load_book(ROOT / "config" / "tariffs.toml"), default_plan="mobile_prepaid"
        )
        service = Customers(database, ProvisioningAccounts(engine_side))
        await service.create_customer(
            NewCustomer.model_validate(
                {
                    "customer_id": "gus",
                    "status": "prospect",
                    "individual": {"given_name": "Gus", "family_name": "G", "birth_date": "1980-01-01"},
                }
            )
        )

        async def crash(order_id: str, item_id: str) -> None:
            raise SimulatedCrash(order_id)

        crashing = Orders(database, service, EngineLines(engine_side), RULES, after_item=crash)
        with pytest.raises(SimulatedCrash):
            await crashing.submit(
                NewProductOrder.model_validate(
                    order(
                        "gus", {"id": "1", "action": "add_line", "line": {"line_id": "gus-1"}}, bundle("2", "gus-1", 3)
                    )
                )
            )
    async with server_with(settings, flush=False) as restarted:
        database = restarted.state.database
        assert database is not None
        service = Customers(database, ProvisioningAccounts(engine_side))
        assert (await service.customer("gus")).status is CustomerStatus.ACTIVE  # the order completed at startup
        line = await records.get_line(database, "gus-1")
        assert line is not None and line.status is LineStatus.ACTIVE
