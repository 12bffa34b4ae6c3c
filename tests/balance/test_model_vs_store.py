"""Model-based test: the Redis money engine held against the in-memory reference model.

Hypothesis drives random sequences of operations (provisioning a small set of hierarchies, then
charges: session openings, updates and terminations over several rating groups and unit kinds,
events, exact retransmissions of earlier requests, stale and unknown request numbers, top-ups,
adjustments, refunds, new buckets, status / limit / cap changes, time moving on and session
expiry; charges, retransmissions and refunds also arrive after their deadline, RULES.md
"Deadlines": the store's clock is then far in the past) against both
``balance.model.ReferenceModel`` and ``balance.store.BalanceStore`` on a private real Redis.
Every answer must be equal, and after every step every account's balance view and the usage
records must be equal too. The model asserts RULES.md's invariants after each
of its operations, so equal views mean the store keeps them as well.

Hypothesis state machines are synchronous: each machine runs the store's coroutines on one
event loop (``asyncio.Runner``) that the test owns, and connects the store inside that loop.
The inputs stay inside what both sides accept (the store refuses more tariffs, for example
first units that are not whole blocks, with ``invalid``; the model does not check those).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from balance import cycle
from balance.embedded import EmbeddedRedis
from balance.errors import BalanceUnavailable
from balance.model import ReferenceModel
from balance.store import BalanceStore
from balance.types import (
    MAX_AMOUNT_MICROS,
    MAX_HIERARCHY_LEVELS,
    Account,
    AccountStatus,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    ChargeResult,
    Outcome,
    PaymentType,
    PoolDraw,
    RentalPolicy,
    Tariff,
    TariffChange,
    Unit,
    UsageRecord,
    UsageSplit,
)

Result = TypeVar("Result")

START_SECONDS = 1_700_000_000
VOICE_60_60 = Tariff(price_micros=60_000, per_units=60, block_units=60, first_units=60)
VOICE_60_1 = Tariff(price_micros=90_000, per_units=60, block_units=1, first_units=60)
VOICE_1_1 = Tariff(price_micros=1_000, per_units=60, block_units=1, first_units=1)  # fractions of a micro
DATA_PER_MEGABYTE = Tariff(price_micros=10_000, per_units=1_000_000, block_units=1_000_000, first_units=1_000_000)
DATA_PER_KILOBYTE = Tariff(price_micros=30, per_units=1_000, block_units=1_000, first_units=1_000)
SMS = Tariff(price_micros=50_000)
FREE = Tariff(price_micros=0)


@dataclass(frozen=True)
class Service:
    """One service (rating group, service identifier) as the network sends it; the tariff may
    change between requests."""

    rating_group: int
    name: str
    unit: Unit
    tariffs: tuple[Tariff, ...]
    most_units: int
    service_identifier: int | None = None


SERVICES = (
    Service(1, "voice", Unit.SECONDS, (VOICE_60_60, VOICE_60_1), 600),
    Service(2, "voice-roaming", Unit.SECONDS, (VOICE_1_1, VOICE_60_60), 600),
    Service(3, "data", Unit.OCTETS, (DATA_PER_MEGABYTE, DATA_PER_KILOBYTE), 5_000_000),
    # The same rating group with a Service-Identifier: a quota of its own (RULES.md "Services").
    Service(3, "data", Unit.OCTETS, (DATA_PER_KILOBYTE, DATA_PER_MEGABYTE), 5_000_000, service_identifier=1),
    Service(4, "sms", Unit.EVENTS, (SMS, FREE), 4),
)

# Hierarchies: a prepaid individual, a postpaid individual, a prepaid company with two
# branches, a postpaid company with one department, and a company tree of MAX_HIERARCHY_LEVELS
# levels (RULES.md "Company money"): a prepaid group, a branch without money, a postpaid
# department (a payer in the middle), a team without money, a line with a little money of its
# own, and a line right under the branch; caps at every level below the root. A sixth level
# under the deepest line is refused on both sides.
PREPAID, POSTPAID, COMPANY, BRANCH, BARE_BRANCH, CORPORATE, DEPARTMENT = (
    "pre",
    "post",
    "co",
    "co.branch",
    "co.bare",
    "corp",
    "corp.dept",
)
GROUP, GROUP_BRANCH, GROUP_DEPARTMENT, GROUP_TEAM, DEEP_LINE, BRANCH_LINE = (
    "grp",
    "grp.b",
    "grp.b.d",
    "grp.b.d.t",
    "grp.b.d.t.l",
    "grp.b.l",
)
DEEP_TREE = (GROUP_BRANCH, GROUP_DEPARTMENT, GROUP_TEAM, DEEP_LINE, BRANCH_LINE)
ACCOUNTS = (PREPAID, POSTPAID, COMPANY, BRANCH, BARE_BRANCH, CORPORATE, DEPARTMENT, GROUP, *DEEP_TREE)
ROOTS = (PREPAID, POSTPAID, COMPANY, CORPORATE, GROUP)
CHILDREN = (BRANCH, BARE_BRANCH, DEPARTMENT, *DEEP_TREE)
CREDIT_LINES = (POSTPAID, CORPORATE, GROUP_DEPARTMENT)

# Small amounts run out within a run (partial grants, refusals, short commits); large ones do not.
money_amounts = st.one_of(st.just(0), st.integers(1, 300_000), st.integers(1, 2_000_000))
# A cap of a node in the deep tree: as money_amounts, or so large that the node caps nothing.
deep_caps = st.one_of(money_amounts, st.just(MAX_AMOUNT_MICROS))
validities = st.integers(1, 900)
lates = st.integers(0, 5).map(lambda draw: draw == 0)  # arrives after its deadline, one time in six


def _answer(call: Callable[[], ChargeResult]) -> ChargeResult | type[BalanceUnavailable]:
    """What a charge or refund answered: its result, or BalanceUnavailable if it raised that."""
    try:
        return call()
    except BalanceUnavailable:
        return BalanceUnavailable


few_units = st.integers(0, 3)


@st.composite
def charge_items(draw: st.DrawFn, *, used: bool, requested: bool, refused: bool = False) -> tuple[ChargeItem, ...]:
    """One to three items of distinct services, with zero often among the unit counts; with
    ``refused``, now and then one whose usage report was refused (RULES.md "Refused usage")."""
    chosen = draw(st.lists(st.sampled_from(SERVICES), min_size=1, max_size=3, unique=True))
    items = []
    for service in chosen:
        if refused and draw(st.integers(0, 4)) == 0:
            tariff = draw(st.sampled_from(service.tariffs))
            items.append(
                ChargeItem(
                    service.rating_group,
                    service.name,
                    service.unit,
                    tariff,
                    service_identifier=service.service_identifier,
                    commit_reserved=True,
                )
            )
            continue
        units = st.one_of(st.just(0), st.integers(1, service.most_units))
        used_units = draw(units) if used else 0
        tariff = draw(st.sampled_from(service.tariffs))
        items.append(
            ChargeItem(
                rating_group=service.rating_group,
                service=service.name,
                unit=service.unit,
                tariff=tariff,
                used_units=used_units,
                requested_units=draw(units) if requested else 0,
                release=used and requested and draw(st.integers(0, 4)) == 0,
                service_identifier=service.service_identifier,
                tariff_change=draw(tariff_changes(tariff)) if requested else None,
                used_split=draw(usage_splits(used_units)),
            )
        )
    return tuple(items)


def tariff_changes(tariff: Tariff) -> st.SearchStrategy[TariffChange | None]:
    """Often none; else a switch 1 to 900 s after the request (``at_seconds`` is relative here:
    ``ModelVersusStore._at_now`` adds the request's time) to a dearer, cheaper or free price."""
    prices = st.sampled_from((tariff.price_micros * 2, tariff.price_micros // 2, 0, tariff.price_micros + 7))
    change = st.builds(TariffChange, st.integers(1, 900), prices)
    return st.one_of(st.none(), st.none(), change)


@st.composite
def usage_splits(draw: st.DrawFn, used_units: int) -> UsageSplit | None:
    """Often none (not itemised); else the used units cut into before, after and straddling."""
    if draw(st.integers(0, 2)) != 0:
        return None
    before = draw(st.integers(0, used_units))
    after = draw(st.integers(0, used_units - before))
    return UsageSplit(before, after, used_units - before - after)


def hierarchies(
    main: int,
    bonus: int,
    allowance_seconds: int,
    credit_limit: int,
    company_main: int,
    caps: tuple[int, int, int],
    deep_caps: tuple[int, int, int, int, int],
) -> list[Account]:
    """The accounts every run starts with; buckets expire and start within the run's time span."""
    prepaid_buckets = (
        Bucket(1, BucketKind.MAIN, main),
        Bucket(2, BucketKind.BONUS, bonus, valid_until=START_SECONDS + 1_200),
        Bucket(3, BucketKind.SECONDS, allowance_seconds, ("voice",), valid_until=START_SECONDS + 1_800, priority=1),
        Bucket(4, BucketKind.SECONDS, 120, valid_from=START_SECONDS + 600),
        Bucket(5, BucketKind.OCTETS, 3_000_000),
        Bucket(6, BucketKind.EVENTS, 2, ("sms",), priority=2),
    )
    postpaid = PaymentType.POSTPAID
    return [
        Account(PREPAID, buckets=prepaid_buckets),
        Account(
            POSTPAID,
            payment_type=postpaid,
            credit_limit_micros=credit_limit,
            buckets=(Bucket(1, BucketKind.BONUS, bonus),),
        ),
        Account(COMPANY, buckets=(Bucket(1, BucketKind.MAIN, company_main),)),
        Account(BRANCH, parent_id=COMPANY, child_cap_micros=caps[0], buckets=(Bucket(7, BucketKind.MAIN, 100_000),)),
        Account(BARE_BRANCH, parent_id=COMPANY, child_cap_micros=caps[1]),
        Account(CORPORATE, payment_type=postpaid, credit_limit_micros=credit_limit),
        Account(
            DEPARTMENT, parent_id=CORPORATE, child_cap_micros=caps[2], buckets=(Bucket(1, BucketKind.SECONDS, 300),)
        ),
        *deep_tree(company_main, credit_limit, deep_caps),
    ]


def deep_tree(group_main: int, credit_limit: int, caps: tuple[int, int, int, int, int]) -> list[Account]:
    """The company tree of MAX_HIERARCHY_LEVELS levels, then one account too deep (refused)."""
    postpaid = PaymentType.POSTPAID
    return [
        Account(GROUP, buckets=(Bucket(1, BucketKind.MAIN, group_main), Bucket(2, BucketKind.BONUS, 50_000))),
        Account(GROUP_BRANCH, parent_id=GROUP, child_cap_micros=caps[0]),
        Account(
            GROUP_DEPARTMENT,
            parent_id=GROUP_BRANCH,
            child_cap_micros=caps[1],
            payment_type=postpaid,
            credit_limit_micros=credit_limit,
        ),
        Account(GROUP_TEAM, parent_id=GROUP_DEPARTMENT, child_cap_micros=caps[2]),
        Account(
            DEEP_LINE, parent_id=GROUP_TEAM, child_cap_micros=caps[3], buckets=(Bucket(1, BucketKind.MAIN, 20_000),)
        ),
        Account(BRANCH_LINE, parent_id=GROUP_BRANCH, child_cap_micros=caps[4]),
        Account(f"{DEEP_LINE}.x", parent_id=DEEP_LINE, child_cap_micros=caps[4]),
    ]


class ModelVersusStore(RuleBasedStateMachine):
    sessions = Bundle("sessions")

    def __init__(self, runner: asyncio.Runner, redis_url: str, pipelined: bool, functions: bool = True) -> None:
        super().__init__()
        self.runner = runner
        self.model = ReferenceModel()
        self.store = runner.run(self._connect(redis_url, pipelined, functions))
        # The same connections, with a clock at 1970: every deadline it sends has long passed.
        self.late_store = BalanceStore(self.store.caller, admin=self.store.admin, clock=lambda: 0.0)
        self.now = START_SECONDS
        self.last_numbers: dict[str, tuple[str, int]] = {}  # session id -> (account, last number sent)
        self.sent: list[ChargeRequest] = []
        self.refunds: list[tuple[str, str, int, int, int, str, int]] = []
        self.identifiers = 0
        self.steps = 0
        self.ended = False

    @staticmethod
    async def _connect(redis_url: str, pipelined: bool, functions: bool) -> BalanceStore:
        store = await BalanceStore.connect(redis_url, pipelined=pipelined, functions=functions)
        await store.flush_all()
        return store

    def teardown(self) -> None:
        self.runner.run(self.store.close())

    def _new_id(self, prefix: str) -> str:
        self.identifiers += 1
        return f"{prefix}{self.identifiers}"

    def _store(self, call: Callable[[], Coroutine[Any, Any, Result]]) -> Result:
        return self.runner.run(call())

    def _same(self, operation: str, expected: object, actual: object) -> None:
        assert actual == expected, f"{operation}: store answered {actual!r}, model {expected!r}"

    def _at_now(self, items: tuple[ChargeItem, ...]) -> tuple[ChargeItem, ...]:
        """The items with their tariff changes moved from "seconds after the request" to epoch."""
        return tuple(
            replace(item, tariff_change=replace(change, at_seconds=self.now + change.at_seconds))
            if (change := item.tariff_change) is not None
            else item
            for item in items
        )

    def _charge(self, request: ChargeRequest, *, late: bool = False) -> ChargeResult | None:
        """The request on both; None when it arrived after its deadline and was refused."""
        expected = _answer(lambda: self.model.charge(request, late=late))
        store = self.late_store if late else self.store
        actual = _answer(lambda: self._store(lambda: store.charge(request)))
        self._same(f"charge {request}{' late' if late else ''}", expected, actual)
        self.sent.append(request)
        return expected if isinstance(expected, ChargeResult) else None

    # -- set-up ----------------------------------------------------------------------------------

    @initialize(
        main=money_amounts,
        bonus=money_amounts,
        allowance_seconds=st.integers(0, 300),
        credit_limit=money_amounts,
        company_main=money_amounts,
        caps=st.tuples(money_amounts, money_amounts, money_amounts),
        deep_caps=st.tuples(deep_caps, deep_caps, deep_caps, deep_caps, deep_caps),
    )
    def provision(
        self,
        main: int,
        bonus: int,
        allowance_seconds: int,
        credit_limit: int,
        company_main: int,
        caps: tuple[int, int, int],
        deep_caps: tuple[int, int, int, int, int],
    ) -> None:
        accounts = hierarchies(main, bonus, allowance_seconds, credit_limit, company_main, caps, deep_caps)
        for account in accounts:
            expected = self.model.provision(account)
            self._same(f"provision {account}", expected, self._store(partial(self.store.provision, account)))
            levels = account.account_id.count(".") + 1
            assert (expected.outcome is Outcome.OK) == (levels <= MAX_HIERARCHY_LEVELS), (account, expected)

    # -- charging --------------------------------------------------------------------------------

    @rule(
        target=sessions,
        account_id=st.sampled_from(ACCOUNTS),
        items=charge_items(used=False, requested=True),
        validity=validities,
    )
    def open_session(self, account_id: str, items: tuple[ChargeItem, ...], validity: int) -> str:
        session_id = self._new_id("s")
        self._charge(ChargeRequest(account_id, session_id, 0, self._at_now(items), self.now, validity))
        self.last_numbers[session_id] = (account_id, 0)
        return session_id

    @rule(
        session_id=sessions,
        items=charge_items(used=True, requested=True, refused=True),
        gap=st.sampled_from((1, 1, 1, 2)),
        validity=validities,
        terminate=st.integers(0, 3).map(lambda draw: draw == 0),
        late=lates,
    )
    def continue_session(
        self, session_id: str, items: tuple[ChargeItem, ...], gap: int, validity: int, terminate: bool, late: bool
    ) -> None:
        account_id, last = self.last_numbers[session_id]
        items = self._at_now(items)
        request = ChargeRequest(account_id, session_id, last + gap, items, self.now, validity, terminate=terminate)
        if self._charge(request, late=late) is not None:
            self.last_numbers[session_id] = (account_id, last + gap)

    @rule(
        account_id=st.sampled_from(ACCOUNTS),
        items=charge_items(used=True, requested=False),
        number=few_units,
        late=lates,
    )
    def event(self, account_id: str, items: tuple[ChargeItem, ...], number: int, late: bool) -> None:
        self._charge(ChargeRequest(account_id, self._new_id("e"), number, items, self.now, 1, event=True), late=late)

    @rule(session_id=sessions, items=charge_items(used=True, requested=False))
    def event_on_a_session(self, session_id: str, items: tuple[ChargeItem, ...]) -> None:
        account_id, last = self.last_numbers[session_id]
        self._charge(ChargeRequest(account_id, session_id, last + 1, items, self.now, 1, event=True))
        self.last_numbers[session_id] = (account_id, last + 1)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data(), late=lates)
    def send_again(self, data: st.DataObject, late: bool) -> None:
        """An exact retransmission of an earlier request: a replay if it was the last, else stale
        (or, if the first was refused as late, the request applied now, unless late again)."""
        request = data.draw(st.sampled_from(self.sent))
        if self._charge(request, late=late) is not None and request.session_id in self.last_numbers:
            account_id, last = self.last_numbers[request.session_id]
            self.last_numbers[request.session_id] = (account_id, max(last, request.request_number))

    @rule(session_id=sessions, back=st.integers(1, 2))
    def stale_request(self, session_id: str, back: int) -> None:
        """A request number below the last one sent (stale, or a replay if the last was refused)."""
        account_id, last = self.last_numbers[session_id]
        self._charge(ChargeRequest(account_id, session_id, max(0, last - back), (), self.now, 60))

    @rule(account_id=st.sampled_from(ACCOUNTS), number=st.integers(1, 3), items=charge_items(used=True, requested=True))
    def unknown_session(self, account_id: str, number: int, items: tuple[ChargeItem, ...]) -> None:
        self._charge(ChargeRequest(account_id, self._new_id("u"), number, self._at_now(items), self.now, 60))

    # -- money in --------------------------------------------------------------------------------

    @rule(
        account_id=st.sampled_from(ACCOUNTS),
        top_up_id=st.sampled_from(("t1", "t2", "t3")),
        amount=st.integers(1, 1_000_000),
        kind=st.sampled_from((BucketKind.MAIN, BucketKind.BONUS)),
        valid_until=st.sampled_from((0, START_SECONDS + 900, START_SECONDS + 5_000)),
    )
    def top_up(self, account_id: str, top_up_id: str, amount: int, kind: BucketKind, valid_until: int) -> None:
        expected = self.model.top_up(account_id, top_up_id, amount, kind=kind, valid_until=valid_until)
        actual = self._store(
            lambda: self.store.top_up(account_id, top_up_id, amount, kind=kind, valid_until=valid_until)
        )
        self._same(f"top_up {account_id} {top_up_id} {amount} {kind} {valid_until}", expected, actual)

    @rule(
        account_id=st.sampled_from(ACCOUNTS),
        adjustment_id=st.sampled_from(("j1", "j2")),
        amount=st.integers(-500_000, 500_000).filter(lambda amount: amount != 0),
    )
    def adjust(self, account_id: str, adjustment_id: str, amount: int) -> None:
        expected = self.model.adjust(account_id, adjustment_id, amount)
        actual = self._store(lambda: self.store.adjust(account_id, adjustment_id, amount))
        self._same(f"adjust {account_id} {adjustment_id} {amount}", expected, actual)

    @rule(
        account_id=st.sampled_from(ACCOUNTS),
        kind=st.sampled_from(tuple(BucketKind)),
        amount=st.integers(0, 1_000_000),
        services=st.sampled_from(((), ("voice",), ("sms", "data"))),
        valid_until=st.sampled_from((0, START_SECONDS + 1_500)),
        priority=st.integers(-1, 1),
    )
    def add_bucket(
        self, account_id: str, kind: BucketKind, amount: int, services: tuple[str, ...], valid_until: int, priority: int
    ) -> None:
        bucket = Bucket(1, kind, amount, services, valid_until=valid_until, priority=priority)
        expected = self.model.add_bucket(account_id, bucket)
        self._same(
            f"add_bucket {account_id} {bucket}",
            expected,
            self._store(lambda: self.store.add_bucket(account_id, bucket)),
        )

    @rule(
        account_id=st.sampled_from(ACCOUNTS),
        amount=st.integers(1, 500_000),
        again=st.integers(0, 2),
        late=lates,
        day=st.sampled_from(("2026-11-23", "2026-11-24")),
        day_limit=st.sampled_from((0, 50_000)),
    )
    def refund(self, account_id: str, amount: int, again: int, late: bool, day: str, day_limit: int) -> None:
        """A new refund, or an earlier one sent again (replay) or with the next number; on one of
        two days, with or without a day limit (RULES.md "refund")."""
        if again and self.refunds:
            account_id, session_id, number, amount, now, day, day_limit = self.refunds[-1]
            arguments = (account_id, session_id, number + again - 1, amount, now, day, day_limit)
        else:
            arguments = (account_id, self._new_id("r"), 0, amount, self.now, day, day_limit)
        expected = _answer(lambda: self.model.refund(*arguments, late=late))
        store = self.late_store if late else self.store
        self._same(f"refund {arguments}", expected, _answer(lambda: self._store(lambda: store.refund(*arguments))))
        self.refunds.append(arguments)

    # -- the billing cycle (RULES.md "The billing cycle") ----------------------------------------

    @rule(
        account_id=st.sampled_from(ACCOUNTS),
        cut_id=st.sampled_from(("c1", "c2", "c3")),
        data=st.data(),
        over=st.integers(0, 5).map(lambda draw: draw == 0),
    )
    def cut(self, account_id: str, cut_id: str, data: st.DataObject, over: bool) -> None:
        """A usage cut of what the account's usage drew (as its records would tell), now and then
        one micro too many on one part (refused), or a cut id used before (a replay)."""
        view = self.model.balance(account_id, self.now)
        if view is None:
            return
        ancestors = self.model.ancestors(account_id)
        line = (
            data.draw(st.integers(0, view.unbilled_micros)) if view.account.payment_type is PaymentType.POSTPAID else 0
        )
        pools = []
        for level, drawn in enumerate(view.pool_drawn_micros[: len(ancestors)], start=1):
            amount = data.draw(st.integers(0, drawn))
            payer = self.model.balance(ancestors[level - 1], self.now)
            assert payer is not None
            from_line = data.draw(st.integers(0, min(amount, payer.unbilled_micros)))
            if amount:
                pools.append(PoolDraw(level, amount - from_line, from_line))
        if over:
            on_a_pool = data.draw(st.booleans())
            if pools and on_a_pool:
                pools[-1] = replace(pools[-1], bucket_micros=pools[-1].bucket_micros + 1)
            else:
                line += 1
        arguments = (account_id, cut_id, line, tuple(pools))
        expected = self.model.cut(*arguments)
        self._same(f"cut {arguments}", expected, self._store(lambda: cycle.cut(self.store, *arguments)))

    @rule(
        account_id=st.sampled_from(ACCOUNTS),
        rental_id=st.sampled_from(("n1", "n2", "n3")),
        micros=st.integers(1, 1_500_000),
        policy=st.sampled_from(tuple(RentalPolicy)),
    )
    def debit_rental(self, account_id: str, rental_id: str, micros: int, policy: RentalPolicy) -> None:
        expected = self.model.debit_rental(account_id, rental_id, micros, policy)
        actual = self._store(lambda: cycle.debit_rental(self.store, account_id, rental_id, micros, policy))
        self._same(f"debit_rental {account_id} {rental_id} {micros} {policy}", expected, actual)

    @rule(
        account_id=st.sampled_from(ACCOUNTS),
        bundle_id=st.sampled_from(("b1", "b2")),
        kind=st.sampled_from((BucketKind.SECONDS, BucketKind.SECONDS, BucketKind.OCTETS, BucketKind.EVENTS)),
        units=st.integers(0, 600),
        services=st.sampled_from(((), ("voice",), ("sms", "data"))),
        valid_until=st.sampled_from((0, START_SECONDS + 2_000)),
        cap=st.sampled_from((0, 60, 10**6)),
        renewal_id=st.sampled_from(("w1", "w2", "w3", "w4")),
    )
    def renew_bundle(
        self,
        account_id: str,
        bundle_id: str,
        kind: BucketKind,
        units: int,
        services: tuple[str, ...],
        valid_until: int,
        cap: int,
        renewal_id: str,
    ) -> None:
        arguments = (account_id, bundle_id, kind, units, services, valid_until, cap, renewal_id)
        expected = self.model.renew_bundle(*arguments)
        self._same(
            f"renew_bundle {arguments}", expected, self._store(lambda: cycle.renew_bundle(self.store, *arguments))
        )

    # -- account changes and time ----------------------------------------------------------------

    @rule(
        account_id=st.sampled_from(ACCOUNTS),
        status=st.sampled_from((AccountStatus.ACTIVE, AccountStatus.SUSPENDED, AccountStatus.BARRED)),
        limit=money_amounts,
        cap=deep_caps,
        change=st.sampled_from(("status", "limit", "cap")),
    )
    def change_account(self, account_id: str, status: AccountStatus, limit: int, cap: int, change: str) -> None:
        """A new status, credit limit (postpaid) or child cap (children); raised or lowered."""
        if change == "limit" and account_id in CREDIT_LINES:
            changes: dict[str, Any] = {"credit_limit_micros": limit}
        elif change == "cap" and account_id in CHILDREN:
            changes = {"child_cap_micros": cap}
        else:
            changes = {"status": status}
        expected = self.model.update(account_id, **changes)
        self._same(
            f"update {account_id} {changes}", expected, self._store(lambda: self.store.update(account_id, **changes))
        )

    @rule(account_id=st.sampled_from(ACCOUNTS))
    def release(self, account_id: str) -> None:
        """An account terminated: every session of it is closed at once (RULES.md "release")."""
        expected = self.model.release(account_id)
        self._same(f"release {account_id}", expected, self._store(lambda: self.store.release(account_id)))

    @rule(account_id=st.sampled_from(ACCOUNTS))
    def descendants(self, account_id: str) -> None:
        expected = self.model.descendants(account_id)
        self._same(f"descendants {account_id}", expected, self._store(lambda: self.store.descendants(account_id)))

    @rule(seconds=st.sampled_from((0, 1, 30, 299, 300, 600, 901)), root_id=st.sampled_from(ROOTS))
    def time_passes(self, seconds: int, root_id: str) -> None:
        """Time moves on and the session supervisor looks at one hierarchy."""
        self.now += seconds
        self._expire(root_id)

    def _expire(self, root_id: str) -> None:
        expected = self.model.expire(root_id, self.now)
        self._same(
            f"expire {root_id} at {self.now}", expected, self._store(lambda: self.store.expire(root_id, self.now))
        )

    @precondition(lambda self: self.steps >= 20 and not self.ended)
    @rule()
    def every_session_ends(self) -> None:
        """Long after the last request every session has expired, and nothing is held any more."""
        self.ended = True
        self.now += 100_000
        for root_id in ROOTS:
            self._expire(root_id)
        for account_id in ACCOUNTS:
            found = self.model.balance(account_id, self.now)
            assert found is None or (found.held_micros, found.limit_held_micros, found.reservations) == (0, 0, 0)

    # -- after every step ------------------------------------------------------------------------

    @invariant()
    def same_balances_and_usage_records(self) -> None:
        self.steps += 1
        for account_id in ACCOUNTS:
            expected = self.model.balance(account_id, self.now)
            actual = self._store(partial(self.store.balance, account_id, self.now))
            self._same(f"balance {account_id} at {self.now}", expected, actual)
        self._same("usage records", self._records_by_hierarchy(), self._store(self.store.usage_records))

    def _records_by_hierarchy(self) -> list[UsageRecord]:
        """The model's records in the store's order: by root account, then commit order."""
        return sorted(self.model.usage_records(), key=lambda record: self.model.root_of(record.account_id))


@pytest.mark.parametrize("caller", ["redis-py", "pipelined", "pipelined-eval"])
def test_the_redis_engine_behaves_like_the_reference_model(embedded_redis: EmbeddedRedis, caller: str) -> None:
    """Charges go through either client the store offers (the pipelined one is the server's hot
    path), and through the EVAL scripts as well as the function library."""
    pipelined, functions = caller != "redis-py", caller != "pipelined-eval"
    with asyncio.Runner() as runner:
        run_state_machine_as_test(
            lambda: ModelVersusStore(runner, embedded_redis.url, pipelined=pipelined, functions=functions),
            settings=settings(
                max_examples=50,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
