"""Watchdog and disconnect messages: DWR/DWA (RFC 6733 section 5.5) and DPR/DPA (section 5.4).

Theory of operation: builders only; when to send them is the peer state machine's business.
"""

from __future__ import annotations

from enum import IntEnum

from protocol.capabilities import LocalIdentity
from protocol.constants import ApplicationId, CommandCode, ResultCode
from protocol.message import Message, answer_to, avp, request


class DisconnectCause(IntEnum):
    """Disconnect-Cause values, RFC 6733 section 5.4.3."""

    REBOOTING = 0
    BUSY = 1
    DO_NOT_WANT_TO_TALK_TO_YOU = 2


def build_dwr(identity: LocalIdentity) -> Message:
    """DWR, RFC 6733 section 5.5.1."""
    avps = [*identity.origin_avps(), avp("Origin-State-Id", identity.origin_state_id)]
    return request(CommandCode.DEVICE_WATCHDOG, ApplicationId.DIAMETER_COMMON_MESSAGES, avps)


def build_dwa(identity: LocalIdentity, dwr: Message) -> Message:
    """DWA, RFC 6733 section 5.5.2."""
    avps = [
        avp("Result-Code", int(ResultCode.DIAMETER_SUCCESS)),
        *identity.origin_avps(),
        avp("Origin-State-Id", identity.origin_state_id),
    ]
    return answer_to(dwr, avps)


def build_dpr(identity: LocalIdentity, cause: DisconnectCause) -> Message:
    """DPR, RFC 6733 section 5.4.1."""
    avps = [*identity.origin_avps(), avp("Disconnect-Cause", int(cause))]
    return request(CommandCode.DISCONNECT_PEER, ApplicationId.DIAMETER_COMMON_MESSAGES, avps)


def build_dpa(identity: LocalIdentity, dpr: Message) -> Message:
    """DPA, RFC 6733 section 5.4.2."""
    return answer_to(dpr, [avp("Result-Code", int(ResultCode.DIAMETER_SUCCESS)), *identity.origin_avps()])
