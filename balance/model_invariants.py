"""The invariants of balance/RULES.md, checked over the reference model after every change.

Theory of operation: ``InvariantChecker.check`` reads the ledger's accounts, every hold of every live
reservation and the usage records, and raises ``AssertionError`` naming the account (or hierarchy)
and the rule it finds broken. The Lua scripts assert the same rules after each change; the
checker is the model's half of that pair.

Two rules are stated with a note in RULES.md: a lowered credit limit (rule 3) or child cap (rule 4)
may leave the usage above it, "then nothing new is granted". The checker therefore remembers each
account's usage at the previous check and asserts that the usage is within the limit or has not
grown since. Rule 6 ("once every session has ended, nothing is held") is checked in its stronger,
always-true form: ``held``, ``limit_held`` and ``pool_used`` are exactly what the live holds (and,
for ``pool_used``, the pool money committed) account for, so with no live reservation they are 0.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable

from balance.model_ledger import CREDIT_LINE, AccountState, Hold, Ledger
from balance.types import MONETARY_KINDS, BucketKind, PaymentType, UsageRecord


def _fail(subject: str, rule: str, detail: str) -> None:
    raise AssertionError(f"{subject}: rule {rule}: {detail}")


class InvariantChecker:
    __slots__ = ("_line_usage_seen", "_pool_used_seen")

    def __init__(self) -> None:
        self._line_usage_seen: dict[str, int] = {}
        self._pool_used_seen: dict[str, int] = {}

    def check(self, ledger: Ledger, holds: Iterable[tuple[str, Hold]], records: Iterable[UsageRecord]) -> None:
        accounts = ledger.accounts
        held: Counter[str] = Counter()
        limit_held: Counter[str] = Counter()
        pool_held: Counter[str] = Counter()
        for drawer_id, hold in holds:
            if hold.amount < 0:
                _fail(f"account {drawer_id}", "2", f"a hold on {hold.owner_id} is negative: {hold}")
            if hold.money and hold.bucket_id == CREDIT_LINE:
                limit_held[hold.owner_id] += hold.amount
            elif hold.money:
                held[hold.owner_id] += hold.amount
            for node in ledger.pool_path(drawer_id, hold):  # RULES.md "Company money"
                pool_held[node] += hold.amount
        committed: Counter[str] = Counter()
        record_ids: Counter[str] = Counter()
        for record in records:
            committed[record.account_id] += record.micros
            record_ids[record.record_id] += 1
        for account_id, state in accounts.items():
            self._check_account(account_id, state, committed[account_id])
            self._check_holds(account_id, state, held[account_id], limit_held[account_id], pool_held[account_id])
        repeated = sorted(record_id for record_id, count in record_ids.items() if count > 1)
        if repeated:
            _fail("usage records", "7 (no request applied twice)", f"repeated record ids {repeated}")
        self._check_hierarchies(ledger)

    def _check_account(self, account_id: str, state: AccountState, recorded_micros: int) -> None:
        subject = f"account {account_id}"
        money = sum(bucket.amount for bucket in state.buckets.values() if bucket.kind in MONETARY_KINDS)
        if state.credits - state.debits != money + state.held:
            _fail(
                subject,
                "1 (credits - debits == money buckets + held)",
                f"{state.credits} - {state.debits} != {money} + {state.held}",
            )
        # RULES.md "debit_rental": a main bucket may go down to minus the account's main floor.
        negative = [
            f"bucket {bucket.bucket_id}"
            for bucket in state.buckets.values()
            if bucket.amount < (-state.main_floor if bucket.kind is BucketKind.MAIN else 0)
        ]
        for name in ("held", "limit_held", "unbilled", "billed", "pool_used"):
            if getattr(state, name) < 0:
                negative.append(name)
        negative += [f"pool_drawn[{level}]" for level, drawn in state.pool_drawn.items() if drawn < 0]
        if negative:
            _fail(subject, "2 (nothing below 0)", ", ".join(negative))
        line_usage = state.unbilled + state.limit_held
        if state.account.payment_type is PaymentType.PREPAID and line_usage != 0:
            _fail(subject, "3 (a prepaid account has no credit line)", f"unbilled + limit_held = {line_usage}")
        ceiling = max(state.account.credit_limit_micros, self._line_usage_seen.get(account_id, 0))
        if line_usage > ceiling:
            _fail(subject, "3 (unbilled + limit_held <= limit)", f"{line_usage} > {ceiling}")
        self._line_usage_seen[account_id] = line_usage
        if not state.account.parent_id and state.pool_used != 0:
            _fail(subject, "4 (only a child draws on a pool)", f"pool_used = {state.pool_used}")
        ceiling = max(state.account.child_cap_micros, self._pool_used_seen.get(account_id, 0))
        if state.pool_used > ceiling:
            _fail(subject, "4 (pool_used <= cap)", f"{state.pool_used} > {ceiling}")
        self._pool_used_seen[account_id] = state.pool_used
        if state.committed != recorded_micros:
            _fail(subject, "5 (committed == usage records)", f"{state.committed} != {recorded_micros}")

    @staticmethod
    def _check_holds(account_id: str, state: AccountState, held: int, limit_held: int, pool_held: int) -> None:
        subject = f"account {account_id}"
        if state.held != held:
            _fail(subject, "6 (held == live holds on its buckets)", f"{state.held} != {held}")
        if state.limit_held != limit_held:
            _fail(subject, "6 (limit_held == live holds on its credit line)", f"{state.limit_held} != {limit_held}")
        if state.pool_used != state.pool_committed + pool_held:
            _fail(
                subject,
                "6 (pool_used == pool committed + live pool holds)",
                f"{state.pool_used} != {state.pool_committed} + {pool_held}",
            )

    @staticmethod
    def _check_hierarchies(ledger: Ledger) -> None:
        committed: defaultdict[str, int] = defaultdict(int)
        paid: defaultdict[str, int] = defaultdict(int)
        for account_id, state in ledger.accounts.items():
            root_id = ([account_id, *ledger.ancestors(account_id)])[-1]
            committed[root_id] += state.committed
            paid[root_id] += state.debits + state.unbilled + state.billed
        for root_id, total in committed.items():
            if total != paid[root_id]:
                _fail(
                    f"hierarchy {root_id}",
                    "sum(committed) == sum(debits) + sum(unbilled) + sum(billed)",
                    f"{total} != {paid[root_id]}",
                )
