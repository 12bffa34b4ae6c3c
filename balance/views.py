"""The read side: an account as it stands (``BalanceView``) from its hash and its sessions.

Theory of operation: the account hash is parsed here in the layout documented in
``balance.keys``; "available" comes from ``view.lua`` so that the drawing rules exist once, in Lua.
Live reservations are counted from the hierarchy's open sessions. Off the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

from balance import keys
from balance.callers import ScriptCaller, hash_fields
from balance.scripts import SCRIPTS, Operation
from balance.types import (
    MAX_HIERARCHY_LEVELS,
    Account,
    AccountStatus,
    BalanceView,
    Bucket,
    BucketKind,
    PaymentType,
)


def parse_bucket(bucket_id: int, amount: str, meta: str) -> Bucket:
    kind, valid_from, valid_until, priority, services = meta.split("|", 4)
    return Bucket(
        bucket_id=bucket_id,
        kind=BucketKind(kind),
        amount=int(amount),
        services=tuple(service for service in services.split(",") if service),
        valid_from=int(valid_from),
        valid_until=int(valid_until),
        priority=int(priority),
    )


def parse_account(account_id: str, fields: dict[str, str]) -> Account:
    buckets = [
        parse_bucket(int(name[2:]), fields.get(f"q:{name[2:]}", "0"), meta)
        for name, meta in fields.items()
        if name.startswith("m:")
    ]
    return Account(
        account_id=account_id,
        currency=fields["cur"],
        payment_type=PaymentType(fields["pay"]),
        status=AccountStatus(fields["st"]),
        credit_limit_micros=int(fields.get("lim", "0")),
        parent_id=fields.get("par", ""),
        child_cap_micros=int(fields.get("cap", "0")),
        buckets=tuple(sorted(buckets, key=lambda bucket: bucket.bucket_id)),
    )


async def count_reservations(caller: ScriptCaller, root: str, account_id: str) -> int:
    members = await caller.execute("ZRANGE", keys.expiry_key(root), "0", "-1")
    count = 0
    prefix = f"{account_id}|"
    for member in members if isinstance(members, list) else []:
        if str(member).startswith(prefix):
            fields = await caller.execute("HKEYS", keys.session_key(root, str(member)[len(prefix) :]))
            count += sum(1 for name in fields if str(name).startswith("g:")) if isinstance(fields, list) else 0
    return count


async def read_balance(
    caller: ScriptCaller, root: str, account_id: str, ancestors: Sequence[str], now_seconds: int
) -> BalanceView | None:
    """``ancestors``: the account's ancestors' ids, parent first, root last (view.lua's KEYS)."""
    account_key = keys.account_key(root, account_id)
    fields = hash_fields(await caller.execute("HGETALL", account_key))
    if not fields:
        return None
    ancestor_keys = [keys.account_key(root, ancestor) for ancestor in ancestors] or [account_key]
    available = await caller.run(
        SCRIPTS[Operation.VIEW], [account_key, *ancestor_keys], [account_id, " ".join(ancestors), str(now_seconds)]
    )

    def counter(name: str) -> int:
        return int(fields.get(name, "0"))

    return BalanceView(
        account=parse_account(account_id, fields),
        credits_micros=counter("cr"),
        debits_micros=counter("db"),
        committed_micros=counter("cm"),
        held_micros=counter("hd"),
        limit_held_micros=counter("lh"),
        unbilled_micros=counter("ub"),
        pool_used_micros=counter("pu"),
        available_micros=int(str(available or "0")),
        reservations=await count_reservations(caller, root, account_id),
        billed_micros=counter("bl"),
        pool_drawn_micros=tuple(counter(f"d{level}") for level in range(1, MAX_HIERARCHY_LEVELS)),
        main_floor_micros=counter("fl"),
    )
