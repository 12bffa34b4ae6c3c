"""The one table from the engine's outcomes to Diameter Result-Codes (RFC 4006 section 9.1).

Theory of operation: every business outcome the money engine can return has exactly one
Result-Code here, and the tests hold the table complete. A partial grant is a success (2001) whose
grant carries a Final-Unit-Indication; a stale request number is not a failure of the subscriber,
so it gets 5012 (DIAMETER_UNABLE_TO_COMPLY) and changes nothing.
"""

from __future__ import annotations

from types import MappingProxyType

from balance.types import Outcome
from protocol.constants import ResultCode

RESULT_CODES = MappingProxyType(
    {
        Outcome.OK: ResultCode.DIAMETER_SUCCESS,
        Outcome.PARTIAL: ResultCode.DIAMETER_SUCCESS,
        Outcome.INSUFFICIENT_FUNDS: ResultCode.DIAMETER_CREDIT_LIMIT_REACHED,  # 4012
        Outcome.UNKNOWN_ACCOUNT: ResultCode.DIAMETER_USER_UNKNOWN,  # 5030
        Outcome.ACCOUNT_BLOCKED: ResultCode.DIAMETER_END_USER_SERVICE_DENIED,  # 4010
        Outcome.UNKNOWN_SESSION: ResultCode.DIAMETER_UNKNOWN_SESSION_ID,  # 5002
        Outcome.STALE_REQUEST: ResultCode.DIAMETER_UNABLE_TO_COMPLY,  # 5012
        Outcome.ALREADY_EXISTS: ResultCode.DIAMETER_UNABLE_TO_COMPLY,
        Outcome.INVALID: ResultCode.DIAMETER_UNABLE_TO_COMPLY,
        # The day's refunds are used up: RFC 4006 section 9.1 4010, "denies the service request
        # due to service restrictions", a transient failure (RFC 6733 section 7.1.4): the same
        # refund may pass on another day. Nothing was credited.
        Outcome.REFUND_LIMIT: ResultCode.DIAMETER_END_USER_SERVICE_DENIED,
    }
)


def result_code(outcome: Outcome) -> ResultCode:
    return RESULT_CODES[outcome]
