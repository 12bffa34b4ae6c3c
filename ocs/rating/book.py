"""The tariff book: tariff plans as frozen, read-only values, built once by ``ocs.rating.load``.

Theory of operation: a plan answers three questions for ``ocs.rating.rate``. Which service is
this (service context, then Service-Identifier or Rating-Group)? Which destination zone and time
band apply (zone set by longest prefix, bands by local time in the plan's time zone)? Which
``balance.types.Tariff`` does that service charge in that zone and band? Every answer is a
table lookup here: all parsing, validation and price conversion happened at load time, so a
``Tariff`` is already built for every (service, zone, band) and rating cannot meet a bad value.

A plan, and each of its services, may also say what the network does when the balance runs
out (``FinalUnitPolicy``: RFC 4006 section 8.34 Final-Unit-Indication); what a level leaves
unsaid comes from the level above (service, then plan, then the server's ``[final_unit]``).

Service contexts are compared by their ``service-context@domain`` core: TS 32.299 clause 7.1.12
allows "extensions".MNC.MCC."Release". in front of it (``8.32251@3gpp.org``), which names the
same service specific document, so both the configuration keys and the request's value are
reduced to the core before they meet.

Versions: a plan may change at effective dates (``[[plans.X.versions]]``). Each version is a
whole ``Plan`` (built by the loader from the one before and the version's changes), and a
``PlanTimeline`` holds them in order. ``PlanTimeline.at(moment)`` answers which version was in
force: the first version from the beginning of time, each later one from its
``effective_from`` (an instant, UTC) until the next. The timeline remembers the window
[start, next start) of the version it last returned, so on the hot path, where time only moves
forward, selecting is one comparison pair (O(1) amortised); only a moment outside that window
costs a binary search over the versions.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import IntEnum, StrEnum
from zoneinfo import ZoneInfo

from balance.types import Tariff, Unit

THREE_GPP_DOMAIN = "3gpp.org"

# TS 32.299 clause 7.1.12 (Service-Context-Id): the service specific documents of 3GPP, named by
# the number of the TS that specifies them, and the unit each one counts.
PS_CONTEXT = "32251@3gpp.org"  # TS 32.251: PS domain (Gy), octets
IMS_CONTEXT = "32260@3gpp.org"  # TS 32.260: IMS (Ro), seconds; also used by fixed-line softswitches
SMS_CONTEXT = "32274@3gpp.org"  # TS 32.274: SMS (Ro), events
KNOWN_CONTEXT_UNITS: Mapping[str, Unit] = {
    PS_CONTEXT: Unit.OCTETS,
    IMS_CONTEXT: Unit.SECONDS,
    SMS_CONTEXT: Unit.EVENTS,
}

# ISO 4217 numeric codes for Currency-Code (RFC 4006 section 8.11) of the currencies a plan may
# price in: the tariff loader refuses any other, so every price can be told in Diameter.
CURRENCY_NUMBERS: Mapping[str, int] = {
    "EUR": 978,
    "USD": 840,
    "GBP": 826,
    "CHF": 756,
    "SEK": 752,
    "NOK": 578,
    "DKK": 208,
    "PLN": 985,
}

UNZONED = ""  # the zone key of a service whose price does not depend on a destination (data)


class ServiceKind(StrEnum):
    VOICE = "voice"  # seconds, priced per minute with charging increments, zoned
    DATA = "data"  # octets, priced per ``per_octets`` (e.g. per MB), rounded to blocks
    SMS = "sms"  # events, priced per message, zoned


UNIT_OF_KIND: Mapping[ServiceKind, Unit] = {
    ServiceKind.VOICE: Unit.SECONDS,
    ServiceKind.DATA: Unit.OCTETS,
    ServiceKind.SMS: Unit.EVENTS,
}


def normalise_context_id(service_context_id: str) -> str:
    """``"10.262.01.8.32251@3GPP.org"`` -> ``"32251@3gpp.org"``; other domains only lower the domain.

    The 3GPP prefix labels (TS 32.299 clause 7.1.12) are dropped only for ``@3gpp.org``: a
    private context such as ``prepaid.v2@operator.example`` keeps its dots (RFC 4006 section
    8.42 lets the allocating domain choose any token).
    """
    text = service_context_id.strip()
    local_part, at_sign, domain = text.rpartition("@")
    if not at_sign:
        return text
    domain = domain.lower()
    if domain == THREE_GPP_DOMAIN:
        local_part = local_part.rsplit(".", 1)[-1]
    return f"{local_part}@{domain}"


# Final-Unit-Action names (RFC 4006 section 8.35), as the tariff file and [final_unit] write them.
FINAL_UNIT_ACTIONS = ("TERMINATE", "REDIRECT", "RESTRICT_ACCESS")


class RedirectAddressType(IntEnum):
    """Redirect-Address-Type, RFC 4006 section 8.38."""

    IPV4_ADDRESS = 0
    IPV6_ADDRESS = 1
    URL = 2
    SIP_URI = 3


@dataclass(frozen=True, slots=True)
class RedirectServer:
    """Redirect-Server (RFC 4006 section 8.37): where REDIRECT sends the subscriber."""

    address_type: RedirectAddressType
    address: str  # Redirect-Server-Address, section 8.39


@dataclass(frozen=True, slots=True)
class Restriction:
    """What RESTRICT_ACCESS (and a REDIRECT that lets more through) still allows: IPFilterRules
    (Restriction-Filter-Rule, RFC 4006 section 8.36) and named filter lists the network element
    holds (Filter-Id, RFC 7155 section 4.4.7). Both are replaced together by a lower level."""

    filter_rules: tuple[str, ...]
    filter_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FinalUnitPolicy:
    """What a plan or a service says about the final units; None: the level above decides.

    ``action`` applies to an active account's last grant, ``suspended_action`` to an account
    suspended for non-payment (immediate graceful service termination, RFC 8506 section 5.6).
    """

    action: str | None = None
    suspended_action: str | None = None
    redirect: RedirectServer | None = None
    restriction: Restriction | None = None

    def over(self, below: FinalUnitPolicy) -> FinalUnitPolicy:
        """This policy where it speaks, ``below`` where it is silent."""
        return FinalUnitPolicy(
            action=self.action if self.action is not None else below.action,
            suspended_action=self.suspended_action if self.suspended_action is not None else below.suspended_action,
            redirect=self.redirect if self.redirect is not None else below.redirect,
            restriction=self.restriction if self.restriction is not None else below.restriction,
        )


SILENT = FinalUnitPolicy()


@dataclass(frozen=True, slots=True)
class ServiceRate:
    """One service of a plan with a ready ``Tariff`` per zone and band.

    ``tariffs[zone][band]``; an unzoned service (data) has the single zone key ``UNZONED``.
    """

    name: str
    kind: ServiceKind
    description: str
    tariffs: Mapping[str, Mapping[str, Tariff]]
    final_unit: FinalUnitPolicy = SILENT  # the service's own override of its plan's

    @property
    def unit(self) -> Unit:
        return UNIT_OF_KIND[self.kind]

    @property
    def zoned(self) -> bool:
        return self.kind is not ServiceKind.DATA


@dataclass(frozen=True, slots=True)
class ContextRule:
    """How one service context picks a service: Service-Identifier first, then Rating-Group.

    ``default_service`` is used when Rating-Group is absent or 0 and not listed explicitly.
    Identifiers are Unsigned32 (RFC 4006 sections 8.28 and 8.29).
    """

    context_id: str
    default_service: str | None
    rating_groups: Mapping[int, str]
    service_identifiers: Mapping[int, str]


@dataclass(frozen=True, slots=True)
class BandWindow:
    """A time band on some weekdays (0 Monday .. 6 Sunday), minutes of the local day, end exclusive."""

    name: str
    days: frozenset[int]
    start_minute: int
    end_minute: int


@dataclass(frozen=True, slots=True)
class ZoneSet:
    """Destination zones: prefixes of normalised (international, digits only) numbers."""

    name: str
    default_zone: str
    zones: tuple[str, ...]
    prefixes: Mapping[str, str]  # prefix -> zone; a prefix belongs to one zone only
    longest_prefix: int

    def zone_for(self, number: str) -> tuple[str, str]:
        """(zone, matched prefix): the longest listed prefix of ``number``, else the default zone."""
        if number.isascii() and number.isdigit():
            for length in range(min(len(number), self.longest_prefix), 0, -1):
                zone = self.prefixes.get(number[:length])
                if zone is not None:
                    return zone, number[:length]
        return self.default_zone, ""


@dataclass(frozen=True, slots=True)
class Numbering:
    """How dialled numbers become international digits (the plan's home numbering plan).

    ``international_prefix`` is stripped (``0049...`` -> ``49...``); ``national_prefix`` (the
    trunk prefix, ``0`` in most of Europe) is replaced by ``country_code`` (``030...`` ->
    ``4930...``). An empty ``national_prefix`` disables the national rule.
    """

    country_code: str
    national_prefix: str
    international_prefix: str


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    description: str
    currency: str
    time_zone: ZoneInfo
    numbering: Numbering
    zone_set: ZoneSet | None  # None only when the plan has no zoned service
    default_band: str  # the band of every moment no window covers
    band_names: tuple[str, ...]
    windows_by_day: tuple[tuple[BandWindow, ...], ...]  # index 0 Monday .. 6 Sunday
    holidays: frozenset[date]  # local dates rated like a Sunday
    contexts: Mapping[str, ContextRule]  # by normalised service context id
    services: Mapping[str, ServiceRate]
    final_unit: FinalUnitPolicy = SILENT
    version: int = 1  # 1: as the plan is first written; 2, 3, ...: its [[versions]] in order
    effective_from: datetime | None = None  # aware, UTC; None: from the beginning of time
    # The local minutes of the day at which the band may change, sorted: where a window starts or
    # ends, and midnight. Derived from windows_by_day once, for the lookahead of every grant
    # (ocs.rating.rate.band_change).
    boundary_minutes: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        windows = [window for day in self.windows_by_day for window in day]
        minutes = {0} | {window.start_minute % 1440 for window in windows} | {w.end_minute % 1440 for w in windows}
        object.__setattr__(self, "boundary_minutes", tuple(sorted(minutes)))

    @property
    def version_text(self) -> str:
        """``"version 1"`` or ``"version 2 from 2026-07-01 00:00 Europe/Berlin"``, for explanations."""
        if self.effective_from is None:
            return f"version {self.version}"
        local = self.effective_from.astimezone(self.time_zone)
        return f"version {self.version} from {local:%Y-%m-%d %H:%M} {self.time_zone.key}"


_END_OF_TIME = datetime.max.replace(tzinfo=UTC)
_BEGINNING_OF_TIME = datetime.min.replace(tzinfo=UTC)


@dataclass(slots=True)
class PlanTimeline:
    """The versions of one plan in order of ``effective_from`` (the first from the beginning of time).

    ``at`` caches the window of the version it last returned (compare=False: a cache, not data).
    Asyncio runs one ``at`` at a time, and each cache field is written before it is trusted.
    """

    versions: tuple[Plan, ...]
    _starts: tuple[datetime, ...] = field(init=False, repr=False, compare=False)
    _window: tuple[datetime, datetime, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.versions or self.versions[0].effective_from is not None:
            raise ValueError("a timeline starts with a version in force from the beginning of time")
        starts = [_BEGINNING_OF_TIME]
        for plan in self.versions[1:]:
            if plan.effective_from is None or plan.effective_from <= starts[-1]:
                raise ValueError(f"plan {plan.name}: versions must have increasing effective_from dates")
            starts.append(plan.effective_from)
        self._starts = tuple(starts)
        self._window = (_BEGINNING_OF_TIME, self._end_of(0), 0)

    @property
    def first(self) -> Plan:
        return self.versions[0]

    def _end_of(self, index: int) -> datetime:
        return self._starts[index + 1] if index + 1 < len(self._starts) else _END_OF_TIME

    def at(self, moment: datetime) -> tuple[Plan, datetime | None]:
        """(the version in force at ``moment`` (aware), when the next version starts or None)."""
        start, end, index = self._window
        if not start <= moment < end:
            index = bisect_right(self._starts, moment) - 1
            start, end = self._starts[index], self._end_of(index)
            self._window = (start, end, index)
        return self.versions[index], (None if end is _END_OF_TIME else end)

    def next_after(self, plan: Plan) -> Plan | None:
        """The version after ``plan`` (one of this timeline's), or None for the last."""
        return self.versions[plan.version] if plan.version < len(self.versions) else None


@dataclass(frozen=True, slots=True)
class TariffBook:
    """The plans of one tariff file.

    ``plans``: each plan's first version (in force from the beginning of time); what does not
    change between versions (name, currency, time zone, zone set, services and their units) can
    be read there. ``timelines``: every version of each plan, for rating at a moment.
    """

    source: str  # the file the book was loaded from, for messages
    plans: Mapping[str, Plan]
    zone_sets: Mapping[str, ZoneSet]
    timelines: Mapping[str, PlanTimeline] = field(default_factory=dict)

    def plan_at(self, name: str, moment: datetime) -> tuple[Plan, datetime | None] | None:
        """The version of plan ``name`` in force at ``moment`` (naive = UTC) and the next change, or None."""
        timeline = self.timelines.get(name)
        if timeline is None:
            plan = self.plans.get(name)
            return None if plan is None else (plan, None)
        return timeline.at(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))

    def all_versions(self) -> tuple[Plan, ...]:
        """Every version of every plan (the first when a plan has no timeline)."""
        return tuple(
            plan
            for name, first in self.plans.items()
            for plan in (self.timelines[name].versions if name in self.timelines else (first,))
        )
