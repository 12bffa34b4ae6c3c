"""The Diameter dictionary: AVP and command definitions, loaded once from the TOML data files.

Theory of operation: every ``*.toml`` file beside this module describes one application (format
in FORMAT.md). ``load_dictionary`` reads them into read-only tables keyed the way the codec
looks them up: AVPs by ``(code, vendor_id)`` and by name, commands by code. Grammars are written
in RFC 6733 section 3.2 notation and parsed here into ``GrammarRule`` tuples resolved to AVP keys.
A code defined twice, a grammar naming an undefined AVP (or one AVP twice), or an unknown type is
a load error: the data files are part of the program and must be consistent.

What runs per message is derived here once, at load: name -> key for ``Message.get``, and for
each grammar a ``QuickCheck`` of key sets that lets ``grammar.validate`` pass a valid message with
a few set operations per level. Keys there are ``packed_key`` integers (the codec's too), which
hash for free where a ``(code, vendor_id)`` tuple is hashed again at every lookup.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import NamedTuple

from protocol.avp_types import DECODERS, ENCODERS, AvpType, Decoder, Encoder
from protocol.constants import AvpFlag
from protocol.errors import EncodeError, UnknownAvpName

AvpKey = tuple[int, int]  # (code, vendor_id)
ANY_AVP = "AVP"


@dataclass(frozen=True, slots=True)
class GrammarRule:
    """One element of a command or Grouped AVP grammar (RFC 6733 section 3.2)."""

    name: str
    key: AvpKey
    minimum: int
    maximum: int | None  # None: unbounded
    fixed: bool  # "< X >": must appear at this position among the fixed elements


def packed_key(code: int, vendor_id: int) -> int:
    """(code, Vendor-ID) as one integer, both being 32-bit fields (RFC 6733 section 4.1): a
    vendor-0 AVP's packed key is its code. Integers hash for free; tuples hash on every lookup."""
    return (vendor_id << 32) | code


class QuickCheck(NamedTuple):
    """A grammar's constraints as sets of packed keys, for the "anything wrong?" test that runs on
    every message (``protocol.grammar``); read with one tuple unpacking."""

    fixed: list[int]  # "< X >", in order
    required: frozenset[int]  # minimum >= 1
    allowed: frozenset[int] | None  # None under "*[ AVP ]"
    single: frozenset[int]  # maximum 1
    counted: tuple[tuple[int, int, int | None], ...]  # (key, min, max) of the bounds the sets do not express
    accepts_empty: bool  # no AVP at all is valid


@dataclass(frozen=True, slots=True)
class Grammar:
    """A command or Grouped AVP grammar, with lookup tables derived once from its rules."""

    rules: tuple[GrammarRule, ...]
    allows_other_avps: bool  # "*[ AVP ]"
    by_key: Mapping[AvpKey, GrammarRule] = field(init=False, repr=False, compare=False)
    quick: QuickCheck = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_key: dict[AvpKey, GrammarRule] = {}
        for rule in self.rules:
            if rule.key in by_key:
                raise ValueError(f"grammar names {rule.name} twice")
            by_key[rule.key] = rule
        packed = {rule.name: packed_key(*rule.key) for rule in self.rules}
        quick = QuickCheck(
            fixed=[packed[rule.name] for rule in self.rules if rule.fixed],
            required=frozenset(packed[rule.name] for rule in self.rules if rule.minimum >= 1),
            allowed=None if self.allows_other_avps else frozenset(packed.values()),
            single=frozenset(packed[rule.name] for rule in self.rules if rule.maximum == 1),
            counted=tuple(
                (packed[rule.name], rule.minimum, rule.maximum)
                for rule in self.rules
                if rule.minimum > 1 or rule.maximum not in (1, None)
            ),
            accepts_empty=all(rule.minimum == 0 for rule in self.rules),
        )
        object.__setattr__(self, "by_key", MappingProxyType(by_key))
        object.__setattr__(self, "quick", quick)

    def rule_for(self, key: AvpKey) -> GrammarRule | None:
        return self.by_key.get(key)


@dataclass(frozen=True, slots=True)
class AvpDefinition:
    name: str
    code: int
    vendor_id: int
    type: AvpType
    must_flags: int  # AvpFlag bits a sender must set
    may_flags: int  # AvpFlag bits a sender may set beyond those (the spec table's MAY column)
    section: str
    enum_values: Mapping[str, int]
    grammar: Grammar | None
    grouped_flag: bool  # a field, not a property: read once per AVP on the decode hot path
    decode: Decoder = field(repr=False, compare=False)
    encode: Encoder = field(repr=False, compare=False)

    @property
    def key(self) -> AvpKey:
        return (self.code, self.vendor_id)

    @property
    def is_grouped(self) -> bool:
        return self.type is AvpType.GROUPED

    def enum_name(self, value: int) -> str | None:
        for name, number in self.enum_values.items():
            if number == value:
                return name
        return None


@dataclass(frozen=True, slots=True)
class CommandDefinition:
    name: str
    code: int
    application_id: int
    proxiable: bool
    section: str
    request: Grammar
    answer: Grammar


@dataclass(frozen=True, slots=True)
class Dictionary:
    avps_by_key: Mapping[AvpKey, AvpDefinition]
    avps_by_name: Mapping[str, AvpDefinition]
    commands: Mapping[int, CommandDefinition]
    applications: frozenset[int]
    # Derived once: the lookups that run per message (name -> key for ``Message.get``, and the
    # Grouped AVPs that carry a grammar, for ``grammar.validate``).
    keys_by_name: Mapping[str, AvpKey] = field(init=False, repr=False, compare=False)
    grouped_by_key: Mapping[AvpKey, AvpDefinition] = field(init=False, repr=False, compare=False)
    grouped_by_packed_key: Mapping[int, AvpDefinition] = field(init=False, repr=False, compare=False)
    grouped_packed_keys: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = {name: definition.key for name, definition in self.avps_by_name.items()}
        grouped = {key: definition for key, definition in self.avps_by_key.items() if definition.grammar is not None}
        by_packed_key = {packed_key(*key): definition for key, definition in grouped.items()}
        object.__setattr__(self, "keys_by_name", MappingProxyType(keys))
        object.__setattr__(self, "grouped_by_key", MappingProxyType(grouped))
        object.__setattr__(self, "grouped_by_packed_key", MappingProxyType(by_packed_key))
        object.__setattr__(self, "grouped_packed_keys", frozenset(by_packed_key))

    def avp(self, name: str) -> AvpDefinition:
        definition = self.avps_by_name.get(name)
        if definition is None:
            raise UnknownAvpName(name)
        return definition

    def key(self, name: str) -> AvpKey:
        key = self.keys_by_name.get(name)
        if key is None:
            raise UnknownAvpName(name)
        return key


_RULE = re.compile(
    r"^\s*(?P<min>\d*)\s*(?P<star>\*?)\s*(?P<max>\d*)\s*"
    r"(?P<open>[<{\[])\s*(?P<name>[A-Za-z0-9-]+)\s*(?P<close>[>}\]])\s*$"
)
_CLOSERS = {"<": ">", "{": "}", "[": "]"}


@dataclass(frozen=True, slots=True)
class _RawRule:
    name: str
    minimum: int
    maximum: int | None
    fixed: bool


def parse_rule(text: str) -> _RawRule:
    """Parse one CCF element such as ``*[ Proxy-Info ]`` or ``1*{ Host-IP-Address }``."""
    match = _RULE.match(text)
    if match is None or _CLOSERS[match["open"]] != match["close"]:
        raise ValueError(f"bad grammar element {text!r}")
    opening = match["open"]
    required = opening in "<{"
    if match["star"]:
        # RFC 6733 section 3.2: qualifier defaults are min 0 (1 for required), max infinity.
        minimum = int(match["min"]) if match["min"] else (1 if required else 0)
        maximum: int | None = int(match["max"]) if match["max"] else None
    else:
        if match["min"] or match["max"]:
            raise ValueError(f"bad qualifier in {text!r}")
        minimum, maximum = (1 if required else 0), 1
    return _RawRule(match["name"], minimum, maximum, opening == "<")


_FLAG_LETTERS = {"M": AvpFlag.MANDATORY, "V": AvpFlag.VENDOR, "P": AvpFlag.PROTECTED}


def _flags(text: str, allowed: str) -> int:
    """The flag bits named by ``text``, each one of the letters in ``allowed``."""
    flags = 0
    for letter in text:
        if letter not in allowed:
            raise ValueError(f"unknown flag letter {letter!r} (expected one of {allowed!r})")
        flags |= _FLAG_LETTERS[letter]
    return int(flags)  # a plain int: IntFlag arithmetic costs microseconds on the hot path


def _data_files() -> list[tuple[str, bytes]]:
    folder = resources.files(__package__ or "protocol.dictionary")
    return sorted((entry.name, entry.read_bytes()) for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_dictionary(sources: Iterable[tuple[str, bytes]] | None = None) -> Dictionary:
    """Build the dictionary from (file name, TOML bytes) pairs; the package's files by default."""
    raw_avps: list[tuple[str, dict[str, object]]] = []
    raw_commands: list[tuple[str, dict[str, object]]] = []
    for file_name, content in sources if sources is not None else _data_files():
        document = tomllib.loads(content.decode("utf-8"))
        # A file may give the "may" of its AVPs once, in [meta], when its flag table has the same
        # MAY column for all of them; an AVP's own "may" overrides it.
        may_default = document.get("meta", {}).get("may", "")
        raw_avps += [(file_name, {"may": may_default, **entry}) for entry in document.get("avp", [])]
        raw_commands += [(file_name, entry) for entry in document.get("command", [])]

    by_name: dict[str, dict[str, object]] = {}
    keys: dict[str, AvpKey] = {}
    for file_name, entry in raw_avps:
        name = str(entry["name"])
        key = (int(entry["code"]), int(entry.get("vendor", 0)))  # type: ignore[call-overload]
        if name in by_name:
            raise ValueError(f"{file_name}: AVP {name} defined twice")
        if key in keys.values():
            raise ValueError(f"{file_name}: AVP code {key} defined twice ({name})")
        by_name[name] = entry
        keys[name] = key

    def grammar(elements: object, owner: str) -> Grammar:
        if not isinstance(elements, list):
            raise ValueError(f"{owner}: grammar must be a list")
        rules: list[GrammarRule] = []
        allows_other = False
        for element in elements:
            raw = parse_rule(str(element))
            if raw.name == ANY_AVP:
                allows_other = True
                continue
            if raw.name not in keys:
                raise ValueError(f"{owner}: grammar names undefined AVP {raw.name}")
            if any(rule.name == raw.name for rule in rules):
                raise ValueError(f"{owner}: grammar names {raw.name} twice")
            rules.append(GrammarRule(raw.name, keys[raw.name], raw.minimum, raw.maximum, raw.fixed))
        return Grammar(tuple(rules), allows_other)

    avps: dict[AvpKey, AvpDefinition] = {}
    for name, entry in by_name.items():
        avp_type = AvpType(str(entry["type"]))
        code, vendor_id = keys[name]
        must = _flags(str(entry.get("must", "")), "MV")  # P is never required (RFC 6733 section 4.1)
        may = _flags(str(entry.get("may", "")), "P")  # M and V are decided by "must" alone
        if vendor_id and not must & AvpFlag.VENDOR:
            raise ValueError(f"AVP {name} has a vendor but no V flag")
        enum_table = entry.get("enum", {})
        assert isinstance(enum_table, dict)
        avps[(code, vendor_id)] = AvpDefinition(
            name=name,
            code=code,
            vendor_id=vendor_id,
            type=avp_type,
            must_flags=must,
            may_flags=may,
            section=str(entry.get("section", "")),
            enum_values=MappingProxyType({str(k): int(v) for k, v in enum_table.items()}),
            grammar=grammar(entry["grammar"], name) if avp_type is AvpType.GROUPED else None,
            grouped_flag=avp_type is AvpType.GROUPED,
            decode=DECODERS[avp_type],
            encode=ENCODERS.get(avp_type, _refuse_grouped),
        )

    commands: dict[int, CommandDefinition] = {}
    for file_name, entry in raw_commands:
        code = int(entry["code"])  # type: ignore[call-overload]
        if code in commands:
            raise ValueError(f"{file_name}: command {code} defined twice")
        name = str(entry["name"])
        commands[code] = CommandDefinition(
            name=name,
            code=code,
            application_id=int(entry["application"]),  # type: ignore[call-overload]
            proxiable=bool(entry.get("proxiable", False)),
            section=str(entry.get("section", "")),
            request=grammar(entry["request"], f"{name}-Request"),
            answer=grammar(entry["answer"], f"{name}-Answer"),
        )

    return Dictionary(
        avps_by_key=MappingProxyType(avps),
        avps_by_name=MappingProxyType({d.name: d for d in avps.values()}),
        commands=MappingProxyType(commands),
        applications=frozenset(c.application_id for c in commands.values()),
    )


def _refuse_grouped(value: object) -> bytes:
    raise EncodeError("Grouped AVPs are encoded from their children by the codec")


DEFAULT_DICTIONARY: Dictionary = load_dictionary()
