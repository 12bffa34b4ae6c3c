"""Rating: a credit-control request's context -> the ``balance.types.Tariff`` the engine charges.

Theory of operation: ``rate`` is a pure function of a loaded ``TariffBook`` (``ocs.rating.load``),
a plan name and a ``RatingInput``; it reads no clock, touches no balance and never raises. It
walks four steps, each a lookup in tables built at load time:

1. Service: the plan's rule for the request's Service-Context-Id (reduced to its
   ``service-context@domain`` core), then the Service-Identifier if the plan maps it (the
   finer key, RFC 4006 section 8.28), else the Rating-Group (section 8.29); an absent
   Rating-Group, or 0 when not listed, takes the context's default service.
2. Zone (voice, SMS): the called party is normalised to international digits (``tel:`` and
   ``sip:`` URIs, visual separators, ``+``, the international prefix, the plan's national
   prefix rule) and the longest prefix of the plan's zone set names the zone; no match, or no
   number at all, falls to the zone set's default zone.
3. Band: the moment in the plan's time zone (zoneinfo, so daylight saving is followed); a
   holiday is rated like a Sunday; the band window covering the local minute, else the
   plan's default band.
4. Tariff: ready in the plan for (service, zone, band).
5. Tariff change (only when the request asks to look ahead, for a grant): the first moment
   within ``lookahead_seconds`` at which the band changes to one whose tariff for the same
   service and zone differs (RFC 4006 section 5.1.1, Tariff-Time-Change). Bands change only at
   the local minutes where a window starts or ends and at local midnight (weekday, holiday), so
   those instants are the only ones looked at, in order, each rated by step 3.

Versions: step 0 picks the version of the plan in force at the request's moment
(``TariffBook.plan_at``: one comparison on the hot path, ``ocs.rating.book.PlanTimeline``), so
each request is priced by the version in force when it happened (the CCR's Event-Timestamp
when plausible, else the server's clock: ``ocs.charging.ccr.request_time``). A grant whose
lookahead reaches the next version's start gets that start as its tariff change when the
service's tariff differs there (a version change is a tariff change like a band's, RFC 4006
section 5.1.1), so usage after it is priced at the new version; when the tariff is the same
there, the new version's band changes are looked for in the rest of the lookahead.

What cannot be rated is a ``RatingFailure`` naming the AVP at fault, so the server can answer
5031 DIAMETER_RATING_FAILED with that AVP in Failed-AVP (RFC 4006 section 9.1). ``explain``
adds the cost of N units with the engine's own arithmetic (``balance.tariff``), for
``ocs rate`` and PRICE_ENQUIRY.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import unquote

from balance.tariff import charged, cost
from balance.types import MICROS_PER_UNIT, Tariff, Unit
from balance.value_type import value_type
from ocs.rating.book import (
    UNZONED,
    ContextRule,
    Numbering,
    Plan,
    ServiceKind,
    ServiceRate,
    TariffBook,
    normalise_context_id,
)
from ocs.rating.load import load_book, parse_book
from ocs.rating.load_text import TariffError

__all__ = [
    "BandChange",
    "MemoizedRating",
    "Quote",
    "Rated",
    "RatingFailure",
    "RatingInput",
    "TariffBook",
    "TariffError",
    "band_at",
    "explain",
    "format_money",
    "load_book",
    "normalise_number",
    "parse_book",
    "rate",
]

SERVICE_CONTEXT_AVP = "Service-Context-Id"
RATING_GROUP_AVP = "Rating-Group"
SERVICE_IDENTIFIER_AVP = "Service-Identifier"
EVENT_TIMESTAMP_AVP = "Event-Timestamp"

# RFC 3966 section 3 "visual-separator" ("-" / "." / "(" / ")"), plus the spaces and slashes
# people type; none of them is a digit of the number.
_VISUAL_SEPARATORS = str.maketrans("", "", " -.()/")
_DAY_ABBREVIATIONS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_SUNDAY = 6
# A local minute this much before another of the same day is earlier in absolute time too,
# whatever daylight-saving change lies between them (the largest in the tz database is 2 hours).
_DST_MARGIN_MINUTES = 180
_UNIT_WORDS = {Unit.SECONDS: "s", Unit.OCTETS: "octets", Unit.EVENTS: "events"}


@value_type
class RatingInput:
    """What rating needs from one credit-control request (one MSCC of it).

    ``called_party``: Called-Party-Address (voice) or Recipient-Address (SMS), as received.
    ``at``: when the usage happens (Event-Timestamp, or the arrival time); a naive datetime is
    taken as UTC, as Diameter Time values are (RFC 6733 section 4.3.1).
    ``lookahead_seconds``: how long a grant made now may be used (its Validity-Time); within it
    the first change of tariff is looked for. 0: none (a query, an event, a commit).
    """

    service_context: str
    rating_group: int | None
    service_identifier: int | None
    called_party: str | None
    at: datetime
    lookahead_seconds: int = 0


@value_type
class BandChange:
    """The tariff switches at ``at`` (UTC) to ``tariff`` of ``band`` (RFC 4006 section 5.1.1)."""

    at: datetime
    band: str
    tariff: Tariff


@value_type
class Rated:
    """The rating of one request: the tariff, and the facts that chose it.

    ``explanation`` is built from these facts on demand (the server rates every request and
    explains only a few); ``local_time`` is the moment in the plan's time zone.
    """

    plan: str
    currency: str
    service: str  # the service name, which scopes unit allowances (balance bucket ``services``)
    kind: ServiceKind
    unit: Unit
    tariff: Tariff
    zone: str | None  # None for a service not priced by destination (data)
    band: str
    destination: str | None  # the normalised called number, when there was one
    context_id: str  # the service context as the plan knows it (its 3GPP prefix labels dropped)
    selected_by: str  # "Rating-Group 20", "Service-Identifier 1001", "default service", ...
    called_party: str | None  # as received
    matched_prefix: str  # the zone set prefix that chose the zone; "" for the default zone
    local_time: datetime
    time_zone: str
    holiday: bool
    change: BandChange | None = None  # within RatingInput.lookahead_seconds
    version: int = 1  # the plan version in force at the moment rated (ocs.rating.book.Plan.version)
    version_text: str = "version 1"  # "version 2 from 2026-07-01 00:00 Europe/Berlin"

    @property
    def explanation(self) -> str:
        where = ""
        if self.zone is not None and self.called_party:
            matched = f"prefix {self.matched_prefix}" if self.matched_prefix else "no prefix matched"
            where = f"; to {self.called_party!r} -> {self.destination!r}, {matched} -> zone {self.zone}"
        elif self.zone is not None:
            where = f"; no called party -> zone {self.zone}"
        day = _DAY_ABBREVIATIONS[self.local_time.weekday()]
        moment = f"{day} {self.local_time:%Y-%m-%d %H:%M} {self.time_zone}{' (holiday)' if self.holiday else ''}"
        return (
            f"plan {self.plan} ({self.version_text}): {self.context_id}, {self.selected_by} -> "
            f"service {self.service}{where}; "
            f"{moment} -> band {self.band}; {_price_text(self.kind, self.tariff, self.currency)}"
        )


@dataclass(frozen=True, slots=True)
class RatingFailure:
    reason: str
    avp_name: str | None  # the AVP for Failed-AVP; None when the fault is ours (no such plan)


@value_type
class Quote:
    """What ``units`` of the rated service would cost, by ``balance.tariff`` (nothing is charged)."""

    rated: Rated
    units: int
    charged_units: int
    cost_micros: int
    text: str


def normalise_number(raw: str, numbering: Numbering) -> str:
    """A called party as international digits: ``tel:+49 30 1234`` and ``030 1234`` -> ``49301234``.

    Something that is not a telephone number (``sip:alice@example.com``) comes back as its
    user part, which matches no prefix and so rates in the default zone.
    """
    text = raw.strip()
    lowered = text[:5].lower()
    if lowered.startswith(("sip:", "sips:")):
        # RFC 3261 section 19.1.1: the user part precedes "@"; it may be percent-encoded.
        text = unquote(text.split(":", 1)[1].split("@", 1)[0])
    elif lowered.startswith("tel:"):
        text = text[4:]
    text = text.split(";", 1)[0].translate(_VISUAL_SEPARATORS)  # RFC 3966: ";phone-context=..."
    if text.startswith("+"):
        return text[1:]
    if text.startswith(numbering.international_prefix):
        return text[len(numbering.international_prefix) :]
    if numbering.national_prefix and text.startswith(numbering.national_prefix):
        return numbering.country_code + text[len(numbering.national_prefix) :]
    return text


def band_at(plan: Plan, at: datetime) -> tuple[str, datetime]:
    """(band, local time): the plan's band at ``at`` (naive = UTC). Raises OverflowError near year 1/9999."""
    moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    local = moment.astimezone(plan.time_zone)
    day = _SUNDAY if local.date() in plan.holidays else local.weekday()
    minute = local.hour * 60 + local.minute
    for window in plan.windows_by_day[day]:
        if window.start_minute <= minute < window.end_minute:
            return window.name, local
    return plan.default_band, local


def _boundaries(plan: Plan, after: datetime) -> Iterator[datetime]:
    """Every instant after ``after`` (aware) at which the plan's band may change, in order: the
    local minutes where a window starts or ends, and local midnight, day after day. A local
    time that a daylight-saving change skips or repeats is read as zoneinfo reads it (fold 0).
    On the first day the minutes more than ``_DST_MARGIN_MINUTES`` before ``after``'s local
    minute are not looked at: they lie before it whatever the offset change between them."""
    minutes = plan.boundary_minutes
    local_after = after.astimezone(plan.time_zone)
    day: date = local_after.date()
    first = bisect_left(minutes, local_after.hour * 60 + local_after.minute - _DST_MARGIN_MINUTES)
    while True:
        for index in range(first, len(minutes)):
            minute = minutes[index]
            local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=plan.time_zone)
            if local > after:
                yield local.astimezone(UTC)
        first = 0
        day += timedelta(days=1)


def band_change(
    plan: Plan, service: ServiceRate, zone: str, tariff: Tariff, at: datetime, within_seconds: int
) -> BandChange | None:
    """The first moment in ``(at, at + within_seconds]`` at which the service's tariff in
    ``zone`` stops being ``tariff`` (a band with another price), or None."""
    moment = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    end = moment + timedelta(seconds=within_seconds)
    for instant in _boundaries(plan, moment):
        if instant > end:
            return None
        band, _ = band_at(plan, instant)
        following = service.tariffs[zone][band]
        if following != tariff:
            return BandChange(instant, band, following)
    return None  # not reached: the boundaries go on for ever


def version_change(
    following: Plan | None, service_name: str, zone: str, tariff: Tariff, start: datetime, end: datetime
) -> BandChange | None:
    """The first change of ``tariff`` in ``[start, end]`` when version ``following`` starts at
    ``start``: its own tariff there if that differs, else its first band change before ``end``.
    A version keeps every service and zone of the one before (``ocs.rating.versions``)."""
    if following is None:
        return None
    service = following.services[service_name]
    band, _ = band_at(following, start)
    there = service.tariffs[zone][band]
    if there != tariff:
        return BandChange(start.astimezone(UTC), band, there)
    return band_change(following, service, zone, tariff, start, int((end - start).total_seconds()))


def _select_service(rule: ContextRule, request: RatingInput) -> tuple[str, str] | RatingFailure:
    """(service, why) by Service-Identifier, Rating-Group, then the context default."""
    identifier, group = request.service_identifier, request.rating_group
    if identifier is not None and identifier in rule.service_identifiers:
        return rule.service_identifiers[identifier], f"Service-Identifier {identifier}"
    if group is not None and group in rule.rating_groups:
        return rule.rating_groups[group], f"Rating-Group {group}"
    if (group is None or group == 0) and rule.default_service is not None:
        return rule.default_service, "default service" if group is None else "Rating-Group 0 (default)"
    if group is not None:
        return RatingFailure(f"Rating-Group {group} is not rated in {rule.context_id}", RATING_GROUP_AVP)
    if identifier is not None:
        reason = f"Service-Identifier {identifier} is not rated in {rule.context_id}"
        return RatingFailure(reason, SERVICE_IDENTIFIER_AVP)
    return RatingFailure(f"{rule.context_id} needs a Rating-Group (no default service)", RATING_GROUP_AVP)


def rate(book: TariffBook, plan_name: str, request: RatingInput) -> Rated | RatingFailure:
    """The tariff for ``request`` under ``plan_name``, or why there is none."""
    moment = request.at if request.at.tzinfo is not None else request.at.replace(tzinfo=UTC)
    found = book.plan_at(plan_name, moment)
    if found is None:
        return RatingFailure(f"no tariff plan {plan_name!r} in {book.source}", None)
    plan, next_version_at = found
    context_id = normalise_context_id(request.service_context)
    rule = plan.contexts.get(context_id)
    if rule is None:
        reason = f"plan {plan.name} does not rate service context {request.service_context!r}"
        return RatingFailure(reason, SERVICE_CONTEXT_AVP)
    selected = _select_service(rule, request)
    if isinstance(selected, RatingFailure):
        return selected
    service_name, selected_by = selected
    service = plan.services[service_name]
    try:
        band, local = band_at(plan, request.at)
    except OverflowError:
        return RatingFailure(f"time {request.at!r} is out of range", EVENT_TIMESTAMP_AVP)

    zone: str | None = None
    destination: str | None = None
    prefix = ""
    if service.zoned and plan.zone_set is not None:  # the loader ensures a zoned service has one
        if request.called_party:
            destination = normalise_number(request.called_party, plan.numbering)
            zone, prefix = plan.zone_set.zone_for(destination)
        else:
            zone = plan.zone_set.default_zone
    zone_key = UNZONED if zone is None else zone
    tariff = service.tariffs[zone_key][band]
    change = None
    if request.lookahead_seconds > 0:
        try:
            change = band_change(plan, service, zone_key, tariff, moment, request.lookahead_seconds)
            end = moment + timedelta(seconds=request.lookahead_seconds)
            if (
                next_version_at is not None
                and next_version_at <= end
                and (change is None or next_version_at < change.at)
            ):
                change = version_change(
                    book.timelines[plan_name].next_after(plan), service_name, zone_key, tariff, next_version_at, end
                )
        except OverflowError:
            return RatingFailure(f"time {request.at!r} is out of range", EVENT_TIMESTAMP_AVP)
    return Rated(
        plan=plan.name,
        currency=plan.currency,
        service=service_name,
        kind=service.kind,
        unit=service.unit,
        tariff=tariff,
        zone=zone,
        band=band,
        destination=destination,
        context_id=context_id,
        selected_by=selected_by,
        called_party=request.called_party,
        matched_prefix=prefix,
        local_time=local,
        time_zone=plan.time_zone.key,
        holiday=local.date() in plan.holidays,
        change=change,
        version=plan.version,
        version_text=plan.version_text,
    )


# How many inputs ``MemoizedRating`` remembers before it starts again: a voice call's called
# party is part of the input, so distinct inputs grow with the traffic; a minute's worth of them
# is what the memo is for (each entry holds for one minute).
RATING_MEMO_CAPACITY = 10_000
_MINUTE = timedelta(minutes=1)
_MemoKey = tuple[str, str, int | None, int | None, str | None, int]


@dataclass(frozen=True, slots=True)
class _MinuteRating:
    """What ``rate`` answers for one input throughout one UTC minute, but the moment itself."""

    minute: int  # since the epoch
    # Rated at the minute's start, its change looked for up to a minute further; None when the
    # minute does not meet ``MemoizedRating``'s conditions (then ``rate`` answers each time).
    rated: Rated | None


class MemoizedRating:
    """``rate`` of one book for the server's hot path, each input rated once a minute.

    Within one UTC minute the answer to an input is the same but for the tariff change and the
    moment's local time, which the memo gives as the minute's start (``Rated.explanation`` names
    only the minute; the credit-control handler never reads it), provided the plan's version
    does not change within that minute and its lookahead, and its time zone's offset is the
    same whole number of minutes all minute:
    bands change at local minutes (``band_at``), so nothing in (the minute's start, the moment]
    changes a band. The change ahead of a moment in the minute is then the first change after
    the minute's start (looked for up to a minute further) if it lies within the moment's own
    lookahead, else none. A minute that does not meet those conditions, or whose rating fails,
    is rated by ``rate`` every time. Equal to ``rate`` on every input but for that local time
    (tests/ocs/test_rating_memo.py compares the two across band, daylight-saving and version
    changes). A remembered answer is handed out as it is, to every request of its minute: like
    every value type, nobody changes one.
    """

    def __init__(self, book: TariffBook, capacity: int = RATING_MEMO_CAPACITY) -> None:
        self.book = book
        self.capacity = capacity
        self._minutes: dict[_MemoKey, _MinuteRating] = {}
        self.minutes_rated = 0  # inputs rated for a minute of their own: what the memo saves is the rest

    def remembered(self) -> int:
        return len(self._minutes)

    def rate(self, plan_name: str, request: RatingInput) -> Rated | RatingFailure:
        moment = request.at if request.at.tzinfo is not None else request.at.replace(tzinfo=UTC)
        try:
            minute = int(moment.timestamp() // 60)
        except (OverflowError, ValueError):
            return rate(self.book, plan_name, request)
        key = (
            plan_name,
            request.service_context,
            request.rating_group,
            request.service_identifier,
            request.called_party,
            request.lookahead_seconds,
        )
        known = self._minutes.get(key)
        if known is None or known.minute != minute:
            known = self._remember(key, plan_name, request, minute)
        found = known.rated
        if found is None:
            return rate(self.book, plan_name, request)
        change = found.change
        if change is None or change.at <= moment + timedelta(seconds=request.lookahead_seconds):
            return found  # the same value for the whole minute: nothing made per request
        return replace(found, change=None)  # the change lies beyond this moment's lookahead

    def _remember(self, key: _MemoKey, plan_name: str, request: RatingInput, minute: int) -> _MinuteRating:
        if len(self._minutes) >= self.capacity:
            self._minutes.clear()
        self.minutes_rated += 1
        try:
            known = self._minute_rating(plan_name, request, minute)
        except (OverflowError, ValueError):
            known = _MinuteRating(minute, None)
        self._minutes[key] = known
        return known

    def _minute_rating(self, plan_name: str, request: RatingInput, minute: int) -> _MinuteRating:
        start = datetime.fromtimestamp(minute * 60, UTC)
        found = self.book.plan_at(plan_name, start)
        if found is None:
            return _MinuteRating(minute, None)
        plan, next_version_at = found
        unmemoized = _MinuteRating(minute, None)
        reach = start + _MINUTE + timedelta(seconds=request.lookahead_seconds)
        if next_version_at is not None and next_version_at <= reach:
            return unmemoized
        offset = start.astimezone(plan.time_zone).utcoffset()
        last = start + _MINUTE - timedelta(microseconds=1)
        if offset is None or offset.total_seconds() % 60 or last.astimezone(plan.time_zone).utcoffset() != offset:
            return unmemoized
        lookahead = request.lookahead_seconds + 60 if request.lookahead_seconds > 0 else 0
        at_start = RatingInput(
            request.service_context,
            request.rating_group,
            request.service_identifier,
            request.called_party,
            start,
            lookahead,
        )
        rated = rate(self.book, plan_name, at_start)
        return _MinuteRating(minute, None if isinstance(rated, RatingFailure) else rated)


def explain(book: TariffBook, plan_name: str, request: RatingInput, units: int) -> Quote | RatingFailure:
    """Rate ``request`` and price ``units`` of it exactly as the balance engine would."""
    if units < 0:
        raise ValueError(f"units must be 0 or more, not {units}")
    rated = rate(book, plan_name, request)
    if isinstance(rated, RatingFailure):
        return rated
    charged_units = charged(units, rated.tariff)
    cost_micros = cost(units, rated.tariff)
    word = _UNIT_WORDS[rated.unit]
    text = (
        f"{rated.explanation}\n{units} {word} charged as {charged_units} {word}: "
        f"{format_money(cost_micros)} {rated.currency} ({cost_micros} micros)"
    )
    return Quote(rated, units, charged_units, cost_micros, text)


def format_money(micros: int) -> str:
    """Integer micros as a decimal amount with 2 to 6 decimals: 122000 -> "0.122"."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS_PER_UNIT)
    digits = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def _price_text(kind: ServiceKind, tariff: Tariff, currency: str) -> str:
    price = f"{format_money(tariff.price_micros)} {currency}"
    if kind is ServiceKind.VOICE:
        return f"{price} per minute, increments {tariff.first_units}/{tariff.block_units}"
    if kind is ServiceKind.SMS:
        return f"{price} per message"
    return (
        f"{price} per {tariff.per_units} octets, charged per {tariff.block_units} octets "
        f"(at least {tariff.first_units})"
    )
