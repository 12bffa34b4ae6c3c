"""Wire constants of the Diameter base protocol (RFC 6733) and Credit-Control (RFC 4006).

Theory of operation: every number that appears on the wire and is not part of the AVP
dictionary lives here, once, as an IntEnum or a named constant with the section it comes from.
Hard limits that protect the server from hostile peers are named constants with their reason.
The plain numbers are ``Final``: the codec reads them per AVP, and a compiled build (mypyc) turns
``Final`` literals into constants instead of a module lookup each time.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag
from typing import Final

DIAMETER_VERSION: Final = 1  # RFC 6733 section 3
HEADER_LENGTH: Final = 20  # RFC 6733 section 3: version..End-to-End Identifier
AVP_HEADER_LENGTH: Final = 8  # RFC 6733 section 4.1: code, flags, length
AVP_VENDOR_HEADER_LENGTH: Final = 12  # plus Vendor-ID when the V bit is set

# --- limits (ours, not the RFC's) -------------------------------------------------------------
# The largest Gy/Ro request we expect is a CCR with tens of MSCCs and Service-Information,
# a few kilobytes. 64 KiB leaves a wide margin while keeping a hostile length field from making
# us buffer megabytes: a frame that announces more is refused before its body is read.
MAX_MESSAGE_LENGTH: Final = 65_536
# A flood of tiny AVPs costs CPU per AVP; no real CCR comes near this many.
MAX_AVP_COUNT: Final = 2_048
# Grouped AVPs nest MSCC > USU > ... about 4 deep in TS 32.299; 16 bounds recursion.
MAX_NESTING_DEPTH: Final = 16
# Requests we accept from one connection before answering 3004 (RFC 4006 section 5.7 lets the
# client fail over); keeps one fast peer from starving the others.
MAX_REQUESTS_IN_FLIGHT_PER_CONNECTION: Final = 1_024
# Retransmitted requests remembered for duplicate detection (RFC 6733 section 5.5.4 advises
# keeping them at least as long as the Tw watchdog interval allows failover to happen).
DUPLICATE_CACHE_SIZE: Final = 65_536


class CommandFlag(IntFlag):
    """Header flags, RFC 6733 section 3."""

    REQUEST = 0x80
    PROXIABLE = 0x40
    ERROR = 0x20
    RETRANSMITTED = 0x10


RESERVED_COMMAND_FLAGS: Final = 0x0F  # RFC 6733 section 3: MUST be zero


class AvpFlag(IntFlag):
    """AVP flags, RFC 6733 section 4.1."""

    VENDOR = 0x80
    MANDATORY = 0x40
    PROTECTED = 0x20


RESERVED_AVP_FLAGS: Final = 0x1F  # RFC 6733 section 4.1: MUST be zero


class CommandCode(IntEnum):
    """Command codes this project speaks (RFC 6733 section 3.1, RFC 4006 section 3)."""

    CAPABILITIES_EXCHANGE = 257
    RE_AUTH = 258
    ACCOUNTING = 271
    CREDIT_CONTROL = 272
    ABORT_SESSION = 274
    SESSION_TERMINATION = 275
    DEVICE_WATCHDOG = 280
    DISCONNECT_PEER = 282


class ApplicationId(IntEnum):
    """Application identifiers (RFC 6733 section 2.4, RFC 4006 section 1)."""

    DIAMETER_COMMON_MESSAGES = 0
    CREDIT_CONTROL = 4
    RELAY = 0xFFFFFFFF


class ResultCode(IntEnum):
    """Result-Code values, RFC 6733 section 7.1 and RFC 4006 section 9.1."""

    # 2xxx success
    DIAMETER_SUCCESS = 2001
    DIAMETER_LIMITED_SUCCESS = 2002
    # 3xxx protocol errors
    DIAMETER_COMMAND_UNSUPPORTED = 3001
    DIAMETER_UNABLE_TO_DELIVER = 3002
    DIAMETER_REALM_NOT_SERVED = 3003
    DIAMETER_TOO_BUSY = 3004
    DIAMETER_LOOP_DETECTED = 3005
    DIAMETER_REDIRECT_INDICATION = 3006
    DIAMETER_APPLICATION_UNSUPPORTED = 3007
    DIAMETER_INVALID_HDR_BITS = 3008
    DIAMETER_INVALID_AVP_BITS = 3009
    DIAMETER_UNKNOWN_PEER = 3010
    # 4xxx transient failures
    DIAMETER_AUTHENTICATION_REJECTED = 4001
    DIAMETER_OUT_OF_SPACE = 4002
    ELECTION_LOST = 4003
    DIAMETER_END_USER_SERVICE_DENIED = 4010
    DIAMETER_CREDIT_CONTROL_NOT_APPLICABLE = 4011
    DIAMETER_CREDIT_LIMIT_REACHED = 4012
    # 5xxx permanent failures
    DIAMETER_AVP_UNSUPPORTED = 5001
    DIAMETER_UNKNOWN_SESSION_ID = 5002
    DIAMETER_AUTHORIZATION_REJECTED = 5003
    DIAMETER_INVALID_AVP_VALUE = 5004
    DIAMETER_MISSING_AVP = 5005
    DIAMETER_RESOURCES_EXCEEDED = 5006
    DIAMETER_CONTRADICTING_AVPS = 5007
    DIAMETER_AVP_NOT_ALLOWED = 5008
    DIAMETER_AVP_OCCURS_TOO_MANY_TIMES = 5009
    DIAMETER_NO_COMMON_APPLICATION = 5010
    DIAMETER_UNSUPPORTED_VERSION = 5011
    DIAMETER_UNABLE_TO_COMPLY = 5012
    DIAMETER_INVALID_BIT_IN_HEADER = 5013
    DIAMETER_INVALID_AVP_LENGTH = 5014
    DIAMETER_INVALID_MESSAGE_LENGTH = 5015
    DIAMETER_INVALID_AVP_BIT_COMBO = 5016
    DIAMETER_NO_COMMON_SECURITY = 5017
    DIAMETER_USER_UNKNOWN = 5030
    DIAMETER_RATING_FAILED = 5031


def is_protocol_error(result_code: int) -> bool:
    """3xxx answers are sent with the E bit set (RFC 6733 section 7.1.3)."""
    return 3000 <= result_code < 4000
