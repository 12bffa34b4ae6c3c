"""The audit: RULES.md's invariants checked over every account, from what Redis holds.

Theory of operation: the audit lists every provisioned account (the ``ar:*`` lookups), reads each
account's counters and buckets, and checks, per account: credits - debits = money in buckets +
held (so opening + credits - commits = closing for any two points in time); nothing below its
floor; postpaid within its limit; a child within its cap; committed = the sum of its usage
records (given by the caller, who knows where records went: outbox, spool); and, once every
session has ended, nothing held and no open session left. Per hierarchy: committed = debits +
unbilled. Every violation is a finding naming the account; an empty report is a pass.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from balance import keys
from balance.store import BalanceStore
from balance.types import MONETARY_KINDS, AuditFinding, AuditReport, BalanceView, PaymentType


async def account_ids(store: BalanceStore) -> list[str]:
    """Every provisioned account id, from the ``ar:*`` lookups (off the hot path)."""
    prefix = keys.account_root_key("")
    return [name[len(prefix) :] for name in await store.admin.scan_keys(f"{prefix}*")]


def check_account(view: BalanceView, usage_micros: Mapping[str, int] | None, sessions_ended: bool) -> list[str]:
    """The per-account rules this view breaks, as text (empty when it keeps them all)."""
    account = view.account
    problems: list[str] = []
    money = sum(bucket.amount for bucket in account.buckets if bucket.kind in MONETARY_KINDS)
    if view.credits_micros - view.debits_micros != money + view.held_micros:
        problems.append(
            f"credits {view.credits_micros} - debits {view.debits_micros} != buckets {money} + held {view.held_micros}"
        )
    negative = [bucket.bucket_id for bucket in account.buckets if bucket.amount < 0]
    counters = {
        "held": view.held_micros,
        "limit_held": view.limit_held_micros,
        "unbilled": view.unbilled_micros,
        "pool_used": view.pool_used_micros,
    }
    if negative or any(value < 0 for value in counters.values()):
        problems.append(f"below floor: buckets {negative}, counters {counters}")
    if account.payment_type is PaymentType.POSTPAID and (
        view.unbilled_micros + view.limit_held_micros > account.credit_limit_micros
    ):
        problems.append(f"over credit limit {account.credit_limit_micros}")
    if account.parent_id and view.pool_used_micros > account.child_cap_micros:
        problems.append(f"pool used {view.pool_used_micros} over cap {account.child_cap_micros}")
    if usage_micros is not None and usage_micros.get(account.account_id, 0) != view.committed_micros:
        problems.append(f"committed {view.committed_micros} != usage records {usage_micros.get(account.account_id, 0)}")
    if sessions_ended and (view.held_micros or view.limit_held_micros or view.reservations):
        problems.append(
            f"still reserved after all sessions ended: held {view.held_micros}, "
            f"limit_held {view.limit_held_micros}, reservations {view.reservations}"
        )
    return problems


async def audit(
    store: BalanceStore,
    *,
    now_seconds: int,
    usage_micros: Mapping[str, int] | None = None,
    sessions_ended: bool = False,
) -> AuditReport:
    """Check every account. ``usage_micros``: the sum of usage records per account, if known."""
    report = AuditReport()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # root -> committed, debits, unbilled
    for account_id in await account_ids(store):
        view = await store.balance(account_id, now_seconds)
        if view is None:
            report.findings.append(AuditFinding(account_id, "exists", "lookup without an account"))
            continue
        report.accounts += 1
        for problem in check_account(view, usage_micros, sessions_ended):
            report.findings.append(AuditFinding(account_id, "account", problem))
        total = totals[await store.root_of(account_id)]
        total[0] += view.committed_micros
        total[1] += view.debits_micros
        total[2] += view.unbilled_micros
    for root, (committed, debits, unbilled) in sorted(totals.items()):
        if committed != debits + unbilled:
            report.findings.append(
                AuditFinding(root, "hierarchy", f"committed {committed} != debits {debits} + unbilled {unbilled}")
            )
    return report
