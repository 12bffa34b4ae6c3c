"""The credit-control handler: a CCR in, one atomic balance call, a CCA out.

Theory of operation: ``CreditControl.answer`` reads the CCR (``ocs.ccr``), finds the subscriber
(5030 if unknown), rates every service (5031 with Failed-AVP if a service cannot be rated),
turns the services into ``ChargeItem``s (requested units sized by the configured default and
maximum quota, used units from Used-Service-Unit), makes the one ``BalanceStore.charge`` call for
the whole request, and lays the outcome out as a CCA (``ocs.cca``). EVENT requests for
CHECK_BALANCE, PRICE_ENQUIRY and REFUND_ACCOUNT (RFC 4006 section 6) are answered from queries and
refunds. Redis unavailable is 3004 (RFC 4006 section 5.7: the client fails over; the request
changed nothing, or changed it idempotently); an engine error is 5012. Retransmissions reach
the engine with the same (Session-Id, CC-Request-Number) and get the stored outcome back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from balance.errors import BalanceScriptError, BalanceUnavailable
from balance.store import BalanceStore
from balance.types import AccountStatus, ChargeItem, ChargeRequest, ChargeResult, ItemResult, Outcome, Unit
from balance.value_type import value_type
from ocs.cca import FinalUnit, FinalUnitAction, ServiceAnswer, command_result, credit_answer, error_answer
from ocs.ccr import (
    CcrProblem,
    CreditRequest,
    RequestedAction,
    RequestType,
    ServiceRequest,
    Units,
    read_ccr,
    request_time,
)
from ocs.config import Settings
from ocs.events import ChargingObserver, FinalUnitGranted, SessionActive, SessionEnded, ignore_charging_events
from ocs.metrics import Metrics
from ocs.queries import answer_query
from ocs.rating import Rated, RatingFailure, RatingInput, rate
from ocs.rating_book import TariffBook
from ocs.result_codes import result_code
from ocs.subscribers import SubscriberCache
from protocol.capabilities import LocalIdentity
from protocol.constants import ResultCode
from protocol.dictionary import DEFAULT_DICTIONARY
from protocol.grammar import example_avp
from protocol.message import Message

_QUERIES = (RequestedAction.CHECK_BALANCE, RequestedAction.PRICE_ENQUIRY, RequestedAction.REFUND_ACCOUNT)


@value_type
class RatedService:
    request: ServiceRequest
    rated: Rated


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
        self.identity = identity
        self.observer = observer
        self.clock = clock
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
        try:
            return await self._answer(message)
        except BalanceUnavailable as error:
            return error_answer(message, self.identity, ResultCode.DIAMETER_TOO_BUSY, error_message=str(error))
        except BalanceScriptError as error:
            return error_answer(message, self.identity, ResultCode.DIAMETER_UNABLE_TO_COMPLY, error_message=str(error))

    async def _answer(self, message: Message) -> Message:
        ccr = read_ccr(message)
        if isinstance(ccr, CcrProblem):
            return error_answer(
                message, self.identity, ccr.result_code, failed_avp=ccr.failed_avp, error_message=ccr.reason
            )
        subscriber = await self.subscribers.find(ccr.identities)
        if subscriber is None:
            failed = message.find("Subscription-Id")
            return error_answer(message, self.identity, ResultCode.DIAMETER_USER_UNKNOWN, failed_avp=failed)
        now = self.clock()
        rated = self._rate(ccr, self._services(ccr), subscriber.plan, now)
        if isinstance(rated, tuple):
            return self._rating_failed(message, *rated)
        if ccr.request_type is RequestType.EVENT and ccr.requested_action in _QUERIES:
            return await answer_query(self, message, ccr, subscriber.account_id, rated, now)
        result = await self.store.charge(self._charge_request(ccr, subscriber.account_id, rated, now))
        if result.replayed:
            self.metrics.duplicate_replayed()
        elif result.items:
            # A replay changed nothing, so it counts no money. The services of one request are
            # rated with the subscriber's one plan, so they share its currency.
            currency = rated[0].rated.currency
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
        self, ccr: CreditRequest, services: Sequence[ServiceRequest], plan: str, now: float
    ) -> list[RatedService] | tuple[ServiceRequest, RatingFailure]:
        rated: list[RatedService] = []
        at = request_time(ccr, now)
        for service in services:
            outcome = rate(
                self.book,
                plan,
                RatingInput(
                    ccr.service_context, service.rating_group, service.service_identifier, ccr.called_party, at
                ),
            )
            if isinstance(outcome, RatingFailure):
                return service, outcome
            rated.append(RatedService(service, outcome))
        return rated

    def _rating_failed(self, message: Message, service: ServiceRequest, failure: RatingFailure) -> Message:
        """5031 DIAMETER_RATING_FAILED naming the AVP rating could not use (RFC 4006 section
        9.1); a fault on our side (no such plan) is 5012 with no Failed-AVP."""
        if failure.avp_name is None:
            return error_answer(
                message, self.identity, ResultCode.DIAMETER_UNABLE_TO_COMPLY, error_message=failure.reason
            )
        failed = service.avp.find(failure.avp_name) if service.avp is not None else None
        failed = failed or message.find(failure.avp_name)
        return error_answer(
            message,
            self.identity,
            ResultCode.DIAMETER_RATING_FAILED,
            failed_avp=failed or example_avp(DEFAULT_DICTIONARY.avp(failure.avp_name)),
            error_message=failure.reason,
        )

    def requested_units(self, service: ServiceRequest, unit: Unit) -> int:
        if service.requested is None:
            return 0
        asked = units_of(service.requested, unit)
        return min(asked if asked else self._default_units[unit], self._max_units[unit])

    def _charge_request(
        self, ccr: CreditRequest, account_id: str, services: Sequence[RatedService], now: float
    ) -> ChargeRequest:
        direct = ccr.request_type is RequestType.EVENT
        terminate = ccr.request_type is RequestType.TERMINATION
        items = []
        for item in services:
            unit = item.rated.unit
            requested = self.requested_units(item.request, unit)
            used = sum(units_of(units, unit) or 0 for units in item.request.used)
            items.append(
                ChargeItem(
                    rating_group=_key(item.request),
                    service=item.rated.service,
                    unit=unit,
                    tariff=item.rated.tariff,
                    used_units=requested if direct else used,
                    requested_units=0 if direct else requested,
                    release=item.request.final,
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
        services: Sequence[RatedService],
        result: ChargeResult,
    ) -> Message:
        answers: list[ServiceAnswer] = []
        status: AccountStatus | None = None
        if ccr.request_type in (RequestType.INITIAL, RequestType.UPDATE):
            self.observer(SessionActive(account_id, ccr.session_id, ccr.origin_host, ccr.origin_realm))
        for service, item in zip(services, result.items, strict=True):
            if item.outcome is Outcome.ACCOUNT_BLOCKED and status is None:
                view = await self.store.balance(account_id, int(self.clock()))
                status = view.account.status if view is not None else AccountStatus.BARRED
            answers.append(self._service_answer(ccr, service, item, status))
            if item.final:
                self.observer(FinalUnitGranted(account_id, ccr.session_id, ccr.origin_host))
        if ccr.request_type is RequestType.TERMINATION:
            answers = []
            self.observer(SessionEnded(account_id, ccr.session_id))
        return credit_answer(
            message, self.identity, command_result(answers), answers, multiple_services=ccr.multiple_services
        )

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
                final_unit=self._final_unit(self.settings.final_unit.suspended_action),
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
            final_unit=self._final_unit(self.settings.final_unit.action) if item.final else None,
        )

    def _final_unit(self, action_name: str) -> FinalUnit:
        settings = self.settings.final_unit
        return FinalUnit(FinalUnitAction[action_name], settings.redirect_address, settings.restriction_filter)


def _key(service: ServiceRequest) -> int:
    """The engine's reservation key for a service: its Rating-Group, else its Service-Identifier."""
    if service.rating_group is not None:
        return service.rating_group
    return service.service_identifier or 0
