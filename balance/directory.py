"""The subscriber directory: which account an identity (MSISDN, IMSI, SIP URI) belongs to, and
the account's profile (tariff plan, customer type, name).

Theory of operation: each identity is one lookup key ``id:<kind>:<value>`` holding the account id,
and each account has one profile hash ``pf:<account>``. These keys carry no hash tag: they are
read one at a time (and cached by the server), never inside a charging script. Binding an
identity that belongs to another account is refused, so one identity names one account.

Quarantine: when an account is terminated its identities are not freed at once (a number given
to someone else days later would receive the old owner's calls and messages). ``quarantine``
rewrites each lookup key to ``~<until> <account>``, which no account id can spell (keys.py's
pattern starts alphanumeric): ``account_of`` answers None for it (the network gets 5030, as for
any unknown identity), and ``register`` refuses it to any other account until ``<until>``. The
quarantine ends by a check at registration time (claim.lua), not by a periodic job: nothing has
to run for an identity to become free, nothing can free it early, and the check and the new
binding are one script, so two registrations racing for it cannot both win. A registration binds
all its identities or none: when one is taken, the ones it bound are released again. Redis key expiry
would also free it, but by Redis's own clock, which tests and replays cannot set.

Writes (``register``) go through ``caller``; reads (``lookup``) through ``reader`` when given: the
server passes the store's pipelined charging client there, since a lookup sits on the path of a
CCR whose subscriber is not cached yet, where a redis-py call costs about ten times as much.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from balance import keys
from balance.callers import ScriptCaller, hash_fields
from balance.scripts import SCRIPTS, Operation
from balance.types import Outcome

QUARANTINE_MARK = "~"  # the first character of a quarantined lookup key's value


class IdentityKind(StrEnum):
    """RFC 4006 section 8.47 Subscription-Id-Type, by name."""

    E164 = "e164"
    IMSI = "imsi"
    SIP_URI = "sip"
    NAI = "nai"
    PRIVATE = "private"


@dataclass(frozen=True, slots=True)
class Identity:
    kind: IdentityKind
    value: str


@dataclass(frozen=True, slots=True)
class Subscriber:
    account_id: str
    plan: str
    customer_type: str  # e.g. "mobile" or "fixed"
    name: str
    identities: tuple[Identity, ...]


def _encode_identities(identities: Sequence[Identity]) -> str:
    return " ".join(f"{identity.kind.value}:{identity.value}" for identity in identities)


def _decode_identities(text: str) -> tuple[Identity, ...]:
    found = []
    for word in text.split():
        kind, _, value = word.partition(":")
        found.append(Identity(IdentityKind(kind), value))
    return tuple(found)


class Directory:
    def __init__(self, caller: ScriptCaller, *, reader: ScriptCaller | None = None) -> None:
        self.caller = caller
        self.reader = reader or caller

    async def register(self, subscriber: Subscriber, *, now_seconds: int | None = None) -> Outcome:
        """Bind the identities and write the profile; ``invalid`` if an identity is taken (by
        another account, or in quarantine after ``now_seconds``, by default the wall clock)."""
        if any(not identity.value or " " in identity.value for identity in subscriber.identities):
            return Outcome.INVALID
        now = str(int(time.time() if now_seconds is None else now_seconds))
        bound_now: list[str] = []
        for identity in subscriber.identities:
            key = keys.identity_key(identity.kind.value, identity.value)
            before = await self.caller.execute("GET", key)
            if await self.caller.run(SCRIPTS[Operation.CLAIM], [key], [subscriber.account_id, now]) != "ok":
                await self._unbind(subscriber.account_id, bound_now)
                return Outcome.INVALID
            if before != subscriber.account_id:
                bound_now.append(key)
        await self.caller.execute(
            "HSET",
            keys.profile_key(subscriber.account_id),
            "plan",
            subscriber.plan,
            "type",
            subscriber.customer_type,
            "name",
            subscriber.name,
            "ids",
            _encode_identities(subscriber.identities),
        )
        return Outcome.OK

    async def _unbind(self, account_id: str, identity_keys: Sequence[str]) -> None:
        """Undo the claims of a registration that failed part way, so it binds all its identities
        or none (one identity bound to an account without a profile leads the network nowhere
        useful, and holds the number from its next owner). As in ``quarantine``, the GET before
        the DEL races with nothing: no other account can bind a key this account holds."""
        for key in identity_keys:
            if await self.caller.execute("GET", key) == account_id:
                await self.caller.execute("DEL", key)

    async def account_of(self, identity: Identity) -> str | None:
        """The account the identity names; None when it names none (unknown, or in quarantine)."""
        found = await self.reader.execute("GET", keys.identity_key(identity.kind.value, identity.value))
        return found if isinstance(found, str) and not found.startswith(QUARANTINE_MARK) else None

    async def quarantined_until(self, identity: Identity) -> int | None:
        """When the identity's quarantine ends (epoch seconds), None when it is in none."""
        found = await self.caller.execute("GET", keys.identity_key(identity.kind.value, identity.value))
        if not isinstance(found, str) or not found.startswith(QUARANTINE_MARK):
            return None
        return int(found[1:].partition(" ")[0])

    async def quarantine(self, account_id: str, identities: Sequence[Identity], until_seconds: int) -> int:
        """Hold each identity still bound to ``account_id`` in quarantine until ``until_seconds``;
        returns how many. Only the owner can be rewritten, so the GET before the SET races with
        nothing: no other account can bind an identity this account holds."""
        held = 0
        for identity in identities:
            key = keys.identity_key(identity.kind.value, identity.value)
            if await self.caller.execute("GET", key) == account_id:
                await self.caller.execute("SET", key, f"{QUARANTINE_MARK}{until_seconds} {account_id}")
                held += 1
        return held

    async def profile(self, account_id: str) -> Subscriber | None:
        fields = hash_fields(await self.reader.execute("HGETALL", keys.profile_key(account_id)))
        if not fields:
            return None
        return Subscriber(
            account_id=account_id,
            plan=fields.get("plan", ""),
            customer_type=fields.get("type", ""),
            name=fields.get("name", ""),
            identities=_decode_identities(fields.get("ids", "")),
        )

    async def lookup(self, identity: Identity) -> Subscriber | None:
        account_id = await self.account_of(identity)
        return None if account_id is None else await self.profile(account_id)
