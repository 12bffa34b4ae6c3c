"""The credit-control handler: a CCR in, one atomic balance call, a CCA out.

Theory of operation: ``CreditControl.respond`` reads the CCR (``ocs.charging.ccr``), refuses another
realm (3003), finds the subscriber (5030 if unknown; 5002 for an UPDATE / TERMINATION, whose
session cannot exist), rates every service at the request's time (Event-Timestamp within the
configured skew, else our clock) and refuses on its own each service that cannot be rated or
counts only in units its tariff does not price (5031 in its MSCC, Failed-AVP at command level;
nothing is granted to it). Usage in an unpriced unit never passes free: in an UPDATE or
TERMINATION such a service still settles the reservation it holds, its reservation committed in
full when its used units are the ones refused (the units granted are taken as used: the
operator's safe side; the client learns of it by the 5031; balance/RULES.md "Refused usage").
The services go to the engine as ``ChargeItem``s (requested units sized by the configured default
and maximum quota, used units from Used-Service-Unit) in the one ``BalanceStore.charge`` call
for the whole request, and the outcome is laid out as a CCA (``ocs.charging.cca``; the common ones
straight to bytes, ``ocs.charging.answer_template``, which ``respond`` returns as they are sent
and ``answer`` decoded, as the client reads them); a stored result that
no longer matches the services rated now (a retransmission after the tariffs changed) is 5012.
A grant whose Validity-Time spans a switch of tariff (rating looks ahead for INITIAL and UPDATE)
carries Tariff-Time-Change and reaches the engine with the price after the switch; the
Used-Service-Units the client itemises with Tariff-Change-Usage reach it as a usage split (RFC
4006 section 5.1.1; balance/RULES.md "Tariff change" prices each side). EVENT requests for
CHECK_BALANCE, PRICE_ENQUIRY and REFUND_ACCOUNT (RFC 4006 section 6) are answered from queries
and refunds. Redis unavailable is 3004 (RFC 4006 section 5.7: the client fails over; the request
changed nothing, or changed it idempotently); an engine error is 5012. Retransmissions reach
the engine with the same (Session-Id, CC-Request-Number) and get the stored outcome back.

A last grant, or a suspended account, gets the Final-Unit-Indication its plan and service
choose (``final_units``, built once from the tariff book over the ``[final_unit]`` settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from balance.errors import BalanceScriptError, BalanceUnavailable
from balance.store import BalanceStore
from balance.types import (
    AccountStatus,
    ChargeItem,
    ChargeRequest,
    ChargeResult,
    ItemResult,
    Outcome,
    TariffChange,
    Unit,
    UsageSplit,
)
from balance.value_type import value_type
from ocs.charging.answer_template import AnswerTemplate
from ocs.charging.cca import FinalUnit, FinalUnitAction, ServiceAnswer, command_result, credit_answer, error_answer
from ocs.charging.ccr import (
    CcrProblem,
    CreditRequest,
    RequestedAction,
    RequestType,
    ServiceRequest,
    Units,
    read_ccr,
    read_units,
    request_time,
)
from ocs.charging.queries import QueriedService, Queries
from ocs.charging.result_codes import result_code
from ocs.charging.subscribers import SubscriberCache
from ocs.config import FinalUnitSettings, Settings
from ocs.events import ChargingObserver, FinalUnitGranted, SessionActive, SessionEnded, ignore_charging_events
from ocs.metrics import Metrics
from ocs.rating.book import FinalUnitPolicy, RedirectAddressType, RedirectServer, Restriction, TariffBook
from ocs.rating.rate import MemoizedRating, Rated, RatingFailure, RatingInput
from protocol.capabilities import LocalIdentity
from protocol.codec import decode
from protocol.constants import ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY
from protocol.encoded import EncodedAnswer
from protocol.grammar import example_avp
from protocol.message import Avp, Message, avp

log = structlog.get_logger("ocs.charging.credit_control")

_QUERIES = (RequestedAction.CHECK_BALANCE, RequestedAction.PRICE_ENQUIRY, RequestedAction.REFUND_ACCOUNT)


@value_type
class RatedService:
    request: ServiceRequest
    rated: Rated
    # The grant's Tariff-Time-Change (RFC 4006 section 5.1.1): a switch of tariff ahead of our
    # clock within the grant's Validity-Time; None when there is none, or no grant is made.
    tariff_change: TariffChange | None = None


@value_type
class RefusedService:
    """A service answered with a failure of its own (5031). Left out of the charge, unless
    ``rated`` is set: a service of an UPDATE or TERMINATION refused for its units (rated, but
    counted in units its tariff does not price) still settles the reservation it may hold, since
    usage in an unpriced unit must never pass free (balance/RULES.md "Refused usage"): the used
    units it reports in the priced unit are committed, or, when its used units themselves are
    refused, every unit its reservation granted; nothing is reserved anew."""

    request: ServiceRequest
    result_code: ResultCode
    failed_avp: Avp
    reason: str
    rated: Rated | None = None


_UNIT_AVP_KEYS = (DEFAULT_DICTIONARY.key("Requested-Service-Unit"), DEFAULT_DICTIONARY.key("Used-Service-Unit"))


def units_of(units: Units, unit: Unit) -> int | None:
    if unit is Unit.SECONDS:
        return units.time_seconds
    if unit is Unit.OCTETS:
        return units.octets
    return units.service_specific


class CreditControl:
    def __init__(
        self,
        settings: Settings,
        store: BalanceStore,
        subscribers: SubscriberCache,
        book: TariffBook,
        identity: LocalIdentity,
        *,
        observer: ChargingObserver = ignore_charging_events,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.store = store
        self.subscribers = subscribers
        self.book = book
        self._rating = MemoizedRating(book)  # rate() of this book, each input once a minute
        self.identity = identity
        self.observer = observer
        self.clock = clock
        self._final_units = final_units(book, settings.final_unit)
        self._queries = Queries(identity, store, settings.refund, book)
        self._template = AnswerTemplate(identity)
        quota = settings.quota
        # Per unit, the grant asked for when the request names no amount, and the most granted.
        self._default_units = {
            Unit.SECONDS: quota.default_seconds,
            Unit.OCTETS: quota.default_octets,
            Unit.EVENTS: quota.default_events,
        }
        self._max_units = {
            Unit.SECONDS: quota.max_seconds,
            Unit.OCTETS: quota.max_octets,
            Unit.EVENTS: quota.max_events,
        }

    async def answer(self, message: Message) -> Message:
        """The answer to ``message`` as its client reads it (``respond``'s, decoded if encoded)."""
        answered = await self.respond(message)
        return answered if isinstance(answered, Message) else decode(answered.data).message

    async def respond(self, message: Message) -> Message | EncodedAnswer:
        """The answer to send: the common CCAs already encoded (``ocs.charging.answer_template``)."""
        try:
            return await self._answer(message)
        except BalanceUnavailable as error:
            return error_answer(message, self.identity, ResultCode.DIAMETER_TOO_BUSY, error_message=str(error))
        except BalanceScriptError as error:
            return error_answer(message, self.identity, ResultCode.DIAMETER_UNABLE_TO_COMPLY, error_message=str(error))

    async def _answer(self, message: Message) -> Message | EncodedAnswer:
        ccr = read_ccr(message)
        if isinstance(ccr, CcrProblem):
            return error_answer(
                message, self.identity, ccr.result_code, failed_avp=ccr.failed_avp, error_message=ccr.reason
            )
        # RFC 6733 section 6.1: a request for another realm is not ours to process, and we are no
        # relay or proxy (section 2.8) to pass it on: 3003 (section 7.1.3), which sets the E bit.
        if ccr.destination_realm.lower() != self.settings.diameter.origin_realm.lower():
            failed = message.find("Destination-Realm")
            return error_answer(message, self.identity, ResultCode.DIAMETER_REALM_NOT_SERVED, failed_avp=failed)
        subscriber = await self.subscribers.find(ccr.identities)
        if subscriber is None:
            if ccr.request_type in (RequestType.UPDATE, RequestType.TERMINATION):
                # No session was ever opened for an identity we do not know (its CCR-I was
                # answered 5030): RFC 4006 section 9.1 / RFC 6733 section 7.1.4, 5002.
                return error_answer(message, self.identity, ResultCode.DIAMETER_UNKNOWN_SESSION_ID)
            failed = message.find("Subscription-Id")
            return error_answer(message, self.identity, ResultCode.DIAMETER_USER_UNKNOWN, failed_avp=failed)
        now = self.clock()
        rated = self._rate(message, ccr, self._services(ccr), subscriber.plan, now)
        if isinstance(rated, RatingFailure):  # our fault (no such plan): 5012, RFC 6733 section 7.1.5
            return error_answer(
                message, self.identity, ResultCode.DIAMETER_UNABLE_TO_COMPLY, error_message=rated.reason
            )
        served = [item for item in rated if isinstance(item, RatedService)]
        refused = [item for item in rated if isinstance(item, RefusedService)]
        for item in refused:
            log.info("service_refused", result_code=int(item.result_code), reason=item.reason)
        if ccr.request_type is RequestType.EVENT and ccr.requested_action in _QUERIES:
            if refused:
                return self._refused_answer(message, ccr, refused)
            priced = [
                QueriedService(item.request, item.rated, self.requested_units(item.request, item.rated.unit))
                for item in served
            ]
            return await self._queries.answer(message, ccr, subscriber.account_id, priced, now)
        if refused and not served and ccr.request_type in (RequestType.INITIAL, RequestType.EVENT):
            # Nothing to charge, and no session to open: the answer is the refusal alone. An
            # UPDATE / TERMINATION goes on to the engine even so, which knows whether the session
            # is open (5002 if not) and ends it on a TERMINATION.
            return self._refused_answer(message, ccr, refused)
        charged = _charged(rated)
        result = await self.store.charge(self._charge_request(ccr, subscriber.account_id, charged, now))
        if result.replayed:
            self.metrics.duplicate_replayed()
        elif result.items:
            # A replay changed nothing, so it counts no money. The services of one request are
            # rated with the subscriber's one plan, so they share its currency.
            currency = charged[0][1].currency
            self.metrics.money_committed(currency, sum(item.committed_micros for item in result.items))
            self.metrics.money_reserved(currency, sum(item.reserved_micros for item in result.items))
        if result.outcome is not Outcome.OK:
            return error_answer(message, self.identity, result_code(result.outcome))
        return await self._credit_answer(message, ccr, subscriber.account_id, rated, result)

    def _services(self, ccr: CreditRequest) -> tuple[ServiceRequest, ...]:
        if ccr.services or ccr.multiple_services or ccr.request_type is RequestType.TERMINATION:
            return ccr.services
        # Single-service INITIAL / UPDATE / EVENT without units: the server sizes the grant.
        return (ServiceRequest(None, None, Units(), (), (), None),)

    def _rate(
        self, message: Message, ccr: CreditRequest, services: Sequence[ServiceRequest], plan: str, now: float
    ) -> list[RatedService | RefusedService] | RatingFailure:
        """Each service rated, or refused on its own; a failure that is ours (no such plan) for all."""
        rated: list[RatedService | RefusedService] = []
        skew = self.settings.rating.event_timestamp_skew_seconds
        at = request_time(ccr, now, skew_seconds=skew, late_seconds=self.settings.quota.tcc_seconds)
        refund = ccr.requested_action is RequestedAction.REFUND_ACCOUNT
        # Only a grant can span a switch of tariff: an EVENT is charged at once, a TERMINATION
        # reserves nothing.
        granting = ccr.request_type in (RequestType.INITIAL, RequestType.UPDATE)
        lookahead = self.settings.quota.validity_seconds if granting else 0
        if self._rating.book is not self.book:  # a book put in place of the one we were made with
            self._rating = MemoizedRating(self.book)
        for service in services:
            outcome = self._rating.rate(
                plan,
                RatingInput(
                    ccr.service_context,
                    service.rating_group,
                    service.service_identifier,
                    ccr.called_party,
                    at,
                    lookahead if service.requested is not None else 0,
                ),
            )
            if isinstance(outcome, RatingFailure):
                if outcome.avp_name is None:
                    return outcome
                rated.append(_rating_refused(message, service, outcome.avp_name, outcome.reason))
                continue
            unpriced = None if refund else _unpriced_units(message, service, outcome.unit)
            if unpriced is not None:
                reason = f"service {outcome.service} is priced in {outcome.unit}, not in the units reported"
                settles = outcome if ccr.request_type in (RequestType.UPDATE, RequestType.TERMINATION) else None
                rated.append(RefusedService(service, ResultCode.DIAMETER_RATING_FAILED, unpriced, reason, settles))
                continue
            rated.append(RatedService(service, outcome, _tariff_change(outcome, now)))
        return rated

    def _refused_answer(self, message: Message, ccr: CreditRequest, refused: Sequence[RefusedService]) -> Message:
        """The answer when every service was refused and nothing reached the engine."""
        answers = [_refused_service_answer(item) for item in refused]
        extra = [avp("Error-Message", refused[0].reason[:200]), *_failed_avps(refused)]
        return credit_answer(
            message,
            self.identity,
            command_result(answers),
            answers,
            multiple_services=ccr.multiple_services,
            extra=extra,
        )

    def requested_units(self, service: ServiceRequest, unit: Unit) -> int:
        if service.requested is None:
            return 0
        asked = units_of(service.requested, unit)
        return min(asked if asked else self._default_units[unit], self._max_units[unit])

    def _charge_request(
        self, ccr: CreditRequest, account_id: str, services: Sequence[tuple[ChargedService, Rated]], now: float
    ) -> ChargeRequest:
        direct = ccr.request_type is RequestType.EVENT
        terminate = ccr.request_type is RequestType.TERMINATION
        items = []
        for service, rated in services:
            request, unit = service.request, rated.unit
            requested = self.requested_units(request, unit)
            used = _used_units(request.used, unit)
            split = None if direct else _usage_split(request.used, unit)
            commit_reserved = False
            if isinstance(service, RefusedService):  # its docstring: settle what is held, grant nothing
                commit_reserved = any(units.counted and units_of(units, unit) is None for units in request.used)
                requested, change = 0, None
                if commit_reserved:
                    used, split = 0, None
            else:
                change = None if direct or request.final else service.tariff_change
            items.append(
                ChargeItem(
                    # An absent Rating-Group is charged and recorded as 0, the rating group of the
                    # default service (ocs/rating/rate.py); the record's service names what was rated.
                    rating_group=request.rating_group or 0,
                    service=rated.service,
                    unit=unit,
                    tariff=rated.tariff,
                    used_units=requested if direct else used,
                    requested_units=0 if direct else requested,
                    release=request.final,
                    service_identifier=request.service_identifier,
                    tariff_change=change,
                    used_split=split,
                    commit_reserved=commit_reserved,
                )
            )
        return ChargeRequest(
            account_id=account_id,
            session_id=ccr.session_id,
            request_number=ccr.request_number,
            items=tuple(items),
            now_seconds=int(now),
            validity_seconds=self.settings.quota.tcc_seconds,
            terminate=terminate,
            event=direct,
        )

    async def _credit_answer(
        self,
        message: Message,
        ccr: CreditRequest,
        account_id: str,
        services: Sequence[RatedService | RefusedService],
        result: ChargeResult,
    ) -> Message | EncodedAnswer:
        """The CCA: one answer per service in the order of the request, the charged ones from the
        engine's items (which follow the charged services in order), the refused ones with their
        own Result-Code and their AVP in Failed-AVP (RFC 6733 section 7.5: "not fully processed")."""
        answers: list[ServiceAnswer] = []
        status: AccountStatus | None = None
        items = iter(result.items)
        final = False
        for service in services:
            charged = isinstance(service, RatedService) or service.rated is not None
            item = next(items, None) if charged else None
            if charged and (item is None or item.rating_group != (service.request.rating_group or 0)):
                return self._mismatch_answer(message, result)
            if isinstance(service, RefusedService):
                answers.append(_refused_service_answer(service))
                continue
            assert item is not None
            if item.outcome is Outcome.ACCOUNT_BLOCKED and status is None:
                # Its effective status (balance/RULES.md): a suspended node suspends its lines.
                status = await self.store.effective_status(account_id, int(self.clock())) or AccountStatus.BARRED
            answers.append(self._service_answer(ccr, service, item, status))
            final = final or item.final
        code = command_result(answers)
        if ccr.request_type is RequestType.TERMINATION:
            # The session is over: the answer names only the services whose usage was refused.
            answers = [answer for answer in answers if answer.result_code is not ResultCode.DIAMETER_SUCCESS]
            self.observer(SessionEnded(account_id, ccr.session_id))
        elif ccr.request_type is RequestType.UPDATE or result.opened:
            # What the engine did, not the answer's code: an INITIAL it left unopened
            # (balance/RULES.md "Unopened") and an EVENT leave no session to re-authorise.
            self.observer(SessionActive(account_id, ccr.session_id, ccr.origin_host, ccr.origin_realm))
        if final:  # after SessionActive: the notifier follows the sessions it knows
            self.observer(FinalUnitGranted(account_id, ccr.session_id, ccr.origin_host))
        refused = [service for service in services if isinstance(service, RefusedService)]
        if not refused:
            encoded = self._template.credit_answer(message, code, answers, multiple_services=ccr.multiple_services)
            if encoded is not None:
                return encoded
        return credit_answer(
            message, self.identity, code, answers, multiple_services=ccr.multiple_services, extra=_failed_avps(refused)
        )

    def _mismatch_answer(self, message: Message, result: ChargeResult) -> Message:
        """5012 (RFC 6733 section 7.1.5) for a stored result that does not match the services
        rated now: a retransmission replayed after the tariff book changed the services served.
        The engine applied the request once (its stored result stands); this answer only says we
        cannot lay it out, rather than failing the task on a missing item."""
        log.warning("replayed_result_mismatch", replayed=result.replayed, items=len(result.items))
        reason = "the stored result of this request does not match its services as rated now"
        return error_answer(message, self.identity, ResultCode.DIAMETER_UNABLE_TO_COMPLY, error_message=reason)

    def _service_answer(
        self, ccr: CreditRequest, service: RatedService, item: ItemResult, status: AccountStatus | None
    ) -> ServiceAnswer:
        request = service.request
        rating_group, identifier = request.rating_group, request.service_identifier
        quota = self.settings.quota
        unit = service.rated.unit
        outcome = item.outcome
        if outcome is Outcome.ACCOUNT_BLOCKED and status is AccountStatus.SUSPENDED:
            # Immediate graceful service termination (RFC 8506 section 5.6): nothing granted, and
            # the final-unit action (by default a redirect to the top-up portal) applies at once.
            return ServiceAnswer(
                rating_group,
                identifier,
                ResultCode.DIAMETER_CREDIT_LIMIT_REACHED,
                unit=unit,
                validity_seconds=quota.validity_seconds,
                final_unit=self._final_units[service.rated.plan, service.rated.version, service.rated.service][1],
            )
        code = result_code(outcome)
        if outcome is not Outcome.OK and outcome is not Outcome.PARTIAL:
            return ServiceAnswer(rating_group, identifier, code)
        if ccr.request_type is RequestType.EVENT:
            return ServiceAnswer(rating_group, identifier, code, unit=unit, granted_units=item.committed_units)
        granted = item.granted_units
        if granted == 0:
            return ServiceAnswer(rating_group, identifier, code)
        return ServiceAnswer(
            rating_group,
            identifier,
            code,
            unit=unit,
            granted_units=granted,
            validity_seconds=quota.validity_seconds,
            threshold_units=granted * quota.threshold_percent // 100,
            quota_holding_seconds=quota.quota_holding_seconds,
            final_unit=self._final_units[service.rated.plan, service.rated.version, service.rated.service][0]
            if item.final
            else None,
            tariff_time_change=service.tariff_change.at_seconds if service.tariff_change is not None else None,
        )


ChargedService = RatedService | RefusedService


def _charged(services: Sequence[ChargedService]) -> list[tuple[ChargedService, Rated]]:
    """The services that go to the engine, in request order, with their rating: every one rated,
    and each refused one that settles its reservation (``RefusedService``)."""
    return [(service, service.rated) for service in services if service.rated is not None]


def _tariff_change(rated: Rated, now: float) -> TariffChange | None:
    """The engine's tariff change for a grant rated ``rated``: the band change rating found,
    if it lies ahead of our clock (the engine reserves at our clock's ``now``; a client's
    Event-Timestamp within the skew may put the rating moment on the other side of it)."""
    change = rated.change
    if change is None:
        return None
    at_seconds = int(change.at.timestamp())  # band boundaries are whole minutes
    if at_seconds <= int(now):
        return None
    return TariffChange(at_seconds, change.tariff.price_micros)


def _used_units(used: Sequence[Units], unit: Unit) -> int:
    """The units of ``unit`` in every Used-Service-Unit (a loop: a generator costs more, compiled)."""
    total = 0
    for units in used:
        total += units_of(units, unit) or 0
    return total


def _usage_split(used: Sequence[Units], unit: Unit) -> UsageSplit | None:
    """The used units as the client itemised them with Tariff-Change-Usage (RFC 4006 section
    8.27), or None when no Used-Service-Unit carries one. A Used-Service-Unit without it among
    itemised ones counts as before the change ("no tariff change has occurred" for those units)."""
    for units in used:
        if units.tariff_change_usage is not None:
            break
    else:
        return None
    parts = [0, 0, 0]  # UNIT_BEFORE_TARIFF_CHANGE, UNIT_AFTER_TARIFF_CHANGE, UNIT_INDETERMINATE
    for units in used:
        parts[units.tariff_change_usage or 0] += units_of(units, unit) or 0
    return UsageSplit(*parts)


def _rating_refused(message: Message, service: ServiceRequest, name: str, reason: str) -> RefusedService:
    """5031 DIAMETER_RATING_FAILED naming the AVP rating could not use (RFC 4006 section 9.1:
    Failed-AVP holds it, or an example of it when it is missing)."""
    failed = service.avp.find(name) if service.avp is not None else None
    failed = failed or message.find(name) or example_avp(DEFAULT_DICTIONARY.avp(name))
    return RefusedService(service, ResultCode.DIAMETER_RATING_FAILED, failed, reason)


def _unpriced_units(message: Message, service: ServiceRequest, unit: Unit) -> Avp | None:
    """The Requested- or Used-Service-Unit that counts only in units the tariff does not price.

    RFC 4006 section 8.18: a server "must treat unknown or unsupported unit types as invalid
    AVPs"; usage in a unit the service is not rated in cannot be priced, so it is a rating
    failure (5031, section 9.1: "an AVP ... not recognized or supported in the rating"), never
    a free 2001. An empty Requested-Service-Unit leaves the amount to us (sized in the priced
    unit); a unit AVP of the priced unit with the value 0 reports that nothing was used.
    """
    priced = _priced(service.requested, unit)
    for units in service.used:  # a loop, not all(): a generator costs more, compiled
        priced = priced and _priced(units, unit)
    if priced:
        return None
    members = service.avp.children if service.avp is not None else message.avps
    for found in members:
        if found.key in _UNIT_AVP_KEYS:
            units = read_units(found)
            if units.counted and units_of(units, unit) is None:
                return found
    return None  # not reached: the units above were read from these AVPs


def _priced(units: Units | None, unit: Unit) -> bool:
    """Whether ``units`` count in ``unit``, or count nothing (absent, or an empty unit AVP)."""
    return units is None or units_of(units, unit) is not None or not units.counted


def _refused_service_answer(service: RefusedService) -> ServiceAnswer:
    request = service.request
    return ServiceAnswer(request.rating_group, request.service_identifier, service.result_code)


def _failed_avps(refused: Sequence[RefusedService]) -> list[Avp]:
    """One Failed-AVP per refused service (the CCA allows several: RFC 4006 section 3.2)."""
    return [avp("Failed-AVP", [service.failed_avp]) for service in refused]


def final_units(
    book: TariffBook, settings: FinalUnitSettings
) -> dict[tuple[str, int, str], tuple[FinalUnit, FinalUnit]]:
    """Per (plan, version, service), the Final-Unit-Indication of an active account's last grant
    and of a suspended account's: the service's ``final_unit`` over its plan's over
    ``[final_unit]``. Built once, so answering is a lookup."""
    chosen: dict[tuple[str, int, str], tuple[FinalUnit, FinalUnit]] = {}
    for plan in book.all_versions():
        for service in plan.services.values():
            policy = service.final_unit.over(plan.final_unit)
            active = _final_unit(policy.action or settings.action, policy, settings)
            suspended = _final_unit(policy.suspended_action or settings.suspended_action, policy, settings)
            chosen[plan.name, plan.version, service.name] = (active, suspended)
    return chosen


def _final_unit(action_name: str, policy: FinalUnitPolicy, settings: FinalUnitSettings) -> FinalUnit:
    """One Final-Unit-Indication from the tariff file's ``policy`` and the server's defaults.

    The server's one restriction_filter restricts RESTRICT_ACCESS only: a REDIRECT carries
    filters (RFC 4006 section 8.34: what stays reachable besides the redirect address) only
    when the tariff file gives them.
    """
    action = FinalUnitAction[action_name]
    redirect = policy.redirect or RedirectServer(RedirectAddressType.URL, settings.redirect_address)
    restriction = policy.restriction
    if restriction is None:
        default_rules = (settings.restriction_filter,) if settings.restriction_filter else ()
        restriction = Restriction(default_rules if action is FinalUnitAction.RESTRICT_ACCESS else (), ())
    return FinalUnit(
        action, redirect.address, int(redirect.address_type), restriction.filter_rules, restriction.filter_ids
    )
