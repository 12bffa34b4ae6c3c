"""The reference model's accounts, buckets and holds: RULES.md "Drawing order", in plain Python.

Theory of operation: a ``Ledger`` holds every account's buckets and counters (RULES.md "Accounts
and buckets"). ``draw`` plans a reservation without changing anything: allowances first, then the
money sources in drawing order (own bonus, own main, own credit line, then each ancestor's pool,
parent first, within the caps of every node below it: RULES.md "Company money"), and the grant the
money affords. ``take`` applies a plan (each hold leaves its bucket
or is added to ``limit_held``), ``commit_money`` / ``commit_units`` turn part of a hold into a
debit, and ``release`` returns what a hold still has. Every counter change of the rules happens in
exactly one of these functions, so each rule can be read in one place.

A hold is owned by the account whose bucket or credit line it uses; the account that drew it (the
"drawer") is the reservation's account, which differs from the owner for a child drawing on its
ancestor's pool. Besides the counters of the rules the model keeps ``pool_committed`` per node (the
committed part of ``pool_used``), so the invariant checks can account for every micro of
``pool_used``: a hold on the pool ``pool_level`` levels above its drawer counts in the
``pool_used`` of the drawer and of every ancestor below that pool (``pool_path``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from balance.tariff import affordable, cost
from balance.types import Account, Bucket, BucketKind, PaymentType, Tariff, Unit

CREDIT_LINE = 0  # the bucket id a hold names when it uses the owner's credit line (ids start at 1)


@dataclass(slots=True)
class Hold:
    """Money (micros) or allowance units held by a reservation, from one source."""

    owner_id: str  # the account whose bucket or credit line this is
    bucket_id: int  # CREDIT_LINE for the owner's credit line
    amount: int  # micros, or units for an allowance hold
    money: bool = True
    pool_level: int = 0  # 0 the drawer's own; else the pool of its ancestor that many levels up


@dataclass(slots=True)
class Draw:
    """A planned grant: the units granted and the holds that pay for them, in drawing order."""

    granted_units: int
    allowance_holds: list[Hold]
    money_holds: list[Hold]
    final: bool  # the money sources did not cover the request: the last the balance affords


@dataclass(slots=True)
class AccountState:
    account: Account  # current settings; ``buckets`` below holds the current bucket amounts
    buckets: dict[int, Bucket] = field(default_factory=dict)
    credits: int = 0
    debits: int = 0
    committed: int = 0
    held: int = 0
    limit_held: int = 0
    unbilled: int = 0
    pool_used: int = 0
    pool_committed: int = 0  # model only: the committed part of pool_used
    billed: int = 0  # RULES.md "cut": taken off unbilled by usage cuts
    pool_drawn: dict[int, int] = field(default_factory=dict)  # ancestor level -> committed from its pool, not cut
    main_floor: int = 0  # RULES.md "debit_rental": how far below 0 the main bucket may go
    bundles: dict[str, int] = field(default_factory=dict)  # bundle id -> its allowance bucket id


def usable(bucket: Bucket, now_seconds: int) -> bool:
    """RULES.md: usable when valid_from <= now < valid_until (0: no end) and its amount is > 0."""
    return (
        bucket.valid_from <= now_seconds
        and (bucket.valid_until == 0 or now_seconds < bucket.valid_until)
        and bucket.amount > 0
    )


def drawing_key(bucket: Bucket) -> tuple[bool, int, int, int]:
    """Earliest expiry first (0 = never, last), then priority, then bucket id."""
    return (bucket.valid_until == 0, bucket.valid_until, bucket.priority, bucket.bucket_id)


def credit_line(state: AccountState) -> int:
    """What a postpaid account's credit line still allows (never below 0); 0 for prepaid."""
    if state.account.payment_type is not PaymentType.POSTPAID:
        return 0
    return max(0, state.account.credit_limit_micros - state.unbilled - state.limit_held)


class Ledger:
    __slots__ = ("accounts", "drawn")

    def __init__(self) -> None:
        self.accounts: dict[str, AccountState] = {}
        # RULES.md "Where money came from": what the commits since the caller last emptied it drew
        # from other than the drawer's own buckets, by (pool level, from a credit line).
        self.drawn: dict[tuple[int, bool], int] = {}

    # -- reading ---------------------------------------------------------------------------------

    def usable_buckets(self, account_id: str, kind: BucketKind, now_seconds: int, service: str = "") -> list[Bucket]:
        """The account's usable buckets of ``kind`` in drawing order; allowances filtered by scope."""
        buckets = [
            bucket
            for bucket in self.accounts[account_id].buckets.values()
            if bucket.kind is kind
            and usable(bucket, now_seconds)
            and (not service or not bucket.services or service in bucket.services)
        ]
        return sorted(buckets, key=drawing_key)

    def ancestors(self, account_id: str) -> list[str]:
        """The account's ancestors, parent first, root last."""
        chain: list[str] = []
        parent_id = self.accounts[account_id].account.parent_id
        while parent_id:
            chain.append(parent_id)
            parent_id = self.accounts[parent_id].account.parent_id
        return chain

    def pool_path(self, drawer_id: str, hold: Hold) -> list[str]:
        """The nodes whose ``pool_used`` a hold counts in: the drawer and its ancestors below the pool."""
        return [drawer_id, *self.ancestors(drawer_id)][: hold.pool_level]

    def _own_money(self, account_id: str, now_seconds: int, pool_level: int) -> list[Hold]:
        """Bonus buckets, main buckets, then the credit line of one account, each at its full amount."""
        sources = [
            Hold(account_id, bucket.bucket_id, bucket.amount, pool_level=pool_level)
            for kind in (BucketKind.BONUS, BucketKind.MAIN)
            for bucket in self.usable_buckets(account_id, kind, now_seconds)
        ]
        line = credit_line(self.accounts[account_id])
        if line > 0:
            sources.append(Hold(account_id, CREDIT_LINE, line, pool_level=pool_level))
        return sources

    def money_sources(self, account_id: str, now_seconds: int) -> list[Hold]:
        """Every money source of the account in drawing order, each with what it can give now."""
        sources = self._own_money(account_id, now_seconds, pool_level=0)
        path = [account_id, *self.ancestors(account_id)]
        for level in range(1, len(path)):
            # RULES.md "Company money": a micro drawn from this pool counts against the cap of every
            # node below it, node ``below`` levels up from the account having given already what
            # the pools above it (levels > below) were drawn on in this plan.
            room = min(
                self.accounts[path[below]].account.child_cap_micros
                - self.accounts[path[below]].pool_used
                - sum(source.amount for source in sources if source.pool_level > below)
                for below in range(level)
            )
            for source in self._own_money(path[level], now_seconds, pool_level=level):
                source.amount = min(source.amount, max(0, room))
                room -= source.amount
                if source.amount > 0:
                    sources.append(source)
        return sources

    def available(self, account_id: str, now_seconds: int) -> int:
        """RULES.md ``balance_micros``: own usable money, own credit line, the parent pool within the cap."""
        return sum(source.amount for source in self.money_sources(account_id, now_seconds))

    # -- planning --------------------------------------------------------------------------------

    def draw(self, account_id: str, service: str, unit: Unit, tariff: Tariff, units: int, now_seconds: int) -> Draw:
        """RULES.md "Drawing order" steps 1-3 for ``units`` (already rounded by the caller if needed)."""
        allowance_holds: list[Hold] = []
        covered = 0
        for bucket in self.usable_buckets(account_id, BucketKind(unit.value), now_seconds, service):
            if covered == units:
                break
            take = min(bucket.amount, units - covered)
            allowance_holds.append(Hold(account_id, bucket.bucket_id, take, money=False))
            covered += take
        sources = self.money_sources(account_id, now_seconds)
        money_total = sum(source.amount for source in sources)
        needed_micros = cost(units - covered, tariff)
        granted_units, final = units, False
        if needed_micros > money_total:
            money_units = affordable(money_total, tariff)
            granted_units, final = covered + money_units, True
            needed_micros = cost(money_units, tariff)
        money_holds: list[Hold] = []
        for source in sources:
            if needed_micros == 0:
                break
            source.amount = min(source.amount, needed_micros)
            money_holds.append(source)
            needed_micros -= source.amount
        return Draw(granted_units, allowance_holds, money_holds, final)

    # -- changing --------------------------------------------------------------------------------

    def _add_to_bucket(self, owner_id: str, bucket_id: int, delta: int) -> None:
        buckets = self.accounts[owner_id].buckets
        buckets[bucket_id] = replace(buckets[bucket_id], amount=buckets[bucket_id].amount + delta)

    def take(self, drawer_id: str, draw: Draw) -> None:
        """RULES.md "Drawing order" step 4: move every hold of the plan out of its source."""
        for hold in draw.allowance_holds:
            self._add_to_bucket(hold.owner_id, hold.bucket_id, -hold.amount)
        for hold in draw.money_holds:
            owner = self.accounts[hold.owner_id]
            if hold.bucket_id == CREDIT_LINE:
                owner.limit_held += hold.amount
            else:
                self._add_to_bucket(hold.owner_id, hold.bucket_id, -hold.amount)
                owner.held += hold.amount
            for node in self.pool_path(drawer_id, hold):
                self.accounts[node].pool_used += hold.amount

    @staticmethod
    def commit_units(hold: Hold, units: int) -> None:
        """Allowance units used: they left the bucket when held; no money counter moves."""
        hold.amount -= units

    def commit_money(self, drawer_id: str, hold: Hold, micros: int) -> None:
        """RULES.md "A charge request" item step 1: money committed out of one hold."""
        hold.amount -= micros
        owner = self.accounts[hold.owner_id]
        if hold.bucket_id == CREDIT_LINE:
            owner.limit_held -= micros
            owner.unbilled += micros
        else:
            owner.held -= micros
            owner.debits += micros
        for node in self.pool_path(drawer_id, hold):
            self.accounts[node].pool_committed += micros  # pool_used keeps it
        drawer = self.accounts[drawer_id]
        drawer.committed += micros
        source = (hold.pool_level, hold.bucket_id == CREDIT_LINE)
        if source != (0, False) and micros > 0:
            self.drawn[source] = self.drawn.get(source, 0) + micros
        if hold.pool_level:
            drawer.pool_drawn[hold.pool_level] = drawer.pool_drawn.get(hold.pool_level, 0) + micros

    def release(self, drawer_id: str, hold: Hold) -> None:
        """Return what a hold still has to its bucket, credit line and pool."""
        if not hold.money:
            self._add_to_bucket(hold.owner_id, hold.bucket_id, hold.amount)
        elif hold.bucket_id == CREDIT_LINE:
            self.accounts[hold.owner_id].limit_held -= hold.amount
        else:
            self._add_to_bucket(hold.owner_id, hold.bucket_id, hold.amount)
            self.accounts[hold.owner_id].held -= hold.amount
        for node in self.pool_path(drawer_id, hold):
            self.accounts[node].pool_used -= hold.amount
        hold.amount = 0

    def next_bucket_id(self, account_id: str) -> int:
        return max(self.accounts[account_id].buckets, default=0) + 1

    def first_bucket(self, account_id: str, kind: BucketKind) -> Bucket | None:
        """The account's bucket of ``kind`` with the lowest id, usable or not."""
        buckets = self.accounts[account_id].buckets
        return next((buckets[bucket_id] for bucket_id in sorted(buckets) if buckets[bucket_id].kind is kind), None)

    def credit(self, account_id: str, kind: BucketKind, micros: int, valid_until: int = 0) -> int:
        """Add signed ``micros`` to the first bucket of ``kind`` (created if none) and to ``credits``.

        Returns the bucket id written.
        """
        # RULES.md ambiguity: "adds to the account's first bucket of that kind (lowest id)" is read
        # literally: validity is not considered, so money may land in an expired or not yet valid
        # bucket, and ``valid_until`` only applies to a bucket created here.
        first = self.first_bucket(account_id, kind)
        if first is None:
            first = Bucket(self.next_bucket_id(account_id), kind, 0, valid_until=valid_until)
            self.accounts[account_id].buckets[first.bucket_id] = first
        self._add_to_bucket(account_id, first.bucket_id, micros)
        self.accounts[account_id].credits += micros
        return first.bucket_id
