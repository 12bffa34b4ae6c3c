"""Diameter messages and AVPs as plain Python objects, and helpers to build them.

Theory of operation: a ``Message`` is the header fields plus a list of ``Avp``. An ``Avp`` keeps
the flags and vendor it arrived with and its decoded value: a Python value for a known type, a
list of ``Avp`` for Grouped, and ``bytes`` for an AVP the dictionary does not know (or whose
payload failed to decode). ``bytes`` always means "these exact payload bytes" to the encoder,
so unknown AVPs are re-encoded byte for byte.

Building: ``avp("Session-Id", "pgw;1;2")`` looks the name up in the dictionary and sets the flags
the definition requires; ``answer_to(request, ...)`` copies what RFC 6733 section 6.2 says an
answer must copy from its request.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from protocol.avp_types import AddressValue
from protocol.constants import AvpFlag, CommandFlag
from protocol.dictionary import DEFAULT_DICTIONARY, AvpKey, Dictionary

Value = int | float | bytes | str | datetime | AddressValue | list["Avp"]

# Flag bits as plain ints: these helpers run per request, and each IntFlag operation costs
# about a microsecond (RFC 6733 sections 3 and 4.1 for the bits).
_REQUEST = int(CommandFlag.REQUEST)
_PROXIABLE = int(CommandFlag.PROXIABLE)
_ERROR = int(CommandFlag.ERROR)
_RETRANSMITTED = int(CommandFlag.RETRANSMITTED)
_VENDOR = int(AvpFlag.VENDOR)


@dataclass(slots=True)
class Avp:
    code: int
    flags: int
    vendor_id: int
    value: Value

    @property
    def key(self) -> AvpKey:
        return (self.code, self.vendor_id)

    @property
    def children(self) -> list[Avp]:
        """The members of a Grouped AVP (empty for any other)."""
        value = self.value
        return value if isinstance(value, list) else []

    def find(self, name: str, dictionary: Dictionary = DEFAULT_DICTIONARY) -> Avp | None:
        return find_avp(self.children, dictionary.key(name))

    def get(self, name: str, dictionary: Dictionary = DEFAULT_DICTIONARY) -> Value | None:
        found = find_avp(self.children, dictionary.key(name))
        return None if found is None else found.value


@dataclass(slots=True)
class Message:
    command_code: int
    flags: int
    application_id: int
    hop_by_hop: int
    end_to_end: int
    avps: list[Avp] = field(default_factory=list)

    @property
    def is_request(self) -> bool:
        return bool(self.flags & _REQUEST)

    @property
    def is_error(self) -> bool:
        return bool(self.flags & _ERROR)

    @property
    def is_retransmission(self) -> bool:
        return bool(self.flags & _RETRANSMITTED)

    def find(self, name: str, dictionary: Dictionary = DEFAULT_DICTIONARY) -> Avp | None:
        return find_avp(self.avps, dictionary.key(name))

    def find_all(self, name: str, dictionary: Dictionary = DEFAULT_DICTIONARY) -> Iterator[Avp]:
        code, vendor_id = dictionary.key(name)
        return (avp for avp in self.avps if avp.code == code and avp.vendor_id == vendor_id)

    def get(self, name: str, dictionary: Dictionary = DEFAULT_DICTIONARY) -> Value | None:
        found = find_avp(self.avps, dictionary.key(name))
        return None if found is None else found.value

    def append(self, *avps: Avp) -> Message:
        self.avps.extend(avps)
        return self


def find_avp(avps: Sequence[Avp], key: AvpKey) -> Avp | None:
    code, vendor_id = key
    for candidate in avps:
        if candidate.code == code and candidate.vendor_id == vendor_id:
            return candidate
    return None


def avp(name: str, value: Value, dictionary: Dictionary = DEFAULT_DICTIONARY) -> Avp:
    """An AVP by dictionary name, with the flags its definition requires.

    Enumerated values may be given by name (``avp("CC-Request-Type", "INITIAL_REQUEST")``).
    """
    definition = dictionary.avp(name)
    if isinstance(value, str) and definition.enum_values:
        value = definition.enum_values[value]
    flags = definition.must_flags | (_VENDOR if definition.vendor_id else 0)
    return Avp(definition.code, flags, definition.vendor_id, value)


def request(
    command_code: int,
    application_id: int,
    avps: Sequence[Avp],
    *,
    hop_by_hop: int = 0,
    end_to_end: int = 0,
    dictionary: Dictionary = DEFAULT_DICTIONARY,
) -> Message:
    """A request whose P bit follows the command's definition (RFC 6733 section 3)."""
    command = dictionary.commands.get(command_code)
    proxiable = command.proxiable if command is not None else True
    flags = _REQUEST | (_PROXIABLE if proxiable else 0)
    return Message(command_code, flags, application_id, hop_by_hop, end_to_end, list(avps))


def answer_to(request_message: Message, avps: Sequence[Avp] = (), *, error: bool = False) -> Message:
    """An answer with the request's command, application, identifiers and P bit
    (RFC 6733 section 6.2); the E bit is set for protocol errors (section 7.1.3)."""
    flags = request_message.flags & _PROXIABLE
    if error:
        flags |= _ERROR
    return Message(
        request_message.command_code,
        flags,
        request_message.application_id,
        request_message.hop_by_hop,
        request_message.end_to_end,
        list(avps),
    )
