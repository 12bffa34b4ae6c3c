"""The reference model of the billing cycle's operations: the usage cut, the prepaid rental debit
and the bundle renewal (RULES.md "The billing cycle"), on the model's ``Ledger``.

Theory of operation: ``CycleModel`` keeps the idempotency keys of these operations and applies
each to the ledger exactly as RULES.md says, checking first and changing only once every check
passed (a refusal changes nothing and keeps no id), in the order balance/cycle.py and the Lua
scripts check: the caller's input, the account, the id (a replay), then the rules. The
``ReferenceModel`` calls it and asserts the invariants after each change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from balance.cycle import cut_problem
from balance.keys import is_valid_account_id
from balance.model_ledger import Ledger
from balance.types import (
    MAX_AMOUNT_MICROS,
    MAX_SERVICE_UNITS,
    MONETARY_KINDS,
    AccountStatus,
    Bucket,
    BucketKind,
    OperationResult,
    Outcome,
    PaymentType,
    PoolDraw,
    RentalPolicy,
)


def _invalid(reason: str) -> OperationResult:
    return OperationResult(Outcome.INVALID, reason=reason)


class CycleModel:
    __slots__ = ("_cuts", "_ledger", "_renewals", "_rentals")

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._cuts: dict[tuple[str, str], OperationResult] = {}
        self._rentals: dict[tuple[str, str], OperationResult] = {}
        self._renewals: dict[tuple[str, str], OperationResult] = {}

    def cut(self, account_id: str, cut_id: str, line_micros: int, pools: Sequence[PoolDraw]) -> OperationResult:
        accounts = self._ledger.accounts
        if account_id not in accounts:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        ancestors = self._ledger.ancestors(account_id)
        problem = cut_problem(line_micros, pools, len(ancestors))
        if problem is not None or not cut_id:
            return _invalid(problem or "cut_id: empty")
        key = (account_id, cut_id)
        if key in self._cuts:
            return replace(self._cuts[key], replayed=True)
        account = accounts[account_id]
        lines = [(account_id, line_micros)] if line_micros else []
        lines += [(ancestors[pool.level - 1], pool.line_micros) for pool in pools if pool.line_micros]
        for payer_id, micros in lines:
            payer = accounts[payer_id]
            if payer.account.payment_type is not PaymentType.POSTPAID or micros > payer.unbilled:
                return _invalid(f"line_micros: {micros} is not within account {payer_id}'s unbilled {payer.unbilled}")
        for pool in pools:
            if pool.bucket_micros + pool.line_micros > account.pool_drawn.get(pool.level, 0):
                return _invalid(f"pools: level {pool.level} cuts more than account {account_id} committed from it")
        for payer_id, micros in lines:
            accounts[payer_id].unbilled -= micros
            accounts[payer_id].billed += micros
        path = [account_id, *ancestors]
        for pool in pools:
            amount = pool.bucket_micros + pool.line_micros
            account.pool_drawn[pool.level] -= amount
            for node in path[: pool.level]:
                accounts[node].pool_used -= amount
                accounts[node].pool_committed -= amount
        total = line_micros + sum(pool.bucket_micros + pool.line_micros for pool in pools)
        self._cuts[key] = result = OperationResult(Outcome.OK, applied_micros=total)
        return result

    def debit_rental(self, account_id: str, rental_id: str, micros: int, policy: RentalPolicy) -> OperationResult:
        if not 0 < micros <= MAX_AMOUNT_MICROS or not rental_id:
            return _invalid("micros or rental_id")
        state = self._ledger.accounts.get(account_id)
        if state is None:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        key = (account_id, rental_id)
        if key in self._rentals:
            return replace(self._rentals[key], replayed=True)
        if state.account.status is AccountStatus.TERMINATED:
            return OperationResult(Outcome.ACCOUNT_BLOCKED)
        first_main = self._ledger.first_bucket(account_id, BucketKind.MAIN)
        before = first_main.amount if first_main is not None else 0
        if policy is RentalPolicy.ALLOW_NEGATIVE:
            if before < 0:
                return OperationResult(Outcome.INSUFFICIENT_FUNDS)
            if before < micros:
                state.main_floor = micros
        elif first_main is None or before < micros:
            return OperationResult(Outcome.INSUFFICIENT_FUNDS)
        bucket_id = self._ledger.credit(account_id, BucketKind.MAIN, -micros)
        self._rentals[key] = result = OperationResult(Outcome.OK, bucket_id=bucket_id, applied_micros=micros)
        return result

    def renew_bundle(
        self,
        account_id: str,
        bundle_id: str,
        kind: BucketKind,
        units: int,
        services: Sequence[str],
        valid_until: int,
        rollover_cap_units: int,
        renewal_id: str,
    ) -> OperationResult:
        if (
            kind in MONETARY_KINDS
            or not 0 <= units <= MAX_SERVICE_UNITS
            or not 0 <= rollover_cap_units <= MAX_SERVICE_UNITS
            or valid_until < 0
            or not is_valid_account_id(bundle_id)
            or not is_valid_account_id(renewal_id)
            or any(not service or "," in service or "|" in service for service in services)
        ):
            return _invalid("kind, units, rollover_cap_units, valid_until, bundle_id, renewal_id or services")
        state = self._ledger.accounts.get(account_id)
        if state is None:
            return OperationResult(Outcome.UNKNOWN_ACCOUNT)
        key = (account_id, renewal_id)
        if key in self._renewals:
            return replace(self._renewals[key], replayed=True)
        bucket_id = state.bundles.get(bundle_id)
        amount = units
        if bucket_id is not None:
            old = state.buckets[bucket_id]
            if old.kind is not kind:
                return _invalid(f"kind: bundle {bundle_id} holds {old.kind.value}")
            amount += min(old.amount, rollover_cap_units)  # held units are not in it: they stay held
        else:
            bucket_id = state.bundles[bundle_id] = self._ledger.next_bucket_id(account_id)
        state.buckets[bucket_id] = Bucket(bucket_id, kind, amount, tuple(services), valid_until=valid_until)
        self._renewals[key] = result = OperationResult(Outcome.OK, bucket_id=bucket_id, applied_units=amount)
        return result
