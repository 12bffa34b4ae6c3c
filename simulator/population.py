"""A seeded population of customers and its activation through the customer API.

Theory of operation: ``build_population`` draws, from a seeded ``random.Random``, the four
customer types of DESIGN.md (mobile/fixed x prepaid/postpaid) in the configured shares, each an
individual customer with one line, plus one company customer: a tree of three levels (company ->
branches -> departments -> lines). The money is pooled at the company (prepaid, the root
account of the engine's tree); each department is a node with a cap and no money (its budget:
what all its lines together may draw from the pool); branches carry no money and are no engine
account; each line has a cap of its own under its department (RULES.md "Company money": a cap of
0 would let it draw nothing). Prepaid
lines get a main balance (a configured share of them a low one, so that Final-Unit-Indication
and 4012 happen in a run); postpaid lines get a credit limit and no money; a share of the mobile
lines also get a data allowance (an octets bucket scoped to the "data" service of
``config/tariffs.toml``, rating group 10). The same seed gives the same population.

``provision`` activates everyone through the customer API (ocs/api/customers.py): POST
/customers for each individual and the company (whose root pool is an engine account the server
names: its id is read back and put in place of the placeholder), POST /customers/{id}/nodes for
branches and departments (parents first), POST /customers/{id}/lines for every line; then the
prepaid money comes as a top-up (POST /subscribers/{id}/topups, idempotent by id) and a data
allowance as a bucket. Ids and numbers carry a run number so that several runs can share one
server without colliding. Money is integer micros inside the simulator; the customer API takes
``*_micros`` integers, the subscriber API decimal strings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from simulator.http_api import OcsApi

MICROS_PER_UNIT = 1_000_000  # DESIGN.md "Money and units"
PROVISIONING_CONCURRENCY = 16  # creates in flight; the server's own bulk loader uses the same
MAX_RUN_NUMBER = 100_000  # five digits in account ids and numbers
DATA_SERVICE = "data"  # the tariff service of rating group 10 (config/tariffs.toml)
DATA_RATING_GROUP = 10  # rated as DATA_SERVICE, so the data allowance covers it
VIDEO_RATING_GROUP = 20  # rated as "video": paid with money only
CURRENCY = "EUR"  # of config/tariffs.toml's plans: a billing account's currency


class CustomerType(StrEnum):
    MOBILE_PREPAID = "mobile_prepaid"
    MOBILE_POSTPAID = "mobile_postpaid"
    FIXED_PREPAID = "fixed_prepaid"
    FIXED_POSTPAID = "fixed_postpaid"
    COMPANY = "company"  # the company's pool, its departments and its lines

    @property
    def is_mobile(self) -> bool:
        return self is not CustomerType.FIXED_PREPAID and self is not CustomerType.FIXED_POSTPAID


INDIVIDUAL_TYPES = (
    CustomerType.MOBILE_PREPAID,
    CustomerType.MOBILE_POSTPAID,
    CustomerType.FIXED_PREPAID,
    CustomerType.FIXED_POSTPAID,
)
_PLANS = {
    CustomerType.MOBILE_PREPAID: "mobile_prepaid",
    CustomerType.MOBILE_POSTPAID: "mobile_postpaid",
    CustomerType.FIXED_PREPAID: "fixed_prepaid",
    CustomerType.FIXED_POSTPAID: "fixed_postpaid",
    CustomerType.COMPANY: "mobile_prepaid",
}


def parse_money(text: str) -> int:
    """``"12.50"`` -> 12_500_000 exactly; ValueError for anything finer than a micro."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a decimal amount") from None
    micros = amount * MICROS_PER_UNIT
    if micros != micros.to_integral_value():
        raise ValueError(f"{text!r} has more than 6 decimals")
    return int(micros)


def money_text(micros: int) -> str:
    """12_500_000 -> ``"12.500000"``: the API's decimal string, exact."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    return f"{sign}{whole}.{fraction:06d}"


@dataclass(frozen=True, slots=True)
class PopulationSettings:
    size: int  # individual lines; the company comes on top
    shares: Mapping[CustomerType, float]  # of the individual lines, by type
    prepaid_balance_micros: tuple[int, int]  # drawn uniformly between the two
    low_balance_share: float  # of the prepaid lines
    low_balance_micros: int
    postpaid_credit_limit_micros: int
    data_allowance_share: float  # of the mobile lines
    data_allowance_octets: int
    company_children: int  # lines per department (0: no company)
    company_pool_micros: int
    child_cap_micros: int  # each company line's cap
    company_branches: int = 1
    branch_departments: int = 1
    department_cap_micros: int = 0  # 0: the caps of its lines together
    # The billing cycle (simulator.billing): postpaid customers and the company get a billing
    # account with a bill-cycle day drawn from these (none: no billing accounts), and a credit
    # class drawn from ``credit_classes`` (none: the customer has none).
    bill_cycle_days: tuple[int, ...] = ()
    credit_classes: tuple[str, ...] = ()
    company_postpaid: bool = False  # the company's pool a credit line, its lines postpaid
    # The company's credit class ("": drawn from ``credit_classes`` like the others): its pool's
    # credit line and its lines' limits count against that class's limit (ocs/customers/offers.py).
    company_credit_class: str = ""


@dataclass(frozen=True, slots=True)
class SimulatedSubscriber:
    account_id: str
    customer_type: CustomerType
    plan: str
    prepaid: bool
    msisdn: str | None  # None: an account with no line of its own (the company parent)
    main_micros: int = 0
    credit_limit_micros: int = 0
    data_allowance_octets: int = 0
    parent_id: str = ""  # the engine account it draws on (a department, or the company's pool)
    child_cap_micros: int = 0
    customer_id: str = ""  # "": a customer of its own, named after the account
    node_id: str = ""  # a company line's department, or a department's branch
    node_name: str = ""  # a company node's name (a department)
    bill_cycle_day: int = 0  # the customer's billing account's (0: the customer has none)
    credit_class: str = ""  # the customer's credit profile's ("": none)

    @property
    def is_mobile(self) -> bool:
        return self.customer_type.is_mobile

    @property
    def owner_id(self) -> str:
        """The customer the line (or the company node) belongs to."""
        return self.customer_id or f"{self.account_id}-customer"

    def line_body(self) -> dict[str, object]:
        """The JSON body of POST /customers/{id}/lines (ocs/customers/values.py ``NewLine``)."""
        body: dict[str, object] = {
            "line_id": self.account_id,
            "network": "mobile" if self.is_mobile else "fixed",
            "payment_type": "prepaid" if self.prepaid else "postpaid",
            "plan": self.plan,
            "credit_limit_micros": self.credit_limit_micros,
            "cap_micros": self.child_cap_micros,
            "identities": [{"kind": "msisdn", "value": self.msisdn}] if self.msisdn else [],
        }
        if self.node_id:
            body["node_id"] = self.node_id
        return body


@dataclass(frozen=True, slots=True)
class Population:
    run_number: int
    subscribers: tuple[SimulatedSubscriber, ...]

    @property
    def lines(self) -> tuple[SimulatedSubscriber, ...]:
        """The subscribers that can originate traffic (they have a number)."""
        return tuple(subscriber for subscriber in self.subscribers if subscriber.msisdn)

    @property
    def departments(self) -> tuple[SimulatedSubscriber, ...]:
        """The company departments: nodes under the pool with lines of their own."""
        return tuple(s for s in self.subscribers if s.customer_id and s.parent_id and not s.msisdn)

    def by_id(self) -> dict[str, SimulatedSubscriber]:
        return {subscriber.account_id: subscriber for subscriber in self.subscribers}


def type_counts(size: int, shares: Mapping[CustomerType, float]) -> dict[CustomerType, int]:
    """``size`` split by ``shares`` with the largest-remainder method, so the counts add up."""
    total = sum(shares.get(kind, 0.0) for kind in INDIVIDUAL_TYPES)
    if total <= 0:
        raise ValueError("the population shares add up to nothing")
    exact = {kind: size * shares.get(kind, 0.0) / total for kind in INDIVIDUAL_TYPES}
    counts = {kind: int(value) for kind, value in exact.items()}
    by_remainder = sorted(INDIVIDUAL_TYPES, key=lambda kind: exact[kind] - counts[kind], reverse=True)
    for kind in by_remainder[: size - sum(counts.values())]:
        counts[kind] += 1
    return counts


def _number(customer_type: CustomerType, run_number: int, index: int) -> str:
    # 4915x is a German mobile range and 4930 Berlin's fixed-line area code (config/tariffs.toml
    # zone set "de"): the numbers rate like real lines. 14 digits, within E.164's 15.
    prefix = "4915" if customer_type.is_mobile else "4930"
    return f"{prefix}{run_number:05d}{index:05d}"


def build_population(settings: PopulationSettings, rng: random.Random, run_number: int) -> Population:
    if not 0 <= run_number < MAX_RUN_NUMBER:
        raise ValueError(f"run number {run_number} is not below {MAX_RUN_NUMBER}")
    subscribers: list[SimulatedSubscriber] = []
    index = 0
    for customer_type, count in type_counts(settings.size, settings.shares).items():
        prepaid = customer_type in (CustomerType.MOBILE_PREPAID, CustomerType.FIXED_PREPAID)
        for _ in range(count):
            main = 0
            if prepaid:
                low = rng.random() < settings.low_balance_share
                main = settings.low_balance_micros if low else rng.randint(*settings.prepaid_balance_micros)
            allowance = 0
            if customer_type.is_mobile and rng.random() < settings.data_allowance_share:
                allowance = settings.data_allowance_octets
            cycle_day, credit_class = _billing_profile(settings, rng) if not prepaid else (0, "")
            subscribers.append(
                SimulatedSubscriber(
                    account_id=f"sim{run_number:05d}-{customer_type.value}-{index}",
                    customer_type=customer_type,
                    plan=_PLANS[customer_type],
                    prepaid=prepaid,
                    msisdn=_number(customer_type, run_number, index),
                    main_micros=main,
                    credit_limit_micros=0 if prepaid else settings.postpaid_credit_limit_micros,
                    data_allowance_octets=allowance,
                    bill_cycle_day=cycle_day,
                    credit_class=credit_class,
                )
            )
            index += 1
    cycle_day, credit_class = _billing_profile(settings, rng)
    billing = (cycle_day, settings.company_credit_class or credit_class)
    subscribers += _company(settings, run_number, index, billing)
    return Population(run_number, tuple(subscribers))


def _billing_profile(settings: PopulationSettings, rng: random.Random) -> tuple[int, str]:
    """A billing account's cycle day and a credit class, drawn only when the settings ask for
    them (so a population without billing draws the same numbers as before)."""
    cycle_day = rng.choice(settings.bill_cycle_days) if settings.bill_cycle_days else 0
    credit_class = rng.choice(settings.credit_classes) if settings.credit_classes else ""
    return cycle_day, credit_class


def _company(
    settings: PopulationSettings, run_number: int, first_index: int, billing: tuple[int, str]
) -> list[SimulatedSubscriber]:
    """The company customer: its pool (an account id the server gives, a placeholder until
    then; prepaid money, or with ``company_postpaid`` a credit line billed to the company's
    billing account), a capped department per branch and department number, and lines under each."""
    if settings.company_children <= 0:
        return []
    customer_id = f"sim{run_number:05d}-company"
    pool_id = f"{customer_id}-pool"
    kind = CustomerType.COMPANY
    prepaid = not settings.company_postpaid
    plan = _PLANS[kind] if prepaid else _PLANS[CustomerType.MOBILE_POSTPAID]
    department_cap = settings.department_cap_micros or settings.child_cap_micros * settings.company_children
    pool = SimulatedSubscriber(
        pool_id,
        kind,
        plan,
        prepaid,
        None,
        settings.company_pool_micros if prepaid else 0,
        0 if prepaid else settings.company_pool_micros,
        customer_id=customer_id,
        bill_cycle_day=billing[0],
        credit_class=billing[1],
    )
    members = [pool]
    index = first_index
    for branch in range(settings.company_branches):
        branch_id = f"{customer_id}-b{branch}"
        for number in range(settings.branch_departments):
            department_id = f"{branch_id}-d{number}"
            members.append(
                SimulatedSubscriber(
                    department_id,
                    kind,
                    plan,
                    prepaid,
                    None,
                    parent_id=pool_id,
                    child_cap_micros=department_cap,
                    customer_id=customer_id,
                    node_id=branch_id,
                    node_name=f"department {number} of branch {branch}",
                )
            )
            for line in range(settings.company_children):
                members.append(
                    SimulatedSubscriber(
                        f"{department_id}-line-{line}",
                        kind,
                        plan,
                        prepaid,
                        _number(kind, run_number, index),
                        parent_id=department_id,
                        child_cap_micros=settings.child_cap_micros,
                        customer_id=customer_id,
                        node_id=department_id,
                    )
                )
                index += 1
    return members


def _customer_body(member: SimulatedSubscriber) -> dict[str, object]:
    """POST /customers: an individual for a line of its own, the organization for a company pool."""
    billing: dict[str, object] = {}
    if member.bill_cycle_day:
        billing["billing_account"] = {"currency": CURRENCY, "bill_cycle_day": member.bill_cycle_day}
    if member.credit_class:
        billing["credit_profile"] = {"credit_class": member.credit_class}
    if not member.customer_id:
        person = {"given_name": "Simulated", "family_name": member.account_id, "birth_date": "1980-01-01"}
        return {"customer_id": member.owner_id, "individual": person, **billing}
    organization = {"name": f"Simulated company {member.customer_id}", "registration_number": member.customer_id}
    money: dict[str, object] = {"payment_type": "prepaid"}
    if not member.prepaid:
        money = {"payment_type": "postpaid", "credit_limit_micros": member.credit_limit_micros}
    return {"customer_id": member.customer_id, "organization": organization, "money": money, **billing}


async def provision(api: OcsApi, subscribers: Sequence[SimulatedSubscriber]) -> tuple[SimulatedSubscriber, ...]:
    """Activate everyone through the customer API (module docstring), parents before children;
    returns ``subscribers`` with each company pool under the account id the server gave it."""
    limit = asyncio.Semaphore(PROVISIONING_CONCURRENCY)

    async def each(
        items: Sequence[SimulatedSubscriber], call: Callable[[SimulatedSubscriber], Awaitable[None]]
    ) -> None:
        async def one(item: SimulatedSubscriber) -> None:
            async with limit:
                await call(item)

        await asyncio.gather(*(one(item) for item in items))

    owners = [s for s in subscribers if not s.customer_id or (not s.parent_id and not s.msisdn)]
    await each(owners, lambda member: api.create_customer(_customer_body(member)))
    pools: dict[str, str] = {}
    for pool in (s for s in owners if s.customer_id):
        root = (await api.customer(pool.customer_id)).get("root_node_id")
        pools[pool.account_id] = str(root)
    made = tuple(
        dataclasses.replace(
            s, account_id=pools.get(s.account_id, s.account_id), parent_id=pools.get(s.parent_id, s.parent_id)
        )
        for s in subscribers
    )
    departments = [s for s in made if s.customer_id and s.parent_id and not s.msisdn]
    branches = {(s.customer_id, s.node_id) for s in departments}
    await each(
        [
            SimulatedSubscriber(node, CustomerType.COMPANY, "", True, None, customer_id=owner)
            for owner, node in branches
        ],
        lambda branch: api.add_node(branch.customer_id, {"node_id": branch.account_id, "name": branch.account_id}),
    )
    await each(departments, lambda department: api.add_node(department.customer_id, _department_body(department)))
    await each([s for s in made if s.msisdn], lambda line: api.add_line(line.owner_id, line.line_body()))
    await each([s for s in made if s.main_micros or s.data_allowance_octets], lambda s: _fund(api, s))
    return made


def _department_body(department: SimulatedSubscriber) -> dict[str, object]:
    return {
        "node_id": department.account_id,
        "parent_node_id": department.node_id,
        "name": department.node_name or department.account_id,
        "kind": "department",
        "money": {
            "payment_type": "prepaid" if department.prepaid else "postpaid",
            "cap_micros": department.child_cap_micros,
        },
    }


async def _fund(api: OcsApi, subscriber: SimulatedSubscriber) -> None:
    """The opening money as a top-up (idempotent by its id), and the data allowance."""
    if subscriber.main_micros:
        await api.top_up(subscriber.account_id, f"opening-{subscriber.account_id}", money_text(subscriber.main_micros))
    if subscriber.data_allowance_octets:
        allowance = {"kind": "octets", "amount": subscriber.data_allowance_octets, "services": [DATA_SERVICE]}
        await api.add_allowance(subscriber.account_id, allowance)
