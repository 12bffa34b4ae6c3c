"""The audit: RULES.md's invariants checked over every account, from what Redis holds.

Theory of operation: the audit lists every provisioned account (the ``ar:*`` lookups), reads each
account's counters and buckets, and checks, per account: credits - debits = money in buckets +
held (so opening + credits - commits = closing for any two points in time); nothing below its
floor; postpaid within its limit; a child within its cap; committed = the sum of its usage
records (given by the caller, who knows where records went: outbox, spool); and, once every
session has ended, nothing held and no open session left. Per hierarchy: committed = debits +
unbilled + billed (a usage cut moves unbilled micros to billed: RULES.md "cut"). Every violation
is a finding naming the account; an empty report is a pass.

A credit limit or cap lowered below the current use is allowed (RULES.md invariants 3 and 4: then
nothing new is granted), so the audit applies the reference model's tolerance
(balance/model_invariants.py): a use above its ceiling is a finding only when it grew since the
previous audit (``previous``, that audit's report); otherwise, and with no previous audit to
compare with, it is a warning. The audit does not check ``pool_used`` against the holds on the
pools (it cannot see them); the model does (invariant 4).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from balance import keys
from balance.store import BalanceStore
from balance.types import MONETARY_KINDS, AuditFinding, AuditReport, BalanceView, BucketKind, PaymentType


async def account_ids(store: BalanceStore) -> list[str]:
    """Every provisioned account id, from the ``ar:*`` lookups (off the hot path)."""
    prefix = keys.account_root_key("")
    return [name[len(prefix) :] for name in await store.admin.scan_keys(f"{prefix}*")]


def _over_ceiling(
    what: str, used: int, ceiling: int, seen: int | None, problems: list[str], warnings: list[str]
) -> None:
    """``used`` above ``ceiling``: a finding if it grew since it was ``seen`` (the previous
    audit), else a warning (a lowered ceiling, allowed: RULES.md invariants 3 and 4)."""
    if used <= ceiling:
        return
    if seen is not None and used > seen:
        problems.append(f"{what} {used} over {ceiling}, grown from {seen} since the previous audit")
    else:
        warnings.append(f"{what} {used} over {ceiling} (lowered), not grown since the previous audit")


def check_account(
    view: BalanceView,
    usage_micros: Mapping[str, int] | None,
    sessions_ended: bool,
    warnings: list[str] | None = None,
    seen: tuple[int, int] | None = None,
) -> list[str]:
    """The per-account rules this view breaks, as text (empty when it keeps them all); a use over a
    lowered limit or cap that has not grown since ``seen`` (the previous audit's
    ``usage_seen``) goes to ``warnings`` instead."""
    account = view.account
    problems: list[str] = []
    warnings = warnings if warnings is not None else []
    money = sum(bucket.amount for bucket in account.buckets if bucket.kind in MONETARY_KINDS)
    if view.credits_micros - view.debits_micros != money + view.held_micros:
        problems.append(
            f"credits {view.credits_micros} - debits {view.debits_micros} != buckets {money} + held {view.held_micros}"
        )
    # RULES.md "debit_rental": a main bucket's floor is minus the account's main floor.
    negative = [
        bucket.bucket_id
        for bucket in account.buckets
        if bucket.amount < (-view.main_floor_micros if bucket.kind is BucketKind.MAIN else 0)
    ]
    counters = {
        "held": view.held_micros,
        "limit_held": view.limit_held_micros,
        "unbilled": view.unbilled_micros,
        "billed": view.billed_micros,
        "pool_used": view.pool_used_micros,
        "pool_drawn": min(view.pool_drawn_micros, default=0),
    }
    if negative or any(value < 0 for value in counters.values()):
        problems.append(f"below floor: buckets {negative}, counters {counters}")
    line_seen, pool_seen = seen if seen is not None else (None, None)
    if account.payment_type is PaymentType.POSTPAID:
        line_usage = view.unbilled_micros + view.limit_held_micros
        _over_ceiling("credit line use", line_usage, account.credit_limit_micros, line_seen, problems, warnings)
    if account.parent_id:
        _over_ceiling("pool used", view.pool_used_micros, account.child_cap_micros, pool_seen, problems, warnings)
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
    previous: AuditReport | None = None,
) -> AuditReport:
    """Check every account. ``usage_micros``: the sum of usage records per account, if known;
    ``previous``: the last audit's report, against which a use over a lowered ceiling must not
    have grown."""
    report = AuditReport()
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # root -> committed, debits, unbilled + billed
    for account_id in await account_ids(store):
        view = await store.balance(account_id, now_seconds)
        if view is None:
            report.findings.append(AuditFinding(account_id, "exists", "lookup without an account"))
            continue
        report.accounts += 1
        warnings: list[str] = []
        seen = previous.usage_seen.get(account_id) if previous is not None else None
        for problem in check_account(view, usage_micros, sessions_ended, warnings, seen):
            report.findings.append(AuditFinding(account_id, "account", problem))
        report.warnings.extend(AuditFinding(account_id, "account", warning) for warning in warnings)
        report.usage_seen[account_id] = (view.unbilled_micros + view.limit_held_micros, view.pool_used_micros)
        total = totals[await store.root_of(account_id)]
        total[0] += view.committed_micros
        total[1] += view.debits_micros
        total[2] += view.unbilled_micros + view.billed_micros
    for root, (committed, debits, unbilled) in sorted(totals.items()):
        # RULES.md "cut": a cut moves micros from unbilled to billed.
        if committed != debits + unbilled:
            report.findings.append(
                AuditFinding(
                    root, "hierarchy", f"committed {committed} != debits {debits} + unbilled and billed {unbilled}"
                )
            )
    return report
