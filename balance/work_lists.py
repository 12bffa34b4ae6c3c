"""The work lists: which hierarchies the spool writer and session supervision must look at.

Theory of operation: after a charge that opened a session or wrote usage records, the store marks
the hierarchy: its root goes into the sessions list (a sorted set, scored by when to look next)
and the outbox list (a set). Both are split into ``keys.WORK_SHARDS`` shards under their own
hash tags, a root always in the shard ``keys.work_shard`` names, so that on a Redis Cluster no
one master takes the marks of every charge (balance/keys.py "Work-list shards"). Writers touch
one shard per mark; readers walk every shard, each shard read by one command, all of them sent
at once (on the pipelined client they leave in one write per master).

The marks are idempotent (ZADD LT, SADD), so a replayed charge marks again at no cost. The
functions take the caller to use, since the store's callers are wrapped (ocs/metrics.py) after
the store is built.

The lists were one key each before 2027-02 (``keys.LEGACY_OUTBOX_ROOTS``,
``keys.LEGACY_SESSION_ROOTS``). ``move_legacy_lists``, run by the store's rescan (once at the
server's startup), moves every root they hold into its shard, then removes exactly the roots it
moved: run again, or by two servers at once, it moves nothing twice and loses nothing (a root
added to an old list meanwhile, by a server of the old version, stays for the next run).
"""

from __future__ import annotations

import asyncio

from balance import keys
from balance.callers import Reply, ScriptCaller
from balance.script_io import first_score, reply_strings


async def mark(caller: ScriptCaller, root: str, opened: bool, recorded: bool, expiry_seconds: int) -> None:
    """The hierarchy on the supervisor's list (a session opened, looked at by its expiry at the
    latest) and on the spool writer's (usage records written)."""
    if opened:
        await caller.execute("ZADD", keys.session_roots_key(root), "LT", str(expiry_seconds), root)
    if recorded:
        await caller.execute("SADD", keys.outbox_roots_key(root), root)


async def roots_with_records(caller: ScriptCaller) -> list[str]:
    """Every hierarchy on the spool writer's list, sorted."""
    replies = await asyncio.gather(*(caller.execute("SMEMBERS", key) for key in keys.OUTBOX_ROOTS_SHARDS))
    return sorted({root for reply in replies for root in reply_strings(reply)})


async def roots_due(caller: ScriptCaller, now_seconds: int) -> list[str]:
    """Every hierarchy on the supervisor's list due for a look at ``now_seconds``, sorted."""
    now = str(now_seconds)
    replies = await asyncio.gather(
        *(caller.execute("ZRANGEBYSCORE", key, "-inf", now) for key in keys.SESSION_ROOTS_SHARDS)
    )
    return sorted({root for reply in replies for root in reply_strings(reply)})


async def unwatch(caller: ScriptCaller, root: str) -> None:
    await caller.execute("ZREM", keys.session_roots_key(root), root)


async def watch_earliest_session(caller: ScriptCaller, root: str) -> bool:
    """Put the hierarchy on the supervisor's list at its earliest session deadline, if any."""
    earliest = first_score(await caller.execute("ZRANGE", keys.expiry_key(root), "0", "0", "WITHSCORES"))
    if earliest is None:
        return False
    await caller.execute("ZADD", keys.session_roots_key(root), "LT", earliest, root)
    return True


async def list_if_records_wait(caller: ScriptCaller, root: str) -> bool:
    """Put the hierarchy on the spool writer's list if its outbox holds records."""
    if await caller.execute("LLEN", keys.outbox_key(root)) == 0:
        return False
    await caller.execute("SADD", keys.outbox_roots_key(root), root)
    return True


async def unlist_outbox(caller: ScriptCaller, root: str) -> None:
    """Take a hierarchy with an empty outbox off the spool writer's list; a record that arrives
    meanwhile puts it back (the second look closes the race).

    The two steps are one unit even when the caller is cancelled (a writer stopped at shutdown or
    at a duty's handover): cancelled between them, the hierarchy would stay off the list with
    records in its outbox until the next rescan, and a final drain would miss them. So the steps
    run as a task of their own, which a cancellation waits for before it goes on."""
    steps = asyncio.ensure_future(_unlist_then_look_again(caller, root))
    try:
        await asyncio.shield(steps)
    except asyncio.CancelledError:
        await steps
        raise


async def _unlist_then_look_again(caller: ScriptCaller, root: str) -> None:
    await caller.execute("SREM", keys.outbox_roots_key(root), root)
    await list_if_records_wait(caller, root)


async def move_legacy_lists(caller: ScriptCaller) -> int:
    """Move the roots of the pre-shard lists into their shards (module docstring); returns how
    many roots were moved."""
    moved = 0
    scored = _member_scores(await caller.execute("ZRANGE", keys.LEGACY_SESSION_ROOTS, "0", "-1", "WITHSCORES"))
    for root, score in scored:
        await caller.execute("ZADD", keys.session_roots_key(root), "LT", score, root)
        await caller.execute("ZREM", keys.LEGACY_SESSION_ROOTS, root)
        moved += 1
    for root in reply_strings(await caller.execute("SMEMBERS", keys.LEGACY_OUTBOX_ROOTS)):
        await caller.execute("SADD", keys.outbox_roots_key(root), root)
        await caller.execute("SREM", keys.LEGACY_OUTBOX_ROOTS, root)
        moved += 1
    return moved


def _member_scores(reply: Reply) -> list[tuple[str, str]]:
    """``ZRANGE ... WITHSCORES`` as (member, score): a flat RESP2 list or redis-py's pairs."""
    if not isinstance(reply, list):
        return []
    if reply and all(isinstance(pair, list) for pair in reply):
        return [(str(pair[0]), str(pair[1])) for pair in reply if isinstance(pair, list) and len(pair) == 2]
    return [(str(reply[index]), str(reply[index + 1])) for index in range(0, len(reply) - 1, 2)]
