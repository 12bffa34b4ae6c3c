"""The Redis key schema: every key the engine uses, documented once, built only here.

Theory of operation: all keys of one customer hierarchy carry the hash tag ``{<root>}``, the
root account id (a company's id for its children, an individual's own id), so every Lua call
touches one slot and runs unchanged on Redis Cluster. Scripts get every key in KEYS and build
none. Field names are short because they are stored once per account and per session.

``{R}:a:<account>`` hash, one per account:
    cur currency, pay prepaid|postpaid, st status, lim credit limit, par parent id, cap child cap;
    counters (RULES.md) cr credits, db debits, cm committed, hd held, lh limit held,
    ub unbilled, pu pool used; bl billed, d1..d4 pool drawn per ancestor level, fl main floor
    (RULES.md "The billing cycle"; absent until first written); per bucket ``q:<id>`` amount and
    ``m:<id>`` "kind|valid_from|valid_until|priority|service,service"; ``B:<bundle id>`` the
    id of a bundle's allowance bucket (renew_bundle).
``{R}:s:<session>`` hash, one per session:
    a account id, n last request number applied, r its result (the reply string),
    c "1" once closed; ``g:<service key>`` one live reservation (``service_key`` below: the
    rating group, or "<rating group>/<service identifier>"). Its expiry is its score in
    ``{R}:x``. Versions before 2026-12-03 also kept it as a field x and their expire.lua reads
    that field: their sessions work here (x is ignored), but rolling back to such a version while
    sessions written by this one are open fails their expiry, so drain open sessions first.
    A closed session is a tombstone with a key expiry of the tombstone lifetime (the store's
    ``tombstone_seconds``, DEFAULT_TOMBSTONE_SECONDS below).
``{R}:x`` sorted set: open sessions by expiry (epoch seconds, written by every charge that
    leaves the session open), member "<account>|<session>".
``{R}:o`` list: the outbox, usage records (JSON) written with their debit, read and trimmed by
    the spool writer once they are committed to SQLite. A record's id is
    "<session>|<request number>|<service key>".
``{R}:r:<account>`` hash: the account's refunds of one day (the day the limit counts in, as its
    caller names it): d the day, s micros refunded that day; expires two days after the last.
``{R}:c:<account>`` set: the account's children (written by provision.lua with the child, so a
    company node's descendants are listed level by level, at most MAX_HIERARCHY_LEVELS - 1
    SMEMBERS, without scanning the keyspace). Accounts provisioned by versions before 2027-01
    are not in it.
``{R}:k`` hash: idempotency keys, kept for the life of the hierarchy, each "<prefix><account>:<id>":
    top-ups "t:", adjustments "j:", keyed new buckets "b:", rentals "n:", usage cuts "u:" (a cut
    must never apply twice, however late a bill run is resumed or run again: RULES.md "cut"),
    bundle renewals "w:".
``ar:<account>`` string "<root> <parent>": which hierarchy an account belongs to (no hash tag;
    read once per account and cached by the store).
``id:<kind>:<value>`` string: the account of a subscriber identity (kind e164, imsi, sip, nai,
    private: RFC 4006 Subscription-Id-Type), cached by the server.
``pf:<account>`` hash: the subscriber profile (tariff plan, customer type, name, identities).
``ocs:outbox:{w<k>.<n>}`` set, one of ``WORK_SHARDS``: roots whose outbox may hold records (the
    spool writer's work list), each root in the shard ``work_shard`` names.
``ocs:sessions:{w<k>.<n>}`` sorted set, one of ``WORK_SHARDS``: roots with open sessions, scored
    by when to look at them next (the session supervisor's work list), sharded the same way.
    Both were one key each (``ocs:outbox``, ``ocs:sessions``: ``LEGACY_OUTBOX_ROOTS``,
    ``LEGACY_SESSION_ROOTS``) before 2027-02; the store moves what those hold into the shards
    once, at the server's startup rescan (balance/work_lists.py).

Work-list shards: a charge marks its hierarchy on the work lists with separate commands (a script
may touch one slot only, and a work list names many hierarchies). With one global key per list,
every charge that opens a session or writes a record would go to the one master holding it, and
that master would carry a share of every request. Shard ``k`` of ``WORK_SHARDS`` has a hash tag
(``w<k>.<n>``, ``n`` the first number that works) whose slot lies in the ``k``-th equal range of
the 16384 slots, and a root goes to the shard of its own slot's range: on a cluster whose masters
hold contiguous equal ranges (what ``redis-cli --cluster create`` makes), a hierarchy's marks go
to the master of its money, or a neighbour, and the marks spread over the masters exactly as the
hierarchies do. On a single Redis the shards are simply ``WORK_SHARDS`` keys; the readers (spool
writer, session supervision, rescans) walk all of them.
"""

from __future__ import annotations

import re
from functools import lru_cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

# How long a closed session stays as a tombstone, answering retransmissions of its last request
# with the stored answer (a duplicate, RFC 4006 section 5.7 and RFC 6733 section 5.5.4) instead
# of "unknown session", or, for an event, instead of charging it a second time. The window to
# cover is the clients': a Diameter node tells a duplicate by its End-to-End Identifier, which
# "MUST remain locally unique for a period of at least 4 minutes" (RFC 6733 section 3), and a
# client retransmits after Tx (RFC 4006 section 13, default 10 s) or after failover, once its
# watchdog has found the peer down (RFC 3539 section 3.4.1: about 2 x Tw, 60 s by default).
# 10 minutes covers the 4 and leaves room for a failover retransmission at their end. A
# tombstone costs about 260 bytes of Redis memory (used_memory over 10,000 tombstones with
# 3GPP-style Session-Ids; MEMORY USAGE says 184 for the hash alone), so tombstones take about
# 260 B x sessions closed per second x this lifetime: the soak of issue 17 (3,300 CCR/s) levelled
# near 0.85 GB with one hour; with 10 minutes, near a sixth of that. Too short a lifetime never
# costs money twice for a session's updates (a late one finds the session gone: "unknown
# session"), but an event sent again after it is charged again. The server's setting:
# quota.tombstone_seconds.
DEFAULT_TOMBSTONE_SECONDS = 600

# Enough shards for the marks to spread evenly over 32 masters; each pass of the spool writer and
# of session supervision reads every shard (one pipelined command each), so not many more.
WORK_SHARDS = 32
LEGACY_OUTBOX_ROOTS = "ocs:outbox"
LEGACY_SESSION_ROOTS = "ocs:sessions"


def _shard_tags() -> tuple[str, ...]:
    """The hash tag of each shard: ``w<k>.<n>`` with the first ``n`` whose slot is in range ``k``."""
    width = REDIS_CLUSTER_HASH_SLOTS // WORK_SHARDS
    tags = []
    for shard in range(WORK_SHARDS):
        number = 0
        while key_slot(f"w{shard}.{number}".encode()) // width != shard:
            number += 1
        tags.append(f"w{shard}.{number}")
    return tuple(tags)


_SHARD_TAGS = _shard_tags()
OUTBOX_ROOTS_SHARDS: tuple[str, ...] = tuple(f"ocs:outbox:{{{tag}}}" for tag in _SHARD_TAGS)
SESSION_ROOTS_SHARDS: tuple[str, ...] = tuple(f"ocs:sessions:{{{tag}}}" for tag in _SHARD_TAGS)


@lru_cache(maxsize=65_536)
def work_shard(root: str) -> int:
    """The work-list shard of a hierarchy: the range of its root's slot (module docstring)."""
    return key_slot(root.encode()) * WORK_SHARDS // REDIS_CLUSTER_HASH_SLOTS


def outbox_roots_key(root: str) -> str:
    return OUTBOX_ROOTS_SHARDS[work_shard(root)]


def session_roots_key(root: str) -> str:
    return SESSION_ROOTS_SHARDS[work_shard(root)]


# Account ids name Redis keys and zset members ("<account>|<session>"): keep them plain.
ACCOUNT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def is_valid_account_id(account_id: str) -> bool:
    return ACCOUNT_ID_PATTERN.match(account_id) is not None


def service_key(rating_group: int, service_identifier: int | None) -> str:
    """What names one service's quota inside a session (its ``g:`` field) and in a usage record's
    id: the rating group, or "<rating group>/<service identifier>" when the MSCC names both.

    TS 32.299 clause 7.1.9 (Multiple-Services-Credit-Control) lets a client manage quota per
    Rating-Group or per Rating-Group and Service-Identifier; two MSCCs of one Rating-Group with
    different Service-Identifiers are two quotas. charge.lua builds the same text from its ARGV.
    """
    if service_identifier is None:
        return str(rating_group)
    return f"{rating_group}/{service_identifier}"


def account_key(root: str, account_id: str) -> str:
    return f"{{{root}}}:a:{account_id}"


def session_key(root: str, session_id: str) -> str:
    return f"{{{root}}}:s:{session_id}"


def expiry_key(root: str) -> str:
    return f"{{{root}}}:x"


def outbox_key(root: str) -> str:
    return f"{{{root}}}:o"


def refund_day_key(root: str, account_id: str) -> str:
    return f"{{{root}}}:r:{account_id}"


def children_key(root: str, account_id: str) -> str:
    return f"{{{root}}}:c:{account_id}"


def idempotency_key(root: str) -> str:
    return f"{{{root}}}:k"


def account_root_key(account_id: str) -> str:
    return f"ar:{account_id}"


def identity_key(kind: str, value: str) -> str:
    return f"id:{kind}:{value}"


def profile_key(account_id: str) -> str:
    return f"pf:{account_id}"
