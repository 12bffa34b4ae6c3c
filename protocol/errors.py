"""Errors of the Diameter layer.

Theory of operation: a problem found in what a peer sent is *data* (``Failure``), carried with the
decoded message so the answer can name it in Failed-AVP. Exceptions are for the cases where no
answer can be built: a frame that cannot be delimited (the connection is closed), or a mistake
in our own use of the API. Each exception class carries its Result-Code as a class attribute,
and the registry refuses two classes claiming the same code, so a code has one meaning.
The peer's mistakes (``PeerError``) and ours (``LocalError``) are separate trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from protocol.constants import ResultCode

if TYPE_CHECKING:
    from protocol.message import Avp


@dataclass(frozen=True, slots=True)
class Failure:
    """One problem found while decoding or validating a message.

    ``failed_avp`` is the AVP to echo in Failed-AVP (RFC 6733 section 7.5): the offending AVP
    with its payload as received (raw bytes), or, for a missing AVP, an AVP of that code with a
    zero-filled minimal value.
    """

    result_code: ResultCode
    failed_avp: Avp | None
    reason: str


class DiameterError(Exception):
    """Base of every exception raised by the protocol package."""

    result_code: ClassVar[ResultCode] = ResultCode.DIAMETER_UNABLE_TO_COMPLY


_registry: dict[ResultCode, type[PeerError]] = {}


class PeerError(DiameterError):
    """The peer sent something we cannot even answer; the connection must be closed."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        code = cls.__dict__.get("result_code")
        if code is not None:
            if code in _registry:
                raise TypeError(f"result code {code} already claimed by {_registry[code].__name__}")
            _registry[code] = cls


class InvalidMessageLength(PeerError):
    """The header's length is impossible or over our limit; the stream cannot be resynchronised
    (RFC 6733 section 7.1.5, DIAMETER_INVALID_MESSAGE_LENGTH)."""

    result_code = ResultCode.DIAMETER_INVALID_MESSAGE_LENGTH


class LimitExceeded(PeerError):
    """A frame beyond our hard limits (AVP count, nesting depth); we close the connection."""


class LocalError(DiameterError):
    """Our own misuse of the API (a bug on this side, never the peer's fault)."""


class UnknownAvpName(LocalError, KeyError):
    """An AVP name that no loaded dictionary defines."""


class EncodeError(LocalError, ValueError):
    """A value that cannot be encoded as its AVP's type."""


class StateError(LocalError):
    """An operation that the peer state machine does not allow in its current state."""


def peer_error_for(result_code: ResultCode) -> type[PeerError] | None:
    """The exception class registered for a code, if any (used by tests and logging)."""
    return _registry.get(result_code)
