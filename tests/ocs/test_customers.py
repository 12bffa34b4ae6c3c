"""The customer wing on the real stores: every query on SQLite and on a private PostgreSQL, lines
and company pools made in a real Redis through the provisioning service, and the resumable step
(a crash between the row and the engine, finished exactly once by the startup pass)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from balance.callers import Reply, ScriptCaller
from balance.directory import Directory, Identity, IdentityKind
from balance.embedded import EmbeddedRedis
from balance.errors import BalanceUnavailable
from balance.scripts import SCRIPTS, Operation, Script
from balance.store import BalanceStore
from balance.types import MAX_HIERARCHY_LEVELS, PaymentType
from ocs.api.customers import ProvisioningAccounts
from ocs.api.provisioning import Provisioning
from ocs.customers import records
from ocs.customers.service import CustomerRefusal, Customers, EngineAccount, EngineAnswer, Problem
from ocs.customers.values import (
    CustomerStatus,
    LineStatus,
    NewCustomer,
    NewLine,
    NewNode,
)
from ocs.rating.rate import load_book
from tests.ocs.postgres_support import business_database, postgresql_url

__all__ = ["postgresql_url"]

ROOT = Path(__file__).resolve().parents[2]
EUR = 1_000_000
CLEARED = ("line_identities", "lines", "billing_accounts", "customer_nodes", "customers", "parties")


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with business_database(request, tmp_path, CLEARED) as made:  # each test starts empty
        yield made


@pytest.fixture
async def provisioning(embedded_redis: EmbeddedRedis) -> AsyncIterator[Provisioning]:
    store = await BalanceStore.connect(embedded_redis.url)
    await store.flush_all()
    book = load_book(ROOT / "config" / "tariffs.toml")
    try:
        yield Provisioning(store, Directory(store.admin), book, default_plan="mobile_prepaid")
    finally:
        await store.close()


@pytest.fixture
def customers(database: AsyncEngine, provisioning: Provisioning) -> Customers:
    return Customers(database, ProvisioningAccounts(provisioning))


def ana(**changes: object) -> NewCustomer:
    values: dict[str, object] = {
        "customer_id": "ana",
        "individual": {
            "given_name": "Ana",
            "family_name": "Example",
            "birth_date": "1990-02-03",
            "contact_media": [{"kind": "email", "value": "ana@example.org"}],
            "identity_document": {"type": "passport", "number": "X1234567", "issuing_country": "DE"},
        },
        "credit_profile": {"credit_score": 710, "credit_class": "B"},
        "billing_account": {"currency": "EUR", "bill_cycle_day": 14, "payment_method": "direct_debit"},
    }
    values.update(changes)
    return NewCustomer.model_validate(values)


def acme(**changes: object) -> NewCustomer:
    values: dict[str, object] = {
        "customer_id": "acme",
        "organization": {"name": "ACME GmbH", "registration_number": "HRB 12345"},
        "billing_account": {"currency": "EUR", "bill_cycle_day": 1, "payment_method": "bank_transfer"},
        "money": {"payment_type": "postpaid", "credit_limit_micros": 1_000 * EUR},
    }
    values.update(changes)
    return NewCustomer.model_validate(values)


async def test_an_individual_is_stored_and_read_back_whole(customers: Customers) -> None:
    made = await customers.create_customer(ana())
    read = await customers.customer("ana")
    assert read == made
    assert read.individual is not None and read.individual.birth_date == date(1990, 2, 3)
    assert read.individual.identity_document is not None and read.individual.identity_document.issuing_country == "DE"
    assert read.credit_profile.credit_class == "B" and read.status is CustomerStatus.ACTIVE
    assert read.billing_account is not None and read.billing_account.bill_cycle_day == 14
    assert read.root_node_id is None
    with pytest.raises(CustomerRefusal) as refused:
        await customers.create_customer(ana())
    assert refused.value.problem is Problem.CONFLICT and refused.value.field == "customer_id"


async def test_customers_are_listed_by_status_in_pages(customers: Customers) -> None:
    await customers.create_customer(ana())
    await customers.create_customer(ana(customer_id="bea", status="prospect"))
    await customers.create_customer(acme(money=None))
    everyone = await customers.customers(status=None, limit=10, offset=0)
    assert {customer.customer_id for customer in everyone.customers} == {"ana", "bea", "acme"}
    prospects = await customers.customers(status=CustomerStatus.PROSPECT, limit=10, offset=0)
    assert [customer.customer_id for customer in prospects.customers] == ["bea"]
    pages = [(await customers.customers(status=None, limit=2, offset=offset)).customers for offset in (0, 2)]
    assert [len(page) for page in pages] == [2, 1]
    assert {customer.customer_id for page in pages for customer in page} == {"ana", "bea", "acme"}
    with pytest.raises(CustomerRefusal) as unknown:
        await customers.customer("nobody")
    assert unknown.value.problem is Problem.NOT_FOUND


async def test_a_company_tree_mirrors_its_money_tree_in_the_engine(
    customers: Customers, provisioning: Provisioning
) -> None:
    company = await customers.create_customer(acme())
    assert company.root_node_id is not None
    branch = await customers.add_node(
        "acme", NewNode(node_id="acme-north", name="North", money={"payment_type": "postpaid", "cap_micros": 300 * EUR})
    )
    department = await customers.add_node(
        "acme", NewNode(node_id="acme-north-sales", parent_node_id="acme-north", name="Sales", kind="department")
    )
    line = await customers.add_line(
        "acme",
        NewLine(
            line_id="acme-l1",
            node_id=department.node_id,
            payment_type="postpaid",
            plan="mobile_postpaid",
            cap_micros=50 * EUR,
            identities=[{"kind": "msisdn", "value": "+4915200000001"}],
        ),
    )
    assert branch.engine_parent_id == company.root_node_id and branch.account_state == "active"
    assert department.account_id is None  # no money: not an engine account
    assert line.engine_parent_id == "acme-north" and line.status is LineStatus.ACTIVE
    view = await provisioning.view("acme-l1")
    assert view.account.parent_id == "acme-north" and view.account.child_cap_micros == 50 * EUR
    assert view.account.payment_type is PaymentType.POSTPAID
    assert (await provisioning.view("acme-north")).account.parent_id == company.root_node_id
    assert await provisioning.directory.account_of(Identity(IdentityKind.E164, "4915200000001")) == "acme-l1"
    tree = await customers.tree("acme")
    assert tree.root is not None and tree.root.node.node_id == company.root_node_id
    [north] = tree.root.children
    [sales] = north.children
    assert north.node.node_id == "acme-north" and [found.line_id for found in sales.lines] == ["acme-l1"]


async def test_a_money_tree_deeper_than_the_engine_holds_is_refused_naming_the_field(customers: Customers) -> None:
    await customers.create_customer(acme())
    parent = None
    for level in range(2, MAX_HIERARCHY_LEVELS + 1):  # the root is level 1
        node = await customers.add_node(
            "acme", NewNode(node_id=f"n{level}", parent_node_id=parent, name=f"level {level}", money={})
        )
        parent = node.node_id
    with pytest.raises(CustomerRefusal) as too_deep:
        await customers.add_node("acme", NewNode(parent_node_id=parent, name="too deep", money={}))
    assert too_deep.value.problem is Problem.REFUSED and too_deep.value.field == "parent_node_id"
    with pytest.raises(CustomerRefusal) as line_too_deep:
        await customers.add_line("acme", NewLine(node_id=parent))
    assert line_too_deep.value.field == "node_id"
    # A node without money adds no engine level: a line one level up still fits.
    plain = await customers.add_node("acme", NewNode(parent_node_id="n4", name="no money"))
    assert (await customers.add_line("acme", NewLine(node_id=plain.node_id))).engine_parent_id == "n4"
    assert len(await records.nodes_of(customers.engine, "acme")) == MAX_HIERARCHY_LEVELS + 1


async def test_a_held_identity_or_a_refused_plan_writes_nothing(customers: Customers) -> None:
    await customers.create_customer(ana())
    await customers.add_line("ana", NewLine(line_id="ana-1", identities=[{"kind": "msisdn", "value": "4915300000001"}]))
    with pytest.raises(CustomerRefusal) as held:
        await customers.add_line(
            "ana",
            NewLine(identities=[{"kind": "imsi", "value": "26201999"}, {"kind": "msisdn", "value": "+4915300000001"}]),
        )
    assert held.value.problem is Problem.CONFLICT and held.value.field == "identities.1"
    with pytest.raises(CustomerRefusal) as refused:
        await customers.add_line("ana", NewLine(line_id="ana-2", plan="no_such_plan"))
    assert refused.value.problem is Problem.REFUSED and "no_such_plan" in refused.value.message
    assert await records.get_line(customers.engine, "ana-2") is None  # the row went with the refusal
    assert [line.line_id for line in await records.lines_of(customers.engine, "ana")] == ["ana-1"]


class SimulatedCrash(Exception):
    """The process dies here: nothing after this point runs."""


class CrashingAccounts(ProvisioningAccounts):
    """The real engine port, with the process dying before (or after) its call."""

    def __init__(self, provisioning: Provisioning, *, after_engine: bool) -> None:
        super().__init__(provisioning)
        self.after_engine = after_engine

    async def ensure(self, account: EngineAccount) -> EngineAnswer:
        if self.after_engine:
            await super().ensure(account)
        raise SimulatedCrash(account.account_id)


@pytest.mark.parametrize("after_engine", [False, True], ids=["before-the-engine", "after-the-engine"])
async def test_a_line_left_provisioning_by_a_crash_is_finished_once_at_startup(
    customers: Customers, provisioning: Provisioning, after_engine: bool
) -> None:
    await customers.create_customer(ana())
    crashing = Customers(customers.engine, CrashingAccounts(provisioning, after_engine=after_engine))
    identities = [{"kind": "msisdn", "value": "4915400000001"}, {"kind": "sip", "value": "sip:ana@ims.example"}]
    with pytest.raises(SimulatedCrash):
        await crashing.add_line("ana", NewLine(line_id="ana-crash", identities=identities))
    left = await records.get_line(customers.engine, "ana-crash")
    assert left is not None and left.status is LineStatus.PROVISIONING
    assert (await provisioning.store.hierarchy("ana-crash") is not None) is after_engine
    # The restart: a fresh service on the same stores runs the startup pass.
    assert await customers.resume() == 1
    assert (await customers.line("ana-crash")).status is LineStatus.ACTIVE
    assert (await provisioning.view("ana-crash")).account.account_id == "ana-crash"
    assert await provisioning.directory.account_of(Identity(IdentityKind.SIP_URI, "sip:ana@ims.example")) == "ana-crash"
    assert await customers.resume() == 0  # exactly once: nothing is left to finish


async def test_a_company_pool_left_provisioning_is_finished_before_its_lines(
    customers: Customers, provisioning: Provisioning
) -> None:
    await customers.create_customer(acme())
    crashing = Customers(customers.engine, CrashingAccounts(provisioning, after_engine=False))
    with pytest.raises(SimulatedCrash):
        await crashing.add_node("acme", NewNode(node_id="acme-west", name="West", money={"cap_micros": 10 * EUR}))
    with pytest.raises(CustomerRefusal) as waiting:  # no line under a pool that is not made yet
        await customers.add_line("acme", NewLine(node_id="acme-west"))
    assert waiting.value.problem is Problem.CONFLICT and waiting.value.field == "node_id"
    assert await customers.resume() == 1
    assert (await provisioning.view("acme-west")).account.child_cap_micros == 10 * EUR
    assert (await customers.add_line("acme", NewLine(node_id="acme-west"))).engine_parent_id == "acme-west"


class CrashingCaller:
    """The store's real Redis client, with the process dying at the script call ``crashes`` picks
    (the engine step is several Redis calls: the ``ar:`` claim, the provision script, one claim
    per identity, the profile)."""

    def __init__(self, inner: ScriptCaller, crashes: Callable[[Script, int], bool]) -> None:
        self.inner = inner
        self.crashes = crashes
        self.calls: dict[Script, int] = {}

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        self.calls[script] = self.calls.get(script, 0) + 1
        if self.crashes(script, self.calls[script]):
            raise SimulatedCrash(script)
        return await self.inner.run(script, keys, args)

    async def execute(self, *parts: str) -> Reply:
        return await self.inner.execute(*parts)

    async def scan_keys(self, pattern: str) -> list[str]:
        return await self.inner.scan_keys(pattern)

    async def close(self) -> None:
        await self.inner.close()


class RacedCaller(CrashingCaller):
    """The store's real Redis client, with another actor binding the identity of the second
    claim to its own account just before that claim runs (a /subscribers create racing)."""

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        if script is SCRIPTS[Operation.CLAIM] and self.calls.get(script, 0) == 1:
            await self.inner.execute("SET", keys[0], "someone-else")
        return await super().run(script, keys, args)


def provisioning_over(provisioning: Provisioning, admin: ScriptCaller) -> Provisioning:
    """A second process on the same Redis, its engine step going through ``admin``."""
    store = BalanceStore(provisioning.store.caller, admin=admin)
    return Provisioning(store, Directory(store.admin), provisioning.book, default_plan=provisioning.default_plan)


def crashing_provisioning(provisioning: Provisioning, crashes: Callable[[Script, int], bool]) -> Provisioning:
    """A second process on the same Redis whose engine step dies where ``crashes`` says."""
    return provisioning_over(provisioning, CrashingCaller(provisioning.store.admin, crashes))


CRASH_WINDOWS = {
    "after-the-ar-claim": lambda script, call: script is SCRIPTS[Operation.PROVISION],
    "after-the-account": lambda script, call: script is SCRIPTS[Operation.CLAIM],
    "after-one-identity": lambda script, call: script is SCRIPTS[Operation.CLAIM] and call == 2,
}


@pytest.mark.parametrize("window", list(CRASH_WINDOWS))
async def test_a_crash_inside_the_engine_step_is_finished_at_startup(
    customers: Customers, provisioning: Provisioning, window: str
) -> None:
    await customers.create_customer(ana())
    dying = crashing_provisioning(provisioning, CRASH_WINDOWS[window])
    crashing = Customers(customers.engine, ProvisioningAccounts(dying))
    identities = [{"kind": "msisdn", "value": "4915400000002"}, {"kind": "sip", "value": "sip:ana2@ims.example"}]
    with pytest.raises(SimulatedCrash):
        await crashing.add_line("ana", NewLine(line_id="ana-inside", identities=identities))
    assert await provisioning.store.hierarchy("ana-inside") is not None  # the ar: claim was made
    assert await customers.resume() == 1
    assert (await customers.line("ana-inside")).status is LineStatus.ACTIVE
    profile, view = await provisioning.show("ana-inside")
    assert view.account.account_id == "ana-inside" and profile is not None and profile.plan == "mobile_prepaid"
    for kind, value in ((IdentityKind.E164, "4915400000002"), (IdentityKind.SIP_URI, "sip:ana2@ims.example")):
        assert await provisioning.directory.account_of(Identity(kind, value)) == "ana-inside"
    assert await customers.resume() == 0


async def test_an_identity_taken_during_the_engine_step_keeps_the_row_and_binds_no_identity(
    customers: Customers, provisioning: Provisioning
) -> None:
    await customers.create_customer(ana())
    raced = provisioning_over(provisioning, RacedCaller(provisioning.store.admin, lambda script, call: False))
    racing = Customers(customers.engine, ProvisioningAccounts(raced))
    identities = [{"kind": "msisdn", "value": "4915400000003"}, {"kind": "sip", "value": "sip:ana3@ims.example"}]
    with pytest.raises(CustomerRefusal) as taken:
        await racing.add_line("ana", NewLine(line_id="ana-raced", identities=identities))
    assert taken.value.problem is Problem.CONFLICT and taken.value.field == "identities"
    # The engine account exists, so the row stays (deleting it would orphan the account), and no
    # identity is left bound to a line without a profile: the claims are all or nothing.
    left = await records.get_line(customers.engine, "ana-raced")
    assert left is not None and left.status is LineStatus.PROVISIONING
    assert (await provisioning.view("ana-raced")).account.account_id == "ana-raced"
    assert await provisioning.directory.account_of(Identity(IdentityKind.E164, "4915400000003")) is None
    assert await provisioning.directory.profile("ana-raced") is None
    assert await customers.resume() == 0  # still held elsewhere: stays provisioning
    await provisioning.store.admin.execute("DEL", "id:sip:sip:ana3@ims.example")  # the other actor lets it go
    assert await customers.resume() == 1
    assert (await customers.line("ana-raced")).status is LineStatus.ACTIVE
    assert (
        await provisioning.directory.account_of(Identity(IdentityKind.SIP_URI, "sip:ana3@ims.example")) == "ana-raced"
    )


class BlippingCaller(CrashingCaller):
    """The store's real Redis client, Redis not answering the provision script once (the API's 503)."""

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[str]) -> Reply:
        try:
            return await super().run(script, keys, args)
        except SimulatedCrash:
            raise BalanceUnavailable("Redis did not answer") from None


async def test_a_retry_with_the_same_terms_after_redis_did_not_answer_finishes_the_line(
    customers: Customers, provisioning: Provisioning
) -> None:
    await customers.create_customer(ana())
    blip = BlippingCaller(provisioning.store.admin, lambda script, call: script is SCRIPTS[Operation.PROVISION])
    blipping = Customers(customers.engine, ProvisioningAccounts(provisioning_over(provisioning, blip)))
    identities = [{"kind": "msisdn", "value": "4915400000004"}]
    line = NewLine(line_id="ana-retry", name="Ana's phone", identities=identities)
    with pytest.raises(BalanceUnavailable):
        await blipping.add_line("ana", line)
    assert (await customers.line("ana-retry")).status is LineStatus.PROVISIONING
    with pytest.raises(CustomerRefusal) as other_terms:  # the id is taken by a line of other terms
        await customers.add_line(
            "ana",
            NewLine(
                line_id="ana-retry",
                name="Ana's phone",
                identities=identities,
                cap_micros=0,
                plan="mobile_postpaid",
                payment_type="postpaid",
            ),
        )
    assert other_terms.value.problem is Problem.CONFLICT
    retried = await customers.add_line("ana", line)  # the client's retry: the same terms resume it
    assert retried.status is LineStatus.ACTIVE and retried.line_id == "ana-retry"
    assert await provisioning.directory.account_of(Identity(IdentityKind.E164, "4915400000004")) == "ana-retry"
    assert await customers.resume() == 0
    with pytest.raises(CustomerRefusal) as again:  # once active, the id is a duplicate again
        await customers.add_line("ana", line)
    assert again.value.problem is Problem.CONFLICT
