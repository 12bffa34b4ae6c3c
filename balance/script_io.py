"""What the store sends to the money engine's scripts and reads back: the flat ARGV of items,
buckets and tariffs, the charge reply's words, usage records from the outbox, and the shapes of
Redis replies the store looks into. Pure functions, no Redis: ``balance.store`` calls them.

A usage record is read for every charge that used units (the spool writer drains the outbox), so
its JSON goes straight to the json module's C scanner (``json.loads`` adds two regular
expression matches and a Python call or two around it) and its unit and payment type are looked
up in tables instead of calling the enums (a Python-level ``EnumType.__call__`` each).
"""

from __future__ import annotations

import functools
import json
import json.scanner
from collections.abc import Sequence
from typing import Any, TypeVar

from balance import keys
from balance.callers import Reply
from balance.errors import BalanceScriptError
from balance.types import (
    Bucket,
    ChargeItem,
    ChargeResult,
    ItemResult,
    Outcome,
    PaymentType,
    PoolDraw,
    Tariff,
    Unit,
    UsageRecord,
)

_Member = TypeVar("_Member", Unit, PaymentType)


def reply_text(reply: Reply) -> str:
    if not isinstance(reply, str):
        raise BalanceScriptError(f"unexpected reply {reply!r}")
    return reply


# Outcome by its text: a dict lookup, where ``Outcome(text)`` goes through the enum machinery
# (parsing runs once per charge; bench/balance.py measures the charge path).
_OUTCOMES: dict[str, Outcome] = {outcome.value: outcome for outcome in Outcome}


def parse_charge_reply(reply: str) -> ChargeResult:
    """Parse the charge.lua / refund.lua reply (format in charge.lua's header)."""
    return charge_result(reply.split(" "))


def charge_result(words: list[str]) -> ChargeResult:
    outcomes = _OUTCOMES
    items: list[ItemResult] = []
    count = int(words[5])
    # Seven fields per item, in ItemResult's field order: rating group, outcome, granted units,
    # committed units, committed micros, final, reserved micros. A reply stored (for replays)
    # before items carried their reserved micros has six; such sessions and tombstones outlive a
    # script upgrade by up to the tombstone lifetime, and their replays report 0 reserved.
    width = 7 if len(words) == 6 + 7 * count else 6
    for base in range(6, 6 + width * count, width):
        items.append(
            ItemResult(
                int(words[base]),
                outcomes[words[base + 1]],
                int(words[base + 2]),
                int(words[base + 3]),
                int(words[base + 4]),
                words[base + 5] == "1",
                int(words[base + 6]) if width == 7 else 0,
            )
        )
    # outcome, items, replayed, balance_micros, opened
    return ChargeResult(outcomes[words[1]], tuple(items), words[0] == "1", int(words[2]), words[3] == "1")


def bucket_arguments(bucket: Bucket) -> list[str]:
    return [
        str(bucket.bucket_id),
        bucket.kind.value,
        str(bucket.amount),
        ",".join(bucket.services),
        str(bucket.valid_from),
        str(bucket.valid_until),
        str(bucket.priority),
    ]


def item_arguments(item: ChargeItem) -> list[str]:
    identifier, change, split = item.service_identifier, item.tariff_change, item.used_split
    return [
        str(item.rating_group),
        str(identifier) if identifier is not None else "",
        item.service,
        item.unit.value,
        "all" if item.commit_reserved else str(item.used_units),
        str(item.requested_units),
        "1" if item.release else "0",
        tariff_text(item.tariff),
        f"{change.at_seconds} {change.after_price_micros}" if change is not None else "",
        f"{split.before_units} {split.after_units} {split.indeterminate_units}" if split is not None else "",
    ]


@functools.lru_cache(maxsize=4096)
def tariff_text(tariff: Tariff) -> str:
    """A tariff as charge.lua reads it: "price_micros per_units block_units first_units"."""
    return f"{tariff.price_micros} {tariff.per_units} {tariff.block_units} {tariff.first_units}"


def json_session_id(session_id: str) -> str:
    """ARGV[10] of charge.lua: the session id as the body of a JSON string, or "" when that is
    the session id itself (no quote, backslash or control character: nearly always)."""
    if '"' not in session_id and "\\" not in session_id and session_id.isprintable():
        return ""
    body = json.dumps(session_id, ensure_ascii=False)[1:-1]
    return "" if body == session_id else body


def roots_of(names: Sequence[str], suffix: str) -> list[str]:
    """The hierarchies of ``{root}<suffix>`` key names; a name that only looks like one (a
    Session-Id ending in ``}:x``, say) is skipped."""
    roots = [name[1 : -len("}" + suffix)] for name in names if name.startswith("{") and name.endswith("}" + suffix)]
    return [root for root in roots if keys.is_valid_account_id(root)]


def first_score(reply: object) -> str | None:
    """The score of ``ZRANGE key 0 0 WITHSCORES``: a flat ``[member, score]`` (RESP2) or
    ``[[member, score]]`` (redis-py's RESP3 shape); None for an empty set."""
    if isinstance(reply, list) and len(reply) == 1 and isinstance(reply[0], (list, tuple)):
        reply = list(reply[0])
    if isinstance(reply, list) and len(reply) == 2:
        return str(reply[1])
    return None


# What json.loads runs underneath: the C scanner over a default decoder's settings (typeshed
# types its context as a scanner; CPython's JSONDecoder makes its own ``scan_once`` this way).
_SCAN_JSON = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_UNITS = {unit.value: unit for unit in Unit}
_PAYMENT_TYPES = {payment_type.value: payment_type for payment_type in PaymentType}


def _json_object(entry: str) -> dict[str, Any]:
    """``json.loads`` of a record: one JSON object, nothing before or after it."""
    try:
        data, end = _SCAN_JSON(entry, 0)
    except StopIteration as error:
        raise ValueError(f"a usage record is not JSON at character {error.value}: {entry[:80]!r}") from None
    if end != len(entry) or not isinstance(data, dict):
        raise ValueError(f"a usage record is not one JSON object: {entry[:80]!r}")
    return data


def _member(members: dict[str, _Member], value: object, name: str) -> _Member:
    found = members.get(value) if isinstance(value, str) else None
    if found is None:
        raise ValueError(f"{value!r} is not a valid {name}")
    return found


def usage_record(entry: str) -> UsageRecord:
    data = _json_object(entry)
    return UsageRecord(
        record_id=data["id"],
        account_id=data["account"],
        session_id=data["session"],
        request_number=int(data["number"]),
        rating_group=int(data["rating_group"]),
        service=data["service"],
        unit=_member(_UNITS, data["unit"], "Unit"),
        units=int(data["units"]),
        micros=int(data["micros"]),
        payment_type=_member(_PAYMENT_TYPES, data["payment"], "PaymentType"),
        at_seconds=int(data["at"]),
        # Records written before items carried a Service-Identifier have no such field.
        service_identifier=_optional_int(data.get("service_identifier")),
        # RULES.md "Where money came from": absent when it all came out of the account's own buckets.
        line_micros=int(data.get("line", 0)),
        pools=_pool_draws(data["pools"]) if "pools" in data else (),
    )


def _pool_draws(pools: list[dict[str, Any]]) -> tuple[PoolDraw, ...]:
    """A record's draws on pooled funds (RULES.md "Where money came from"); most records have
    none, and then no generator is made for them (mypyc's cost more than this test)."""
    return tuple(PoolDraw(int(pool["level"]), int(pool["bucket"]), int(pool["line"])) for pool in pools)


def _optional_int(value: object) -> int | None:
    return int(value) if isinstance(value, int) else None


def reply_strings(reply: Reply) -> list[str]:
    """Every string in a reply, however nested (FUNCTION LIST's shape differs by RESP version
    and, on a cluster, by node)."""
    if isinstance(reply, list):
        return [text for part in reply for text in reply_strings(part)]
    return [reply] if isinstance(reply, str) else []
