"""Provisioning: operator requests checked, then applied to the balance store and the directory.

Theory of operation: the HTTP API (``ocs.api.server``) hands this module plain values (a JSON object,
a CSV file) and gets typed results back, or an ``ApiError`` that names the HTTP status it
stands for: 400 for input that is malformed, 404 for an unknown account, 409 for a conflict
(the account exists, an identity belongs to someone else), 422 for a request the money rules
refuse (RULES.md), 503 when Redis does not answer. Every field is checked before anything is
written, so bad input never reaches the engine.

Input rules, the same for JSON and CSV:

- Money is a decimal string in units of the currency (``"12.50"``), converted exactly to
  micros with at most 6 decimals; a whole JSON integer is whole units. A JSON number with a
  fraction is refused (``0.1`` as a binary float is already inexact).
- Service units are integers (a JSON integer or a string of digits).
- Times are epoch seconds or ISO 8601 (``2026-03-01T00:00:00Z``; without an offset: UTC).
- Identities are ``{"kind": "msisdn" | "imsi" | "sip" | "nai" | "private", "value": ...}``;
  an MSISDN is E.164 digits (a leading ``+`` is dropped), an IMSI 5 to 15 digits
  (3GPP TS 23.003 section 2.2), a SIP URI starts with ``sip:`` or ``sips:``.
- Unknown fields are refused, so a typo is not silently ignored.

Creating a subscriber checks that its identities are free and its account id is new, then
provisions the account and registers the profile. These are separate Redis calls: two operators
racing for the same identity can leave the loser's account without a profile (reported as 409;
nothing is charged to it, since no identity leads there).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import itertools
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, ClassVar

import structlog

from balance.directory import Directory, Identity, IdentityKind, Subscriber
from balance.errors import BalanceUnavailable
from balance.keys import is_valid_account_id
from balance.store import BalanceStore
from balance.types import (
    MAX_AMOUNT_MICROS,
    MAX_SERVICE_UNITS,
    MICROS_PER_UNIT,
    MONETARY_KINDS,
    Account,
    AccountStatus,
    BalanceView,
    Bucket,
    BucketKind,
    OperationResult,
    Outcome,
    PaymentType,
)
from balance.validation import invalid_account, invalid_bucket
from ocs.events import AccountEvents, BalanceChanged, StatusChanged
from ocs.metrics import Metrics
from ocs.rating.book import TariffBook
from ocs.rating.rate import format_money

if TYPE_CHECKING:
    from _csv import Reader  # what csv.reader returns

log = structlog.get_logger("ocs.api.provisioning")

CUSTOMER_TYPES = ("mobile", "fixed")
SECONDS_PER_DAY = 86_400
# How long a termination waits for the network's final usage (the CCR-T answering its ASR) before
# it releases what is still held: RFC 4006 section 13 recommends Tx = 10 s, how long a client
# waits for our answer; a client quick enough to be served reports within it.
TERMINATION_GRACE_SECONDS = 10.0
_TERMINATION_POLL_SECONDS = 0.1  # how often a waiting termination looks for the sessions' end
_MONEY = re.compile(r"^(-?)([0-9]{1,16})(?:\.([0-9]+))?$")
_DIGITS = re.compile(r"^[0-9]+$")
_MONEY_DECIMALS = 6  # micros
_MAX_TIME_SECONDS = 2**40  # balance.validation's bound on bucket validity
_MAX_TEXT = 256  # names and idempotency ids: they are stored in Redis hashes, keep them short
_IDENTITY_KINDS = {
    "msisdn": IdentityKind.E164,
    "e164": IdentityKind.E164,
    "imsi": IdentityKind.IMSI,
    "sip": IdentityKind.SIP_URI,
    "nai": IdentityKind.NAI,
    "private": IdentityKind.PRIVATE,
}


class ApiError(Exception):
    """A refused request; ``status`` is the HTTP status, ``code`` a stable word for programs."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ApiError):
    status = 400
    code = "bad_request"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Refused(ApiError):
    status = 422
    code = "refused"


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


# -- scalar values --------------------------------------------------------------------------


def money_micros(text: str) -> int:
    """``"12.50"`` -> 12_500_000, exactly; ValueError for anything else (the CLI's argument type)."""
    match = _MONEY.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a decimal amount such as 12.50")
    sign, whole, fraction = match.groups()
    fraction = fraction or ""
    if len(fraction) > _MONEY_DECIMALS:
        raise ValueError(f"{text!r} has more than {_MONEY_DECIMALS} decimals (the smallest amount is 0.000001)")
    micros = int(whole) * MICROS_PER_UNIT + int(fraction.ljust(_MONEY_DECIMALS, "0"))
    if micros > MAX_AMOUNT_MICROS:
        raise ValueError(f"{text!r} is out of range (at most {MAX_AMOUNT_MICROS // MICROS_PER_UNIT})")
    return -micros if sign else micros


def parse_instant(value: object, name: str) -> datetime:
    """Epoch seconds or ISO 8601 as an aware datetime (naive ISO text is UTC)."""
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and _DIGITS.match(value.strip()):
        seconds = int(value.strip())
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise BadInput(f"{name}: {value!r} is not an ISO 8601 time or epoch seconds") from None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    else:
        raise BadInput(f"{name}: give a time as ISO 8601 text or epoch seconds")
    if not 0 <= seconds < _MAX_TIME_SECONDS:
        raise BadInput(f"{name}: {seconds} is out of range")
    return datetime.fromtimestamp(seconds, UTC)


class Fields:
    """One JSON object (or CSV row) read field by field; ``done()`` refuses fields nobody read."""

    def __init__(self, values: object, where: str = "body") -> None:
        if not isinstance(values, Mapping):
            raise BadInput(f"{where}: expected a JSON object")
        self.values: Mapping[str, object] = values
        self.where = where
        self.read: set[str] = set()

    def _get(self, name: str) -> object:
        self.read.add(name)
        value = self.values.get(name)
        return None if value == "" else value  # an empty CSV cell is an absent field

    def _name(self, name: str) -> str:
        return name if self.where == "body" else f"{self.where}.{name}"

    def has(self, name: str) -> bool:
        return self._get(name) is not None

    def text(self, name: str, default: str | None = None) -> str:
        value = self._get(name)
        if value is None:
            if default is None:
                raise BadInput(f"{self._name(name)} is required")
            return default
        if not isinstance(value, str):
            raise BadInput(f"{self._name(name)}: expected text")
        if len(value) > _MAX_TEXT:
            raise BadInput(f"{self._name(name)}: longer than {_MAX_TEXT} characters")
        return value

    def choice(self, name: str, choices: Sequence[str], default: str | None = None) -> str:
        value = self.text(name, default).strip().lower()
        if value not in choices:
            raise BadInput(f"{self._name(name)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def money(self, name: str, default: int | None = None) -> int:
        """Micros from a decimal string or a whole JSON integer (units of currency)."""
        value = self._get(name)
        if value is None:
            if default is None:
                raise BadInput(f"{self._name(name)} is required")
            return default
        if isinstance(value, (float, Decimal)):
            raise BadInput(f'{self._name(name)}: give money as a decimal string ("12.50"), not a JSON fraction')
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise BadInput(f'{self._name(name)}: give money as a decimal string ("12.50")')
        try:
            return money_micros(value)
        except ValueError as error:
            raise BadInput(f"{self._name(name)}: {error}") from None

    def integer(self, name: str, default: int | None = None, *, minimum: int = 0, maximum: int = 2**63) -> int:
        value = self._get(name)
        if value is None:
            if default is None:
                raise BadInput(f"{self._name(name)} is required")
            return default
        if isinstance(value, str) and re.match(r"^-?[0-9]{1,19}$", value.strip()):
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise BadInput(f"{self._name(name)}: expected a whole number")
        if not minimum <= value <= maximum:
            raise BadInput(f"{self._name(name)}: {value} is not between {minimum} and {maximum}")
        return value

    def optional_integer(self, name: str, *, minimum: int = 0, maximum: int = 2**63) -> int | None:
        return self.integer(name, minimum=minimum, maximum=maximum) if self.has(name) else None

    def epoch(self, name: str, default: int = 0) -> int:
        value = self._get(name)
        if value is None:
            return default
        seconds = int(parse_instant(value, self._name(name)).timestamp())
        if not 0 <= seconds < _MAX_TIME_SECONDS:
            raise BadInput(f"{self._name(name)}: {value!r} is out of range")
        return seconds

    def instant(self, name: str, default: datetime) -> datetime:
        value = self._get(name)
        return default if value is None else parse_instant(value, self._name(name))

    def items(self, name: str) -> list[object]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise BadInput(f"{self._name(name)}: expected a list")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.values) - self.read)
        if unknown:
            raise BadInput(f"{self.where}: unknown field(s) {', '.join(unknown)}")


# -- composite values -------------------------------------------------------------------------


def account_id_of(text: str) -> str:
    if not is_valid_account_id(text):
        raise BadInput(f"account id {text!r}: 1 to 64 letters, digits, '.', '_', ':' or '-', starting alphanumeric")
    return text


def parse_identity(kind_text: str, value: str, where: str) -> Identity:
    kind = _IDENTITY_KINDS.get(kind_text.strip().lower())
    if kind is None:
        raise BadInput(f"{where}: identity kind {kind_text!r} is not one of {', '.join(_IDENTITY_KINDS)}")
    value = value.strip()
    if kind is IdentityKind.E164:
        value = value.removeprefix("+")
        if not re.match(r"^[0-9]{1,15}$", value):  # ITU-T E.164: at most 15 digits
            raise BadInput(f"{where}: MSISDN {value!r} must be 1 to 15 digits (E.164)")
    elif kind is IdentityKind.IMSI:
        if not re.match(r"^[0-9]{5,15}$", value):
            raise BadInput(f"{where}: IMSI {value!r} must be 5 to 15 digits (3GPP TS 23.003)")
    elif kind is IdentityKind.SIP_URI and not value.lower().startswith(("sip:", "sips:")):
        raise BadInput(f"{where}: SIP URI {value!r} must start with sip: or sips:")
    if not value or len(value) > _MAX_TEXT or any(character.isspace() for character in value):
        raise BadInput(f"{where}: identity {value!r} must be non-empty text without spaces")
    return Identity(kind, value)


def parse_bucket(values: object, where: str, bucket_id: int = 1) -> Bucket:
    """A bucket: money kinds take a decimal ``amount``; allowances whole units and ``services``."""
    fields = Fields(values, where)
    kind = BucketKind(fields.choice("kind", [kind.value for kind in BucketKind]))
    if kind in MONETARY_KINDS:
        amount = fields.money("amount")
        if fields.has("services"):
            raise BadInput(f"{where}.services: only unit allowances are scoped to services")
    else:
        amount = fields.integer("amount", maximum=MAX_SERVICE_UNITS)
    services = fields.items("services")
    if not all(isinstance(service, str) for service in services):
        raise BadInput(f"{where}.services: expected a list of service names")
    bucket = Bucket(
        bucket_id=bucket_id,
        kind=kind,
        amount=amount,
        services=tuple(str(service) for service in services),
        valid_from=fields.epoch("valid_from"),
        valid_until=fields.epoch("valid_until"),
        priority=fields.integer("priority", 0, minimum=-(2**31), maximum=2**31 - 1),
    )
    fields.done()
    problem = invalid_bucket(bucket)
    if problem:
        raise BadInput(f"{where}: {problem}")
    if bucket.valid_until and bucket.valid_until <= bucket.valid_from:
        raise BadInput(f"{where}: valid_until must be after valid_from")
    return bucket


@dataclass(frozen=True, slots=True)
class NewSubscriber:
    account: Account
    profile: Subscriber


def parse_new_subscriber(values: object, *, default_plan: str, where: str = "body") -> NewSubscriber:
    fields = Fields(values, where)
    account_id = account_id_of(fields.text("account_id"))
    payment_type = PaymentType(fields.choice("payment_type", [kind.value for kind in PaymentType], "prepaid"))
    buckets = tuple(
        parse_bucket(bucket, f"{where}.buckets[{index}]", bucket_id=index + 1)
        for index, bucket in enumerate(fields.items("buckets"))
    )
    identities: list[Identity] = []
    for index, item in enumerate(fields.items("identities")):
        identity_fields = Fields(item, f"{where}.identities[{index}]")
        kind, value = identity_fields.text("kind"), identity_fields.text("value")
        identity_fields.done()
        identities.append(parse_identity(kind, value, f"{where}.identities[{index}]"))
    if len(set(identities)) != len(identities):
        raise BadInput(f"{where}.identities: listed twice")
    parent_id = fields.text("parent_id", "")
    account = Account(
        account_id=account_id,
        currency=fields.text("currency", "").upper(),  # "" until the plan's currency is known
        payment_type=payment_type,
        status=AccountStatus(fields.choice("status", [status.value for status in AccountStatus], "active")),
        credit_limit_micros=fields.money("credit_limit", 0),
        parent_id=account_id_of(parent_id) if parent_id else "",
        child_cap_micros=fields.money("child_cap", 0),
        buckets=buckets,
    )
    profile = Subscriber(
        account_id=account_id,
        plan=fields.text("plan", default_plan),
        customer_type=fields.choice("customer_type", CUSTOMER_TYPES, "mobile"),
        name=fields.text("name", ""),
        identities=tuple(identities),
    )
    fields.done()
    if account.child_cap_micros and not account.parent_id:
        raise BadInput(f"{where}.child_cap: only a child account (with parent_id) has a cap")
    return NewSubscriber(account, profile)


def account_problem(account: Account) -> str | None:
    """The engine's own input checks (``balance.validation``), as text for a 400."""
    return invalid_account(account)


# -- CSV ------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "account_id",
    "payment_type",
    "customer_type",
    "plan",
    "name",
    "currency",
    "credit_limit",
    "parent_id",
    "child_cap",
    "balance",
    "bonus",
    "msisdn",
    "imsi",
    "sip",
    "status",
)
_CSV_IDENTITY_COLUMNS = ("msisdn", "imsi", "sip")  # several in one cell: separated by spaces


@dataclass(frozen=True, slots=True)
class CsvRow:
    line: int  # where the record starts in the file, counting the header as line 1
    account_id: str  # as written, for the report (may be invalid)
    values: dict[str, object]  # shaped like the JSON body of a create
    error: str | None = None  # the record could not even be split into the header's columns


def read_csv(text: str) -> Iterator[CsvRow]:
    """The rows of a subscriber file, each shaped like a JSON create body, as they are read: the
    header is checked at once (BadInput for the file), the rows one by one as they are taken."""
    reader = csv.reader(io.StringIO(text), strict=True)  # a stray quote is an error, not data
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise BadInput(f"line 1: {error}") from None
    if not header or not any(header):
        raise BadInput("the file is empty: a header line naming the columns comes first")
    columns = [name.strip().lower() for name in header]
    unknown = sorted(set(columns) - set(CSV_COLUMNS))
    if unknown:
        raise BadInput(f"line 1: unknown column(s) {', '.join(unknown)}; known: {', '.join(CSV_COLUMNS)}")
    if "account_id" not in columns or len(set(columns)) != len(columns):
        raise BadInput("line 1: the header needs an account_id column and no column twice")
    return _csv_rows(reader, columns)


def _csv_rows(reader: Reader, columns: list[str]) -> Iterator[CsvRow]:
    line = reader.line_num
    while True:
        start = line + 1
        try:
            cells = next(reader, None)
        except csv.Error as error:  # e.g. a quote left open: the rest of the file is unreadable
            yield CsvRow(start, "", {}, f"malformed CSV: {error}; the rest of the file was not read")
            return
        if cells is None:
            return
        line = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) != len(columns):
            yield CsvRow(start, cells[0].strip(), {}, f"{len(cells)} fields, the header has {len(columns)}")
            continue
        yield _csv_row(start, dict(zip(columns, (cell.strip() for cell in cells), strict=True)))


def _csv_row(line: int, cells: dict[str, str]) -> CsvRow:
    special = (*_CSV_IDENTITY_COLUMNS, "balance", "bonus")
    values: dict[str, object] = {name: value for name, value in cells.items() if value and name not in special}
    buckets = [
        {"kind": kind, "amount": cells.get(column, "")} for column, kind in (("balance", "main"), ("bonus", "bonus"))
    ]
    values["buckets"] = [bucket for bucket in buckets if bucket["amount"]]
    values["identities"] = [
        {"kind": column, "value": value} for column in _CSV_IDENTITY_COLUMNS for value in cells.get(column, "").split()
    ]
    return CsvRow(line, cells.get("account_id", ""), values)


# -- operations -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Applied:
    """A balance operation's result, the account after it, and how many sessions were told."""

    result: OperationResult
    view: BalanceView
    notified_sessions: int = 0


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A status change: the account's previous status, its view after, the sessions told (of every
    account changed), and each account changed (the account itself first, when it changed, then
    those under it: one recorded change per account)."""

    previous: AccountStatus
    view: BalanceView
    notified_sessions: int
    changed: tuple[StatusChanged, ...] = ()
    released_sessions: int = 0


@dataclass(frozen=True, slots=True)
class RowResult:
    line: int
    account_id: str
    status: int  # the HTTP status a single create would have had
    error: str | None = None


class Provisioning:
    """The operator's operations over the store, the directory and the tariff book."""

    def __init__(
        self,
        store: BalanceStore,
        directory: Directory,
        book: TariffBook,
        *,
        default_plan: str,
        forget: Callable[[Sequence[Identity]], None] = lambda identities: None,
        events: AccountEvents | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        identity_quarantine_seconds: int = 90 * SECONDS_PER_DAY,
        termination_grace_seconds: float = TERMINATION_GRACE_SECONDS,
    ) -> None:
        self.identity_quarantine_seconds = identity_quarantine_seconds
        self.termination_grace_seconds = termination_grace_seconds
        self._terminations: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self.store = store
        self.directory = directory
        self.book = book
        self.default_plan = default_plan
        self.forget = forget
        self.events = events or AccountEvents()
        self.metrics = metrics
        self.clock = clock

    async def view(self, account_id: str) -> BalanceView:
        view = await self.store.balance(account_id, int(self.clock()))
        if view is None:
            raise NotFound(f"no account {account_id!r}")
        return view

    async def show(self, account_id: str) -> tuple[Subscriber | None, BalanceView]:
        view = await self.view(account_id)
        return await self.directory.profile(account_id), view

    async def create(self, new: NewSubscriber, *, resuming: bool = False) -> BalanceView:
        """Make the subscriber. ``resuming``: the caller owns the id already (the customer wing's
        row) and may be finishing its own earlier try, so an ``ar:`` claim without an account is
        not a conflict: ``store.provision`` accepts its own identical claim and makes the account."""
        await self._create(new, resuming=resuming)
        return await self.view(new.account.account_id)

    async def _create(self, new: NewSubscriber, *, resuming: bool = False) -> None:
        account, profile = await self._checked(new, resuming=resuming)
        provisioned = await self.store.provision(account)
        outcome = provisioned.outcome
        if outcome is Outcome.ALREADY_EXISTS:
            raise Conflict(f"account {account.account_id!r} already exists")
        if outcome is not Outcome.OK:
            # The engine names what it refused, e.g. a company tree deeper than its bound.
            why = provisioned.reason or outcome.value
            raise Refused(f"account {account.account_id!r}: the money rules refuse it ({why})")
        if await self.directory.register(profile, now_seconds=int(self.clock())) is not Outcome.OK:
            raise Conflict(f"account {account.account_id!r} was created, but an identity was taken meanwhile")
        self.forget(profile.identities)  # a miss for these identities may be cached
        money = sum(bucket.amount for bucket in account.buckets if bucket.kind in MONETARY_KINDS)
        if self.metrics is not None:
            self.metrics.money_credited(account.currency, "provision", money)
        log.info("subscriber_created", account_id=account.account_id, plan=profile.plan, money_micros=money)

    async def _checked(self, new: NewSubscriber, *, resuming: bool = False) -> tuple[Account, Subscriber]:
        """Everything a create needs, checked before anything is written."""
        profile = new.profile
        plan = self.book.plans.get(profile.plan)
        # Malformed input first (400), then what the rules refuse (422). "XXX" is ISO 4217's code
        # for "no currency": a stand-in while the plan is unknown, never stored.
        account = replace(new.account, currency=new.account.currency or (plan.currency if plan else "XXX"))
        problem = account_problem(account)
        if problem:
            raise BadInput(f"account {account.account_id!r}: {problem}")
        if plan is None:
            raise Refused(f"no tariff plan {profile.plan!r} (known: {', '.join(sorted(self.book.plans))})")
        if account.currency != plan.currency:
            raise Refused(f"currency {account.currency} differs from plan {plan.name}'s {plan.currency}")
        if account.parent_id:
            parent = await self.store.balance(account.parent_id, int(self.clock()))
            if parent is None:
                raise Refused(f"parent account {account.parent_id!r} does not exist")
            if parent.account.currency != account.currency:
                raise Refused(f"currency {account.currency} differs from the parent's {parent.account.currency}")
            await self._refuse_closed_parent(account.parent_id)
        # Resuming, the claim in store.provision decides: a crash between its `ar:` claim and the
        # provision script left the lookup alone, which only the same claim may finish.
        if not resuming and await self.store.hierarchy(account.account_id) is not None:
            raise Conflict(f"account {account.account_id!r} already exists")
        for identity in profile.identities:
            owner = await self.directory.account_of(identity)
            if owner is not None and owner != account.account_id:
                raise Conflict(f"identity {identity.kind.value}:{identity.value} belongs to account {owner!r}")
            until = await self.directory.quarantined_until(identity)
            if until is not None and until > self.clock():
                ends = datetime.fromtimestamp(until, UTC).isoformat()
                raise Conflict(f"identity {identity.kind.value}:{identity.value} is in quarantine until {ends}")
        return account, profile

    async def set_status(
        self, account_id: str, status: AccountStatus, *, actor: str = "", reason: str = ""
    ) -> StatusChange:
        """Set the account's own status, with who (``actor``) and why (``reason``). The accounts
        under it keep their own: each counts as the worst of its own status and its ancestors'
        (balance/RULES.md "Effective status"), so a barred line stays barred when its department is
        suspended and resumed. Every account whose effective status changes (the account, then those
        under it) gets its own event, for its live sessions (RAR when suspended or resumed, ASR when
        barred or terminated: ocs/charging/notifier.py). Terminated is final: it is written on every
        account under the node too, and each one's final usage is awaited, then its reservations
        released and its identities quarantined (``_finish_termination``); terminating again
        finishes what an earlier attempt left undone (review 13 L4)."""
        started = time.perf_counter()
        previous = (await self.view(account_id)).account.status
        targets = [account_id, *await self.store.descendants(account_id)]
        before = {target: await self._effective_status(target) for target in targets}
        if before[account_id] is AccountStatus.TERMINATED and status is not AccountStatus.TERMINATED:
            raise Refused(f"account {account_id!r} is terminated; that is final")
        for target in targets if status is AccountStatus.TERMINATED else [account_id]:
            await self._write_status(target, status)
        changed: list[StatusChanged] = []
        notified = released = 0
        for target in targets:
            after, told = await self._effective_status(target), 0
            if after is not before[target]:
                event, told = await self._announce(StatusChanged(target, before[target], after, actor, reason))
                changed.append(event)
                notified += told
            if after is AccountStatus.TERMINATED:  # a retry (nothing told now) finishes at once
                released += await self._terminate(target, wait=told > 0)
        if notified and self.metrics is not None:  # the change reached the network: how fast
            self.metrics.lifecycle_enforced(status.value, time.perf_counter() - started)
        return StatusChange(previous, await self.view(account_id), notified, tuple(changed), released)

    async def _refuse_closed_parent(self, parent_id: str) -> None:
        """No new account under a barred or terminated node (review 13 L2): it could never be used,
        and a terminated node is final (RULES.md "Effective status")."""
        status = await self._effective_status(parent_id)
        if status in (AccountStatus.BARRED, AccountStatus.TERMINATED):
            raise Refused(f"parent_id: account {parent_id!r} is {status.value}; nothing new goes under it")

    async def _effective_status(self, account_id: str) -> AccountStatus:
        """The worst of the account's own status and its ancestors' (RULES.md "Effective status")."""
        status = await self.store.effective_status(account_id, int(self.clock()))
        if status is None:
            raise NotFound(f"no account {account_id!r}")
        return status

    async def _write_status(self, account_id: str, status: AccountStatus) -> None:
        """The account's own status; terminated stays so (final)."""
        own = (await self.view(account_id)).account.status
        if own is status or own is AccountStatus.TERMINATED:
            return
        outcome = (await self.store.update(account_id, status=status)).outcome
        if outcome is Outcome.UNKNOWN_ACCOUNT:
            raise NotFound(f"no account {account_id!r}")
        if outcome is not Outcome.OK:
            raise Refused(f"account {account_id!r}: status change refused ({outcome.value})")

    async def _announce(self, event: StatusChanged) -> tuple[StatusChanged, int]:
        """Publish one account's change of effective status: (the event, sessions told)."""
        notified = self.events.publish(event)  # live sessions learn it: RAR or ASR
        profile = await self.directory.profile(event.account_id)
        self.forget(profile.identities if profile is not None else ())  # the cached status is old
        log.info(
            "status_changed",
            account_id=event.account_id,
            previous=event.previous.value,
            status=event.status.value,
            actor=event.actor,
            reason=event.reason,
            notified_sessions=notified,
        )
        return event, notified

    async def _terminate(self, account_id: str, *, wait: bool) -> int:
        """A terminated account's last step: its reservations released, its identities quarantined.
        With ``wait`` (its sessions were just told by ASR) that runs in the background once the
        network has reported their final usage (every session ended) or ``termination_grace_seconds``
        passed, whichever is first, so that usage is charged, not released (RULES.md "Refused
        usage": usage never passes free; review 13 L3). Returns the sessions released now."""
        if not wait or self.termination_grace_seconds <= 0:
            return await self._finish_termination(account_id)
        task = asyncio.get_running_loop().create_task(self._finish_termination_later(account_id))
        self._terminations.add(task)
        task.add_done_callback(self._terminations.discard)
        return 0

    async def _finish_termination_later(self, account_id: str) -> None:
        deadline = time.monotonic() + self.termination_grace_seconds
        try:
            while time.monotonic() < deadline and not self._closing.is_set():
                view = await self.store.balance(account_id, int(self.clock()))
                if view is None or view.reservations == 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), _TERMINATION_POLL_SECONDS)
            await self._finish_termination(account_id)
        except BalanceUnavailable as error:  # terminating it again finishes it (set_status)
            log.error("termination_unfinished", account_id=account_id, error=str(error))

    async def _finish_termination(self, account_id: str) -> int:
        """Release what is still held (RULES.md "release") and quarantine the identities
        (balance/directory.py); both idempotent, so a retry may run them again."""
        released = await self.store.release(account_id)
        profile = await self.directory.profile(account_id)
        identities = profile.identities if profile is not None else ()
        await self.directory.quarantine(account_id, identities, int(self.clock()) + self.identity_quarantine_seconds)
        self.forget(identities)
        log.info("termination_finished", account_id=account_id, released_sessions=len(released))
        return len(released)

    async def close(self) -> None:
        """Finish every termination still waiting for its sessions' final usage, now."""
        self._closing.set()
        await asyncio.gather(*self._terminations, return_exceptions=True)

    async def top_up(self, account_id: str, top_up_id: str, micros: int, kind: BucketKind, valid_until: int) -> Applied:
        if micros <= 0:
            raise BadInput("amount: a top-up is more than 0")
        if valid_until and valid_until <= self.clock():
            raise BadInput("valid_until: the money would expire before it could be used")
        result = await self.store.top_up(account_id, top_up_id, micros, kind=kind, valid_until=valid_until)
        _refuse_other_amount("top-up", top_up_id, result, micros)
        return await self._credited(account_id, "top_up", result, micros, top_up_id=top_up_id)

    async def adjust(self, account_id: str, adjustment_id: str, micros: int, reason: str) -> Applied:
        if micros == 0:
            raise BadInput("amount: an adjustment is not 0")
        result = await self.store.adjust(account_id, adjustment_id, micros)
        _refuse_other_amount("adjustment", adjustment_id, result, micros)
        return await self._credited(
            account_id, "adjustment", result, micros, adjustment_id=adjustment_id, reason=reason
        )

    async def add_bucket(self, account_id: str, bucket: Bucket) -> Applied:
        result = await self.store.add_bucket(account_id, bucket)
        money = bucket.amount if bucket.kind in MONETARY_KINDS else 0
        return await self._credited(account_id, "bucket", result, money, kind=bucket.kind.value)

    async def _credited(
        self, account_id: str, operation: str, result: OperationResult, micros: int, **details: str
    ) -> Applied:
        if result.outcome is Outcome.UNKNOWN_ACCOUNT:
            raise NotFound(f"no account {account_id!r}")
        if result.outcome is Outcome.INSUFFICIENT_FUNDS:
            raise Refused(f"account {account_id!r}: the main balance cannot go below 0")
        if result.outcome is Outcome.INVALID:
            raise BadInput(f"account {account_id!r}: the money engine refused the {operation} as invalid")
        if result.outcome is Outcome.ACCOUNT_BLOCKED:  # RULES.md "top_up": not into a terminated account
            status = (await self.view(account_id)).account.status.value
            raise Conflict(f"account {account_id!r} is {status}: it takes no {operation.replace('_', '-')}")
        if result.outcome is not Outcome.OK:
            raise Refused(f"account {account_id!r}: {operation} refused ({result.outcome.value})")
        view = await self.view(account_id)
        notified = 0
        if not result.replayed:
            if self.metrics is not None:
                self.metrics.money_credited(view.account.currency, operation, micros)
            notified = self.events.publish(BalanceChanged(account_id, operation, micros))  # live sessions learn it
            log.info(operation, account_id=account_id, micros=micros, bucket_id=result.bucket_id, **details)
        return Applied(result, view, notified)

    async def load(self, rows: Iterable[CsvRow]) -> list[RowResult]:
        """Create each row's subscriber; the results come in file order. Rows are taken from
        ``rows`` a group at a time, so a file read lazily (``read_csv``) is never held whole.

        Rows go in groups of ``LOAD_GROUP_SIZE`` applied concurrently (each row is several Redis
        round trips, so one at a time leaves Redis idle), but only when no two rows of the group
        share an account id or an identity and none is the parent of another; otherwise the
        group goes row by row in file order, so a parent listed before its children, or a
        duplicate row, behaves exactly as if the file were applied one row at a time.
        """
        results: list[RowResult] = []
        pending = iter(rows)
        while taken := list(itertools.islice(pending, LOAD_GROUP_SIZE)):
            group = [(row, self._parse_row(row)) for row in taken]
            if _independent([parsed for _, parsed in group]):
                results += await asyncio.gather(*(self._load_row(row, parsed) for row, parsed in group))
            else:
                for row, parsed in group:
                    results.append(await self._load_row(row, parsed))
        return results

    def _parse_row(self, row: CsvRow) -> NewSubscriber | RowResult:
        if row.error is not None:
            return RowResult(row.line, row.account_id, BadInput.status, row.error)
        try:
            return parse_new_subscriber(row.values, default_plan=self.default_plan, where="row")
        except ApiError as error:
            return RowResult(row.line, row.account_id, error.status, error.message)

    async def _load_row(self, row: CsvRow, parsed: NewSubscriber | RowResult) -> RowResult:
        if isinstance(parsed, RowResult):
            return parsed
        try:
            await self._create(parsed)
        except ApiError as error:
            return RowResult(row.line, row.account_id, error.status, error.message)
        except BalanceUnavailable as error:  # the rows before stay applied; a re-run reports them 409
            return RowResult(row.line, row.account_id, Unavailable.status, f"Redis is unavailable: {error}")
        return RowResult(row.line, row.account_id, 201)


def _refuse_other_amount(what: str, operation_id: str, result: OperationResult, micros: int) -> None:
    """An id used before for another amount is not a retransmission: answering "already applied"
    would let the caller believe the new amount was credited (409 naming the amount that was)."""
    if result.replayed and result.applied_micros is not None and result.applied_micros != micros:
        raise Conflict(
            f"{what} {operation_id!r} was already applied with {format_money(result.applied_micros)}, "
            f"not {format_money(micros)}; a different amount needs a new id"
        )


LOAD_GROUP_SIZE = 16  # rows in flight at once; well inside the store's pool of 32 Redis connections


def _independent(group: Sequence[NewSubscriber | RowResult]) -> bool:
    """No two rows touch the same account or identity, and none waits for another as its parent."""
    accounts: set[str] = set()
    identities: set[Identity] = set()
    parents: set[str] = set()
    for parsed in group:
        if isinstance(parsed, RowResult):
            continue
        if parsed.account.account_id in accounts or identities.intersection(parsed.profile.identities):
            return False
        accounts.add(parsed.account.account_id)
        identities.update(parsed.profile.identities)
        if parsed.account.parent_id:
            parents.add(parsed.account.parent_id)
    return not parents & accounts
