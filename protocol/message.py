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
from datetime import datetime

from protocol.avp_types import AddressValue
from protocol.constants import CommandFlag
from protocol.dictionary import DEFAULT_DICTIONARY, AvpKey, Dictionary

Value = int | float | bytes | str | datetime | AddressValue | list["Avp"]

# Flag bits as plain ints: these helpers run per request, and each IntFlag operation costs
# about a microsecond (RFC 6733 sections 3 and 4.1 for the bits).
_REQUEST = int(CommandFlag.REQUEST)
_PROXIABLE = int(CommandFlag.PROXIABLE)
_ERROR = int(CommandFlag.ERROR)
_RETRANSMITTED = int(CommandFlag.RETRANSMITTED)


class Avp:
    """One AVP: its code, flags and Vendor-ID as received or to be sent, and its value.

    A plain class rather than a dataclass: the decoder builds one per AVP, and a plain class with
    its own ``__init__`` is what mypyc compiles best (see protocol/README.md, "Compiled build").
    It behaves as ``@dataclass(slots=True)`` would: positional or keyword construction, equality
    field by field with another ``Avp``, a repr naming the fields, and no hash (it is mutable).
    """

    __slots__ = ("code", "flags", "value", "vendor_id")
    __hash__ = None  # type: ignore[assignment]  # mutable and compared by value, like an eq dataclass

    def __init__(self, code: int, flags: int, vendor_id: int, value: Value) -> None:
        self.code = code
        self.flags = flags
        self.vendor_id = vendor_id
        self.value = value

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Avp):
            return NotImplemented
        # As a dataclass compares (tuples): a value identical to itself is equal, even a NaN Float.
        return (
            self.code == other.code
            and self.flags == other.flags
            and self.vendor_id == other.vendor_id
            and (self.value is other.value or self.value == other.value)
        )

    def __reduce__(self) -> tuple[type[Avp], tuple[int, int, int, Value]]:
        # copy, deepcopy and pickle rebuild through __init__ (mypyc's compiled class needs its arguments).
        return (Avp, (self.code, self.flags, self.vendor_id, self.value))

    def __repr__(self) -> str:
        return f"Avp(code={self.code!r}, flags={self.flags!r}, vendor_id={self.vendor_id!r}, value={self.value!r})"

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


class Message:
    """A Diameter message: the header fields and the top-level AVPs.

    A plain class for the same reason as ``Avp``, behaving as ``@dataclass(slots=True)`` would
    (``avps`` defaults to a new empty list).
    """

    __slots__ = ("application_id", "avps", "command_code", "end_to_end", "flags", "hop_by_hop")
    __hash__ = None  # type: ignore[assignment]

    def __init__(
        self,
        command_code: int,
        flags: int,
        application_id: int,
        hop_by_hop: int,
        end_to_end: int,
        avps: list[Avp] | None = None,
    ) -> None:
        self.command_code = command_code
        self.flags = flags
        self.application_id = application_id
        self.hop_by_hop = hop_by_hop
        self.end_to_end = end_to_end
        self.avps: list[Avp] = [] if avps is None else avps

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__ or not isinstance(other, Message):
            return NotImplemented
        return (
            self.command_code == other.command_code
            and self.flags == other.flags
            and self.application_id == other.application_id
            and self.hop_by_hop == other.hop_by_hop
            and self.end_to_end == other.end_to_end
            and self.avps == other.avps
        )

    def __reduce__(self) -> tuple[type[Message], tuple[int, int, int, int, int, list[Avp]]]:
        return (
            Message,
            (self.command_code, self.flags, self.application_id, self.hop_by_hop, self.end_to_end, self.avps),
        )

    def __repr__(self) -> str:
        return (
            f"Message(command_code={self.command_code!r}, flags={self.flags!r}, "
            f"application_id={self.application_id!r}, hop_by_hop={self.hop_by_hop!r}, "
            f"end_to_end={self.end_to_end!r}, avps={self.avps!r})"
        )

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
    definition = dictionary.avps_by_name.get(name)
    if definition is None:
        definition = dictionary.avp(name)  # raises UnknownAvpName
    if definition.enum_values and isinstance(value, str):
        value = definition.enum_values[value]
    # The dictionary refuses a vendor AVP without the V bit in its required flags.
    return Avp(definition.code, definition.must_flags, definition.vendor_id, value)


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
