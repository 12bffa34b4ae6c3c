"""A seeded subscriber population and its provisioning through the HTTP API.

Theory of operation: ``build_population`` draws, from a seeded ``random.Random``, the four
customer types of DESIGN.md (mobile/fixed x prepaid/postpaid) in the configured shares, plus one
company: a prepaid parent holding the pool and children that draw on it within a cap. Prepaid
lines get a main balance (a configured share of them a low one, so that Final-Unit-Indication
and 4012 happen in a run); postpaid lines get a credit limit and no money; a share of the mobile
lines also get a data allowance (an octets bucket scoped to the "data" service of
``config/tariffs.toml``, rating group 10). The same seed gives the same population.

``provision`` creates everyone with POST /subscribers (parents before children). Account ids and
numbers carry a run number so that several runs can share one server without colliding.
Money is integer micros inside the simulator and a decimal string on the wire.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
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


class CustomerType(StrEnum):
    MOBILE_PREPAID = "mobile_prepaid"
    MOBILE_POSTPAID = "mobile_postpaid"
    FIXED_PREPAID = "fixed_prepaid"
    FIXED_POSTPAID = "fixed_postpaid"
    COMPANY = "company"  # the parent and its children

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
    company_children: int
    company_pool_micros: int
    child_cap_micros: int


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
    parent_id: str = ""
    child_cap_micros: int = 0

    @property
    def is_mobile(self) -> bool:
        return self.customer_type.is_mobile

    def create_body(self) -> dict[str, object]:
        """The JSON body of POST /subscribers (ocs/api/provisioning.py ``parse_new_subscriber``)."""
        buckets: list[dict[str, object]] = []
        if self.main_micros:
            buckets.append({"kind": "main", "amount": money_text(self.main_micros)})
        if self.data_allowance_octets:
            buckets.append({"kind": "octets", "amount": self.data_allowance_octets, "services": [DATA_SERVICE]})
        body: dict[str, object] = {
            "account_id": self.account_id,
            "payment_type": "prepaid" if self.prepaid else "postpaid",
            "plan": self.plan,
            "customer_type": "mobile" if self.is_mobile else "fixed",
            "buckets": buckets,
            "identities": [{"kind": "msisdn", "value": self.msisdn}] if self.msisdn else [],
        }
        if self.credit_limit_micros:
            body["credit_limit"] = money_text(self.credit_limit_micros)
        if self.parent_id:
            body["parent_id"] = self.parent_id
            body["child_cap"] = money_text(self.child_cap_micros)
        return body


@dataclass(frozen=True, slots=True)
class Population:
    run_number: int
    subscribers: tuple[SimulatedSubscriber, ...]

    @property
    def lines(self) -> tuple[SimulatedSubscriber, ...]:
        """The subscribers that can originate traffic (they have a number)."""
        return tuple(subscriber for subscriber in self.subscribers if subscriber.msisdn)

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
                )
            )
            index += 1
    subscribers += _company(settings, run_number, index)
    return Population(run_number, tuple(subscribers))


def _company(settings: PopulationSettings, run_number: int, first_index: int) -> list[SimulatedSubscriber]:
    if settings.company_children <= 0:
        return []
    parent_id = f"sim{run_number:05d}-company"
    parent = SimulatedSubscriber(
        parent_id, CustomerType.COMPANY, _PLANS[CustomerType.COMPANY], True, None, settings.company_pool_micros
    )
    children = [
        SimulatedSubscriber(
            account_id=f"{parent_id}-child-{number}",
            customer_type=CustomerType.COMPANY,
            plan=_PLANS[CustomerType.COMPANY],
            prepaid=True,
            msisdn=_number(CustomerType.COMPANY, run_number, first_index + number),
            parent_id=parent_id,
            child_cap_micros=settings.child_cap_micros,
        )
        for number in range(settings.company_children)
    ]
    return [parent, *children]


async def provision(api: OcsApi, subscribers: Sequence[SimulatedSubscriber]) -> None:
    """Create every subscriber; parents first, since a child names an existing parent."""
    parents = [subscriber for subscriber in subscribers if not subscriber.parent_id]
    children = [subscriber for subscriber in subscribers if subscriber.parent_id]
    limit = asyncio.Semaphore(PROVISIONING_CONCURRENCY)

    async def create(subscriber: SimulatedSubscriber) -> None:
        async with limit:
            await api.create_subscriber(subscriber.create_body())

    for group in (parents, children):
        await asyncio.gather(*(create(subscriber) for subscriber in group))
