"""The subscriber directory: which account an identity (MSISDN, IMSI, SIP URI) belongs to, and
the account's profile (tariff plan, customer type, name).

Theory of operation: each identity is one lookup key ``id:<kind>:<value>`` holding the account id,
and each account has one profile hash ``pf:<account>``. These keys carry no hash tag: they are
read one at a time (and cached by the server), never inside a charging script. Binding an
identity that belongs to another account is refused, so one identity names one account.

Writes (``register``) go through ``caller``; reads (``lookup``) through ``reader`` when given: the
server passes the store's pipelined charging client there, since a lookup sits on the path of a
CCR whose subscriber is not cached yet, where a redis-py call costs about ten times as much.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from balance import keys
from balance.callers import ScriptCaller, hash_fields
from balance.types import Outcome


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

    async def register(self, subscriber: Subscriber) -> Outcome:
        """Bind the identities and write the profile; ``invalid`` if an identity is taken."""
        if any(not identity.value or " " in identity.value for identity in subscriber.identities):
            return Outcome.INVALID
        for identity in subscriber.identities:
            key = keys.identity_key(identity.kind.value, identity.value)
            claimed = await self.caller.execute("SET", key, subscriber.account_id, "NX")
            if claimed is None and await self.caller.execute("GET", key) != subscriber.account_id:
                return Outcome.INVALID
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

    async def account_of(self, identity: Identity) -> str | None:
        found = await self.reader.execute("GET", keys.identity_key(identity.kind.value, identity.value))
        return found if isinstance(found, str) else None

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
