"""Tariff plan versions: ``[[plans.X.versions]]`` in the tariff file -> a ``PlanTimeline``.

Theory of operation: a plan as first written is version 1, in force from the beginning of
time, so a file without versions loads exactly as before. Each ``[[plans.X.versions]]`` entry
has an ``effective_from`` and the plan keys it changes; the version is the previous version's
table with those changes merged in (tables merge key by key, so ``services.voice.
price_per_minute.eu = "0.12"`` changes one price; a string, number or array replaces what was
there whole), then validated and built by the same code as version 1. A version therefore
cannot remove a service, a context or a zone, only change or add them.

What an account or a running session depends on cannot change: ``currency`` (the account's
money), ``time_zone`` (in which the dates of the file are read) and ``zone_set`` (the zones a
rated session was put in) are refused in a version. Nor can a service's ``kind`` (the unit a
session counts): the merged table keeps the old kind's keys, which the new kind refuses.

``effective_from`` is a TOML date or date-time: an offset date-time
(``2026-07-01T00:00:00+02:00`` or ``...Z``) is that instant; a local date-time
(``2026-07-01T00:00:00``) or a date (``2026-07-01``, its midnight) is read in the plan's
``time_zone``, as an operator announcing "new prices from 1 July" means. A local time that a
daylight-saving change skips or repeats is read as zoneinfo reads it (fold 0). Versions must be
in order, each later than the one before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from ocs.rating.book import Plan, PlanTimeline
from ocs.rating.load_text import Where, kind_of

FIXED_KEYS = frozenset({"currency", "time_zone", "zone_set"})
EFFECTIVE_FROM = "effective_from"

PlanBuilder = Callable[[Where, Mapping[str, object]], Plan]


def merged(base: Mapping[str, object], changes: Mapping[str, object]) -> dict[str, object]:
    """``base`` with ``changes`` merged in: tables key by key, anything else replaced whole."""
    result = dict(base)
    for key, value in changes.items():
        old = result.get(key)
        result[key] = merged(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return result


def effective_instant(where: Where, field: str, value: object, time_zone: ZoneInfo) -> datetime:
    """A TOML date or date-time as an aware UTC instant (local values in ``time_zone``)."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=time_zone)
        return moment.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(0), tzinfo=time_zone).astimezone(UTC)
    raise where.fail(
        field, f"{kind_of(value)} {value!r} is not a TOML date or date-time such as 2026-07-01 or 2026-07-01T00:00:00Z"
    )


def plan_timeline(
    where: Where, table: Mapping[str, object], version_keys: frozenset[str], build: PlanBuilder
) -> PlanTimeline:
    """Every version of one plan, built by ``build`` (which validates a whole plan table)."""
    raw_versions = table.get("versions", [])
    if not isinstance(raw_versions, list):
        raise where.fail("versions", f"must be an array of tables ([[plans.X.versions]]), not {kind_of(raw_versions)}")
    current = {key: value for key, value in table.items() if key != "versions"}
    first = build(where, current)
    plans = [first]
    allowed = (version_keys - FIXED_KEYS - {"versions"}) | {EFFECTIVE_FROM}
    for index, raw_version in enumerate(raw_versions):
        field = f"versions[{index}]"
        changes = where.table(raw_version, field)
        for key in sorted(FIXED_KEYS & changes.keys()):
            raise where.fail(f"{field}.{key}", "cannot change in a version (accounts and sessions depend on it)")
        where.keys(changes, field, allowed, frozenset({EFFECTIVE_FROM}))
        moment = effective_instant(where, f"{field}.{EFFECTIVE_FROM}", changes[EFFECTIVE_FROM], first.time_zone)
        previous = plans[-1]
        if previous.effective_from is not None and moment <= previous.effective_from:
            raise where.fail(f"{field}.{EFFECTIVE_FROM}", f"must be later than versions[{index - 1}]'s")
        current = merged(current, {key: value for key, value in changes.items() if key != EFFECTIVE_FROM})
        number = index + 2
        plan = build(where.at(f"{where.section} version {number} ({field})"), current)
        plans.append(replace(plan, version=number, effective_from=moment))
    return PlanTimeline(tuple(plans))
