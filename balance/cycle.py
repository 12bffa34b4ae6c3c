"""The billing cycle's operations on the money engine: the usage cut, the prepaid rental debit and
the bundle renewal (RULES.md "The billing cycle"), each one atomic script call on Redis.

Theory of operation: like ``balance.store``, each function checks its input (a refusal names the
field in ``OperationResult.reason`` and changes nothing), finds the account's hierarchy through
the store (every key under the root's hash tag, so each call runs on Redis Cluster), sends the
script, and turns its reply into an ``OperationResult``. Each is idempotent by its id, kept in the
hierarchy's idempotency hash with the top-ups' and adjustments' (balance/keys.py): a repeat
answers ``replayed`` with what the first call applied. They run off the hot path, on the store's
``admin`` caller, and are safe to send again when a connection dies with the outcome unknown.

``cut_many`` is the bill run's bulk path for a page of cuts, with the same checks and script: it
reads each account's chain (root and ancestors) once for the page, level by level, every lookup
of a level sent together, into a dictionary that lives for the call only (so a run over a
hundred thousand lines does not grow the store's own caches), then sends every cut script at
once on the store's ``caller``: on the pipelined client (``balance.pipeline``) they leave in one
write and Redis answers them back to back, instead of three round trips a cut, each a future
without a task of its own (``PipelinedCaller.run_all``; an asyncio task a cut cost more than the
cut's own packing).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from balance import keys
from balance.callers import PipelinedCaller, Reply
from balance.script_io import reply_text
from balance.scripts import SCRIPTS, Operation, Script
from balance.types import (
    MAX_AMOUNT_MICROS,
    MAX_HIERARCHY_LEVELS,
    MAX_SERVICE_UNITS,
    MONETARY_KINDS,
    BucketKind,
    OperationResult,
    Outcome,
    PoolDraw,
    RentalPolicy,
)

if TYPE_CHECKING:
    from balance.callers import ScriptCaller
    from balance.store import BalanceStore


def _refused(reason: str) -> OperationResult:
    return OperationResult(Outcome.INVALID, reason=reason)


def _result(reply: str, applied_units: bool = False) -> OperationResult:
    """An ``OperationResult`` from "<outcome> <replayed> [<bucket id>] <applied> [<reason>]"."""
    words = reply.split(" ", 4 if applied_units else 3)
    outcome = Outcome(words[0])
    if outcome is Outcome.INVALID:
        return _refused(words[-1])
    if applied_units:
        return OperationResult(outcome, replayed=words[1] == "1", bucket_id=int(words[2]), applied_units=int(words[3]))
    return OperationResult(outcome, replayed=words[1] == "1", applied_micros=int(words[2]))


def cut_problem(line_micros: int, pools: Sequence[PoolDraw], depth: int) -> str | None:
    """What is wrong with a cut's amounts (``depth``: how many ancestors the account has), or None."""
    if not 0 <= line_micros <= MAX_AMOUNT_MICROS:
        return f"line_micros: {line_micros} is not within 0..{MAX_AMOUNT_MICROS}"
    levels = [pool.level for pool in pools]
    if len(set(levels)) != len(levels):
        return f"pools: a level is named twice in {levels}"
    for pool in pools:
        if not 1 <= pool.level <= depth:
            return f"pools: level {pool.level} is not an ancestor's (the account has {depth} above it)"
        for name, value in (("bucket_micros", pool.bucket_micros), ("line_micros", pool.line_micros)):
            if not 0 <= value <= MAX_AMOUNT_MICROS:
                return f"pools: level {pool.level} {name} {value} is not within 0..{MAX_AMOUNT_MICROS}"
    return None


async def cut(
    store: BalanceStore, account_id: str, cut_id: str, line_micros: int, pools: Sequence[PoolDraw] = ()
) -> OperationResult:
    """RULES.md "cut": the bill run invoiced ``line_micros`` of the account's usage drawn from its
    own credit line and, per ancestor level, what it drew from that ancestor's buckets and credit
    line (its usage records say it: ``UsageRecord.line_micros`` and ``pools``). Lowers the
    unbilled counters and the pool used of the caps on the way by exactly that."""
    found = await store.hierarchy(account_id)
    ancestors = await store.ancestors(account_id) if found is not None else None
    if found is None or ancestors is None:
        return OperationResult(Outcome.UNKNOWN_ACCOUNT)
    order = CutOrder(account_id, cut_id, line_micros, tuple(pools))
    return await _send_cut(store, order, found[0], ancestors, store.admin)


@dataclass(frozen=True, slots=True)
class CutOrder:
    """One cut of ``cut_many``: ``cut``'s arguments."""

    account_id: str
    cut_id: str
    line_micros: int
    pools: tuple[PoolDraw, ...] = ()


async def _send_cut(
    store: BalanceStore, order: CutOrder, root: str, ancestors: Sequence[str], caller: ScriptCaller
) -> OperationResult:
    call = _cut_call(order, root, ancestors)
    if isinstance(call, OperationResult):
        return call
    return _result(reply_text(await caller.run(SCRIPTS[Operation.CUT], *call)))


def _cut_call(order: CutOrder, root: str, ancestors: Sequence[str]) -> OperationResult | tuple[list[str], list[str]]:
    """The cut script's keys and arguments for ``order``, or the refusal of its input."""
    problem = cut_problem(order.line_micros, order.pools, len(ancestors))
    if problem is not None:
        return _refused(problem)
    if not order.cut_id:
        return _refused("cut_id: empty")
    arguments = [order.account_id, order.cut_id, " ".join(ancestors), str(order.line_micros)]
    for pool in sorted(order.pools, key=lambda pool: pool.level):
        arguments += [str(pool.level), str(pool.bucket_micros), str(pool.line_micros)]
    script_keys = [
        keys.account_key(root, order.account_id),
        keys.idempotency_key(root),
        *(keys.account_key(root, ancestor) for ancestor in ancestors),
    ]
    return script_keys, arguments


async def _chains(store: BalanceStore, account_ids: Sequence[str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """(root, ancestors parent first) of each known account of ``account_ids`` (the unknown ones
    are left out), read level by level with every lookup of a level sent at once."""
    links: dict[str, tuple[str, str] | None] = {}  # account: (root, parent or ""), None: unknown
    wanted = sorted({account for account in account_ids if keys.is_valid_account_id(account)})
    for _ in range(MAX_HIERARCHY_LEVELS):
        if not wanted:
            break
        replies = await _execute_all(store.caller, [("GET", keys.account_root_key(item)) for item in wanted])
        for account, reply in zip(wanted, replies, strict=True):
            if isinstance(reply, str):
                root, _, above = reply.partition(" ")
                links[account] = (root, above)
            else:
                links[account] = None
        wanted = sorted({link[1] for link in links.values() if link and link[1] and link[1] not in links})
    chains: dict[str, tuple[str, tuple[str, ...]]] = {}
    for account in account_ids:
        link = links.get(account)
        if link is None:
            continue
        chain: list[str] = []
        step: str | None = link[1]
        while step and len(chain) < MAX_HIERARCHY_LEVELS:
            chain.append(step)
            next_link = links.get(step)
            step = next_link[1] if next_link is not None else None  # None: a broken chain, as unknown
        if step is not None:
            chains[account] = (link[0], tuple(chain))
    return chains


async def cut_many(store: BalanceStore, orders: Sequence[CutOrder]) -> list[OperationResult]:
    """``cut`` of each order, answers in order (the module docstring: the chains read once, the
    scripts sent together on the store's ``caller``)."""
    chains = await _chains(store, [order.account_id for order in orders])
    answers: list[OperationResult | None] = []
    calls: list[tuple[list[str], list[str]]] = []
    for order in orders:
        found = chains.get(order.account_id)
        call = OperationResult(Outcome.UNKNOWN_ACCOUNT) if found is None else _cut_call(order, *found)
        if isinstance(call, OperationResult):
            answers.append(call)
        else:
            answers.append(None)  # the script's answer, below
            calls.append(call)
    replies = iter(await _run_all(store.caller, SCRIPTS[Operation.CUT], calls))
    return [answer if answer is not None else _result(reply_text(next(replies))) for answer in answers]


async def _run_all(
    caller: ScriptCaller, script: Script, calls: Sequence[tuple[Sequence[str], Sequence[str]]]
) -> list[Reply]:
    """The script once per (keys, args), together: with no task each on the pipelined caller."""
    if isinstance(caller, PipelinedCaller):
        return await caller.run_all(script, calls)
    return list(await asyncio.gather(*(caller.run(script, *call) for call in calls)))


async def _execute_all(caller: ScriptCaller, commands: Sequence[tuple[str, ...]]) -> list[Reply]:
    if isinstance(caller, PipelinedCaller):
        return await caller.execute_all(commands)
    return list(await asyncio.gather(*(caller.execute(*command) for command in commands)))


async def debit_rental(
    store: BalanceStore, account_id: str, rental_id: str, micros: int, policy: RentalPolicy
) -> OperationResult:
    """RULES.md "debit_rental": a prepaid rental out of the first main bucket (credit.lua, as a
    negative adjustment), refused or taken below 0 by ``policy`` when the bucket does not cover it."""
    if not 0 < micros <= MAX_AMOUNT_MICROS:
        return _refused(f"micros: {micros} is not within 1..{MAX_AMOUNT_MICROS}")
    if not rental_id:
        return _refused("rental_id: empty")
    found = await store.hierarchy(account_id)
    if found is None:
        return OperationResult(Outcome.UNKNOWN_ACCOUNT)
    root = found[0]
    arguments = [account_id, "rental", rental_id, str(-micros), BucketKind.MAIN.value, "", "0", "0", "0", policy.value]
    script_keys = [keys.account_key(root, account_id), keys.idempotency_key(root)]
    words = reply_text(await store.admin.run(SCRIPTS[Operation.CREDIT], script_keys, arguments)).split(" ")
    applied = -int(words[3]) if len(words) > 3 else None
    return OperationResult(Outcome(words[0]), replayed=words[1] == "1", bucket_id=int(words[2]), applied_micros=applied)


async def renew_bundle(
    store: BalanceStore,
    account_id: str,
    bundle_id: str,
    kind: BucketKind,
    units: int,
    services: Sequence[str],
    valid_until: int,
    rollover_cap_units: int,
    renewal_id: str,
) -> OperationResult:
    """RULES.md "renew_bundle": the bundle's allowance bucket gets ``units`` plus at most
    ``rollover_cap_units`` of what it still holds (0: no rollover), in place, so live holds on it
    stay valid; the first renewal makes the bucket."""
    if kind in MONETARY_KINDS:
        return _refused(f"kind: {kind.value} is money, a bundle holds seconds, octets or events")
    if not 0 <= units <= MAX_SERVICE_UNITS:
        return _refused(f"units: {units} is not within 0..{MAX_SERVICE_UNITS}")
    if not 0 <= rollover_cap_units <= MAX_SERVICE_UNITS:
        return _refused(f"rollover_cap_units: {rollover_cap_units} is not within 0..{MAX_SERVICE_UNITS}")
    if valid_until < 0:
        return _refused(f"valid_until: {valid_until} is negative")
    for name, value in (("bundle_id", bundle_id), ("renewal_id", renewal_id)):
        if not keys.is_valid_account_id(value):
            return _refused(f"{name}: {value!r} is not 1-64 letters, digits or ._:-")
    bad = [service for service in services if not service or "," in service or "|" in service]
    if bad:
        return _refused(f"services: {bad} may not be empty nor hold ',' or '|'")
    found = await store.hierarchy(account_id)
    if found is None:
        return OperationResult(Outcome.UNKNOWN_ACCOUNT)
    root = found[0]
    arguments = [
        account_id,
        bundle_id,
        kind.value,
        str(units),
        ",".join(services),
        str(valid_until),
        str(rollover_cap_units),
        renewal_id,
    ]
    script_keys = [keys.account_key(root, account_id), keys.idempotency_key(root)]
    reply = reply_text(await store.admin.run(SCRIPTS[Operation.BUNDLE], script_keys, arguments))
    return _result(reply, applied_units=True)
