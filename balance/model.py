"""The in-memory reference model of the money engine: balance/RULES.md as executable Python.

Theory of operation: ``ReferenceModel`` offers the operations of the Redis store
(``balance.store.BalanceStore``), synchronous and without Redis, so a model-based test can run the
same random operations against both and compare every answer. Accounts, buckets and holds live in
a ``Ledger`` (balance/model_ledger.py: the drawing order and every counter change); this module
keeps the sessions, the idempotency keys and the order of a charge request (checks, then per
item: commit, return, reserve; then terminate). The billing cycle's operations (usage cut, rental,
bundle renewal) are in balance/model_cycle.py. After every operation that may change something
it asserts the invariants of RULES.md (balance/model_invariants.py), as the Lua scripts do
(TigerBeetle's "pair assertions").

Sessions are kept per hierarchy (root account id, session id), as the Redis keys share the root's
hash tag; closed sessions are kept for ever (Redis forgets them after the tombstone lifetime).
A charge or refund made with ``late=True`` is one that reaches the engine after its deadline
(RULES.md "Deadlines"): past the session checks it raises ``BalanceUnavailable`` and changes
nothing, as the store does when Redis answers "expired".
Places where RULES.md leaves a choice are marked ``RULES.md ambiguity:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from balance.errors import BalanceUnavailable
from balance.keys import service_key
from balance.model_cycle import CycleModel
from balance.model_invariants import InvariantChecker
from balance.model_ledger import AccountState, Hold, Ledger
from balance.tariff import charged, cost, cost_across, is_valid
from balance.types import (
    MAX_AMOUNT_MICROS,
    MAX_HIERARCHY_LEVELS,
    MAX_SERVICE_UNITS,
    MONETARY_KINDS,
    Account,
    AccountStatus,
    BalanceView,
    Bucket,
    BucketKind,
    ChargeItem,
    ChargeRequest,
    ChargeResult,
    ItemResult,
    OperationResult,
    Outcome,
    PoolDraw,
    RentalPolicy,
    Tariff,
    TariffChange,
    Unit,
    UsageRecord,
    worst_status,
)


@dataclass(slots=True)
class Reservation:
    """What one service (rating group, service identifier) of a session holds: its grant, the
    tariff it was priced with, the holds."""

    tariff: Tariff
    granted_units: int
    allowance_holds: list[Hold]
    money_holds: list[Hold]
    expiry_seconds: int
    change: TariffChange | None = None  # RULES.md "Tariff change": the switch inside the grant
    granted_seconds: int = 0  # when the grant was made


@dataclass(slots=True)
class Session:
    account_id: str
    last_request_number: int
    result: ChargeResult
    expiry_seconds: int
    closed: bool = False
    reservations: dict[str, Reservation] = field(default_factory=dict)  # by service key (balance/keys.py)


def _valid_item(item: ChargeItem) -> bool:
    split = item.used_split
    return (
        is_valid(item.tariff)
        and 0 <= item.used_units <= MAX_SERVICE_UNITS
        and 0 <= item.requested_units <= MAX_SERVICE_UNITS
        and (split is None or split.before_units + split.after_units + split.indeterminate_units == item.used_units)
        # RULES.md "Refused usage": the reservation decides the used units, none are asked anew.
        and not (item.commit_reserved and (item.used_units or item.requested_units or split is not None))
    )


def _valid_request(request: ChargeRequest) -> bool:
    # RULES.md ambiguity: RULES.md names no check on the request's numbers; the model refuses with
    # ``invalid`` (before looking anything up) what the limits of balance/types.py exclude, and
    # repeated rating groups, which "the caller ensures" are distinct.
    services = [service_key(item.rating_group, item.service_identifier) for item in request.items]
    return (
        request.request_number >= 0
        and request.now_seconds >= 0
        and request.validity_seconds >= 0
        and len(set(services)) == len(services)
        and not (request.event and any(item.commit_reserved for item in request.items))
        and all(_valid_item(item) for item in request.items)
    )


def _priced_before(reservation: Reservation, item: ChargeItem, now_seconds: int) -> int:
    """RULES.md "Tariff change": how many of the item's used units, from the first, are priced
    before the reservation's tariff change (all of them without one)."""
    change = reservation.change
    if change is None:
        return item.used_units
    before_dearer = reservation.tariff.price_micros >= change.after_price_micros
    split = item.used_split
    if split is not None:
        return split.before_units + (split.indeterminate_units if before_dearer else 0)
    if now_seconds <= change.at_seconds:
        return item.used_units
    if item.unit is Unit.SECONDS:  # used continuously from the grant (RFC 4006 section 5.1.1)
        return change.at_seconds - reservation.granted_seconds
    return item.used_units if before_dearer else 0


def _valid_buckets(buckets: tuple[Bucket, ...]) -> bool:
    bucket_ids = [bucket.bucket_id for bucket in buckets]
    return len(set(bucket_ids)) == len(bucket_ids) and all(
        bucket.bucket_id >= 1 and 0 <= bucket.amount <= MAX_AMOUNT_MICROS for bucket in buckets
    )


def _refused(outcome: Outcome) -> ChargeResult:
    # RULES.md ambiguity: a request refused as a whole carries no items and balance_micros 0
    # (RULES.md defines balance_micros "after the request" only for requests that were applied).
    return ChargeResult(outcome)


class ReferenceModel:
    """Every operation of the money engine, on plain Python data."""

    def __init__(self) -> None:
        self._ledger = Ledger()
        self._sessions: dict[tuple[str, str], Session] = {}
        self._top_ups: dict[tuple[str, str], OperationResult] = {}
        self._adjustments: dict[tuple[str, str], OperationResult] = {}
        self._records: list[UsageRecord] = []
        self._refund_days: dict[str, tuple[str, int]] = {}  # account -> (day, micros refunded that day)
        self._checker = InvariantChecker()
        self._cycle = CycleModel(self._ledger)

    # -- accounts --------------------------------------------------------------------------------

    def provision(self, account: Account) -> OperationResult:
        accounts = self._ledger.accounts
        if account.account_id in accounts:
            return OperationResult(Outcome.ALREADY_EXISTS)
        if (
            not account.account_id
            or not _valid_buckets(account.buckets)
            or not 0 <= account.credit_limit_micros <= MAX_AMOUNT_MICROS
            or not 0 <= account.child_cap_micros <= MAX_AMOUNT_MICROS
        ):
            return OperationResult(Outcome.INVALID)
        if account.parent_id:
            parent = accounts.get(account.parent_id)
            if parent is None or parent.account.currency != account.currency:
                return OperationResult(Outcome.INVALID)
            # RULES.md "Company money": at most MAX_HIERARCHY_LEVELS levels, the root included.
            if len(self._ledger.ancestors(account.parent_id)) + 2 > MAX_HIERARCHY_LEVELS:
                return OperationResult(Outcome.INVALID)
        state = AccountState(replace(account, buckets=()), {bucket.bucket_id: bucket for bucket in account.buckets})
        state.credits = sum(bucket.amount for bucket in account.buckets if bucket.kind in MONETARY_KINDS)
        accounts[account.account_id] = state
        self.check_invariants()
        return OperationResult(Outcome.OK)

    def update(
        self,
        account_id: str,
        *,
        status: AccountStatus | None = None,
        credit_limit_micros: int | None = None,
        child_cap_micros: int | None = None,
    ) -> OperationResult:
        state = self._ledger.accounts.get(account_id)
        if state is None:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        # RULES.md ambiguity: a negative or too large limit or cap is refused with ``invalid``.
        for value in (credit_limit_micros, child_cap_micros):
            if value is not None and not 0 <= value <= MAX_AMOUNT_MICROS:
                return OperationResult(Outcome.INVALID)
        account = state.account
        state.account = replace(
            account,
            status=account.status if status is None else status,
            credit_limit_micros=account.credit_limit_micros if credit_limit_micros is None else credit_limit_micros,
            child_cap_micros=account.child_cap_micros if child_cap_micros is None else child_cap_micros,
        )
        self.check_invariants()
        return OperationResult(Outcome.OK)

    def effective_status(self, account_id: str) -> AccountStatus:
        """RULES.md "Effective status": the worst status of the account and its ancestors."""
        accounts = self._ledger.accounts
        chain = [account_id, *self._ledger.ancestors(account_id)]
        return worst_status(accounts[node].account.status for node in chain)

    def ancestors(self, account_id: str) -> list[str]:
        """The account's ancestors, parent first, root last (empty for a root or an unknown id)."""
        return self._ledger.ancestors(account_id) if account_id in self._ledger.accounts else []

    def root_of(self, account_id: str) -> str:
        """The hierarchy's root (the hash tag of its keys); an unknown id is its own root."""
        if account_id not in self._ledger.accounts:
            return account_id
        return ([account_id, *self._ledger.ancestors(account_id)])[-1]

    # -- money in --------------------------------------------------------------------------------

    def top_up(
        self,
        account_id: str,
        top_up_id: str,
        amount_micros: int,
        *,
        kind: BucketKind = BucketKind.MAIN,
        valid_until: int = 0,
    ) -> OperationResult:
        # RULES.md ambiguity: a top-up of a non-monetary kind or of an amount outside
        # 1..MAX_AMOUNT_MICROS is refused with ``invalid`` before anything is looked up.
        if kind not in MONETARY_KINDS or not 0 < amount_micros <= MAX_AMOUNT_MICROS or valid_until < 0:
            return OperationResult(Outcome.INVALID)
        if account_id not in self._ledger.accounts:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        key = (account_id, top_up_id)
        if key in self._top_ups:
            # RULES.md ambiguity: the replayed answer is the stored one (same bucket id).
            return replace(self._top_ups[key], replayed=True)
        if self._ledger.accounts[account_id].account.status is AccountStatus.TERMINATED:
            return OperationResult(Outcome.ACCOUNT_BLOCKED)
        bucket_id = self._ledger.credit(account_id, kind, amount_micros, valid_until)
        self._top_ups[key] = result = OperationResult(Outcome.OK, bucket_id=bucket_id, applied_micros=amount_micros)
        self.check_invariants()
        return result

    def adjust(self, account_id: str, adjustment_id: str, amount_micros: int) -> OperationResult:
        # RULES.md ambiguity: an adjustment of 0 or beyond MAX_AMOUNT_MICROS either way is ``invalid``.
        if amount_micros == 0 or abs(amount_micros) > MAX_AMOUNT_MICROS:
            return OperationResult(Outcome.INVALID)
        if account_id not in self._ledger.accounts:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        key = (account_id, adjustment_id)
        if key in self._adjustments:
            return replace(self._adjustments[key], replayed=True)
        first_main = self._ledger.first_bucket(account_id, BucketKind.MAIN)
        if amount_micros < 0 and (first_main is None or first_main.amount + amount_micros < 0):
            # RULES.md ambiguity: "nothing changes" is read as "the id is not recorded either":
            # the same adjustment id may succeed later, after a top-up.
            return OperationResult(Outcome.INSUFFICIENT_FUNDS)
        bucket_id = self._ledger.credit(account_id, BucketKind.MAIN, amount_micros)
        self._adjustments[key] = result = OperationResult(Outcome.OK, bucket_id=bucket_id, applied_micros=amount_micros)
        self.check_invariants()
        return result

    def add_bucket(self, account_id: str, bucket: Bucket) -> OperationResult:
        """A new bucket with id max + 1 (``bucket.bucket_id`` is ignored); money counts as credits."""
        if not 0 <= bucket.amount <= MAX_AMOUNT_MICROS:
            return OperationResult(Outcome.INVALID)
        if account_id not in self._ledger.accounts:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        state = self._ledger.accounts[account_id]
        bucket_id = self._ledger.next_bucket_id(account_id)
        state.buckets[bucket_id] = replace(bucket, bucket_id=bucket_id)
        if bucket.kind in MONETARY_KINDS:
            state.credits += bucket.amount
        self.check_invariants()
        return OperationResult(Outcome.OK, bucket_id=bucket_id)

    # -- the billing cycle (balance/model_cycle.py) -------------------------------------------------

    def cut(self, account_id: str, cut_id: str, line_micros: int, pools: tuple[PoolDraw, ...] = ()) -> OperationResult:
        result = self._cycle.cut(account_id, cut_id, line_micros, pools)
        self.check_invariants()
        return result

    def debit_rental(self, account_id: str, rental_id: str, micros: int, policy: RentalPolicy) -> OperationResult:
        result = self._cycle.debit_rental(account_id, rental_id, micros, policy)
        self.check_invariants()
        return result

    def renew_bundle(
        self,
        account_id: str,
        bundle_id: str,
        kind: BucketKind,
        units: int,
        services: tuple[str, ...],
        valid_until: int,
        rollover_cap_units: int,
        renewal_id: str,
    ) -> OperationResult:
        result = self._cycle.renew_bundle(
            account_id, bundle_id, kind, units, services, valid_until, rollover_cap_units, renewal_id
        )
        self.check_invariants()
        return result

    # -- charging --------------------------------------------------------------------------------

    def _open(
        self, account_id: str, session_id: str, request_number: int, event: bool, late: bool
    ) -> ChargeResult | Session:
        """RULES.md "A charge request", checks 1-3 and the deadline: a refusal or replay, or the
        session to work on."""
        state = self._ledger.accounts.get(account_id)
        if state is None:
            return _refused(Outcome.UNKNOWN_ACCOUNT)
        session = self._sessions.get((self.root_of(account_id), session_id))
        if session is None:
            if request_number != 0 and not event:
                return _refused(Outcome.UNKNOWN_SESSION)
        # RULES.md ambiguity: a session id is one per hierarchy; a request naming it for
        # another account of the hierarchy is ``unknown_session``.
        elif session.account_id != account_id:
            return _refused(Outcome.UNKNOWN_SESSION)
        elif request_number == session.last_request_number:
            return replace(session.result, replayed=True)
        elif request_number < session.last_request_number:
            return _refused(Outcome.STALE_REQUEST)
        elif session.closed:
            return _refused(Outcome.UNKNOWN_SESSION)
        if late:
            raise BalanceUnavailable("reached the engine after its deadline; nothing was applied")
        status = self.effective_status(account_id)
        closed_for_good = status in (AccountStatus.BARRED, AccountStatus.TERMINATED)
        if (event and status is not AccountStatus.ACTIVE) or (session is None and closed_for_good):
            return _refused(Outcome.ACCOUNT_BLOCKED)
        if session is None:
            session = Session(account_id, request_number, ChargeResult(Outcome.OK), 0)
            self._sessions[(self.root_of(account_id), session_id)] = session
        return session

    def _finish(self, session: Session, request_number: int, result: ChargeResult, expiry_seconds: int) -> None:
        session.last_request_number = request_number
        session.result = result
        session.expiry_seconds = expiry_seconds
        self.check_invariants()

    def _return(self, account_id: str, reservation: Reservation) -> None:
        for hold in (*reservation.allowance_holds, *reservation.money_holds):
            self._ledger.release(account_id, hold)

    def _close(self, session: Session) -> None:
        for reservation in session.reservations.values():
            self._return(session.account_id, reservation)
        session.reservations.clear()
        session.closed = True

    def charge(self, request: ChargeRequest, *, late: bool = False) -> ChargeResult:
        if not _valid_request(request):
            return _refused(Outcome.INVALID)
        session_key = (self.root_of(request.account_id), request.session_id)
        new = session_key not in self._sessions
        opened = self._open(request.account_id, request.session_id, request.request_number, request.event, late)
        if isinstance(opened, ChargeResult):
            return opened
        session = opened
        items = tuple(self._charge_item(request, session, item) for item in request.items)
        unopened = (
            new
            and not (request.terminate or request.event)
            and items
            and all(item.outcome is Outcome.INSUFFICIENT_FUNDS and item.committed_units == 0 for item in items)
        )
        if request.terminate or request.event:
            # RULES.md ambiguity: an event on a session that is still open closes it like a
            # termination (every reservation returned), else its holds could never be resolved.
            self._close(session)
        result = ChargeResult(
            Outcome.OK,
            items,
            balance_micros=self._ledger.available(request.account_id, request.now_seconds),
            opened=new and not (request.terminate or request.event or unopened),
        )
        self._finish(session, request.request_number, result, request.now_seconds + request.validity_seconds)
        if unopened:  # RULES.md "unopened": every item refused, so no session is left behind
            del self._sessions[session_key]
        return result

    def _charge_item(self, request: ChargeRequest, session: Session, item: ChargeItem) -> ItemResult:
        """One item: commit the used units, return the rest of its reservation, reserve anew."""
        reservation = session.reservations.pop(service_key(item.rating_group, item.service_identifier), None)
        self._ledger.drawn.clear()  # what this item's commits draw, for its usage record
        if request.event and reservation is not None:
            # RULES.md: an event first returns its rating group's reservation, untouched; then it
            # debits all or nothing.
            self._return(request.account_id, reservation)
            reservation = None
        if item.commit_reserved:  # RULES.md "Refused usage": every unit granted counts as used
            item = replace(item, used_units=reservation.granted_units if reservation is not None else 0)
        committed = self._commit(request, item, reservation)
        if reservation is not None:
            self._return(request.account_id, reservation)
        if committed is None:
            return ItemResult(item.rating_group, Outcome.INSUFFICIENT_FUNDS)
        committed_units, committed_micros = committed
        if committed_units > 0:
            self._record(request, item, committed_units, committed_micros)
        if item.requested_units == 0 or item.release or request.terminate or request.event:
            return ItemResult(item.rating_group, Outcome.OK, 0, committed_units, committed_micros)
        return self._reserve(request, session, item, committed_units, committed_micros)

    def _commit(
        self, request: ChargeRequest, item: ChargeItem, reservation: Reservation | None
    ) -> tuple[int, int] | None:
        """Commit ``used_units``: (units, micros) committed, or None when an event cannot afford them."""
        account_id = request.account_id
        reserved_units = min(item.used_units, reservation.granted_units if reservation is not None else 0)
        beyond_units = item.used_units - reserved_units
        direct = None
        if beyond_units > 0:
            direct = self._ledger.draw(
                account_id, item.service, item.unit, item.tariff, beyond_units, request.now_seconds
            )
            if request.event and direct.granted_units < beyond_units:
                return None  # an event commits all or nothing
        units, micros = 0, 0
        if reservation is not None and reserved_units > 0:
            before = _priced_before(reservation, item, request.now_seconds)
            units, micros = self._commit_reserved(account_id, reservation, reserved_units, before)
        if direct is not None:
            # "As if reserved and committed now": hold the affordable part, then commit all of it.
            self._ledger.take(account_id, direct)
            for hold in direct.allowance_holds:
                self._ledger.commit_units(hold, hold.amount)
            direct_micros = sum(hold.amount for hold in direct.money_holds)
            for hold in direct.money_holds:
                self._ledger.commit_money(account_id, hold, hold.amount)
            units, micros = units + direct.granted_units, micros + direct_micros
        return units, micros

    def _commit_reserved(self, account_id: str, reservation: Reservation, units: int, before: int) -> tuple[int, int]:
        """Allowance units first, from the allowance holds in order; the rest priced and paid in
        order. ``before``: how many of the units, from the first, are priced before a tariff change."""
        from_allowances = 0
        for hold in reservation.allowance_holds:
            take = min(hold.amount, units - from_allowances)
            self._ledger.commit_units(hold, take)
            from_allowances += take
        money_units = units - from_allowances
        change = reservation.change
        if change is None:
            micros = cost(money_units, reservation.tariff)
        else:
            # Allowances cover the first units used, so the priced units start after them.
            money_before = min(max(before - from_allowances, 0), money_units)
            micros = cost_across(
                money_before, money_units - money_before, reservation.tariff, change.after_price_micros
            )
        unpaid = micros
        for hold in reservation.money_holds:
            take = min(hold.amount, unpaid)
            self._ledger.commit_money(account_id, hold, take)
            unpaid -= take
        assert unpaid == 0, f"account {account_id}: a commit within the reservation exceeded its money holds"
        return units, micros

    def _reserve(
        self, request: ChargeRequest, session: Session, item: ChargeItem, committed_units: int, committed_micros: int
    ) -> ItemResult:
        def result(outcome: Outcome, granted_units: int = 0, final: bool = False, reserved: int = 0) -> ItemResult:
            return ItemResult(
                item.rating_group, outcome, granted_units, committed_units, committed_micros, final, reserved
            )

        if self.effective_status(request.account_id) is not AccountStatus.ACTIVE:
            return result(Outcome.ACCOUNT_BLOCKED)
        rounded_units = charged(item.requested_units, item.tariff)
        change = item.tariff_change
        # RULES.md "Tariff change": a grant across a change is priced at the dearer side.
        priced_at = item.tariff
        if change is not None and change.after_price_micros > item.tariff.price_micros:
            priced_at = replace(item.tariff, price_micros=change.after_price_micros)
        draw = self._ledger.draw(
            request.account_id, item.service, item.unit, priced_at, rounded_units, request.now_seconds
        )
        if draw.granted_units == 0:
            return result(Outcome.INSUFFICIENT_FUNDS)
        self._ledger.take(request.account_id, draw)
        session.reservations[service_key(item.rating_group, item.service_identifier)] = Reservation(
            item.tariff,
            draw.granted_units,
            draw.allowance_holds,
            draw.money_holds,
            request.now_seconds + request.validity_seconds,
            change,
            request.now_seconds,
        )
        partial = draw.granted_units < rounded_units
        # RULES.md "reserved_micros": every money hold of the new reservation, whatever its source.
        reserved_micros = sum(hold.amount for hold in draw.money_holds)
        return result(Outcome.PARTIAL if partial else Outcome.OK, draw.granted_units, draw.final, reserved_micros)

    def _record(self, request: ChargeRequest, item: ChargeItem, units: int, micros: int) -> None:
        state = self._ledger.accounts[request.account_id]
        self._records.append(
            UsageRecord(
                record_id=f"{request.session_id}|{request.request_number}|"
                + service_key(item.rating_group, item.service_identifier),
                account_id=request.account_id,
                session_id=request.session_id,
                request_number=request.request_number,
                rating_group=item.rating_group,
                service=item.service,
                unit=item.unit,
                units=units,
                micros=micros,
                payment_type=state.account.payment_type,
                at_seconds=request.now_seconds,
                service_identifier=item.service_identifier,
                line_micros=self._ledger.drawn.get((0, True), 0),
                pools=tuple(
                    PoolDraw(level, self._ledger.drawn.get((level, False), 0), self._ledger.drawn.get((level, True), 0))
                    for level in range(1, MAX_HIERARCHY_LEVELS)
                    if (level, False) in self._ledger.drawn or (level, True) in self._ledger.drawn
                ),
            )
        )

    def refund(
        self,
        account_id: str,
        session_id: str,
        request_number: int,
        amount_micros: int,
        now_seconds: int,
        day: str = "",
        day_limit_micros: int = 0,
        *,
        late: bool = False,
    ) -> ChargeResult:
        """A credit to the first main bucket, idempotent by (session id, request number) like an
        event, refused (``refund_limit``) when the day's refunds would pass ``day_limit_micros``."""
        if not 0 < amount_micros <= MAX_AMOUNT_MICROS or request_number < 0 or now_seconds < 0:
            return _refused(Outcome.INVALID)
        # RULES.md ambiguity: "like a charge event" is read as every check of an event, so a refund
        # to an account that is not active is ``account_blocked``, and a refund naming an open
        # session closes it.
        key = (self.root_of(account_id), session_id)
        known = key in self._sessions
        opened = self._open(account_id, session_id, request_number, True, late)
        if isinstance(opened, ChargeResult):
            return opened
        refunded_day, refunded = self._refund_days.get(account_id, ("", 0))
        day_total = amount_micros + (refunded if refunded_day == day else 0)
        if 0 < day_limit_micros < day_total:
            if not known:  # as refund.lua, which checks before it writes anything
                del self._sessions[key]
            return _refused(Outcome.REFUND_LIMIT)
        self._refund_days[account_id] = (day, day_total)
        self._close(opened)
        self._ledger.credit(account_id, BucketKind.MAIN, amount_micros)
        result = ChargeResult(Outcome.OK, balance_micros=self._ledger.available(account_id, now_seconds))
        self._finish(opened, request_number, result, now_seconds)
        return result

    # -- supervision and reading -----------------------------------------------------------------

    def expire(self, root_id: str, now_seconds: int) -> list[str]:
        """Close every open session of the hierarchy whose expiry is due, returning all its holds."""
        closed = []
        for (root, session_id), session in self._sessions.items():
            if root == root_id and not session.closed and session.expiry_seconds <= now_seconds:
                self._close(session)
                closed.append(session_id)
        self.check_invariants()
        return sorted(closed)

    def release(self, account_id: str) -> list[str]:
        """RULES.md "release": close every open session of the account, whatever its expiry."""
        root_id = self.root_of(account_id)
        closed = []
        for (root, session_id), session in self._sessions.items():
            if root == root_id and session.account_id == account_id and not session.closed:
                self._close(session)
                closed.append(session_id)
        self.check_invariants()
        return sorted(closed)

    def descendants(self, account_id: str) -> list[str]:
        """RULES.md "descendants": level by level, each level sorted."""
        accounts = self._ledger.accounts
        found: list[str] = []
        level = [account_id]
        while level:
            parents = set(level)
            level = sorted(other for other, state in accounts.items() if state.account.parent_id in parents)
            found += level
        return found

    def balance(self, account_id: str, now_seconds: int) -> BalanceView | None:
        state = self._ledger.accounts.get(account_id)
        if state is None:
            return None
        return BalanceView(
            account=replace(state.account, buckets=tuple(state.buckets[key] for key in sorted(state.buckets))),
            credits_micros=state.credits,
            debits_micros=state.debits,
            committed_micros=state.committed,
            held_micros=state.held,
            limit_held_micros=state.limit_held,
            unbilled_micros=state.unbilled,
            pool_used_micros=state.pool_used,
            available_micros=self._ledger.available(account_id, now_seconds),
            reservations=sum(
                len(session.reservations) for session in self._sessions.values() if session.account_id == account_id
            ),
            billed_micros=state.billed,
            pool_drawn_micros=tuple(state.pool_drawn.get(level, 0) for level in range(1, MAX_HIERARCHY_LEVELS)),
            main_floor_micros=state.main_floor,
        )

    def usage_records(self) -> list[UsageRecord]:
        return list(self._records)

    def check_invariants(self) -> None:
        """RULES.md "Invariants": raise AssertionError naming the account and the rule broken."""
        live = [
            (session.account_id, reservation)
            for session in self._sessions.values()
            for reservation in session.reservations.values()
        ]
        holds = [
            (drawer_id, hold)
            for drawer_id, reservation in live
            for hold in (*reservation.allowance_holds, *reservation.money_holds)
        ]
        self._checker.check(self._ledger, holds, self._records)
