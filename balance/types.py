"""The money engine's vocabulary: accounts, buckets, tariffs, charge requests and their outcomes.

Theory of operation: these frozen dataclasses are what callers (ocs/, the tests, the reference
model) hand to the engine and get back. Money is always an integer number of micro-units
(1 unit = 1,000,000 micros); service units are integer seconds, octets or events. Business
outcomes are the ``Outcome`` enum, returned by value; only infrastructure failures raise
(``balance.errors.BalanceUnavailable``). The rules these values follow are written once, in
``balance/RULES.md``; both the Redis scripts and ``balance.model`` implement them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from balance.value_type import value_type

MICROS_PER_UNIT = 1_000_000
# Redis Lua numbers are IEEE doubles: integers are exact up to 2**53. Every amount the engine
# stores or computes stays below this bound; callers are refused anything larger.
MAX_EXACT_INTEGER = 2**53
# The most levels a customer hierarchy has, its root included (RULES.md "Company money"): company,
# branch, department, team, line. Every charge of a line loads and checks each of its ancestors
# and walks their pools and caps in Redis's one thread (bench/script_cost.py --level 5: a line at
# the fifth level paid from the root's pool, 514k instructions inside the call against 255k for an
# individual, --level 1; each level adds a hash read and write); deeper trees are refused at
# provisioning, and five covers company, branch, department, team, line. lib.lua's MAX_LEVELS is
# the same number (tests/balance/test_hierarchy.py).
MAX_HIERARCHY_LEVELS = 5
MAX_AMOUNT_MICROS = 10**15  # one billion units of currency: far beyond any prepaid balance
MAX_SERVICE_UNITS = 10**13  # ten terabytes, or 300,000 years of seconds, in one request


class PaymentType(StrEnum):
    PREPAID = "prepaid"
    POSTPAID = "postpaid"


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"  # e.g. for non-payment: no new reservations, open sessions may finish
    BARRED = "barred"
    TERMINATED = "terminated"


# How bad each status is (lib.lua STATUS_RANK): RULES.md "Effective status".
_STATUS_RANK = {
    AccountStatus.ACTIVE: 0,
    AccountStatus.SUSPENDED: 1,
    AccountStatus.BARRED: 2,
    AccountStatus.TERMINATED: 3,
}


def worst_status(statuses: Iterable[AccountStatus]) -> AccountStatus:
    """The worst of ``statuses`` (an account's own and its ancestors': its effective status)."""
    return max(statuses, key=_STATUS_RANK.__getitem__)


class BucketKind(StrEnum):
    MAIN = "main"  # monetary, micros
    BONUS = "bonus"  # monetary, micros; spent before main
    SECONDS = "seconds"  # unit allowances, scoped to services
    OCTETS = "octets"
    EVENTS = "events"


MONETARY_KINDS = frozenset({BucketKind.MAIN, BucketKind.BONUS})


class Unit(StrEnum):
    SECONDS = "seconds"
    OCTETS = "octets"
    EVENTS = "events"


class Outcome(StrEnum):
    """Business outcome of one operation or one charge item."""

    OK = "ok"
    PARTIAL = "partial"  # granted less than requested: the last units the balance affords
    INSUFFICIENT_FUNDS = "insufficient_funds"  # nothing could be granted (RFC 4006: 4012)
    UNKNOWN_ACCOUNT = "unknown_account"  # (5030)
    ACCOUNT_BLOCKED = "account_blocked"  # barred / terminated, or suspended for new usage (4010)
    UNKNOWN_SESSION = "unknown_session"  # update / termination of a session we never opened (5002)
    STALE_REQUEST = "stale_request"  # a request number below the last one applied: changes nothing
    ALREADY_EXISTS = "already_exists"  # provisioning an account id that exists
    INVALID = "invalid"  # a request the rules refuse (e.g. a child whose parent is missing)
    REFUND_LIMIT = "refund_limit"  # a refund that would pass the account's daily refund limit


class RentalPolicy(StrEnum):
    """What a prepaid rental does when the main money does not cover it (RULES.md "debit_rental")."""

    RESTRICT = "restrict"  # debit nothing: insufficient_funds, the caller restricts the line
    ALLOW_NEGATIVE = "allow_negative"  # debit it all: the main bucket may go below 0 by at most the rental


@dataclass(frozen=True, slots=True)
class Bucket:
    """A balance bucket. ``amount`` is micros for MAIN/BONUS, else units of the kind.

    ``services`` scopes unit allowances (empty: every service of that unit); ignored for money.
    Times are epoch seconds; ``valid_until`` 0 means no end.
    """

    bucket_id: int
    kind: BucketKind
    amount: int
    services: tuple[str, ...] = ()
    valid_from: int = 0
    valid_until: int = 0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    currency: str = "EUR"
    payment_type: PaymentType = PaymentType.PREPAID
    status: AccountStatus = AccountStatus.ACTIVE
    credit_limit_micros: int = 0  # postpaid only
    parent_id: str = ""  # company hierarchy: a child draws on its parent's pool
    child_cap_micros: int = 0  # the most a child may draw from its parent's pool (0: none)
    buckets: tuple[Bucket, ...] = ()


@dataclass(frozen=True, slots=True)
class Tariff:
    """How units become money: rated by ``ocs/`` (zone, time band) before the engine sees it.

    Charged units of a usage U > 0: at least ``first_units``, then rounded up to a multiple of
    ``block_units`` (60/60: first 60, block 60; 60/1: first 60, block 1; data per MB: 1e6/1e6).
    Cost: ``price_micros`` per ``per_units`` charged units, rounded up to a whole micro.
    """

    price_micros: int
    per_units: int = 1
    block_units: int = 1
    first_units: int = 1


@value_type
class TariffChange:
    """The tariff switches inside a grant (RFC 4006 section 5.1.1, Tariff-Time-Change): units used
    from ``at_seconds`` (epoch) on cost ``after_price_micros`` per ``per_units``; per, block and
    first units stay the item's (a time band changes the price only). RULES.md "Tariff change"."""

    at_seconds: int
    after_price_micros: int


@value_type
class UsageSplit:
    """Used units as the client itemised them about a tariff change (RFC 4006 section 8.27,
    Tariff-Change-Usage): before it, after it, and straddling it (UNIT_INDETERMINATE)."""

    before_units: int = 0
    after_units: int = 0
    indeterminate_units: int = 0


@value_type
class ChargeItem:
    """One service of a credit-control request (one MSCC), keyed by rating group and service
    identifier (RULES.md "Services": the pair names the quota; ``None``: no Service-Identifier).

    ``used_units`` are committed against the reservation of this service (what the reservation
    does not cover is charged directly, if the balance affords it); then the rest of that
    reservation is returned, and ``requested_units`` (if any) are reserved anew.
    ``release`` ends the service: nothing is reserved and nothing stays held.
    ``tariff_change``: the new reservation spans a switch of tariff (``tariff`` is the one before
    it); ``used_split``: how the client itemised ``used_units`` about the switch of the
    reservation they are committed against (None: not itemised). RULES.md "Tariff change".
    ``commit_reserved``: the client's report of used units was refused (units the tariff does not
    price): the service's reservation is committed in full, as if every unit it granted was used,
    and nothing is reserved anew; such an item carries no used or requested units. RULES.md
    "Refused usage".
    """

    rating_group: int
    service: str
    unit: Unit
    tariff: Tariff
    used_units: int = 0
    requested_units: int = 0
    release: bool = False
    service_identifier: int | None = None
    tariff_change: TariffChange | None = None
    used_split: UsageSplit | None = None
    commit_reserved: bool = False


@value_type
class ChargeRequest:
    """All balance work of one credit-control request; idempotent by (session_id, request_number).

    ``terminate`` closes the session after the items: every reservation still held is returned.
    ``event`` marks a one-shot request (RFC 4006 EVENT_REQUEST): no session stays open.
    """

    account_id: str
    session_id: str
    request_number: int
    items: tuple[ChargeItem, ...]
    now_seconds: int
    validity_seconds: int = 900  # how long a reservation is held without news (RFC 4006 Tcc)
    terminate: bool = False
    event: bool = False


@value_type
class ItemResult:
    """What one item did: units granted anew, units and money committed, money newly held.

    ``reserved_micros`` is what the reservation this item made holds from money sources (own
    buckets, credit line, parent pool): 0 when it made none or its units all come from allowances.
    It is not the session's total hold (RULES.md "reserved_micros").
    """

    rating_group: int
    outcome: Outcome
    granted_units: int = 0
    committed_units: int = 0
    committed_micros: int = 0
    final: bool = False  # the grant is the last the balance affords (Final-Unit-Indication)
    reserved_micros: int = 0


@value_type
class ChargeResult:
    outcome: Outcome  # command level: OK unless the whole request was refused
    items: tuple[ItemResult, ...] = ()
    replayed: bool = False  # this key was applied before; the stored result is returned
    balance_micros: int = 0  # available money after the request (for Remaining-Balance)
    # The request opened its session (a replay: the request replayed did), which stays open: not
    # an event, a termination, or a first request left unopened (RULES.md "Unopened").
    opened: bool = False


@value_type
class PoolDraw:
    """Money one usage (or a cut of usage) drew from the pool of the ancestor ``level`` levels up
    (1: the parent): from its money buckets and from its credit line (RULES.md "The usage cut")."""

    level: int
    bucket_micros: int = 0
    line_micros: int = 0


@value_type
class UsageRecord:
    """A CDR, written to the outbox in the same atomic call as its debit."""

    record_id: str  # "<session>|<request number>|<service key>" (balance/keys.py): unique, so spooling is idempotent
    account_id: str
    session_id: str
    request_number: int
    rating_group: int
    service: str
    unit: Unit
    units: int
    micros: int
    payment_type: PaymentType
    at_seconds: int
    service_identifier: int | None = None  # the MSCC's Service-Identifier, if it named one
    # Where the money came from (RULES.md "The usage cut"): committed against the account's own
    # credit line, and from its ancestors' pools (by level, ascending, only those drawn on); the
    # rest of ``micros`` came out of its own money buckets.
    line_micros: int = 0
    pools: tuple[PoolDraw, ...] = ()


@dataclass(frozen=True, slots=True)
class OperationResult:
    outcome: Outcome
    replayed: bool = False  # the idempotency key was seen before; nothing changed
    bucket_id: int = 0  # the bucket written (top-up, adjustment, add_bucket)
    applied_micros: int | None = None  # top-up, adjustment, rental, cut: the amount its id was applied with
    applied_units: int | None = None  # renew_bundle: the units the renewed bucket was given
    reason: str = field(default="", compare=False)  # invalid: what is wrong, naming the field (provision)


@dataclass(frozen=True, slots=True)
class BalanceView:
    """An account as it stands: buckets with current amounts and the counters of RULES.md."""

    account: Account
    credits_micros: int
    debits_micros: int
    committed_micros: int
    held_micros: int  # out of its own monetary buckets, by live reservations
    limit_held_micros: int  # postpaid: held against its credit limit
    unbilled_micros: int  # postpaid: committed against its credit limit
    pool_used_micros: int  # a child: drawn from the parent's pool (committed or held)
    available_micros: int  # what a new reservation may draw now (RULES.md "balance_micros")
    reservations: int  # live reservations (session, rating group) of this account
    billed_micros: int = 0  # postpaid: taken off ``unbilled`` by usage cuts (invoiced)
    # Per ancestor level (1 = the parent, up to MAX_HIERARCHY_LEVELS - 1): money this account's own
    # usage committed from that ancestor's pool and no cut has taken off yet (RULES.md "The usage cut").
    pool_drawn_micros: tuple[int, ...] = (0, 0, 0, 0)
    main_floor_micros: int = 0  # how far below 0 its main bucket may be (an allow_negative rental)


@dataclass(frozen=True, slots=True)
class AuditFinding:
    account_id: str
    rule: str
    detail: str


@dataclass(slots=True)
class AuditReport:
    """``findings`` break a rule; ``warnings`` are a usage above a lowered credit limit or cap that
    has not grown since (RULES.md invariants 3 and 4: allowed). ``usage_seen``: each account's
    (``unbilled + limit_held``, ``pool_used``), for the next audit's ``previous``."""

    accounts: int = 0
    findings: list[AuditFinding] = field(default_factory=list)
    warnings: list[AuditFinding] = field(default_factory=list)
    usage_seen: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.findings
