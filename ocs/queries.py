"""EVENT requests that ask rather than debit (RFC 4006 section 6): CHECK_BALANCE (6.4),
PRICE_ENQUIRY (6.5) and REFUND_ACCOUNT (6.3 / 6.4 of the refund procedure).

Theory of operation: the services of the request are rated like a debit; CHECK_BALANCE compares
their cost with what the account could draw now (Check-Balance-Result, section 8.6);
PRICE_ENQUIRY answers their cost (Cost-Information, section 8.7, in micros: Exponent -6);
REFUND_ACCOUNT credits the CC-Money of the Requested-Service-Unit, or the price of its units,
idempotently by (Session-Id, CC-Request-Number). Only the refund changes a balance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from balance.tariff import cost
from ocs.cca import credit_answer, error_answer
from ocs.ccr import CreditRequest, RequestedAction
from ocs.result_codes import result_code
from protocol.constants import ResultCode
from protocol.message import Avp, Message, avp

if TYPE_CHECKING:
    from ocs.charging import CreditControl, RatedService

# ISO 4217 numeric codes for Currency-Code (RFC 4006 section 8.11) of the currencies we price in.
CURRENCY_NUMBERS = {"EUR": 978, "USD": 840, "GBP": 826, "CHF": 756, "SEK": 752, "NOK": 578, "DKK": 208, "PLN": 985}
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


def price(handler: CreditControl, services: Sequence[RatedService]) -> int:
    return sum(cost(handler.requested_units(item.request, item.rated.unit), item.rated.tariff) for item in services)


async def answer_query(
    handler: CreditControl,
    message: Message,
    ccr: CreditRequest,
    account_id: str,
    services: Sequence[RatedService],
    now: float,
) -> Message:
    identity = handler.identity
    total = price(handler, services)
    currency = services[0].rated.currency if services else "EUR"
    if currency not in CURRENCY_NUMBERS:
        return error_answer(
            message, identity, ResultCode.DIAMETER_UNABLE_TO_COMPLY, error_message=f"currency {currency}"
        )
    if ccr.requested_action is RequestedAction.CHECK_BALANCE:
        view = await handler.store.balance(account_id, int(now))
        if view is None:
            return error_answer(message, identity, ResultCode.DIAMETER_USER_UNKNOWN)
        enough = view.available_micros >= total and (total > 0 or view.available_micros > 0)
        verdict = CHECK_BALANCE_ENOUGH_CREDIT if enough else CHECK_BALANCE_NO_CREDIT
        extra = [avp("Check-Balance-Result", verdict)]
        return credit_answer(message, identity, ResultCode.DIAMETER_SUCCESS, [], multiple_services=False, extra=extra)
    if ccr.requested_action is RequestedAction.PRICE_ENQUIRY:
        extra = [cost_information(total, currency)]
        return credit_answer(message, identity, ResultCode.DIAMETER_SUCCESS, [], multiple_services=False, extra=extra)
    money = next((s.request.requested.money_micros for s in services if s.request.requested is not None), None)
    amount = money if money else total
    if amount <= 0:
        failed = message.find("Requested-Service-Unit")
        return error_answer(message, identity, ResultCode.DIAMETER_INVALID_AVP_VALUE, failed_avp=failed)
    result = await handler.store.refund(account_id, ccr.session_id, ccr.request_number, amount, int(now))
    code = result_code(result.outcome)
    extra = [cost_information(amount, currency)] if code is ResultCode.DIAMETER_SUCCESS else []
    return credit_answer(message, identity, code, [], multiple_services=False, extra=extra)
