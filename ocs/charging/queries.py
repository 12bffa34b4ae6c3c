"""EVENT requests that ask rather than debit (RFC 4006 section 6): CHECK_BALANCE (6.4),
PRICE_ENQUIRY (6.5) and REFUND_ACCOUNT (6.3 / 6.4 of the refund procedure).

Theory of operation: the services of the request are rated like a debit; CHECK_BALANCE compares
their cost with what the account could draw now (Check-Balance-Result, section 8.6);
PRICE_ENQUIRY answers their cost (Cost-Information, section 8.7, in micros: Exponent -6);
REFUND_ACCOUNT credits the CC-Money of the Requested-Service-Unit, or the price of its units,
idempotently by (Session-Id, CC-Request-Number). Only the refund changes a balance, and only
within limits: CC-Money in the account's own currency (Currency-Code, ISO 4217 numeric, read
through ``CURRENCY_NUMBERS``; absent means the account's), at most ``[refund]
max_request_micros`` per refund, and at most ``max_day_micros`` per account and calendar day of
its plan's time zone, that sum kept in Redis and checked in the refund's own atomic call.

``Queries`` is built once by the charging handler with only what it needs (identity, store, refund
limits, tariff book); each service comes priced (``QueriedService``: the rating and the units
asked for, sized by the handler's quota settings), so this module never reaches back into the
handler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from balance.store import BalanceStore
from balance.tariff import cost
from balance.types import Outcome
from balance.value_type import value_type
from ocs.charging.cca import credit_answer, error_answer
from ocs.charging.ccr import CreditRequest, RequestedAction, ServiceRequest
from ocs.charging.result_codes import result_code
from ocs.config import RefundSettings
from ocs.rating.book import CURRENCY_NUMBERS, TariffBook
from ocs.rating.rate import Rated
from protocol.capabilities import LocalIdentity
from protocol.constants import ResultCode
from protocol.message import Avp, Message, avp

CHECK_BALANCE_ENOUGH_CREDIT = 0  # RFC 4006 section 8.6
CHECK_BALANCE_NO_CREDIT = 1
MICROS_EXPONENT = -6


def cost_information(micros: int, currency: str) -> Avp:
    return avp(
        "Cost-Information",
        [
            avp("Unit-Value", [avp("Value-Digits", micros), avp("Exponent", MICROS_EXPONENT)]),
            avp("Currency-Code", CURRENCY_NUMBERS[currency]),
        ],
    )


@value_type
class QueriedService:
    """One service of the query: its request, its rating, and the units it asks for."""

    request: ServiceRequest
    rated: Rated
    requested_units: int


def price(services: Sequence[QueriedService]) -> int:
    return sum(cost(item.requested_units, item.rated.tariff) for item in services)


@dataclass(frozen=True, slots=True)
class Queries:
    """What answering a query needs from the server, and nothing more."""

    identity: LocalIdentity
    store: BalanceStore
    refund_limits: RefundSettings
    book: TariffBook

    async def answer(
        self, message: Message, ccr: CreditRequest, account_id: str, services: Sequence[QueriedService], now: float
    ) -> Message:
        return await _answer(self, message, ccr, account_id, services, now)


async def _answer(
    queries: Queries,
    message: Message,
    ccr: CreditRequest,
    account_id: str,
    services: Sequence[QueriedService],
    now: float,
) -> Message:
    identity = queries.identity
    total = price(services)
    currency = services[0].rated.currency if services else "EUR"
    if currency not in CURRENCY_NUMBERS:
        return error_answer(
            message, identity, ResultCode.DIAMETER_UNABLE_TO_COMPLY, error_message=f"currency {currency}"
        )
    if ccr.requested_action is RequestedAction.CHECK_BALANCE:
        view = await queries.store.balance(account_id, int(now))
        if view is None:
            return error_answer(message, identity, ResultCode.DIAMETER_USER_UNKNOWN)
        enough = view.available_micros >= total and (total > 0 or view.available_micros > 0)
        verdict = CHECK_BALANCE_ENOUGH_CREDIT if enough else CHECK_BALANCE_NO_CREDIT
        extra = [avp("Check-Balance-Result", verdict)]
        return credit_answer(message, identity, ResultCode.DIAMETER_SUCCESS, [], multiple_services=False, extra=extra)
    if ccr.requested_action is RequestedAction.PRICE_ENQUIRY:
        extra = [cost_information(total, currency)]
        return credit_answer(message, identity, ResultCode.DIAMETER_SUCCESS, [], multiple_services=False, extra=extra)
    return await _refund(queries, message, ccr, account_id, services, now)


async def _refund(
    queries: Queries,
    message: Message,
    ccr: CreditRequest,
    account_id: str,
    services: Sequence[QueriedService],
    now: float,
) -> Message:
    """REFUND_ACCOUNT: the CC-Money asked for (or the price of the units), in the account's own
    currency, within the per-refund limit, and within the per-day limit in the same atomic call
    as the credit; any refusal credits nothing."""
    identity = queries.identity
    asking = next((item.request for item in services if item.request.requested is not None), None)
    money = asking.requested.money_micros if asking is not None and asking.requested is not None else None
    amount = money if money else price(services)
    requested_avp = _requested_unit_avp(message, asking)
    if amount <= 0:
        return error_answer(message, identity, ResultCode.DIAMETER_INVALID_AVP_VALUE, failed_avp=requested_avp)
    view = await queries.store.balance(account_id, int(now))
    if view is None:
        return error_answer(message, identity, ResultCode.DIAMETER_USER_UNKNOWN)
    currency = view.account.currency
    money_avp = requested_avp.find("CC-Money") if requested_avp is not None else None
    currency_code = money_avp.get("Currency-Code") if money_avp is not None else None
    if currency_code is not None and currency_code != CURRENCY_NUMBERS.get(currency):
        # No exchange rates here: money in another currency cannot be valued. RFC 4006 section
        # 9.1, 5031: "an AVP value that is not recognized or supported in the rating"; Failed-AVP
        # holds the whole CC-Money (RFC 6733 section 7.5).
        reason = f"Currency-Code {currency_code!r} is not the account's currency {currency}"
        return error_answer(
            message, identity, ResultCode.DIAMETER_RATING_FAILED, failed_avp=money_avp, error_message=reason
        )
    limits = queries.refund_limits
    if 0 < limits.max_request_micros < amount:
        # A permanent failure (RFC 6733 section 7.1.5): the same refund never passes. No code of
        # RFC 4006 / 6733 names an amount over a limit, so 5012 DIAMETER_UNABLE_TO_COMPLY, with
        # the amount's AVP in Failed-AVP and the limit in Error-Message.
        reason = f"refund of {amount} micros is above the limit of {limits.max_request_micros} per refund"
        failed = money_avp or requested_avp
        return error_answer(
            message, identity, ResultCode.DIAMETER_UNABLE_TO_COMPLY, failed_avp=failed, error_message=reason
        )
    # The day the per-day limit counts in: the calendar day of the subscriber's plan, by our clock.
    zone = queries.book.plans[services[0].rated.plan].time_zone if services else UTC
    day = datetime.fromtimestamp(now, zone).date().isoformat()
    result = await queries.store.refund(
        account_id, ccr.session_id, ccr.request_number, amount, int(now), day, limits.max_day_micros
    )
    code = result_code(result.outcome)
    if result.outcome is Outcome.REFUND_LIMIT:
        reason = f"the account's refunds of {day} would pass the limit of {limits.max_day_micros} micros a day"
        return error_answer(message, identity, code, error_message=reason)
    extra = [cost_information(amount, currency)] if code is ResultCode.DIAMETER_SUCCESS else []
    return credit_answer(message, identity, code, [], multiple_services=False, extra=extra)


def _requested_unit_avp(message: Message, service: ServiceRequest | None) -> Avp | None:
    """The Requested-Service-Unit of ``service``: in its MSCC, else at command level."""
    found = service.avp.find("Requested-Service-Unit") if service is not None and service.avp is not None else None
    return found or message.find("Requested-Service-Unit")
