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
import itertools
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from balance.directory import Directory, Identity, Subscriber
from balance.errors import BalanceUnavailable
from balance.store import BalanceStore
from balance.types import (
    MONETARY_KINDS,
    Account,
    AccountStatus,
    BalanceView,
    Bucket,
    BucketKind,
    OperationResult,
    Outcome,
)
from ocs.api.fields import (
    SECONDS_PER_DAY,
    ApiError,
    BadInput,
    Conflict,
    CsvRow,
    NewSubscriber,
    NotFound,
    Refused,
    Unavailable,
    account_problem,
    parse_new_subscriber,
)
from ocs.events import AccountEvents, BalanceChanged, StatusChanged
from ocs.metrics import Metrics
from ocs.rating.book import TariffBook
from ocs.rating.rate import format_money

if TYPE_CHECKING:
    pass  # what csv.reader returns

log = structlog.get_logger("ocs.api.provisioning")

# How long a termination waits for the network's final usage (the CCR-T answering its ASR) before
# it releases what is still held: RFC 4006 section 13 recommends Tx = 10 s, how long a client
# waits for our answer; a client quick enough to be served reports within it.
TERMINATION_GRACE_SECONDS = 10.0
_TERMINATION_POLL_SECONDS = 0.1  # how often a waiting termination looks for the sessions' end


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
            operation_id = details.get("top_up_id") or details.get("adjustment_id") or ""
            changed = BalanceChanged(account_id, operation, micros, operation_id)
            notified = self.events.publish(changed)  # live sessions learn it (and loyalty a top-up)
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
